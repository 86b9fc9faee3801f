// SPDX-License-Identifier: MIT
// RootTask: a Task<> run by the shard in an execution context of its own (background tasks,
// service_init, the ExitStack unwinding).
#pragma once

#include <coroutine>
#include <exception>
#include <memory>

#include "unixgram/detail/engine.hpp"
#include "unixgram/task.hpp"

namespace unixgram::detail {

class Shard;

struct RootPromise {
    ExecContext ctx;
    std::exception_ptr error;
    void (*on_done)(RootPromise&) noexcept = nullptr;
    void* user = nullptr;
    std::size_t index = 0;  ///< position in its TaskGroupState

    struct Handle {
        using promise_type = RootPromise;
        std::coroutine_handle<RootPromise> h;
    };
    Handle get_return_object() noexcept { return {std::coroutine_handle<RootPromise>::from_promise(*this)}; }
    std::suspend_always initial_suspend() noexcept { return {}; }
    struct Final {
        bool await_ready() noexcept { return false; }
        void await_suspend(std::coroutine_handle<RootPromise> h) noexcept {
            RootPromise& p = h.promise();
            if (p.on_done != nullptr) p.on_done(p);
            h.destroy();
        }
        void await_resume() noexcept {}
    };
    Final final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { error = std::current_exception(); }
};

/// Schedules `task` on `shard` in a new context with ContextVar values `vars`; `on_done` runs when
/// it ends (before its frame is destroyed). Allocates.
RootPromise* start_root(Task<> task, Shard& shard, std::shared_ptr<const ContextMap> vars,
                        void (*on_done)(RootPromise&) noexcept, void* user);

void cancel_context(ExecContext& ctx) noexcept;

}  // namespace unixgram::detail
