// SPDX-License-Identifier: MIT
// The epoll backend without epoll_pwait2 (kernels before 5.11, seccomp profiles that refuse it): this process
// installs a seccomp filter that answers epoll_pwait2 with ENOSYS before any test runs, so every server below
// waits with epoll_wait. Built with the epoll backend only. Before the fallback, such a loop spun without
// ever reading its socket.
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstring>
#include <string>

#include "contract/harness.hpp"
#include "backend/refuse_syscall.hpp"
#include "io/epoll/epoll_backend.hpp"

namespace unixgram::testing {
namespace {

#ifndef __NR_epoll_pwait2
#define __NR_epoll_pwait2 441  // the same number on every architecture (asm-generic and x86-64)
#endif

// Before main: no server, no thread of the tests exists yet.
const int filter_error = refuse_syscall(__NR_epoll_pwait2, ENOSYS);

class EchoUntilIdleHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(Client<std::string>& client) override {
        for (;;) {
            std::string datagram = "idle";
            bool idle = false;
            try {
                datagram = co_yield recv(RecvParams{.timeout = 100ms});
            } catch (const TimeoutError&) {
                idle = true;
            }
            co_await client.send_packet(datagram);
            if (idle) co_return;
        }
    }
};

TEST(EpollFallback, TheFilterRefusesEpollPwait2) {
    ASSERT_EQ(filter_error, 0) << "installing the seccomp filter failed: " << std::strerror(filter_error);
    const int ep = ::epoll_create1(EPOLL_CLOEXEC);
    ASSERT_GE(ep, 0);
    epoll_event ev{};
    const timespec zero{0, 0};
    errno = 0;
    EXPECT_EQ(::syscall(__NR_epoll_pwait2, ep, &ev, 1, &zero, nullptr, 0), -1);
    EXPECT_EQ(errno, ENOSYS) << "epoll_pwait2 must be refused in this process, or the tests below prove nothing";
    ::close(ep);
}

TEST(EpollFallback, ServesInOrderWithEpollWait) {
    ASSERT_EQ(filter_error, 0);
    EchoUntilIdleHandler handler;
    RunningServer<std::string, std::string, TextProtocol> srv(handler);
    RawClient c = srv.client();
    for (int i = 0; i < 200; ++i) c.send(srv.address(), "d" + std::to_string(i));
    for (int i = 0; i < 200; ++i) {
        const auto reply = c.recv();
        ASSERT_TRUE(reply) << "no reply " << i << " within 5 s: the loop does not read its socket";
        ASSERT_EQ(*reply, "d" + std::to_string(i));
    }
}

TEST(EpollFallback, TimedWaitsStillExpire) {
    // The loop's deadline (the handler's 100 ms receive timeout) reaches the kernel as epoll_wait's timeout.
    ASSERT_EQ(filter_error, 0);
    EchoUntilIdleHandler handler;
    RunningServer<std::string, std::string, TextProtocol> srv(handler);
    RawClient c = srv.client();
    c.send(srv.address(), "hello");
    EXPECT_EQ(c.recv(), "hello");
    EXPECT_EQ(c.recv(), "idle") << "the receive timeout never fired";
}

TEST(EpollFallback, TimeoutsRoundUpToWholeMilliseconds) {
    // A deadline 0.3 ms away must become 1 ms, not a 0 ms poll that spins until the deadline passes.
    const timespec cases[] = {{0, 0}, {0, 1}, {0, 300000}, {0, 1000000}, {0, 1000001}, {2, 999999999}};
    const int expected[] = {0, 1, 1, 1, 2, 3000};
    for (std::size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i)
        EXPECT_EQ(detail::epoll_wait_timeout_ms(&cases[i]), expected[i])
            << cases[i].tv_sec << " s " << cases[i].tv_nsec << " ns";
    EXPECT_EQ(detail::epoll_wait_timeout_ms(nullptr), -1) << "no deadline: wait forever";
    const timespec far{static_cast<time_t>(INT_MAX), 0};
    EXPECT_EQ(detail::epoll_wait_timeout_ms(&far), INT_MAX);
}

}  // namespace
}  // namespace unixgram::testing
