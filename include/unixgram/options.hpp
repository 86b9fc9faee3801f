// SPDX-License-Identifier: MIT
// ServerOptions: how a UnixDatagramServer binds, logs, bounds its memory and treats odd senders.
#pragma once

/// \file
/// Every field has a safe default; `validate()` (called by the server constructor) throws
/// std::invalid_argument naming the field and the value for anything out of range.
///
/// Example:
/// \code
///   unixgram::ServerOptions opts;
///   opts.mode = 0660;                                        // socket file permissions
///   opts.unnamed_addresses = unixgram::UnnamedAddresses::warn;
///   opts.max_queued_datagrams = 256;                         // per client
///   opts.validate();
/// \endcode

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace spdlog {
class logger;
}

namespace unixgram {

/// What to do with datagrams from unbound senders (H24).
enum class UnnamedAddresses {
    ignore,  ///< drop them, counted in ServerStats::dropped_unnamed, logged at debug level only
    warn,    ///< drop them and log a (rate-limited) warning
    handle,  ///< handle them: all unnamed senders share one client; replies fail with EINVAL (H21)
};

/// Parses "ignore", "warn" or "handle"; throws std::invalid_argument naming the value.
UnnamedAddresses parse_unnamed_addresses(std::string_view text);
std::string_view to_string(UnnamedAddresses value) noexcept;

struct ServerOptions {
    /// Permissions of the socket file (pathname addresses only); applied with no window of wider
    /// permissions. Setting it with an abstract or autobind address is an error.
    std::optional<mode_t> mode;
    UnnamedAddresses unnamed_addresses = UnnamedAddresses::ignore;
    /// Where the server logs; default: the "unixgram" logger (stderr, created on first use).
    std::shared_ptr<spdlog::logger> logger;
    /// Loop threads (1–1024). Shard 0 (the thread of serve_forever / start) reads the socket; each
    /// client address hashes to one shard, where all its sessions run, in order. Handlers then run on
    /// several threads at once: shared state in the handler needs its own synchronisation (Client
    /// copies may be made and dropped on any thread). max_total_queued_bytes is split evenly between the
    /// shards that serve clients.
    unsigned shards = 1;
    /// With shards >= 2: shard 0 only reads the socket and hands every datagram over; clients hash to
    /// shards 1..N-1. Shard 0 still runs service_init and tasks spawned on it. Shard 0's reading sets the
    /// ceiling of a sharded server; relieving it of sessions raises that ceiling when the other shards have
    /// CPUs to spare (README, Sharding and "Sharding on 16 CPUs"). With 2 shards one shard then serves every
    /// client.
    bool dedicated_receiver = false;
    /// Receive SCM_RIGHTS / SCM_CREDENTIALS so handlers can claim them (RecvParams::ancillary).
    bool receive_ancillary_data = false;
    /// Largest datagram received whole; larger ones are dropped and counted (never truncated silently).
    std::size_t max_datagram_size = 65536;
    /// Per-client queue bounds: beyond them the client's newest datagrams are dropped and counted.
    std::size_t max_queued_datagrams = 1024;
    std::size_t max_queued_bytes = std::size_t{4} << 20;
    /// Over this many queued bytes in all, the server stops reading (resuming at half): senders wait,
    /// nothing is lost. Set below max_queued_bytes, it pushes back before any client reaches its own cap:
    /// no datagram is then dropped for a full queue, but one busy client holds up everyone's reads. A small
    /// value (a few KiB) keeps latency under windowed load near the kernel's own (README, "Tuning for latency
    /// or throughput").
    std::size_t max_total_queued_bytes = std::size_t{64} << 20;
    /// How long a reply may be refused by a full peer (EAGAIN, retried with backoff) before
    /// send_packet throws TimeoutError.
    std::chrono::milliseconds send_timeout{5000};
    /// SO_SNDBUF of the server socket (SO_SNDBUFFORCE when permitted); 0 keeps the system default.
    std::size_t send_buffer_size = std::size_t{8} << 20;
    /// Replies go to the kernel in one batch per loop turn. With early_replies, a reply that holds up a
    /// datagram of the same client (its session waits for the reply's result while the next datagram is
    /// there) is sent at once with its own sendto(2) instead: the client's next session starts straight
    /// away, and its replies leave back to back, which wakes a sleeping client once rather than once per
    /// reply (README, Performance). false: every reply waits for the turn's batch.
    bool early_replies = true;
    /// Idle clients whose state is kept for reuse (bounded cache; memory stays flat).
    std::size_t idle_client_cache = 1024;

    /// Throws std::invalid_argument naming the field and value that is out of range.
    void validate() const;
};

}  // namespace unixgram
