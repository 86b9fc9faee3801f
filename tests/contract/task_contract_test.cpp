// SPDX-License-Identifier: MIT
// Contract tests for the runtime's tasks: Task, TaskGroup, Server::spawn, ExitStack (H15), ContextVar (H16).
#include <gtest/gtest.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "contract/runtime.hpp"

namespace unixgram::testing {
namespace {

/// Sleeps until `*flag` is set, at most ~10 s (a guard, not a timing assumption).
Task<> wait_for(const bool* flag) {
    for (int i = 0; i < 10000 && !*flag; ++i) co_await sleep(1ms);
}

// ---- Task -------------------------------------------------------------------------------------------

Task<int> depth(int n) {
    if (n == 0) {
        co_await sleep(1ms);  // suspend at the bottom: the whole chain resumes through the loop
        co_return 0;
    }
    co_return 1 + co_await depth(n - 1);
}

Task<int> fail_at_bottom(int n) {
    if (n == 0) throw std::runtime_error("failed at the bottom of the chain");
    co_return co_await fail_at_bottom(n - 1);
}

Task<std::string> greet(std::string name) { co_return "hello " + name; }

class TaskChainHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        const std::string request = co_yield recv();
        std::string reply;
        if (request == "chain") {
            reply = "depth " + std::to_string(co_await depth(200)) + ", " + co_await greet("task");
        } else {
            try {
                reply = std::to_string(co_await fail_at_bottom(50));
            } catch (const std::runtime_error& e) {
                reply = std::string("caught: ") + e.what();
            }
        }
        co_await client.send_packet(reply);
    }
};

TEST(RuntimeContract, Task_ChainsReturnValuesThroughSuspensions) {
    TaskChainHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "chain");
    EXPECT_EQ(c.recv(), "depth 200, hello task");
}

TEST(RuntimeContract, Task_ExceptionsPropagateUpTheChain) {
    TaskChainHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "fail");
    EXPECT_EQ(c.recv(), "caught: failed at the bottom of the chain");
}

// ---- TaskGroup ------------------------------------------------------------------------------------

Task<> add(int* sum, int value) {
    co_await sleep(1ms);
    *sum += value;
}

Task<> set_flag(bool* flag, std::string* log) {
    co_await sleep(1ms);
    *flag = true;
    *log += "[set]";
}

/// Ends only once set_flag has run: the group's tasks must run concurrently.
Task<> wait_for_flag(const bool* flag, std::string* log) {
    co_await wait_for(flag);
    *log += *flag ? "[saw flag]" : "[gave up]";
}

Task<> sleep_until_cancelled(bool* started, std::string* log) {
    *started = true;
    try {
        co_await sleep(1h);
        *log += "[woke]";
    } catch (const Cancelled&) {
        *log += "[cancelled]";
        throw;
    }
}

Task<> throw_from_task() {
    co_await sleep(1ms);
    throw std::runtime_error("task failed on purpose");
}

class TaskGroupHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        const std::string request = co_yield recv();
        std::string reply;
        if (request == "join") {
            TaskGroup group;
            int sum = 0;
            bool flag = false;
            std::string log;
            group.spawn(wait_for_flag(&flag, &log));
            group.spawn(set_flag(&flag, &log));
            group.spawn(add(&sum, 40));
            group.spawn(add(&sum, 2));
            const std::size_t active = group.active();
            co_await group.join();
            reply = "active " + std::to_string(active) + " then " + std::to_string(group.active()) + ", sum " +
                    std::to_string(sum) + ", " + log;
        } else if (request == "cancel") {
            TaskGroup group;
            bool started = false;
            std::string log;
            group.spawn(sleep_until_cancelled(&started, &log));
            co_await wait_for(&started);
            group.cancel();
            co_await group.join();
            reply = log + " active " + std::to_string(group.active());
        } else if (request == "destroy") {
            bool started = false;
            std::string log;
            {
                TaskGroup group;
                group.spawn(sleep_until_cancelled(&started, &log));
                co_await wait_for(&started);
            }  // destroying the group cancels what is left
            for (int i = 0; i < 10000 && log.empty(); ++i) co_await sleep(1ms);
            reply = log;
        } else if (request == "empty") {
            TaskGroup group;
            co_await group.join();  // nothing to wait for
            reply = "joined an empty group";
        } else if (request == "throw") {
            TaskGroup group;
            group.spawn(throw_from_task());
            co_await group.join();
            reply = "joined";
        }
        co_await client.send_packet(reply);
    }
};

TEST(RuntimeContract, TaskGroup_SpawnedTasksRunConcurrentlyAndJoinWaitsForAll) {
    TaskGroupHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "join");
    EXPECT_EQ(c.recv(), "active 4 then 0, sum 42, [set][saw flag]");
}

TEST(RuntimeContract, TaskGroup_CancelThrowsCancelledIntoSuspendedTasks) {
    TaskGroupHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "cancel");
    EXPECT_EQ(c.recv(), "[cancelled] active 0");
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << srv.log().dump();
}

TEST(RuntimeContract, TaskGroup_DestroyingTheGroupCancelsItsTasks) {
    TaskGroupHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "destroy");
    EXPECT_EQ(c.recv(), "[cancelled]");
}

TEST(RuntimeContract, TaskGroup_JoiningAnEmptyGroupReturnsAtOnce) {
    TaskGroupHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "empty");
    EXPECT_EQ(c.recv(), "joined an empty group");
}

TEST(RuntimeContract, TaskGroup_AnExceptionEscapingATaskIsLoggedNotLost) {
    TaskGroupHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "throw");
    EXPECT_EQ(c.recv(), "joined");
    EXPECT_EQ(srv.log().count(spdlog::level::err, "task failed on purpose"), 1u) << srv.log().dump();
}

// ---- Server::spawn --------------------------------------------------------------------------------

/// service_init starts a background task that greets the first client to register, and one that
/// sleeps until shutdown. `events` is written on the loop thread, read by the test after stop().
class BackgroundHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::vector<std::string> events;

    Task<> service_init(ExitStack& stack, Server& server) override {
        stack.callback([this] {
            events.push_back("exit stack");
            registered_.reset();
        });
        server.spawn(greet_registered());
        server.spawn(sleep_until_shutdown());
        co_return;
    }
    Session<std::string> handle(TextClient& client) override {
        co_yield recv();
        co_await client.send_packet("registered");
        registered_.emplace(client);  // after the reply: the greeting can only come second
    }

private:
    Task<> greet_registered() {
        for (int i = 0; i < 10000 && !registered_; ++i) co_await sleep(1ms);
        if (!registered_) co_return;
        TextClient target = *registered_;
        events.push_back("greeting");  // before the co_await: a stop() may cancel the task right after the send
        co_await target.send_packet("hello from the background");
    }
    Task<> sleep_until_shutdown() {
        try {
            co_await sleep(1h);
        } catch (const Cancelled&) {
            events.push_back("background cancelled");
            throw;
        }
    }

    std::optional<TextClient> registered_;
};

TEST(RuntimeContract, Spawn_ABackgroundTaskFromServiceInitCanSendToAClientCopy) {
    BackgroundHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "register");
    EXPECT_EQ(c.recv(), "registered");
    EXPECT_EQ(c.recv(), "hello from the background");

    srv.server().stop();
    EXPECT_EQ(handler.events, (std::vector<std::string>{"greeting", "background cancelled", "exit stack"}))
        << "background tasks are cancelled before the ExitStack unwinds";
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << srv.log().dump();
}

/// Answers "now", and spawns a background task that answers "later" through its own Client copy.
class SpawnFromHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Task<> service_init(ExitStack&, Server& server) override {
        server_ = &server;
        co_return;
    }
    Session<std::string> handle(TextClient& client) override {
        co_yield recv();
        server_->spawn(answer_later(client));  // the copy lives in the task's frame
        co_await client.send_packet("now");
    }

private:
    static Task<> answer_later(TextClient target) {
        co_await sleep(1ms);  // the session that spawned it has ended by now or soon: the task goes on
        co_await target.send_packet("later");
    }
    Server* server_ = nullptr;
};

TEST(RuntimeContract, Spawn_FromAHandlerRunsBeyondTheSession) {
    SpawnFromHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "go");
    EXPECT_EQ(c.recv(), "now");
    EXPECT_EQ(c.recv(), "later");
    EXPECT_EQ(srv.server().stats().sessions_started, 1u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

// ---- ExitStack ------------------------------------------------------------------------------------

/// Pushes four cleanups, the third of which throws; holds a copy of the first client.
class CleanupHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::vector<std::string> events;  // loop thread during a run; the test reads it after stop()

    Task<> service_init(ExitStack& stack, Server&) override {
        stack.callback([this] { events.push_back("1"); });
        stack.push_async([this] { return async_cleanup(); });
        stack.callback([this] {
            events.push_back("3");
            throw std::runtime_error("cleanup 3 failed");
        });
        stack.callback([this] {
            events.push_back(held_ && held_->is_closing() ? "4: client closing" : "4: client not closing");
            if (!held_) return;
            try {
                (void)held_->send_packet("too late");
                events.push_back("4: send accepted");
            } catch (const ClientClosedError&) {
                events.push_back("4: send refused");
            }
            held_.reset();
        });
        co_return;
    }
    Session<std::string> handle(TextClient& client) override {
        co_yield recv();
        held_.emplace(client);
        co_await client.send_packet("held");
    }

private:
    Task<> async_cleanup() {
        co_await sleep(1ms);
        events.push_back("2 (async)");
    }
    std::optional<TextClient> held_;
};

TEST(RuntimeContract, H15_ExitStackRunsLifoAndEveryCallbackRunsEvenWhenOneThrows) {
    CleanupHandler handler;
    Text srv(handler);
    auto c = srv.client();
    c.send(srv.address(), "hold me");
    ASSERT_EQ(c.recv(), "held");

    srv.server().stop();

    EXPECT_EQ(handler.events, (std::vector<std::string>{"4: client closing", "4: send refused", "3", "2 (async)", "1"}));
    EXPECT_EQ(srv.log().count(spdlog::level::err, "cleanup 3 failed"), 1u) << srv.log().dump();
}

// ---- ContextVar -----------------------------------------------------------------------------------

ContextVar<std::string> request_id{"default"};

Task<std::string> read_request_id() { co_return request_id.get(); }

Task<> read_request_id_into(std::string* out) {
    co_await sleep(1ms);
    *out = request_id.get();
}

/// service_init sets "init". "get" answers the value; "set X" sets it and answers what a helper
/// task and a spawned task see; "set X and wait" sets it, then answers the value after a second
/// co_yield of the same session.
class ContextHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Task<> service_init(ExitStack&, Server&) override {
        co_await sleep(1ms);  // the runtime works in service_init too
        request_id.set("init");
    }
    Session<std::string> handle(TextClient& client) override {
        const std::string request = co_yield recv();
        std::string reply;
        if (request == "get") {
            reply = request_id.get();
        } else if (request.rfind("set ", 0) == 0 && !contains(request, " and wait")) {
            request_id.set(request.substr(4));
            std::string in_task;
            TaskGroup group;
            group.spawn(read_request_id_into(&in_task));
            co_await group.join();
            reply = "helper " + co_await read_request_id() + ", spawned task " + in_task;
        } else if (request.rfind("set ", 0) == 0) {
            request_id.set(request.substr(4, request.size() - 4 - std::string(" and wait").size()));
            co_await client.send_packet("set");
            co_yield recv({.timeout = 30s, .ancillary = nullptr});
            reply = "after the second yield " + request_id.get();
        }
        co_await client.send_packet(reply);
    }
};

TEST(RuntimeContract, H16_ContextVarSetInServiceInitIsEverySessionsDefault) {
    ContextHandler handler;
    Text srv(handler);
    auto a = srv.client();
    auto b = srv.client();

    a.send(srv.address(), "get");
    EXPECT_EQ(a.recv(), "init");
    b.send(srv.address(), "get");
    EXPECT_EQ(b.recv(), "init");
}

TEST(RuntimeContract, H16_ContextVarSetInASessionIsSeenByItsTasksOnly) {
    ContextHandler handler;
    Text srv(handler);
    auto a = srv.client();
    auto b = srv.client();

    a.send(srv.address(), "set A");
    EXPECT_EQ(a.recv(), "helper A, spawned task A");
    a.send(srv.address(), "get");
    EXPECT_EQ(a.recv(), "init") << "the same client's next session starts from the default again";
    b.send(srv.address(), "get");
    EXPECT_EQ(b.recv(), "init");
}

TEST(RuntimeContract, H16_ContextVarIsolatesConcurrentSessions) {
    ContextHandler handler;
    Text srv(handler);
    auto a = srv.client();
    auto b = srv.client();

    a.send(srv.address(), "set A and wait");
    ASSERT_EQ(a.recv(), "set");
    b.send(srv.address(), "get");  // while a's session, which set A, waits at its second yield
    EXPECT_EQ(b.recv(), "init");
    a.send(srv.address(), "again");
    EXPECT_EQ(a.recv(), "after the second yield A");
}

TEST(RuntimeContract, H16_ContextVarOutsideTheLoopIsTheDefault) {
    ContextHandler handler;
    Text srv(handler);
    auto a = srv.client();
    a.send(srv.address(), "get");
    ASSERT_EQ(a.recv(), "init");  // service_init has set it on the loop

    EXPECT_EQ(request_id.get(), "default");
}

// ---- off the loop thread --------------------------------------------------------------------------

TEST(RuntimeContract, OffTheLoop_ContextVarSetThrowsLogicErrorSayingSo) {
    ContextHandler handler;
    Text srv(handler);  // a server's loop exists, on another thread

    try {
        request_id.set("from the test thread");
        ADD_FAILURE() << "ContextVar::set() off the loop did not throw";
    } catch (const std::logic_error& e) {
        EXPECT_TRUE(contains(e.what(), "ContextVar::set()") && contains(e.what(), "loop")) << e.what();
    }
    EXPECT_EQ(request_id.get(), "default");
}

TEST(RuntimeContract, OffTheLoop_SpawnThrowsLogicError) {
    ContextHandler handler;
    Text srv(handler);

    EXPECT_THROW(srv.server().spawn(nothing()), std::logic_error);
    TaskGroup group;
    EXPECT_THROW(group.spawn(nothing()), std::logic_error);
}

}  // namespace
}  // namespace unixgram::testing
