// SPDX-License-Identifier: MIT
// The io_uring backend where io_uring is refused (the sysctl kernel.io_uring_disabled, a container's seccomp
// profile): start() fails with a message that names the cause and the way out, and leaves nothing behind.
// This process refuses io_uring_setup with EPERM before any test runs. Built with the io_uring backend only.
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>

#include "backend/refuse_syscall.hpp"
#include "contract/harness.hpp"

namespace unixgram::testing {
namespace {

const int filter_error = refuse_syscall(__NR_io_uring_setup, EPERM);

class EchoHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(Client<std::string>& client) override {
        std::string datagram = co_yield recv();
        co_await client.send_packet(datagram);
    }
};

TEST(UringRefused, StartFailsWithAMessageNamingTheCauseAndTheEpollBuild) {
    ASSERT_EQ(filter_error, 0) << "installing the seccomp filter failed: " << std::strerror(filter_error);
    TempDir dir;
    const std::string path = dir.file("server.sock");
    EchoHandler handler;
    UnixDatagramServer<std::string, std::string, TextProtocol> server(UnixAddress::pathname(path), TextProtocol{},
                                                                      handler);
    try {
        server.start();
        FAIL() << "start() succeeded although io_uring_setup is refused";
    } catch (const std::system_error& e) {
        const std::string what = e.what();
        EXPECT_EQ(e.code().value(), EPERM) << what;
        EXPECT_NE(what.find("io_uring_disabled"), std::string::npos) << what;
        EXPECT_NE(what.find("-Dio_backend=epoll"), std::string::npos) << what;
    }
    server.close();
    EXPECT_FALSE(std::filesystem::exists(path)) << "the failed start left its socket file behind";
}

}  // namespace
}  // namespace unixgram::testing
