// SPDX-License-Identifier: MIT
// ExitStack: cleanup callbacks that service_init registers, run LIFO when serving ends.
#pragma once

/// \file
/// The server gives `service_init` a fresh `ExitStack` per run (H15). Callbacks pushed on it run
/// in reverse order after every session and background task has finished, when clients already
/// report `is_closing()`. If `service_init` throws, what it had pushed still runs.
///
/// Example:
/// \code
///   unixgram::Task<> service_init(unixgram::ExitStack& stack, unixgram::Server&) override {
///       db_ = open_database();
///       stack.callback([this] { db_.close(); });
///       stack.push_async([this]() -> unixgram::Task<> { co_await flush_metrics(); });
///       co_return;
///   }
/// \endcode

#include <exception>
#include <functional>
#include <utility>
#include <variant>
#include <vector>

#include "unixgram/task.hpp"

namespace unixgram {

class ExitStack {
public:
    ExitStack() = default;
    ExitStack(const ExitStack&) = delete;
    ExitStack& operator=(const ExitStack&) = delete;

    /// Registers a synchronous cleanup (may allocate).
    void callback(std::function<void()> fn) { entries_.emplace_back(std::move(fn)); }
    /// Registers an asynchronous cleanup, run on the server's loop (may allocate).
    void push_async(std::function<Task<>()> fn) { entries_.emplace_back(AsyncFn(std::move(fn))); }
    std::size_t size() const noexcept { return entries_.size(); }

    /// Runs and removes every callback, last pushed first. All run even if some throw; the first
    /// exception is rethrown at the end.
    Task<> aclose() {
        std::exception_ptr first;
        while (!entries_.empty()) {
            auto entry = std::move(entries_.back());
            entries_.pop_back();
            try {
                if (auto* sync = std::get_if<std::function<void()>>(&entry)) {
                    (*sync)();
                } else {
                    co_await std::get<AsyncFn>(entry).fn();
                }
            } catch (...) {
                if (!first) first = std::current_exception();
            }
        }
        if (first) std::rethrow_exception(first);
    }

private:
    struct AsyncFn {
        explicit AsyncFn(std::function<Task<>()> f) : fn(std::move(f)) {}
        std::function<Task<>()> fn;
    };
    std::vector<std::variant<std::function<void()>, AsyncFn>> entries_;
};

}  // namespace unixgram
