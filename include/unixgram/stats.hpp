// SPDX-License-Identifier: MIT
// ServerStats: the counters a server keeps; every drop has one.
#pragma once

/// \file
/// `server.stats()` returns a snapshot of these counters; it may be called from any thread.
/// Nothing is dropped without a counter going up (and, rate-limited, a log line).
///
/// Example:
/// \code
///   unixgram::ServerStats s = server.stats();
///   std::printf("received %llu, sent %llu, dropped %llu\n",
///               (unsigned long long)s.datagrams_received, (unsigned long long)s.datagrams_sent,
///               (unsigned long long)s.dropped_total());
/// \endcode

#include <cstdint>

namespace unixgram {

struct ServerStats {
    std::uint64_t datagrams_received = 0;  ///< datagrams read from the socket (with shards: counted once its owner shard has it)
    std::uint64_t bytes_received = 0;
    std::uint64_t datagrams_sent = 0;      ///< replies the kernel accepted
    std::uint64_t bytes_sent = 0;
    std::uint64_t sessions_started = 0;
    std::uint64_t parse_errors = 0;        ///< ParseError thrown into handlers
    std::uint64_t handler_errors = 0;      ///< exceptions that escaped handle() (logged)
    std::uint64_t dropped_unnamed = 0;     ///< from unbound senders (ignore / warn)
    std::uint64_t dropped_truncated = 0;   ///< larger than max_datagram_size
    std::uint64_t dropped_queue_full = 0;  ///< over a client's max_queued_datagrams / bytes
    std::uint64_t dropped_unconsumed = 0;  ///< popped but never delivered (return before first co_yield, bad RecvParams)
    std::uint64_t dropped_at_shutdown = 0; ///< still queued when the server stopped
    std::uint64_t send_retries = 0;        ///< EAGAIN from a full peer, retried
    std::uint64_t send_errors = 0;         ///< sends refused by the kernel, reported to the handler
    std::uint64_t send_timeouts = 0;       ///< sends given up after send_timeout
    std::uint64_t sends_abandoned = 0;     ///< sends whose session was cancelled before the kernel took them
    std::uint64_t fds_closed = 0;          ///< received fds nobody claimed, closed by the server
    std::uint64_t control_truncated = 0;   ///< datagrams whose ancillary data the kernel truncated
    std::uint64_t enobufs = 0;             ///< io_uring: provided-buffer ring ran dry (re-armed)
    std::uint64_t cq_overflows = 0;        ///< io_uring: completion queue overflowed (recovered)
    std::uint64_t receive_pauses = 0;      ///< reading paused at max_total_queued_bytes
    std::uint64_t receive_errors = 0;      ///< reads of the socket that failed (not "nothing to read"; logged, then read again)
    std::uint64_t replies_sent_early = 0;  ///< sent at once, ahead of the loop turn's batch, because the client's next datagram waited (ServerOptions::early_replies)

    std::uint64_t dropped_total() const noexcept {
        return dropped_unnamed + dropped_truncated + dropped_queue_full + dropped_unconsumed + dropped_at_shutdown;
    }
};

}  // namespace unixgram
