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
#include <string>

#include "backend/failed_start.hpp"
#include "backend/refuse_syscall.hpp"

namespace unixgram::testing {
namespace {

const int filter_error = refuse_syscall(__NR_io_uring_register, EINVAL, IORING_REGISTER_PBUF_RING);

TEST(UringOldKernel, StartFailsWithAMessageNamingTheKernelAndTheEpollBuild) {
    ASSERT_EQ(filter_error, 0) << "installing the seccomp filter failed: " << std::strerror(filter_error);
    utsname u{};
    ASSERT_EQ(::uname(&u), 0);
    const auto failure = start_failure();
    ASSERT_TRUE(failure) << "start() succeeded although provided-buffer rings are refused";
    EXPECT_EQ(failure->code, EINVAL) << failure->what;
    EXPECT_NE(failure->what.find("Linux 6.0 or later"), std::string::npos) << failure->what;
    EXPECT_NE(failure->what.find(std::string("this kernel is ") + u.release), std::string::npos) << failure->what;
    EXPECT_NE(failure->what.find("-Dio_backend=epoll"), std::string::npos) << failure->what;
}

}  // namespace
}  // namespace unixgram::testing
