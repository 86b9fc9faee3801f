// SPDX-License-Identifier: MIT
// The exceptions unixgram throws into handlers and at API misuse.
#pragma once

/// \file
/// Error model. The handler-facing API throws exceptions, exactly where EasyNetwork throws into a
/// generator: at `co_yield unixgram::recv()` (ParseError, TimeoutError, Cancelled, ...) and at
/// `co_await client.send_packet(...)` (ClientClosedError, std::system_error for kernel errors).
/// Setup errors (bind, options) are `std::system_error` / `std::invalid_argument` whose message names
/// the offending value. The engine below never throws on the data path.
///
/// Example:
/// \code
///   std::string reply;
///   try {
///       auto request = co_yield unixgram::recv({.timeout = std::chrono::seconds(5)});
///       reply = "got " + request;
///   } catch (const unixgram::TimeoutError&) {
///       co_return;  // the client went quiet
///   } catch (const unixgram::ParseError& e) {
///       reply = std::string("bad request: ") + e.what();  // co_await is not allowed in a catch block
///   }
///   co_await client.send_packet(reply);
/// \endcode

#include <stdexcept>
#include <string>
#include <system_error>

namespace unixgram {

/// A datagram could not be parsed by the server's protocol. Thrown at the `co_yield` that would have
/// delivered it (H9); the datagram is consumed. Message: "Error while parsing data: <reason>".
class ParseError : public std::runtime_error {
public:
    explicit ParseError(const std::string& reason)
        : std::runtime_error("Error while parsing data: " + reason), reason_(reason) {}
    /// The protocol's own explanation, without the "Error while parsing data: " prefix.
    const std::string& reason() const noexcept { return reason_; }

private:
    std::string reason_;
};

/// An operation on a client whose server is shutting down or closed (H20). Message "Closed client".
class ClientClosedError : public std::runtime_error {
public:
    ClientClosedError() : std::runtime_error("Closed client") {}
    explicit ClientClosedError(const std::string& what) : std::runtime_error(what) {}
};

/// `serve_forever()` / `activate()` on a closed server.
class ServerClosedError : public std::runtime_error {
public:
    explicit ServerClosedError(const std::string& what = "Closed server") : std::runtime_error(what) {}
};

/// `serve_forever()` while a run is already active.
class ServerAlreadyRunning : public std::runtime_error {
public:
    ServerAlreadyRunning() : std::runtime_error("Server is already running") {}
};

/// A receive timeout (RecvParams::timeout), a `with_timeout` deadline or a send that stayed refused
/// by a full peer for longer than ServerOptions::send_timeout.
class TimeoutError : public std::runtime_error {
public:
    explicit TimeoutError(const std::string& what = "Operation timed out") : std::runtime_error(what) {}
};

/// Thrown at the suspension point of a session or background task that the server cancels
/// (shutdown). Every later suspension point of that coroutine throws it again, so a handler that
/// catches it can clean up but cannot keep the server from stopping. Not an error: it is never logged.
class Cancelled : public std::exception {
public:
    const char* what() const noexcept override { return "Cancelled"; }
};

/// The server was not configured for what the handler asked (e.g. ancillary data without
/// ServerOptions::receive_ancillary_data).
class UnsupportedOperation : public std::logic_error {
public:
    explicit UnsupportedOperation(const std::string& what) : std::logic_error(what) {}
};

}  // namespace unixgram
