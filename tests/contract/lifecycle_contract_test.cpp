// SPDX-License-Identifier: MIT
// Contract tests for the server lifecycle: spec §1.2 and rules H15, H16, H19, H26 (real sockets).
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
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "contract/harness.hpp"

namespace unixgram::testing {
namespace {

using TextUnixServer = UnixDatagramServer<std::string, std::string, TextProtocol>;
using Text = RunningServer<std::string, std::string, TextProtocol>;
using TextHandler = DatagramRequestHandler<std::string, std::string>;

/// A text server that is constructed but not started, logging into a CaptureSink; closed (which
/// stops it first) on destruction. The tests drive its lifecycle themselves.
class IdleServer {
public:
    explicit IdleServer(TextHandler& handler, std::optional<UnixAddress> address = std::nullopt,
                        ServerOptions options = {}) {
        auto [log, sink] = capturing_logger();
        sink_ = sink;
        options.logger = log;
        path_ = dir_.file("server.sock");
        server_ = std::make_unique<TextUnixServer>(address ? *address : UnixAddress::pathname(path_), TextProtocol{},
                                                   handler, options);
    }
    ~IdleServer() { server_->close(); }

    TextUnixServer& server() { return *server_; }
    /// The pathname the server binds when no address was given.
    const std::string& path() const { return path_; }
    CaptureSink& log() { return *sink_; }
    /// A client bound to a fresh pathname in this server's temp dir.
    RawClient client() {
        return RawClient(UnixAddress::pathname(dir_.file("c" + std::to_string(++clients_) + ".sock")));
    }

private:
    TempDir dir_;
    std::string path_;
    int clients_ = 0;
    std::shared_ptr<CaptureSink> sink_;
    std::unique_ptr<TextUnixServer> server_;
};

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

std::optional<std::string> ask(RawClient& client, const UnixAddress& to, std::string_view request) {
    client.send(to, request);
    return client.recv();
}

bool is_socket_file(const std::string& path) {
    struct stat st;
    return ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

std::string unique_abstract_name() {
    std::random_device rd;
    return "unixgram-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()) + std::to_string(rd());
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
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
