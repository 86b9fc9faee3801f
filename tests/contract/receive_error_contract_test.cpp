// SPDX-License-Identifier: MIT
// Contract test for a failed read of the server's socket: it is counted (ServerStats::receive_errors), logged,
// and the server reads on, losing nothing else. The failure is the kernel's own, on a real socket, on both
// backends (the epoll loop's recvmmsg and io_uring's multishot recvmsg): no mock.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "contract/harness.hpp"

namespace unixgram::testing {
namespace {

using Text = RunningServer<std::string, std::string, TextProtocol>;

/// Answers "re:" + request, and records the server's socket (Client::socket()) for the test.
class SocketRecordingEcho : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<int> socket_fd{-1};
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        socket_fd = client.socket().fileno();
        co_await client.send_packet("re:" + request);
    }
};

std::string errno_text() { return std::string(std::strerror(errno)) + " (errno " + std::to_string(errno) + ")"; }

TEST(ReceiveErrorContract, AFailedReadIsCountedAndLoggedOnceAndTheServerReadsOn) {
    SocketRecordingEcho handler;
    Text srv{handler};
    RawClient a = srv.client();
    a.send(srv.address(), "before");
    ASSERT_EQ(a.recv(), "re:before");
    const int server_fd = handler.socket_fd.load();
    ASSERT_GE(server_fd, 0);

    // The kernel's way to make a datagram socket's read fail (net/unix/af_unix.c, unix_dgram_disconnected): two
    // sockets connected to each other, and the one that holds a datagram from the other connects elsewhere. Its
    // queue is purged and the other, here the server's socket, gets ECONNRESET at its next read, once.
    RawClient c = srv.client("c.sock");
    RawClient elsewhere = srv.client("elsewhere.sock");
    ASSERT_EQ(::connect(c.fd(), srv.address().data(), srv.address().length()), 0) << errno_text();
    const UnixAddress c_name = c.local_name();
    ASSERT_EQ(::connect(server_fd, c_name.data(), c_name.length()), 0) << errno_text();
    ASSERT_EQ(::send(server_fd, "x", 1, MSG_DONTWAIT), 1) << errno_text();
    const UnixAddress elsewhere_name = elsewhere.local_name();
    ASSERT_EQ(::connect(c.fd(), elsewhere_name.data(), elsewhere_name.length()), 0) << errno_text();
    // The server's socket as it was, unconnected (its pending error stays until a read takes it).
    sockaddr unspecified{};
    unspecified.sa_family = AF_UNSPEC;
    ASSERT_EQ(::connect(server_fd, &unspecified, sizeof unspecified), 0) << errno_text();

    ASSERT_TRUE(wait_until([&] { return srv.server().stats().receive_errors >= 1; }))
        << "the failed read was not counted; log:\n" << srv.log().dump();
    EXPECT_TRUE(wait_until([&] { return srv.log().count(spdlog::level::err, "Reading the socket failed") >= 1; }))
        << srv.log().dump();
    const std::string reset = std::strerror(ECONNRESET);
    EXPECT_EQ(srv.log().count(spdlog::level::err, reset + " (errno " + std::to_string(ECONNRESET) + ")"), 1u)
        << "the log line must name the error; log:\n" << srv.log().dump();

    // It reads on: every later datagram is answered, in order, and nothing else counts as failed or dropped.
    for (int i = 0; i < 20; ++i) a.send(srv.address(), "after " + std::to_string(i));
    for (int i = 0; i < 20; ++i) ASSERT_EQ(a.recv(), "re:after " + std::to_string(i)) << "reply " << i;
    RawClient fresh = srv.client();
    fresh.send(srv.address(), "fresh");
    EXPECT_EQ(fresh.recv(), "re:fresh");
    const ServerStats st = srv.server().stats();
    EXPECT_EQ(st.receive_errors, 1u) << "one failure, one count";
    EXPECT_EQ(st.dropped_total(), 0u);
    EXPECT_EQ(st.datagrams_received, 22u);
    EXPECT_EQ(srv.log().count(spdlog::level::err, "Reading the socket failed"), 1u) << srv.log().dump();
}

}  // namespace
}  // namespace unixgram::testing
