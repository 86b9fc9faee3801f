// SPDX-License-Identifier: MIT
// Contract tests for sharding that need a client owned by a worker shard: a full mailbox, a worker over its
// queued-bytes share, stop() from a worker's handler, a worker that cannot start.
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

#include "contract/sharding.hpp"

namespace unixgram::testing {
namespace {

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

}  // namespace
}  // namespace unixgram::testing
