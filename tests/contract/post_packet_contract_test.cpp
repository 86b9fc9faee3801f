// SPDX-License-Identifier: MIT
// Client::post_packet(): a reply queued with the loop turn's batch that nobody awaits. Its contract: every reply
// leaves in the order posted, also past a refusal; a reply the client's full queue refuses is retried (H23's EAGAIN rule, as for
// send_packet) and never lost silently: given up after send_timeout it is counted in send_timeouts, refused for
// good (peer gone) it is counted in send_errors, and either is logged; at shutdown a reply still waiting for its
// retry is counted in sends_abandoned. What it throws is what send_packet throws before its co_await (H20 closed
// client, H21 unnamed client, H22 the protocol's crash), and then nothing is queued. Real sockets, both backends,
// and with 4 shards (the *_sharded run).
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <string>
#include <vector>

#include "contract/errors.hpp"
#include "contract/session_waits.hpp"

namespace unixgram::testing {
namespace {

std::size_t max_dgram_qlen() {
    std::size_t qlen = 10;
    std::ifstream("/proc/sys/net/unix/max_dgram_qlen") >> qlen;
    return qlen;
}

/// "burst N": posts "r0".."r{N-1}". "later": waits until the test says go, then posts "late".
/// Anything else: posts the request in upper case, then the request with "!".
class PostingHandler : public CountingHandler {
public:
    std::atomic<bool> waiting{false}, go{false};
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        if (request.rfind("burst ", 0) == 0) {
            const int n = std::stoi(request.substr(6));
            for (int i = 0; i < n; ++i) client.post_packet("r" + std::to_string(i));
        } else if (request == "later") {
            waiting = true;
            co_await wait_for([this] { return go.load(); });
            client.post_packet("late");
        } else {
            client.post_packet(upper(request));
            client.post_packet(request + "!");
        }
    }
};

using Server = RunningServer<std::string, std::string, TextProtocol>;

// A run of datagrams from one client, several replies posted per request: the handler never waits, and every
// reply arrives, in the order posted (H12 still orders the sessions), with nothing dropped.
TEST(PostPacketContract, EveryPostedReplyArrivesInOrder) {
    constexpr int kRequests = 20;
    PostingHandler handler;
    Server srv(handler);
    auto c = srv.client();
    for (int i = 0; i < kRequests; ++i) c.send(srv.address(), "a" + std::to_string(i));
    for (int i = 0; i < kRequests; ++i) {
        ASSERT_EQ(c.recv(), "A" + std::to_string(i)) << "request " << i;
        ASSERT_EQ(c.recv(), "a" + std::to_string(i) + "!") << "request " << i;
    }
    EXPECT_EQ(c.recv(0ms), std::nullopt) << "two replies per request, no more";
    EXPECT_TRUE(wait_until([&] { return srv.server().stats().datagrams_sent == 2u * kRequests; }))
        << "datagrams_sent: " << srv.server().stats().datagrams_sent;
    const ServerStats st = srv.server().stats();
    EXPECT_EQ(st.dropped_total(), 0u);
    EXPECT_EQ(st.send_errors + st.send_timeouts + st.sends_abandoned, 0u);
}

// Several clients, each sending runs of requests without reading, so that every run's replies overflow its
// receive queue: refusals come while other replies to the same client are on their way to the kernel (on
// io_uring, in a submission still in the kernel) and while more are posted. Every reply still arrives, in the
// order posted, and nothing is lost or counted as an error.
TEST(PostPacketContract, RunsOfSeveralClientsPastRefusals_EveryReplyArrivesInOrder) {
    constexpr int kClients = 8, kRuns = 10;
    const int run = static_cast<int>(max_dgram_qlen()) + 14;  // two replies each: more than twice the queue
    PostingHandler handler;
    Server srv(handler);
    std::vector<decltype(srv.client())> clients;
    for (int k = 0; k < kClients; ++k) clients.push_back(srv.client("c" + std::to_string(k) + ".sock"));
    for (int r = 0; r < kRuns; ++r) {
        for (auto& c : clients)
            for (int i = 0; i < run; ++i) c.send(srv.address(), "a" + std::to_string(r * run + i));
        for (int k = 0; k < kClients; ++k) {
            for (int i = r * run; i < (r + 1) * run; ++i) {
                ASSERT_EQ(clients[k].recv(), "A" + std::to_string(i)) << "client " << k << ", request " << i;
                ASSERT_EQ(clients[k].recv(), "a" + std::to_string(i) + "!") << "client " << k << ", request " << i;
            }
        }
    }
    const auto total = static_cast<std::uint64_t>(2 * kClients * kRuns * run);
    EXPECT_TRUE(wait_until([&] { return srv.server().stats().datagrams_sent == total; }))
        << "datagrams_sent: " << srv.server().stats().datagrams_sent << " of " << total;
    const ServerStats st = srv.server().stats();
    EXPECT_GT(st.send_retries, 0u) << "no reply was ever refused: the test did not test what it names";
    EXPECT_EQ(st.dropped_total(), 0u);
    EXPECT_EQ(st.send_errors + st.send_timeouts + st.sends_abandoned, 0u);
}

// More replies than the client's receive queue holds, posted while it does not read: the first one it refuses
// waits for its retry (H23) and the later ones wait behind it; all arrive once it reads, in the order posted.
// Nothing is lost, nothing is counted as an error.
TEST(PostPacketContract, H23_RepliesAFullClientRefusesAreRetriedAndNoneIsLost) {
    const int n = static_cast<int>(max_dgram_qlen()) + 10;
    PostingHandler handler;
    Server srv(handler);
    auto c = srv.client();
    c.send(srv.address(), "burst " + std::to_string(n));
    ASSERT_TRUE(wait_until([&] { return srv.server().stats().send_retries > 0; }))
        << "the client's full queue never refused a posted reply (max_dgram_qlen " << max_dgram_qlen() << ")";
    // In the order posted: the replies behind a refused one wait behind it, none overtakes it.
    for (int i = 0; i < n; ++i) ASSERT_EQ(c.recv(), "r" + std::to_string(i)) << "reply " << i << " of " << n;
    EXPECT_EQ(c.recv(0ms), std::nullopt);
    EXPECT_TRUE(wait_until([&] { return srv.server().stats().datagrams_sent == static_cast<std::uint64_t>(n); }))
        << "datagrams_sent: " << srv.server().stats().datagrams_sent;
    const ServerStats st = srv.server().stats();
    EXPECT_EQ(st.send_errors + st.send_timeouts + st.sends_abandoned, 0u);
}

// send_timeout 0 allows no retry: a posted reply the full queue refuses is dropped at once, counted in
// send_timeouts and logged; the replies that fitted arrive, first one first.
TEST(PostPacketContract, H23_ZeroSendTimeout_ARefusedPostedReplyIsCountedAndLogged) {
    const int n = static_cast<int>(max_dgram_qlen()) + 5;
    PostingHandler handler;
    ServerOptions options;
    options.send_timeout = 0ms;
    Server srv(handler, TextProtocol{}, options);
    auto c = srv.client();
    c.send(srv.address(), "burst " + std::to_string(n));
    EXPECT_TRUE(wait_until([&] {
        const ServerStats st = srv.server().stats();
        return st.datagrams_sent + st.send_timeouts == static_cast<std::uint64_t>(n);
    })) << "sent " << srv.server().stats().datagrams_sent << ", timed out " << srv.server().stats().send_timeouts;
    EXPECT_GE(srv.server().stats().send_timeouts, 1u);
    // Counted first, logged right after, on the loop thread.
    EXPECT_TRUE(wait_until([&] { return srv.log().count(spdlog::level::warn, "Dropped a posted reply") >= 1u; }))
        << srv.log().dump();
    EXPECT_EQ(c.recv(), "r0");
}

// The peer is gone by the time its reply is posted: the kernel refuses it for good (ECONNREFUSED), which is
// counted in send_errors and logged; nothing reaches the handler, and the server serves the next client.
TEST(PostPacketContract, APostedReplyToAPeerThatIsGoneIsCountedAndLogged) {
    PostingHandler handler;
    Server srv(handler);
    {
        auto gone = srv.client("gone.sock");
        gone.send(srv.address(), "later");
        ASSERT_TRUE(wait_until([&] { return handler.waiting.load(); })) << "the session never started";
    }  // its socket is closed: the name stays, with nobody behind it
    handler.go = true;
    EXPECT_TRUE(wait_until([&] { return srv.server().stats().send_errors == 1u; }))
        << "send_errors: " << srv.server().stats().send_errors;
    // Counted first, logged right after, on the loop thread.
    EXPECT_TRUE(wait_until([&] { return srv.log().count(spdlog::level::warn, "Dropped a posted reply") >= 1u; }))
        << srv.log().dump();
    EXPECT_EQ(srv.server().stats().handler_errors, 0u) << "the refusal is not the handler's error";
    auto next = srv.client();
    next.send(srv.address(), "x");
    EXPECT_EQ(next.recv(), "X");
    EXPECT_EQ(next.recv(), "x!");
}

// Shutdown while posted replies wait for their retry (a client that never reads, a long send_timeout): stop()
// returns, and each of them is either sent or counted in sends_abandoned.
TEST(PostPacketContract, Shutdown_PostedRepliesWaitingForARetryAreCountedAsAbandoned) {
    const int n = static_cast<int>(max_dgram_qlen()) + 5;
    PostingHandler handler;
    ServerOptions options;
    options.send_timeout = std::chrono::seconds(60);
    Server srv(handler, TextProtocol{}, options);
    auto c = srv.client();
    c.send(srv.address(), "burst " + std::to_string(n));
    ASSERT_TRUE(wait_until([&] { return srv.server().stats().send_retries > 0; }))
        << "the client's full queue never refused a posted reply";
    srv.server().stop();
    const ServerStats st = srv.server().stats();
    EXPECT_GE(st.sends_abandoned, 1u);
    EXPECT_EQ(st.datagrams_sent + st.sends_abandoned, static_cast<std::uint64_t>(n))
        << "sent " << st.datagrams_sent << ", abandoned " << st.sends_abandoned;
    EXPECT_EQ(st.send_errors + st.send_timeouts, 0u);
}

/// Posts the request back and records what post_packet threw (it throws before anything is queued).
class PostProbe : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<int> finished{0}, error_code{0};
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        try {
            client.post_packet(request);
        } catch (const std::system_error& e) {
            error_code = e.code().value();
        }
        ++finished;
    }
};

// H21 holds for posted replies too: an unnamed client cannot be answered, and post_packet says so at once
// (EINVAL) instead of queuing a datagram the kernel would refuse; nothing is counted as sent or failed.
TEST(PostPacketContract, H21_PostingToAnUnnamedClientThrowsEINVAL) {
    PostProbe handler;
    ServerOptions options;
    options.unnamed_addresses = UnnamedAddresses::handle;
    Server srv(handler, TextProtocol{}, options);
    auto u = RawClient::unbound();
    u.send(srv.address(), "hi");
    ASSERT_TRUE(wait_until([&] { return handler.finished.load() == 1; })) << "the session never ended";
    EXPECT_EQ(handler.error_code.load(), EINVAL);
    const ServerStats st = srv.server().stats();
    EXPECT_EQ(st.datagrams_sent + st.send_errors + st.send_timeouts + st.sends_abandoned, 0u);
}

// H22 holds for posted replies too: a response the protocol cannot serialize throws RuntimeError (nesting the
// protocol's exception) from post_packet itself, and nothing is queued, not even an empty datagram.
TEST(PostPacketContract, H22_AResponseTheProtocolCannotSerializeThrowsAndQueuesNothing) {
    SerializeCrashHandler handler(ReplyKind::posted);
    const ServerStats st = run_serialize_crash_scenario(handler);
    EXPECT_EQ(st.send_errors + st.send_timeouts + st.sends_abandoned, 0u);
}

// H20 holds for posted replies too: once serving has ended, posting through a kept Client copy (from an
// ExitStack callback of service_init) throws ClientClosedError before the response is serialized.
TEST(PostPacketContract, H20_PostingAfterServingEndedThrowsClientClosedErrorBeforeSerializing) {
    ServerStats st;
    run_closing_client_scenario(/*via_exit_stack=*/true, ReplyKind::posted, &st);
    if (HasFatalFailure()) return;
    EXPECT_EQ(st.datagrams_sent, 1u);
    EXPECT_EQ(st.send_errors + st.send_timeouts + st.sends_abandoned, 0u);
}

}  // namespace
}  // namespace unixgram::testing
