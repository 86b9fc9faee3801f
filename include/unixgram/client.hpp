// SPDX-License-Identifier: MIT
// Client<Resp>: the server's view of one sender address, handed to handle().
#pragma once

/// \file
/// A `Client<Resp>` stands for one sender address of one server (H2, H17): every datagram from
/// that address goes to the same client, handled by at most one session at a time. Copies compare
/// equal and hash equal; keep a copy (e.g. as a map key) and the same client state is reused for
/// that address while you hold it. Copies must not outlive the server object. They may be made,
/// used and dropped on any thread (another shard's loop, a thread of your own: ServerOptions::shards);
/// a copy dropped off its client's shard hands its reference back to that shard, which idles the
/// client on its next turn. The object you copy from must stay alive meanwhile, as with any copy. A
/// reply sent from another shard goes out through that shard's loop and is not retried early.
///
/// Example:
/// \code
///   unixgram::Session<std::string> handle(unixgram::Client<std::string>& client) override {
///       std::string request = co_yield unixgram::recv();
///       seen_[client] += 1;  // std::unordered_map<unixgram::Client<std::string>, int>
///       co_await client.send_packet("hello " + client.peer_name().to_string());
///   }
/// \endcode

#include <cstddef>
#include <coroutine>
#include <functional>
#include <new>
#include <utility>

#include <sys/socket.h>

#include "unixgram/address.hpp"
#include "unixgram/detail/engine.hpp"

namespace unixgram {

/// The server's socket, as `Client::socket()` exposes it (shared by all clients).
class SocketRef {
public:
    explicit SocketRef(int fd) noexcept : fd_(fd) {}
    int fileno() const noexcept { return fd_; }
    /// setsockopt with an int value; returns 0 or -errno.
    int set_option(int level, int name, int value) const noexcept {
        return ::setsockopt(fd_, level, name, &value, sizeof value) == 0 ? 0 : -errno;
    }

private:
    int fd_;
};

namespace detail {
/// Awaiter of Client::send_packet: submits the serialized datagram and waits for the kernel.
class SendAwaiter {
public:
    explicit SendAwaiter(SendOp* op) noexcept { wait_.op = op; }
    SendAwaiter(SendAwaiter&& o) noexcept : wait_() { wait_.op = std::exchange(o.wait_.op, nullptr); }
    SendAwaiter(const SendAwaiter&) = delete;
    SendAwaiter& operator=(const SendAwaiter&) = delete;
    SendAwaiter& operator=(SendAwaiter&&) = delete;
    ~SendAwaiter() {
        if (wait_.op != nullptr) send_release(wait_.op);
    }
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) noexcept { return send_submit(wait_, h); }
    void await_resume() { send_finish(wait_); }

private:
    SendWait wait_{};
};
}  // namespace detail

template <class Resp>
class Client {
public:
    Client(const Client& o) noexcept : state_(o.state_) { detail::client_ref(state_); }
    Client& operator=(const Client& o) noexcept {
        detail::client_ref(o.state_);
        release();
        state_ = o.state_;
        counted_ = true;
        return *this;
    }
    ~Client() { release(); }

    /// Serializes `response` and sends it to this client. Throws ClientClosedError if the server is
    /// shutting down (before serializing, H20), std::runtime_error("protocol.make_datagram()
    /// crashed") if the protocol throws (H22), std::system_error(EINVAL) for an unnamed client
    /// (H21), and at the co_await: std::system_error for a refused send (peer gone: ECONNREFUSED,
    /// ENOENT), TimeoutError if the peer's queue stayed full for ServerOptions::send_timeout,
    /// Cancelled at shutdown. The datagram is never sent empty or partially.
    [[nodiscard]] detail::SendAwaiter send_packet(const Resp& response) {
        detail::SendOp* op = detail::send_acquire(state_);
        detail::send_prepare(op, &response);
        return detail::SendAwaiter(op);
    }

    /// Serializes `response` and queues it for this client with the loop turn's batch of posted replies,
    /// without waiting for the kernel: the handler goes on at once, so a client's run of datagrams is
    /// answered within one loop turn and its replies leave together (one `sendmmsg` for up to 64 posted
    /// replies, on both backends). Throws what send_packet throws before its co_await (ClientClosedError,
    /// the protocol's crash, EINVAL for an unnamed client, a call off the server's loop threads). What the
    /// kernel says is not reported to the handler: a reply the peer's full queue refuses is retried with
    /// backoff for up to ServerOptions::send_timeout, then dropped and counted in ServerStats::send_timeouts,
    /// with every reply to that peer waiting behind it; any other refusal (peer gone) is counted in
    /// send_errors; both are logged, rate-limited. At shutdown a reply still waiting for its retry is dropped
    /// and counted in sends_abandoned. Replies posted to one peer leave in the order posted: behind a refused
    /// one, the later ones wait.
    void post_packet(const Resp& response) {
        detail::SendOp* op = detail::send_acquire(state_);
        detail::send_prepare(op, &response);
        detail::send_post(op);
    }

    /// The client's address (what it is bound to).
    const UnixAddress& peer_name() const noexcept { return detail::client_address(state_); }
    /// The server's own address.
    const UnixAddress& local_name() const noexcept { return detail::client_local_name(state_); }
    /// The server's socket, shared by all clients.
    SocketRef socket() const noexcept { return SocketRef(detail::client_socket_fd(state_)); }
    /// True before service_init has completed and from the start of shutdown on (H19).
    bool is_closing() const noexcept { return detail::client_is_closing(state_); }

    friend bool operator==(const Client& a, const Client& b) noexcept {
        return detail::client_server(a.state_) == detail::client_server(b.state_) && a.peer_name() == b.peer_name();
    }
    std::size_t hash() const noexcept {
        return peer_name().hash() ^ (std::hash<const void*>{}(detail::client_server(state_)) << 1);
    }

    /// Internal: the non-counting instance embedded in the engine's client state.
    struct EmbeddedTag {};
    Client(detail::ClientState* state, EmbeddedTag) noexcept : state_(state), counted_(false) {}

private:
    void release() noexcept {
        if (counted_) detail::client_unref(state_);
        counted_ = true;
    }
    detail::ClientState* state_;
    bool counted_ = true;
};

}  // namespace unixgram

template <class Resp>
struct std::hash<unixgram::Client<Resp>> {
    std::size_t operator()(const unixgram::Client<Resp>& c) const noexcept { return c.hash(); }
};
