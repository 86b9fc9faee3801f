// SPDX-License-Identifier: MIT
// Contract tests for what one run holds and how shutdown ends it: rules H15, H16, H19, H26 (real sockets).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "contract/lifecycle.hpp"

namespace unixgram::testing {
namespace {

using Text = RunningServer<std::string, std::string, TextProtocol>;

// ---- H15 service_init --------------------------------------------------------------------------

/// service_init sets the prefix the handler answers with, and notes what the server had read by then.
class PrefixFromInit : public TextHandler {
public:
    std::atomic<int> init_calls{0};
    std::atomic<std::uint64_t> received_during_init{~std::uint64_t{0}};
    std::atomic<bool> listening_during_init{false};
    Task<> service_init(ExitStack&, Server& server) override {
        ++init_calls;
        prefix_ = "";
        listening_during_init = server.is_listening();
        co_await unixgram::sleep(10ms);  // lets the loop turn while the datagram waits in the kernel
        received_during_init = server.stats().datagrams_received;
        prefix_ = "run " + std::to_string(init_calls.load()) + ": ";
    }
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        co_await client.send_packet(prefix_ + request);
    }

private:
    std::string prefix_;  // loop thread only
};

TEST(LifecycleContract, H15_ServiceInitRunsOncePerRunAfterBindBeforeTheFirstRead) {
    PrefixFromInit handler;
    IdleServer srv(handler);
    srv.server().activate();
    auto c = srv.client();
    c.send(srv.server().address(), "sent before start");  // bound, not read yet

    srv.server().start();
    EXPECT_EQ(c.recv(), "run 1: sent before start") << "answered only after service_init finished";
    EXPECT_TRUE(handler.listening_during_init.load()) << "service_init runs after bind";
    EXPECT_EQ(handler.received_during_init.load(), 0u) << "nothing is read before service_init finished";
    EXPECT_EQ(handler.init_calls.load(), 1);
    EXPECT_EQ(ask(c, srv.server().address(), "again"), "run 1: again");
    EXPECT_EQ(handler.init_calls.load(), 1) << "once per run, not per session";

    srv.server().stop();
    c.send(srv.server().address(), "between runs");
    srv.server().start();
    EXPECT_EQ(c.recv(), "run 2: between runs");
    EXPECT_EQ(handler.init_calls.load(), 2);
}

/// Sessions wait at a second co_yield until shutdown; the ExitStack records its unwinding and
/// checks a Client copy kept from a session.
class ExitStackProbe : public TextHandler {
public:
    std::atomic<int> waiting{0};
    std::atomic<bool> kept_closing{false};
    std::atomic<bool> kept_send_threw_closed{false};

    std::vector<std::string> events() {
        std::lock_guard lock(mutex_);
        return events_;
    }

    Task<> service_init(ExitStack& stack, Server&) override {
        stack.callback([this] { record("pushed first"); });
        stack.push_async([this] { return check_kept_client(); });
        stack.callback([this] { record("pushed last"); });
        co_return;
    }

    Session<std::string> handle(Client<std::string>& client) override {
        struct EndMark {
            ExitStackProbe* self;
            ~EndMark() { self->record("session ended"); }
        } end{this};
        if (!kept_) kept_.emplace(client);
        std::string request = co_yield recv();
        co_await client.send_packet(request);
        ++waiting;
        co_yield recv();  // until shutdown cancels it
    }

private:
    Task<> check_kept_client() {
        record("pushed second (async)");
        if (kept_) {
            kept_closing = kept_->is_closing();
            bool threw_closed = false;
            try {
                co_await kept_->send_packet("too late");
            } catch (const ClientClosedError&) {
                threw_closed = true;
            } catch (...) {
            }
            kept_send_threw_closed = threw_closed;
        }
        kept_.reset();  // a Client copy must not outlive the server
    }
    void record(std::string event) {
        std::lock_guard lock(mutex_);
        events_.push_back(std::move(event));
    }

    std::mutex mutex_;
    std::vector<std::string> events_;
    std::optional<Client<std::string>> kept_;  // loop thread only
};

TEST(LifecycleContract, H15_ExitStackUnwindsLifoAfterEverySessionEndedWithClientsClosing) {
    ExitStackProbe handler;
    Text srv(handler);
    auto a = srv.client();
    auto b = srv.client();
    EXPECT_EQ(ask(a, srv.address(), "a"), "a");
    EXPECT_EQ(ask(b, srv.address(), "b"), "b");
    ASSERT_TRUE(wait_until([&] { return handler.waiting.load() == 2; }));

    srv.server().stop();
    const std::vector<std::string> expected = {"session ended", "session ended", "pushed last",
                                               "pushed second (async)", "pushed first"};
    EXPECT_EQ(handler.events(), expected);
    EXPECT_TRUE(handler.kept_closing.load()) << "a kept Client reports is_closing() while the stack unwinds";
    EXPECT_TRUE(handler.kept_send_threw_closed.load()) << "send_packet on it throws ClientClosedError";
    EXPECT_EQ(a.recv(0ms), std::nullopt);
}

struct InitFailure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// service_init pushes a cleanup, then throws while `fail` is set.
class FailingInit : public TextHandler {
public:
    std::atomic<bool> fail{true};
    std::atomic<int> init_calls{0};
    std::atomic<int> cleanups{0};
    Task<> service_init(ExitStack& stack, Server&) override {
        ++init_calls;
        stack.callback([this] { ++cleanups; });
        if (fail) throw InitFailure("service_init failed on purpose");
        co_return;
    }
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        co_await client.send_packet(request);
    }
};

TEST(LifecycleContract, H15_ServiceInitThrowingPropagatesUnwindsAndLeavesTheServerUsable) {
    FailingInit handler;
    IdleServer srv(handler);

    try {
        srv.server().serve_forever();
        ADD_FAILURE() << "serve_forever() must throw what service_init threw";
    } catch (const InitFailure& e) {
        EXPECT_STREQ(e.what(), "service_init failed on purpose");
    }
    EXPECT_EQ(handler.cleanups.load(), 1) << "callbacks pushed before the throw run";
    EXPECT_EQ(srv.log().count(spdlog::level::info, "Server stopped"), 1u) << srv.log().dump();
    EXPECT_EQ(srv.log().count(spdlog::level::info, "Start serving at"), 0u) << srv.log().dump();
    EXPECT_TRUE(srv.server().is_listening());
    EXPECT_FALSE(srv.server().is_serving());
    EXPECT_TRUE(is_socket_file(srv.path()));

    try {
        srv.server().start();
        ADD_FAILURE() << "start() must throw what service_init threw";
    } catch (const InitFailure& e) {
        EXPECT_STREQ(e.what(), "service_init failed on purpose");
    }
    EXPECT_EQ(handler.cleanups.load(), 2);
    EXPECT_EQ(srv.log().count(spdlog::level::info, "Server stopped"), 2u) << srv.log().dump();
    EXPECT_TRUE(srv.server().is_listening());

    handler.fail = false;  // not closed: it serves again once service_init works
    srv.server().start();
    auto c = srv.client();
    EXPECT_EQ(ask(c, srv.server().address(), "works now"), "works now");
    EXPECT_EQ(handler.init_calls.load(), 3);
    srv.server().stop();
    EXPECT_EQ(handler.cleanups.load(), 3);
}

// ---- H16 ContextVar ----------------------------------------------------------------------------

ContextVar<std::string> request_tag{"unset"};

/// "set:X" sets the tag, answers, then answers the session's next datagram with the tag it sees;
/// anything else is answered with the tag.
class ContextProbe : public TextHandler {
public:
    Task<> service_init(ExitStack&, Server&) override {
        request_tag.set("init");
        co_return;
    }
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        if (request.starts_with("set:")) {
            request_tag.set(request.substr(4));
            co_await client.send_packet("set " + request_tag.get());
            co_yield recv({.timeout = 30s});
            co_await client.send_packet("same session: " + request_tag.get());
        } else {
            co_await client.send_packet(request_tag.get());
        }
    }
};

TEST(LifecycleContract, H16_ValueSetInServiceInitIsEverySessionsDefault) {
    ContextProbe handler;
    Text srv(handler);
    auto a = srv.client();
    auto b = srv.client();
    EXPECT_EQ(ask(a, srv.address(), "get"), "init");
    EXPECT_EQ(ask(b, srv.address(), "get"), "init");
    EXPECT_EQ(request_tag.get(), "unset") << "outside the loop: the ContextVar's own default";
}

TEST(LifecycleContract, H16_SetInASessionIsSeenByThatSessionOnly) {
    ContextProbe handler;
    Text srv(handler);
    auto a = srv.client();
    auto b = srv.client();
    EXPECT_EQ(ask(a, srv.address(), "set:A"), "set A");
    EXPECT_EQ(ask(b, srv.address(), "get"), "init") << "another client's session, while A's is alive";
    EXPECT_EQ(ask(a, srv.address(), "next"), "same session: A");
    EXPECT_EQ(ask(a, srv.address(), "get"), "init") << "the same client's next session";
    EXPECT_EQ(ask(b, srv.address(), "get"), "init");
}

// ---- H19 is_closing ----------------------------------------------------------------------------

/// "probe" answers is_closing(); anything else sleeps until cancelled and notes is_closing() then.
class ClosingProbe : public TextHandler {
public:
    std::atomic<bool> sleeping{false};
    std::atomic<bool> cancelled{false};
    std::atomic<bool> closing_when_cancelled{false};
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        if (request == "probe") {
            co_await client.send_packet(client.is_closing() ? "closing" : "open");
            co_return;
        }
        sleeping = true;
        try {
            co_await unixgram::sleep(3600s);
        } catch (const Cancelled&) {
            cancelled = true;
            closing_when_cancelled = client.is_closing();
            throw;
        }
    }
};

TEST(LifecycleContract, H19_IsClosingIsFalseWhileServingAndTrueFromShutdownOn) {
    ClosingProbe handler;
    Text srv(handler);
    auto a = srv.client();
    auto b = srv.client();
    EXPECT_EQ(ask(a, srv.address(), "probe"), "open");
    EXPECT_EQ(ask(b, srv.address(), "probe"), "open");

    b.send(srv.address(), "sleep");
    ASSERT_TRUE(wait_until([&] { return handler.sleeping.load(); }));
    srv.server().shutdown();
    EXPECT_TRUE(handler.cancelled.load());
    EXPECT_TRUE(handler.closing_when_cancelled.load());
}

// ---- H26 shutdown while handlers run ------------------------------------------------------------

/// The first datagram's session sleeps 3600 s holding an RAII guard; records what happened.
class SleepyHandler : public TextHandler {
public:
    std::atomic<bool> entered{false};
    std::atomic<bool> saw_cancelled{false};
    std::atomic<bool> guard_destroyed{false};
    Session<std::string> handle(Client<std::string>& client) override {
        struct Guard {
            std::atomic<bool>* flag;
            ~Guard() { *flag = true; }
        } guard{&guard_destroyed};
        std::string request = co_yield recv();
        if (request != "busy") {
            co_await client.send_packet(request);
            co_return;
        }
        entered = true;
        try {
            co_await unixgram::sleep(3600s);
        } catch (const Cancelled&) {
            saw_cancelled = true;
            throw;
        }
    }
};

TEST(LifecycleContract, H26_ShutdownCancelsAHandlerSleepingAnHour) {
    SleepyHandler handler;
    Text srv(handler);
    auto c = srv.client();
    c.send(srv.address(), "busy");
    ASSERT_TRUE(wait_until([&] { return handler.entered.load(); }));

    const auto t0 = std::chrono::steady_clock::now();
    srv.server().shutdown();
    EXPECT_LT(seconds_since(t0), 5.0);
    EXPECT_TRUE(handler.saw_cancelled.load());
    EXPECT_TRUE(handler.guard_destroyed.load()) << "the session's locals must be destroyed";
    EXPECT_EQ(srv.server().stats().handler_errors, 0u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << "Cancelled is never logged\n" << srv.log().dump();
}

/// Answers the first datagram, then waits at a second co_yield.
class SecondYieldHandler : public TextHandler {
public:
    std::atomic<bool> at_second_yield{false};
    std::atomic<bool> cancelled_at_second_yield{false};
    Session<std::string> handle(Client<std::string>& client) override {
        std::string first = co_yield recv();
        co_await client.send_packet("got " + first);
        at_second_yield = true;
        try {
            co_yield recv();
        } catch (const Cancelled&) {
            cancelled_at_second_yield = true;
            throw;
        }
    }
};

TEST(LifecycleContract, H26_ShutdownCancelsASessionWaitingAtItsSecondYield) {
    SecondYieldHandler handler;
    Text srv(handler);
    auto c = srv.client();
    EXPECT_EQ(ask(c, srv.address(), "one"), "got one");
    ASSERT_TRUE(wait_until([&] { return handler.at_second_yield.load(); }));

    const auto t0 = std::chrono::steady_clock::now();
    srv.server().shutdown();
    EXPECT_LT(seconds_since(t0), 5.0);
    EXPECT_TRUE(handler.cancelled_at_second_yield.load());
    EXPECT_EQ(srv.server().stats().dropped_at_shutdown, 0u);
    EXPECT_EQ(srv.server().stats().receive_errors, 0u) << "stopping the socket's receive is not a failed read";
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << srv.log().dump();
}

TEST(LifecycleContract, H26_DatagramsQueuedBehindABusySessionAreDroppedAtShutdownAndCounted) {
    SleepyHandler handler;
    Text srv(handler);
    auto c = srv.client();
    c.send(srv.address(), "busy");
    ASSERT_TRUE(wait_until([&] { return handler.entered.load(); }));
    for (const char* q : {"q1", "q2", "q3"}) c.send(srv.address(), q);
    ASSERT_TRUE(wait_until([&] { return srv.server().stats().datagrams_received == 4; }));

    const auto t0 = std::chrono::steady_clock::now();
    srv.server().shutdown();
    EXPECT_LT(seconds_since(t0), 5.0);
    const ServerStats stats = srv.server().stats();
    EXPECT_EQ(stats.dropped_at_shutdown, 3u);
    EXPECT_EQ(stats.sessions_started, 1u) << "the queued datagrams never got a session";
    EXPECT_EQ(stats.datagrams_sent, 0u);
    EXPECT_EQ(c.recv(0ms), std::nullopt);
    EXPECT_TRUE(handler.saw_cancelled.load());
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << srv.log().dump();
}

/// Catches Cancelled and sleeps again.
class StubbornHandler : public TextHandler {
public:
    std::atomic<bool> entered{false};
    std::atomic<bool> first_cancelled{false};
    std::atomic<bool> second_cancelled{false};
    Session<std::string> handle(Client<std::string>&) override {
        co_yield recv();
        entered = true;
        bool swallowed = false;
        try {
            co_await unixgram::sleep(3600s);
        } catch (const Cancelled&) {
            first_cancelled = true;
            swallowed = true;
        }
        if (swallowed) {
            try {
                co_await unixgram::sleep(3600s);
            } catch (const Cancelled&) {
                second_cancelled = true;
                throw;
            }
        }
    }
};

TEST(LifecycleContract, H26_AHandlerThatSwallowsCancelledIsCancelledAgainAtItsNextWait) {
    StubbornHandler handler;
    Text srv(handler);
    auto c = srv.client();
    c.send(srv.address(), "x");
    ASSERT_TRUE(wait_until([&] { return handler.entered.load(); }));

    const auto t0 = std::chrono::steady_clock::now();
    srv.server().shutdown();
    EXPECT_LT(seconds_since(t0), 5.0);
    EXPECT_TRUE(handler.first_cancelled.load());
    EXPECT_TRUE(handler.second_cancelled.load()) << "the second sleep must throw Cancelled at once";
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << srv.log().dump();
}

/// service_init spawns a background task that sleeps until cancelled, and pushes a cleanup.
class SpawningHandler : public TextHandler {
public:
    std::atomic<bool> background_running{false};
    std::vector<std::string> events() {
        std::lock_guard lock(mutex_);
        return events_;
    }
    Task<> background() {
        background_running = true;
        try {
            co_await unixgram::sleep(3600s);
        } catch (const Cancelled&) {
            record("background cancelled");
            throw;
        }
        record("background slept an hour");
    }
    Task<> service_init(ExitStack& stack, Server& server) override {
        stack.callback([this] { record("exit stack"); });
        server.spawn(background());
        co_return;
    }
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        co_await client.send_packet(request);
    }

private:
    void record(std::string event) {
        std::lock_guard lock(mutex_);
        events_.push_back(std::move(event));
    }
    std::mutex mutex_;
    std::vector<std::string> events_;
};

// DESIGN §2 / H15: Server::spawn from service_init; the task is cancelled at shutdown before the
// ExitStack unwinds.
TEST(LifecycleContract, H15_SpawnedBackgroundTaskIsCancelledBeforeTheExitStackUnwinds) {
    SpawningHandler handler;
    Text srv(handler);
    ASSERT_TRUE(wait_until([&] { return handler.background_running.load(); }));
    auto c = srv.client();
    EXPECT_EQ(ask(c, srv.address(), "serving"), "serving");
    EXPECT_THROW(srv.server().spawn(handler.background()), std::logic_error) << "spawn() off the loop thread";

    const auto t0 = std::chrono::steady_clock::now();
    srv.server().stop();
    EXPECT_LT(seconds_since(t0), 5.0);
    const std::vector<std::string> expected = {"background cancelled", "exit stack"};
    EXPECT_EQ(handler.events(), expected);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << srv.log().dump();
}

}  // namespace
}  // namespace unixgram::testing
