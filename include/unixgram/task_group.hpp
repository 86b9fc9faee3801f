// SPDX-License-Identifier: MIT
// TaskGroup: background coroutines on the server's loop, cancelled together.
#pragma once

/// \file
/// `TaskGroup::spawn(task)` runs `task` concurrently on the current server's loop, in a context of
/// its own (it inherits the spawner's ContextVar values). `co_await group.join()` waits until all
/// have finished; `cancel()` throws `Cancelled` into each at its suspension point. Destroying a
/// group cancels and destroys what is left. `Server::spawn` uses a group the server cancels at
/// shutdown, before the ExitStack unwinds. Exceptions escaping a task are logged, never lost.
/// Use a group only on the loop thread that created it.
///
/// Example:
/// \code
///   unixgram::Task<> tick() { for (;;) co_await unixgram::sleep(std::chrono::seconds(1)); }
///   unixgram::Task<> run_two() {
///       unixgram::TaskGroup group;
///       group.spawn(tick());
///       group.spawn(tick());
///       co_await unixgram::sleep(std::chrono::milliseconds(10));
///       group.cancel();
///       co_await group.join();
///   }
/// \endcode

#include <coroutine>
#include <cstddef>

#include "unixgram/detail/engine.hpp"
#include "unixgram/task.hpp"

namespace unixgram {

namespace detail {
struct TaskGroupState;
TaskGroupState* task_group_create();
void task_group_destroy(TaskGroupState* g) noexcept;
void task_group_spawn(TaskGroupState* g, Task<> task);
void task_group_cancel(TaskGroupState* g) noexcept;
std::size_t task_group_active(const TaskGroupState* g) noexcept;
bool task_group_join_suspend(TaskGroupState* g, Waiter& w) noexcept;
}  // namespace detail

class TaskGroup {
public:
    TaskGroup() : state_(detail::task_group_create()) {}
    TaskGroup(const TaskGroup&) = delete;
    TaskGroup& operator=(const TaskGroup&) = delete;
    ~TaskGroup() { detail::task_group_destroy(state_); }

    /// Starts `task` on this loop (at its next turn). Throws std::logic_error off the loop thread.
    void spawn(Task<> task) { detail::task_group_spawn(state_, std::move(task)); }
    void cancel() noexcept { detail::task_group_cancel(state_); }
    std::size_t active() const noexcept { return detail::task_group_active(state_); }

    struct JoinAwaiter {
        detail::TaskGroupState* g;
        detail::Waiter waiter{};
        bool await_ready() const noexcept { return detail::task_group_active(g) == 0; }
        bool await_suspend(std::coroutine_handle<> h) noexcept {
            waiter.handle = h;
            return detail::task_group_join_suspend(g, waiter);
        }
        void await_resume() const { detail::rethrow_wait_status(waiter); }
    };
    /// Waits until every task of the group has finished.
    JoinAwaiter join() noexcept { return JoinAwaiter{state_}; }

private:
    detail::TaskGroupState* state_;
};

}  // namespace unixgram
