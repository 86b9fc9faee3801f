// SPDX-License-Identifier: MIT
// Contract tests for the loop's turns: what one turn reads is answered before the loop sleeps, however many
// datagrams the next turn finds (real sockets, both backends; tools/test also runs them with
// net.unix.max_dgram_qlen 512, where a turn can read a whole batch).
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>

#include "contract/harness.hpp"

namespace unixgram::testing {
namespace {

using Text = RunningServer<std::string, std::string, TextProtocol>;

/// "block..." stops the whole loop thread (a handler that blocks, which a handler should not do) until the
/// test lets it go; every request is answered "re:" + request. At most 10 s per block, so that a failing
/// test ends.
class LoopBlockingHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<int> blocked{0};  ///< "block" requests entered so far
    void let_go() {
        {
            std::lock_guard lock(mutex_);
            ++released_;
        }
        cv_.notify_all();
    }
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        if (request.rfind("block", 0) == 0) {
            const int mine = ++blocked;
            std::unique_lock lock(mutex_);
            cv_.wait_for(lock, 10s, [&] { return released_ >= mine; });
        }
        co_await client.send_packet("re:" + request);
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    int released_ = 0;
};

/// A server whose loop is stopped in a turn that read two datagrams at once ("two at once" from b, "block 2"
/// from c): the epoll loop then reads the socket directly at its next turn, without asking epoll. What a
/// test sends before go_on() is read there.
class LoopTurnContract : public ::testing::Test {
protected:
    void SetUp() override {
        a.send(srv.address(), "block 1");
        ASSERT_TRUE(wait_until([&] { return handler.blocked.load() == 1; })) << "the first block never ran";
        // The loop is stopped: these two wait in the socket's queue and are read together.
        b.send(srv.address(), "two at once");
        c.send(srv.address(), "block 2");
        handler.let_go();
        ASSERT_TRUE(wait_until([&] { return handler.blocked.load() == 2; })) << "the second block never ran";
    }
    /// Lets the loop go on; the first block and the turn's two datagrams are answered. (With shards, "block 2"
    /// may stop the thread that owes a's reply before it has sent it.)
    void go_on() {
        handler.let_go();
        EXPECT_EQ(a.recv(), "re:block 1");
        EXPECT_EQ(b.recv(), "re:two at once");
        EXPECT_EQ(c.recv(), "re:block 2");
    }

    LoopBlockingHandler handler;
    Text srv{handler};
    RawClient a = srv.client(), b = srv.client(), c = srv.client(), d = srv.client();
};

// A datagram read alone there started a session whose reply the loop once left unsent while it went to
// sleep, until another datagram woke it.
TEST_F(LoopTurnContract, ADatagramReadAloneAtTheNextTurnIsAnsweredWithoutAnotherToWakeTheLoop) {
    d.send(srv.address(), "alone");
    go_on();
    EXPECT_EQ(d.recv(), "re:alone") << "the reply to the datagram read alone was not sent";
    EXPECT_EQ(srv.server().stats().dropped_total(), 0u);
}

// A whole batch read there (64 datagrams, then an empty socket: possible where net.unix.max_dgram_qlen is 64
// or more, as in tools/test's second run) once made the epoll loop sleep with the batch's replies unsent.
// Where the queue holds fewer, as many as it takes are sent, and all must be answered.
TEST_F(LoopTurnContract, AWholeBatchReadAtTheNextTurnIsAnsweredWithoutAnotherToWakeTheLoop) {
    int queued = 0;
    for (; queued < 64; ++queued) {
        const std::string body = "n" + std::to_string(queued);
        if (::sendto(d.fd(), body.data(), body.size(), MSG_DONTWAIT, srv.address().data(), srv.address().length()) < 0) {
            ASSERT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK) << std::strerror(errno);
            break;
        }
    }
    ASSERT_GT(queued, 0);
    go_on();
    for (int i = 0; i < queued; ++i) {
        ASSERT_EQ(d.recv(), "re:n" + std::to_string(i)) << "reply " << i << " of " << queued;
    }
    EXPECT_EQ(srv.server().stats().dropped_total(), 0u);
}

}  // namespace
}  // namespace unixgram::testing
