// SPDX-License-Identifier: MIT
// Shard: one loop thread — ready queue, timers, send-op pool and one backend instance.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <vector>

#include "io/backend.hpp"
#include "io/datagram.hpp"
#include "runtime/timer_heap.hpp"
#include "unixgram/detail/engine.hpp"

namespace unixgram::detail {

/// Ends a pending wait whose operation completed before it suspended (no resume is scheduled).
void settle_wait_inline(Waiter& w, WaitStatus status) noexcept;

struct ServerCore;
struct ServerShard;
class Shard;

/// The shard whose loop runs on this thread (Shard::current()). Declared here so that the hot path's calls
/// inline to one %fs-relative load; initial-exec, as the library is linked, not dlopen()ed.
[[gnu::tls_model("initial-exec")]] extern thread_local Shard* tls_shard;

class Shard {
public:
    /// Creates the backend on the calling thread, which becomes the loop thread of shard `index`.
    Shard(ServerCore& core, unsigned index, int socket_fd, const BackendConfig& config);
    ~Shard();
    Shard(const Shard&) = delete;
    Shard& operator=(const Shard&) = delete;

    /// One loop turn: flushes sends and waits for I/O (blocking only when `may_block` and nothing
    /// is ready), then runs expired timers and ready coroutines.
    void run_once(bool may_block);

    /// Queues `h` to run on this loop in context `ctx`.
    void schedule(std::coroutine_handle<> h, ExecContext* ctx);
    /// Runs `fn(arg)` at the next turn (restarts of sessions, deferred cleanup).
    void defer(void (*fn)(void*), void* arg);
    /// Resumes `h` now, in context `ctx`.
    void resume_now(std::coroutine_handle<> h, ExecContext* ctx) noexcept;
    bool has_ready_work() const noexcept { return !ready_.empty() || !deferred_.empty(); }

    TimerHeap& timers() noexcept { return timers_; }

    SendOp* acquire_op();
    void release_op(SendOp* op) noexcept;
    void submit_send(SendOp* op) noexcept;
    /// Sends `op` (not submitted yet, its waiter set) with one sendto(2) now. True: `result` is what the
    /// send returned (bytes or -errno; -ETIMEDOUT for a refusal with send_timeout 0), counted. False: the
    /// peer's queue is full, and the op now waits for its retry like any refused reply (its waiter stays
    /// suspended).
    bool send_now(SendOp* op, int& result) noexcept;
    /// Takes `op` out of the turn's batch (op->queued) and sends it now; completes it as the kernel would.
    void send_early(SendOp* op) noexcept;
    /// Resends a reply refused by a full peer now instead of at its retry timer.
    void retry_now(SendOp* op) noexcept;
    void unlink_blocked(SendOp* op) noexcept;
    std::size_t ops_in_kernel() const noexcept { return ops_in_kernel_; }
    /// Client::post_packet(): queues `op` (prepared, posted) for this turn's `sendmmsg` of posted replies, or
    /// behind an earlier posted reply to the same peer that waits for its retry (per-peer order).
    void post(SendOp* op) noexcept;
    /// Teardown: sends what was posted, then drops every posted reply still waiting for a retry (counted in
    /// sends_abandoned), so that nothing outlives the run.
    void abandon_posted() noexcept;

    Backend& backend() noexcept { return backend_; }
    /// Thread-safe: interrupts a blocking wait.
    void wake() noexcept { backend_.wake(); }
    /// Thread-safe: the loop is blocked, or about to block, waiting for I/O.
    bool sleeping() const noexcept { return sleeping_.load(std::memory_order_relaxed); }
    /// Thread-safe: true once per sleep of this shard's loop — the caller must then notify() it.
    bool claim_wake() noexcept {
        return sleeping_.load(std::memory_order_relaxed) && sleeping_.exchange(false, std::memory_order_acq_rel);
    }
    /// Wakes `target` from this shard's loop (IORING_OP_MSG_RING on io_uring, its eventfd on epoll).
    void notify(Shard& target) noexcept { backend_.notify(target.backend_); }

    // Called by the backend.
    void on_datagram(RecvDatagram& d) noexcept;
    void on_send_complete(SendOp* op, int result) noexcept;
    /// A read of the socket failed with `error` (an errno other than EAGAIN, EINTR or, on io_uring, ENOBUFS):
    /// counted in receive_errors; the server logs it (rate-limited) and pauses receiving for a moment
    /// (ServerShard::on_receive_error).
    void on_receive_error(int error) noexcept;

    ServerCore& core() noexcept { return core_; }
    unsigned index() const noexcept { return index_; }
    /// The server state this shard runs (set while a run is in progress).
    ServerShard& server() noexcept { return *server_; }
    void attach(ServerShard* server) noexcept;

    /// The shard of the calling thread, or nullptr.
    static Shard* current() noexcept { return tls_shard; }

private:
    struct ReadyItem {
        std::coroutine_handle<> handle;
        ExecContext* ctx;
    };
    struct Deferred {
        void (*fn)(void*);
        void* arg;
    };
    void run_ready() noexcept;
    void fire_timers() noexcept;
    static void retry_fire(TimerNode* n) noexcept;

    ServerCore& core_;
    const unsigned index_;
    ServerShard* server_ = nullptr;
    bool sharded_ = false;          ///< the server runs several shards: mailbox hooks each turn
    std::atomic<bool> sleeping_{false};  ///< blocked (or about to block) waiting for I/O
    std::vector<ReadyItem> ready_, running_;
    std::vector<Deferred> deferred_, deferred_running_;
    TimerHeap timers_;
    /// Recycled send ops; destroyed after the backend, whose teardown may still return ops.
    struct OpPool {
        SendOp* head = nullptr;
        std::size_t count = 0;
        ~OpPool();
    } pool_;
    std::size_t ops_in_kernel_ = 0;
    /// Posted replies: this turn's batch, and per peer whose full queue refused one, that reply (waiting for
    /// its retry timer) with the later ones to the same peer behind it.
    struct PostedBacklog {
        SendOp* head;
        SendOp* tail;
    };
    std::vector<SendOp*> posted_batch_;
    std::vector<mmsghdr> posted_msgs_;
    std::vector<PostedBacklog> posted_backlogs_;
    bool posting_closed_ = false;
    void flush_posted() noexcept;
    PostedBacklog* backlog_of(const SendOp& op) noexcept;
    static void append(PostedBacklog& b, SendOp* op) noexcept {
        b.tail->posted_next = op;
        b.tail = op;
    }
    void start_backlog(SendOp* op) noexcept;
    void retry_posted(SendOp* op) noexcept;
    void settle_posted(SendOp* op, int result) noexcept;
    void count_send_result(int result) noexcept;
    /// A full peer refused `op`: arms its retry (backoff, bounded by send_timeout); false once that is up.
    bool refused(SendOp* op) noexcept;
    Shard* previous_current_ = nullptr;
    Backend backend_;  // last: its teardown may still call back into the members above
};

}  // namespace unixgram::detail
