// SPDX-License-Identifier: MIT
// ClientState and QueuedDatagram: what the server keeps per sender address.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "io/datagram.hpp"
#include "unixgram/address.hpp"
#include "unixgram/detail/engine.hpp"
#include "unixgram/server.hpp"

namespace unixgram::detail {

class Shard;

struct ServerCore;
struct ServerShard;

/// A datagram copied out of the receive buffer because its client's session was busy. One
/// allocation holds the header, the fds and the payload.
struct QueuedDatagram {
    QueuedDatagram* next = nullptr;
    std::uint32_t size = 0;
    std::uint32_t fd_count = 0;       ///< fds still owned (0 once handed over or closed)
    std::uint32_t allocated_fds = 0;  ///< room for fds in this allocation
    bool has_credentials = false;
    bool control_truncated = false;
    struct ucred credentials {};

    int* fds() noexcept { return reinterpret_cast<int*>(this + 1); }
    std::byte* payload() noexcept { return reinterpret_cast<std::byte*>(fds() + allocated_fds); }
    static std::size_t allocation_size(std::size_t fds, std::size_t payload) noexcept {
        return sizeof(QueuedDatagram) + fds * sizeof(int) + payload;
    }

    static QueuedDatagram* copy_of(const RecvDatagram& d);
    static void destroy(QueuedDatagram* q) noexcept;
};

/// Per-client state. Hot fields first: dispatch touches them for every datagram.
struct ClientState {
    SessionPromiseBase* session = nullptr;  ///< the active handle() coroutine, if any
    RecvWait* recv_waiter = nullptr;        ///< the session's co_yield waiting for a datagram
    SendOp* blocked_send = nullptr;         ///< a reply the client's full queue refused, waiting to retry
    SendOp* batched_reply = nullptr;        ///< its session's reply, sent with the turn's batch
    RecvDatagram* inline_datagram = nullptr;  ///< being dispatched now, parsed straight from the ring
    QueuedDatagram* held = nullptr;         ///< popped for a session not yet at its first co_yield
    QueuedDatagram* head = nullptr;
    QueuedDatagram* tail = nullptr;
    std::size_t queued_count = 0;
    std::size_t queued_bytes = 0;
    /// Client copies held by user code. Copies may be made on any thread (each holds a reference); one
    /// dropped off the owner's loop thread keeps its reference until the owner takes it (RemoteDrops), so
    /// that only the owner shard, or the last drop of an orphaned client, frees the state.
    std::atomic<unsigned> refs{0};
    bool restart_scheduled = false;
    bool pinned = false;                    ///< dispatch holds it across an early reply (not idle meanwhile)
    std::atomic<bool> orphaned{false};      ///< outlived its run (held by user code): closed

    // cold
    ServerShard* home = nullptr;            ///< the shard that owns this client (valid until orphaned)
    const Shard* home_loop = nullptr;       ///< home's loop, compared (never dereferenced) off that thread
    unsigned home_index = 0;                ///< home's index: its RemoteDrops box in core
    ServerCore* core = nullptr;             ///< its server (outlives the run)
    UnixAddress address;
    std::size_t address_hash = 0;           ///< address.hash(): its key in the shard's ClientTable
    ClientState* idle_prev = nullptr;       ///< idle LRU links (no session, no queue, no refs)
    ClientState* idle_next = nullptr;
    bool in_idle = false;
    alignas(void*) unsigned char client_storage[kClientStorageSize];
};

/// Client copies dropped off their owner shard's loop thread (ServerOptions::shards, user threads), waiting for
/// that shard to release their reference: only the owner may idle or free a client it serves.
struct RemoteDrops {
    std::mutex mutex;
    std::vector<ClientState*> clients;   ///< one entry per dropped copy (guarded by mutex)
    std::atomic<std::size_t> count{0};   ///< clients.size(), read without the lock once a turn
};

/// Releases one reference to `c` on its owner's loop thread (or anywhere once orphaned): the last one idles
/// the client (or frees it, orphaned).
void release_client_ref(ClientState* c) noexcept;

/// Intrusive LRU list of idle clients, oldest first.
class IdleList {
public:
    std::size_t size() const noexcept { return size_; }
    void push_back(ClientState* c) noexcept {
        c->idle_prev = tail_;
        c->idle_next = nullptr;
        (tail_ != nullptr ? tail_->idle_next : head_) = c;
        tail_ = c;
        c->in_idle = true;
        ++size_;
    }
    void remove(ClientState* c) noexcept {
        if (!c->in_idle) return;
        (c->idle_prev != nullptr ? c->idle_prev->idle_next : head_) = c->idle_next;
        (c->idle_next != nullptr ? c->idle_next->idle_prev : tail_) = c->idle_prev;
        c->idle_prev = c->idle_next = nullptr;
        c->in_idle = false;
        --size_;
    }
    ClientState* front() const noexcept { return head_; }

private:
    ClientState* head_ = nullptr;
    ClientState* tail_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace unixgram::detail
