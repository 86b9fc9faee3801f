// SPDX-License-Identifier: MIT
// ServerOptions::early_replies: a reply that holds up the same client's next datagram is sent at once
// (its own sendto) instead of with the loop turn's batch. The contract it must keep: every reply, in
// order (H12, H27: one session at a time per client), nothing dropped; the counter says it happened.
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <string>
#include <vector>

#include "contract/lifecycle.hpp"
#include "contract/session_waits.hpp"

namespace unixgram::testing {
namespace {

/// Echoes each request in upper case, one request per session. "hold" first waits until the server
/// has read `hold_until` datagrams, so that the ones sent after it are queued behind its session.
class HoldingEcho : public CountingHandler {
public:
    std::uint64_t hold_until = 0;
    std::atomic<bool> holding{false};
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        if (request == "hold") {
            holding = true;
            co_await wait_received(hold_until);
        }
        co_await client.send_packet(upper(request));
    }
};

ServerOptions options_with(bool early, unsigned shards) {
    ServerOptions o;
    o.early_replies = early;
    o.shards = shards;
    return o;
}

/// Receives `count` replies and checks them against "A0".."A{count-1}" in upper case, in order.
void expect_replies_in_order(RawClient& c, int count, const std::string& first = "") {
    if (!first.empty()) {
        ASSERT_EQ(c.recv(), first);
    }
    for (int i = 0; i < count; ++i) ASSERT_EQ(c.recv(), "A" + std::to_string(i)) << "reply " << i;
    EXPECT_EQ(c.recv(0ms), std::nullopt) << "one reply per request, no more";
}

// Datagrams queued behind a session (H12): each of their sessions but the last has a datagram waiting
// behind it when it replies, so with early_replies those replies go out at once, one per queued
// datagram, and every reply still arrives in order.
void queued_run(bool early, unsigned shards) {
    constexpr int kQueued = 6;
    HoldingEcho handler;
    handler.hold_until = 1 + kQueued;
    RunningServer<std::string, std::string, TextProtocol> srv(handler, TextProtocol{}, options_with(early, shards));
    auto c = srv.client();
    c.send(srv.address(), "hold");
    ASSERT_TRUE(wait_until([&] { return handler.holding.load(); })) << "the first session never started";
    for (int i = 0; i < kQueued; ++i) c.send(srv.address(), "a" + std::to_string(i));

    expect_replies_in_order(c, kQueued, "HOLD");
    // The client can read a batched reply before the loop has reaped its completion: wait for the count.
    EXPECT_TRUE(wait_until([&] { return srv.server().stats().datagrams_sent == 1u + kQueued; }))
        << "datagrams_sent: " << srv.server().stats().datagrams_sent;
    const ServerStats st = srv.server().stats();
    EXPECT_EQ(st.dropped_total(), 0u);
    // "hold" and a0..a4 each had a datagram waiting when they replied; a5 had none.
    EXPECT_EQ(st.replies_sent_early, early ? std::uint64_t{kQueued} : 0u);
}

TEST(EarlyRepliesContract, H12_RepliesOfQueuedDatagramsGoOutAtOnceAndInOrder) { queued_run(true, 1); }
TEST(EarlyRepliesContract, H12_RepliesOfQueuedDatagramsGoOutAtOnceAndInOrder_4Shards) { queued_run(true, 4); }
TEST(EarlyRepliesContract, H12_Off_EveryReplyWaitsForTheBatch) { queued_run(false, 1); }
TEST(EarlyRepliesContract, H12_Off_EveryReplyWaitsForTheBatch_4Shards) { queued_run(false, 4); }

// A client that does not read: its receive queue (net.unix.max_dgram_qlen datagrams) fills while its queued
// datagrams are answered early. The first reply it refuses waits for its retry, like any refused reply (H23:
// EAGAIN waits until writable), and the run continues in order once the client reads; nothing is lost.
TEST(EarlyRepliesContract, H23_ARefusedEarlyReplyIsRetriedAndOrderHolds) {
    std::size_t qlen = 10;
    std::ifstream("/proc/sys/net/unix/max_dgram_qlen") >> qlen;
    const int queued = static_cast<int>(qlen) + 10;  // more replies than the client's queue holds
    HoldingEcho handler;
    handler.hold_until = 1 + static_cast<std::uint64_t>(queued);
    RunningServer<std::string, std::string, TextProtocol> srv(handler, TextProtocol{}, options_with(true, 1));
    auto c = srv.client();
    c.send(srv.address(), "hold");
    ASSERT_TRUE(wait_until([&] { return handler.holding.load(); })) << "the first session never started";
    for (int i = 0; i < queued; ++i) c.send(srv.address(), "a" + std::to_string(i));
    ASSERT_TRUE(wait_until([&] { return srv.server().stats().send_retries > 0; }))
        << "the client's full queue never refused a reply (max_dgram_qlen " << qlen << ")";

    expect_replies_in_order(c, queued, "HOLD");
    EXPECT_TRUE(wait_until([&] { return srv.server().stats().datagrams_sent == 1u + queued; }))
        << "datagrams_sent: " << srv.server().stats().datagrams_sent;
    const ServerStats st = srv.server().stats();
    EXPECT_EQ(st.dropped_total(), 0u);
    EXPECT_EQ(st.send_errors, 0u);
    EXPECT_GE(st.replies_sent_early, qlen) << "the replies that fit were sent early";
}

// send_timeout 0 allows no retry: a reply the client's full queue refuses, early or not, ends its send_packet
// with TimeoutError at once (the handler's error, logged), and the server goes on with the next datagram.
TEST(EarlyRepliesContract, H23_ZeroSendTimeout_ARefusedEarlyReplyTimesOutAtOnce) {
    std::size_t qlen = 10;
    std::ifstream("/proc/sys/net/unix/max_dgram_qlen") >> qlen;
    const int queued = static_cast<int>(qlen) + 10;
    HoldingEcho handler;
    handler.hold_until = 1 + static_cast<std::uint64_t>(queued);
    ServerOptions options = options_with(true, 1);
    options.send_timeout = 0ms;
    RunningServer<std::string, std::string, TextProtocol> srv(handler, TextProtocol{}, options);
    auto c = srv.client();
    c.send(srv.address(), "hold");
    ASSERT_TRUE(wait_until([&] { return handler.holding.load(); })) << "the first session never started";
    for (int i = 0; i < queued; ++i) c.send(srv.address(), "a" + std::to_string(i));
    // Every reply is either sent or timed out: none waits for a retry that send_timeout 0 forbids.
    EXPECT_TRUE(wait_until([&] {
        const ServerStats st = srv.server().stats();
        return st.datagrams_sent + st.send_timeouts == 1u + queued;
    })) << "sent " << srv.server().stats().datagrams_sent << ", timed out " << srv.server().stats().send_timeouts;
    const ServerStats st = srv.server().stats();
    EXPECT_GE(st.send_timeouts, 1u);
    EXPECT_GE(st.datagrams_sent, qlen) << "the replies that fit were sent";
    EXPECT_EQ(c.recv(), "HOLD") << "the first reply fitted and comes first";
}

/// Echoes each request in upper case, one request per session.
class Echo : public TextHandler {
public:
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        co_await client.send_packet(upper(request));
    }
};

// A run of one client's datagrams read in one batch (they wait in the kernel before serving starts):
// the first starts a session whose reply joins the turn's batch; when the next datagram is dispatched,
// that reply is taken out of the batch and sent at once, so the session ends and the datagram starts
// the next one straight from the receive buffer. Replies stay in order (H27) and nothing is queued.
void batch_run(bool early, unsigned shards) {
    constexpr int kRun = 8;  // below net.unix.max_dgram_qlen's default (10): the sends do not block
    Echo handler;
    IdleServer srv(handler, std::nullopt, options_with(early, shards));
    srv.server().activate();
    auto c = srv.client();
    for (int i = 0; i < kRun; ++i) c.send(srv.server().address(), "a" + std::to_string(i));
    srv.server().start();

    expect_replies_in_order(c, kRun);
    srv.server().stop();  // every completion reaped: the counts are final
    const ServerStats st = srv.server().stats();
    ::testing::Test::RecordProperty("replies_sent_early", std::to_string(st.replies_sent_early));
    EXPECT_EQ(st.datagrams_sent, std::uint64_t{kRun});
    EXPECT_EQ(st.dropped_total(), 0u);
    if (early) {
        // Exactly kRun - 1 when the kernel hands over the whole run in one batch (as it does here);
        // at least one unless it split the run into single datagrams.
        EXPECT_GE(st.replies_sent_early, 1u) << "no reply was sent ahead of the batch";
        EXPECT_LE(st.replies_sent_early, std::uint64_t{kRun - 1}) << "the last reply has nothing behind it";
    } else {
        EXPECT_EQ(st.replies_sent_early, 0u);
    }
}

// Several clients' runs, interleaved in one receive batch (c0 a0, c1 a0, ..., c0 a1, c1 a1, ...): each client's
// second datagram finds its session waiting for a reply in the turn's batch. Every client gets its replies in
// order (H27), nothing is dropped, and at most one reply per client (the first) goes ahead of the batch.
void interleaved_runs(bool early, unsigned shards) {
    constexpr int kClients = 4, kRun = 2;  // 8 datagrams: below net.unix.max_dgram_qlen's default (10)
    Echo handler;
    IdleServer srv(handler, std::nullopt, options_with(early, shards));
    srv.server().activate();
    std::vector<RawClient> clients;
    for (int k = 0; k < kClients; ++k) clients.push_back(srv.client());
    for (int i = 0; i < kRun; ++i)
        for (auto& c : clients) c.send(srv.server().address(), "a" + std::to_string(i));
    srv.server().start();

    for (int k = 0; k < kClients; ++k) {
        SCOPED_TRACE("client " + std::to_string(k));
        expect_replies_in_order(clients[k], kRun);
    }
    srv.server().stop();  // every completion reaped: the counts are final
    const ServerStats st = srv.server().stats();
    EXPECT_EQ(st.datagrams_sent, std::uint64_t{kClients * kRun});
    EXPECT_EQ(st.dropped_total(), 0u);
    if (early) {
        EXPECT_LE(st.replies_sent_early, std::uint64_t{kClients * (kRun - 1)}) << "a last reply has nothing behind it";
    } else {
        EXPECT_EQ(st.replies_sent_early, 0u);
    }
}

TEST(EarlyRepliesContract, H27_ARunReadInOneBatchIsAnsweredInOrder) { batch_run(true, 1); }
TEST(EarlyRepliesContract, H27_InterleavedRunsOfSeveralClientsAreAnsweredInOrder) { interleaved_runs(true, 1); }
TEST(EarlyRepliesContract, H27_InterleavedRunsOfSeveralClientsAreAnsweredInOrder_4Shards) {
    interleaved_runs(true, 4);
}
TEST(EarlyRepliesContract, H27_Off_InterleavedRunsOfSeveralClientsAreAnsweredInOrder) { interleaved_runs(false, 1); }
TEST(EarlyRepliesContract, H27_ARunReadInOneBatchIsAnsweredInOrder_4Shards) { batch_run(true, 4); }
TEST(EarlyRepliesContract, H27_Off_ARunReadInOneBatchIsAnsweredInOrder) { batch_run(false, 1); }

}  // namespace
}  // namespace unixgram::testing
