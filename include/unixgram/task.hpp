// SPDX-License-Identifier: MIT
// Task<T>: the lazy coroutine type for helpers that handlers and service_init co_await.
#pragma once

/// \file
/// `Task<T>` is a lazily started coroutine: it runs when awaited, in the awaiting coroutine's
/// context (its session or background task), and hands control back by symmetric transfer, so a
/// chain of tasks costs no scheduling round trip. A task is awaited once; exceptions propagate to
/// the awaiter. `service_init` returns `Task<>`; `Server::spawn` runs a `Task<>` in the background.
///
/// Example:
/// \code
///   unixgram::Task<int> answer() { co_return 42; }
///   unixgram::Task<> use_it() {
///       int v = co_await answer();
///       co_await unixgram::sleep(std::chrono::milliseconds(v));
///   }
/// \endcode

#include <coroutine>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include "unixgram/detail/frame_pool.hpp"

namespace unixgram {

template <class T = void>
class [[nodiscard]] Task;

namespace detail {

struct TaskPromiseCommon : PooledFrame {
    std::coroutine_handle<> continuation;
    std::exception_ptr error;

    std::suspend_always initial_suspend() noexcept { return {}; }
    struct FinalAwaiter {
        bool await_ready() noexcept { return false; }
        template <class P>
        std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
            auto next = h.promise().continuation;
            return next ? next : std::noop_coroutine();
        }
        void await_resume() noexcept {}
    };
    FinalAwaiter final_suspend() noexcept { return {}; }
    void unhandled_exception() noexcept { error = std::current_exception(); }
};

template <class T>
struct TaskPromise : TaskPromiseCommon {
    std::optional<T> value;
    Task<T> get_return_object() noexcept;
    template <class U>
    void return_value(U&& v) { value.emplace(std::forward<U>(v)); }
    T take() {
        if (error) std::rethrow_exception(error);
        return std::move(*value);
    }
};

template <>
struct TaskPromise<void> : TaskPromiseCommon {
    Task<void> get_return_object() noexcept;
    void return_void() noexcept {}
    void take() {
        if (error) std::rethrow_exception(error);
    }
};

}  // namespace detail

template <class T>
class [[nodiscard]] Task {
public:
    using promise_type = detail::TaskPromise<T>;
    using value_type = T;

    Task() noexcept = default;
    explicit Task(std::coroutine_handle<promise_type> h) noexcept : handle_(h) {}
    Task(Task&& o) noexcept : handle_(std::exchange(o.handle_, {})) {}
    Task& operator=(Task&& o) noexcept {
        if (this != &o) {
            if (handle_) handle_.destroy();
            handle_ = std::exchange(o.handle_, {});
        }
        return *this;
    }
    Task(const Task&) = delete;
    Task& operator=(const Task&) = delete;
    ~Task() {
        if (handle_) handle_.destroy();
    }

    bool valid() const noexcept { return static_cast<bool>(handle_); }

    auto operator co_await() && noexcept {
        struct Awaiter {
            std::coroutine_handle<promise_type> h;
            bool await_ready() const noexcept { return !h || h.done(); }
            std::coroutine_handle<> await_suspend(std::coroutine_handle<> caller) noexcept {
                h.promise().continuation = caller;
                return h;
            }
            T await_resume() { return h.promise().take(); }
        };
        return Awaiter{handle_};
    }

    /// Internal: hands the coroutine over (the caller destroys it).
    std::coroutine_handle<promise_type> release() noexcept { return std::exchange(handle_, {}); }

private:
    std::coroutine_handle<promise_type> handle_;
};

namespace detail {
template <class T>
Task<T> TaskPromise<T>::get_return_object() noexcept {
    return Task<T>(std::coroutine_handle<TaskPromise<T>>::from_promise(*this));
}
inline Task<void> TaskPromise<void>::get_return_object() noexcept {
    return Task<void>(std::coroutine_handle<TaskPromise<void>>::from_promise(*this));
}
}  // namespace detail

}  // namespace unixgram
