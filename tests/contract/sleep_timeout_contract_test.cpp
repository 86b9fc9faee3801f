// SPDX-License-Identifier: MIT
// Contract tests for the runtime's time: sleep and with_timeout (nested deadline scopes), on and off the loop.
#include <gtest/gtest.h>

#include <atomic>
#include <coroutine>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>

#include "contract/runtime.hpp"

namespace unixgram::testing {
namespace {

// ---- sleep ----------------------------------------------------------------------------------------

/// "slow" sleeps 2 s before answering; anything else is answered at once.
class SleepyHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        const std::string request = co_yield recv();
        if (request == "slow") co_await sleep(2s);
        co_await client.send_packet(request + " done");
    }
};

TEST(RuntimeContract, Sleep_SuspendsOnlyTheSleepingSession) {
    SleepyHandler handler;
    Text srv(handler);
    auto a = srv.client();
    auto b = srv.client();
    const auto start = std::chrono::steady_clock::now();

    a.send(srv.address(), "slow");
    b.send(srv.address(), "fast");

    EXPECT_EQ(b.recv(), "fast done") << "b must be answered while a's handler sleeps";
    EXPECT_EQ(a.recv(0ms), std::nullopt) << "a's reply must come after b's";
    EXPECT_EQ(a.recv(), "slow done");
    EXPECT_GE(std::chrono::steady_clock::now() - start, 2s) << "sleep(2s) must not end early";
}

/// Sleeps until shutdown and reports, through `cancelled`, how the sleep ended.
class SleepUntilShutdownHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<bool> cancelled{false};
    Session<std::string> handle(TextClient& client) override {
        co_yield recv();
        co_await client.send_packet("sleeping");
        try {
            co_await sleep(1h);
        } catch (const Cancelled&) {
            cancelled = true;
            throw;
        }
    }
};

TEST(RuntimeContract, Sleep_ThrowsCancelledAtShutdown) {
    SleepUntilShutdownHandler handler;
    Text srv(handler);
    auto c = srv.client();
    c.send(srv.address(), "sleep");
    ASSERT_EQ(c.recv(), "sleeping");

    srv.server().stop();  // returns only once the session has ended

    EXPECT_TRUE(handler.cancelled.load());
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << "Cancelled is not an error\n" << srv.log().dump();
}

// ---- with_timeout ---------------------------------------------------------------------------------

Task<> sleep_long() { co_await sleep(10s); }

Task<> sleep_briefly() { co_await sleep(1ms); }

Task<int> answer_soon() {
    co_await sleep(1ms);
    co_return 42;
}

Task<> fail_soon() {
    co_await sleep(1ms);
    throw std::domain_error("the task's own error");
}

/// The inner deadline comes first: the inner with_timeout throws, the outer one finishes.
Task<std::string> inner_deadline_first() {
    std::string what;
    try {
        co_await with_timeout(20ms, sleep_long());
        what = "inner finished";
    } catch (const TimeoutError&) {
        what = "inner timed out";
    }
    co_return what;
}

/// The outer deadline comes first: the inner with_timeout must let the expiry pass through.
Task<std::string> outer_deadline_first() {
    std::string what;
    try {
        co_await with_timeout(10s, sleep_long());
        what = "inner finished";
    } catch (const TimeoutError&) {
        what = "inner timed out (wrong scope)";
    }
    co_return what;
}

class TimeoutHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        const std::string request = co_yield recv();
        std::string reply;
        try {
            if (request == "expire") {
                co_await with_timeout(20ms, sleep_long());
                reply = "finished";
            } else if (request == "value") {
                reply = "value " + std::to_string(co_await with_timeout(5s, answer_soon()));
            } else if (request == "inner first") {
                reply = co_await with_timeout(5s, inner_deadline_first());
                reply += "; outer finished";
            } else if (request == "outer first") {
                reply = co_await with_timeout(20ms, outer_deadline_first());
                reply += "; outer finished";
            } else if (request == "scope ends") {
                const int v = co_await with_timeout(500ms, answer_soon());
                co_await sleep(600ms);  // past the finished scope's deadline: it must no longer apply
                reply = "value " + std::to_string(v) + ", then slept";
            } else if (request == "void in time") {
                co_await with_timeout(5s, sleep_briefly());
                reply = "void task finished in time";
            } else if (request == "bounded send") {
                co_await with_timeout(5s, client.send_packet("sent under a deadline"));
                reply = "after the bounded send";
            } else if (request == "other error") {
                try {
                    co_await with_timeout(5s, fail_soon());
                    reply = "no error";
                } catch (const std::domain_error& e) {
                    reply = std::string("domain_error: ") + e.what();
                }
            }
        } catch (const TimeoutError& e) {
            reply = std::string("outer TimeoutError: ") + e.what();
        }
        co_await client.send_packet(reply);
    }
};

TEST(RuntimeContract, WithTimeout_ThrowsTimeoutErrorWhenTheTaskTakesLonger) {
    TimeoutHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "expire");
    const auto reply = c.recv();
    ASSERT_TRUE(reply.has_value());
    EXPECT_TRUE(contains(*reply, "outer TimeoutError: ")) << *reply;
}

TEST(RuntimeContract, WithTimeout_ReturnsTheTasksValueWhenItFinishesInTime) {
    TimeoutHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "value");
    EXPECT_EQ(c.recv(), "value 42");
}

TEST(RuntimeContract, WithTimeout_NestedInnerDeadlineFirstIsTheInnerScopesTimeout) {
    TimeoutHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "inner first");
    EXPECT_EQ(c.recv(), "inner timed out; outer finished");
}

TEST(RuntimeContract, WithTimeout_NestedOuterDeadlineFirstIsTheOuterScopesTimeout) {
    TimeoutHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "outer first");
    const auto reply = c.recv();
    ASSERT_TRUE(reply.has_value());
    EXPECT_TRUE(contains(*reply, "outer TimeoutError: ")) << *reply;
}

TEST(RuntimeContract, WithTimeout_TheDeadlineEndsWithTheAwaitedTask) {
    TimeoutHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "scope ends");
    EXPECT_EQ(c.recv(), "value 42, then slept");
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

TEST(RuntimeContract, WithTimeout_OtherExceptionsPassThroughUnchanged) {
    TimeoutHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "other error");
    EXPECT_EQ(c.recv(), "domain_error: the task's own error");
}

TEST(RuntimeContract, WithTimeout_AVoidTaskThatFinishesInTimeDoesNotThrow) {
    TimeoutHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "void in time");
    EXPECT_EQ(c.recv(), "void task finished in time");
}

TEST(RuntimeContract, WithTimeout_BoundsASendPacket) {
    TimeoutHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "bounded send");
    EXPECT_EQ(c.recv(), "sent under a deadline");
    EXPECT_EQ(c.recv(), "after the bounded send");
}

// ---- off the loop thread --------------------------------------------------------------------------

/// A coroutine that runs to its end inside the call that creates it: enough to co_await the
/// runtime's awaitables on a thread that is not a server's loop.
struct RunHere {
    struct promise_type {
        RunHere get_return_object() noexcept { return {}; }
        std::suspend_never initial_suspend() noexcept { return {}; }
        std::suspend_never final_suspend() noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept { std::terminate(); }
    };
};

RunHere sleep_here(std::string* error) {
    try {
        co_await sleep(1ms);
        *error = "no exception";
    } catch (const std::logic_error& e) {
        *error = e.what();
    }
}

RunHere with_timeout_here(std::string* error) {
    try {
        co_await with_timeout(1s, nothing());
        *error = "no exception";
    } catch (const std::logic_error& e) {
        *error = e.what();
    }
}

TEST(RuntimeContract, OffTheLoop_SleepThrowsLogicErrorSayingSo) {
    std::string error;
    sleep_here(&error);
    EXPECT_TRUE(contains(error, "unixgram::sleep()") && contains(error, "loop")) << error;
}

TEST(RuntimeContract, OffTheLoop_WithTimeoutThrowsLogicErrorSayingSo) {
    std::string error;
    with_timeout_here(&error);
    EXPECT_TRUE(contains(error, "with_timeout") && contains(error, "loop")) << error;
}

}  // namespace
}  // namespace unixgram::testing
