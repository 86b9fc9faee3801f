// SPDX-License-Identifier: MIT
// Contract tests for clients: identity (H17), attributes (H18), the blocking UnixDatagramClient (C2–C5).
#include <gtest/gtest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "contract/harness.hpp"

namespace unixgram::testing {
namespace {

using Text = RunningServer<std::string, std::string, TextProtocol>;
using TextClient = Client<std::string>;

std::string yes_no(bool value) { return value ? "yes" : "no"; }

/// An abstract name no other test (or test process) uses.
std::string unique_abstract_name(const std::string& tag) {
    static std::atomic<int> counter{0};
    return "unixgram-test-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
}

/// What identifies an address: its text form and its raw length (abstract names are not NUL-terminated).
std::string describe(const UnixAddress& address) {
    return address.to_string() + " (length " + std::to_string(address.length()) + ")";
}

/// Keeps a copy of the first client it meets and compares every later client with it (H17).
class FirstClientProbe : public DatagramRequestHandler<std::string, std::string> {
public:
    Task<> service_init(ExitStack& stack, Server&) override {
        stack.callback([this] { first_.reset(); });  // Client copies must not outlive the server
        co_return;
    }
    Session<std::string> handle(TextClient& client) override {
        co_yield recv();
        std::string reply;
        if (!first_) {
            first_.emplace(client);
            const TextClient copy = client;
            TextClient assigned = *first_;
            assigned = copy;
            reply = "stored; copy equal=" + yes_no(copy == client) +
                    " copy hash equal=" + yes_no(std::hash<TextClient>{}(copy) == std::hash<TextClient>{}(client)) +
                    " assigned equal=" + yes_no(assigned == client);
        } else {
            reply = "equal to first=" + yes_no(*first_ == client) + " hash equal to first=" +
                    yes_no(std::hash<TextClient>{}(*first_) == std::hash<TextClient>{}(client));
        }
        co_await client.send_packet(reply);
    }

private:
    std::optional<TextClient> first_;
};

TEST(ClientContract, H17_CopiesForTheSameAddressCompareEqualAndHashEqual) {
    FirstClientProbe handler;
    Text srv(handler);
    auto a = srv.client();

    a.send(srv.address(), "first session");
    EXPECT_EQ(a.recv(), "stored; copy equal=yes copy hash equal=yes assigned equal=yes");
    a.send(srv.address(), "second session");  // a new session: the client object is compared with the stored copy
    EXPECT_EQ(a.recv(), "equal to first=yes hash equal to first=yes");
    EXPECT_EQ(srv.server().stats().sessions_started, 2u);
}

TEST(ClientContract, H17_ClientsOfDifferentAddressesAreUnequal) {
    FirstClientProbe handler;
    Text srv(handler);
    auto a = srv.client();
    auto b = srv.client();

    a.send(srv.address(), "a");
    EXPECT_EQ(a.recv(), "stored; copy equal=yes copy hash equal=yes assigned equal=yes");
    b.send(srv.address(), "b");
    const auto reply = b.recv();
    ASSERT_TRUE(reply.has_value());
    EXPECT_EQ(reply->rfind("equal to first=no ", 0), 0u) << *reply;  // hashes may collide; equality may not
}

/// Counts requests per client in a map keyed by Client (FT RequestRefusedHandler does this upstream).
class PerClientCounter : public DatagramRequestHandler<std::string, std::string> {
public:
    Task<> service_init(ExitStack& stack, Server&) override {
        stack.callback([this] { counts_.clear(); });
        co_return;
    }
    Session<std::string> handle(TextClient& client) override {
        co_yield recv();
        const int n = ++counts_[client];
        co_await client.send_packet(std::to_string(n) + " of " + std::to_string(counts_.size()) + " clients");
    }

private:
    std::unordered_map<TextClient, int> counts_;
};

TEST(ClientContract, H17_AHandlerCountsRequestsPerClientInAnUnorderedMap) {
    PerClientCounter handler;
    ServerOptions options;
    options.idle_client_cache = 0;  // only the map's copies keep client state alive between sessions
    Text srv(handler, TextProtocol{}, options);
    auto a = srv.client();
    auto b = srv.client();
    auto c = srv.client();

    // Each request is its own session; the map must recognise the client across them.
    a.send(srv.address(), "x");
    EXPECT_EQ(a.recv(), "1 of 1 clients");
    b.send(srv.address(), "x");
    EXPECT_EQ(b.recv(), "1 of 2 clients");
    a.send(srv.address(), "x");
    EXPECT_EQ(a.recv(), "2 of 2 clients");
    c.send(srv.address(), "x");
    EXPECT_EQ(c.recv(), "1 of 3 clients");
    a.send(srv.address(), "x");
    EXPECT_EQ(a.recv(), "3 of 3 clients");
    b.send(srv.address(), "x");
    EXPECT_EQ(b.recv(), "2 of 3 clients");
    EXPECT_EQ(srv.server().stats().sessions_started, 6u);
}

/// Holds a copy of every client and answers with the identity of the Client object handle() got.
class StateIdentityProbe : public DatagramRequestHandler<std::string, std::string> {
public:
    Task<> service_init(ExitStack& stack, Server&) override {
        stack.callback([this] { held_.clear(); });
        co_return;
    }
    Session<std::string> handle(TextClient& client) override {
        co_yield recv();
        held_.emplace(client, 0);
        co_await client.send_packet(std::to_string(reinterpret_cast<std::uintptr_t>(&client)));
    }

private:
    std::unordered_map<TextClient, int> held_;
};

TEST(ClientContract, H17_TheSameClientStateIsReusedWhileACopyIsHeld) {
    StateIdentityProbe handler;
    ServerOptions options;
    options.idle_client_cache = 0;  // nothing but the held copy can keep the state alive
    Text srv(handler, TextProtocol{}, options);
    auto a = srv.client();
    auto b = srv.client();

    a.send(srv.address(), "1");
    const auto first = a.recv();
    ASSERT_TRUE(first.has_value());
    b.send(srv.address(), "other client in between");
    const auto other = b.recv();
    a.send(srv.address(), "2");
    EXPECT_EQ(a.recv(), first) << "a's second session must get the same Client object";
    a.send(srv.address(), "3");
    EXPECT_EQ(a.recv(), first);
    EXPECT_NE(other, first) << "two live clients cannot share one state";
}

/// Two servers on two loop threads share this slot: server 1 publishes its first client in it,
/// server 2 compares its own clients with it. The mutex orders the two threads.
struct SharedClientSlot {
    std::mutex mutex;
    std::optional<TextClient> client;
};

class PublishingHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    explicit PublishingHandler(SharedClientSlot& slot) : slot_(slot) {}
    Task<> service_init(ExitStack& stack, Server&) override {
        stack.callback([this] {
            std::lock_guard lock(slot_.mutex);
            slot_.client.reset();  // released on the loop thread of the server it belongs to
        });
        co_return;
    }
    Session<std::string> handle(TextClient& client) override {
        co_yield recv();
        {
            std::lock_guard lock(slot_.mutex);
            slot_.client.emplace(client);
        }
        co_await client.send_packet("published " + client.peer_name().to_string());
    }

private:
    SharedClientSlot& slot_;
};

class ComparingHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    explicit ComparingHandler(SharedClientSlot& slot) : slot_(slot) {}
    Session<std::string> handle(TextClient& client) override {
        co_yield recv();
        std::string reply;
        {
            std::lock_guard lock(slot_.mutex);
            if (!slot_.client) {
                reply = "nothing published";
            } else {
                reply = "same peer=" + yes_no(slot_.client->peer_name() == client.peer_name()) +
                        " equal=" + yes_no(*slot_.client == client);
            }
        }
        co_await client.send_packet(reply);
    }

private:
    SharedClientSlot& slot_;
};

TEST(ClientContract, H17_ClientsOfTwoServersWithTheSamePeerAddressAreUnequal) {
    SharedClientSlot slot;
    PublishingHandler publishing(slot);
    ComparingHandler comparing(slot);
    Text first_server(publishing);
    Text second_server(comparing);
    auto c = first_server.client();  // one socket, one address, talking to both servers

    c.send(first_server.address(), "hello 1");
    EXPECT_EQ(c.recv(), "published " + c.local_name().to_string());
    c.send(second_server.address(), "hello 2");
    EXPECT_EQ(c.recv(), "same peer=yes equal=no");
}

/// Answers with what the Client says about itself (H18).
class AttributeProbe : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        const std::string request = co_yield recv();
        std::string reply;
        if (request == "peer") {
            reply = describe(client.peer_name());
        } else if (request == "local") {
            reply = describe(client.local_name());
        } else if (request == "socket") {
            const int fd = client.socket().fileno();
            sockaddr_un name{};
            socklen_t length = sizeof name;
            int type = 0, domain = 0;
            socklen_t int_length = sizeof(int);
            const bool named = ::getsockname(fd, reinterpret_cast<sockaddr*>(&name), &length) == 0;
            ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &int_length);
            int_length = sizeof(int);
            ::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &int_length);
            reply = "fd=" + std::to_string(fd) +
                    " name=" + (named ? describe(UnixAddress::from_sockaddr(&name, length)) : "getsockname failed") +
                    " dgram=" + yes_no(type == SOCK_DGRAM) + " unix=" + yes_no(domain == AF_UNIX);
        } else {
            reply = "unknown request";
        }
        co_await client.send_packet(reply);
    }
};

TEST(ClientContract, H18_PeerNameIsThePathnameTheSenderIsBoundTo) {
    AttributeProbe handler;
    Text srv(handler);
    auto c = srv.client();
    ASSERT_TRUE(c.local_name().is_pathname());

    c.send(srv.address(), "peer");
    EXPECT_EQ(c.recv(), describe(c.local_name()));
}

TEST(ClientContract, H18_PeerNameIsTheAbstractNameTheSenderIsBoundTo) {
    AttributeProbe handler;
    Text srv(handler);
    RawClient c(UnixAddress::abstract(unique_abstract_name("peer")));
    ASSERT_TRUE(c.local_name().is_abstract());

    c.send(srv.address(), "peer");
    EXPECT_EQ(c.recv(), describe(c.local_name()));
}

TEST(ClientContract, H18_PeerNameIsTheNameTheKernelAutoboundTheSenderTo) {
    AttributeProbe handler;
    Text srv(handler);
    RawClient c(UnixAddress::autobind());
    ASSERT_TRUE(c.local_name().is_abstract()) << "autobind gives an abstract name";

    c.send(srv.address(), "peer");
    EXPECT_EQ(c.recv(), describe(c.local_name()));
}

TEST(ClientContract, H18_LocalNameIsTheServersAddress) {
    AttributeProbe handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "local");
    EXPECT_EQ(c.recv(), describe(srv.address()));
}

TEST(ClientContract, H18_LocalNameOfAnAbstractServerIsItsAbstractName) {
    AttributeProbe handler;
    Text srv(handler, TextProtocol{}, {}, UnixAddress::abstract(unique_abstract_name("server")));
    auto c = srv.client();

    c.send(srv.address(), "local");
    EXPECT_EQ(c.recv(), describe(srv.address()));
}

TEST(ClientContract, H18_LocalNameOfAnAutoboundServerIsTheKernelsName) {
    AttributeProbe handler;
    Text srv(handler, TextProtocol{}, {}, UnixAddress::autobind());
    ASSERT_TRUE(srv.address().is_abstract()) << describe(srv.address());
    auto c = srv.client();

    c.send(srv.address(), "local");
    EXPECT_EQ(c.recv(), describe(srv.address()));
}

TEST(ClientContract, H18_SocketIsTheServersOwnSocketSharedByAllClients) {
    AttributeProbe handler;
    Text srv(handler);
    auto a = srv.client();
    auto b = srv.client();

    a.send(srv.address(), "socket");
    const auto from_a = a.recv();
    b.send(srv.address(), "socket");
    const auto from_b = b.recv();

    ASSERT_TRUE(from_a.has_value());
    EXPECT_NE(from_a->find(" name=" + describe(srv.address()) + " dgram=yes unix=yes"), std::string::npos) << *from_a;
    EXPECT_EQ(from_a, from_b) << "every client exposes the same socket";
}

// ---- the blocking client against a real server (spec §8) ----------------------------------------

/// Answers "<request> from <peer>", except "silent", which gets no answer.
class NamingEcho : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        const std::string request = co_yield recv();
        if (request == "silent") co_return;
        co_await client.send_packet(request + " from " + client.peer_name().to_string());
    }
};

TEST(ClientContract, C2_UnixDatagramClientGetsTheServersReply) {
    NamingEcho handler;
    Text srv(handler);
    UnixDatagramClient client(srv.address(), TextProtocol{});

    client.send_packet("hello");
    EXPECT_EQ(client.recv_packet(5s), "hello from " + client.local_name().to_string());
    EXPECT_EQ(client.peer_name(), srv.address());
    EXPECT_TRUE(client.local_name().is_abstract()) << "an autobound client, so that the server can reply";
}

TEST(ClientContract, C2_UnixDatagramClientBoundToAPathnameIsAnsweredThere) {
    NamingEcho handler;
    Text srv(handler);
    const auto local = UnixAddress::pathname(srv.dir().file("blocking-client.sock"));
    UnixDatagramClient client(srv.address(), TextProtocol{}, local);

    client.send_packet("hi");
    EXPECT_EQ(client.recv_packet(5s), "hi from " + local.to_string());
    EXPECT_EQ(client.local_name(), local);
}

TEST(ClientContract, C3_RecvPacketTimesOutWithTimeoutErrorThenStillReceives) {
    NamingEcho handler;
    Text srv(handler);
    UnixDatagramClient client(srv.address(), TextProtocol{});

    EXPECT_THROW(client.recv_packet(0s), TimeoutError);
    client.send_packet("silent");  // handled, never answered
    EXPECT_THROW(client.recv_packet(100ms), TimeoutError);
    client.send_packet("late");
    EXPECT_EQ(client.recv_packet(5s), "late from " + client.local_name().to_string());
}

TEST(ClientContract, C2_SendAfterTheServerIsClosedIsRefused) {
    NamingEcho handler;
    Text srv(handler);
    UnixDatagramClient client(srv.address(), TextProtocol{});
    client.send_packet("before");
    ASSERT_EQ(client.recv_packet(5s), "before from " + client.local_name().to_string());

    srv.server().close();

    for (int attempt = 1; attempt <= 2; ++attempt) {
        try {
            client.send_packet("after");
            ADD_FAILURE() << "send #" << attempt << " to a closed server succeeded";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code(), std::errc::connection_refused) << "send #" << attempt << ": " << e.what();
        }
    }
}

TEST(ClientContract, C5_AClosedClientRaisesClientClosedError) {
    NamingEcho handler;
    Text srv(handler);
    UnixDatagramClient client(srv.address(), TextProtocol{});
    client.send_packet("open");
    ASSERT_EQ(client.recv_packet(5s), "open from " + client.local_name().to_string());

    client.close();
    client.close();  // idempotent

    EXPECT_TRUE(client.is_closed());
    EXPECT_EQ(client.fileno(), -1);
    EXPECT_THROW(client.send_packet("closed"), ClientClosedError);
    EXPECT_THROW(client.recv_packet(0s), ClientClosedError);
    EXPECT_THROW(client.recv_packet(5s), ClientClosedError);
    EXPECT_THROW((void)client.local_name(), ClientClosedError);
}

TEST(ClientContract, C5_CloseWakesABlockedReceiveWithClientClosedError) {
    NamingEcho handler;
    Text srv(handler);
    UnixDatagramClient client(srv.address(), TextProtocol{});

    auto blocked = std::async(std::launch::async, [&] { return client.recv_packet(30s); });
    client.close();  // before or during the receive: either way it ends with ClientClosedError
    ASSERT_EQ(blocked.wait_for(10s), std::future_status::ready) << "close() did not wake the receive";
    EXPECT_THROW(blocked.get(), ClientClosedError);
}

// ---- many short-lived clients ------------------------------------------------------------------

class UpperEcho : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        std::string request = co_yield recv();
        for (char& c : request) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        co_await client.send_packet(request);
    }
};

TEST(ClientContract, H17_ThousandsOfShortLivedClientsLeaveTheServerStateBounded) {
    UpperEcho handler;
    Text srv(handler);
    TempDir client_dir;
    constexpr int kClients = 3000;
    const std::size_t fds_before = open_fd_count();

    for (int i = 0; i < kClients; ++i) {
        const std::string path = client_dir.file("k" + std::to_string(i) + ".sock");
        {
            RawClient c(UnixAddress::pathname(path));
            c.send(srv.address(), "ping " + std::to_string(i));
            ASSERT_EQ(c.recv(), "PING " + std::to_string(i)) << "client #" << i;
        }  // closed
        ASSERT_EQ(::unlink(path.c_str()), 0) << path;
    }

    EXPECT_EQ(open_fd_count(), fds_before) << "no fd of this process may be left behind by 3000 clients";
    const ServerStats stats = srv.server().stats();
    EXPECT_EQ(stats.sessions_started, static_cast<std::uint64_t>(kClients));
    EXPECT_EQ(stats.datagrams_received, static_cast<std::uint64_t>(kClients));
    EXPECT_EQ(stats.dropped_total(), 0u);
    EXPECT_TRUE(wait_until([&] { return srv.server().stats().datagrams_sent == static_cast<std::uint64_t>(kClients); }))
        << srv.server().stats().datagrams_sent;
    EXPECT_TRUE(srv.server().is_serving());
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

/// Copies its Client on a plain thread, which client.hpp forbids while the server runs.
/// Copies its client on another thread (no loop thread at all), drops the copy there, then replies.
class CopiesOnAnotherThread : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        std::string request = co_yield recv();
        std::thread([&client] { const TextClient copy = client; }).join();
        co_await client.send_packet(request + ": copied on another thread");
    }
};

// A Client copy may be made and dropped on any thread while the server serves: the drop hands its
// reference back to the client's shard, which idles the client (here: frees it) on its next turn.
TEST(ClientContract, ACopyMayBeMadeAndDroppedOnAnotherThread) {
    CopiesOnAnotherThread handler;
    ServerOptions options;
    options.idle_client_cache = 0;
    Text srv(handler, {}, options);
    auto c = srv.client();
    for (int i = 0; i < 5; ++i) {
        const std::string request = "go" + std::to_string(i);
        c.send(srv.address(), request);
        ASSERT_EQ(c.recv(), request + ": copied on another thread") << srv.log().dump();
    }
    srv.server().stop();
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << srv.log().dump();
}

}  // namespace
}  // namespace unixgram::testing
