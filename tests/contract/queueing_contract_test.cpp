// SPDX-License-Identifier: MIT
// Contract tests for per-client queueing: spec rules H2, H3, H4, H12, H24, H27 and bounded queues (real sockets).
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>
#include <vector>

#include "contract/harness.hpp"
#include "contract/session_waits.hpp"

namespace unixgram::testing {
namespace {

using Text = RunningServer<std::string, std::string, TextProtocol>;

/// Every info-or-above record is one of the lifecycle lines: nothing about the datagrams was logged.
void expect_only_lifecycle_logs(CaptureSink& log) {
    for (auto& r : log.records()) {
        if (r.level < spdlog::level::info) continue;
        const bool lifecycle = r.text.rfind("Start serving at", 0) == 0 ||
                               r.text == "Server loop break, waiting for remaining tasks..." ||
                               r.text == "Server stopped";
        EXPECT_TRUE(lifecycle) << "unexpected log record: " << r.text;
    }
}

// ---- H2: the client key is the sender address ----------------------------------------------------

/// `__wait__` then X is answered "After wait: X" by the same session; anything else is echoed.
class WaitHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<bool> at_second_yield{false};
    Session<std::string> handle(Client<std::string>& client) override {
        std::string first = co_yield recv();
        if (first != "__wait__") {
            co_await client.send_packet(upper(first));
            co_return;
        }
        at_second_yield = true;
        std::string second = co_yield recv({.timeout = 10s});
        at_second_yield = false;
        co_await client.send_packet("After wait: " + second);
    }
};

TEST(QueueingContract, H2_ClientIsKeyedBySenderAddressNotBySocket) {
    WaitHandler handler;
    Text srv(handler);
    const std::string path = srv.dir().file("rebound.sock");
    std::optional<RawClient> first(std::in_place, UnixAddress::pathname(path));
    first->send(srv.address(), "__wait__");
    ASSERT_TRUE(wait_until([&] { return handler.at_second_yield.load(); }));

    // A new socket bound to the same path is the same client: it feeds the waiting session.
    first.reset();
    std::filesystem::remove(path);
    RawClient second(UnixAddress::pathname(path));
    second.send(srv.address(), "hello");

    EXPECT_EQ(second.recv(), "After wait: hello");
    EXPECT_EQ(srv.server().stats().sessions_started, 1u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

/// Records what each session received and from which kind of address; never replies.
class RecordingTwoYieldHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::mutex mutex;
    std::vector<std::vector<std::string>> sessions;
    std::vector<bool> unnamed;
    std::atomic<int> finished{0};
    Session<std::string> handle(Client<std::string>& client) override {
        std::size_t index;
        {
            std::lock_guard lock(mutex);
            index = sessions.size();
            sessions.emplace_back();
            unnamed.push_back(client.peer_name().is_unnamed());
        }
        for (int i = 0; i < 2; ++i) {
            std::string request = co_yield recv({.timeout = 10s});
            std::lock_guard lock(mutex);
            sessions[index].push_back(request);
        }
        ++finished;
    }
};

TEST(QueueingContract, H2_AllUnboundSendersShareOneClient) {
    RecordingTwoYieldHandler handler;
    ServerOptions opts;
    opts.unnamed_addresses = UnnamedAddresses::handle;
    Text srv(handler, TextProtocol{}, opts);
    auto u1 = RawClient::unbound();
    auto u2 = RawClient::unbound();

    u1.send(srv.address(), "from u1");
    u2.send(srv.address(), "from u2");

    ASSERT_TRUE(wait_until([&] { return handler.finished.load() == 1; }));
    std::lock_guard lock(handler.mutex);
    ASSERT_EQ(handler.sessions.size(), 1u) << "both unbound sockets must feed one session";
    EXPECT_EQ(handler.sessions[0], (std::vector<std::string>{"from u1", "from u2"}));
    EXPECT_TRUE(handler.unnamed[0]);
    EXPECT_EQ(srv.server().stats().sessions_started, 1u);
    EXPECT_EQ(srv.server().stats().dropped_unnamed, 0u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

// ---- H3: at most one session per client; different clients run concurrently ------------------------

/// Counts the sessions alive per client; each session stays busy (sleep, send) after its datagram.
class ConcurrencyHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::mutex mutex;
    std::map<std::string, int> active;
    std::map<std::string, int> max_active;
    Session<std::string> handle(Client<std::string>& client) override {
        struct Presence {
            ConcurrencyHandler* h;
            std::string key;
            Presence(ConcurrencyHandler* h_, std::string k) : h(h_), key(std::move(k)) {
                std::lock_guard lock(h->mutex);
                int& n = ++h->active[key];
                h->max_active[key] = std::max(h->max_active[key], n);
            }
            ~Presence() {
                std::lock_guard lock(h->mutex);
                --h->active[key];
            }
        } presence(this, client.peer_name().to_string());
        std::string request = co_yield recv();
        co_await sleep(200us);
        co_await client.send_packet(request);
    }
};

TEST(QueueingContract, H3_AtMostOneSessionPerClientAtATime) {
    ConcurrencyHandler handler;
    Text srv(handler);
    constexpr int kClients = 4;
    constexpr int kPerClient = 50;
    std::vector<RawClient> clients;
    for (int i = 0; i < kClients; ++i) clients.push_back(srv.client());

    for (int i = 0; i < kPerClient; ++i)
        for (auto& c : clients) c.send(srv.address(), std::to_string(i));

    for (auto& c : clients)
        for (int i = 0; i < kPerClient; ++i) ASSERT_EQ(c.recv(), std::to_string(i));
    ASSERT_TRUE(wait_until([&] {
        std::lock_guard lock(handler.mutex);
        for (auto& [key, n] : handler.active)
            if (n != 0) return false;
        return true;
    }));
    std::lock_guard lock(handler.mutex);
    ASSERT_EQ(handler.max_active.size(), static_cast<std::size_t>(kClients));
    for (auto& [key, n] : handler.max_active) EXPECT_EQ(n, 1) << "client " << key;
    EXPECT_EQ(srv.server().stats().sessions_started, static_cast<std::uint64_t>(kClients * kPerClient));
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

TEST(QueueingContract, H3_AnotherClientIsAnsweredWhileOneWaitsAtASecondYield) {
    WaitHandler handler;
    Text srv(handler);
    auto a = srv.client();
    auto b = srv.client();
    a.send(srv.address(), "__wait__");
    ASSERT_TRUE(wait_until([&] { return handler.at_second_yield.load(); }));

    b.send(srv.address(), "from b");
    EXPECT_EQ(b.recv(), "FROM B");
    EXPECT_TRUE(handler.at_second_yield.load()) << "a's session must still be waiting";

    a.send(srv.address(), "hello");
    EXPECT_EQ(a.recv(), "After wait: hello");
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

/// "hold" keeps its session busy (not at a co_yield) until the test releases it.
class HoldingHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<bool> holding{false};
    std::atomic<bool> release{false};
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        if (request == "hold") {
            holding = true;
            co_await wait_for([this] { return release.load(); });
            holding = false;
            request = "released";
        }
        co_await client.send_packet(request);
    }
};

TEST(QueueingContract, H3_AnotherClientIsAnsweredWhileOneIsBusy) {
    HoldingHandler handler;
    Text srv(handler);
    auto a = srv.client();
    auto b = srv.client();
    a.send(srv.address(), "hold");
    ASSERT_TRUE(wait_until([&] { return handler.holding.load(); }));

    b.send(srv.address(), "from b");
    EXPECT_EQ(b.recv(), "from b");
    EXPECT_TRUE(handler.holding.load());

    handler.release = true;
    EXPECT_EQ(a.recv(), "released");
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

// ---- H4: FIFO queueing ---------------------------------------------------------------------------

/// Two co_yields per session, each answered at once; the first session stays busy until all
/// `total` datagrams have been read, so everything after the first is queued.
class FifoHandler : public CountingHandler {
public:
    explicit FifoHandler(std::uint64_t total) : total_(total) {}
    Session<std::string> handle(Client<std::string>& client) override {
        std::string first = co_yield recv();
        co_await wait_received(total_);
        co_await client.send_packet(first);
        std::string second = co_yield recv({.timeout = 10s});
        co_await client.send_packet(second);
    }

private:
    std::uint64_t total_;
};

TEST(QueueingContract, H4_DatagramsQueuedWhileBusyAreDeliveredInOrder) {
    constexpr int kCount = 300;
    FifoHandler handler(kCount);
    Text srv(handler);
    auto c = srv.client();

    for (int i = 0; i < kCount; ++i) c.send(srv.address(), std::to_string(i));

    for (int i = 0; i < kCount; ++i) ASSERT_EQ(c.recv(), std::to_string(i)) << "reply #" << i;
    const ServerStats s = srv.server().stats();
    EXPECT_EQ(s.sessions_started, static_cast<std::uint64_t>(kCount / 2)) << "two datagrams per session";
    EXPECT_EQ(s.dropped_total(), 0u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

/// Sleeps before every reply: datagrams pile up while the session is suspended in the handler.
class SleepyEchoHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        co_await sleep(2ms);
        co_await client.send_packet(request);
    }
};

TEST(QueueingContract, H4_OrderIsKeptWhileTheSessionSleeps) {
    SleepyEchoHandler handler;
    Text srv(handler);
    auto a = srv.client();
    auto b = srv.client();

    for (int i = 0; i < 40; ++i) {
        a.send(srv.address(), "a" + std::to_string(i));
        b.send(srv.address(), "b" + std::to_string(i));
    }

    for (int i = 0; i < 40; ++i) ASSERT_EQ(a.recv(), "a" + std::to_string(i));
    for (int i = 0; i < 40; ++i) ASSERT_EQ(b.recv(), "b" + std::to_string(i));
    EXPECT_EQ(srv.server().stats().dropped_total(), 0u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

/// Holds every session until released; a bounded queue (max_queued_datagrams) fills meanwhile.
class GatedEchoHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<bool> release{false};
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        if (request.rfind("gated", 0) == 0) co_await wait_for([this] { return release.load(); });
        co_await client.send_packet(request);
    }
};

TEST(QueueingContract, H4_PerClientQueueIsBoundedByMaxQueuedDatagrams) {
    GatedEchoHandler handler;
    ServerOptions opts;
    opts.max_queued_datagrams = 4;
    Text srv(handler, TextProtocol{}, opts);
    auto a = srv.client();
    auto b = srv.client();

    // gated0 starts the session (held); gated1..gated4 fill the queue; gated5..gated19 overflow it.
    for (int i = 0; i < 20; ++i) a.send(srv.address(), "gated" + std::to_string(i));
    ASSERT_TRUE(wait_until([&] { return srv.server().stats().datagrams_received == 20; }));
    EXPECT_EQ(srv.server().stats().dropped_queue_full, 15u);

    b.send(srv.address(), "b is served");
    EXPECT_EQ(b.recv(), "b is served") << "another client must be served while a's queue is full";

    handler.release = true;
    for (int i = 0; i < 5; ++i) EXPECT_EQ(a.recv(), "gated" + std::to_string(i));
    EXPECT_EQ(a.recv(300ms), std::nullopt) << "the overflowing datagrams must not be answered";

    EXPECT_TRUE(wait_until([&] { return srv.server().stats().datagrams_sent == 6; }));
    EXPECT_EQ(srv.server().stats().dropped_queue_full, 15u);
    const std::size_t warnings = srv.log().count(spdlog::level::warn);
    EXPECT_GE(warnings, 1u) << "dropping must be logged";
    EXPECT_LT(warnings, 15u) << "the warning must be rate-limited, not one per datagram\n" << srv.log().dump();
    EXPECT_GE(srv.log().count(spdlog::level::warn, a.local_name().to_string()), 1u) << "the warning names the client";
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << srv.log().dump();
}

TEST(QueueingContract, TotalCapBelowTheClientCap_PushesBackOnTheSenderInsteadOfDropping) {
    // DESIGN §6: over max_total_queued_bytes the server stops reading (the kernel makes senders wait) and loses
    // nothing. Set below max_queued_bytes (allowed), it pushes back before the client's own cap is reached, so
    // a window far larger than the cap is answered in full, in order, with no drop: the low-latency setting.
    GatedEchoHandler handler;
    ServerOptions opts;
    opts.max_total_queued_bytes = 32;  // four of these datagrams; per client the default 4 MiB / 1024 stay
    Text srv(handler, TextProtocol{}, opts);
    auto a = srv.client();
    constexpr int kCount = 200;

    // Blocking sends, as a real client's: once the server stops reading, the kernel holds this thread (for at
    // most 10 s each: a failure guard, so that the thread always ends and is joined).
    const timeval send_guard{10, 0};
    ::setsockopt(a.fd(), SOL_SOCKET, SO_SNDTIMEO, &send_guard, sizeof send_guard);
    std::string send_error;
    std::thread sender([&] {
        try {
            for (int i = 0; i < kCount; ++i) a.send(srv.address(), "gated" + std::to_string(i));
        } catch (const std::exception& e) {
            send_error = e.what();
        }
    });
    const bool paused = wait_until([&] { return srv.server().stats().receive_pauses > 0; });
    const ServerStats held = srv.server().stats();
    EXPECT_TRUE(paused) << "the server must pause its receive over the total cap";
    EXPECT_EQ(held.dropped_total(), 0u) << "nothing may be dropped: the total cap is below the client's own";
    EXPECT_LT(held.datagrams_received, static_cast<std::uint64_t>(kCount))
        << "while its sessions are held, the server must not have taken every datagram (the rest wait in the kernel)";

    handler.release = true;
    for (int i = 0; i < kCount; ++i) {
        const auto reply = a.recv();
        EXPECT_EQ(reply, "gated" + std::to_string(i)) << "reply " << i;
        if (reply != "gated" + std::to_string(i)) break;
    }
    sender.join();
    EXPECT_EQ(send_error, "") << "the sender must get through once the sessions run";
    EXPECT_EQ(srv.server().stats().dropped_total(), 0u);
    EXPECT_TRUE(wait_until([&] { return srv.server().stats().datagrams_sent == kCount; }));
    // Pausing stops the socket's receive (on io_uring, by cancelling it) and resuming restarts it: neither
    // is a failed read.
    EXPECT_GT(srv.server().stats().receive_pauses, 0u);
    EXPECT_EQ(srv.server().stats().receive_errors, 0u) << "a pause or a resume was counted as a failed read";
}

// ---- H12: a session that ends with datagrams queued is followed by a new one -----------------------

/// `__wait__` then X → "After wait: X", answered only once the third datagram has been read, so
/// that it is queued when the session ends; anything else is answered in upper case.
class RescheduleHandler : public CountingHandler {
public:
    Session<std::string> handle(Client<std::string>& client) override {
        std::string first = co_yield recv();
        if (first != "__wait__") {
            co_await client.send_packet(upper(first));
            co_return;
        }
        std::string second = co_yield recv({.timeout = 10s});
        co_await wait_received(3);
        co_await client.send_packet("After wait: " + second);
    }
};

TEST(QueueingContract, H12_QueuedDatagramStartsANewSessionOnTheOldest) {
    RescheduleHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "__wait__");
    c.send(srv.address(), "hello, world.");
    c.send(srv.address(), "Test 2.");

    EXPECT_EQ(c.recv(), "After wait: hello, world.");
    EXPECT_EQ(c.recv(), "TEST 2.");
    EXPECT_EQ(srv.server().stats().sessions_started, 2u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

// ---- H27: one loop thread for a session's whole life ------------------------------------------------

/// Records the thread after every suspension point of each session, and when its frame dies.
class ThreadRecordingHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::mutex mutex;
    std::vector<std::vector<std::thread::id>> sessions;
    Session<std::string> handle(Client<std::string>& client) override {
        std::size_t index;
        {
            std::lock_guard lock(mutex);
            index = sessions.size();
            sessions.emplace_back();
        }
        auto here = [this, index] {
            std::lock_guard lock(mutex);
            sessions[index].push_back(std::this_thread::get_id());
        };
        struct AtEnd {
            std::function<void()> fn;
            ~AtEnd() { fn(); }
        } at_end{here};
        here();
        std::string first = co_yield recv();
        here();
        co_await sleep(1ms);
        here();
        co_await client.send_packet(first);
        here();
        std::string second = co_yield recv({.timeout = 10s});
        here();
        co_await client.send_packet(second);
        here();
    }
};

TEST(QueueingContract, H27_ASessionRunsOnOneLoopThreadForItsWholeLife) {
    ThreadRecordingHandler handler;
    Text srv(handler);
    std::vector<RawClient> clients;
    for (int i = 0; i < 3; ++i) clients.push_back(srv.client());

    for (auto& c : clients) c.send(srv.address(), "one");
    for (auto& c : clients) EXPECT_EQ(c.recv(), "one");
    for (auto& c : clients) c.send(srv.address(), "two");
    for (auto& c : clients) EXPECT_EQ(c.recv(), "two");

    ASSERT_TRUE(wait_until([&] {
        std::lock_guard lock(handler.mutex);
        if (handler.sessions.size() != 3) return false;
        for (auto& ids : handler.sessions)
            if (ids.size() != 7) return false;
        return true;
    }));
    std::lock_guard lock(handler.mutex);
    const std::thread::id loop = handler.sessions[0][0];
    EXPECT_NE(loop, std::this_thread::get_id()) << "start() serves on a thread of its own";
    for (auto& ids : handler.sessions)
        for (auto id : ids) EXPECT_EQ(id, test_shards() > 1 ? ids[0] : loop);  // several shards: each on its own
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

// ---- H24: datagrams from unbound sockets -----------------------------------------------------------

/// Echoes and counts its sessions; for "handle" mode records what the reply attempt threw.
class UnnamedProbeHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<int> calls{0};
    std::atomic<int> finished{0};
    std::mutex mutex;
    std::vector<std::string> requests;
    std::vector<bool> unnamed;
    std::vector<int> send_errors;
    Session<std::string> handle(Client<std::string>& client) override {
        ++calls;
        std::string request = co_yield recv();
        {
            std::lock_guard lock(mutex);
            requests.push_back(request);
            unnamed.push_back(client.peer_name().is_unnamed());
        }
        int error = 0;
        try {
            co_await client.send_packet(request);
        } catch (const std::system_error& e) {
            error = e.code().value();
        }
        {
            std::lock_guard lock(mutex);
            send_errors.push_back(error);
        }
        ++finished;
    }
};

TEST(QueueingContract, H24_IgnoreDropsUnboundDatagramsSilently) {
    UnnamedProbeHandler handler;
    Text srv(handler);  // UnnamedAddresses::ignore is the default
    ASSERT_EQ(srv.server().options().unnamed_addresses, UnnamedAddresses::ignore);
    auto u = RawClient::unbound();
    auto named = srv.client();

    u.send(srv.address(), "dropped 1");
    u.send(srv.address(), "dropped 2");
    ASSERT_TRUE(wait_until([&] { return srv.server().stats().dropped_unnamed == 2; }));
    named.send(srv.address(), "served");
    EXPECT_EQ(named.recv(), "served");

    EXPECT_EQ(handler.calls.load(), 1) << "the handler must never see an ignored datagram";
    EXPECT_EQ(srv.server().stats().sessions_started, 1u);
    expect_only_lifecycle_logs(srv.log());
}

TEST(QueueingContract, H24_WarnDropsUnboundDatagramsWithTheSpecWarning) {
    UnnamedProbeHandler handler;
    ServerOptions opts;
    opts.unnamed_addresses = UnnamedAddresses::warn;
    Text srv(handler, TextProtocol{}, opts);
    auto u1 = RawClient::unbound();
    auto u2 = RawClient::unbound();

    u1.send(srv.address(), "dropped 1");
    u2.send(srv.address(), "dropped 2");
    ASSERT_TRUE(wait_until([&] { return srv.server().stats().dropped_unnamed == 2; }));
    ASSERT_TRUE(wait_until([&] { return srv.log().count(spdlog::level::warn) == 2; })) << srv.log().dump();

    for (auto& r : srv.log().records()) {
        if (r.level == spdlog::level::warn) {
            EXPECT_EQ(r.text, "A datagram received from an unbound UNIX datagram socket has been dropped.");
        }
    }
    EXPECT_EQ(handler.calls.load(), 0);
    EXPECT_EQ(srv.server().stats().sessions_started, 0u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << srv.log().dump();
}

TEST(QueueingContract, H24_HandleCallsTheHandlerAndItsReplyFails) {
    UnnamedProbeHandler handler;
    ServerOptions opts;
    opts.unnamed_addresses = UnnamedAddresses::handle;
    Text srv(handler, TextProtocol{}, opts);
    auto u = RawClient::unbound();

    u.send(srv.address(), "handled");

    ASSERT_TRUE(wait_until([&] { return handler.finished.load() == 1; }));
    std::lock_guard lock(handler.mutex);
    EXPECT_EQ(handler.requests, std::vector<std::string>{"handled"});
    EXPECT_EQ(handler.unnamed, std::vector<bool>{true});
    EXPECT_EQ(handler.send_errors, std::vector<int>{EINVAL}) << "a reply to an unnamed client fails (H21)";
    const ServerStats s = srv.server().stats();
    EXPECT_EQ(s.dropped_unnamed, 0u);
    EXPECT_EQ(s.datagrams_sent, 0u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

}  // namespace
}  // namespace unixgram::testing
