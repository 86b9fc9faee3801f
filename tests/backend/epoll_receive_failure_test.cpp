// SPDX-License-Identifier: MIT
// A read of the socket that fails every time (the epoll backend's recvmmsg refused with ENOMEM by a seccomp
// filter this process installs before main): the server must not spin. Every failure is counted and the log
// is rate-limited, and between failures receiving pauses, doubling up to 128 ms: seven failures in a row take
// at least 380 ms and little CPU, where a loop that reads again at once makes them in microseconds at 100 %.
// Built with the epoll backend only: io_uring's reads are not system calls a filter can refuse (its failure
// path runs on both backends in contract/receive_error_contract_test.cpp).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>

#include "backend/refuse_syscall.hpp"
#include "contract/harness.hpp"

namespace unixgram::testing {
namespace {

using Text = RunningServer<std::string, std::string, TextProtocol>;

// Before main: no server, no thread of the tests exists yet.
const int filter_error = refuse_syscall(__NR_recvmmsg, ENOMEM);

class Echo : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        co_await client.send_packet(request);
    }
};

double process_cpu_seconds() {
    timespec ts{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

TEST(EpollReceiveFailure, TheFilterRefusesRecvmmsg) {
    ASSERT_EQ(filter_error, 0) << "installing the seccomp filter failed: " << std::strerror(filter_error);
    int pair[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM, 0, pair), 0);
    ASSERT_EQ(::send(pair[0], "x", 1, 0), 1);
    mmsghdr m{};
    errno = 0;
    EXPECT_EQ(::syscall(__NR_recvmmsg, pair[1], &m, 1, MSG_DONTWAIT, nullptr), -1);
    EXPECT_EQ(errno, ENOMEM) << "recvmmsg must be refused in this process, or the test below proves nothing";
    ::close(pair[0]);
    ::close(pair[1]);
}

TEST(EpollReceiveFailure, AReadThatAlwaysFailsIsCountedAndBackedOffNotSpun) {
    Echo handler;
    Text srv{handler};
    RawClient a = srv.client();
    a.send(srv.address(), "never read");  // the socket stays readable, and every read fails
    auto errors = [&] { return srv.server().stats().receive_errors; };
    ASSERT_TRUE(wait_until([&] { return errors() >= 3; })) << "the failed reads were not counted; log:\n"
                                                           << srv.log().dump();

    // From the 3rd failure to the 10th the pauses are 4, 8, 16, 32, 64, 128 and 128 ms: at least 380 ms
    // (a timer never fires early, and a slower machine only adds to it).
    const auto start = std::chrono::steady_clock::now();
    const double cpu_before = process_cpu_seconds();
    ASSERT_TRUE(wait_until([&] { return errors() >= 10; })) << "the failed reads stopped; log:\n" << srv.log().dump();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double cpu = process_cpu_seconds() - cpu_before;
    EXPECT_GE(seconds, 0.35) << "seven failures in " << seconds << " s: the loop reads again without pausing";
    EXPECT_LT(cpu, 0.5 * seconds) << "the process used " << cpu << " s of CPU in " << seconds
                                  << " s while reads kept failing";
    // Rate-limited: at most kBurst lines a second, plus the "suppressed" summaries.
    EXPECT_LE(srv.log().count(spdlog::level::err, "Reading the socket failed"), 15u) << srv.log().dump();
    EXPECT_EQ(srv.server().stats().datagrams_received, 0u);
    EXPECT_FALSE(a.recv(50ms).has_value()) << "nothing was read, so nothing can be answered";
}

}  // namespace
}  // namespace unixgram::testing
