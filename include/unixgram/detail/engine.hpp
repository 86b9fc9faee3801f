// SPDX-License-Identifier: MIT
// The non-template engine entry points that the public coroutine templates call.
#pragma once

/// \file
/// Internal. Everything here is implemented in libunixgram (src/runtime, src/server) and may change.
/// The model: a Shard runs one thread; every coroutine it runs belongs to an ExecContext (a session
/// or a background task). A coroutine suspends on a Waiter that the shard completes (a datagram, a
/// timer, a send completion) or cancels (shutdown); the Waiter's status decides what await_resume
/// throws. Deadline scopes (with_timeout) live on the ExecContext, so every wait inside them is bounded.

#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <span>
#include <unordered_map>

namespace unixgram {
class Buffer;
class Server;
class Ancillary;
class UnixAddress;
}  // namespace unixgram

namespace unixgram::detail {

using Clock = std::chrono::steady_clock;

class Shard;
struct ClientState;
struct ServerCore;
struct SendOp;

/// An entry of the shard's timer heap (intrusive: armed and disarmed without allocation).
struct TimerNode {
    static constexpr std::size_t kNotArmed = std::numeric_limits<std::size_t>::max();
    Clock::time_point deadline{};
    std::size_t heap_index = kNotArmed;
    void (*fire)(TimerNode*) noexcept = nullptr;
    void* owner = nullptr;
    bool armed() const noexcept { return heap_index != kNotArmed; }
};

enum class WaitStatus : std::uint8_t { pending, ok, timed_out, scope_expired, cancelled };

struct ExecContext;

/// A suspended coroutine and what woke it. Lives in its awaiter, i.e. in the coroutine frame.
struct Waiter {
    std::coroutine_handle<> handle;
    ExecContext* ctx = nullptr;
    TimerNode timer;
    Clock::time_point own_deadline = Clock::time_point::max();
    bool deadline_is_success = false;     // sleep(): reaching the deadline is the normal outcome
    WaitStatus status = WaitStatus::pending;
    std::uint64_t expired_scope = 0;
    void (*detach)(Waiter*) noexcept = nullptr;  // unhook from what it waits on (timeout, cancel)
    void* target = nullptr;                       // what it waits on, for detach
};

/// Values of ContextVars, shared copy-on-write between contexts.
using ContextMap = std::unordered_map<const void*, std::shared_ptr<const void>>;

/// A with_timeout() deadline active on a context.
struct DeadlineScope {
    /// Left unset: a context reads only its scopes [0, scope_count), and a session's frame is not worth
    /// zeroing sixteen of them for (callgrind: 16 instructions a session).
    DeadlineScope() noexcept {}
    DeadlineScope(Clock::time_point d, std::uint64_t scope_id) noexcept
        : ticks(d.time_since_epoch().count()), id(scope_id) {}
    Clock::time_point deadline() const noexcept { return Clock::time_point(Clock::duration(ticks)); }
    Clock::rep ticks;  ///< the deadline's (a time_point member would be zeroed by its constructor)
    std::uint64_t id;
};

/// The execution context of one session or background task.
struct ExecContext {
    static constexpr std::size_t kMaxScopes = 16;
    Shard* shard = nullptr;
    Waiter* waiting = nullptr;
    bool cancelled = false;
    std::uint8_t scope_count = 0;
    DeadlineScope scopes[kMaxScopes];
    /// This context's own ContextVar values: a task's from its start, a session's once ContextVar::set() ran
    /// in it. Until then a session reads the server's defaults through `inherited_vars`, which points at
    /// them: no reference count to move per session, on a control block every shard would share.
    std::shared_ptr<const ContextMap> vars;
    const std::shared_ptr<const ContextMap>* inherited_vars = nullptr;
    /// The ContextVar values in effect (may be null: none set).
    const std::shared_ptr<const ContextMap>& current_vars() const noexcept {
        return vars || inherited_vars == nullptr ? vars : *inherited_vars;
    }
};

/// Thrown out of a wait whose with_timeout scope expired; with_timeout turns its own into TimeoutError.
struct ScopeExpired {
    std::uint64_t id;
};

/// The context of the coroutine running on this thread, or nullptr outside the loop.
ExecContext* current_context() noexcept;
/// Same, but throws std::logic_error naming `what` when called outside a server's loop thread.
ExecContext& require_context(const char* what);

/// Prepares `w` for suspension in the current context with an optional own deadline. Returns false
/// when the wait must not suspend (context cancelled or a deadline already passed; status is set).
bool prepare_wait(Waiter& w, const char* what, Clock::time_point own_deadline = Clock::time_point::max());
/// Completes a pending wait and schedules its coroutine. No-op if it is no longer pending.
void complete_wait(Waiter& w, WaitStatus status) noexcept;
/// Completes a pending wait and resumes its coroutine at once (on the wait's shard, from its loop).
void complete_wait_now(Waiter& w, WaitStatus status) noexcept;
/// Throws what the status means (Cancelled, TimeoutError, ScopeExpired); returns on ok.
void rethrow_wait_status(const Waiter& w);

/// sleep(): a wait that completes at its deadline.
void arm_sleep(Waiter& w) noexcept;

/// with_timeout scopes.
std::uint64_t push_deadline_scope(Clock::duration d);
void pop_deadline_scope(std::uint64_t id) noexcept;

// ---- sessions ----

struct SessionPromiseBase;
/// Called from a session's final_suspend: logs what escaped, recycles the client, may restart it.
void session_finished(SessionPromiseBase& p) noexcept;

/// A datagram as the handler's co_yield consumes it.
struct DatagramRef {
    std::span<const std::byte> payload;
    int* fds = nullptr;
    std::uint32_t fd_count = 0;
    bool has_credentials = false;
    std::int32_t pid = 0;
    std::uint32_t uid = 0, gid = 0;
    bool control_truncated = false;
};

/// Parses `payload` with the server's protocol into the std::optional<Req> at `out`.
using ParseFn = void (*)(void* out, const void* protocol, std::span<const std::byte> payload);

/// State shared by all Session<Req> promises.
struct SessionPromiseBase {
    ExecContext ctx;
    ClientState* client = nullptr;
    ParseFn parse = nullptr;
    std::exception_ptr error;
    bool started_yielding = false;
    std::coroutine_handle<> self;
};

/// What a co_yield needs from the engine. `begin_recv` returns true when a datagram (or an error)
/// is ready without suspending.
struct RecvWait {
    Waiter waiter;
    Clock::time_point deadline = Clock::time_point::max();
    bool has_datagram = false;
};
bool recv_ready(SessionPromiseBase& p, RecvWait& w) noexcept;
bool recv_suspend(SessionPromiseBase& p, RecvWait& w, std::coroutine_handle<> h) noexcept;
/// Takes the datagram for this co_yield; `claim` (may be null) receives its fds/credentials,
/// otherwise they are closed. Parses the payload into `out` while it is valid; throws ParseError,
/// or std::runtime_error("protocol.build_packet() crashed") nesting any other exception.
void recv_take(SessionPromiseBase& p, Ancillary* claim, void* out);
/// Drops the datagram a first co_yield would have consumed (invalid RecvParams, H7).
void recv_discard_first(SessionPromiseBase& p) noexcept;
bool ancillary_enabled(const SessionPromiseBase& p) noexcept;

// ---- clients ----

/// Reference counting of user-held Client copies (single-threaded: the shard's thread).
void client_ref(ClientState* c) noexcept;
void client_unref(ClientState* c) noexcept;
bool client_is_closing(const ClientState* c) noexcept;
const UnixAddress& client_address(const ClientState* c) noexcept;
const UnixAddress& client_local_name(const ClientState* c) noexcept;
int client_socket_fd(const ClientState* c) noexcept;
const void* client_server(const ClientState* c) noexcept;

/// Sending: acquire an op whose buffer the protocol fills, then submit it and wait.
SendOp* send_acquire(ClientState* c);                  // throws ClientClosedError when closing (H20)
/// Serializes `response` with the server's protocol (H22: a crash becomes std::runtime_error
/// "protocol.make_datagram() crashed" nesting it), then refuses unnamed peers (H21). Releases `op`
/// when it throws.
void send_prepare(SendOp* op, const void* response);
void send_release(SendOp* op) noexcept;                // never submitted
struct SendWait {
    Waiter waiter;
    SendOp* op = nullptr;
    int result = 0;
};
bool send_submit(SendWait& w, std::coroutine_handle<> h) noexcept;  // false: completed already
/// Client::post_packet(): queues a prepared op with the loop turn's batch; nobody waits for it.
void send_post(SendOp* op) noexcept;
void send_finish(SendWait& w);  // throws what the result means

}  // namespace unixgram::detail
