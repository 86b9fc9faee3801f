// SPDX-License-Identifier: MIT
// UnixDatagramClient against real sockets in a private temporary directory (spec §8, C1–C5).
#include "unixgram/datagram_client.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>

namespace {

using namespace std::chrono_literals;
using unixgram::UnixAddress;

/// Strings both ways; "bad" is a parse error and "crash" makes either direction throw.
struct TestLineProtocol {
    void make_datagram(const std::string& s, unixgram::Buffer& out) const {
        if (s == "crash") throw std::logic_error("make_datagram boom");
        out.append(s);
    }
    std::string build_packet(std::span<const std::byte> in) const {
        std::string s(reinterpret_cast<const char*>(in.data()), in.size());
        if (s == "bad") throw unixgram::ParseError("not a line");
        if (s == "crash") throw std::logic_error("build_packet boom");
        return s;
    }
};
using Client = unixgram::UnixDatagramClient<std::string, std::string, TestLineProtocol>;

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

/// A directory of our own (mkdtemp), removed with everything in it.
class TempDir {
public:
    TempDir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "unixgram-client-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr) throw std::system_error(errno, std::system_category(), "mkdtemp");
        path_ = pattern;
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

/// A plain socket/bind/recvfrom/sendto datagram socket, as a test server.
class RawServer {
public:
    explicit RawServer(const UnixAddress& address) : fd_(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
        if (!fd_) throw std::system_error(errno, std::system_category(), "socket");
        if (::bind(fd_.get(), address.data(), address.length()) != 0)
            throw std::system_error(errno, std::system_category(), "bind " + address.to_string());
        const int size = 1 << 20;  // room for 64 KiB datagrams whatever the system default
        ::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    }

    struct Datagram {
        std::string data;
        UnixAddress sender;
    };
    /// The next datagram, or nullopt if none comes within `timeout` (0: only one already queued).
    std::optional<Datagram> recv(std::chrono::milliseconds timeout = 5s) {
        pollfd p{fd_.get(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return std::nullopt;
        std::string buffer(std::size_t{1} << 18, '\0');
        sockaddr_un from{};
        socklen_t length = sizeof from;
        const ssize_t n = ::recvfrom(fd_.get(), buffer.data(), buffer.size(), MSG_DONTWAIT,
                                     reinterpret_cast<sockaddr*>(&from), &length);
        if (n < 0) return std::nullopt;
        buffer.resize(static_cast<std::size_t>(n));
        return Datagram{std::move(buffer), UnixAddress::from_sockaddr(&from, length)};
    }
    /// 0 or the errno of sendto.
    int try_send_to(const UnixAddress& to, std::string_view data) {
        return ::sendto(fd_.get(), data.data(), data.size(), MSG_DONTWAIT, to.data(), to.length()) ==
                       static_cast<ssize_t>(data.size())
                   ? 0
                   : errno;
    }
    void send_to(const UnixAddress& to, std::string_view data) {
        if (int err = try_send_to(to, data); err != 0)
            throw std::system_error(err, std::system_category(), "sendto " + to.to_string());
    }
    void close() { fd_.reset(); }

private:
    unixgram::UniqueFd fd_;
};

bool proc_syscall_readable() {
    return std::ifstream("/proc/self/task/" + std::to_string(::gettid()) + "/syscall").good();
}

/// True once thread `tid` sleeps in poll(2); read from /proc, so no sleep stands in for synchronisation.
bool wait_until_blocked_in_poll(pid_t tid) {
    const std::string path = "/proc/self/task/" + std::to_string(tid) + "/syscall";
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < until) {
        std::ifstream in(path);
        if (!in) return false;
        long number = -1;
        if (in >> number) {  // "running" while not in a blocking system call
#ifdef SYS_poll
            if (number == SYS_poll) return true;
#endif
            if (number == SYS_ppoll) return true;
        }
        std::this_thread::yield();
    }
    return false;
}

/// A hung client call would hang the whole suite (the future's destructor waits): stop instead.
template <class T>
T finish_within_5s(std::future<T>& future, const char* what) {
    if (future.wait_for(5s) != std::future_status::ready) {
        std::fprintf(stderr, "FATAL: %s did not finish within 5 s\n", what);
        std::abort();
    }
    return future.get();
}

/// Runs `f` at scope exit. Declared after a thread's future, it closes the client first, so a
/// failed ASSERT cannot leave that thread blocked and the future's destructor waiting for it.
template <class F>
class ScopeExit {
public:
    explicit ScopeExit(F f) : f_(std::move(f)) {}
    ScopeExit(const ScopeExit&) = delete;
    ScopeExit& operator=(const ScopeExit&) = delete;
    ~ScopeExit() { f_(); }

private:
    F f_;
};

template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "no exception";
}

bool is_lower_hex(std::string_view s) {
    return s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

class DatagramClientContract : public ::testing::Test {
protected:
    TempDir dir_;
    UnixAddress server_address_ = UnixAddress::pathname(dir_.file("server.sock"));
    RawServer server_{server_address_};
};

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

TEST_F(DatagramClientContract, C2_SendWaitsForRoomInTheServerQueueAndCloseWakesIt) {
    Client client(server_address_, TestLineProtocol{});
    std::atomic<int> sent{0};
    std::promise<pid_t> sender_tid;
    auto tid = sender_tid.get_future();

    auto sender = std::async(std::launch::async, [&] {
        sender_tid.set_value(::gettid());
        try {
            for (;;) {  // the server never reads until told to: its queue fills, then send waits
                client.send_packet("fill");
                sent.fetch_add(1);
            }
        } catch (const unixgram::ClientClosedError& e) {
            return std::string(e.what());
        } catch (const std::exception& e) {
            return std::string("unexpected: ") + e.what();
        }
    });
    ScopeExit close_first([&] { client.close(); });
    const pid_t sender_thread = tid.get();
    if (!wait_until_blocked_in_poll(sender_thread)) {
        client.close();
        finish_within_5s(sender, "the filling sender");
        GTEST_SKIP() << "cannot see from /proc that the sender waits";
    }

    const int before = sent.load();
    ASSERT_GT(before, 0);
    ASSERT_TRUE(server_.recv());  // makes room for one
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (sent.load() == before && std::chrono::steady_clock::now() < until) std::this_thread::yield();
    EXPECT_GT(sent.load(), before) << "the waiting send did not complete once there was room";

    ASSERT_TRUE(wait_until_blocked_in_poll(sender_thread));
    client.close();
    EXPECT_EQ(finish_within_5s(sender, "the waiting sender"), "Closed client");
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

TEST_F(DatagramClientContract, C3_SignalDuringABlockedRecvIsRetried) {
    if (!proc_syscall_readable()) GTEST_SKIP() << "/proc/<pid>/task/<tid>/syscall is not readable";
    static std::atomic<int> signals{0};
    struct sigaction action{};
    struct sigaction previous{};
    action.sa_handler = [](int) { signals.fetch_add(1); };
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART: poll fails with EINTR
    ASSERT_EQ(::sigaction(SIGUSR1, &action, &previous), 0);
    ScopeExit restore([&] { ::sigaction(SIGUSR1, &previous, nullptr); });

    Client client(server_address_, TestLineProtocol{});
    std::promise<std::pair<pid_t, pthread_t>> started;
    auto thread = started.get_future();
    auto receiver = std::async(std::launch::async, [&] {
        started.set_value({::gettid(), ::pthread_self()});
        return error_of([&] { throw std::runtime_error("received " + client.recv_packet()); });
    });
    ScopeExit close_first([&] { client.close(); });
    const auto [tid, handle] = thread.get();

    ASSERT_TRUE(wait_until_blocked_in_poll(tid));
    ASSERT_EQ(::pthread_kill(handle, SIGUSR1), 0);
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (signals.load() == 0 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
    ASSERT_EQ(signals.load(), 1);
    ASSERT_TRUE(wait_until_blocked_in_poll(tid));  // back in poll after EINTR, not failed
    EXPECT_EQ(receiver.wait_for(0s), std::future_status::timeout);

    server_.send_to(client.local_name(), "after the signal");
    EXPECT_EQ(finish_within_5s(receiver, "the interrupted receiver"), "received after the signal");
}

TEST_F(DatagramClientContract, C3_TimeoutIncludesWaitingForAnotherThreadsReceive) {
    Client client(server_address_, TestLineProtocol{});
    std::promise<pid_t> started;
    auto tid = started.get_future();
    auto receiver = std::async(std::launch::async, [&] {
        started.set_value(::gettid());
        return error_of([&] { client.recv_packet(); });
    });
    const bool blocked = wait_until_blocked_in_poll(tid.get());

    if (blocked) {
        EXPECT_THROW(client.recv_packet(0s), unixgram::TimeoutError);
    }
    client.close();
    EXPECT_EQ(finish_within_5s(receiver, "the blocked receiver"), "Closed client");
    if (!blocked) GTEST_SKIP() << "cannot see from /proc that the receiver waits";
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

// ---- C5: close, names, threads ---------------------------------------------------------------

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

TEST_F(DatagramClientContract, C5_CloseFromAnotherThreadWakesABlockedRecv) {
    Client client(server_address_, TestLineProtocol{});
    const UnixAddress local = client.local_name();
    std::promise<pid_t> about_to_block;
    auto tid = about_to_block.get_future();
    auto receiver = std::async(std::launch::async, [&] {
        about_to_block.set_value(::gettid());
        return error_of([&] { client.recv_packet(); });
    });
    const bool seen_blocked = wait_until_blocked_in_poll(tid.get());

    client.close();

    EXPECT_EQ(finish_within_5s(receiver, "the blocked receiver"), "Closed client");
    EXPECT_EQ(client.fileno(), -1);
    // The receiver was the last user of the socket: it closed it on its way out.
    EXPECT_EQ(RawServer(UnixAddress::pathname(dir_.file("probe.sock"))).try_send_to(local, "x"), ECONNREFUSED);
    if (!seen_blocked && proc_syscall_readable()) ADD_FAILURE() << "the receiver was never seen blocked in poll";
}

TEST_F(DatagramClientContract, C5_SendProceedsWhileAnotherThreadIsBlockedInRecv) {
    Client client(server_address_, TestLineProtocol{});
    std::promise<pid_t> about_to_block;
    auto tid = about_to_block.get_future();
    auto receiver = std::async(std::launch::async, [&] {
        about_to_block.set_value(::gettid());
        return client.recv_packet();
    });
    ScopeExit close_first([&] { client.close(); });
    wait_until_blocked_in_poll(tid.get());

    auto sender = std::async(std::launch::async, [&] { client.send_packet("ping"); });
    finish_within_5s(sender, "the send beside a blocked recv");
    auto got = server_.recv();
    ASSERT_TRUE(got);
    EXPECT_EQ(got->data, "ping");

    server_.send_to(got->sender, "pong");
    EXPECT_EQ(finish_within_5s(receiver, "the receiver"), "pong");
}

TEST_F(DatagramClientContract, C5_SendsAndReceivesOnTwoThreadsKeepOrder) {
    constexpr int kCount = 500;
    Client client(server_address_, TestLineProtocol{});
    auto echo = std::async(std::launch::async, [&] {
        for (int i = 0; i < kCount; ++i) {
            auto got = server_.recv();
            if (!got) return i;
            server_.send_to(got->sender, got->data);
        }
        return kCount;
    });
    auto sender = std::async(std::launch::async, [&] {
        for (int i = 0; i < kCount; ++i) client.send_packet("packet " + std::to_string(i));
    });
    ScopeExit close_first([&] { client.close(); });

    for (int i = 0; i < kCount; ++i) ASSERT_EQ(client.recv_packet(5s), "packet " + std::to_string(i));
    finish_within_5s(sender, "the sender");
    EXPECT_EQ(finish_within_5s(echo, "the echo server"), kCount);
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
