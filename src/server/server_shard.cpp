// SPDX-License-Identifier: MIT
// ServerShard: receiving and routing (shard 0), mailboxes, receive pauses and a shard's teardown.
#include "server/server_shard.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <new>
#include <system_error>

#include "runtime/mailbox.hpp"
#include "runtime/root_task.hpp"
#include "runtime/shard.hpp"
#include "server/address_format.hpp"
#include "server/server_core.hpp"
#include "unixgram/task_group.hpp"

namespace unixgram::detail {

namespace {
/// Records dispatched per turn before sessions, timers and sends get their turn.
constexpr std::size_t kInboxBatch = 256;
/// Records dispatched between two looks at this shard's receive pause.
constexpr std::size_t kInboxStep = 16;
/// A sleeping owner is woken once this many records wait for it (DESIGN §5: wakes are batched)...
constexpr std::size_t kWakeBatch = 16;
/// ...or once its oldest record has waited this many of shard 0's turns, or when shard 0 goes to sleep.
/// With the socket's queue at max_dgram_qlen (10 by default), a turn reads about ten datagrams; waking each
/// owner on each turn cost more than the work it was woken for (measured with 8 shards, epoll).
constexpr unsigned kWakeTurns = 4;
/// A failed read stops receiving for this long, doubled for each failure with no datagram read since the
/// previous one, up to kMaxReceiveBackoff.
constexpr Clock::duration kFirstReceiveBackoff = std::chrono::milliseconds(1);
constexpr Clock::duration kMaxReceiveBackoff = std::chrono::milliseconds(128);
/// Wakes are deferred only after a turn that read at least this many datagrams (a busy socket). After a
/// lighter one shard 0 is about to sleep anyway, and the look without sleeping that a deferred wake costs
/// was one more system call per datagram in ping-pong with a client on a worker (measured: 5.0 against 4.0).
constexpr std::uint64_t kBusyTurn = 8;
}  // namespace

ServerShard::ServerShard(ServerCore& core_, Shard& shard_, unsigned index_)
    : core(core_),
      shard(shard_),
      index(index_),
      stats(core_.stats[index_]),
      max_queued_bytes_here(core_.options.max_total_queued_bytes / core_.owner_count),
      early_replies(core_.options.early_replies),
      remote_drops_(core_.remote_drops[index_]) {
    receive_backoff_timer_.fire = &ServerShard::receive_backoff_fire;
    receive_backoff_timer_.owner = this;
    shard.attach(this);
}

ServerShard::~ServerShard() {
    shard.timers().cancel(&receive_backoff_timer_);
    shard.attach(nullptr);
}

// ---- receiving (shard 0) ---------------------------------------------------------------------------

void ServerShard::count_received(const RecvDatagram& d) noexcept {
    ServerStatsCounters::add(stats.datagrams_received);
    ServerStatsCounters::add(stats.bytes_received, d.real_length);
    if (d.control_truncated) ServerStatsCounters::add(stats.control_truncated);
}

void ServerShard::on_posted_failure(const SendOp& op, int result) noexcept {
    if (!core.log->should_log(spdlog::level::warn)) return;  // the counter has it; format nothing
    try {
        const UnixAddress peer = UnixAddress::from_sockaddr(&op.dest, op.dest_length);
        if (result == -ETIMEDOUT) {
            posted_log.log(*core.log, spdlog::level::warn,
                           "Dropped a posted reply to {}: its receive queue stayed full for send_timeout", peer);
        } else {
            posted_log.log(*core.log, spdlog::level::warn, "Dropped a posted reply to {}: {} (errno {})", peer,
                           std::generic_category().message(-result), -result);
        }
    } catch (...) {  // formatting ran out of memory: the counter (send_timeouts or send_errors) has it
    }
}

void ServerShard::on_receive_error(int error) noexcept {
    const bool in_a_row = receive_backoff_ != Clock::duration::zero() && received_so_far_ == received_at_last_error_;
    receive_backoff_ = in_a_row ? std::min(receive_backoff_ * 2, kMaxReceiveBackoff) : kFirstReceiveBackoff;
    received_at_last_error_ = received_so_far_;
    try {
        receive_error_log.log(*core.log, spdlog::level::err,
                              "Reading the socket failed: {} (errno {}); reading again in {} ms",
                              std::generic_category().message(error), error,
                              std::chrono::duration_cast<std::chrono::milliseconds>(receive_backoff_).count());
    } catch (...) {  // formatting ran out of memory: the counter (receive_errors) has it
    }
    try {
        shard.timers().arm(&receive_backoff_timer_, Clock::now() + receive_backoff_);
    } catch (...) {  // the timer heap could not grow: read again at once rather than never
        return;
    }
    refresh_receiving();
}

void ServerShard::receive_backoff_fire(TimerNode* n) noexcept { static_cast<ServerShard*>(n->owner)->refresh_receiving(); }

void ServerShard::on_received(RecvDatagram& d) noexcept {
    // A datagram dropped here is counted here; one handed over is counted by its owner (dispatch()).
    ++received_so_far_;
    if (deliver_to_last_sender(d)) return;
    const SenderName sender = SenderName::of(d.name, d.name_length);
    if (d.truncated) {
        count_received(d);
        ServerStatsCounters::add(stats.dropped_truncated);
        truncated_log.log(*core.log, spdlog::level::warn,
                          "Dropped a datagram of {} bytes from {}: larger than max_datagram_size ({})", d.real_length,
                          sender.address(), core.options.max_datagram_size);
        close_fds(d.fds, d.fd_count);
        return;
    }
    if (sender.is_unnamed() && core.options.unnamed_addresses != UnnamedAddresses::handle) {
        count_received(d);
        ServerStatsCounters::add(stats.dropped_unnamed);
        const auto level =
            core.options.unnamed_addresses == UnnamedAddresses::warn ? spdlog::level::warn : spdlog::level::debug;
        unnamed_log.log(*core.log, level, "A datagram received from an unbound UNIX datagram socket has been dropped.");
        close_fds(d.fds, d.fd_count);
        return;
    }
    if (outboxes_.empty()) {
        dispatch(d, sender);
        return;
    }
    const unsigned owner = core.owner_of(sender.hash);
    if (owner == index) {
        dispatch(d, sender);
    } else {
        hand_over(owner, d);
    }
}

void ServerShard::connect_outboxes() {
    outboxes_.resize(core.options.shards);
    for (unsigned i = 1; i < core.options.shards; ++i) {
        outboxes_[i].box = core.slots[i].inbox.get();
        outboxes_[i].target = core.slots[i].shard;
    }
}

void ServerShard::hand_over(unsigned owner, RecvDatagram& d) noexcept {
    Outbox& o = outboxes_[owner];
    if (o.overflow.empty() && o.box->push(d)) {
        o.dirty = true;
        ++o.unwoken;
        return;
    }
    // The owner's mailbox is full: keep the datagram here, in order, and stop reading the socket
    // (kernel backpressure) until the owner has drained its mailbox.
    try {
        std::vector<std::byte> record(Mailbox::record_size(d));
        Mailbox::encode(d, record.data());
        o.overflow.push_back(std::move(record));
    } catch (const std::bad_alloc&) {
        ServerStatsCounters::add(stats.dropped_queue_full);
        close_fds(d.fds, d.fd_count);
        return;
    }
    if (o.overflow.size() == 1) {
        ++overflowing_;
        ServerStatsCounters::add(stats.receive_pauses);
    }
    refresh_receiving();
}

bool ServerShard::flush_overflow(Outbox& o) noexcept {
    while (!o.overflow.empty()) {
        if (!o.box->push_encoded(o.overflow.front())) return false;
        o.overflow.pop_front();
        o.dirty = true;
        ++o.unwoken;
    }
    o.box->producer_waiting.store(false, std::memory_order_relaxed);
    --overflowing_;
    return true;
}

void ServerShard::before_poll() noexcept {
    if (outboxes_.empty()) return;
    bool published = false;
    for (std::size_t i = 1; i < outboxes_.size(); ++i) {
        Outbox& o = outboxes_[i];
        if (!o.overflow.empty()) {
            // Ask to be woken when room appears, then look again (the owner may have drained it already).
            o.box->producer_waiting.store(true, std::memory_order_relaxed);
            std::atomic_thread_fence(std::memory_order_seq_cst);
            if (flush_overflow(o)) refresh_receiving();
        }
        if (o.dirty) published |= o.box->publish();
        o.dirty = false;
    }
    const bool busy = received_so_far_ - received_at_last_turn_ >= kBusyTurn;
    received_at_last_turn_ = received_so_far_;
    if (published || deferred_wakes_ > 0) {
        // Records are visible before a sleeping flag is read (the owner sets it, then looks at its mailbox).
        std::atomic_thread_fence(std::memory_order_seq_cst);
        deferred_wakes_ = 0;
        for (std::size_t i = 1; i < outboxes_.size(); ++i) {
            Outbox& o = outboxes_[i];
            if (o.unwoken == 0) continue;
            if (!o.target->sleeping()) {
                o.unwoken = 0;  // awake: it looks at its mailbox before it sleeps again
                o.waited_turns = 0;
            } else if (!busy || o.unwoken >= kWakeBatch || ++o.waited_turns >= kWakeTurns) {
                wake_owner(o);
            } else {
                ++deferred_wakes_;
            }
        }
    }
    refresh_receiving();
}

void ServerShard::wake_owner(Outbox& o) noexcept {
    o.unwoken = 0;
    o.waited_turns = 0;
    if (o.target->claim_wake()) shard.notify(*o.target);
}

void ServerShard::wake_deferred() noexcept {
    for (std::size_t i = 1; i < outboxes_.size() && deferred_wakes_ > 0; ++i) {
        Outbox& o = outboxes_[i];
        if (o.unwoken == 0) continue;
        wake_owner(o);
        --deferred_wakes_;
    }
    deferred_wakes_ = 0;
}

void ServerShard::refresh_receiving() noexcept {
    const bool want = receive_enabled && !receive_paused && overflowing_ == 0 && !receive_backoff_timer_.armed() &&
                      core.pause_requests.load(std::memory_order_relaxed) == 0;
    if (want == receiving_) return;
    receiving_ = want;
    if (want) {
        shard.backend().start_receiving();
    } else {
        shard.backend().stop_receiving();
    }
}

void ServerShard::drop_undelivered() noexcept {
    for (Outbox& o : outboxes_) {
        std::size_t dropped = 0;
        for (const auto& record : o.overflow) {
            RecvDatagram d;
            Mailbox::decode(record.data(), d);
            close_fds(d.fds, d.fd_count);
            ++dropped;
        }
        if (dropped > 0) {
            ServerStatsCounters::add(stats.dropped_at_shutdown, dropped);
            core.log->warn("Dropped {} datagram(s) not yet handed to their shard at shutdown", dropped);
            o.overflow.clear();
            --overflowing_;
        }
    }
}

// ---- owner side ----------------------------------------------------------------------------------------

bool ServerShard::inbox_ready() const noexcept { return !receive_paused && !inbox->empty(); }

bool ServerShard::drain_inbox(bool force) noexcept {
    bool any = false;
    std::size_t budget = kInboxBatch;
    // While this shard is over its queued-bytes share, records stay in the mailbox: it fills, and shard 0
    // stops reading (backpressure reaches the senders). Small steps bound the overshoot.
    while (budget > 0 && (force || !receive_paused) && !inbox->empty()) {
        const std::size_t n = inbox->drain(
            [this](RecvDatagram& d) {
                if (!deliver_to_last_sender(d)) dispatch(d, SenderName::of(d.name, d.name_length));
            },
            std::min(budget, kInboxStep));
        budget -= std::min(budget, n);
        any = true;
        // slots[0] stays put while workers run: no lock needed to read it.
        if (inbox->should_wake_producer()) core.slots[0].shard->wake();
    }
    return any;
}

void ServerShard::update_receive_pause() noexcept {
    if (!receive_paused && total_queued_bytes > max_queued_bytes_here) {
        // Kernel backpressure: senders wait (or get EAGAIN) instead of anything being dropped.
        receive_paused = true;
        ServerStatsCounters::add(stats.receive_pauses);
    } else if (receive_paused && total_queued_bytes <= max_queued_bytes_here / 2) {
        receive_paused = false;
    } else {
        return;
    }
    if (index == 0) {
        refresh_receiving();
        return;
    }
    core.pause_requests.fetch_add(receive_paused ? 1 : -1, std::memory_order_relaxed);
    pause_reported_ = receive_paused;
    core.slots[0].shard->wake();
}

// ---- teardown ---------------------------------------------------------------------------------------------

void ServerShard::cancel_all() noexcept {
    tearing_down = true;
    clients.for_each([](ClientState* c) {
        if (c->session != nullptr) cancel_context(c->session->ctx);
    });
    if (background != nullptr) task_group_cancel(background);
}

bool ServerShard::has_live_work() const noexcept {
    return live_sessions > 0 || (background != nullptr && task_group_active(background) > 0);
}

void ServerShard::take_remote_drops() noexcept {
    {
        std::lock_guard lock(remote_drops_.mutex);
        taken_drops_.swap(remote_drops_.clients);  // both keep their capacity
        remote_drops_.count.store(0, std::memory_order_relaxed);
    }
    for (ClientState* c : taken_drops_) release_client_ref(c);
    taken_drops_.clear();
}

void ServerShard::teardown_clients() noexcept {
    take_remote_drops();  // the clients whose last copy went elsewhere are freed below, not orphaned
    clients.for_each([this](ClientState* c) {
        std::size_t dropped = 0;
        while (c->head != nullptr) {
            QueuedDatagram* q = c->head;
            c->head = q->next;
            release_queued(q);
            ++dropped;
        }
        c->tail = nullptr;
        c->queued_count = c->queued_bytes = 0;
        if (dropped > 0) {
            ServerStatsCounters::add(stats.dropped_at_shutdown, dropped);
            core.log->warn("Dropped {} datagram(s) from {} still queued at shutdown", dropped, c->address.to_string());
        }
        idle.remove(c);
        if (c == last_sender) last_sender = nullptr;
        if (c->session != nullptr) return;  // stuck session (see serve): leak rather than dangle
        if (c->refs.load(std::memory_order_acquire) > 0) {
            c->orphaned.store(true, std::memory_order_release);  // freed when the last Client copy goes
        } else {
            delete c;
        }
    });
    clients.clear();
    shard.abandon_posted();  // posted replies hold no client, but none may outlive the run either
    total_queued_bytes = 0;
    if (pause_reported_) {
        core.pause_requests.fetch_sub(1, std::memory_order_relaxed);
        pause_reported_ = false;
    }
    receive_paused = false;
}

}  // namespace unixgram::detail
