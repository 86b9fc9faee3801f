// SPDX-License-Identifier: MIT
// Contract tests for the request-handler model: spec rules H1, H5, H6, H8, H14 (real sockets).
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>

#include "contract/harness.hpp"

namespace unixgram::testing {
namespace {

using Text = RunningServer<std::string, std::string, TextProtocol>;

/// Echoes in upper case; records which handler instance served (under a lock: with shards, handle() runs on
/// several loop threads at once).
class UpperHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<int> handled{0};
    std::size_t instance_count() {
        std::lock_guard lock(mutex_);
        return instances_.size();
    }
    Session<std::string> handle(Client<std::string>& client) override {
        {
            std::lock_guard lock(mutex_);
            instances_.insert(this);
        }
        std::string request = co_yield recv();
        for (char& c : request) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        ++handled;
        co_await client.send_packet(request);
    }

private:
    std::mutex mutex_;
    std::set<const void*> instances_;
};

TEST(SessionContract, H8_RequestIsDeliveredAtTheYieldAndAnswered) {
    UpperHandler handler;
    Text srv(handler);
    auto c = srv.client();
    c.send(srv.address(), "hello, world.");
    EXPECT_EQ(c.recv(), "HELLO, WORLD.");
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

TEST(SessionContract, H1_OneHandlerInstanceServesEveryClient) {
    UpperHandler handler;
    Text srv(handler);
    std::vector<RawClient> clients;
    for (int i = 0; i < 5; ++i) clients.push_back(srv.client());
    for (auto& c : clients) c.send(srv.address(), "x");
    for (auto& c : clients) EXPECT_EQ(c.recv(), "X");
    EXPECT_EQ(handler.instance_count(), 1u);
    EXPECT_EQ(handler.handled.load(), 5);
}

/// Code before the first co_yield runs before the datagram is parsed (H5): a datagram that the
/// protocol rejects still lets the pre-yield code run, and the ParseError appears at the co_yield.
class PreYieldHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(Client<std::string>& client) override {
        std::string reply = "before;";
        try {
            reply += co_yield recv();
        } catch (const ParseError&) {
            reply += "parse error";
        }
        co_await client.send_packet(reply);
    }
};

TEST(SessionContract, H5_CodeBeforeTheFirstYieldRunsBeforeParsing) {
    PreYieldHandler handler;
    Text srv(handler);
    auto c = srv.client();
    c.send(srv.address(), "\xe9");
    EXPECT_EQ(c.recv(), "before;parse error");
    c.send(srv.address(), "ok");
    EXPECT_EQ(c.recv(), "before;ok");
}

/// Refuses (returns before yielding) every third session.
class RefusingHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    int sessions = 0;
    Session<std::string> handle(Client<std::string>& client) override {
        if (++sessions % 3 == 0) co_return;
        std::string request = co_yield recv();
        co_await client.send_packet(request);
    }
};

TEST(SessionContract, H6_ReturnBeforeFirstYieldDiscardsDatagram) {
    RefusingHandler handler;
    Text srv(handler);
    auto c = srv.client();
    c.send(srv.address(), "1");
    EXPECT_EQ(c.recv(), "1");
    c.send(srv.address(), "2");
    EXPECT_EQ(c.recv(), "2");
    c.send(srv.address(), "3");  // refused: discarded silently
    c.send(srv.address(), "4");
    EXPECT_EQ(c.recv(), "4") << "the refused datagram must not be answered, the next one must";
    EXPECT_TRUE(wait_until([&] { return srv.server().stats().dropped_unconsumed == 1; }));
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

/// Two yields in one session: the second consumes the client's next datagram (H14).
class TwoYieldHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(Client<std::string>& client) override {
        std::string first = co_yield recv();
        if (first == "__wait__") {
            std::string second = co_yield recv({.timeout = 10s});
            co_await client.send_packet("After wait: " + second);
        } else {
            co_await client.send_packet(first);
        }
    }
};

TEST(SessionContract, H14_MultipleYieldsConsumeTheSameClientsNextDatagrams) {
    TwoYieldHandler handler;
    Text srv(handler);
    auto a = srv.client();
    auto b = srv.client();
    a.send(srv.address(), "__wait__");
    b.send(srv.address(), "from b");  // another client: its own session, not a's second yield
    EXPECT_EQ(b.recv(), "from b");
    a.send(srv.address(), "hello, world.");
    EXPECT_EQ(a.recv(), "After wait: hello, world.");
}

}  // namespace
}  // namespace unixgram::testing
