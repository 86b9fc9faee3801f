// SPDX-License-Identifier: MIT
// sleep() and with_timeout(): time on the server's loop.
#pragma once

/// \file
/// `co_await unixgram::sleep(d)` suspends the calling session or task for `d` without blocking the
/// loop. `co_await unixgram::with_timeout(d, awaitable)` runs `awaitable` and throws
/// `unixgram::TimeoutError` if it has not finished after `d`; every wait inside it (sleeps, sends,
/// nested tasks) is bounded by that deadline. Both are cancelled at shutdown (`Cancelled`).
/// They can only be used on a server's loop (in handlers, service_init, background tasks).
///
/// Example:
/// \code
///   unixgram::Task<> slow() { co_await unixgram::sleep(std::chrono::seconds(10)); }
///   unixgram::Task<> bounded() {
///       try {
///           co_await unixgram::with_timeout(std::chrono::milliseconds(50), slow());
///       } catch (const unixgram::TimeoutError&) {
///           // gave up after 50 ms
///       }
///   }
/// \endcode

#include <chrono>
#include <coroutine>
#include <type_traits>
#include <utility>

#include "unixgram/detail/engine.hpp"
#include "unixgram/errors.hpp"
#include "unixgram/task.hpp"

namespace unixgram {

namespace detail {
struct SleepAwaiter {
    Clock::duration duration;
    Waiter waiter{};
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) {
        waiter.handle = h;
        waiter.deadline_is_success = true;
        if (!prepare_wait(waiter, "unixgram::sleep()", Clock::now() + duration)) return false;
        arm_sleep(waiter);
        return true;
    }
    void await_resume() const { rethrow_wait_status(waiter); }
};

template <class A>
decltype(auto) get_awaiter(A&& a) {
    if constexpr (requires { std::forward<A>(a).operator co_await(); })
        return std::forward<A>(a).operator co_await();
    else
        return std::forward<A>(a);
}
template <class A>
using await_result_t = decltype(get_awaiter(std::declval<A>()).await_resume());
}  // namespace detail

/// Suspends the current session or task for `d` (throws Cancelled at shutdown).
template <class Rep, class Period>
detail::SleepAwaiter sleep(std::chrono::duration<Rep, Period> d) {
    return detail::SleepAwaiter{std::chrono::duration_cast<detail::Clock::duration>(d)};
}

/// Awaits `awaitable`; throws TimeoutError if it takes longer than `d`.
template <class Rep, class Period, class Awaitable>
Task<detail::await_result_t<Awaitable>> with_timeout(std::chrono::duration<Rep, Period> d, Awaitable awaitable) {
    using R = detail::await_result_t<Awaitable>;
    const std::uint64_t id = detail::push_deadline_scope(std::chrono::duration_cast<detail::Clock::duration>(d));
    struct Pop {
        std::uint64_t id;
        ~Pop() { detail::pop_deadline_scope(id); }
    } pop{id};
    try {
        if constexpr (std::is_void_v<R>) {
            co_await std::move(awaitable);
            co_return;
        } else {
            co_return co_await std::move(awaitable);
        }
    } catch (const detail::ScopeExpired& e) {
        if (e.id != id) throw;
    }
    throw TimeoutError("with_timeout(): deadline exceeded");
}

}  // namespace unixgram
