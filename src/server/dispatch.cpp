// SPDX-License-Identifier: MIT
// The per-client state machine: dispatch of datagrams, sessions and co_yield (the Client handle's
// side, references and send_packet, is in client_handle.cpp).
#include <cxxabi.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <system_error>
#include <typeinfo>

#include "runtime/shard.hpp"
#include "server/address_format.hpp"
#include "server/server_core.hpp"
#include "unixgram/ancillary.hpp"
#include "unixgram/detail/frame_pool.hpp"
#include "unixgram/errors.hpp"

namespace unixgram::detail {

void cancel_context(ExecContext& ctx) noexcept;  // runtime/shard.cpp

namespace {

std::string type_name(const std::type_info& t) {
    int status = 0;
    char* name = abi::__cxa_demangle(t.name(), nullptr, nullptr, &status);
    std::string out = (status == 0 && name != nullptr) ? name : t.name();
    std::free(name);
    return out;
}

/// "type: what (caused by type: what)" for an exception and the ones it nests.
std::string describe(std::exception_ptr e) {
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& ex) {
        std::string out = type_name(typeid(ex)) + ": " + ex.what();
        try {
            std::rethrow_if_nested(ex);
        } catch (...) {
            out += " (caused by " + describe(std::current_exception()) + ")";
        }
        return out;
    } catch (...) {
        return "unknown exception";
    }
}

void detach_recv(Waiter* w) noexcept {
    auto* c = static_cast<ClientState*>(w->target);
    if (c != nullptr && c->recv_waiter != nullptr && &c->recv_waiter->waiter == w) c->recv_waiter = nullptr;
}

}  // namespace

// ---- queued datagrams ---------------------------------------------------------------------------

QueuedDatagram* QueuedDatagram::copy_of(const RecvDatagram& d) {
    // From the frame pool's size classes: a busy client's queue recycles its memory too.
    void* mem = frame_allocate(allocation_size(d.fd_count, d.payload.size()));
    auto* q = ::new (mem) QueuedDatagram();
    q->size = static_cast<std::uint32_t>(d.payload.size());
    q->fd_count = d.fd_count;
    q->allocated_fds = d.fd_count;
    q->has_credentials = d.has_credentials;
    q->control_truncated = d.control_truncated;
    q->credentials = d.credentials;
    if (d.fd_count > 0) std::memcpy(q->fds(), d.fds, d.fd_count * sizeof(int));
    if (!d.payload.empty()) std::memcpy(q->payload(), d.payload.data(), d.payload.size());
    return q;
}

void QueuedDatagram::destroy(QueuedDatagram* q) noexcept {
    const std::size_t bytes = allocation_size(q->allocated_fds, q->size);
    q->~QueuedDatagram();
    frame_deallocate(q, bytes);
}

void ServerShard::close_fds(int* fds, std::uint32_t count) noexcept {
    for (std::uint32_t i = 0; i < count; ++i) ::close(fds[i]);
    if (count > 0) ServerStatsCounters::add(stats.fds_closed, count);
}

void ServerShard::release_queued(QueuedDatagram* q) noexcept {
    close_fds(q->fds(), q->fd_count);
    QueuedDatagram::destroy(q);
}

// ---- dispatch -----------------------------------------------------------------------------------

ClientState* ServerShard::find_or_create(const SenderName& sender) {
    if (ClientState* c = clients.find(sender); c != nullptr) {
        idle.remove(c);
        return c;
    }
    auto fresh = std::make_unique<ClientState>();  // a new client: its first datagram
    fresh->home = this;
    fresh->home_loop = &shard;
    fresh->home_index = index;
    fresh->core = &core;
    fresh->address = sender.address();
    fresh->address_hash = sender.hash;
    clients.insert(fresh.get(), sender.hash);
    return fresh.release();
}

void ServerShard::dispatch(RecvDatagram& d, const SenderName& sender) noexcept {
    // Counted by the owner shard: once datagrams_received counts a datagram, it is in its client's hands.
    count_received(d);
    ClientState* c;
    try {
        c = find_or_create(sender);
    } catch (const std::bad_alloc&) {
        ServerStatsCounters::add(stats.dropped_queue_full);
        close_fds(d.fds, d.fd_count);
        return;
    }
    // Named senders only: on_received's check compares the name as the kernel wrote it.
    if (!sender.is_unnamed()) last_sender = c;
    deliver(c, d);
}

bool ServerShard::deliver_to_last_sender(RecvDatagram& d) noexcept {
    // A truncated datagram is dropped by on_received's checks, never delivered: it takes the long way.
    ClientState* c = last_sender;
    if (c == nullptr || d.truncated || c->address.length() != d.name_length ||
        !same_bytes(&c->address.raw(), d.name, d.name_length))
        return false;
    count_received(d);
    idle.remove(c);
    deliver(c, d);
    return true;
}

void ServerShard::deliver(ClientState* c, RecvDatagram& d) noexcept {
    if (SendOp* blocked = c->blocked_send; blocked != nullptr) shard.retry_now(blocked);
    if (SendOp* reply = c->batched_reply; reply != nullptr && reply->queued && reply->attempts == 0 && early_replies) {
        // The session waits for a reply still in this turn's batch: send it now, so that the session
        // can finish and this datagram start the next one at once (ServerOptions::early_replies). Not a
        // reply the client's full queue refused before: that one is retried with the batch, once a turn.
        c->pinned = true;  // the session may end: keep the client out of the idle list meanwhile
        shard.send_early(reply);
        c->pinned = false;
    }
    if (c->session == nullptr && !c->restart_scheduled && c->head == nullptr && !tearing_down) {
        // Idle client: start its session on this datagram, parsed straight from the receive buffer.
        c->inline_datagram = &d;
        start_session(c);
        if (c->inline_datagram == &d) {
            c->inline_datagram = nullptr;
            if (c->session != nullptr) {
                // The session suspended before its first co_yield (H5): keep the datagram for it.
                try {
                    c->held = QueuedDatagram::copy_of(d);
                    total_queued_bytes += d.payload.size();
                } catch (const std::bad_alloc&) {
                    ServerStatsCounters::add(stats.dropped_queue_full);
                    close_fds(d.fds, d.fd_count);
                }
            } else {
                close_fds(d.fds, d.fd_count);
            }
        }
        maybe_idle(c);
        return;
    }
    if (c->recv_waiter != nullptr) {
        // The session waits at a co_yield: hand the datagram over now, without a copy.
        RecvWait* w = c->recv_waiter;
        c->recv_waiter = nullptr;
        w->has_datagram = true;
        c->inline_datagram = &d;
        complete_wait_now(w->waiter, WaitStatus::ok);
        if (c->inline_datagram == &d) {  // cannot happen: await_resume consumes it at once
            c->inline_datagram = nullptr;
            enqueue(c, d);
        }
        return;
    }
    enqueue(c, d);
}

void ServerShard::enqueue(ClientState* c, RecvDatagram& d) noexcept {
    if (c->queued_count >= core.options.max_queued_datagrams || c->queued_bytes + d.payload.size() > core.options.max_queued_bytes) {
        ServerStatsCounters::add(stats.dropped_queue_full);
        queue_full_log.log(*core.log, spdlog::level::warn,
                           "Dropped a datagram from {}: its queue is full ({} datagrams, {} bytes)",
                           c->address, c->queued_count, c->queued_bytes);
        close_fds(d.fds, d.fd_count);
        return;
    }
    QueuedDatagram* q;
    try {
        q = QueuedDatagram::copy_of(d);
    } catch (const std::bad_alloc&) {
        ServerStatsCounters::add(stats.dropped_queue_full);
        close_fds(d.fds, d.fd_count);
        return;
    }
    (c->tail != nullptr ? c->tail->next : c->head) = q;
    c->tail = q;
    ++c->queued_count;
    c->queued_bytes += q->size;
    total_queued_bytes += q->size;
    update_receive_pause();
    if (c->session == nullptr && !c->restart_scheduled && !tearing_down) {
        c->restart_scheduled = true;
        shard.defer(&ServerShard::restart_client, c);
    }
}

QueuedDatagram* pop_front(ClientState* c) noexcept {
    QueuedDatagram* q = c->head;
    c->head = q->next;
    if (c->head == nullptr) c->tail = nullptr;
    q->next = nullptr;
    --c->queued_count;
    c->queued_bytes -= q->size;
    return q;
}

void ServerShard::restart_client(void* arg) {
    auto* c = static_cast<ClientState*>(arg);
    ServerShard* home = c->home;
    c->restart_scheduled = false;
    if (c->session != nullptr || c->head == nullptr || home->tearing_down) {
        home->maybe_idle(c);
        return;
    }
    c->held = pop_front(c);  // H12: a new session consumes the oldest queued datagram
    home->start_session(c);
    home->maybe_idle(c);
}

void ServerShard::start_session(ClientState* c) noexcept {
    SessionPromiseBase* p = nullptr;
    try {
        p = core.hooks.create_session(core.hooks.self, c);
    } catch (...) {
        ServerStatsCounters::add(stats.handler_errors);
        log_handler_exception(c, std::current_exception());
    }
    if (p == nullptr) {
        if (c->held != nullptr) {
            total_queued_bytes -= c->held->size;
            release_queued(std::exchange(c->held, nullptr));
        }
        return;
    }
    p->client = c;
    p->ctx.shard = &shard;
    // default_vars is set once service_init has ended and is not written again while this run serves.
    p->ctx.inherited_vars = &core.default_vars;
    c->session = p;
    ++live_sessions;
    ServerStatsCounters::add(stats.sessions_started);
    shard.resume_now(p->self, &p->ctx);
}

void ServerShard::maybe_idle(ClientState* c) noexcept {
    if (c->session != nullptr || c->restart_scheduled || c->head != nullptr || c->held != nullptr || c->pinned ||
        c->refs.load(std::memory_order_acquire) > 0 || c->in_idle)
        return;
    if (c->orphaned.load(std::memory_order_relaxed)) {
        if (c == last_sender) last_sender = nullptr;
        delete c;
        return;
    }
    if (tearing_down) return;  // teardown_clients() frees everything
    idle.push_back(c);
    while (idle.size() > core.options.idle_client_cache) destroy_client(idle.front());
}

void ServerShard::destroy_client(ClientState* c) noexcept {
    if (c == last_sender) last_sender = nullptr;
    idle.remove(c);
    clients.erase(c, c->address_hash);
    delete c;
}

void ServerShard::log_handler_exception(const ClientState* c, std::exception_ptr error) noexcept {
    const std::string address = c != nullptr ? c->address.to_string() : "<unknown>";
    try {
        std::rethrow_exception(error);
    } catch (const Cancelled&) {
        return;  // the server cancelled it: not an error
    } catch (const ClientClosedError&) {
        core.log->warn("There have been attempts to do operation on closed client {}", address);
        return;
    } catch (...) {
    }
    try {
        const std::string what = describe(error);
        core.log->error("----------------------------------------");
        core.log->error("Exception occurred during processing of request from {}: {}", address, what);
        core.log->error("----------------------------------------");
    } catch (...) {
    }
}

void session_finished(SessionPromiseBase& p) noexcept {
    ClientState* c = p.client;
    ServerShard* home = c->home;
    if (p.error) {
        bool counted = true;
        try {
            std::rethrow_exception(p.error);
        } catch (const Cancelled&) {
            counted = false;
        } catch (...) {
        }
        if (counted) ServerStatsCounters::add(home->stats.handler_errors);
        home->log_handler_exception(c, p.error);
    }
    if (!p.started_yielding) {
        // Returned (or failed) before its first co_yield: the datagram that started it is dropped (H6).
        ServerStatsCounters::add(home->stats.dropped_unconsumed);
        if (c->inline_datagram != nullptr) {
            home->close_fds(c->inline_datagram->fds, c->inline_datagram->fd_count);
            c->inline_datagram->fd_count = 0;
            c->inline_datagram = nullptr;
        }
        if (c->held != nullptr) {
            home->total_queued_bytes -= c->held->size;
            home->release_queued(std::exchange(c->held, nullptr));
        }
    }
    c->recv_waiter = nullptr;
    c->session = nullptr;
    --home->live_sessions;
    p.self.destroy();
    if (c->head != nullptr && !home->tearing_down && !c->restart_scheduled) {
        c->restart_scheduled = true;
        home->shard.defer(&ServerShard::restart_client, c);
    } else {
        home->maybe_idle(c);
    }
}

// ---- co_yield ------------------------------------------------------------------------------------

bool recv_ready(SessionPromiseBase& p, RecvWait& w) noexcept {
    if (p.ctx.cancelled) {
        w.waiter.status = WaitStatus::cancelled;
        return true;
    }
    ClientState* c = p.client;
    if (!p.started_yielding) {
        p.started_yielding = true;  // its datagram is inline or held (H5)
        w.has_datagram = true;
        return true;
    }
    if (c->inline_datagram != nullptr || c->head != nullptr) {
        w.has_datagram = true;
        return true;
    }
    if (w.deadline != Clock::time_point::max() && w.deadline <= Clock::now()) {
        w.waiter.status = WaitStatus::timed_out;
        return true;
    }
    return false;
}

bool recv_suspend(SessionPromiseBase& p, RecvWait& w, std::coroutine_handle<> h) noexcept {
    w.waiter.handle = h;
    w.waiter.detach = &detach_recv;
    w.waiter.target = p.client;
    if (!prepare_wait(w.waiter, "co_yield unixgram::recv()", w.deadline)) return false;
    p.client->recv_waiter = &w;
    return true;
}

bool ancillary_enabled(const SessionPromiseBase& p) noexcept { return p.client->home->core.options.receive_ancillary_data; }

void recv_discard_first(SessionPromiseBase& p) noexcept {
    if (p.started_yielding) return;  // later co_yield: nothing was consumed (H10)
    p.started_yielding = true;
    ClientState* c = p.client;
    ServerShard* home = c->home;
    ServerStatsCounters::add(home->stats.dropped_unconsumed);
    if (c->inline_datagram != nullptr) {
        home->close_fds(c->inline_datagram->fds, c->inline_datagram->fd_count);
        c->inline_datagram->fd_count = 0;
        c->inline_datagram = nullptr;
    } else if (c->held != nullptr) {
        home->total_queued_bytes -= c->held->size;
        home->release_queued(std::exchange(c->held, nullptr));
    }
}

namespace {
void parse_payload(SessionPromiseBase& p, ServerShard* home, void* out, std::span<const std::byte> payload) {
    try {
        p.parse(out, home->core.hooks.protocol, payload);
    } catch (const ParseError&) {
        ServerStatsCounters::add(home->stats.parse_errors);
        throw;
    } catch (...) {
        std::throw_with_nested(std::runtime_error("protocol.build_packet() crashed"));
    }
}
}  // namespace

void recv_take(SessionPromiseBase& p, Ancillary* claim, void* out) {
    ClientState* c = p.client;
    ServerShard* home = c->home;
    if (RecvDatagram* d = c->inline_datagram; d != nullptr && claim == nullptr && d->fd_count == 0) {
        // The common case: the datagram in the receive buffer, nothing to claim or close.
        c->inline_datagram = nullptr;
        parse_payload(p, home, out, d->payload);
        return;
    }
    std::span<const std::byte> payload;
    int* fds;
    std::uint32_t fd_count;
    bool has_credentials, control_truncated;
    struct ucred credentials;
    QueuedDatagram* owned = nullptr;
    if (RecvDatagram* d = c->inline_datagram; d != nullptr) {
        c->inline_datagram = nullptr;
        payload = d->payload;
        fds = d->fds;
        fd_count = std::exchange(d->fd_count, 0u);
        has_credentials = d->has_credentials;
        credentials = d->credentials;
        control_truncated = d->control_truncated;
    } else {
        owned = c->held != nullptr ? std::exchange(c->held, nullptr) : pop_front(c);
        home->total_queued_bytes -= owned->size;
        payload = {owned->payload(), owned->size};
        fds = owned->fds();
        fd_count = std::exchange(owned->fd_count, 0u);
        has_credentials = owned->has_credentials;
        credentials = owned->credentials;
        control_truncated = owned->control_truncated;
        if (home->receive_paused) home->update_receive_pause();
    }
    struct Free {
        QueuedDatagram* q;
        ~Free() {
            if (q != nullptr) QueuedDatagram::destroy(q);
        }
    } free_on_exit{owned};

    if (claim != nullptr) {
        claim->clear();
        try {
            claim->fds.reserve(fd_count);
        } catch (...) {
            home->close_fds(fds, fd_count);
            throw;
        }
        for (std::uint32_t i = 0; i < fd_count; ++i) claim->fds.emplace_back(fds[i]);
        if (has_credentials) claim->credentials = Credentials{credentials.pid, credentials.uid, credentials.gid};
        claim->truncated = control_truncated;
    } else {
        home->close_fds(fds, fd_count);  // unclaimed fds are closed (A6)
    }
    parse_payload(p, home, out, payload);
}

}  // namespace unixgram::detail
