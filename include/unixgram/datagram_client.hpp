// SPDX-License-Identifier: MIT
// UnixDatagramClient<Send, Recv, Protocol>: a blocking client of a Unix datagram server.
#pragma once

/// \file
/// A `UnixDatagramClient` is one AF_UNIX datagram socket, always named (autobound unless you give
/// a local address) so that the server can reply, and connected to one server, so that the kernel
/// delivers only that server's datagrams (spec §8, C1–C5). It sends `Send` values and receives
/// `Recv` values through a protocol. Calls block; `recv_packet` takes a timeout. Sends and receives
/// may run on two threads at once, and `close()` from any thread wakes a blocked call.
///
/// Example (`Send` and `Recv` are deduced from the protocol's member functions, here both
/// std::string; spell them out, `UnixDatagramClient<Send, Recv, Protocol>`, when it overloads them):
/// \code
///   struct LineProtocol {
///       void make_datagram(const std::string& s, unixgram::Buffer& out) const { out.append(s); }
///       std::string build_packet(std::span<const std::byte> in) const {
///           return {reinterpret_cast<const char*>(in.data()), in.size()};
///       }
///   };
///   unixgram::UnixDatagramClient client(unixgram::UnixAddress::pathname("/run/echo.sock"), LineProtocol{});
///   client.send_packet("ping");
///   std::string reply = client.recv_packet(std::chrono::seconds(5));  // TimeoutError if silent
///   client.close();
/// \endcode

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "unixgram/address.hpp"
#include "unixgram/ancillary.hpp"
#include "unixgram/buffer.hpp"
#include "unixgram/errors.hpp"
#include "unixgram/protocol.hpp"

namespace unixgram {

struct DatagramClientOptions {
    /// Largest datagram `recv_packet` accepts whole (the receive buffer, allocated once). A larger
    /// one is consumed and reported as truncated, never parsed cut short. Must be at least 1.
    std::size_t max_datagram_size = 65536;
};

namespace detail {

/// The part of UnixDatagramClient that does not depend on its types: the socket, its two locks,
/// its buffers and the close protocol. Defined in src/net/datagram_client.cpp.
class DatagramClientSocket {
public:
    /// Fills `out` with the datagram for `*packet`; may throw (wrapped as a protocol crash).
    using Serialize = void (*)(const void* context, Buffer& out);
    /// Parses `datagram` into `*context`; ParseError passes through, anything else is a crash.
    using Parse = void (*)(void* context, std::span<const std::byte> datagram);

    /// Creates, binds and connects the socket. Throws std::invalid_argument for an unnamed server
    /// or max_datagram_size 0, std::system_error naming the address that failed.
    DatagramClientSocket(const UnixAddress& server, const UnixAddress& local, const DatagramClientOptions& options);
    DatagramClientSocket(const DatagramClientSocket&) = delete;
    DatagramClientSocket& operator=(const DatagramClientSocket&) = delete;
    ~DatagramClientSocket();

    void send(Serialize serialize, const void* context);
    void recv(std::optional<std::chrono::duration<double>> timeout, Parse parse, void* context);
    void close() noexcept;
    bool is_closed() const noexcept;
    int fileno() const noexcept;
    UnixAddress local_name() const;
    UnixAddress peer_name() const;

private:
    class Use;
    class RecvTurn;
    enum class Wait { ready, timeout, closed };
    Wait wait(int fd, short events, const std::optional<std::chrono::steady_clock::time_point>& deadline);

    // Each direction has its own lock and buffer, so a blocked receive never delays a send.
    std::mutex send_mutex_;
    Buffer send_buffer_;
    // The receive lock is a flag, so that waiting for it can count against recv's timeout
    // (std::timed_mutex would do, but its steady-clock wait is invisible to ThreadSanitizer).
    std::mutex recv_mutex_;
    std::condition_variable recv_idle_;
    bool recv_busy_ = false;
    std::vector<std::byte> recv_buffer_;

    // close() must not wait for a blocked call, yet must not close an fd that call still polls
    // (the number could be reused under it): it marks the client closed and signals wake_fd_, and
    // whoever is the last user of the fds closes them.
    mutable std::mutex state_mutex_;
    UniqueFd fd_;
    UniqueFd wake_fd_;  // eventfd, readable once closed
    int users_ = 0;
    bool closed_ = false;

    UnixAddress local_;
    UnixAddress peer_;
};

template <class F>
struct MakeDatagramArgument {};
template <class R, class P, class S>
struct MakeDatagramArgument<R (P::*)(S, Buffer&) const> { using type = std::remove_cvref_t<S>; };
template <class R, class P, class S>
struct MakeDatagramArgument<R (P::*)(S, Buffer&) const noexcept> { using type = std::remove_cvref_t<S>; };
template <class R, class S>
struct MakeDatagramArgument<R (*)(S, Buffer&)> { using type = std::remove_cvref_t<S>; };
template <class R, class S>
struct MakeDatagramArgument<R (*)(S, Buffer&) noexcept> { using type = std::remove_cvref_t<S>; };

/// What `P::make_datagram` takes; only for a protocol with exactly one, non-template make_datagram.
template <class P>
using ProtocolSend = typename MakeDatagramArgument<decltype(&P::make_datagram)>::type;
/// What `P::build_packet` returns.
template <class P>
using ProtocolRecv =
    std::remove_cvref_t<decltype(std::declval<const P&>().build_packet(std::declval<std::span<const std::byte>>()))>;

/// A protocol whose Send and Recv types class template argument deduction can name.
template <class P>
concept DeduciblePacketTypes = requires {
    typename ProtocolSend<P>;
    typename ProtocolRecv<P>;
};

}  // namespace detail

template <class Send, class Recv, class Protocol>
    requires DatagramProtocol<Protocol, Send, Recv>
class UnixDatagramClient {
public:
    /// Creates an AF_UNIX datagram socket (close-on-exec), binds it to `local` (an unnamed address
    /// asks the kernel for an abstract name) and connects it to `server`. Throws
    /// std::system_error whose message names the address ("cannot bind to '/x/y': Address already
    /// in use", "cannot connect to '/run/app.sock': No such file or directory"; a socket file it
    /// bound is removed again when the connect fails), std::invalid_argument for an unnamed
    /// `server` or `options.max_datagram_size` 0. Allocates the receive buffer.
    UnixDatagramClient(UnixAddress server, Protocol protocol, UnixAddress local = UnixAddress::autobind(),
                       DatagramClientOptions options = {})
        : protocol_(std::move(protocol)),
          socket_(std::make_unique<detail::DatagramClientSocket>(server, local, options)) {}

    /// Move-only. A moved-from client behaves as a closed one.
    UnixDatagramClient(UnixDatagramClient&&) noexcept = default;
    UnixDatagramClient& operator=(UnixDatagramClient&&) noexcept = default;
    UnixDatagramClient(const UnixDatagramClient&) = delete;
    UnixDatagramClient& operator=(const UnixDatagramClient&) = delete;
    /// Closes the client. A socket file bound at a local pathname stays (as EasyNetwork leaves it).
    ~UnixDatagramClient() = default;

    /// Serializes `packet` and sends it as one datagram, waiting while the server's queue is full.
    /// Throws ClientClosedError (checked before serializing, and when close() interrupts the wait),
    /// std::runtime_error("protocol.make_datagram() crashed") nesting what the protocol threw,
    /// std::system_error naming the server: errc::connection_refused once the server's socket is
    /// closed (on every later send too), EMSGSIZE for a datagram larger than the send buffer.
    /// Allocates only while its reused buffer grows.
    void send_packet(const Send& packet) {
        SendContext context{&protocol_, &packet};
        socket().send(&serialize, &context);
    }

    /// Waits for the next datagram from the server and parses it. `timeout`: nullopt waits forever,
    /// zero polls once, negative counts as zero; it includes waiting for another thread's receive.
    /// Throws TimeoutError, ClientClosedError (also when close() interrupts the wait), ParseError
    /// from the protocol, std::runtime_error("protocol.build_packet() crashed") nesting any other
    /// exception of the protocol, std::runtime_error for a datagram over max_datagram_size (it is
    /// consumed), std::system_error for a kernel error. Datagrams from any other sender are dropped.
    Recv recv_packet(std::optional<std::chrono::duration<double>> timeout = std::nullopt) {
        std::optional<Recv> packet;
        RecvContext context{&protocol_, &packet};
        socket().recv(timeout, &parse, &context);
        return std::move(*packet);
    }

    /// Idempotent and thread-safe. Does not wait for calls in progress: they wake up and throw
    /// ClientClosedError, and the last of them closes the socket itself.
    void close() noexcept {
        if (socket_) socket_->close();
    }
    bool is_closed() const noexcept { return !socket_ || socket_->is_closed(); }
    /// The socket's file descriptor (for options), or -1 once closed. Do not close, shut down or read it.
    int fileno() const noexcept { return socket_ ? socket_->fileno() : -1; }
    /// The address the client is bound to (the kernel's name when autobound). ClientClosedError when closed.
    UnixAddress local_name() const { return socket().local_name(); }
    /// The server's address as the kernel reported it at connect. ClientClosedError when closed.
    UnixAddress peer_name() const { return socket().peer_name(); }

    const Protocol& protocol() const noexcept { return protocol_; }

private:
    struct SendContext {
        const Protocol* protocol;
        const Send* packet;
    };
    struct RecvContext {
        const Protocol* protocol;
        std::optional<Recv>* packet;
    };
    static void serialize(const void* context, Buffer& out) {
        const auto* c = static_cast<const SendContext*>(context);
        c->protocol->make_datagram(*c->packet, out);
    }
    static void parse(void* context, std::span<const std::byte> datagram) {
        auto* c = static_cast<RecvContext*>(context);
        c->packet->emplace(c->protocol->build_packet(datagram));
    }
    detail::DatagramClientSocket& socket() const {
        if (!socket_) throw ClientClosedError();
        return *socket_;
    }

    Protocol protocol_;
    std::unique_ptr<detail::DatagramClientSocket> socket_;  // null once moved from
};

template <class Protocol>
    requires detail::DeduciblePacketTypes<Protocol>
UnixDatagramClient(UnixAddress, Protocol)
    -> UnixDatagramClient<detail::ProtocolSend<Protocol>, detail::ProtocolRecv<Protocol>, Protocol>;
template <class Protocol>
    requires detail::DeduciblePacketTypes<Protocol>
UnixDatagramClient(UnixAddress, Protocol, UnixAddress)
    -> UnixDatagramClient<detail::ProtocolSend<Protocol>, detail::ProtocolRecv<Protocol>, Protocol>;
template <class Protocol>
    requires detail::DeduciblePacketTypes<Protocol>
UnixDatagramClient(UnixAddress, Protocol, UnixAddress, DatagramClientOptions)
    -> UnixDatagramClient<detail::ProtocolSend<Protocol>, detail::ProtocolRecv<Protocol>, Protocol>;

}  // namespace unixgram
