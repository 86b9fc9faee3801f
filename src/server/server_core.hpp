// SPDX-License-Identifier: MIT
// ServerCore: the server's engine — socket lifecycle, the shards' threads and their coordination.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "server/server_shard.hpp"
#include "server/stats_counters.hpp"
#include "unixgram/address.hpp"
#include "unixgram/options.hpp"
#include "unixgram/server.hpp"

namespace unixgram::detail {

class Mailbox;
class Shard;

/// One shard of a run: its loop thread's objects, published for the others once constructed.
struct ShardSlot {
    Shard* shard = nullptr;
    ServerShard* server = nullptr;
    std::unique_ptr<Mailbox> inbox;  ///< from shard 0 (workers)
    std::thread thread;              ///< workers' threads (shard 0 runs on serve()'s caller)
    std::exception_ptr error;        ///< the worker could not start
    bool ready = false;
};

struct ServerCore {
    ServerCore(Server& owner, UnixAddress requested, ServerOptions options, ServerHooks hooks);
    ~ServerCore();

    // ---- configuration (immutable after construction) ----
    Server& owner;
    const UnixAddress requested;
    const ServerOptions options;
    const ServerHooks hooks;
    std::shared_ptr<spdlog::logger> log;
    /// One block of counters per shard (each written by its shard only); stats() sums them.
    std::unique_ptr<ServerStatsCounters[]> stats;
    /// One per shard, for the server's lifetime (a copy may be dropped while a run ends).
    std::unique_ptr<RemoteDrops[]> remote_drops;

    // ---- lifecycle (guarded by mutex) ----
    std::mutex mutex;
    std::condition_variable changed;
    int fd = -1;                       ///< the bound socket, -1 before activate / after close
    UnixAddress bound;                 ///< getsockname() after bind
    std::optional<std::pair<dev_t, ino_t>> bound_inode;  ///< pathname sockets: what close() may unlink
    bool closed = false;
    bool running = false;              ///< a serve_forever run is in progress (setup included)
    std::atomic<bool> serving{false};  ///< reading datagrams
    std::atomic<bool> stop_requested{false};
    std::atomic<bool> service_available{false};
    std::vector<ShardSlot> slots;      ///< one per shard while a run is in progress
    std::thread thread;                ///< start()'s thread
    std::exception_ptr start_error;
    bool start_ready = false;

    void activate_locked();
    void close_socket_locked() noexcept;
    void serve();                      ///< the body of serve_forever (running already set)
    /// True on any shard's loop thread of this server (where waiting for the run to end would deadlock).
    bool on_loop_thread() noexcept;
    /// Wakes every shard of the run (thread-safe; mutex held).
    void wake_all_locked() noexcept;

    // ---- shared by the shards of one run ----
    /// Teardown phases, advanced by shard 0: workers follow with acquire loads.
    enum Phase : int { kServing = 0, kCancelling = 1, kFinishing = 2 };
    std::atomic<int> phase{kServing};
    std::atomic<unsigned> workers_drained{0};  ///< workers whose sessions and tasks have ended
    std::atomic<int> pause_requests{0};        ///< workers over their queued-bytes share
    std::shared_ptr<const ContextMap> default_vars;  ///< from service_init; set before serving

    /// The shards that own clients: [first_owner, first_owner + owner_count) (shard 0 too unless
    /// ServerOptions::dedicated_receiver).
    unsigned first_owner = 0;
    unsigned owner_count = 1;
    /// The shard that owns a client, from its address's hash (UnixAddress::hash / hash_of).
    unsigned owner_of(std::size_t address_hash) const noexcept {
        return first_owner + static_cast<unsigned>(address_hash % owner_count);
    }

private:
    void run_worker(unsigned index);
    void start_workers(Shard& first);
    void stop_workers() noexcept;
};

}  // namespace unixgram::detail
