// SPDX-License-Identifier: MIT
// UnixDatagramClient against real sockets in a private temporary directory (spec §8, C1–C5), one call at a time.
#include "unixgram/datagram_client.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

#include "unit/datagram_client_fixture.hpp"

namespace unixgram::testing::datagram_client {
namespace {

static_assert(std::is_same_v<decltype(unixgram::UnixDatagramClient(std::declval<UnixAddress>(), TestLineProtocol{})),
                             Client>);
static_assert(!std::is_copy_constructible_v<Client> && !std::is_copy_assignable_v<Client>);
static_assert(std::is_nothrow_move_constructible_v<Client> && std::is_nothrow_move_assignable_v<Client>);

/// Two make_datagram overloads: Send cannot be deduced, so it is spelled out.
struct OverloadedProtocol {
    void make_datagram(const std::string& s, unixgram::Buffer& out) const { out.append(s); }
    void make_datagram(const char* s, unixgram::Buffer& out) const { out.append(std::string_view(s)); }
    int build_packet(std::span<const std::byte> in) const { return static_cast<int>(in.size()); }
};
static_assert(!unixgram::detail::DeduciblePacketTypes<OverloadedProtocol>);
static_assert(std::is_constructible_v<unixgram::UnixDatagramClient<std::string, int, OverloadedProtocol>, UnixAddress,
                                      OverloadedProtocol>);

bool is_lower_hex(std::string_view s) {
    return s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

// ---- C1: construction ------------------------------------------------------------------------

TEST_F(DatagramClientContract, C1_AutobindGivesAnAbstractNameTheServerSeesAsSender) {
    Client client(server_address_, TestLineProtocol{});

    const UnixAddress local = client.local_name();
    ASSERT_TRUE(local.is_abstract()) << local.to_string();
    EXPECT_EQ(local.name().size(), 5u) << local.to_string();
    EXPECT_TRUE(is_lower_hex(local.name())) << local.to_string();

    client.send_packet("hello");
    auto got = server_.recv();
    ASSERT_TRUE(got);
    EXPECT_EQ(got->data, "hello");
    EXPECT_EQ(got->sender, local);
}

TEST_F(DatagramClientContract, C1_ExplicitLocalPathIsHonoured) {
    const UnixAddress local = UnixAddress::pathname(dir_.file("client.sock"));
    Client client(server_address_, TestLineProtocol{}, local);

    EXPECT_EQ(client.local_name(), local);
    struct stat st{};
    ASSERT_EQ(::stat(dir_.file("client.sock").c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));

    client.send_packet("from a path");
    auto got = server_.recv();
    ASSERT_TRUE(got);
    EXPECT_EQ(got->sender, local);
}

TEST_F(DatagramClientContract, C1_ExplicitAbstractLocalNameIsHonoured) {
    const UnixAddress local =
        UnixAddress::abstract("unixgram-test-client-" + std::to_string(::getpid()) + "-" + dir_.file(""));
    Client client(server_address_, TestLineProtocol{}, local);

    EXPECT_EQ(client.local_name(), local);
    client.send_packet("x");
    auto got = server_.recv();
    ASSERT_TRUE(got);
    EXPECT_EQ(got->sender, local);
}

TEST_F(DatagramClientContract, C1_BindFailureNamesThePathAndLeavesItUntouched) {
    const std::string path = dir_.file("taken");
    std::ofstream(path) << "not a socket";

    try {
        Client client(server_address_, TestLineProtocol{}, UnixAddress::pathname(path));
        FAIL() << "bind to an existing path succeeded";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), std::errc::address_in_use);
        EXPECT_EQ(std::string(e.what()), "cannot bind to '" + path + "': " + std::strerror(EADDRINUSE));
    }
    std::string content;
    std::getline(std::ifstream(path), content);
    EXPECT_EQ(content, "not a socket");
}

TEST_F(DatagramClientContract, C1_ConnectFailureNamesTheServerAndRemovesTheBoundFile) {
    const std::string missing = dir_.file("no-server.sock");
    const std::string local = dir_.file("client.sock");

    try {
        Client client(UnixAddress::pathname(missing), TestLineProtocol{}, UnixAddress::pathname(local));
        FAIL() << "connect to a missing server succeeded";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory);
        EXPECT_EQ(std::string(e.what()), "cannot connect to '" + missing + "': " + std::strerror(ENOENT));
    }
    EXPECT_FALSE(std::filesystem::exists(std::filesystem::symlink_status(local)));
}

TEST_F(DatagramClientContract, C1_InvalidArgumentsAreRejected) {
    EXPECT_THROW(Client(UnixAddress::unnamed(), TestLineProtocol{}), std::invalid_argument);
    EXPECT_THROW(Client(server_address_, TestLineProtocol{}, UnixAddress::autobind(), {.max_datagram_size = 0}),
                 std::invalid_argument);
}

TEST_F(DatagramClientContract, C1_PeerNameIsTheServerAddressAndFilenoIsTheSocket) {
    Client client(server_address_, TestLineProtocol{});

    EXPECT_EQ(client.peer_name(), server_address_);
    const int fd = client.fileno();
    ASSERT_GE(fd, 0);
    int type = 0;
    socklen_t length = sizeof type;
    ASSERT_EQ(::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length), 0);
    EXPECT_EQ(type, SOCK_DGRAM);
    EXPECT_TRUE(::fcntl(fd, F_GETFD) & FD_CLOEXEC);
    EXPECT_FALSE(client.is_closed());
}

// ---- C2: send_packet -------------------------------------------------------------------------

TEST_F(DatagramClientContract, C2_SendReachesTheServerFromLocalName) {
    Client client(server_address_, TestLineProtocol{});

    client.send_packet("one");
    client.send_packet("two");

    auto first = server_.recv();
    auto second = server_.recv();
    ASSERT_TRUE(first && second);
    EXPECT_EQ(first->data, "one");
    EXPECT_EQ(second->data, "two");
    EXPECT_EQ(first->sender, client.local_name());
}

TEST_F(DatagramClientContract, C2_SendToAClosedServerIsConnectionRefusedNamingIt) {
    Client client(server_address_, TestLineProtocol{});
    server_.close();

    for (int attempt = 0; attempt < 2; ++attempt) {  // the kernel disconnects us after the first
        try {
            client.send_packet("anyone?");
            FAIL() << "send to a closed server succeeded (attempt " << attempt << ")";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code(), std::errc::connection_refused) << e.what();
            EXPECT_EQ(std::string(e.what()),
                      "cannot send to '" + server_address_.to_string() + "': " + std::strerror(ECONNREFUSED));
        }
    }
}

TEST_F(DatagramClientContract, C2_SendAfterTheServerWentAwayIsConnectionRefused) {
    Client client(server_address_, TestLineProtocol{});
    client.send_packet("still there?");
    ASSERT_TRUE(server_.recv());

    server_.close();

    try {
        client.send_packet("and now?");
        FAIL() << "send to a closed server succeeded";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), std::errc::connection_refused) << e.what();
    }
}

TEST_F(DatagramClientContract, C2_ProtocolCrashIsWrappedAndNothingIsSent) {
    Client client(server_address_, TestLineProtocol{});

    try {
        client.send_packet("crash");
        FAIL() << "no exception";
    } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "protocol.make_datagram() crashed");
        EXPECT_EQ(error_of([&] { std::rethrow_if_nested(e); }), "make_datagram boom");
    }
    EXPECT_FALSE(server_.recv(0ms));

    client.send_packet("after the crash");
    auto got = server_.recv();
    ASSERT_TRUE(got);
    EXPECT_EQ(got->data, "after the crash");
}

// ---- C3: recv_packet -------------------------------------------------------------------------

TEST_F(DatagramClientContract, C3_ZeroTimeoutPollsOnceThenABlockingRecvGetsThePacket) {
    Client client(server_address_, TestLineProtocol{});

    EXPECT_THROW(client.recv_packet(0s), unixgram::TimeoutError);

    server_.send_to(client.local_name(), "pong");
    EXPECT_EQ(client.recv_packet(), "pong");
}

TEST_F(DatagramClientContract, C3_ZeroTimeoutReturnsAnAlreadyQueuedPacket) {
    Client client(server_address_, TestLineProtocol{});
    server_.send_to(client.local_name(), "queued");

    EXPECT_EQ(client.recv_packet(0s), "queued");
}

TEST_F(DatagramClientContract, C3_TimeoutExpiresNoEarlierThanAsked) {
    Client client(server_address_, TestLineProtocol{});

    const auto start = std::chrono::steady_clock::now();
    EXPECT_THROW(client.recv_packet(30ms), unixgram::TimeoutError);
    EXPECT_GE(std::chrono::steady_clock::now() - start, 30ms);
    EXPECT_THROW(client.recv_packet(-1s), unixgram::TimeoutError);  // negative counts as zero
}

TEST_F(DatagramClientContract, C3_ParseErrorPropagatesAndTheNextPacketArrives) {
    Client client(server_address_, TestLineProtocol{});
    server_.send_to(client.local_name(), "bad");
    server_.send_to(client.local_name(), "good");

    try {
        client.recv_packet(5s);
        FAIL() << "no exception";
    } catch (const unixgram::ParseError& e) {
        EXPECT_EQ(e.reason(), "not a line");
    }
    EXPECT_EQ(client.recv_packet(5s), "good");
}

TEST_F(DatagramClientContract, C3_ProtocolCrashIsWrappedWithTheOriginalNested) {
    Client client(server_address_, TestLineProtocol{});
    server_.send_to(client.local_name(), "crash");

    try {
        client.recv_packet(5s);
        FAIL() << "no exception";
    } catch (const unixgram::ParseError&) {
        FAIL() << "a crash is not a parse error";
    } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "protocol.build_packet() crashed");
        EXPECT_EQ(error_of([&] { std::rethrow_if_nested(e); }), "build_packet boom");
    }
}

TEST_F(DatagramClientContract, C3_DatagramOverMaxDatagramSizeIsReportedAsTruncated) {
    Client client(server_address_, TestLineProtocol{}, UnixAddress::autobind(), {.max_datagram_size = 100});
    server_.send_to(client.local_name(), std::string(100, 'a'));
    server_.send_to(client.local_name(), std::string(101, 'b'));
    server_.send_to(client.local_name(), "next");

    EXPECT_EQ(client.recv_packet(5s), std::string(100, 'a'));
    const std::string error = error_of([&] { client.recv_packet(5s); });
    EXPECT_NE(error.find("101 bytes"), std::string::npos) << error;
    EXPECT_NE(error.find("truncated"), std::string::npos) << error;
    EXPECT_EQ(client.recv_packet(5s), "next");
}

TEST_F(DatagramClientContract, C3_OnlyTheServersDatagramsArrive) {
    Client client(server_address_, TestLineProtocol{});
    RawServer intruder(UnixAddress::pathname(dir_.file("intruder.sock")));

    EXPECT_EQ(intruder.try_send_to(client.local_name(), "hi"), EPERM);  // the kernel filters while connected

    server_.close();
    EXPECT_THROW(client.send_packet("x"), std::system_error);  // the kernel disconnects us here
    ASSERT_EQ(intruder.try_send_to(client.local_name(), "hi"), 0);
    EXPECT_THROW(client.recv_packet(0s), unixgram::TimeoutError);  // the client drops it
}

// ---- Sizes -----------------------------------------------------------------------------------

TEST_F(DatagramClientContract, EmptyDatagramsRoundTrip) {
    Client client(server_address_, TestLineProtocol{});

    client.send_packet("");
    auto got = server_.recv();
    ASSERT_TRUE(got);
    EXPECT_EQ(got->data, "");
    EXPECT_EQ(got->sender, client.local_name());

    server_.send_to(got->sender, "");
    EXPECT_EQ(client.recv_packet(5s), "");
}

TEST_F(DatagramClientContract, A65536ByteDatagramRoundTripsAndOneMoreByteIsTruncated) {
    Client client(server_address_, TestLineProtocol{});
    const int size = 1 << 20;
    ASSERT_EQ(::setsockopt(client.fileno(), SOL_SOCKET, SO_SNDBUF, &size, sizeof size), 0);
    std::string big(65536, '\0');
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);

    client.send_packet(big);
    auto got = server_.recv();
    ASSERT_TRUE(got);
    EXPECT_EQ(got->data, big);

    server_.send_to(client.local_name(), big);
    EXPECT_EQ(client.recv_packet(5s), big);

    server_.send_to(client.local_name(), big + "!");
    EXPECT_NE(error_of([&] { client.recv_packet(5s); }).find("truncated"), std::string::npos);
}

// ---- C5: close, names (threads: datagram_client_threads_test.cpp) ----------------------------

TEST_F(DatagramClientContract, C5_CloseIsIdempotentAndEveryOperationThenThrowsClientClosedError) {
    Client client(server_address_, TestLineProtocol{});

    client.close();
    client.close();

    EXPECT_TRUE(client.is_closed());
    EXPECT_EQ(client.fileno(), -1);
    EXPECT_EQ(error_of([&] { client.send_packet("x"); }), "Closed client");
    EXPECT_THROW(client.send_packet("x"), unixgram::ClientClosedError);
    EXPECT_THROW(client.recv_packet(), unixgram::ClientClosedError);
    EXPECT_THROW(client.recv_packet(0s), unixgram::ClientClosedError);
    EXPECT_THROW(client.local_name(), unixgram::ClientClosedError);
    EXPECT_THROW(client.peer_name(), unixgram::ClientClosedError);
    EXPECT_FALSE(server_.recv(0ms));
}

TEST_F(DatagramClientContract, C5_CloseReleasesTheLocalName) {
    const UnixAddress local = UnixAddress::abstract("unixgram-test-release-" + dir_.file(""));
    Client client(server_address_, TestLineProtocol{}, local);
    client.close();

    RawServer rebound(local);  // throws EADDRINUSE if the socket were still open
    SUCCEED();
}

TEST_F(DatagramClientContract, C5_MovingKeepsTheSocketAndLeavesAClosedClient) {
    Client first(server_address_, TestLineProtocol{});
    const UnixAddress local = first.local_name();
    const int fd = first.fileno();

    Client second(std::move(first));

    EXPECT_TRUE(first.is_closed());  // NOLINT(bugprone-use-after-move): that is the point
    EXPECT_EQ(first.fileno(), -1);
    EXPECT_THROW(first.send_packet("x"), unixgram::ClientClosedError);
    first.close();
    EXPECT_EQ(second.fileno(), fd);
    EXPECT_EQ(second.local_name(), local);
    second.send_packet("moved");
    auto got = server_.recv();
    ASSERT_TRUE(got);
    EXPECT_EQ(got->sender, local);

    Client third(server_address_, TestLineProtocol{});
    third = std::move(second);  // closes third's own socket
    EXPECT_EQ(third.local_name(), local);
}

}  // namespace
}  // namespace unixgram::testing::datagram_client

// The example of datagram_client.hpp, with the server's address passed in.
std::string datagram_client_header_example(const unixgram::UnixAddress& server) {
    struct LineProtocol {
        void make_datagram(const std::string& s, unixgram::Buffer& out) const { out.append(s); }
        std::string build_packet(std::span<const std::byte> in) const {
            return {reinterpret_cast<const char*>(in.data()), in.size()};
        }
    };
    unixgram::UnixDatagramClient client(server, LineProtocol{});
    client.send_packet("ping");
    std::string reply = client.recv_packet(std::chrono::seconds(5));  // TimeoutError if silent
    client.close();
    return reply;
}

namespace unixgram::testing::datagram_client {
namespace {

TEST_F(DatagramClientContract, HeaderExampleRuns) {
    auto echo = std::async(std::launch::async, [&] {
        auto got = server_.recv();
        if (got) server_.send_to(got->sender, got->data == "ping" ? "pong" : "?");
    });

    EXPECT_EQ(datagram_client_header_example(server_address_), "pong");
    finish_within_5s(echo, "the echo server");
}

}  // namespace
}  // namespace unixgram::testing::datagram_client
