// SPDX-License-Identifier: MIT
// UnixDatagramClient across threads (spec §8, C2–C5): waits that block in poll(2), and what wakes them.
#include "unixgram/datagram_client.hpp"

#include <gtest/gtest.h>

#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <fstream>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "unit/datagram_client_fixture.hpp"

namespace unixgram::testing::datagram_client {
namespace {

bool proc_syscall_readable() {
    return std::ifstream("/proc/self/task/" + std::to_string(::gettid()) + "/syscall").good();
}

/// True once thread `tid` sleeps in poll(2); read from /proc, so no sleep stands in for synchronisation.
bool wait_until_blocked_in_poll(pid_t tid) {
    const std::string path = "/proc/self/task/" + std::to_string(tid) + "/syscall";
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < until) {
        std::ifstream in(path);
        if (!in) return false;
        long number = -1;
        if (in >> number) {  // "running" while not in a blocking system call
#ifdef SYS_poll
            if (number == SYS_poll) return true;
#endif
            if (number == SYS_ppoll) return true;
        }
        std::this_thread::yield();
    }
    return false;
}

/// Runs `f` at scope exit. Declared after a thread's future, it closes the client first, so a
/// failed ASSERT cannot leave that thread blocked and the future's destructor waiting for it.
template <class F>
class ScopeExit {
public:
    explicit ScopeExit(F f) : f_(std::move(f)) {}
    ScopeExit(const ScopeExit&) = delete;
    ScopeExit& operator=(const ScopeExit&) = delete;
    ~ScopeExit() { f_(); }

private:
    F f_;
};

// ---- C2: send_packet -------------------------------------------------------------------------

TEST_F(DatagramClientContract, C2_SendWaitsForRoomInTheServerQueueAndCloseWakesIt) {
    Client client(server_address_, TestLineProtocol{});
    std::atomic<int> sent{0};
    std::promise<pid_t> sender_tid;
    auto tid = sender_tid.get_future();

    auto sender = std::async(std::launch::async, [&] {
        sender_tid.set_value(::gettid());
        try {
            for (;;) {  // the server never reads until told to: its queue fills, then send waits
                client.send_packet("fill");
                sent.fetch_add(1);
            }
        } catch (const unixgram::ClientClosedError& e) {
            return std::string(e.what());
        } catch (const std::exception& e) {
            return std::string("unexpected: ") + e.what();
        }
    });
    ScopeExit close_first([&] { client.close(); });
    const pid_t sender_thread = tid.get();
    if (!wait_until_blocked_in_poll(sender_thread)) {
        client.close();
        finish_within_5s(sender, "the filling sender");
        GTEST_SKIP() << "cannot see from /proc that the sender waits";
    }

    const int before = sent.load();
    ASSERT_GT(before, 0);
    // Room is a slot in the server's queue where net.unix.max_dgram_qlen is what fills (10, the kernel's
    // default: one read is enough), or else room in the sender's SO_SNDBUF, which the kernel reports only
    // once three quarters of it is free (qlen 512, systemd's default). So: read until the send goes on.
    const auto until = std::chrono::steady_clock::now() + 5s;
    int drained = 0;
    while (sent.load() == before && std::chrono::steady_clock::now() < until) {
        if (drained < before) {
            ASSERT_TRUE(server_.recv());
            ++drained;
        } else {
            std::this_thread::yield();
        }
    }
    EXPECT_GT(sent.load(), before) << "the waiting send did not complete once there was room (" << drained << " of "
                                   << before << " datagrams read)";

    ASSERT_TRUE(wait_until_blocked_in_poll(sender_thread));
    client.close();
    EXPECT_EQ(finish_within_5s(sender, "the waiting sender"), "Closed client");
}

// ---- C3: recv_packet -------------------------------------------------------------------------

TEST_F(DatagramClientContract, C3_SignalDuringABlockedRecvIsRetried) {
    if (!proc_syscall_readable()) GTEST_SKIP() << "/proc/<pid>/task/<tid>/syscall is not readable";
    static std::atomic<int> signals{0};
    struct sigaction action{};
    struct sigaction previous{};
    action.sa_handler = [](int) { signals.fetch_add(1); };
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART: poll fails with EINTR
    ASSERT_EQ(::sigaction(SIGUSR1, &action, &previous), 0);
    ScopeExit restore([&] { ::sigaction(SIGUSR1, &previous, nullptr); });

    Client client(server_address_, TestLineProtocol{});
    std::promise<std::pair<pid_t, pthread_t>> started;
    auto thread = started.get_future();
    auto receiver = std::async(std::launch::async, [&] {
        started.set_value({::gettid(), ::pthread_self()});
        return error_of([&] { throw std::runtime_error("received " + client.recv_packet()); });
    });
    ScopeExit close_first([&] { client.close(); });
    const auto [tid, handle] = thread.get();

    ASSERT_TRUE(wait_until_blocked_in_poll(tid));
    ASSERT_EQ(::pthread_kill(handle, SIGUSR1), 0);
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (signals.load() == 0 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
    ASSERT_EQ(signals.load(), 1);
    ASSERT_TRUE(wait_until_blocked_in_poll(tid));  // back in poll after EINTR, not failed
    EXPECT_EQ(receiver.wait_for(0s), std::future_status::timeout);

    server_.send_to(client.local_name(), "after the signal");
    EXPECT_EQ(finish_within_5s(receiver, "the interrupted receiver"), "received after the signal");
}

TEST_F(DatagramClientContract, C3_TimeoutIncludesWaitingForAnotherThreadsReceive) {
    Client client(server_address_, TestLineProtocol{});
    std::promise<pid_t> started;
    auto tid = started.get_future();
    auto receiver = std::async(std::launch::async, [&] {
        started.set_value(::gettid());
        return error_of([&] { client.recv_packet(); });
    });
    const bool blocked = wait_until_blocked_in_poll(tid.get());

    if (blocked) {
        EXPECT_THROW(client.recv_packet(0s), unixgram::TimeoutError);
    }
    client.close();
    EXPECT_EQ(finish_within_5s(receiver, "the blocked receiver"), "Closed client");
    if (!blocked) GTEST_SKIP() << "cannot see from /proc that the receiver waits";
}

// ---- C5: close, names, threads ---------------------------------------------------------------

TEST_F(DatagramClientContract, C5_CloseFromAnotherThreadWakesABlockedRecv) {
    Client client(server_address_, TestLineProtocol{});
    const UnixAddress local = client.local_name();
    std::promise<pid_t> about_to_block;
    auto tid = about_to_block.get_future();
    auto receiver = std::async(std::launch::async, [&] {
        about_to_block.set_value(::gettid());
        return error_of([&] { client.recv_packet(); });
    });
    const bool seen_blocked = wait_until_blocked_in_poll(tid.get());

    client.close();

    EXPECT_EQ(finish_within_5s(receiver, "the blocked receiver"), "Closed client");
    EXPECT_EQ(client.fileno(), -1);
    // The receiver was the last user of the socket: it closed it on its way out.
    EXPECT_EQ(RawServer(UnixAddress::pathname(dir_.file("probe.sock"))).try_send_to(local, "x"), ECONNREFUSED);
    if (!seen_blocked && proc_syscall_readable()) ADD_FAILURE() << "the receiver was never seen blocked in poll";
}

TEST_F(DatagramClientContract, C5_SendProceedsWhileAnotherThreadIsBlockedInRecv) {
    Client client(server_address_, TestLineProtocol{});
    std::promise<pid_t> about_to_block;
    auto tid = about_to_block.get_future();
    auto receiver = std::async(std::launch::async, [&] {
        about_to_block.set_value(::gettid());
        return client.recv_packet();
    });
    ScopeExit close_first([&] { client.close(); });
    wait_until_blocked_in_poll(tid.get());

    auto sender = std::async(std::launch::async, [&] { client.send_packet("ping"); });
    finish_within_5s(sender, "the send beside a blocked recv");
    auto got = server_.recv();
    ASSERT_TRUE(got);
    EXPECT_EQ(got->data, "ping");

    server_.send_to(got->sender, "pong");
    EXPECT_EQ(finish_within_5s(receiver, "the receiver"), "pong");
}

TEST_F(DatagramClientContract, C5_SendsAndReceivesOnTwoThreadsKeepOrder) {
    constexpr int kCount = 500;
    Client client(server_address_, TestLineProtocol{});
    auto echo = std::async(std::launch::async, [&] {
        for (int i = 0; i < kCount; ++i) {
            auto got = server_.recv();
            if (!got) return i;
            server_.send_to(got->sender, got->data);
        }
        return kCount;
    });
    auto sender = std::async(std::launch::async, [&] {
        for (int i = 0; i < kCount; ++i) client.send_packet("packet " + std::to_string(i));
    });
    ScopeExit close_first([&] { client.close(); });

    for (int i = 0; i < kCount; ++i) ASSERT_EQ(client.recv_packet(5s), "packet " + std::to_string(i));
    finish_within_5s(sender, "the sender");
    EXPECT_EQ(finish_within_5s(echo, "the echo server"), kCount);
}

}  // namespace
}  // namespace unixgram::testing::datagram_client
