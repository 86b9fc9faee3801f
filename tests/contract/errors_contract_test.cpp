// SPDX-License-Identifier: MIT
// Contract tests for errors in and around handlers: spec rules H7, H9–H11, H13, H20–H23, H25 (real sockets).
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "contract/harness.hpp"

namespace unixgram::testing {
namespace {

using Text = RunningServer<std::string, std::string, TextProtocol>;

/// Suspends the calling session or task until `pred` holds, checking it on the loop every
/// millisecond. A handler-side signal: the test decides when `pred` holds, no duration is assumed.
Task<> wait_for(std::function<bool()> pred) {
    while (!pred()) co_await sleep(1ms);
}

/// What the exception nested in `e` says, "<none>" if it nests nothing.
std::string nested_what(const std::exception& e) {
    try {
        std::rethrow_if_nested(e);
    } catch (const std::logic_error& inner) {
        return inner.what();
    } catch (...) {
        return "<not the original exception>";
    }
    return "<none>";
}

/// The H13 log shape: exactly three ERROR records, a rule of dashes, the message naming the client
/// and the exception, and a rule of dashes again.
void expect_three_error_lines(CaptureSink& log, const std::string& address, const std::string& exception_text) {
    std::vector<std::string> errors;
    for (auto& r : log.records())
        if (r.level == spdlog::level::err) errors.push_back(r.text);
    ASSERT_EQ(errors.size(), 3u) << log.dump();
    const std::string rule(40, '-');
    EXPECT_EQ(errors[0], rule);
    EXPECT_NE(errors[1].find("Exception occurred during processing of request from " + address), std::string::npos)
        << errors[1];
    EXPECT_NE(errors[1].find(exception_text), std::string::npos) << errors[1];
    EXPECT_EQ(errors[2], rule);
}

/// TextProtocol that counts make_datagram calls and crashes (std::logic_error "CRASH") on "crash",
/// in either direction.
struct ProbeProtocol {
    std::shared_ptr<std::atomic<int>> make_calls = std::make_shared<std::atomic<int>>(0);
    void make_datagram(const std::string& response, Buffer& out) const {
        ++*make_calls;
        if (response == "crash") throw std::logic_error("CRASH");
        out.append(std::string_view(response));
    }
    std::string build_packet(std::span<const std::byte> datagram) const {
        std::string text = TextProtocol{}.build_packet(datagram);
        if (text == "crash") throw std::logic_error("CRASH");
        return text;
    }
};
static_assert(DatagramProtocol<ProbeProtocol, std::string, std::string>);
using Probe = RunningServer<std::string, std::string, ProbeProtocol>;

/// Base of handlers whose sessions wait on the server's counters.
class CountingHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Task<> service_init(ExitStack&, Server& server) override {
        server_ = &server;
        co_return;
    }

protected:
    Server* server_ = nullptr;
};

// ---- H7: first-yield validation -------------------------------------------------------------------

/// Its first co_yield uses `timeout`; when that throws std::invalid_argument it reports the message,
/// then answers the client's next datagram from a second co_yield.
class FirstYieldHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    explicit FirstYieldHandler(double timeout) : timeout_(timeout) {}
    Session<std::string> handle(Client<std::string>& client) override {
        std::string first;
        std::string error;
        try {
            first = co_yield recv({.timeout = std::chrono::duration<double>(timeout_)});
        } catch (const std::invalid_argument& e) {
            error = e.what();
        }
        if (error.empty()) {
            co_await client.send_packet("got: " + first);
            co_return;
        }
        co_await client.send_packet("invalid: " + error);
        std::string next = co_yield recv({.timeout = 10s});
        co_await client.send_packet("next: " + next);
    }

private:
    double timeout_;
};

TEST(ErrorsContract, H7_NaNTimeoutAtTheFirstYieldThrowsAndDropsTheDatagram) {
    FirstYieldHandler handler(std::numeric_limits<double>::quiet_NaN());
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "first");
    EXPECT_EQ(c.recv(), "invalid: Invalid delay: NaN (not a number)");
    c.send(srv.address(), "second");
    EXPECT_EQ(c.recv(), "next: second") << "the first datagram is dropped, not delivered later";

    const ServerStats s = srv.server().stats();
    EXPECT_EQ(s.dropped_unconsumed, 1u);
    EXPECT_EQ(s.parse_errors, 0u);
    EXPECT_EQ(s.sessions_started, 1u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

TEST(ErrorsContract, H7_NegativeTimeoutAtTheFirstYieldThrowsAndDropsTheDatagram) {
    FirstYieldHandler handler(-1.0);
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "first");
    const auto reply = c.recv();
    ASSERT_TRUE(reply.has_value());
    EXPECT_EQ(reply->rfind("invalid: Invalid delay: negative value", 0), 0u) << *reply;
    c.send(srv.address(), "second");
    EXPECT_EQ(c.recv(), "next: second");

    EXPECT_EQ(srv.server().stats().dropped_unconsumed, 1u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

TEST(ErrorsContract, H7_ValidTimeoutAtTheFirstYieldIsIgnored) {
    for (double timeout : {0.0, 1e-9, std::numeric_limits<double>::infinity()}) {
        FirstYieldHandler handler(timeout);
        Text srv(handler);
        auto c = srv.client();

        c.send(srv.address(), "first");

        EXPECT_EQ(c.recv(), "got: first") << "timeout " << timeout;
        EXPECT_EQ(srv.server().stats().dropped_unconsumed, 0u);
        EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
    }
}

// ---- H9: parse errors at the yield ------------------------------------------------------------------

/// Answers what the yield delivered or threw (the spec's "wrong encoding man." for ParseError).
class BadRequestHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::mutex mutex;
    std::vector<std::string> parse_errors;
    Session<std::string> handle(Client<std::string>& client) override {
        std::string reply;
        try {
            reply = co_yield recv();
        } catch (const ParseError& e) {
            std::lock_guard lock(mutex);
            parse_errors.push_back(std::string(e.what()) + " | " + e.reason());
            reply = "wrong encoding man.";
        } catch (const std::runtime_error& e) {
            reply = std::string("RuntimeError: ") + e.what() + " (caused by " + nested_what(e) + ")";
        }
        co_await client.send_packet(reply);
    }
};

TEST(ErrorsContract, H9_ParseErrorIsThrownAtTheYieldAndCanBeAnswered) {
    BadRequestHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "\xe9");  // Latin-1 'é': not UTF-8
    EXPECT_EQ(c.recv(), "wrong encoding man.");
    c.send(srv.address(), "fine");
    EXPECT_EQ(c.recv(), "fine");

    {
        std::lock_guard lock(handler.mutex);
        ASSERT_EQ(handler.parse_errors.size(), 1u);
        EXPECT_EQ(handler.parse_errors[0], "Error while parsing data: invalid UTF-8 at byte 0 | invalid UTF-8 at byte 0")
            << "what() | reason()";
    }
    const ServerStats s = srv.server().stats();
    EXPECT_EQ(s.parse_errors, 1u);
    EXPECT_EQ(s.handler_errors, 0u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << "a caught parse error is not logged\n"
                                                                 << srv.log().dump();
}

TEST(ErrorsContract, H9_ProtocolCrashIsWrappedInRuntimeErrorNestingTheOriginal) {
    BadRequestHandler handler;
    Probe srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "crash");
    EXPECT_EQ(c.recv(), "RuntimeError: protocol.build_packet() crashed (caused by CRASH)");
    c.send(srv.address(), "fine");
    EXPECT_EQ(c.recv(), "fine");

    EXPECT_EQ(srv.server().stats().parse_errors, 0u) << "a crash is not a parse error";
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

// ---- H10: later yields ------------------------------------------------------------------------------

/// "bad-nan N" / "bad-negative N": waits until the server has read N datagrams (so the client's
/// next one is queued), then yields an invalid timeout and reports what it threw. Other datagrams
/// start a "new session".
class LaterYieldHandler : public CountingHandler {
public:
    Session<std::string> handle(Client<std::string>& client) override {
        std::string first = co_yield recv();
        if (first.rfind("bad-", 0) != 0) {
            co_await client.send_packet("new session: " + first);
            co_return;
        }
        const std::uint64_t total = std::stoull(first.substr(first.find(' ') + 1));
        co_await wait_for([this, total] { return server_->stats().datagrams_received >= total; });
        const double timeout = first.rfind("bad-nan", 0) == 0 ? std::numeric_limits<double>::quiet_NaN() : -0.5;
        std::string reply;
        try {
            reply = "consumed: " + (co_yield recv({.timeout = std::chrono::duration<double>(timeout)}));
        } catch (const std::invalid_argument& e) {
            reply = std::string("invalid: ") + e.what();
        }
        co_await client.send_packet(reply);
    }
};

TEST(ErrorsContract, H10_InvalidTimeoutAtALaterYieldLeavesTheQueuedDatagram) {
    LaterYieldHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "bad-nan 2");
    c.send(srv.address(), "queued 1");
    EXPECT_EQ(c.recv(), "invalid: Invalid delay: NaN (not a number)");
    EXPECT_EQ(c.recv(), "new session: queued 1");

    c.send(srv.address(), "bad-negative 4");
    c.send(srv.address(), "queued 2");
    const auto reply = c.recv();
    ASSERT_TRUE(reply.has_value());
    EXPECT_EQ(reply->rfind("invalid: Invalid delay: negative value", 0), 0u) << *reply;
    EXPECT_EQ(c.recv(), "new session: queued 2");

    const ServerStats s = srv.server().stats();
    EXPECT_EQ(s.sessions_started, 4u);
    EXPECT_EQ(s.dropped_unconsumed, 0u) << "no datagram may be consumed by an invalid later yield";
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

/// The first datagram is a timeout in seconds for the second co_yield; on TimeoutError it says so
/// and yields again.
class TimeoutHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::mutex mutex;
    std::vector<double> waited;  ///< seconds between the yield and its TimeoutError
    Session<std::string> handle(Client<std::string>& client) override {
        const double timeout = std::stod(co_yield recv());
        const auto before = std::chrono::steady_clock::now();
        std::string reply;
        try {
            reply = "not timed out: " + (co_yield recv({.timeout = std::chrono::duration<double>(timeout)}));
        } catch (const TimeoutError&) {
            std::lock_guard lock(mutex);
            waited.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - before).count());
            reply = "successfully timed out";
        }
        co_await client.send_packet(reply);
        std::string next = co_yield recv({.timeout = 10s});
        co_await client.send_packet("then: " + next);
    }
};

TEST(ErrorsContract, H10_TimeoutExpiryIsThrownAtTheYieldAndTheSessionCanYieldAgain) {
    TimeoutHandler handler;
    Text srv(handler);
    auto c = srv.client();

    for (const char* timeout : {"0", "0.2"}) {
        c.send(srv.address(), timeout);
        EXPECT_EQ(c.recv(), "successfully timed out") << "timeout " << timeout;
        c.send(srv.address(), "x");
        EXPECT_EQ(c.recv(), "then: x") << "timeout " << timeout;
    }

    std::lock_guard lock(handler.mutex);
    ASSERT_EQ(handler.waited.size(), 2u);
    EXPECT_GE(handler.waited[1], 0.2) << "a 0.2 s timeout must not expire early";
    EXPECT_EQ(srv.server().stats().sessions_started, 2u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

/// Waits until its client's second datagram has been read, then yields with timeout 0.
class ZeroTimeoutHandler : public CountingHandler {
public:
    Session<std::string> handle(Client<std::string>& client) override {
        std::string first = co_yield recv();
        co_await wait_for([this] { return server_->stats().datagrams_received >= 2; });
        std::string reply;
        try {
            reply = first + " got " + (co_yield recv({.timeout = 0s}));
        } catch (const TimeoutError&) {
            reply = "timed out";
        }
        co_await client.send_packet(reply);
    }
};

TEST(ErrorsContract, H10_ZeroTimeoutDeliversAnAlreadyQueuedDatagram) {
    ZeroTimeoutHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "t0");
    c.send(srv.address(), "x");

    EXPECT_EQ(c.recv(), "t0 got x");
    EXPECT_EQ(srv.server().stats().sessions_started, 1u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

// ---- H11: cancellation and handler-side timeouts -----------------------------------------------------

/// Waits at a second co_yield; records that shutdown threw Cancelled there, and again at the
/// next suspension point.
class CancelProbeHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<bool> at_second_yield{false};
    std::atomic<bool> cancelled_at_yield{false};
    std::atomic<bool> cancelled_again{false};
    Session<std::string> handle(Client<std::string>&) override {
        std::string first = co_yield recv();
        try {
            at_second_yield = true;
            first = co_yield recv();
        } catch (const Cancelled&) {
            cancelled_at_yield = true;
        }
        try {
            co_await sleep(1ms);
        } catch (const Cancelled&) {
            cancelled_again = true;
        }
    }
};

TEST(ErrorsContract, H11_ShutdownThrowsCancelledAtTheYield) {
    CancelProbeHandler handler;
    Text srv(handler);
    auto c = srv.client();
    c.send(srv.address(), "first");
    ASSERT_TRUE(wait_until([&] { return handler.at_second_yield.load(); }));

    const auto before = std::chrono::steady_clock::now();
    srv.server().stop();
    const auto took = std::chrono::steady_clock::now() - before;

    EXPECT_TRUE(handler.cancelled_at_yield.load());
    EXPECT_TRUE(handler.cancelled_again.load()) << "every later suspension point throws Cancelled too";
    EXPECT_LT(took, 4s) << "shutdown must not wait for the teardown limit";
    EXPECT_EQ(srv.server().stats().handler_errors, 0u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << "Cancelled is never logged\n"
                                                                 << srv.log().dump();
}

Task<int> answer_soon() {
    co_await sleep(1ms);
    co_return 42;
}

/// Runs waits that end in time under with_timeout(10 s), then bounds a one-hour sleep with
/// with_timeout(50 ms), then yields without a timeout.
class WithTimeoutHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<double> waited{0};
    Session<std::string> handle(Client<std::string>& client) override {
        std::string first = co_yield recv();
        std::string reply;
        try {
            co_await with_timeout(10s, sleep(1ms));
            reply = "in time: " + std::to_string(co_await with_timeout(10s, answer_soon())) + "; ";
        } catch (const TimeoutError& e) {
            reply = std::string("early TimeoutError: ") + e.what() + "; ";
        }
        const auto before = std::chrono::steady_clock::now();
        try {
            co_await with_timeout(50ms, sleep(1h));
            reply += "not timed out";
        } catch (const TimeoutError&) {
            reply += "timed out";
        }
        waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - before).count();
        co_await client.send_packet(reply);
        std::string next = co_yield recv();  // the expired scope must not bound this wait
        co_await client.send_packet("then: " + next);
    }
};

TEST(ErrorsContract, H11_WithTimeoutBoundsAWaitInsideTheHandler) {
    WithTimeoutHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "go");
    EXPECT_EQ(c.recv(), "in time: 42; timed out") << "only the wait that outlives its deadline throws";
    c.send(srv.address(), "x");
    EXPECT_EQ(c.recv(), "then: x");

    EXPECT_GE(handler.waited.load(), 0.05);
    EXPECT_EQ(srv.server().stats().sessions_started, 1u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

// ---- H13: exceptions escaping handle() ----------------------------------------------------------------

/// Throws what the request names after its co_yield ("closed", "runtime", "system"); echoes
/// anything else. With `throw_before_yield`, its first session throws before its first co_yield.
class ThrowingHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    bool throw_before_yield = false;
    int sessions = 0;
    Session<std::string> handle(Client<std::string>& client) override {
        if (throw_before_yield && ++sessions == 1) throw std::runtime_error("crashed before yield");
        std::string request = co_yield recv();
        if (request == "closed") throw ClientClosedError();
        if (request == "runtime") throw std::runtime_error("random error");
        if (request == "system") throw std::system_error(ECONNRESET, std::generic_category(), "peer went away");
        co_await client.send_packet(request);
    }
};

TEST(ErrorsContract, H13_ClientClosedErrorLogsOneWarningAndServingGoesOn) {
    ThrowingHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "closed");
    c.send(srv.address(), "next");
    EXPECT_EQ(c.recv(), "next");

    ASSERT_TRUE(wait_until([&] { return srv.log().count(spdlog::level::warn) == 1; })) << srv.log().dump();
    for (auto& r : srv.log().records()) {
        if (r.level == spdlog::level::warn) {
            EXPECT_EQ(r.text.rfind("There have been attempts to do operation on closed client", 0), 0u) << r.text;
            EXPECT_NE(r.text.find(c.local_name().to_string()), std::string::npos) << r.text;
        }
    }
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << srv.log().dump();
}

/// Replies "ready", waits at a second co_yield, and after shutdown's Cancelled uses the client
/// anyway: the ClientClosedError escapes handle().
class LateSenderHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<bool> at_second_yield{false};
    Session<std::string> handle(Client<std::string>& client) override {
        std::string first = co_yield recv();
        bool cancelled = false;
        try {
            at_second_yield = true;
            first = co_yield recv();
        } catch (const Cancelled&) {
            cancelled = true;
        }
        if (cancelled) co_await client.send_packet("too late");
    }
};

TEST(ErrorsContract, H13_ClientClosedErrorAfterShutdownLogsOneWarning) {
    LateSenderHandler handler;
    Text srv(handler);
    auto c = srv.client();
    c.send(srv.address(), "first");
    ASSERT_TRUE(wait_until([&] { return handler.at_second_yield.load(); }));

    srv.server().stop();

    EXPECT_EQ(srv.log().count(spdlog::level::warn), 1u) << srv.log().dump();
    EXPECT_EQ(srv.log().count(spdlog::level::warn, "There have been attempts to do operation on closed client " +
                                                       c.local_name().to_string()),
              1u)
        << srv.log().dump();
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << srv.log().dump();
    EXPECT_EQ(c.recv(300ms), std::nullopt) << "nothing is sent to a closed client";
}

TEST(ErrorsContract, H13_OtherExceptionLogsThreeErrorLinesAndServingGoesOn) {
    ThrowingHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "runtime");
    c.send(srv.address(), "next");
    EXPECT_EQ(c.recv(), "next");

    ASSERT_TRUE(wait_until([&] { return srv.log().count(spdlog::level::err) >= 3; })) << srv.log().dump();
    expect_three_error_lines(srv.log(), c.local_name().to_string(), "random error");
    EXPECT_EQ(srv.server().stats().handler_errors, 1u);
    EXPECT_EQ(srv.log().count(spdlog::level::warn), 0u) << srv.log().dump();
}

TEST(ErrorsContract, H13_SystemErrorIsNotSuppressed) {
    ThrowingHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "system");
    c.send(srv.address(), "next");
    EXPECT_EQ(c.recv(), "next");

    ASSERT_TRUE(wait_until([&] { return srv.log().count(spdlog::level::err) >= 3; })) << srv.log().dump();
    expect_three_error_lines(srv.log(), c.local_name().to_string(), "peer went away");
    EXPECT_EQ(srv.log().count(spdlog::level::warn), 0u) << srv.log().dump();
}

TEST(ErrorsContract, H13_ExceptionBeforeTheFirstYieldDropsItsDatagram) {
    ThrowingHandler handler;
    handler.throw_before_yield = true;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "never answered");
    c.send(srv.address(), "next");
    EXPECT_EQ(c.recv(), "next") << "the crashing session's datagram gets no reply";

    ASSERT_TRUE(wait_until([&] { return srv.log().count(spdlog::level::err) >= 3; })) << srv.log().dump();
    expect_three_error_lines(srv.log(), c.local_name().to_string(), "crashed before yield");
    EXPECT_EQ(srv.server().stats().dropped_unconsumed, 1u);
    EXPECT_EQ(c.recv(300ms), std::nullopt);
}

// ---- H20: sending to a closing client -------------------------------------------------------------------

/// Keeps a copy of the first client it serves and, once serving ends, tries to reply through it:
/// from an ExitStack callback (`via_exit_stack`) or from a background task that shutdown cancels.
class ClosingClientHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    explicit ClosingClientHandler(bool via_exit_stack) : via_exit_stack_(via_exit_stack) {}

    std::atomic<bool> closing_while_serving{true};
    std::atomic<bool> closing_afterwards{false};
    std::atomic<bool> task_cancelled{false};
    std::atomic<int> late_attempts{0};
    std::mutex mutex;
    std::string late_error;
    std::atomic<int> make_calls_at_late_send{-1};
    std::shared_ptr<std::atomic<int>> make_calls;

    Task<> service_init(ExitStack& stack, Server& server) override {
        if (via_exit_stack_) {
            stack.push_async([this] { return send_late(); });
        } else {
            server.spawn(watch());
        }
        co_return;
    }

    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        if (!kept_) kept_.emplace(client);
        closing_while_serving = client.is_closing();
        co_await client.send_packet(request);
    }

private:
    Task<> watch() {
        try {
            co_await sleep(1h);
        } catch (const Cancelled&) {
            task_cancelled = true;
        }
        co_await send_late();
    }

    Task<> send_late() {
        if (!kept_) co_return;
        closing_afterwards = kept_->is_closing();
        ++late_attempts;
        try {
            co_await kept_->send_packet("too late");
        } catch (const ClientClosedError& e) {
            std::lock_guard lock(mutex);
            late_error = e.what();
        }
        make_calls_at_late_send = make_calls->load();
        kept_.reset();  // Client copies must not outlive the run on the loop thread
    }

    bool via_exit_stack_;
    std::optional<Client<std::string>> kept_;
};

void run_closing_client_scenario(bool via_exit_stack) {
    ClosingClientHandler handler(via_exit_stack);
    ProbeProtocol protocol;
    handler.make_calls = protocol.make_calls;
    Probe srv(handler, protocol);
    auto c = srv.client();
    c.send(srv.address(), "hello");
    ASSERT_EQ(c.recv(), "hello");
    EXPECT_FALSE(handler.closing_while_serving.load());
    EXPECT_EQ(protocol.make_calls->load(), 1);

    srv.server().stop();

    if (!via_exit_stack) {
        EXPECT_TRUE(handler.task_cancelled.load()) << "shutdown cancels the background task first";
    }
    ASSERT_EQ(handler.late_attempts.load(), 1);
    EXPECT_TRUE(handler.closing_afterwards.load());
    {
        std::lock_guard lock(handler.mutex);
        EXPECT_EQ(handler.late_error, "Closed client");
    }
    EXPECT_EQ(handler.make_calls_at_late_send.load(), 1) << "ClientClosedError comes before serializing";
    EXPECT_EQ(protocol.make_calls->load(), 1);
    EXPECT_EQ(c.recv(300ms), std::nullopt);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

TEST(ErrorsContract, H20_SendFromTheExitStackRaisesClientClosedErrorBeforeSerializing) {
    run_closing_client_scenario(/*via_exit_stack=*/true);
}

TEST(ErrorsContract, H20_SendFromACancelledTaskRaisesClientClosedErrorBeforeSerializing) {
    run_closing_client_scenario(/*via_exit_stack=*/false);
}

// ---- H21: replies to unnamed clients -----------------------------------------------------------------

/// Replies with the request and records what the send threw.
class ReplyProbeHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<int> finished{0};
    std::mutex mutex;
    std::vector<std::string> requests;
    int error_code = 0;
    std::string error_category;
    std::string error_what;
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        {
            std::lock_guard lock(mutex);
            requests.push_back(request);
        }
        try {
            co_await client.send_packet(request);
        } catch (const std::system_error& e) {
            std::lock_guard lock(mutex);
            error_code = e.code().value();
            error_category = e.code().category().name();
            error_what = e.what();
        }
        ++finished;
    }
};

TEST(ErrorsContract, H21_ReplyToAnUnnamedClientRaisesEINVAL) {
    ReplyProbeHandler handler;
    ProbeProtocol protocol;
    ServerOptions opts;
    opts.unnamed_addresses = UnnamedAddresses::handle;
    Probe srv(handler, protocol, opts);
    auto u = RawClient::unbound();

    u.send(srv.address(), "hi");

    ASSERT_TRUE(wait_until([&] { return handler.finished.load() == 1; }));
    std::lock_guard lock(handler.mutex);
    EXPECT_EQ(handler.requests, std::vector<std::string>{"hi"});
    EXPECT_EQ(handler.error_code, EINVAL);
    EXPECT_EQ(handler.error_category, std::string(std::generic_category().name()));
    EXPECT_NE(handler.error_what.find("Cannot send a datagram to an unnamed address."), std::string::npos)
        << handler.error_what;
    EXPECT_EQ(protocol.make_calls->load(), 1) << "the response is serialized before the address is refused";
    EXPECT_EQ(srv.server().stats().datagrams_sent, 0u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

// ---- H22: serialization failure ----------------------------------------------------------------------

/// Replies "crash" (which the protocol cannot serialize), then reports what that threw.
class SerializeCrashHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        std::string report = "no exception";
        try {
            co_await client.send_packet("crash");
        } catch (const std::runtime_error& e) {
            report = std::string("RuntimeError: ") + e.what() + " (caused by " + nested_what(e) + ")";
        }
        co_await client.send_packet(report);
    }
};

TEST(ErrorsContract, H22_MakeDatagramCrashRaisesRuntimeErrorAndSendsNothing) {
    SerializeCrashHandler handler;
    ProbeProtocol protocol;
    Probe srv(handler, protocol);
    auto c = srv.client();

    c.send(srv.address(), "go");

    EXPECT_EQ(c.recv(), "RuntimeError: protocol.make_datagram() crashed (caused by CRASH)")
        << "the failed reply must not reach the client, not even empty";
    EXPECT_TRUE(wait_until([&] { return srv.server().stats().datagrams_sent == 1; }));
    EXPECT_EQ(protocol.make_calls->load(), 2);
    EXPECT_EQ(c.recv(300ms), std::nullopt);
    EXPECT_EQ(srv.server().stats().datagrams_sent, 1u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

// ---- H23: the send path ------------------------------------------------------------------------------------

/// Replies with the client's address as the server sees it.
class PeerNameHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        co_await client.send_packet(client.peer_name().to_string());
    }
};

TEST(ErrorsContract, H23_ReplyGoesToTheSendersBoundAddress) {
    PeerNameHandler handler;
    Text srv(handler);
    auto by_path = srv.client();
    RawClient autobound(UnixAddress::autobind());  // the kernel picks an abstract name
    ASSERT_TRUE(autobound.local_name().is_abstract());

    by_path.send(srv.address(), "who am I?");
    autobound.send(srv.address(), "who am I?");

    EXPECT_EQ(by_path.recv(), by_path.local_name().to_string());
    EXPECT_EQ(autobound.recv(), autobound.local_name().to_string());
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

/// "vanish": waits until the test has closed the peer, then replies and records what that threw.
class VanishingPeerHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<bool> waiting{false};
    std::atomic<bool> peer_gone{false};
    std::atomic<int> send_error{-1};
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        if (request != "vanish") {
            co_await client.send_packet(request);
            co_return;
        }
        waiting = true;
        co_await wait_for([this] { return peer_gone.load(); });
        int error = 0;
        try {
            co_await client.send_packet("into the void");
        } catch (const std::system_error& e) {
            error = e.code().value();
        }
        send_error = error;
    }
};

void run_vanishing_peer_scenario(bool unlink_file) {
    VanishingPeerHandler handler;
    Text srv(handler);
    const std::string path = srv.dir().file("vanishing.sock");
    std::optional<RawClient> peer(std::in_place, UnixAddress::pathname(path));
    peer->send(srv.address(), "vanish");
    ASSERT_TRUE(wait_until([&] { return handler.waiting.load(); }));

    peer.reset();
    if (unlink_file) std::filesystem::remove(path);
    handler.peer_gone = true;

    ASSERT_TRUE(wait_until([&] { return handler.send_error.load() != -1; }));
    const int error = handler.send_error.load();
    EXPECT_TRUE(error == ECONNREFUSED || error == ENOENT) << "errno " << error << ": " << std::strerror(error);
    EXPECT_TRUE(wait_until([&] { return srv.server().stats().send_errors == 1; }));
    auto other = srv.client();
    other.send(srv.address(), "still serving");
    EXPECT_EQ(other.recv(), "still serving");
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

TEST(ErrorsContract, H23_ReplyToAVanishedPeerRaisesSystemErrorAndServingGoesOn) {
    run_vanishing_peer_scenario(/*unlink_file=*/true);
}

TEST(ErrorsContract, H23_ReplyToAClosedPeerWhoseFileRemainsRaisesSystemError) {
    run_vanishing_peer_scenario(/*unlink_file=*/false);
}

// ---- H25: handler exceptions of the unnamed client --------------------------------------------------------

class UnnamedCrashHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<int> calls{0};
    Session<std::string> handle(Client<std::string>&) override {
        ++calls;
        std::string request = co_yield recv();
        throw std::runtime_error("boom: " + request);
    }
};

TEST(ErrorsContract, H25_UnnamedClientExceptionIsLoggedWithTheUnnamedAddress) {
    UnnamedCrashHandler handler;
    ServerOptions opts;
    opts.unnamed_addresses = UnnamedAddresses::handle;
    Text srv(handler, TextProtocol{}, opts);
    auto u = RawClient::unbound();

    u.send(srv.address(), "first");
    ASSERT_TRUE(wait_until([&] { return srv.log().count(spdlog::level::err) >= 3; })) << srv.log().dump();
    expect_three_error_lines(srv.log(), "<unnamed>", "boom: first");
    EXPECT_EQ(srv.log().count(spdlog::level::err, "Unhandled exception"), 0u);

    u.send(srv.address(), "second");
    EXPECT_TRUE(wait_until([&] { return handler.calls.load() == 2 && srv.log().count(spdlog::level::err) == 6; }))
        << "the server keeps serving the unnamed client\n"
        << srv.log().dump();
    EXPECT_EQ(srv.log().count(spdlog::level::err, "Exception occurred during processing of request from <unnamed>"),
              2u);
    EXPECT_EQ(srv.log().count(spdlog::level::warn), 0u) << srv.log().dump();
}

}  // namespace
}  // namespace unixgram::testing
