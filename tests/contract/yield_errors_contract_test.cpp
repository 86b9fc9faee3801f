// SPDX-License-Identifier: MIT
// Contract tests for errors a session meets at its yields and waits: spec rules H7, H9–H11 (real sockets).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "contract/errors.hpp"

namespace unixgram::testing {
namespace {

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
        co_await wait_received(total);
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
        co_await wait_received(2);
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

}  // namespace
}  // namespace unixgram::testing
