// SPDX-License-Identifier: MIT
// Server lifecycle: activate, serve_forever, start/stop, shutdown, close (spec §1.2–1.4).
#include "server/server_core.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <stdexcept>

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
        self->vars = p.ctx.vars;
        self->promise = nullptr;
    }
};

Task<> call_service_init(ServerCore* core, ExitStack* stack) {
    co_await core->hooks.service_init(core->hooks.self, *stack, core->owner);
}

Task<> unwind(ExitStack* stack) { co_await stack->aclose(); }

constexpr auto kTeardownLimit = std::chrono::seconds(5);

}  // namespace

ServerCore::ServerCore(Server& owner_, UnixAddress requested_, ServerOptions options_, ServerHooks hooks_)
    : owner(owner_), requested(std::move(requested_)), options(std::move(options_)), hooks(hooks_) {
    options.validate();
    if (options.mode && !requested.is_pathname()) {
        char buf[16];
        std::snprintf(buf, sizeof buf, "0%03o", static_cast<unsigned>(*options.mode));
        throw std::invalid_argument(std::string("ServerOptions::mode = ") + buf + " cannot be applied to '" +
                                    requested.to_string() + "': abstract and autobind sockets have no permissions");
    }
    log = options.logger ? options.logger : default_logger();
}

ServerCore::~ServerCore() = default;

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

void ServerCore::teardown_clients() noexcept {
    for (auto& [address, c] : clients) {
        std::size_t dropped = 0;
        while (c->head != nullptr) {
            QueuedDatagram* q = c->head;
            c->head = q->next;
            release_queued(q);
            ++dropped;
        }
        c->tail = nullptr;
        c->queued_count = c->queued_bytes = 0;
        if (dropped > 0) {
            ServerStatsCounters::add(stats.dropped_at_shutdown, dropped);
            log->warn("Dropped {} datagram(s) from {} still queued at shutdown", dropped, address.to_string());
        }
        idle.remove(c);
        if (c->session != nullptr) continue;  // stuck session (see serve): leak rather than dangle
        if (c->refs > 0) {
            c->orphaned = true;  // freed when the last Client copy goes
        } else {
            delete c;
        }
    }
    clients.clear();
    total_queued_bytes = 0;
}

void ServerCore::serve() {
    {
        std::lock_guard lock(mutex);
        activate_locked();
    }
    BackendConfig config;
    config.max_datagram_size = options.max_datagram_size;
    config.receive_control = options.receive_ancillary_data;
    config.stats = &stats;
    Shard sh(*this, fd, config);
    {
        std::lock_guard lock(mutex);
        shard = &sh;
        loop_thread = std::this_thread::get_id();
    }
    struct ResetShard {
        ServerCore* core;
        ~ResetShard() {
            std::lock_guard lock(core->mutex);
            core->shard = nullptr;
            core->loop_thread = {};
        }
    } reset_shard{this};

    tearing_down = false;
    receive_paused = false;
    service_available = false;
    default_vars = nullptr;
    if (options.shards > 1)
        log->info("shards = {} requested: this version serves every client on 1 shard", options.shards);

    ExitStack stack;
    background = task_group_create();
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
        sh.backend().start_receiving();
        serving = true;
        log->info("Start serving at {}", bound.to_string());
        {
            std::lock_guard lock(mutex);
            start_ready = true;
        }
        changed.notify_all();
        while (!stop_requested.load(std::memory_order_acquire)) sh.run_once(true);
        log->info("Server loop break, waiting for remaining tasks...");
    }

    // Teardown, LIFO: stop reading, cancel sessions and tasks and wait for them, then unwind the stack.
    serving = false;
    sh.backend().stop_receiving();
    while (sh.backend().receive_active()) sh.run_once(true);
    tearing_down = true;
    for (auto& [address, c] : clients)
        if (c->session != nullptr) cancel_context(c->session->ctx);
    task_group_cancel(background);
    const auto limit = Clock::now() + kTeardownLimit;
    while ((live_sessions > 0 || task_group_active(background) > 0) && Clock::now() < limit) sh.run_once(true);
    if (live_sessions > 0 || task_group_active(background) > 0)
        log->error("{} session(s) and {} background task(s) did not end after cancellation (suspended outside "
                   "unixgram?); abandoning them",
                   live_sessions, task_group_active(background));
    task_group_destroy(background);
    background = nullptr;
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
    teardown_clients();
    while (sh.ops_in_kernel() > 0 && Clock::now() < limit + kTeardownLimit) sh.run_once(true);
    live_sessions = 0;
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
        if (core_->thread.joinable() && core_->thread.get_id() != std::this_thread::get_id())
            t = std::move(core_->thread);
    }
    if (t.joinable()) t.join();
}

void Server::shutdown() {
    std::unique_lock lock(core_->mutex);
    if (!core_->running) return;
    core_->stop_requested.store(true, std::memory_order_release);
    if (core_->shard != nullptr) core_->shard->wake();
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
            if (core_->shard != nullptr) core_->shard->wake();
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

ServerStats Server::stats() const noexcept { return core_->stats.snapshot(); }
const ServerOptions& Server::options() const noexcept { return core_->options; }
spdlog::logger& Server::logger() const noexcept { return *core_->log; }

void Server::spawn(Task<> task) {
    detail::ExecContext& ctx = detail::require_context("Server::spawn()");
    if (core_->background == nullptr || ctx.shard != core_->shard)
        throw std::logic_error("Server::spawn(): this server is not running on this thread");
    detail::task_group_spawn(core_->background, std::move(task));
}

}  // namespace unixgram
