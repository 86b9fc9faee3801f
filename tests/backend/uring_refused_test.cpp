// SPDX-License-Identifier: MIT
// The io_uring backend where io_uring is refused (the sysctl kernel.io_uring_disabled, a container's seccomp
// profile): start() fails with a message that names the cause and the way out, and leaves nothing behind.
// This process refuses io_uring_setup with EPERM before any test runs. Built with the io_uring backend only.
#include <gtest/gtest.h>
#include <sys/syscall.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "backend/failed_start.hpp"
#include "backend/refuse_syscall.hpp"

namespace unixgram::testing {
namespace {

const int filter_error = refuse_syscall(__NR_io_uring_setup, EPERM);

TEST(UringRefused, StartFailsWithAMessageNamingTheCauseAndTheEpollBuild) {
    ASSERT_EQ(filter_error, 0) << "installing the seccomp filter failed: " << std::strerror(filter_error);
    const auto failure = start_failure();
    ASSERT_TRUE(failure) << "start() succeeded although io_uring_setup is refused";
    EXPECT_EQ(failure->code, EPERM) << failure->what;
    EXPECT_NE(failure->what.find("io_uring_disabled"), std::string::npos) << failure->what;
    EXPECT_NE(failure->what.find("-Dio_backend=epoll"), std::string::npos) << failure->what;
}

}  // namespace
}  // namespace unixgram::testing
