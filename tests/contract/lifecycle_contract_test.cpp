// SPDX-License-Identifier: MIT
// Contract tests for the server lifecycle: spec §1.2 and §5 (serve, shut down, close, addresses, log lines).
#include <cxxabi.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <exception>
#include <latch>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "contract/lifecycle.hpp"

namespace unixgram::testing {
namespace {

/// Runs `server.serve_forever()` on a std::thread and records how it ended. The destructor shuts
/// the server down and joins, so a failing test never leaves the thread behind.
class ServeThread {
public:
    explicit ServeThread(Server& server) : server_(server), thread_([this] {
        try {
            server_.serve_forever();
        } catch (...) {
            error_ = std::current_exception();
        }
        done_ = true;
    }) {}
    ~ServeThread() {
        if (thread_.joinable()) {
            server_.shutdown();
            thread_.join();
        }
    }
    void join() { thread_.join(); }
    bool done() const { return done_.load(); }
    /// What serve_forever() threw (null when it returned normally); read after join().
    std::exception_ptr error() const { return error_; }

private:
    Server& server_;
    std::exception_ptr error_;
    std::atomic<bool> done_{false};
    std::thread thread_;
};

/// "returned normally", or "threw <type>: <what>", for comparing how a run ended.
std::string outcome(std::exception_ptr e) {
    if (!e) return "returned normally";
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& ex) {
        int status = 0;
        char* name = abi::__cxa_demangle(typeid(ex).name(), nullptr, nullptr, &status);
        std::string out = std::string("threw ") + (status == 0 ? name : typeid(ex).name()) + ": " + ex.what();
        std::free(name);
        return out;
    } catch (...) {
        return "threw a non-std exception";
    }
}

std::string unique_abstract_name() {
    std::random_device rd;
    return "unixgram-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()) + std::to_string(rd());
}

/// The index of the first INFO record equal to `text`, or -1.
long info_index(CaptureSink& log, const std::string& text) {
    auto records = log.records();
    for (std::size_t i = 0; i < records.size(); ++i)
        if (records[i].level == spdlog::level::info && records[i].text == text) return static_cast<long>(i);
    return -1;
}

/// Echoes each request; counts service_init runs.
class Echo : public TextHandler {
public:
    std::atomic<int> init_calls{0};
    Task<> service_init(ExitStack&, Server&) override {
        ++init_calls;
        co_return;
    }
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        co_await client.send_packet(request);
    }
};

// ---- §1.2 serve_forever / start / stop ------------------------------------------------------------

// Spec §1.2: serve_forever() blocks the calling thread until shutdown(), then returns normally.
TEST(LifecycleContract, ServeForeverBlocksUntilShutdownThenReturnsNormally) {
    Echo handler;
    IdleServer srv(handler);
    ServeThread serving(srv.server());
    ASSERT_TRUE(wait_until([&] { return srv.server().is_serving(); })) << srv.log().dump();

    auto c = srv.client();
    EXPECT_EQ(ask(c, srv.server().address(), "ping"), "ping");
    EXPECT_FALSE(serving.done()) << "serve_forever() must block while serving";

    srv.server().shutdown();
    serving.join();
    EXPECT_TRUE(serving.done());
    EXPECT_EQ(outcome(serving.error()), "returned normally");
    EXPECT_FALSE(srv.server().is_serving());
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

// Spec §1.2 (SUD): start() returns once the server reads datagrams; stop() ends the run.
TEST(LifecycleContract, StartReturnsWhenServingAndStopEndsTheRun) {
    Echo handler;
    IdleServer srv(handler);
    srv.server().start();
    EXPECT_TRUE(srv.server().is_serving());
    auto c = srv.client();
    EXPECT_EQ(ask(c, srv.server().address(), "hello"), "hello");

    srv.server().stop();
    EXPECT_FALSE(srv.server().is_serving());
    EXPECT_TRUE(srv.server().is_listening());
    EXPECT_EQ(handler.init_calls.load(), 1);
}

// Spec §1.2 step 1: a second run while one is active → ServerAlreadyRunning; the first run goes on.
TEST(LifecycleContract, ServeForeverOrStartWhileRunningThrowsServerAlreadyRunning) {
    Echo handler;
    IdleServer srv(handler);
    srv.server().start();

    EXPECT_THROW(srv.server().serve_forever(), ServerAlreadyRunning);
    EXPECT_THROW(srv.server().start(), ServerAlreadyRunning);

    auto c = srv.client();
    EXPECT_TRUE(srv.server().is_serving());
    EXPECT_EQ(ask(c, srv.server().address(), "still here"), "still here");
    EXPECT_EQ(handler.init_calls.load(), 1);
}

// Spec §1.2 step 1, with the active run being a blocking serve_forever() on another thread.
TEST(LifecycleContract, SecondServeForeverWhileServeForeverRunsThrowsServerAlreadyRunning) {
    Echo handler;
    IdleServer srv(handler);
    ServeThread serving(srv.server());
    ASSERT_TRUE(wait_until([&] { return srv.server().is_serving(); }));

    try {
        srv.server().serve_forever();
        ADD_FAILURE() << "serve_forever() ran twice at once";
    } catch (const ServerAlreadyRunning& e) {
        EXPECT_STREQ(e.what(), "Server is already running");
    }
    EXPECT_FALSE(serving.done());
}

// Spec §1.2 (server_close step 2): after close(), serve_forever, start and activate → ServerClosedError.
TEST(LifecycleContract, AfterCloseEveryEntryPointThrowsServerClosedError) {
    Echo never_started_handler;
    IdleServer never_started(never_started_handler);
    never_started.server().close();
    EXPECT_THROW(never_started.server().serve_forever(), ServerClosedError);
    EXPECT_THROW(never_started.server().start(), ServerClosedError);
    EXPECT_THROW(never_started.server().activate(), ServerClosedError);
    EXPECT_FALSE(std::filesystem::exists(never_started.path())) << "a closed server must not bind";

    Echo was_serving_handler;
    IdleServer was_serving(was_serving_handler);
    was_serving.server().start();
    was_serving.server().close();
    EXPECT_THROW(was_serving.server().serve_forever(), ServerClosedError);
    EXPECT_THROW(was_serving.server().start(), ServerClosedError);
    EXPECT_THROW(was_serving.server().activate(), ServerClosedError);
    EXPECT_FALSE(std::filesystem::exists(was_serving.path()));
    EXPECT_EQ(was_serving_handler.init_calls.load(), 1);
}

// Spec §1.2: serve_forever returns normally after server_close() too.
TEST(LifecycleContract, CloseFromAnotherThreadEndsServeForeverNormally) {
    Echo handler;
    IdleServer srv(handler);
    ServeThread serving(srv.server());
    ASSERT_TRUE(wait_until([&] { return srv.server().is_serving(); }));

    srv.server().close();
    serving.join();
    EXPECT_EQ(outcome(serving.error()), "returned normally");
    EXPECT_FALSE(srv.server().is_listening());
    EXPECT_FALSE(std::filesystem::exists(srv.path()));
}

// Spec §1.2: server_close() is idempotent.
TEST(LifecycleContract, CloseIsIdempotent) {
    Echo handler;
    IdleServer srv(handler);
    srv.server().start();
    ASSERT_TRUE(is_socket_file(srv.path()));

    for (int i = 0; i < 3; ++i) {
        srv.server().close();
        EXPECT_FALSE(srv.server().is_listening()) << "after close() #" << i + 1;
        EXPECT_FALSE(srv.server().is_serving()) << "after close() #" << i + 1;
        EXPECT_FALSE(std::filesystem::exists(srv.path())) << "after close() #" << i + 1;
    }
    EXPECT_EQ(srv.log().count(spdlog::level::info, "Server stopped"), 1u) << srv.log().dump();
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

// Spec §1.2: shutdown() with nothing running returns at once and leaves the socket alone.
TEST(LifecycleContract, ShutdownWithNothingRunningReturnsAtOnce) {
    Echo handler;
    IdleServer srv(handler);
    srv.server().shutdown();  // never activated
    EXPECT_FALSE(srv.server().is_listening());

    srv.server().activate();
    srv.server().shutdown();  // bound, not serving
    EXPECT_TRUE(srv.server().is_listening());
    EXPECT_TRUE(is_socket_file(srv.path()));

    srv.server().start();
    srv.server().stop();
    srv.server().shutdown();  // after a finished run
    EXPECT_TRUE(srv.server().is_listening());
    EXPECT_EQ(handler.init_calls.load(), 1);
}

void shutdown_from_ten_threads(Server& server) {
    constexpr int kThreads = 10;
    std::atomic<int> returned{0};
    std::latch go(kThreads);
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
        threads.emplace_back([&] {
            go.arrive_and_wait();
            server.shutdown();
            ++returned;
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(returned.load(), kThreads);
}

// Spec §1.2 (T test____serve_forever____concurrent_shutdown): 10 concurrent shutdown() calls all return.
TEST(LifecycleContract, TenConcurrentShutdownsAllReturnWhileServing) {
    Echo handler;
    IdleServer srv(handler);
    srv.server().start();

    shutdown_from_ten_threads(srv.server());
    EXPECT_FALSE(srv.server().is_serving());
    EXPECT_TRUE(srv.server().is_listening());
    EXPECT_EQ(srv.log().count(spdlog::level::info, "Server stopped"), 1u) << srv.log().dump();
    srv.server().stop();  // joins start()'s thread
}

TEST(LifecycleContract, TenConcurrentShutdownsAllReturnWhenNotStarted) {
    Echo handler;
    IdleServer srv(handler);
    shutdown_from_ten_threads(srv.server());
    srv.server().activate();
    shutdown_from_ten_threads(srv.server());
    EXPECT_TRUE(srv.server().is_listening());
    EXPECT_EQ(handler.init_calls.load(), 0);
}

/// service_init sleeps 10 s; records whether the sleep was cancelled.
class SlowInit : public TextHandler {
public:
    std::atomic<bool> init_entered{false};
    std::atomic<bool> init_cancelled{false};
    std::atomic<int> handled{0};
    std::atomic<int> cleanups{0};
    Task<> service_init(ExitStack& stack, Server&) override {
        stack.callback([this] { ++cleanups; });
        init_entered = true;
        try {
            co_await unixgram::sleep(10s);
        } catch (const Cancelled&) {
            init_cancelled = true;
            throw;
        }
    }
    Session<std::string> handle(Client<std::string>& client) override {
        ++handled;
        std::string request = co_yield recv();
        co_await client.send_packet(request);
    }
};

// Spec §1.2: shutdown() cancels the run scope, service_init included; serving never starts, and
// serve_forever() returns normally.
TEST(LifecycleContract, ShutdownDuringServiceInitCancelsItAndServingNeverStarts) {
    SlowInit handler;
    IdleServer srv(handler);
    srv.server().activate();
    auto c = srv.client();
    c.send(srv.server().address(), "early");  // waits in the kernel queue

    ServeThread serving(srv.server());
    ASSERT_TRUE(wait_until([&] { return handler.init_entered.load(); }));
    const auto t0 = std::chrono::steady_clock::now();
    srv.server().shutdown();
    const double took = seconds_since(t0);
    serving.join();

    EXPECT_LT(took, 5.0) << "shutdown() must cancel service_init's sleep, not wait it out";
    EXPECT_TRUE(handler.init_cancelled.load());
    EXPECT_EQ(handler.cleanups.load(), 1) << "what service_init pushed before the shutdown still runs";
    EXPECT_EQ(outcome(serving.error()), "returned normally") << "serve_forever() after shutdown()";
    EXPECT_EQ(handler.handled.load(), 0);
    EXPECT_EQ(srv.server().stats().datagrams_received, 0u);
    EXPECT_EQ(c.recv(0ms), std::nullopt);
    EXPECT_EQ(srv.log().count(spdlog::level::info, "Start serving at"), 0u) << srv.log().dump();
    EXPECT_FALSE(srv.server().is_serving());
    EXPECT_TRUE(srv.server().is_listening());
}

// Spec §1.2 (shutdown): the socket stays bound and the file stays; serving again runs service_init again.
TEST(LifecycleContract, ShutdownLeavesTheSocketBoundAndTheServerCanServeAgain) {
    Echo handler;
    IdleServer srv(handler);
    srv.server().start();
    const UnixAddress address = srv.server().address();
    struct stat before;
    ASSERT_EQ(::stat(srv.path().c_str(), &before), 0);
    auto c = srv.client();
    EXPECT_EQ(ask(c, address, "run 1"), "run 1");

    srv.server().stop();
    EXPECT_TRUE(srv.server().is_listening());
    EXPECT_FALSE(srv.server().is_serving());
    struct stat after;
    ASSERT_EQ(::stat(srv.path().c_str(), &after), 0) << "shutdown() must leave the socket file";
    EXPECT_EQ(after.st_ino, before.st_ino);
    EXPECT_EQ(srv.server().address(), address);

    srv.server().start();
    EXPECT_EQ(handler.init_calls.load(), 2);
    EXPECT_EQ(ask(c, address, "run 2"), "run 2");

    // And a third time through serve_forever().
    srv.server().stop();
    {
        ServeThread serving(srv.server());
        ASSERT_TRUE(wait_until([&] { return srv.server().is_serving(); }));
        EXPECT_EQ(ask(c, address, "run 3"), "run 3");
        srv.server().shutdown();
        serving.join();
        EXPECT_EQ(outcome(serving.error()), "returned normally");
    }
    EXPECT_EQ(handler.init_calls.load(), 3);
    EXPECT_EQ(srv.log().count(spdlog::level::info, "Server stopped"), 3u) << srv.log().dump();
}

// Spec §1.2: is_listening() = bound and not closed; is_serving() = reading and listening.
TEST(LifecycleContract, IsServingAndIsListeningFollowTheLifecycle) {
    Echo handler;
    IdleServer srv(handler);
    EXPECT_FALSE(srv.server().is_listening()) << "before activate";
    EXPECT_FALSE(srv.server().is_serving()) << "before activate";
    EXPECT_TRUE(srv.server().address().is_unnamed()) << "before activate";
    EXPECT_FALSE(std::filesystem::exists(srv.path())) << "the constructor must not bind";

    srv.server().activate();
    srv.server().activate();  // idempotent
    EXPECT_TRUE(srv.server().is_listening()) << "after activate";
    EXPECT_FALSE(srv.server().is_serving()) << "after activate";
    EXPECT_EQ(srv.server().address(), UnixAddress::pathname(srv.path()));

    srv.server().start();
    EXPECT_TRUE(srv.server().is_listening()) << "while serving";
    EXPECT_TRUE(srv.server().is_serving()) << "while serving";

    srv.server().stop();
    EXPECT_TRUE(srv.server().is_listening()) << "after shutdown";
    EXPECT_FALSE(srv.server().is_serving()) << "after shutdown";

    srv.server().close();
    EXPECT_FALSE(srv.server().is_listening()) << "after close";
    EXPECT_FALSE(srv.server().is_serving()) << "after close";
    EXPECT_TRUE(srv.server().address().is_unnamed()) << "after close";
}

// Spec §1.2 (get_addresses): the bound address, for a pathname.
TEST(LifecycleContract, AddressOfAPathnameServerIsItsPath) {
    Echo handler;
    IdleServer srv(handler);
    srv.server().start();
    EXPECT_EQ(srv.server().address(), UnixAddress::pathname(srv.path()));
    EXPECT_EQ(srv.server().address().to_string(), srv.path());
    EXPECT_GE(info_index(srv.log(), "Start serving at " + srv.path()), 0) << srv.log().dump();
}

// Spec §1.2 (get_addresses) and §1.3: an abstract address is reported as "@name" and serves.
TEST(LifecycleContract, AddressOfAnAbstractServerIsItsName) {
    Echo handler;
    const std::string name = unique_abstract_name();
    IdleServer srv(handler, UnixAddress::abstract(name));
    srv.server().start();
    EXPECT_EQ(srv.server().address(), UnixAddress::abstract(name));
    EXPECT_TRUE(srv.server().address().is_abstract());
    EXPECT_EQ(srv.server().address().to_string(), "@" + name);
    auto c = srv.client();
    EXPECT_EQ(ask(c, UnixAddress::abstract(name), "to abstract"), "to abstract");
    EXPECT_GE(info_index(srv.log(), "Start serving at @" + name), 0) << srv.log().dump();
}

// Spec §1.2/§5 ("e.g. @eb5cd"): autobind gets a kernel-chosen abstract name of 5 hex digits.
TEST(LifecycleContract, AddressOfAnAutobindServerIsFiveHexDigits) {
    Echo handler;
    IdleServer srv(handler, UnixAddress::autobind());
    srv.server().start();
    const UnixAddress address = srv.server().address();
    ASSERT_TRUE(address.is_abstract()) << address.to_string();
    const std::string name(address.name());
    EXPECT_EQ(name.size(), 5u) << address.to_string();
    const auto hex = [](char ch) { return std::isxdigit(static_cast<unsigned char>(ch)) != 0; };
    EXPECT_TRUE(std::all_of(name.begin(), name.end(), hex)) << address.to_string();
    EXPECT_EQ(address.to_string(), "@" + name);
    auto c = srv.client();
    EXPECT_EQ(ask(c, address, "to autobind"), "to autobind");
    EXPECT_GE(info_index(srv.log(), "Start serving at @" + name), 0) << srv.log().dump();
}

// Spec §5: INFO "Start serving at <addr>", then at teardown "Server loop break, waiting for
// remaining tasks..." and "Server stopped", in that order, once per run.
TEST(LifecycleContract, LogsStartServingLoopBreakAndStopped) {
    Echo handler;
    IdleServer srv(handler);
    srv.server().start();
    srv.server().stop();

    const long start = info_index(srv.log(), "Start serving at " + srv.path());
    const long loop_break = info_index(srv.log(), "Server loop break, waiting for remaining tasks...");
    const long stopped = info_index(srv.log(), "Server stopped");
    EXPECT_GE(start, 0) << srv.log().dump();
    EXPECT_GT(loop_break, start) << srv.log().dump();
    EXPECT_GT(stopped, loop_break) << srv.log().dump();
    EXPECT_EQ(srv.log().count(spdlog::level::info, "Start serving at"), 1u) << srv.log().dump();
    EXPECT_EQ(srv.log().count(spdlog::level::info, "Server loop break"), 1u) << srv.log().dump();
    EXPECT_EQ(srv.log().count(spdlog::level::info, "Server stopped"), 1u) << srv.log().dump();
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

}  // namespace
}  // namespace unixgram::testing
