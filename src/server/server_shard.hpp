// SPDX-License-Identifier: MIT
// ServerShard: what one shard of a running server owns — its clients, their sessions and queues.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <vector>

#include "io/datagram.hpp"
#include "server/client_state.hpp"
#include "server/client_table.hpp"
#include "server/rate_limited_log.hpp"
#include "server/stats_counters.hpp"
#include "unixgram/address.hpp"

namespace unixgram::detail {

class Mailbox;
class Shard;
struct ServerCore;
struct TaskGroupState;

/// The server-side state of one shard, touched only by that shard's loop thread (DESIGN §5). Shard 0
/// also receives: it drops what must be dropped, then dispatches each datagram itself or hands it to
/// the owner shard's mailbox.
struct ServerShard {
    ServerShard(ServerCore& core, Shard& shard, unsigned index);
    ~ServerShard();
    ServerShard(const ServerShard&) = delete;
    ServerShard& operator=(const ServerShard&) = delete;

    ServerCore& core;
    Shard& shard;
    const unsigned index;
    ServerStatsCounters& stats;

    ClientTable clients;
    IdleList idle;
    std::size_t live_sessions = 0;
    std::size_t total_queued_bytes = 0;
    std::size_t max_queued_bytes_here;  ///< this shard's share of max_total_queued_bytes
    bool receive_paused = false;        ///< queued bytes over this shard's share
    bool tearing_down = false;
    const bool early_replies;  ///< ServerOptions::early_replies
    TaskGroupState* background = nullptr;
    RateLimitedLog unnamed_log, truncated_log, queue_full_log, receive_error_log, posted_log;
    /// Shard::on_receive_error (counted there): logs it (rate-limited) and stops receiving for a moment:
    /// kFirstReceiveBackoff, doubled for each failure with no datagram read since the one before, up to
    /// kMaxReceiveBackoff. A failure that persists (ENOMEM, say) would otherwise spin the loop: the socket
    /// stays readable and every read fails at once.
    void on_receive_error(int error) noexcept;
    /// Shard, for a Client::post_packet() reply it dropped (refused for good, send_timeout up, or no memory to keep
    /// it; counted there): logs it, rate-limited.
    void on_posted_failure(const SendOp& op, int result) noexcept;

    // ---- receiving (shard 0) ----
    /// A datagram from the socket: counted, checked, then dispatched here or handed over.
    void on_received(RecvDatagram& d) noexcept;
    /// Loop turn hook before waiting (sharded servers): publishes the mailboxes and wakes the sleeping
    /// owners that are due: all of them after a light turn (under kBusyTurn datagrams read); after a busy
    /// one, those with kWakeBatch records waiting or waiting for kWakeTurns turns. The others' wakes are
    /// deferred (batched), to at most kWakeTurns turns or until wake_deferred().
    void before_poll() noexcept;
    /// Some sleeping owner has records and no wake yet: this loop must not sleep before wake_deferred().
    bool wakes_deferred() const noexcept { return deferred_wakes_ > 0; }
    /// Wakes every owner whose wake was deferred (this loop is about to sleep).
    void wake_deferred() noexcept;
    /// Datagrams read from the socket so far (shard 0): tells whether a look at the socket found any.
    std::uint64_t received_so_far() const noexcept { return received_so_far_; }
    /// Starts or stops the socket's receive so that it runs exactly when everything allows it.
    void refresh_receiving() noexcept;
    bool receive_enabled = false;  ///< serving (set and cleared by the lifecycle)
    /// Shard 0, once every worker runs: one mailbox per worker.
    void connect_outboxes();
    /// Datagrams still in mailboxes' overflow lists at shutdown are dropped (and counted).
    void drop_undelivered() noexcept;

    // ---- owner side ----
    Mailbox* inbox = nullptr;  ///< datagrams from shard 0 (workers only)
    /// Dispatches what shard 0 handed over (not while over this shard's queued-bytes share, unless
    /// `force`); true if anything was there.
    bool drain_inbox(bool force = false) noexcept;
    /// The loop has mailbox work it may do now (it must not sleep).
    bool inbox_ready() const noexcept;

    /// Hands `d` to its client (here): to the session waiting for it, a new session, or the queue.
    void dispatch(RecvDatagram& d, const SenderName& sender) noexcept;
    /// dispatch() once the client is known (found, created or the last sender).
    void deliver(ClientState* c, RecvDatagram& d) noexcept;
    /// The client of this shard that sent the last datagram dispatched here, or null: a client's window
    /// arrives as a run of its datagrams, and a run skips the hash and the table probe. Cleared when that
    /// client goes.
    ClientState* last_sender = nullptr;
    /// Counts and delivers `d` if it comes from last_sender (shard 0 reading the socket, a worker draining
    /// its mailbox); false: the caller looks its sender up.
    bool deliver_to_last_sender(RecvDatagram& d) noexcept;
    /// Counts `d` in datagrams_received / bytes_received (once, by the shard that drops or dispatches it).
    void count_received(const RecvDatagram& d) noexcept;
    ClientState* find_or_create(const SenderName& sender);
    void start_session(ClientState* c) noexcept;
    void maybe_idle(ClientState* c) noexcept;
    void destroy_client(ClientState* c) noexcept;
    void enqueue(ClientState* c, RecvDatagram& d) noexcept;
    void release_queued(QueuedDatagram* q) noexcept;
    void close_fds(int* fds, std::uint32_t count) noexcept;
    void update_receive_pause() noexcept;
    void log_handler_exception(const ClientState* c, std::exception_ptr error) noexcept;
    /// Cancels every session and background task of this shard (the start of teardown).
    void cancel_all() noexcept;
    bool has_live_work() const noexcept;
    /// Frees every client (dropping what is still queued, counted) and the posted replies still waiting for a
    /// retry (Shard::abandon_posted).
    void teardown_clients() noexcept;
    static void restart_client(void* arg);
    /// Takes over the references of Client copies dropped off this shard's loop thread (client_unref), once
    /// a turn and before teardown: idles or frees the clients whose last copy went.
    void take_remote_drops() noexcept;
    bool has_remote_drops() const noexcept { return remote_drops_.count.load(std::memory_order_relaxed) != 0; }

private:
    struct Outbox {
        Mailbox* box = nullptr;
        Shard* target = nullptr;
        std::deque<std::vector<std::byte>> overflow;  ///< refused by a full mailbox, in order
        bool dirty = false;                           ///< pushed since the last publish
        std::size_t unwoken = 0;                      ///< records published to a sleeping owner, not woken
        unsigned waited_turns = 0;                    ///< turns the oldest of them has waited
    };
    void hand_over(unsigned owner, RecvDatagram& d) noexcept;
    void wake_owner(Outbox& o) noexcept;
    bool flush_overflow(Outbox& o) noexcept;
    std::vector<Outbox> outboxes_;
    std::size_t overflowing_ = 0;  ///< outboxes with a non-empty overflow
    std::size_t deferred_wakes_ = 0;  ///< outboxes with unwoken records
    std::uint64_t received_so_far_ = 0;
    std::uint64_t received_at_last_turn_ = 0;  ///< received_so_far_ at the last before_poll
    bool receiving_ = false;
    static void receive_backoff_fire(TimerNode* n) noexcept;
    TimerNode receive_backoff_timer_{};
    Clock::duration receive_backoff_{};         ///< the last backoff (zero: none yet)
    std::uint64_t received_at_last_error_ = 0;  ///< received_so_far_ at the last failed read
    bool pause_reported_ = false;  ///< this worker's pause is counted in core.pause_requests
    RemoteDrops& remote_drops_;    ///< core.remote_drops[index]
    std::vector<ClientState*> taken_drops_;  ///< take_remote_drops()'s batch (swapped with the box's)
};

}  // namespace unixgram::detail
