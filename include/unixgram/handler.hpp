// SPDX-License-Identifier: MIT
// DatagramRequestHandler<Req, Resp>: what a user writes to serve a UnixDatagramServer.
#pragma once

/// \file
/// One handler instance serves the whole server (H1). For each client, `handle(client)` runs as a
/// coroutine; at most one runs per client at a time (H3) and datagrams arriving meanwhile are
/// queued in order (H4). When it finishes and datagrams are queued, a new one starts (H12).
/// Exceptions escaping it are logged with the client's address and the server keeps serving (H13).
/// `service_init` runs once per serve_forever() run, before the server reads its first datagram.
/// With ServerOptions::shards > 1, handle() runs on several threads at once (each client always on
/// the same one): state shared between clients needs its own synchronisation.
///
/// Example (an echo handler):
/// \code
///   class Echo : public unixgram::DatagramRequestHandler<unixgram::Bytes, unixgram::Bytes> {
///   public:
///       unixgram::Session<unixgram::Bytes> handle(unixgram::Client<unixgram::Bytes>& client) override {
///           unixgram::Bytes request = co_yield unixgram::recv();
///           co_await client.send_packet(request);
///       }
///   };
/// \endcode

#include "unixgram/client.hpp"
#include "unixgram/exit_stack.hpp"
#include "unixgram/session.hpp"
#include "unixgram/task.hpp"

namespace unixgram {

class Server;

template <class Req, class Resp>
class DatagramRequestHandler {
public:
    using request_type = Req;
    using response_type = Resp;

    virtual ~DatagramRequestHandler() = default;

    /// Runs once per serve_forever() run, after bind and before reading starts (H15). Register
    /// cleanups on `stack`; start background work with `server.spawn(...)`. If it throws,
    /// serve_forever() throws the same exception.
    virtual Task<> service_init(ExitStack& stack, Server& server) {
        (void)stack;
        (void)server;
        co_return;
    }

    /// The per-client coroutine.
    virtual Session<Req> handle(Client<Resp>& client) = 0;
};

}  // namespace unixgram
