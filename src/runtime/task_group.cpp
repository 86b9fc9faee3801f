// SPDX-License-Identifier: MIT
// Root tasks and TaskGroup: background coroutines with contexts of their own.
#include <spdlog/spdlog.h>

#include <stdexcept>
#include <vector>

#include "runtime/root_task.hpp"
#include "runtime/shard.hpp"
#include "server/server_core.hpp"
#include "unixgram/errors.hpp"
#include "unixgram/task_group.hpp"

namespace unixgram::detail {

namespace {
RootPromise::Handle run_root(Task<> task) { co_await std::move(task); }
}  // namespace

RootPromise* start_root(Task<> task, Shard& shard, std::shared_ptr<const ContextMap> vars,
                        void (*on_done)(RootPromise&) noexcept, void* user) {
    auto h = run_root(std::move(task)).h;
    RootPromise& p = h.promise();
    p.ctx.shard = &shard;
    p.ctx.vars = std::move(vars);
    p.on_done = on_done;
    p.user = user;
    shard.schedule(h, &p.ctx);
    return &p;
}

struct TaskGroupState {
    std::vector<RootPromise*> tasks;
    std::vector<Waiter*> joiners;
    bool cancelled = false;
    bool detached = false;  ///< its TaskGroup is gone; freed when the last task ends

    static void task_done(RootPromise& p) noexcept {
        auto* g = static_cast<TaskGroupState*>(p.user);
        if (p.error) {
            try {
                std::rethrow_exception(p.error);
            } catch (const Cancelled&) {
            } catch (const std::exception& e) {
                p.ctx.shard->core().log->error("Unhandled exception in a background task: {}", e.what());
            } catch (...) {
                p.ctx.shard->core().log->error("Unhandled exception in a background task: unknown exception");
            }
        }
        RootPromise* last = g->tasks.back();
        g->tasks[p.index] = last;
        last->index = p.index;
        g->tasks.pop_back();
        if (!g->tasks.empty()) return;
        for (Waiter* w : std::exchange(g->joiners, {})) complete_wait(*w, WaitStatus::ok);
        if (g->detached) delete g;
    }
};

namespace {
void detach_joiner(Waiter* w) noexcept {
    auto* g = static_cast<TaskGroupState*>(w->target);
    std::erase(g->joiners, w);
}
}  // namespace

TaskGroupState* task_group_create() { return new TaskGroupState(); }

void task_group_destroy(TaskGroupState* g) noexcept {
    if (g == nullptr) return;
    task_group_cancel(g);
    if (g->tasks.empty()) {
        delete g;
    } else {
        g->detached = true;  // cancelled tasks end at their next turn
    }
}

void task_group_spawn(TaskGroupState* g, Task<> task) {
    ExecContext& ctx = require_context("TaskGroup::spawn()");
    RootPromise* p = start_root(std::move(task), *ctx.shard, ctx.current_vars(), &TaskGroupState::task_done, g);
    p->index = g->tasks.size();
    g->tasks.push_back(p);
    if (g->cancelled) p->ctx.cancelled = true;
}

void task_group_cancel(TaskGroupState* g) noexcept {
    g->cancelled = true;
    for (RootPromise* p : g->tasks) cancel_context(p->ctx);
}

std::size_t task_group_active(const TaskGroupState* g) noexcept { return g->tasks.size(); }

bool task_group_join_suspend(TaskGroupState* g, Waiter& w) noexcept {
    w.detach = &detach_joiner;
    w.target = g;
    bool suspend;
    try {
        suspend = prepare_wait(w, "TaskGroup::join()");
    } catch (...) {
        w.status = WaitStatus::cancelled;
        suspend = false;
    }
    if (!suspend) return false;
    g->joiners.push_back(&w);
    return true;
}

}  // namespace unixgram::detail
