// SPDX-License-Identifier: MIT
// Contract test for a failed read of the server's socket: it is counted (ServerStats::receive_errors), logged,
// receiving pauses for a moment (doubling while reads keep failing), and the server reads on, losing nothing. The failure is the kernel's own, on a real socket, on both
// backends (the epoll loop's recvmmsg and io_uring's multishot recvmsg): no mock.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

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

/// The kernel's way to make a datagram socket's read fail (net/unix/af_unix.c, unix_dgram_disconnected): two
/// sockets connected to each other, and the one that holds a datagram from the other connects elsewhere. Its
/// queue is purged and the other, here the server's socket, gets ECONNRESET at its next read, once. The
/// server's socket is left unconnected again (its pending error stays until a read takes it).
void make_the_next_read_fail(int server_fd, const UnixAddress& server, RawClient& c, const RawClient& elsewhere) {
    ASSERT_EQ(::connect(c.fd(), server.data(), server.length()), 0) << errno_text();
    const UnixAddress c_name = c.local_name();
    ASSERT_EQ(::connect(server_fd, c_name.data(), c_name.length()), 0) << errno_text();
    ASSERT_EQ(::send(server_fd, "x", 1, MSG_DONTWAIT), 1) << errno_text();
    const UnixAddress elsewhere_name = elsewhere.local_name();
    ASSERT_EQ(::connect(c.fd(), elsewhere_name.data(), elsewhere_name.length()), 0) << errno_text();
    sockaddr unspecified{};
    unspecified.sa_family = AF_UNSPEC;
    ASSERT_EQ(::connect(server_fd, &unspecified, sizeof unspecified), 0) << errno_text();
}

/// The server's "Reading the socket failed" lines, in order.
std::vector<std::string> failure_lines(CaptureSink& log) {
    std::vector<std::string> lines;
    for (const auto& r : log.records()) {
        if (r.level == spdlog::level::err && r.text.find("Reading the socket failed") != std::string::npos) {
            lines.push_back(r.text);
        }
    }
    return lines;
}

TEST(ReceiveErrorContract, AFailedReadIsCountedLoggedAndBackedOffAndTheServerReadsOn) {
    SocketRecordingEcho handler;
    Text srv{handler};
    RawClient a = srv.client();
    a.send(srv.address(), "before");
    ASSERT_EQ(a.recv(), "re:before");
    const int server_fd = handler.socket_fd.load();
    ASSERT_GE(server_fd, 0);
    RawClient c = srv.client("c.sock");
    RawClient elsewhere = srv.client("elsewhere.sock");
    auto errors = [&] { return srv.server().stats().receive_errors; };

    make_the_next_read_fail(server_fd, srv.address(), c, elsewhere);
    ASSERT_TRUE(wait_until([&] { return errors() >= 1; })) << "the failed read was not counted; log:\n"
                                                           << srv.log().dump();
    // It reads on: every later datagram is answered, in order, and nothing else counts as failed or dropped.
    for (int i = 0; i < 20; ++i) a.send(srv.address(), "after " + std::to_string(i));
    for (int i = 0; i < 20; ++i) ASSERT_EQ(a.recv(), "re:after " + std::to_string(i)) << "reply " << i;
    EXPECT_EQ(errors(), 1u) << "one failure, one count";

    // Failures with no datagram read in between: each pause doubles (a failure that persists must not spin
    // the loop); the datagrams read above reset it, so the second failure pauses 1 ms again.
    for (std::uint64_t n = 2; n <= 5; ++n) {
        make_the_next_read_fail(server_fd, srv.address(), c, elsewhere);
        ASSERT_TRUE(wait_until([&] { return errors() >= n; })) << "failure " << n << " was not counted; log:\n"
                                                               << srv.log().dump();
    }
    ASSERT_TRUE(wait_until([&] { return failure_lines(srv.log()).size() >= 5; })) << srv.log().dump();
    const std::vector<std::string> lines = failure_lines(srv.log());
    const std::string reset = std::string(std::strerror(ECONNRESET)) + " (errno " + std::to_string(ECONNRESET) + ")";
    const char* pauses[] = {"1 ms", "1 ms", "2 ms", "4 ms", "8 ms"};
    ASSERT_EQ(lines.size(), 5u) << srv.log().dump();
    for (std::size_t i = 0; i < lines.size(); ++i) {
        EXPECT_NE(lines[i].find(reset), std::string::npos) << "line " << i << " must name the error: " << lines[i];
        EXPECT_NE(lines[i].find(std::string("reading again in ") + pauses[i]), std::string::npos)
            << "line " << i << ": " << lines[i];
    }

    RawClient fresh = srv.client();
    fresh.send(srv.address(), "fresh");
    EXPECT_EQ(fresh.recv(), "re:fresh") << "the server must read again after its pauses";
    const ServerStats st = srv.server().stats();
    EXPECT_EQ(st.receive_errors, 5u);
    EXPECT_EQ(st.dropped_total(), 0u);
    EXPECT_EQ(st.datagrams_received, 22u);
}

}  // namespace
}  // namespace unixgram::testing
