// SPDX-License-Identifier: MIT
// Server lifecycle: activate, serve_forever, start/stop, shutdown, close (spec §1.2–1.4).
#include "server/server_core.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <pthread.h>
#include <unistd.h>

#include <cstdio>
#include <stdexcept>

#include "runtime/mailbox.hpp"
#include "runtime/root_task.hpp"
#include "runtime/shard.hpp"
#include "server/socket_file.hpp"
#include "unixgram/errors.hpp"
#include "unixgram/task_group.hpp"

namespace unixgram::detail {

namespace {

std::shared_ptr<spdlog::logger> default_logger() {
    static std::mutex m;
    std::lock_guard lock(m);
    if (auto existing = spdlog::get("unixgram")) return existing;
    return spdlog::stderr_color_mt("unixgram");
}

/// Runs `task` as a root task on `shard` until it ends (or forever when stop() never comes).
struct RootRun {
    bool done = false;
    std::exception_ptr error;
    std::shared_ptr<const ContextMap> vars;
    RootPromise* promise = nullptr;

    static void on_done(RootPromise& p) noexcept {
        auto* self = static_cast<RootRun*>(p.user);
        self->done = true;
        self->error = p.error;
        self->vars = p.ctx.current_vars();
        self->promise = nullptr;
    }
};

Task<> call_service_init(ServerCore* core, ExitStack* stack) {
    co_await core->hooks.service_init(core->hooks.self, *stack, core->owner);
}

Task<> unwind(ExitStack* stack) { co_await stack->aclose(); }

constexpr auto kTeardownLimit = std::chrono::seconds(5);

/// Cancels a shard's sessions and background tasks and runs its loop until they end, at most
/// kTeardownLimit; returns that deadline.
Clock::time_point cancel_and_wait(Shard& sh, ServerShard& ss, spdlog::logger& log) {
    ss.cancel_all();
    const auto limit = Clock::now() + kTeardownLimit;
    while (ss.has_live_work() && Clock::now() < limit) sh.run_once(true);
    if (ss.has_live_work())
        log.error("Shard {}: {} session(s) and {} background task(s) did not end after cancellation (suspended "
                  "outside unixgram?); abandoning them",
                  ss.index, ss.live_sessions, task_group_active(ss.background));
    task_group_destroy(std::exchange(ss.background, nullptr));
    return limit;
}

}  // namespace

ServerCore::ServerCore(Server& owner_, UnixAddress requested_, ServerOptions options_, ServerHooks hooks_)
    : owner(owner_), requested(std::move(requested_)), options(std::move(options_)), hooks(hooks_) {
    options.validate();
    first_owner = options.dedicated_receiver ? 1 : 0;
    owner_count = options.shards - first_owner;
    if (options.mode && !requested.is_pathname()) {
        char buf[16];
        std::snprintf(buf, sizeof buf, "0%03o", static_cast<unsigned>(*options.mode));
        throw std::invalid_argument(std::string("ServerOptions::mode = ") + buf + " cannot be applied to '" +
                                    requested.to_string() + "': abstract and autobind sockets have no permissions");
    }
    log = options.logger ? options.logger : default_logger();
    stats = std::make_unique<ServerStatsCounters[]>(options.shards);
    remote_drops = std::make_unique<RemoteDrops[]>(options.shards);
}

ServerCore::~ServerCore() {
    // Copies dropped on another thread while a run ended, after its shard took its box over for the last time:
    // every run is over, so each of these clients is orphaned, and the last reference frees it.
    for (unsigned i = 0; i < options.shards; ++i) {
        for (ClientState* c : remote_drops[i].clients) {
            if (c->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete c;
        }
    }
}

void ServerCore::activate_locked() {
    if (closed) throw ServerClosedError();
    if (fd >= 0) return;
    BoundSocket b = bind_socket(requested, options.mode, options.send_buffer_size);
    fd = b.fd;
    bound = b.address;
    bound_inode = b.inode;
}

void ServerCore::close_socket_locked() noexcept {
    if (fd < 0) return;
    ::close(fd);
    fd = -1;
    if (bound_inode) cleanup_socket_file(bound, *bound_inode, *log);
    bound_inode.reset();
    bound = UnixAddress();
}

bool ServerCore::on_loop_thread() noexcept {
    Shard* s = Shard::current();
    return s != nullptr && &s->core() == this;
}

void ServerCore::wake_all_locked() noexcept {
    for (ShardSlot& slot : slots)
        if (slot.shard != nullptr) slot.shard->wake();
}

namespace {
BackendConfig backend_config(ServerCore& core, unsigned index) {
    BackendConfig config;
    config.max_datagram_size = core.options.max_datagram_size;
    config.receive_control = core.options.receive_ancillary_data;
    config.stats = &core.stats[index];
    config.receiver = index == 0;
    return config;
}
}  // namespace

void ServerCore::run_worker(unsigned index) {
    char name[16];
    std::snprintf(name, sizeof name, "unixgram-s%u", index);
    ::pthread_setname_np(::pthread_self(), name);  // top -H, gdb, perf: which shard is which
    bool drained = false;
    try {
        Shard sh(*this, index, fd, backend_config(*this, index));
        ServerShard ss(*this, sh, index);
        ss.inbox = slots[index].inbox.get();
        ss.background = task_group_create();
        struct Unpublish {  // on every way out: nobody may reach this shard once it is gone
            ServerCore* core;
            unsigned index;
            ~Unpublish() {
                std::lock_guard lock(core->mutex);
                core->slots[index].shard = nullptr;
                core->slots[index].server = nullptr;
            }
        } unpublish{this, index};
        {
            std::lock_guard lock(mutex);
            slots[index].shard = &sh;
            slots[index].server = &ss;
            slots[index].ready = true;
        }
        changed.notify_all();
        while (phase.load(std::memory_order_acquire) == kServing) sh.run_once(true);

        // Shard 0 has stopped reading and published everything: dispatch it, then cancel (LIFO, as serve()).
        while (ss.drain_inbox(true)) {
        }
        const auto limit = cancel_and_wait(sh, ss, *log);
        drained = true;
        workers_drained.fetch_add(1, std::memory_order_release);
        slots[0].shard->wake();
        // Client copies may still be held by service_init's resources: free the clients after its unwinding.
        while (phase.load(std::memory_order_acquire) != kFinishing) sh.run_once(true);
        ss.teardown_clients();
        while (sh.ops_in_kernel() > 0 && Clock::now() < limit + kTeardownLimit) sh.run_once(true);
    } catch (...) {
        std::lock_guard lock(mutex);
        if (slots[index].ready) {
            log->error("Shard {} stopped on an unexpected exception; its clients are abandoned", index);
        } else {
            slots[index].error = std::current_exception();  // start_workers() rethrows it
            slots[index].ready = true;
        }
        if (!drained) {
            workers_drained.fetch_add(1, std::memory_order_release);  // shard 0 must not wait for it
            if (slots[0].shard != nullptr) slots[0].shard->wake();
        }
    }
    changed.notify_all();
}

void ServerCore::start_workers(Shard& first) {
    const unsigned n = options.shards;
    {
        std::unique_lock lock(mutex);
        for (unsigned i = 1; i < n; ++i) slots[i].inbox = std::make_unique<Mailbox>(options.max_datagram_size);
        for (unsigned i = 1; i < n; ++i) slots[i].thread = std::thread(&ServerCore::run_worker, this, i);
        changed.wait(lock, [&] {
            for (unsigned i = 1; i < n; ++i)
                if (!slots[i].ready) return false;
            return true;
        });
        for (unsigned i = 1; i < n; ++i) {
            if (slots[i].error) {
                auto error = slots[i].error;
                lock.unlock();
                stop_workers();
                std::rethrow_exception(error);
            }
        }
    }
    first.server().connect_outboxes();
}

void ServerCore::stop_workers() noexcept {
    phase.store(kFinishing, std::memory_order_release);
    std::vector<std::thread> threads;
    {
        std::lock_guard lock(mutex);
        wake_all_locked();
        for (std::size_t i = 1; i < slots.size(); ++i)
            if (slots[i].thread.joinable()) threads.push_back(std::move(slots[i].thread));
    }
    for (auto& t : threads) t.join();
}

void ServerCore::serve() {
    {
        std::lock_guard lock(mutex);
        activate_locked();
    }
    const unsigned n = options.shards;
    phase.store(kServing);
    workers_drained.store(0);
    pause_requests.store(0);
    default_vars = nullptr;
    Shard sh(*this, 0, fd, backend_config(*this, 0));
    ServerShard ss(*this, sh, 0);
    {
        std::lock_guard lock(mutex);
        slots.clear();
        slots.resize(n);
        slots[0].shard = &sh;
        slots[0].server = &ss;
        slots[0].ready = true;
    }
    // Declared after sh and ss: on every way out, workers are stopped and joined before they go.
    struct ResetSlots {
        ServerCore* core;
        ~ResetSlots() {
            core->stop_workers();
            std::lock_guard lock(core->mutex);
            core->slots.clear();
        }
    } reset_slots{this};

    ss.tearing_down = false;
    service_available = false;
    if (n > 1) start_workers(sh);  // before service_init: a shard that cannot start fails the run first

    ExitStack stack;
    ss.background = task_group_create();
    RootRun init;
    init.promise = start_root(call_service_init(this, &stack), sh, nullptr, &RootRun::on_done, &init);
    bool init_cancelled = false;
    while (!init.done) {
        if (stop_requested.load() && !init_cancelled && init.promise != nullptr) {
            cancel_context(init.promise->ctx);
            init_cancelled = true;
        }
        sh.run_once(true);
    }
    default_vars = init.vars;
    if (init_cancelled && init.error) {
        // shutdown() during service_init: a normal end of the run, not an error (spec §1.2).
        try {
            std::rethrow_exception(init.error);
        } catch (const Cancelled&) {
            init.error = nullptr;
        } catch (...) {
        }
    }

    if (!init.error && !stop_requested.load()) {
        service_available = true;
        ss.receive_enabled = true;
        ss.refresh_receiving();
        serving = true;
        if (n > 1) {
            log->info("Start serving at {} on {} shards", bound.to_string(), n);
        } else {
            log->info("Start serving at {}", bound.to_string());
        }
        {
            std::lock_guard lock(mutex);
            start_ready = true;
        }
        changed.notify_all();
        while (!stop_requested.load(std::memory_order_acquire)) sh.run_once(true);
        log->info("Server loop break, waiting for remaining tasks...");
    }

    // Teardown, LIFO: stop reading and hand over what was read, cancel sessions and tasks on every
    // shard and wait for them, then unwind the stack, then free the clients.
    serving = false;
    ss.receive_enabled = false;
    ss.refresh_receiving();
    while (sh.backend().receive_active() || sh.backend().messages_in_flight() > 0) sh.run_once(true);
    ss.before_poll();  // publishes the last records
    ss.drop_undelivered();
    phase.store(kCancelling, std::memory_order_release);
    {
        std::lock_guard lock(mutex);
        wake_all_locked();
    }
    const auto limit = cancel_and_wait(sh, ss, *log);
    // Workers have a deadline of their own; they report here when their sessions have ended.
    while (workers_drained.load(std::memory_order_acquire) + 1 < n) sh.run_once(true);
    service_available = false;

    RootRun unwinding;
    start_root(unwind(&stack), sh, default_vars, &RootRun::on_done, &unwinding);
    while (!unwinding.done) sh.run_once(true);
    if (unwinding.error) {
        try {
            std::rethrow_exception(unwinding.error);
        } catch (const std::exception& e) {
            log->error("An ExitStack callback of service_init failed: {}", e.what());
        } catch (...) {
            log->error("An ExitStack callback of service_init failed");
        }
    }
    phase.store(kFinishing, std::memory_order_release);
    {
        std::lock_guard lock(mutex);
        wake_all_locked();
    }
    ss.teardown_clients();
    while (sh.ops_in_kernel() > 0 && Clock::now() < limit + kTeardownLimit) sh.run_once(true);
    stop_workers();
    log->info("Server stopped");
    if (init.error) std::rethrow_exception(init.error);
}

}  // namespace unixgram::detail

namespace unixgram {

using detail::ServerCore;

Server::Server(UnixAddress address, ServerOptions options, detail::ServerHooks hooks)
    : core_(std::make_unique<ServerCore>(*this, std::move(address), std::move(options), hooks)) {}

Server::~Server() { close(); }

void Server::activate() {
    std::lock_guard lock(core_->mutex);
    core_->activate_locked();
}

namespace {
void finish_run(ServerCore& core) {
    {
        std::lock_guard lock(core.mutex);
        core.running = false;
        core.serving = false;
        if (core.closed) core.close_socket_locked();  // close() was called from the loop thread
    }
    core.changed.notify_all();
}

void begin_run(ServerCore& core) {
    if (core.closed) throw ServerClosedError();
    if (core.running) throw ServerAlreadyRunning();
    core.running = true;
    core.stop_requested = false;
    core.start_ready = false;
    core.start_error = nullptr;
}
}  // namespace

void Server::serve_forever() {
    {
        std::lock_guard lock(core_->mutex);
        begin_run(*core_);
    }
    try {
        core_->serve();
    } catch (...) {
        finish_run(*core_);
        throw;
    }
    finish_run(*core_);
}

void Server::start() {
    std::thread previous;
    {
        std::lock_guard lock(core_->mutex);
        begin_run(*core_);
        previous = std::move(core_->thread);
    }
    if (previous.joinable()) previous.join();
    std::thread t([this] {
        ::pthread_setname_np(::pthread_self(), "unixgram-s0");
        try {
            core_->serve();
        } catch (...) {
            std::lock_guard lock(core_->mutex);
            core_->start_error = std::current_exception();
        }
        finish_run(*core_);
    });
    std::unique_lock lock(core_->mutex);
    core_->thread = std::move(t);
    core_->changed.wait(lock, [&] { return core_->start_ready || !core_->running; });
    if (core_->start_ready) return;
    std::thread failed = std::move(core_->thread);
    auto error = core_->start_error;
    lock.unlock();
    failed.join();
    if (error) std::rethrow_exception(error);
}

void Server::stop() {
    shutdown();
    std::thread t;
    {
        std::lock_guard lock(core_->mutex);
        // From a loop thread (a handler calling stop()), the run ends after this call returns.
        if (core_->thread.joinable() && !core_->on_loop_thread()) t = std::move(core_->thread);
    }
    if (t.joinable()) t.join();
}

void Server::shutdown() {
    std::unique_lock lock(core_->mutex);
    if (!core_->running) return;
    core_->stop_requested.store(true, std::memory_order_release);
    core_->wake_all_locked();
    if (core_->on_loop_thread()) return;
    core_->changed.wait(lock, [&] { return !core_->running; });
}

void Server::close() {
    {
        std::lock_guard lock(core_->mutex);
        if (core_->closed && core_->fd < 0 && !core_->running) return;
        core_->closed = true;
        if (core_->running && core_->on_loop_thread()) {
            core_->stop_requested.store(true, std::memory_order_release);
            core_->wake_all_locked();
            return;  // the socket is closed when serve_forever returns
        }
    }
    stop();
    std::lock_guard lock(core_->mutex);
    core_->close_socket_locked();
}

bool Server::is_serving() const noexcept { return core_->serving.load(); }

bool Server::is_listening() const noexcept {
    std::lock_guard lock(core_->mutex);
    return core_->fd >= 0;
}

UnixAddress Server::address() const {
    std::lock_guard lock(core_->mutex);
    return core_->bound;
}

ServerStats Server::stats() const noexcept {
    ServerStats total;
    for (unsigned i = 0; i < core_->options.shards; ++i) core_->stats[i].accumulate(total);
    return total;
}
const ServerOptions& Server::options() const noexcept { return core_->options; }
spdlog::logger& Server::logger() const noexcept { return *core_->log; }

void Server::spawn(Task<> task) {
    detail::ExecContext& ctx = detail::require_context("Server::spawn()");
    if (&ctx.shard->core() != core_.get() || ctx.shard->server().background == nullptr)
        throw std::logic_error("Server::spawn(): this server is not running on this thread");
    // The task runs on the caller's shard (the shard of the session that spawns it).
    detail::task_group_spawn(ctx.shard->server().background, std::move(task));
}

}  // namespace unixgram
