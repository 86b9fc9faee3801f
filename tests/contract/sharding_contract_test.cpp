// SPDX-License-Identifier: MIT
// Contract tests for ServerOptions::shards: per-client order, one owner shard per client, shutdown and spawn on every shard.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <semaphore>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "contract/harness.hpp"

#if defined(__SANITIZE_THREAD__)
#define UNIXGRAM_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNIXGRAM_TEST_TSAN 1
#endif
#endif

namespace unixgram::testing {
namespace {

using Text = RunningServer<std::string, std::string, TextProtocol>;
using TextClient = Client<std::string>;
using ThreadId = std::thread::id;

#ifdef UNIXGRAM_TEST_TSAN
constexpr bool kTsan = true;
#else
constexpr bool kTsan = false;
#endif
// ThreadSanitizer slows everything several times: fewer datagrams, longer guards (failure guards, never waited out).
constexpr int kEchoDatagramsPerClient = kTsan ? 2000 : 5000;
constexpr std::chrono::milliseconds kGuard = kTsan ? 30000ms : 10000ms;

ServerOptions shards(unsigned n) {
    ServerOptions o;
    o.shards = n;
    return o;
}

std::vector<RawClient> make_clients(Text& srv, int n) {
    std::vector<RawClient> clients;
    clients.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) clients.push_back(srv.client());
    return clients;
}

/// The thread ids handlers ran on, per client address; written on the shards, read by the test.
class ThreadLog {
public:
    void record(const std::string& client) {
        std::lock_guard lock(mutex_);
        by_client_[client].insert(std::this_thread::get_id());
    }
    std::map<std::string, std::set<ThreadId>> by_client() const {
        std::lock_guard lock(mutex_);
        return by_client_;
    }
    std::set<ThreadId> all() const {
        std::lock_guard lock(mutex_);
        std::set<ThreadId> ids;
        for (auto& [_, s] : by_client_) ids.insert(s.begin(), s.end());
        return ids;
    }

private:
    mutable std::mutex mutex_;
    std::map<std::string, std::set<ThreadId>> by_client_;
};

/// Stops the server from this thread; a stop() that does not return within the guard ends the
/// test binary with a message instead of hanging until meson's timeout.
void stop_within_guard(Server& server, const char* what) {
    std::atomic<bool> done{false};
    std::thread guard([&] {
        if (!wait_until([&] { return done.load(); }, 3 * kGuard)) {
            std::fprintf(stderr, "FATAL: server.stop() did not return within %lld ms (%s)\n",
                         static_cast<long long>((3 * kGuard).count()), what);
            std::abort();
        }
    });
    server.stop();
    done = true;
    guard.join();
}

// ---- per-client order across shards ----------------------------------------------------------------

/// Echoes every datagram of its client in one long session (H14), recording the thread it runs on.
class EchoHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    ThreadLog threads;
    Session<std::string> handle(TextClient& client) override {
        threads.record(client.peer_name().to_string());  // once per session, not per datagram
        for (;;) {
            std::string datagram = co_yield recv();
            co_await client.send_packet(datagram);
        }
    }
};

std::string payload(int client, int seq) { return "client " + std::to_string(client) + " seq " + std::to_string(seq); }

/// Drives `clients[first, first + count)` with at most kWindow datagrams in flight each: a client's
/// queue (net.unix.max_dgram_qlen, 10 here) never holds more than kWindow replies, so no reply is
/// refused for long. Returns the failures; stops at the first one.
std::vector<std::string> drive_window(std::vector<RawClient>& clients, int first, int count, const UnixAddress& server,
                                      int per_client) {
    constexpr int kWindow = 8;
    struct State {
        int sent = 0;
        int received = 0;
        std::chrono::steady_clock::time_point last_progress = std::chrono::steady_clock::now();
    };
    std::vector<State> st(static_cast<std::size_t>(count));
    std::vector<pollfd> fds;
    for (int i = 0; i < count; ++i) {
        const int fd = clients[static_cast<std::size_t>(first + i)].fd();
        timeval tv{static_cast<time_t>(kGuard.count() / 1000), 0};  // a blocked send fails instead of hanging
        ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        fds.push_back({fd, POLLIN, 0});
    }
    std::string buf(70000, '\0');
    int done = 0;
    while (done < count) {
        for (int i = 0; i < count; ++i) {
            State& s = st[static_cast<std::size_t>(i)];
            while (s.sent < per_client && s.sent - s.received < kWindow) {
                const std::string p = payload(first + i, s.sent);
                if (::sendto(fds[static_cast<std::size_t>(i)].fd, p.data(), p.size(), 0, server.data(), server.length()) !=
                    static_cast<ssize_t>(p.size()))
                    return {"client " + std::to_string(first + i) + ": send of seq " + std::to_string(s.sent) +
                            " failed: " + std::strerror(errno)};
                if (s.sent == s.received) s.last_progress = std::chrono::steady_clock::now();
                ++s.sent;
            }
        }
        ::poll(fds.data(), fds.size(), 100);
        const auto now = std::chrono::steady_clock::now();
        for (int i = 0; i < count; ++i) {
            State& s = st[static_cast<std::size_t>(i)];
            if (fds[static_cast<std::size_t>(i)].revents & POLLIN) {
                for (;;) {
                    const ssize_t n = ::recv(fds[static_cast<std::size_t>(i)].fd, buf.data(), buf.size(), MSG_DONTWAIT);
                    if (n < 0) break;
                    const std::string got(buf.data(), static_cast<std::size_t>(n));
                    const std::string want = payload(first + i, s.received);
                    if (s.received >= per_client || got != want)
                        return {"client " + std::to_string(first + i) + ": expected reply to seq " +
                                std::to_string(s.received) + ", got '" + got + "'"};
                    if (++s.received == per_client) ++done;
                    s.last_progress = now;
                }
            }
            if (s.received < s.sent && now - s.last_progress > kGuard)
                return {"client " + std::to_string(first + i) + ": no reply to seq " + std::to_string(s.received) +
                        " within " + std::to_string(kGuard.count()) + " ms (" + std::to_string(s.sent) + " sent)"};
        }
    }
    return {};
}

TEST(ShardingContract, FourShards_EveryReplyArrivesInPerClientOrder) {
    constexpr int kClients = 64;
    constexpr int kThreads = 4;
    const int per_client = kEchoDatagramsPerClient;
    EchoHandler handler;
    Text srv(handler, {}, shards(4));
    auto clients = make_clients(srv, kClients);
    const UnixAddress address = srv.address();

    std::vector<std::vector<std::string>> failures(kThreads);
    std::vector<std::thread> drivers;
    for (int t = 0; t < kThreads; ++t)
        drivers.emplace_back([&, t] {
            failures[static_cast<std::size_t>(t)] =
                drive_window(clients, t * (kClients / kThreads), kClients / kThreads, address, per_client);
        });
    for (auto& d : drivers) d.join();
    for (auto& f : failures)
        for (auto& msg : f) ADD_FAILURE() << msg;
    if (::testing::Test::HasFailure()) return;

    stop_within_guard(srv.server(), "echo sessions");  // every reply the server sent is now queued at its client
    for (int i = 0; i < kClients; ++i)
        EXPECT_EQ(clients[static_cast<std::size_t>(i)].recv(0ms), std::nullopt) << "client " << i << ": an extra reply";

    const ServerStats s = srv.server().stats();
    const auto total = static_cast<std::uint64_t>(kClients) * static_cast<std::uint64_t>(per_client);
    EXPECT_EQ(s.datagrams_received, total);
    EXPECT_EQ(s.datagrams_sent, total);
    EXPECT_EQ(s.dropped_total(), 0u);
    EXPECT_EQ(s.send_errors, 0u);
    EXPECT_EQ(s.send_timeouts, 0u);
    EXPECT_EQ(s.handler_errors, 0u);
    // One session per client: each is created on its owner shard and lives until shutdown.
    EXPECT_EQ(s.sessions_started, static_cast<std::uint64_t>(kClients));
    EXPECT_EQ(handler.threads.all().size(), 4u) << "64 clients' sessions must have run on all 4 shards";
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << srv.log().dump();
}

// ---- one owner shard per client ---------------------------------------------------------------------

/// Answers each datagram and ends its session, so every datagram starts a new one (H12: a queued
/// datagram goes to the next session, on the client's owner shard).
class OneShotHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    ThreadLog threads;
    Session<std::string> handle(TextClient& client) override {
        std::string request = co_yield recv();
        threads.record(client.peer_name().to_string());
        co_await client.send_packet(request);
    }
};

/// Ping-pong: each of `clients` sends `rounds` datagrams, each after the previous reply.
void ping_pong(std::vector<RawClient>& clients, const UnixAddress& server, int rounds) {
    for (int r = 0; r < rounds; ++r) {
        for (std::size_t i = 0; i < clients.size(); ++i) clients[i].send(server, payload(static_cast<int>(i), r));
        for (std::size_t i = 0; i < clients.size(); ++i)
            ASSERT_EQ(clients[i].recv(kGuard), payload(static_cast<int>(i), r)) << "client " << i << ", round " << r;
    }
}

TEST(ShardingContract, FourShards_SessionsOfOneClientStayOnOneShard) {
    constexpr int kClients = 64;
    constexpr int kRounds = 50;
    OneShotHandler handler;
    Text srv(handler, {}, shards(4));
    auto clients = make_clients(srv, kClients);

    ping_pong(clients, srv.address(), kRounds);
    if (::testing::Test::HasFatalFailure()) return;
    stop_within_guard(srv.server(), "one-shot sessions");

    const auto by_client = handler.threads.by_client();
    EXPECT_EQ(by_client.size(), static_cast<std::size_t>(kClients));
    for (auto& [client, ids] : by_client)
        EXPECT_EQ(ids.size(), 1u) << client << ": its sessions ran on " << ids.size() << " threads";
    const auto all = handler.threads.all();
    // 64 random socket paths over 4 shards: the chance that one shard gets none is 4 * (3/4)^64 ≈ 4e-8.
    EXPECT_EQ(all.size(), 4u) << "64 clients must spread over all 4 shards";
    EXPECT_EQ(all.count(std::this_thread::get_id()), 0u) << "sessions run on the server's threads, not the caller's";
    EXPECT_EQ(srv.server().stats().sessions_started, static_cast<std::uint64_t>(kClients * kRounds));
}

TEST(ShardingContract, ShardsOne_IsTheDefaultAndUsesOneThread) {
    EXPECT_EQ(ServerOptions{}.shards, 1u);
    OneShotHandler handler;
    Text srv(handler);
    auto clients = make_clients(srv, 16);

    ping_pong(clients, srv.address(), 5);
    if (::testing::Test::HasFatalFailure()) return;
    stop_within_guard(srv.server(), "default options");

    const auto all = handler.threads.all();
    EXPECT_EQ(all.size(), 1u) << "with the default options every session runs on one thread";
    EXPECT_EQ(all.count(std::this_thread::get_id()), 0u);
    EXPECT_EQ(handler.threads.by_client().size(), 16u);
}

// ---- shutdown ---------------------------------------------------------------------------------------

/// Holds every session at its second co_yield until shutdown throws Cancelled into it (H11).
class HoldUntilShutdownHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    ThreadLog threads;
    std::atomic<int> waiting{0};
    std::atomic<int> cancelled{0};
    std::atomic<int> woke{0};
    Session<std::string> handle(TextClient& client) override {
        co_yield recv();
        threads.record(client.peer_name().to_string());
        ++waiting;
        try {
            co_yield recv({.timeout = 1h});
            ++woke;
        } catch (const Cancelled&) {
            ++cancelled;
            throw;
        }
    }
};

TEST(ShardingContract, FourShards_ShutdownCancelsSessionsOnEveryShard) {
    constexpr int kClients = 64;
    HoldUntilShutdownHandler handler;
    Text srv(handler, {}, shards(4));
    auto clients = make_clients(srv, kClients);
    for (int i = 0; i < kClients; ++i) clients[static_cast<std::size_t>(i)].send(srv.address(), "hold");

    ASSERT_TRUE(wait_until([&] { return handler.waiting.load() == kClients; }, kGuard))
        << handler.waiting.load() << " of " << kClients << " sessions started";
    ASSERT_EQ(handler.threads.all().size(), 4u) << "64 clients' sessions must be held on all 4 shards";

    stop_within_guard(srv.server(), "64 sessions held on 4 shards");

    EXPECT_EQ(handler.cancelled.load(), kClients) << "every shard's sessions get Cancelled";
    EXPECT_EQ(handler.woke.load(), 0);
    EXPECT_EQ(srv.server().stats().handler_errors, 0u);
    EXPECT_FALSE(srv.server().is_serving());
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << "Cancelled is not an error\n" << srv.log().dump();
}

// ---- service_init and spawn ------------------------------------------------------------------------

/// Counts service_init runs (H15: once per serve_forever run, whatever the number of shards) and
/// notes whether any session started before it had finished.
class InitCountingHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<int> init_calls{0};
    std::atomic<bool> init_done{false};
    std::atomic<int> sessions_before_init{0};
    Task<> service_init(ExitStack&, Server&) override {
        ++init_calls;
        co_await sleep(1ms);  // a suspension: shards must not serve before service_init has finished
        init_done = true;
    }
    Session<std::string> handle(TextClient& client) override {
        std::string request = co_yield recv();
        if (!init_done) ++sessions_before_init;
        co_await client.send_packet(request);
    }
};

TEST(ShardingContract, ServiceInitRunsOnceWithFourShards) {
    InitCountingHandler handler;
    Text srv(handler, {}, shards(4));
    auto clients = make_clients(srv, 32);
    for (int i = 0; i < 32; ++i) clients[static_cast<std::size_t>(i)].send(srv.address(), payload(i, 0));
    for (int i = 0; i < 32; ++i)
        ASSERT_EQ(clients[static_cast<std::size_t>(i)].recv(kGuard), payload(i, 0)) << "client " << i;

    stop_within_guard(srv.server(), "service_init count");

    EXPECT_EQ(handler.init_calls.load(), 1);
    EXPECT_EQ(handler.sessions_before_init.load(), 0);
}

/// Each session spawns (Server::spawn) a background task that records its thread and sleeps until
/// shutdown; the session answers with nothing more.
class SpawnOnShardHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    ThreadLog session_threads;
    ThreadLog task_threads;
    std::atomic<int> tasks_started{0};
    std::atomic<int> tasks_cancelled{0};

    Task<> service_init(ExitStack&, Server& server) override {
        server_ = &server;
        co_return;
    }
    Session<std::string> handle(TextClient& client) override {
        co_yield recv();
        const std::string name = client.peer_name().to_string();
        session_threads.record(name);
        server_->spawn(background(name));
        co_await client.send_packet("spawned");
    }

private:
    Task<> background(std::string name) {
        task_threads.record(name);
        ++tasks_started;
        try {
            co_await sleep(1h);
        } catch (const Cancelled&) {
            ++tasks_cancelled;
            throw;
        }
    }
    Server* server_ = nullptr;
};

TEST(ShardingContract, FourShards_SpawnRunsOnTheSessionsShardAndIsCancelledAtShutdown) {
    constexpr int kClients = 64;
    SpawnOnShardHandler handler;
    Text srv(handler, {}, shards(4));
    auto clients = make_clients(srv, kClients);
    for (int i = 0; i < kClients; ++i) clients[static_cast<std::size_t>(i)].send(srv.address(), "spawn");
    for (int i = 0; i < kClients; ++i)
        ASSERT_EQ(clients[static_cast<std::size_t>(i)].recv(kGuard), "spawned") << "client " << i << "\n" << srv.log().dump();
    ASSERT_TRUE(wait_until([&] { return handler.tasks_started.load() == kClients; }, kGuard))
        << handler.tasks_started.load() << " of " << kClients << " background tasks started";

    stop_within_guard(srv.server(), "64 background tasks on 4 shards");

    EXPECT_EQ(handler.tasks_cancelled.load(), kClients);
    const auto sessions = handler.session_threads.by_client();
    const auto tasks = handler.task_threads.by_client();
    EXPECT_EQ(tasks, sessions) << "a task spawned from a session runs on that session's shard";
    EXPECT_EQ(handler.task_threads.all().size(), 4u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << srv.log().dump();
}

// ---- bad values -------------------------------------------------------------------------------------

// ---- tests that need a client owned by a worker shard ----------------------------------------------------

/// Handler part shared by the tests below: service_init records shard 0's thread (H15: it runs there),
/// and "whoami" records the thread of the session that got it.
class WhoAmI {
public:
    void record_init_thread() {
        std::lock_guard lock(mutex_);
        init_thread_ = std::this_thread::get_id();
    }
    /// True (and recorded) when `datagram` is "whoami".
    bool record_whoami(const std::string& datagram) {
        if (datagram != "whoami") return false;
        std::lock_guard lock(mutex_);
        last_whoami_ = std::this_thread::get_id();
        return true;
    }
    bool last_whoami_was_a_worker() {
        std::lock_guard lock(mutex_);
        return last_whoami_ != init_thread_;
    }

private:
    std::mutex mutex_;
    ThreadId init_thread_, last_whoami_;
};

/// A client whose state lives on a worker shard (not shard 0), found by asking up to 64 fresh clients.
/// Every handler using this answers "whoami" with "whoami".
std::optional<RawClient> client_on_a_worker(Text& srv, WhoAmI& who) {
    for (int attempt = 0; attempt < 64; ++attempt) {
        RawClient c = srv.client();
        c.send(srv.address(), "whoami");
        if (c.recv(kGuard) != "whoami") return std::nullopt;
        if (who.last_whoami_was_a_worker()) return c;
    }
    return std::nullopt;
}

std::string numbered(int i, char fill) {
    std::string p = std::to_string(i) + ":";
    p.resize(1000, fill);
    return p;
}

/// Floods `count` numbered datagrams of 1000 bytes from `victim` (on a thread of its own: its sends
/// block while the server pauses), waits (bounded) for `paused`, calls `release`, then reads `first` and
/// every echo in order. Returns what went wrong, or an empty string.
std::string flood_then_verify(Text& srv, RawClient& victim, int count, char fill, const std::function<bool()>& paused,
                              const std::function<void()>& release, const std::string& first) {
    std::atomic<int> sent{0};
    std::string send_error;
    std::thread sender([&] {
        try {
            for (int i = 0; i < count; ++i) {
                victim.send(srv.address(), numbered(i, fill));
                ++sent;
            }
        } catch (const std::exception& e) {
            send_error = e.what();
        }
    });
    const bool pause_seen = wait_until(paused, kGuard);
    release();
    std::string failure;
    if (!pause_seen) failure = "no receive pause (" + std::to_string(sent.load()) + " datagrams sent)";
    if (failure.empty() && victim.recv(kGuard) != first) failure = "the reply to '" + first + "' did not come first";
    for (int i = 0; failure.empty() && i < count; ++i) {
        const auto reply = victim.recv(kGuard);
        if (!reply) failure = "no reply to datagram " + std::to_string(i);
        else if (*reply != numbered(i, fill)) failure = "reply " + std::to_string(i) + " is '" + reply->substr(0, 12) + "...'";
    }
    sender.join();
    if (failure.empty() && !send_error.empty()) failure = "send failed: " + send_error;
    return failure;
}

// ---- a full mailbox: backpressure, nothing lost --------------------------------------------------------

/// Echoes every datagram in one long session, after `before_echo` (which tests override); records
/// shard 0's thread and answers "whoami" (see WhoAmI).
class WorkerProbeEcho : public DatagramRequestHandler<std::string, std::string>, public WhoAmI {
public:
    Task<> service_init(ExitStack&, Server&) override {
        record_init_thread();
        co_return;
    }
    Session<std::string> handle(TextClient& client) override {
        for (;;) {
            std::string datagram = co_yield recv();
            if (!record_whoami(datagram)) co_await before_echo(datagram);
            co_await client.send_packet(datagram);
        }
    }

protected:
    virtual Task<> before_echo(const std::string&) { co_return; }
};

/// "block" parks the shard's thread (a blocking call in a handler) until the test opens the gate.
class BlockingEchoHandler : public WorkerProbeEcho {
public:
    std::binary_semaphore gate{0};
    std::atomic<bool> blocked{false};

protected:
    Task<> before_echo(const std::string& datagram) override {
        if (datagram != "block") co_return;
        blocked = true;
        if (!gate.try_acquire_for(3 * kGuard)) std::abort();  // the test never opened it
        blocked = false;
    }
};

TEST(ShardingContract, FullMailbox_PausesReceivingAndLosesNothing) {
    // A worker shard that stops running (here: a handler blocking its thread) lets its mailbox
    // fill up. Shard 0 must then keep what it already read, stop reading the socket (senders wait in
    // the kernel) and deliver everything, in order, once the worker drains its mailbox.
    BlockingEchoHandler handler;
    ServerOptions options = shards(2);
    options.max_datagram_size = 2048;  // the mailbox gets its minimum size, 256 KiB
    // One client floods 2000 datagrams at a session that answers one per loop turn: its own queue
    // (max_queued_datagrams, a drop policy of its own, tested in queueing_contract_test) must not be
    // what limits this test.
    options.max_queued_datagrams = 4096;
    Text srv(handler, {}, options);
    auto victim = client_on_a_worker(srv, handler);
    ASSERT_TRUE(victim) << "no client out of 64 was owned by shard 1";

    victim->send(srv.address(), "block");
    ASSERT_TRUE(wait_until([&] { return handler.blocked.load(); }, kGuard)) << "the worker never blocked";
    // 2000 datagrams of 1000 bytes (~2 MiB) cannot fit in the 256 KiB mailbox: once ~240 have been
    // read, shard 0 must pause (counted in receive_pauses when the first record does not fit).
    constexpr int kCount = 2000;
    const std::string failure = flood_then_verify(
        srv, *victim, kCount, 'x', [&] { return srv.server().stats().receive_pauses > 0; },
        [&] { handler.gate.release(); }, "block");
    EXPECT_TRUE(failure.empty()) << failure;
    const ServerStats st = srv.server().stats();
    EXPECT_EQ(st.dropped_total(), 0u);
    EXPECT_LT(st.datagrams_received, 300u + kCount) << "sanity";
}

// ---- a worker over its share of max_total_queued_bytes --------------------------------------------------

/// "hold" suspends the session (not the thread) until the test sets `released`, so that the client's
/// next datagrams queue up on its shard.
class HoldingEchoHandler : public WorkerProbeEcho {
public:
    std::atomic<bool> holding{false};
    std::atomic<bool> released{false};

protected:
    Task<> before_echo(const std::string& datagram) override {
        if (datagram != "hold") co_return;
        holding = true;
        // Polls a flag the test sets (bounded): the session waits, the shard keeps running.
        for (int i = 0; i < 30000 && !released.load(); ++i) co_await sleep(1ms);
    }
};

TEST(ShardingContract, WorkerOverItsQueuedBytesShare_PausesShardZerosReceive) {
    // max_total_queued_bytes is split between shards; a worker whose clients' queues exceed its share
    // stops draining its mailbox and asks shard 0 to stop reading (kernel backpressure); both resume
    // once drained (DESIGN §6: bounded memory, nothing lost).
    HoldingEchoHandler handler;
    ServerOptions options = shards(2);
    options.max_total_queued_bytes = 64 * 1024;  // 32 KiB per shard
    options.max_queued_bytes = 64 * 1024;        // per client: a worker's overshoot past its share must stay below it
    Text srv(handler, {}, options);
    auto victim = client_on_a_worker(srv, handler);
    ASSERT_TRUE(victim) << "no client out of 64 was owned by shard 1";

    victim->send(srv.address(), "hold");
    ASSERT_TRUE(wait_until([&] { return handler.holding.load(); }, kGuard)) << "the session never held";
    // 300 × 1000 B: far over the 32 KiB share.
    const std::string failure = flood_then_verify(
        srv, *victim, 300, 'q', [&] { return srv.server().stats().receive_pauses > 0; },
        [&] { handler.released = true; }, "hold");
    EXPECT_TRUE(failure.empty()) << failure;
    EXPECT_EQ(srv.server().stats().dropped_total(), 0u);
}

// ---- shutdown from a handler on a worker shard ------------------------------------------------------------

/// "stop" calls Server::stop() from the handler (spec §1.3: shutdown from inside the server returns at
/// once, the run ends after it); anything else is echoed.
class StopFromHandler : public DatagramRequestHandler<std::string, std::string>, public WhoAmI {
public:
    std::atomic<bool> stop_returned{false};

    Task<> service_init(ExitStack&, Server& server) override {
        record_init_thread();
        server_ = &server;
        co_return;
    }
    Session<std::string> handle(TextClient& client) override {
        const std::string datagram = co_yield recv();
        if (datagram == "stop") {
            server_->stop();  // must neither deadlock nor wait for this very session
            stop_returned = true;
            co_return;
        }
        record_whoami(datagram);
        co_await client.send_packet(datagram);
    }

private:
    Server* server_ = nullptr;
};

TEST(ShardingContract, FourShards_StopFromAHandlerOnAWorkerShardEndsTheRun) {
    StopFromHandler handler;
    Text srv(handler, {}, shards(4));
    auto worker_client = client_on_a_worker(srv, handler);
    ASSERT_TRUE(worker_client) << "no client out of 64 was owned by a worker shard";

    worker_client->send(srv.address(), "stop");
    EXPECT_TRUE(wait_until([&] { return !srv.server().is_serving() && handler.stop_returned.load(); }, 3 * kGuard))
        << "stop() called by a handler on a worker shard did not end the run";
    stop_within_guard(srv.server(), "after a handler's stop()");
}

// ---- a worker shard that cannot start -------------------------------------------------------------------

/// Counts service_init calls; echoes.
class CountingInitEcho : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<int> init_calls{0};
    Task<> service_init(ExitStack&, Server&) override {
        ++init_calls;
        co_return;
    }
    Session<std::string> handle(TextClient& client) override {
        std::string datagram = co_yield recv();
        co_await client.send_packet(datagram);
    }
};

/// Lowers RLIMIT_NOFILE so that exactly `fds` more can be opened (new fds take the lowest free numbers);
/// restores it when it goes.
class FdBudget {
public:
    explicit FdBudget(std::size_t fds) {
        std::set<rlim_t> open;
        for (auto& e : std::filesystem::directory_iterator("/proc/self/fd"))
            open.insert(std::stoul(e.path().filename().string()));
        rlim_t limit = 0;
        std::erase_if(open, [](rlim_t fd) { return ::fcntl(static_cast<int>(fd), F_GETFD) == -1; });  // the listing's own
        for (std::size_t free = 0; free < fds; ++limit)
            if (!open.contains(limit)) ++free;
        ::getrlimit(RLIMIT_NOFILE, &saved_);
        rlimit lowered = saved_;
        lowered.rlim_cur = limit;
        ::setrlimit(RLIMIT_NOFILE, &lowered);
    }
    ~FdBudget() { ::setrlimit(RLIMIT_NOFILE, &saved_); }

private:
    rlimit saved_{};
};

TEST(ShardingContract, AWorkerThatCannotStartFailsStartBeforeServiceInit) {
    // Every shard's loop is created before service_init runs (DESIGN §5): when one cannot be (here: out of
    // fds), start() throws what went wrong, service_init never ran, and the server can start again.
    CountingInitEcho handler;
    TempDir dir;
    const UnixAddress address = UnixAddress::pathname(dir.file("server.sock"));
    ServerOptions options = shards(4);
    auto [log, sink] = capturing_logger();
    options.logger = log;
    UnixDatagramServer<std::string, std::string, TextProtocol> server(address, TextProtocol{}, handler, options);
    server.activate();  // the socket's fd exists before the budget is set
    {
        // Shard 0 needs 2 fds (its ring or epoll instance, its eventfd), each worker 2 more: 3 fds leave the
        // first worker without room for its second.
        FdBudget budget(3);
        try {
            server.start();
            ADD_FAILURE() << "start() must fail when a worker shard cannot create its loop";
        } catch (const std::system_error& e) {
            EXPECT_NE(std::string(e.what()).find("backend"), std::string::npos) << e.what();
            RecordProperty("start_error", e.what());
        }
    }
    EXPECT_EQ(handler.init_calls.load(), 0) << "service_init must not run when a shard cannot start";
    EXPECT_FALSE(server.is_serving());

    server.start();  // with fds to spare, the same server starts and serves
    RawClient c(UnixAddress::pathname(dir.file("c.sock")));
    c.send(server.address(), "again");
    EXPECT_EQ(c.recv(kGuard), "again");
    EXPECT_EQ(handler.init_calls.load(), 1);
    stop_within_guard(server, "restart after a failed start");
    server.close();
}

TEST(ShardingContract, ShardsOutOfRange_ConstructorThrowsInvalidArgumentNamingShards) {
    TempDir dir;
    OneShotHandler handler;
    for (unsigned bad : {0u, 1025u}) {
        ServerOptions options;
        options.shards = bad;
        try {
            UnixDatagramServer<std::string, std::string, TextProtocol> server(
                UnixAddress::pathname(dir.file("server.sock")), TextProtocol{}, handler, options);
            ADD_FAILURE() << "shards = " << bad << " was accepted";
        } catch (const std::invalid_argument& e) {
            EXPECT_NE(std::string(e.what()).find("shards"), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find(std::to_string(bad)), std::string::npos) << e.what();
        }
        EXPECT_FALSE(std::filesystem::exists(dir.file("server.sock"))) << "the constructor touches nothing";
    }
}

}  // namespace
}  // namespace unixgram::testing
