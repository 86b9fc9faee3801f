// SPDX-License-Identifier: MIT
// Contract tests for ServerOptions::shards: per-client order, one owner shard per client, shutdown and spawn on every
// shard, and ServerOptions::dedicated_receiver (shard 0 only reads).
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "contract/sharding.hpp"

namespace unixgram::testing {
namespace {

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

/// Drives every client with drive_window, the clients split evenly among `threads` threads; each failure
/// becomes a test failure.
void drive_on_threads(std::vector<RawClient>& clients, const UnixAddress& server, int per_client, int threads) {
    const int count = static_cast<int>(clients.size()) / threads;
    std::vector<std::vector<std::string>> failures(static_cast<std::size_t>(threads));
    std::vector<std::thread> drivers;
    for (int t = 0; t < threads; ++t)
        drivers.emplace_back([&, t] {
            failures[static_cast<std::size_t>(t)] = drive_window(clients, t * count, count, server, per_client);
        });
    for (auto& d : drivers) d.join();
    for (auto& f : failures)
        for (auto& msg : f) ADD_FAILURE() << msg;
}

/// 64 clients, each echoing `per_client` datagrams through a server with `options` (four driver threads); then
/// stop(): every reply came back once, in order, with nothing dropped or failed, one session per client.
void check_echo_in_order(EchoHandler& handler, const ServerOptions& options, int per_client) {
    constexpr int kClients = 64;
    Text srv(handler, {}, options);
    auto clients = make_clients(srv, kClients);
    drive_on_threads(clients, srv.address(), per_client, 4);
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
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << srv.log().dump();
}

TEST(ShardingContract, FourShards_EveryReplyArrivesInPerClientOrder) {
    EchoHandler handler;
    check_echo_in_order(handler, shards(4), kEchoDatagramsPerClient);
    EXPECT_EQ(handler.threads.all().size(), 4u) << "64 clients' sessions must have run on all 4 shards";
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

/// 64 clients' sessions held on the `serving` shards that serve clients under `options`; stop() cancels every one.
void check_stop_cancels_held_sessions(const ServerOptions& options, std::size_t serving) {
    constexpr int kClients = 64;
    HoldUntilShutdownHandler handler;
    Text srv(handler, {}, options);
    auto clients = make_clients(srv, kClients);
    for (int i = 0; i < kClients; ++i) clients[static_cast<std::size_t>(i)].send(srv.address(), "hold");

    ASSERT_TRUE(wait_until([&] { return handler.waiting.load() == kClients; }, kGuard))
        << handler.waiting.load() << " of " << kClients << " sessions started";
    ASSERT_EQ(handler.threads.all().size(), serving) << "64 clients' sessions must be held on " << serving << " shards";

    stop_within_guard(srv.server(), "64 sessions held on several shards");

    EXPECT_EQ(handler.cancelled.load(), kClients) << "every shard's sessions get Cancelled";
    EXPECT_EQ(handler.woke.load(), 0);
    EXPECT_EQ(srv.server().stats().handler_errors, 0u);
    EXPECT_FALSE(srv.server().is_serving());
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << "Cancelled is not an error\n" << srv.log().dump();
}

TEST(ShardingContract, FourShards_ShutdownCancelsSessionsOnEveryShard) {
    check_stop_cancels_held_sessions(shards(4), 4);
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

// ---- Client copies across shards -----------------------------------------------------------------------

/// A registry of clients and a broadcaster, the pattern of a notification daemon: each client that says
/// "register" is kept as a Client copy (made on its own shard); the session of "broadcast", on its sender's
/// shard, copies every registered client, sends each one "broadcast" and drops its copies there, then empties
/// the registry, dropping the last copies there too, and answers "done". Anything else is echoed.
class BroadcastHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    ThreadLog session_threads;
    std::mutex mutex;
    ThreadId broadcaster;

    Session<std::string> handle(TextClient& client) override {
        std::string request = co_yield recv();
        if (request == "register") {
            session_threads.record(client.peer_name().to_string());
            {
                std::lock_guard lock(mutex);
                registry_.push_back(client);  // a copy, on the client's shard
            }
            co_await client.send_packet("registered");
        } else if (request == "broadcast") {
            std::vector<TextClient> targets;
            {
                std::lock_guard lock(mutex);
                targets = registry_;  // copies made here, of clients of every shard
                broadcaster = std::this_thread::get_id();
            }
            for (TextClient& target : targets) co_await target.send_packet("broadcast");  // sent from here
            targets.clear();  // dropped here
            std::vector<TextClient> last;
            {
                std::lock_guard lock(mutex);
                last.swap(registry_);
            }
            last.clear();  // the last copies, dropped here: their owners idle (here: free) the clients
            co_await client.send_packet("done");
        } else {
            co_await client.send_packet("echo " + request);
        }
    }

private:
    std::vector<TextClient> registry_;
};

TEST(ShardingContract, FourShards_ClientCopiesMayBeMadeUsedAndDroppedOnAnotherShard) {
    constexpr int kClients = 16;
    BroadcastHandler handler;
    ServerOptions options = shards(4);
    options.idle_client_cache = 0;  // a client whose last copy goes is freed at once
    Text srv(handler, {}, options);
    auto clients = make_clients(srv, kClients);
    for (auto& c : clients) c.send(srv.address(), "register");
    for (int i = 0; i < kClients; ++i)
        ASSERT_EQ(clients[static_cast<std::size_t>(i)].recv(kGuard), "registered") << "client " << i << "\n"
                                                                                 << srv.log().dump();
    auto trigger = srv.client();
    trigger.send(srv.address(), "broadcast");
    for (int i = 0; i < kClients; ++i)
        ASSERT_EQ(clients[static_cast<std::size_t>(i)].recv(kGuard), "broadcast") << "client " << i << "\n"
                                                                                << srv.log().dump();
    ASSERT_EQ(trigger.recv(kGuard), "done") << srv.log().dump();

    // The states whose last copies went on the broadcaster's shard were handed back to their owners, not
    // freed under them: every client is served again, in order, from a fresh state.
    for (int round = 0; round < 3; ++round) {
        for (int i = 0; i < kClients; ++i) {
            auto& c = clients[static_cast<std::size_t>(i)];
            const std::string text = "r" + std::to_string(round) + "c" + std::to_string(i);
            c.send(srv.address(), text);
            ASSERT_EQ(c.recv(kGuard), "echo " + text) << srv.log().dump();
        }
    }
    stop_within_guard(srv.server(), "16 clients after a broadcast from another shard");

    std::set<ThreadId> owners = handler.session_threads.all();
    EXPECT_GE(owners.size(), 2u) << "16 clients on 4 shards all landed on one";
    owners.erase(handler.broadcaster);
    EXPECT_FALSE(owners.empty()) << "no registered client lived on a shard other than the broadcaster's";
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << srv.log().dump();
}

// A Client copy made and dropped on a thread that is no loop thread at all (a user's worker thread).
class CopiesOnAUserThread : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        std::string request = co_yield recv();
        std::string seen;
        std::thread([&client, &seen] {
            const TextClient copy = client;
            seen = copy.peer_name().to_string();
        }).join();
        co_await client.send_packet(request + " from " + seen);
    }
};

TEST(ShardingContract, FourShards_ACopyMadeAndDroppedOnAUserThreadIsHandedBack) {
    CopiesOnAUserThread handler;
    ServerOptions options = shards(4);
    options.idle_client_cache = 0;
    Text srv(handler, {}, options);
    auto clients = make_clients(srv, 8);
    for (int round = 0; round < 3; ++round) {
        for (std::size_t i = 0; i < clients.size(); ++i) {
            const std::string text = "r" + std::to_string(round);
            clients[i].send(srv.address(), text);
            ASSERT_EQ(clients[i].recv(kGuard), text + " from " + clients[i].local_name().to_string()) << srv.log().dump();
        }
    }
    stop_within_guard(srv.server(), "8 clients whose copies went through a user thread");
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << srv.log().dump();
}

// ---- ServerOptions::dedicated_receiver -------------------------------------------------------------

/// EchoHandler that also records the thread of service_init, which runs on shard 0 (H15).
class ReceiverProbeEcho : public EchoHandler {
public:
    std::mutex mutex;
    ThreadId init_thread;
    Task<> service_init(ExitStack&, Server&) override {
        std::lock_guard lock(mutex);
        init_thread = std::this_thread::get_id();
        co_return;
    }
};

ServerOptions dedicated_receiver(unsigned n) {
    ServerOptions o = shards(n);
    o.dedicated_receiver = true;
    return o;
}

TEST(ShardingContract, DedicatedReceiver_FourShards_EveryReplyInOrder_NoSessionOnShardZero) {
    ReceiverProbeEcho handler;
    check_echo_in_order(handler, dedicated_receiver(4), kEchoDatagramsPerClient / 5);
    const auto all = handler.threads.all();
    // 64 random socket paths over 3 serving shards: the chance that one gets none is 3 * (2/3)^64 ≈ 2e-11.
    EXPECT_EQ(all.size(), 3u) << "64 clients' sessions must have run on the 3 shards other than shard 0";
    std::lock_guard lock(handler.mutex);
    EXPECT_NE(handler.init_thread, ThreadId{}) << "service_init did not run";
    EXPECT_EQ(all.count(handler.init_thread), 0u) << "a session ran on shard 0, the dedicated receiver";
    for (const auto& [client, ids] : handler.threads.by_client())
        EXPECT_EQ(ids.size(), 1u) << client << ": its sessions ran on " << ids.size() << " threads";
}

TEST(ShardingContract, DedicatedReceiver_TwoShards_OneShardServesEveryClient) {
    ReceiverProbeEcho handler;
    Text srv(handler, {}, dedicated_receiver(2));
    auto clients = make_clients(srv, 16);
    for (int i = 0; i < 16; ++i) {
        const std::string text = "hello " + std::to_string(i);
        clients[static_cast<std::size_t>(i)].send(srv.address(), text);
        ASSERT_EQ(clients[static_cast<std::size_t>(i)].recv(kGuard), text) << srv.log().dump();
    }
    stop_within_guard(srv.server(), "16 clients, dedicated receiver, 2 shards");
    const auto all = handler.threads.all();
    EXPECT_EQ(all.size(), 1u) << "with 2 shards and a dedicated receiver, shard 1 serves every client";
    std::lock_guard lock(handler.mutex);
    EXPECT_EQ(all.count(handler.init_thread), 0u) << "a session ran on shard 0, the dedicated receiver";
}

TEST(ShardingContract, DedicatedReceiver_ShutdownCancelsSessionsOnEveryServingShard) {
    check_stop_cancels_held_sessions(dedicated_receiver(4), 3);  // shards 1, 2 and 3
}

// ---- bad values -------------------------------------------------------------------------------------

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

TEST(ShardingContract, DedicatedReceiverWithOneShard_ConstructorThrowsInvalidArgumentNamingBoth) {
    TempDir dir;
    OneShotHandler handler;
    ServerOptions options;
    options.dedicated_receiver = true;  // shards = 1: nobody would serve the clients
    try {
        UnixDatagramServer<std::string, std::string, TextProtocol> server(
            UnixAddress::pathname(dir.file("server.sock")), TextProtocol{}, handler, options);
        ADD_FAILURE() << "dedicated_receiver with shards = 1 was accepted";
    } catch (const std::invalid_argument& e) {
        EXPECT_STREQ(e.what(), "ServerOptions::dedicated_receiver = true: needs at least 2 shards (shards = 1)");
    }
    EXPECT_FALSE(std::filesystem::exists(dir.file("server.sock"))) << "the constructor touches nothing";
}

}  // namespace
}  // namespace unixgram::testing
