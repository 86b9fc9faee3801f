// SPDX-License-Identifier: MIT
// The Client handle's side of the per-client state: its references (any thread) and send_packet (the
// session's reply: a send op, its wait, early sending when the client's next datagram is queued).
#include <cerrno>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <system_error>

#include "runtime/shard.hpp"
#include "server/server_core.hpp"
#include "unixgram/errors.hpp"

namespace unixgram::detail {

namespace {

void detach_send(Waiter* w) noexcept {
    auto* op = static_cast<SendOp*>(w->target);
    Shard* shard = w->ctx->shard;
    if (op->in_kernel) {
        shard->unlink_blocked(op);
        op->client = nullptr;  // the client state may go before the kernel completes the op
        op->waiter = nullptr;  // released when the kernel completes it
    } else {
        ServerStatsCounters::add(shard->server().stats.sends_abandoned);
        shard->release_op(op);  // waiting for a retry: drop it now
    }
}

}  // namespace

// ---- clients --------------------------------------------------------------------------------------

void client_ref(ClientState* c) noexcept {
    // Any thread: the copy it is made from holds a reference, so the state cannot go meanwhile.
    c->refs.fetch_add(1, std::memory_order_relaxed);
}

void release_client_ref(ClientState* c) noexcept {
    if (c->refs.fetch_sub(1, std::memory_order_acq_rel) > 1) return;
    if (c->orphaned.load(std::memory_order_acquire)) {
        delete c;  // its run is over
    } else {
        c->home->maybe_idle(c);  // on the owner's loop thread: the only caller while it serves
    }
}

void client_unref(ClientState* c) noexcept {
    // Off the owner's loop thread the owner may be idling or freeing this client right now: hand the
    // reference over to it (ServerShard::take_remote_drops) instead. An orphaned client has no owner left.
    if (!c->orphaned.load(std::memory_order_acquire) && Shard::current() != c->home_loop) {
        RemoteDrops& box = c->core->remote_drops[c->home_index];
        std::lock_guard lock(box.mutex);
        try {
            box.clients.push_back(c);
        } catch (const std::bad_alloc&) {
            return;  // no room to hand it over: the reference stays (the state lives until the server goes)
        }
        box.count.store(box.clients.size(), std::memory_order_release);
        return;
    }
    release_client_ref(c);
}

bool client_is_closing(const ClientState* c) noexcept {
    // The server-wide phase, not the owner shard's flag: every shard's clients close at the same moment.
    return c->orphaned.load(std::memory_order_acquire) ||
           c->core->phase.load(std::memory_order_relaxed) != ServerCore::kServing ||
           !c->core->service_available.load(std::memory_order_relaxed);
}

const UnixAddress& client_address(const ClientState* c) noexcept { return c->address; }
const UnixAddress& client_local_name(const ClientState* c) noexcept { return c->core->bound; }
int client_socket_fd(const ClientState* c) noexcept { return c->core->fd; }
const void* client_server(const ClientState* c) noexcept { return c->core; }
void* client_storage(ClientState* c) noexcept { return c->client_storage; }

// ---- send_packet ------------------------------------------------------------------------------------

SendOp* send_acquire(ClientState* c) {
    if (client_is_closing(c)) throw ClientClosedError();
    Shard* shard = Shard::current();
    if (shard == nullptr || &shard->core() != c->core)
        throw std::logic_error("Client::send_packet() can only be used on a loop thread of the client's server");
    SendOp* op = shard->acquire_op();
    std::memcpy(&op->dest, &c->address.raw(), sizeof(op->dest));
    op->dest_length = c->address.length();
    // A reply sent from another shard goes out through that shard's ring; only the owner shard
    // links it to the client state (to retry it when the client sends again).
    op->client = c->home_loop == shard ? c : nullptr;
    return op;
}

void send_prepare(SendOp* op, const void* response) {
    const ServerHooks& hooks = Shard::current()->core().hooks;
    try {
        hooks.make_datagram(hooks.protocol, response, op->buffer);
    } catch (...) {
        Shard::current()->release_op(op);
        std::throw_with_nested(std::runtime_error("protocol.make_datagram() crashed"));
    }
    if (op->dest_length <= sizeof(sa_family_t)) {
        Shard::current()->release_op(op);
        throw std::system_error(EINVAL, std::generic_category(), "Cannot send a datagram to an unnamed address.");
    }
}

void send_release(SendOp* op) noexcept {
    if (Shard* s = Shard::current(); s != nullptr) s->release_op(op);
}

bool send_submit(SendWait& w, std::coroutine_handle<> h) noexcept {
    SendOp* op = w.op;
    w.waiter.handle = h;
    w.waiter.detach = &detach_send;
    w.waiter.target = op;
    bool suspend;
    try {
        suspend = prepare_wait(w.waiter, "Client::send_packet()");
    } catch (...) {
        suspend = false;
        w.waiter.status = WaitStatus::cancelled;
    }
    w.op = nullptr;  // from here on the shard owns it
    Shard* shard = Shard::current();
    if (!suspend) {
        shard->release_op(op);
        return false;
    }
    if (ClientState* c = op->client; c != nullptr && c->head != nullptr && c->home->early_replies) {
        // A datagram of this client waits behind this session: send now, so that it can start.
        op->waiter = &w;
        int result;
        if (!shard->send_now(op, result)) return true;  // refused: waits for its retry, suspended
        op->waiter = nullptr;
        shard->release_op(op);
        settle_wait_inline(w.waiter, WaitStatus::ok);
        w.result = result;
        return false;
    }
    op->waiter = &w;
    shard->submit_send(op);
    return true;
}

void send_post(SendOp* op) noexcept {
    // Not linked to the client state: the client may go idle (and be freed) while its reply waits for a retry,
    // which then comes from its timer alone, not from the client's next datagram.
    op->client = nullptr;
    op->waiter = nullptr;
    op->posted = true;
    Shard::current()->post(op);
}

void send_finish(SendWait& w) {
    rethrow_wait_status(w.waiter);
    if (w.result >= 0) return;
    if (w.result == -ETIMEDOUT) {
        throw TimeoutError("reply refused for longer than send_timeout: the peer's receive queue stayed full");
    }
    throw std::system_error(-w.result, std::generic_category(), "cannot send the reply");
}

}  // namespace unixgram::detail
