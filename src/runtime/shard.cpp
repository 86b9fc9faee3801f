// SPDX-License-Identifier: MIT
// Shard: the loop turn, the ready queue, timers, waits and the send-op pool.
#include "runtime/shard.hpp"

#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <utility>
#include <stdexcept>
#include <string>

#include "runtime/mailbox.hpp"
#include "server/server_core.hpp"
#include "unixgram/detail/frame_pool.hpp"
#include "unixgram/errors.hpp"

namespace unixgram::detail {

[[gnu::tls_model("initial-exec")]] thread_local Shard* tls_shard = nullptr;

namespace {
// initial-exec: one %fs-relative access instead of a __tls_get_addr call (the library is linked, not dlopen()ed).
[[gnu::tls_model("initial-exec")]] thread_local ExecContext* tls_context = nullptr;
[[gnu::tls_model("initial-exec")]] thread_local std::uint64_t tls_scope_ids = 0;

constexpr std::size_t kMaxFreeOps = 1024;
/// Posted replies per sendmmsg (the kernel's UIO_MAXIOV allows 1024).
constexpr std::size_t kPostedBatch = 64;
constexpr std::size_t kPreallocatedOps = 256;
constexpr std::size_t kPreallocatedBuffer = 512;
constexpr std::size_t kPrewarmFrameBytes = 1024;
constexpr std::size_t kPrewarmPerClass = 32;
// A full peer's queue usually drains within microseconds (it is reading): retry fast at first.
// A peer that stays full (stopped reading) is retried every 10 ms so that it costs little CPU.
constexpr auto kFirstRetry = std::chrono::microseconds(20);
constexpr auto kFastRetryCap = std::chrono::milliseconds(1);
constexpr unsigned kFastRetries = 64;
constexpr auto kSlowRetry = std::chrono::milliseconds(10);
/// A full peer's answer: retried with backoff, never an error for the handler.
constexpr bool is_refusal(int result) { return result == -EAGAIN || result == -ENOBUFS; }

/// Which deadline a wait reached at `now`: its own, or the innermost expired with_timeout scope.
void classify_expiry(Waiter& w, Clock::time_point now) noexcept {
    if (w.own_deadline <= now) {
        w.status = w.deadline_is_success ? WaitStatus::ok : WaitStatus::timed_out;
        return;
    }
    w.status = WaitStatus::scope_expired;
    for (std::size_t i = 0; i < w.ctx->scope_count; ++i) {
        if (w.ctx->scopes[i].deadline() <= now) {
            w.expired_scope = w.ctx->scopes[i].id;
            return;
        }
    }
}

void waiter_timer_fire(TimerNode* n) noexcept {
    auto* w = static_cast<Waiter*>(n->owner);
    if (w->status != WaitStatus::pending) return;
    if (w->detach != nullptr) w->detach(w);
    classify_expiry(*w, Clock::now());
    if (w->ctx->waiting == w) w->ctx->waiting = nullptr;
    w->ctx->shard->schedule(w->handle, w->ctx);
}
}  // namespace

// ---- context and waits -------------------------------------------------------------------------

ExecContext* current_context() noexcept { return tls_context; }

ExecContext& require_context(const char* what) {
    if (tls_context == nullptr)
        throw std::logic_error(std::string(what) +
                               " can only be used on a unixgram server's loop (in a handler, service_init or a "
                               "background task)");
    return *tls_context;
}

bool prepare_wait(Waiter& w, const char* what, Clock::time_point own_deadline) {
    ExecContext& ctx = require_context(what);
    w.ctx = &ctx;
    w.own_deadline = own_deadline;
    w.status = WaitStatus::pending;
    if (ctx.cancelled) {
        w.status = WaitStatus::cancelled;
        return false;
    }
    Clock::time_point effective = own_deadline;
    for (std::size_t i = 0; i < ctx.scope_count; ++i)
        if (ctx.scopes[i].deadline() < effective) effective = ctx.scopes[i].deadline();
    if (effective != Clock::time_point::max()) {
        const auto now = Clock::now();
        if (effective <= now) {
            classify_expiry(w, now);
            return false;
        }
        w.timer.owner = &w;
        w.timer.fire = &waiter_timer_fire;
        ctx.shard->timers().arm(&w.timer, effective);
    }
    ctx.waiting = &w;
    return true;
}

namespace {
/// Ends a pending wait (its timer, its context's link) with `status`; false if it was not pending.
bool settle_wait(Waiter& w, WaitStatus status) noexcept {
    if (w.status != WaitStatus::pending) return false;
    w.ctx->shard->timers().cancel(&w.timer);
    if (w.ctx->waiting == &w) w.ctx->waiting = nullptr;
    w.status = status;
    return true;
}
}  // namespace

void settle_wait_inline(Waiter& w, WaitStatus status) noexcept { settle_wait(w, status); }

void complete_wait(Waiter& w, WaitStatus status) noexcept {
    if (settle_wait(w, status)) w.ctx->shard->schedule(w.handle, w.ctx);
}

void complete_wait_now(Waiter& w, WaitStatus status) noexcept {
    if (settle_wait(w, status)) w.ctx->shard->resume_now(w.handle, w.ctx);
}

void rethrow_wait_status(const Waiter& w) {
    switch (w.status) {
        case WaitStatus::ok:
        case WaitStatus::pending: return;
        case WaitStatus::timed_out: throw TimeoutError("Timed out waiting for the next datagram");
        case WaitStatus::cancelled: throw Cancelled();
        case WaitStatus::scope_expired: throw ScopeExpired{w.expired_scope};
    }
}

void arm_sleep(Waiter&) noexcept {
    // prepare_wait() armed the timer at the sleep's own deadline; reaching it completes the sleep.
}

std::uint64_t push_deadline_scope(Clock::duration d) {
    ExecContext& ctx = require_context("unixgram::with_timeout()");
    if (ctx.scope_count == ExecContext::kMaxScopes)
        throw std::logic_error("unixgram::with_timeout(): more than 16 nested timeouts");
    const std::uint64_t id = ++tls_scope_ids;
    ctx.scopes[ctx.scope_count++] = DeadlineScope{Clock::now() + d, id};
    return id;
}

void pop_deadline_scope(std::uint64_t id) noexcept {
    ExecContext* ctx = tls_context;
    if (ctx == nullptr) return;
    for (std::size_t i = ctx->scope_count; i-- > 0;) {
        if (ctx->scopes[i].id == id) {
            for (std::size_t k = i + 1; k < ctx->scope_count; ++k) ctx->scopes[k - 1] = ctx->scopes[k];
            --ctx->scope_count;
            return;
        }
    }
}

/// Cancels a context: its current wait ends with Cancelled and every later wait fails at once.
void cancel_context(ExecContext& ctx) noexcept {
    ctx.cancelled = true;
    if (Waiter* w = ctx.waiting; w != nullptr) {
        if (w->detach != nullptr) w->detach(w);
        complete_wait(*w, WaitStatus::cancelled);
    }
}

// ---- shard --------------------------------------------------------------------------------------

Shard::Shard(ServerCore& core, unsigned index, int socket_fd, const BackendConfig& config)
    : core_(core), index_(index), backend_(*this, socket_fd, config) {
    previous_current_ = tls_shard;
    tls_shard = this;
    ready_.reserve(256);
    running_.reserve(256);
    posted_batch_.reserve(256);
    posted_msgs_.reserve(kPostedBatch);
    posted_backlogs_.reserve(16);
    deferred_.reserve(256);
    deferred_running_.reserve(256);
    // A warm slab of send ops with room for small replies: a new peak of replies in flight (up to
    // kPreallocatedOps) costs no allocation on the hot path.
    // Session frames and queued small datagrams: 32 of each size class up to 1 KiB (~280 KiB).
    frame_pool_prewarm(kPrewarmFrameBytes, kPrewarmPerClass);
    SendOp* warm = nullptr;
    for (std::size_t i = 0; i < kPreallocatedOps; ++i) {
        SendOp* op = acquire_op();
        op->buffer.reserve(kPreallocatedBuffer);
        op->next_free = warm;
        warm = op;
    }
    while (warm != nullptr) release_op(std::exchange(warm, warm->next_free));
}

Shard::~Shard() { tls_shard = previous_current_; }

Shard::OpPool::~OpPool() {
    while (head != nullptr) {
        SendOp* next = head->next_free;
        delete head;
        head = next;
    }
}

void Shard::schedule(std::coroutine_handle<> h, ExecContext* ctx) { ready_.push_back({h, ctx}); }

void Shard::defer(void (*fn)(void*), void* arg) { deferred_.push_back({fn, arg}); }

void Shard::resume_now(std::coroutine_handle<> h, ExecContext* ctx) noexcept {
    ExecContext* saved = tls_context;
    tls_context = ctx;
    h.resume();
    tls_context = saved;
}

void Shard::run_ready() noexcept {
    while (!ready_.empty() || !deferred_.empty()) {
        running_.swap(ready_);
        for (auto& item : running_) resume_now(item.handle, item.ctx);
        running_.clear();
        deferred_running_.swap(deferred_);
        for (auto& d : deferred_running_) d.fn(d.arg);
        deferred_running_.clear();
    }
}

void Shard::fire_timers() noexcept {
    if (timers_.empty()) return;  // no clock read on a turn without timers
    const auto now = Clock::now();
    while (TimerNode* n = timers_.pop_expired(now)) n->fire(n);
}

void Shard::attach(ServerShard* server) noexcept {
    server_ = server;
    sharded_ = server != nullptr && core_.options.shards > 1;
}

void Shard::run_once(bool may_block) {
    // Wait first, run second: the caller checks its exit condition right after the work ran.
    if (!posted_batch_.empty()) flush_posted();
    backend_.flush();  // may complete sends (epoll) and arm retry timers: before reading the deadline
    bool block = may_block && !has_ready_work();
    bool polled = false;
    if (sharded_) {
        server_->before_poll();  // shard 0: publish the mailboxes, wake the sleeping owners that are due
        if (block && server_->wakes_deferred()) {
            // Look without sleeping first: under load datagrams are there, and the deferred wakes wait for
            // more records. Only if nothing came may this loop sleep, and then nobody waits on it.
            const std::uint64_t received = server_->received_so_far();
            backend_.poll(false, Clock::time_point::max());
            polled = server_->received_so_far() != received || has_ready_work();
            if (!polled) server_->wake_deferred();
        }
        if (block && !polled && server_->inbox != nullptr) {
            // Announce the sleep, then look at the mailbox once more (pairs with before_poll's fence).
            sleeping_.store(true, std::memory_order_relaxed);
            std::atomic_thread_fence(std::memory_order_seq_cst);
            if (server_->inbox_ready()) block = false;
        }
    }
    if (!polled) {
        const auto deadline = timers_.empty() ? Clock::time_point::max() : timers_.top()->deadline;
        backend_.poll(block, deadline);
    }
    if (sharded_ && server_->inbox != nullptr) {
        sleeping_.store(false, std::memory_order_relaxed);
        server_->drain_inbox();
    }
    fire_timers();
    run_ready();
    // Client copies dropped on other threads: one relaxed load a turn when there are none.
    if (server_ != nullptr && server_->has_remote_drops()) server_->take_remote_drops();
}

// ---- sends ----------------------------------------------------------------------------------------

SendOp* Shard::acquire_op() {
    if (pool_.head != nullptr) {
        SendOp* op = pool_.head;
        pool_.head = op->next_free;
        --pool_.count;
        op->next_free = nullptr;
        return op;
    }
    auto* op = new SendOp();
    op->retry_timer.owner = op;
    op->retry_timer.fire = &Shard::retry_fire;
    return op;
}

void Shard::release_op(SendOp* op) noexcept {
    timers_.cancel(&op->retry_timer);
    unlink_blocked(op);
    op->client = nullptr;
    op->waiter = nullptr;
    op->posted = false;
    op->posted_next = nullptr;
    op->attempts = 0;
    op->in_kernel = false;
    if (pool_.count >= kMaxFreeOps) {
        delete op;
        return;
    }
    op->buffer.clear();
    op->next_free = pool_.head;
    pool_.head = op;
    ++pool_.count;
}

void Shard::submit_send(SendOp* op) noexcept {
    if (op->client != nullptr && op->waiter != nullptr) op->client->batched_reply = op;
    op->in_kernel = true;
    ++ops_in_kernel_;
    backend_.submit_send(op);
}

void Shard::unlink_blocked(SendOp* op) noexcept {
    if (op->client == nullptr) return;
    if (op->client->blocked_send == op) op->client->blocked_send = nullptr;
    if (op->client->batched_reply == op) op->client->batched_reply = nullptr;
}

void Shard::retry_now(SendOp* op) noexcept {
    unlink_blocked(op);
    timers_.cancel(&op->retry_timer);
    submit_send(op);
}

void Shard::retry_fire(TimerNode* n) noexcept {
    auto* op = static_cast<SendOp*>(n->owner);
    if (op->posted) {
        tls_shard->retry_posted(op);
    } else {
        tls_shard->retry_now(op);
    }
}

void Shard::on_send_complete(SendOp* op, int result) noexcept {
    op->in_kernel = false;
    --ops_in_kernel_;
    auto& stats = core_.stats[index_];
    if (is_refusal(result)) {
        ServerStatsCounters::add(stats.send_retries);
        if (op->waiter == nullptr) {
            ServerStatsCounters::add(stats.sends_abandoned);
            release_op(op);
            return;
        }
        if (refused(op)) return;  // retried later
        result = -ETIMEDOUT;
    }
    count_send_result(result);
    SendWait* w = op->waiter;
    if (w == nullptr && result < 0) ServerStatsCounters::add(stats.sends_abandoned);
    release_op(op);  // back in the pool before the session goes on (its next reply reuses it)
    if (w != nullptr) {
        // Resume the sender now rather than at the end of the turn: a session whose reply was its
        // last step ends before the rest of this batch of completions is dispatched, so its client's
        // next datagram (often in the same batch) starts a session straight from the receive
        // buffer instead of being copied into the client's queue.
        w->result = result;
        complete_wait_now(w->waiter, WaitStatus::ok);
    }
}

bool Shard::refused(SendOp* op) noexcept {
    const auto now = Clock::now();
    // The send_timeout clock starts at the first refusal: a send that goes through at once
    // never reads the clock.
    if (op->attempts == 0) op->deadline = now + core_.options.send_timeout;
    if (now >= op->deadline) return false;
    // The peer's queue is full: back off, bounded by send_timeout.
    Clock::duration delay = kSlowRetry;
    if (op->attempts < kFastRetries) {
        delay = kFirstRetry * (1u << std::min(op->attempts, 10u));
        if (delay > kFastRetryCap) delay = kFastRetryCap;
    }
    ++op->attempts;
    timers_.arm(&op->retry_timer, std::min(now + delay, op->deadline));
    // A datagram from this client (it read something, so its queue has room) retries at once.
    if (op->client != nullptr) op->client->blocked_send = op;
    return true;
}

void Shard::count_send_result(int result) noexcept {
    auto& stats = core_.stats[index_];
    if (result >= 0) {
        ServerStatsCounters::add(stats.datagrams_sent);
        ServerStatsCounters::add(stats.bytes_sent, static_cast<std::uint64_t>(result));
    } else if (result == -ETIMEDOUT) {
        ServerStatsCounters::add(stats.send_timeouts);
    } else {
        ServerStatsCounters::add(stats.send_errors);
    }
}

namespace {
/// One reply with sendto(2): bytes sent or -errno. MSG_DONTWAIT, as every send (io-uring-notes §2).
/// The raw system call: glibc's sendto() is a cancellation point, whose bookkeeping around the call
/// measured 1.4 % of the server's CPU under load (perf); loop threads are never cancelled.
int send_one(int fd, const SendOp& op) noexcept {
    long n;
    do {
        n = ::syscall(SYS_sendto, fd, op.buffer.data(), op.buffer.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
                      reinterpret_cast<const sockaddr*>(&op.dest), op.dest_length);
    } while (n < 0 && errno == EINTR);
    return n >= 0 ? static_cast<int>(n) : -errno;
}
}  // namespace

bool Shard::send_now(SendOp* op, int& result) noexcept {
    result = send_one(core_.fd, *op);
    if (is_refusal(result)) {
        // A full peer: retried with backoff from now on, as a refusal from the batch would be.
        ServerStatsCounters::add(core_.stats[index_].send_retries);
        if (refused(op)) return false;
        result = -ETIMEDOUT;  // send_timeout 0: no retry
    } else {
        ServerStatsCounters::add(core_.stats[index_].replies_sent_early);
    }
    count_send_result(result);
    return true;
}

void Shard::send_early(SendOp* op) noexcept {
    backend_.unqueue_send(op);
    const int result = send_one(core_.fd, *op);
    if (!is_refusal(result)) ServerStatsCounters::add(core_.stats[index_].replies_sent_early);
    on_send_complete(op, result);  // a refusal is retried with backoff, as from the batch
}

// ---- posted replies (Client::post_packet) -----------------------------------------------------------

Shard::PostedBacklog* Shard::backlog_of(const SendOp& op) noexcept {
    for (PostedBacklog& b : posted_backlogs_) {
        const SendOp& h = *b.head;
        if (h.dest_length == op.dest_length && std::memcmp(&h.dest, &op.dest, op.dest_length) == 0) return &b;
    }
    return nullptr;
}

void Shard::post(SendOp* op) noexcept {
    op->prepare_msghdr();
    if (PostedBacklog* b = backlog_of(*op); b != nullptr) {
        append(*b, op);  // behind the refused one: the peer gets them in the order posted
        return;
    }
    try {
        posted_batch_.push_back(op);
    } catch (const std::bad_alloc&) {
        ServerStatsCounters::add(core_.stats[index_].sends_abandoned);
        if (server_ != nullptr) server_->on_posted_failure(*op, -ENOMEM);
        release_op(op);
    }
}

void Shard::settle_posted(SendOp* op, int result) noexcept {
    count_send_result(result);
    if (result < 0 && server_ != nullptr) server_->on_posted_failure(*op, result);
    release_op(op);
}

void Shard::start_backlog(SendOp* op) noexcept {
    ServerStatsCounters::add(core_.stats[index_].send_retries);
    if (posting_closed_ || !refused(op)) {  // send_timeout 0, or the run is over: no retry
        settle_posted(op, -ETIMEDOUT);
        return;
    }
    try {
        posted_backlogs_.push_back({op, op});
    } catch (const std::bad_alloc&) {
        // No room to keep later replies behind it: it is retried alone, and order may not hold for this peer.
    }
}

void Shard::flush_posted() noexcept {
    // Nothing posts while this runs (settling resumes no coroutine), so the batch is walked in place.
    std::vector<SendOp*>& ops = posted_batch_;
    std::size_t i = 0;
    while (i < ops.size()) {
        if (!posted_backlogs_.empty()) {
            if (PostedBacklog* b = backlog_of(*ops[i]); b != nullptr) {  // its peer refused one earlier
                append(*b, ops[i++]);
                continue;
            }
        }
        // A run of replies to peers with no backlog (ops[i] has none), sent with one sendmmsg.
        std::size_t n = 1;
        while (i + n < ops.size() && n < kPostedBatch &&
               (posted_backlogs_.empty() || backlog_of(*ops[i + n]) == nullptr))
            ++n;
        i += send_some(core_.fd, ops.data() + i, n, posted_msgs_, [this](SendOp* op, int result) {
            if (is_refusal(result)) {
                start_backlog(op);
            } else {
                settle_posted(op, result);
            }
        });
    }
    ops.clear();  // keeps its capacity
}

void Shard::retry_posted(SendOp* op) noexcept {
    // Its own backlog, unless there was no room for one (then it is retried alone).
    PostedBacklog* b = backlog_of(*op);
    if (b != nullptr && b->head != op) b = nullptr;
    const int result = send_one(core_.fd, *op);
    if (is_refusal(result)) {
        ServerStatsCounters::add(core_.stats[index_].send_retries);
        if (!posting_closed_ && refused(op)) return;  // the peer still reads nothing: the next retry
        // send_timeout is up: the peer's queue stayed full, so every reply waiting behind this one goes too.
        SendOp* behind = op->posted_next;
        settle_posted(op, -ETIMEDOUT);
        while (behind != nullptr) settle_posted(std::exchange(behind, behind->posted_next), -ETIMEDOUT);
    } else {
        // Sent, or refused for good: the replies behind it go out with the next flush, in their order (later
        // posts to this peer joined the backlog, so none of them is in the batch ahead of these).
        SendOp* behind = op->posted_next;
        settle_posted(op, result);
        while (behind != nullptr) {
            SendOp* next = std::exchange(behind->posted_next, nullptr);
            try {
                posted_batch_.push_back(behind);
            } catch (const std::bad_alloc&) {
                ServerStatsCounters::add(core_.stats[index_].sends_abandoned);
                if (server_ != nullptr) server_->on_posted_failure(*behind, -ENOMEM);
                release_op(behind);
            }
            behind = next;
        }
    }
    if (b != nullptr) {  // settled: the peer has no backlog any more
        *b = posted_backlogs_.back();
        posted_backlogs_.pop_back();
    }
}

void Shard::abandon_posted() noexcept {
    flush_posted();
    posting_closed_ = true;
    for (PostedBacklog& b : posted_backlogs_) {
        SendOp* op = b.head;
        while (op != nullptr) {
            ServerStatsCounters::add(core_.stats[index_].sends_abandoned);
            release_op(std::exchange(op, op->posted_next));
        }
    }
    posted_backlogs_.clear();
}

void Shard::on_datagram(RecvDatagram& d) noexcept {
    if (server_ != nullptr) {
        server_->on_received(d);
        return;
    }
    for (std::uint32_t i = 0; i < d.fd_count; ++i) ::close(d.fds[i]);  // no run to hand it to (teardown)
}

void Shard::on_receive_error(int error) noexcept {
    ServerStatsCounters::add(core_.stats[index_].receive_errors);
    if (server_ != nullptr) server_->on_receive_error(error);
}

}  // namespace unixgram::detail
