// SPDX-License-Identifier: MIT
// ServerCore: the server's engine — socket lifecycle, run loop, client table and sessions.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "io/datagram.hpp"
#include "server/client_state.hpp"
#include "server/rate_limited_log.hpp"
#include "server/stats_counters.hpp"
#include "unixgram/address.hpp"
#include "unixgram/options.hpp"
#include "unixgram/server.hpp"

namespace unixgram::detail {

class Shard;
struct TaskGroupState;

/// Hashes client addresses for the client table. Deliberately not noexcept: libstdc++ then stores each
/// key's hash in its node, so a lookup compares stored hashes instead of re-hashing pathnames (measured in
/// benchmarks/micro/client_table_benchmark.cpp: 41 → 24 ns per hit with 16 clients).
struct AddressHash {
    std::size_t operator()(const UnixAddress& a) const { return a.hash(); }
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
    ServerStatsCounters stats;

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
    Shard* shard = nullptr;            ///< the running loop's shard
    std::thread::id loop_thread;
    std::thread thread;                ///< start()'s thread
    std::exception_ptr start_error;
    bool start_ready = false;

    void activate_locked();
    void close_socket_locked() noexcept;
    void serve();                      ///< the body of serve_forever (running already set)
    bool on_loop_thread() const noexcept { return std::this_thread::get_id() == loop_thread; }

    // ---- loop-thread state of one run ----
    std::unordered_map<UnixAddress, ClientState*, AddressHash> clients;
    IdleList idle;
    std::size_t live_sessions = 0;
    std::size_t total_queued_bytes = 0;
    bool receive_paused = false;
    bool tearing_down = false;
    std::shared_ptr<const ContextMap> default_vars;
    TaskGroupState* background = nullptr;
    RateLimitedLog unnamed_log, truncated_log, queue_full_log;

    void on_datagram(RecvDatagram& d) noexcept;
    ClientState* find_or_create(const UnixAddress& address);
    void start_session(ClientState* c) noexcept;
    void maybe_idle(ClientState* c) noexcept;
    void destroy_client(ClientState* c) noexcept;
    void enqueue(ClientState* c, RecvDatagram& d) noexcept;
    void release_queued(QueuedDatagram* q) noexcept;
    void close_fds(int* fds, std::uint32_t count) noexcept;
    void update_receive_pause() noexcept;
    void log_handler_exception(const ClientState* c, std::exception_ptr error) noexcept;
    void teardown_clients() noexcept;
    static void restart_client(void* arg);
};

}  // namespace unixgram::detail
