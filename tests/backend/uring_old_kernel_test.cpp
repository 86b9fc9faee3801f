// SPDX-License-Identifier: MIT
// The io_uring backend on a kernel without provided-buffer rings (before 5.19: Ubuntu 22.04's 5.15, Debian 11's
// 5.10): start() fails with a message that names the kernel and the way out. This process makes
// io_uring_register(IORING_REGISTER_PBUF_RING) fail with EINVAL, as such a kernel does, before any test runs.
// Built with the io_uring backend only.
#include <gtest/gtest.h>
#include <liburing.h>
#include <sys/syscall.h>
#include <sys/utsname.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>

#include "backend/refuse_syscall.hpp"
#include "contract/harness.hpp"

namespace unixgram::testing {
namespace {

const int filter_error = refuse_syscall(__NR_io_uring_register, EINVAL, IORING_REGISTER_PBUF_RING);

class EchoHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(Client<std::string>& client) override {
        std::string datagram = co_yield recv();
        co_await client.send_packet(datagram);
    }
};

TEST(UringOldKernel, StartFailsWithAMessageNamingTheKernelAndTheEpollBuild) {
    ASSERT_EQ(filter_error, 0) << "installing the seccomp filter failed: " << std::strerror(filter_error);
    utsname u{};
    ASSERT_EQ(::uname(&u), 0);
    TempDir dir;
    const std::string path = dir.file("server.sock");
    EchoHandler handler;
    UnixDatagramServer<std::string, std::string, TextProtocol> server(UnixAddress::pathname(path), TextProtocol{},
                                                                      handler);
    try {
        server.start();
        FAIL() << "start() succeeded although provided-buffer rings are refused";
    } catch (const std::system_error& e) {
        const std::string what = e.what();
        EXPECT_EQ(e.code().value(), EINVAL) << what;
        EXPECT_NE(what.find("Linux 6.0 or later"), std::string::npos) << what;
        EXPECT_NE(what.find(std::string("this kernel is ") + u.release), std::string::npos) << what;
        EXPECT_NE(what.find("-Dio_backend=epoll"), std::string::npos) << what;
    }
    server.close();
    EXPECT_FALSE(std::filesystem::exists(path)) << "the failed start left its socket file behind";
}

}  // namespace
}  // namespace unixgram::testing
