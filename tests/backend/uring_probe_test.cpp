// SPDX-License-Identifier: MIT
// The io_uring backend's kernel probe for multishot recvmsg (kernel 6.0). A 5.19 kernel has provided-buffer
// rings but refuses IORING_RECV_MULTISHOT as an unknown receive flag (-EINVAL when the request is prepared);
// the backend would then re-arm a failing receive every turn and never read a datagram, so start() refuses
// such a kernel instead (uring_backend.cpp). Here a flag that no kernel knows stands in for that refusal.
// Built with the io_uring backend only.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>

#include "io/uring/compat.hpp"

namespace unixgram::testing {
namespace {

using detail::uring_compat::MultishotProbe;
using detail::uring_compat::multishot_recvmsg_refused;
using detail::uring_compat::probe_multishot_recvmsg;

TEST(UringMultishotProbe, ThisKernelDeliversTheQueuedDatagramAndStaysArmed) {
    const MultishotProbe probe = probe_multishot_recvmsg(0);
    ASSERT_TRUE(probe.ran) << "the probe could not set up its sockets or ring";
    EXPECT_EQ(probe.result, 0) << "multishot recvmsg failed: " << -probe.result;
    EXPECT_FALSE(multishot_recvmsg_refused());
}

TEST(UringMultishotProbe, AReceiveFlagTheKernelDoesNotKnowIsReadAsNoMultishot) {
    // 1 << 15: outside every kernel's receive flags, as IORING_RECV_MULTISHOT (1 << 1) is outside 5.19's.
    const MultishotProbe probe = probe_multishot_recvmsg(1u << 15);
    ASSERT_TRUE(probe.ran) << "the probe could not set up its sockets or ring";
    EXPECT_EQ(probe.result, -EINVAL);
}

TEST(UringMultishotProbe, RepeatedProbesLeaveNoFdBehind) {
    // Each probe cancels its receive and reaps it before the ring, the buffers and the sockets go.
    const int before = ::dup(0);
    ASSERT_GE(before, 0);
    ::close(before);
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(probe_multishot_recvmsg(0).ran);
    const int after = ::dup(0);
    ASSERT_GE(after, 0);
    ::close(after);
    EXPECT_EQ(after, before) << "the lowest free fd moved: a probe leaked an fd";
}

}  // namespace
}  // namespace unixgram::testing
