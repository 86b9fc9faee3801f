// SPDX-License-Identifier: MIT
// UnixDatagramServer<Req, Resp, Protocol>: binds a Unix datagram socket and serves a handler.
#pragma once

/// \file
/// Lifecycle (spec §1.2–1.4): the constructor validates and touches nothing; `activate()` binds
/// (or serve_forever()/start() do); `serve_forever()` runs service_init, serves on this thread and
/// returns after `shutdown()`; `start()`/`stop()` do the same on a thread of the server's own.
/// `shutdown()` cancels every session (Cancelled at its co_yield), waits for them, unwinds the
/// ExitStack, and leaves the socket bound so the server can serve again. `close()` is idempotent,
/// closes the socket and unlinks the socket file only if it is still the one this server created.
/// Binding never removes or alters an existing path.
///
/// Example:
/// \code
///   Echo handler;  // a DatagramRequestHandler<unixgram::Bytes, unixgram::Bytes>
///   unixgram::ServerOptions opts;
///   opts.mode = 0600;
///   unixgram::UnixDatagramServer server(unixgram::UnixAddress::pathname("/run/echo.sock"),
///                                       unixgram::RawProtocol{}, handler, opts);
///   server.start();               // returns once serving
///   // ... server.address(), server.stats() ...
///   server.stop();
///   server.close();
/// \endcode

#include <memory>
#include <new>
#include <optional>
#include <span>

#include "unixgram/address.hpp"
#include "unixgram/buffer.hpp"
#include "unixgram/client.hpp"
#include "unixgram/exit_stack.hpp"
#include "unixgram/handler.hpp"
#include "unixgram/options.hpp"
#include "unixgram/protocol.hpp"
#include "unixgram/session.hpp"
#include "unixgram/stats.hpp"
#include "unixgram/task.hpp"

namespace unixgram {

class Server;

namespace detail {
/// How the non-template engine reaches the typed parts of a UnixDatagramServer.
struct ServerHooks {
    void* self = nullptr;
    const void* protocol = nullptr;
    /// Creates handle(client) for `client` and returns its promise and coroutine (not started).
    SessionPromiseBase* (*create_session)(void* self, ClientState* client) = nullptr;
    void (*make_datagram)(const void* protocol, const void* response, Buffer& out) = nullptr;
    Task<> (*service_init)(void* self, ExitStack& stack, Server& server) = nullptr;
};
/// Storage in each client state for its embedded Client<Resp> (all Client<Resp> share one layout).
void* client_storage(ClientState* c) noexcept;
constexpr std::size_t kClientStorageSize = 2 * sizeof(void*);
}  // namespace detail

/// The part of a server that does not depend on its types: lifecycle, address, stats, spawn.
class Server {
public:
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;
    virtual ~Server();

    /// Creates and binds the socket now (idempotent). Throws std::system_error naming the address
    /// (EADDRINUSE for any existing path, which is left untouched), ServerClosedError after close().
    void activate();
    /// Serves on the calling thread until shutdown() or close(). Throws ServerAlreadyRunning,
    /// ServerClosedError, bind errors, or what service_init threw.
    void serve_forever();
    /// Runs serve_forever() on a new thread; returns once the server reads datagrams, or throws
    /// what serve_forever() threw.
    void start();
    /// shutdown(), then joins the thread start() created.
    void stop();
    /// Stops serving: cancels sessions and background tasks, waits for them, unwinds the ExitStack.
    /// Thread-safe; returns at once when not serving. From the loop thread (in a handler) it only
    /// requests the stop.
    void shutdown();
    /// shutdown(), then closes the socket and unlinks its file if its device and inode are still
    /// the ones bound. Idempotent.
    void close();

    bool is_serving() const noexcept;
    bool is_listening() const noexcept;
    /// The bound address (the kernel's name for autobind); unnamed before activate() / after close().
    UnixAddress address() const;
    ServerStats stats() const noexcept;
    const ServerOptions& options() const noexcept;
    spdlog::logger& logger() const noexcept;

    /// Runs `task` in the background on the loop until it ends or the server shuts down. Only on
    /// the loop thread (service_init, handlers); throws std::logic_error elsewhere.
    void spawn(Task<> task);

protected:
    Server(UnixAddress address, ServerOptions options, detail::ServerHooks hooks);

private:
    std::unique_ptr<detail::ServerCore> core_;
};

template <class Req, class Resp, class Protocol>
    requires DatagramProtocol<Protocol, Resp, Req>
class UnixDatagramServer final : public Server {
public:
    using Handler = DatagramRequestHandler<Req, Resp>;

    /// `handler` must outlive the server. Throws std::invalid_argument for invalid options.
    UnixDatagramServer(UnixAddress address, Protocol protocol, Handler& handler, ServerOptions options = {})
        : Server(std::move(address), std::move(options),
                 detail::ServerHooks{this, &protocol_, &create_session, &make_datagram, &service_init}),
          protocol_(std::move(protocol)),
          handler_(handler) {}

    ~UnixDatagramServer() override { close(); }

    const Protocol& protocol() const noexcept { return protocol_; }

private:
    static detail::SessionPromiseBase* create_session(void* self, detail::ClientState* c) {
        auto* server = static_cast<UnixDatagramServer*>(self);
        static_assert(sizeof(Client<Resp>) <= detail::kClientStorageSize);
        auto* client = ::new (detail::client_storage(c)) Client<Resp>(c, typename Client<Resp>::EmbeddedTag{});
        auto h = server->handler_.handle(*client).release();
        auto& promise = h.promise();
        promise.parse = &parse;
        promise.self = h;
        return &promise;
    }
    static void parse(void* out, const void* protocol, std::span<const std::byte> payload) {
        static_cast<std::optional<Req>*>(out)->emplace(static_cast<const Protocol*>(protocol)->build_packet(payload));
    }
    static void make_datagram(const void* protocol, const void* response, Buffer& out) {
        static_cast<const Protocol*>(protocol)->make_datagram(*static_cast<const Resp*>(response), out);
    }
    static Task<> service_init(void* self, ExitStack& stack, Server& server) {
        return static_cast<UnixDatagramServer*>(self)->handler_.service_init(stack, server);
    }

    Protocol protocol_;
    Handler& handler_;
};

}  // namespace unixgram
