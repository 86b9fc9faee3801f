// SPDX-License-Identifier: MIT
// Session<Req> and recv(): the coroutine type of DatagramRequestHandler::handle().
#pragma once

/// \file
/// `handle(client)` is a coroutine returning `Session<Req>`. Each `co_yield unixgram::recv(...)`
/// delivers the next datagram of that client, parsed into a `Req`, or throws at that point:
/// `ParseError` (bad datagram, H9), `TimeoutError` (RecvParams::timeout passed, H10),
/// `Cancelled` (the server shuts down, H26), `std::invalid_argument` (a negative or NaN timeout,
/// H7) or `UnsupportedOperation` (ancillary data the server does not receive, A5).
/// `co_return` before the first `co_yield` discards the datagram that started the session (H6).
///
/// Example:
/// \code
///   unixgram::Session<std::string> handle(unixgram::Client<std::string>& client) override {
///       std::string reply = co_yield unixgram::recv();
///       try {
///           reply += co_yield unixgram::recv({.timeout = std::chrono::seconds(2)});
///       } catch (const unixgram::TimeoutError&) {
///           // no second datagram within 2 s: answer the first alone
///       }
///       co_await client.send_packet(reply);
///   }
/// \endcode

#include <chrono>
#include <cmath>
#include <coroutine>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "unixgram/ancillary.hpp"
#include "unixgram/detail/engine.hpp"
#include "unixgram/detail/frame_pool.hpp"
#include "unixgram/errors.hpp"

namespace unixgram {

/// What a `co_yield` asks for.
struct RecvParams {
    /// How long a later co_yield waits for the next datagram; nullopt or +inf waits forever.
    /// Ignored at the first co_yield, whose datagram is already there. Negative or NaN throws
    /// std::invalid_argument at the co_yield.
    std::optional<std::chrono::duration<double>> timeout = std::nullopt;
    /// Receives the fds and credentials of the datagram consumed (needs
    /// ServerOptions::receive_ancillary_data); when null they are closed by the server.
    Ancillary* ancillary = nullptr;
};

/// `co_yield unixgram::recv()` / `co_yield unixgram::recv({.timeout = 30s})`.
inline RecvParams recv(RecvParams params = {}) noexcept { return params; }

template <class Req>
class [[nodiscard]] Session {
public:
    struct promise_type;
    using handle_type = std::coroutine_handle<promise_type>;

    class RecvAwaiter {
    public:
        RecvAwaiter(promise_type* p, RecvParams params) noexcept : p_(p), params_(params) {}

        bool await_ready() {
            if (params_.timeout) {
                const double s = params_.timeout->count();
                if (std::isnan(s)) {
                    invalid_ = std::make_exception_ptr(std::invalid_argument("Invalid delay: NaN (not a number)"));
                } else if (s < 0) {
                    invalid_ = std::make_exception_ptr(
                        std::invalid_argument("Invalid delay: negative value (" + std::to_string(s) + " s)"));
                } else if (std::isfinite(s) && s < 1e9) {
                    wait_.deadline = detail::Clock::now() +
                                     std::chrono::duration_cast<detail::Clock::duration>(*params_.timeout);
                }
            }
            if (!invalid_ && params_.ancillary != nullptr && !detail::ancillary_enabled(*p_)) {
                invalid_ = std::make_exception_ptr(
                    UnsupportedOperation("The server is not configured to handle ancillary data."));
            }
            if (invalid_) return true;
            return detail::recv_ready(*p_, wait_);
        }
        bool await_suspend(std::coroutine_handle<> h) noexcept { return detail::recv_suspend(*p_, wait_, h); }
        Req await_resume() {
            if (invalid_) {
                detail::recv_discard_first(*p_);
                std::rethrow_exception(invalid_);
            }
            if (!wait_.has_datagram) detail::rethrow_wait_status(wait_.waiter);
            std::optional<Req> out;
            detail::recv_take(*p_, params_.ancillary, &out);
            return std::move(*out);
        }

    private:
        promise_type* p_;
        RecvParams params_;
        detail::RecvWait wait_{};
        std::exception_ptr invalid_;
    };

    struct promise_type : detail::SessionPromiseBase, detail::PooledFrame {
        Session get_return_object() noexcept { return Session(handle_type::from_promise(*this)); }
        std::suspend_always initial_suspend() noexcept { return {}; }
        struct FinalAwaiter {
            bool await_ready() noexcept { return false; }
            void await_suspend(handle_type h) noexcept { detail::session_finished(h.promise()); }
            void await_resume() noexcept {}
        };
        FinalAwaiter final_suspend() noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept { error = std::current_exception(); }
        RecvAwaiter yield_value(RecvParams params) noexcept { return RecvAwaiter(this, params); }
    };

    Session(Session&& o) noexcept : h_(std::exchange(o.h_, {})) {}
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;
    Session& operator=(Session&&) = delete;
    ~Session() {
        if (h_) h_.destroy();
    }

    /// Internal: the server takes the coroutine over.
    handle_type release() noexcept { return std::exchange(h_, {}); }

private:
    explicit Session(handle_type h) noexcept : h_(h) {}
    handle_type h_;
};

}  // namespace unixgram
