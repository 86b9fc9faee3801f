// SPDX-License-Identifier: MIT
// Unit tests of UnixAddress: kinds, printing, parsing, limits, raw-bytes identity, kernel round trips.
#include "unixgram/address.hpp"

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>
#include <string_view>
#include <unordered_set>

namespace {

using unixgram::UnixAddress;
using Kind = UnixAddress::Kind;

constexpr std::size_t kHeader = offsetof(sockaddr_un, sun_path);

/// A fresh directory under $TMPDIR (or /tmp), removed with what the test left in it.
class TempDir {
public:
    TempDir() {
        const char* base = std::getenv("TMPDIR");
        std::string templ = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/unixgram-test-XXXXXX";
        if (::mkdtemp(templ.data()) == nullptr)
            throw std::runtime_error("mkdtemp: " + std::string(std::strerror(errno)));
        path_ = templ;
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }

    const std::string& path() const noexcept { return path_; }

private:
    std::string path_;
};

/// An AF_UNIX datagram socket, closed at scope exit.
class Socket {
public:
    Socket() : fd_(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {}
    Socket(const Socket&) = delete;
    Socket& operator=(const Socket&) = delete;
    ~Socket() {
        if (fd_ >= 0) ::close(fd_);
    }
    int fd() const noexcept { return fd_; }

    /// 0 or -errno.
    int bind(const UnixAddress& a) const noexcept { return ::bind(fd_, a.data(), a.length()) == 0 ? 0 : -errno; }
    /// What getsockname reports, through from_sockaddr.
    UnixAddress local_name() const {
        sockaddr_un sa{};
        socklen_t len = sizeof sa;
        if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len) != 0)
            throw std::runtime_error("getsockname: " + std::string(std::strerror(errno)));
        return UnixAddress::from_sockaddr(&sa, len);
    }

private:
    int fd_;
};

/// An abstract name no other process (or earlier run) uses.
std::string unique_abstract_name(std::string_view tag) {
    return "unixgram-test-" + std::string(tag) + "-" + std::to_string(::getpid());
}

// --- kinds ------------------------------------------------------------------------------------

TEST(UnixAddress, PathnameKind) {
    const auto a = UnixAddress::pathname("/run/app.sock");
    EXPECT_EQ(a.kind(), Kind::pathname);
    EXPECT_TRUE(a.is_pathname());
    EXPECT_FALSE(a.is_abstract());
    EXPECT_FALSE(a.is_unnamed());
    EXPECT_EQ(a.name(), "/run/app.sock");
    EXPECT_EQ(a.length(), kHeader + 13 + 1);  // with the NUL, as the kernel reports it
    EXPECT_EQ(a.data()->sa_family, AF_UNIX);
}

TEST(UnixAddress, RelativePathIsAPathname) {
    const auto a = UnixAddress::pathname("app.sock");
    EXPECT_TRUE(a.is_pathname());
    EXPECT_EQ(a.to_string(), "app.sock");
}

TEST(UnixAddress, AbstractKind) {
    const auto a = UnixAddress::abstract("metrics");
    EXPECT_EQ(a.kind(), Kind::abstract);
    EXPECT_TRUE(a.is_abstract());
    EXPECT_EQ(a.name(), "metrics");
    EXPECT_EQ(a.raw().sun_path[0], '\0');
    EXPECT_EQ(a.length(), kHeader + 1 + 7);  // no terminating NUL: the length delimits the name
}

TEST(UnixAddress, EmptyAbstractNameIsAbstractNotUnnamed) {
    const auto a = UnixAddress::abstract("");
    EXPECT_TRUE(a.is_abstract());
    EXPECT_EQ(a.name(), "");
    EXPECT_EQ(a.to_string(), "@");
    EXPECT_NE(a, UnixAddress::unnamed());
}

TEST(UnixAddress, UnnamedKind) {
    for (const auto& a : {UnixAddress(), UnixAddress::unnamed()}) {
        EXPECT_EQ(a.kind(), Kind::unnamed);
        EXPECT_TRUE(a.is_unnamed());
        EXPECT_EQ(a.name(), "");
        EXPECT_EQ(a.length(), sizeof(sa_family_t));
        EXPECT_EQ(a.data()->sa_family, AF_UNIX);
    }
}

TEST(UnixAddress, AutobindIsTheUnnamedValue) {
    EXPECT_TRUE(UnixAddress::autobind().is_unnamed());
    EXPECT_EQ(UnixAddress::autobind(), UnixAddress::unnamed());
}

// --- to_string --------------------------------------------------------------------------------

TEST(UnixAddress, ToString) {
    EXPECT_EQ(UnixAddress::pathname("/run/x.sock").to_string(), "/run/x.sock");
    EXPECT_EQ(UnixAddress::abstract("metrics").to_string(), "@metrics");
    EXPECT_EQ(UnixAddress::unnamed().to_string(), "<unnamed>");
}

TEST(UnixAddress, ToStringShowsNulsInAbstractNamesAsAt) {
    EXPECT_EQ(UnixAddress::abstract(std::string_view("a\0b\0", 4)).to_string(), "@a@b@");
    EXPECT_EQ(UnixAddress::abstract(std::string_view("\0", 1)).to_string(), "@@");
}

// --- parse ------------------------------------------------------------------------------------

TEST(UnixAddress, ParseEmptyIsAutobind) {
    const auto a = UnixAddress::parse("");
    EXPECT_TRUE(a.is_unnamed());
    EXPECT_EQ(a, UnixAddress::autobind());
}

TEST(UnixAddress, ParseAtIsAbstract) {
    const auto a = UnixAddress::parse("@x");
    EXPECT_TRUE(a.is_abstract());
    EXPECT_EQ(a.name(), "x");
    EXPECT_EQ(a, UnixAddress::abstract("x"));
    EXPECT_EQ(UnixAddress::parse("@"), UnixAddress::abstract(""));
    EXPECT_EQ(UnixAddress::parse("@@x").name(), "@x");  // only the first '@' is notation
}

TEST(UnixAddress, ParseAnythingElseIsAPathname) {
    EXPECT_EQ(UnixAddress::parse("/run/x.sock"), UnixAddress::pathname("/run/x.sock"));
    EXPECT_EQ(UnixAddress::parse("x.sock"), UnixAddress::pathname("x.sock"));
    EXPECT_EQ(UnixAddress::parse("a@b"), UnixAddress::pathname("a@b"));
}

TEST(UnixAddress, ParseAppliesTheSameLimits) {
    EXPECT_THROW(UnixAddress::parse(std::string(108, 'p')), std::invalid_argument);
    EXPECT_THROW(UnixAddress::parse("@" + std::string(108, 'a')), std::invalid_argument);
}

// --- limits -----------------------------------------------------------------------------------

TEST(UnixAddress, MaxNameLengthIsSunPathLessOne) {
    EXPECT_EQ(UnixAddress::kMaxNameLength, 107u);
}

TEST(UnixAddress, PathnameOf107BytesIsAccepted) {
    const std::string path = "/" + std::string(106, 'p');
    ASSERT_EQ(path.size(), 107u);
    const auto a = UnixAddress::pathname(path);
    EXPECT_EQ(a.name(), path);
    EXPECT_EQ(a.to_string(), path);
    EXPECT_EQ(a.length(), sizeof(sockaddr_un));
}

TEST(UnixAddress, PathnameOf108BytesIsRejectedNamingThePath) {
    const std::string path = "/" + std::string(107, 'p');
    try {
        (void)UnixAddress::pathname(path);
        FAIL() << "a 108-byte path was accepted";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string_view(e.what()).find(path), std::string_view::npos) << e.what();
    }
}

TEST(UnixAddress, EmptyPathnameIsRejected) {
    EXPECT_THROW(UnixAddress::pathname(""), std::invalid_argument);
}

TEST(UnixAddress, NulInsidePathnameIsRejected) {
    EXPECT_THROW(UnixAddress::pathname(std::string_view("/tmp/a\0b", 8)), std::invalid_argument);
    EXPECT_THROW(UnixAddress::pathname(std::string_view("/tmp/a\0", 7)), std::invalid_argument);
}

TEST(UnixAddress, AbstractNameOf107BytesIsAccepted) {
    const std::string name(107, 'a');
    const auto a = UnixAddress::abstract(name);
    EXPECT_EQ(a.name(), name);
    EXPECT_EQ(a.length(), sizeof(sockaddr_un));
}

TEST(UnixAddress, AbstractNameOf108BytesIsRejectedNamingIt) {
    const std::string name(108, 'a');
    try {
        (void)UnixAddress::abstract(name);
        FAIL() << "a 108-byte abstract name was accepted";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string_view(e.what()).find(name), std::string_view::npos) << e.what();
    }
}

// --- identity ---------------------------------------------------------------------------------

TEST(UnixAddress, EqualityIsByRawLengthAndBytes) {
    EXPECT_EQ(UnixAddress::pathname("/a"), UnixAddress::pathname("/a"));
    EXPECT_NE(UnixAddress::pathname("/a"), UnixAddress::pathname("/b"));
    EXPECT_NE(UnixAddress::pathname("/a"), UnixAddress::pathname("/a/"));
    EXPECT_NE(UnixAddress::abstract(std::string_view("a\0b", 3)), UnixAddress::abstract("a"));
    EXPECT_NE(UnixAddress::abstract(std::string_view("a\0", 2)), UnixAddress::abstract("a"));
    EXPECT_NE(UnixAddress::abstract("a"), UnixAddress::pathname("a"));
    EXPECT_EQ(UnixAddress::abstract(std::string_view("a\0b", 3)), UnixAddress::abstract(std::string_view("a\0b", 3)));
}

TEST(UnixAddress, HashOfARawNameEqualsTheHashOfTheAddressBuiltFromIt) {
    // The server looks clients up by the kernel's bytes (hash_of) and stores UnixAddress keys (hash()).
    std::vector<UnixAddress> addresses = {UnixAddress::pathname("/a"), UnixAddress::pathname("/tmp/unixgram-x/c-17.sock"),
                                          UnixAddress::abstract(""), UnixAddress::abstract(std::string_view("a\0b", 3)),
                                          UnixAddress::pathname(std::string(UnixAddress::kMaxNameLength, 'p')),
                                          UnixAddress::abstract(std::string(UnixAddress::kMaxNameLength, 'q'))};
    for (std::size_t n = 1; n <= 17; ++n) addresses.push_back(UnixAddress::pathname(std::string(n, 'z')));  // every tail
    for (const UnixAddress& a : addresses) {
        EXPECT_EQ(UnixAddress::hash_of(&a.raw(), a.length()), a.hash()) << a.to_string();
        EXPECT_EQ(UnixAddress::from_sockaddr(&a.raw(), a.length()).hash(), a.hash()) << a.to_string();
    }
    const UnixAddress unnamed;
    EXPECT_EQ(UnixAddress::hash_of(&unnamed.raw(), 0), unnamed.hash());
    EXPECT_EQ(UnixAddress::hash_of(&unnamed.raw(), sizeof(sa_family_t)), unnamed.hash());
    EXPECT_EQ(UnixAddress::hash_of(nullptr, 0), unnamed.hash());
    // Names that differ only in their last byte hash differently (no tail byte is ignored).
    EXPECT_NE(UnixAddress::pathname("/tmp/c-1").hash(), UnixAddress::pathname("/tmp/c-2").hash());
    EXPECT_NE(UnixAddress::pathname("/tmp/c-10").hash(), UnixAddress::pathname("/tmp/c-11").hash());
}

TEST(UnixAddress, HashFollowsEquality) {
    const std::hash<UnixAddress> h;
    EXPECT_EQ(h(UnixAddress::abstract("a")), h(UnixAddress::parse("@a")));
    EXPECT_EQ(h(UnixAddress::pathname("/x")), UnixAddress::pathname("/x").hash());

    std::unordered_set<UnixAddress> set;
    set.insert(UnixAddress::abstract("a"));
    set.insert(UnixAddress::abstract(std::string_view("a\0b", 3)));
    set.insert(UnixAddress::abstract(std::string_view("a\0", 2)));
    set.insert(UnixAddress::pathname("a"));
    set.insert(UnixAddress::unnamed());
    set.insert(UnixAddress::abstract(""));
    set.insert(UnixAddress::parse("@a"));  // a duplicate
    set.insert(UnixAddress::autobind());   // a duplicate
    EXPECT_EQ(set.size(), 6u);
    EXPECT_TRUE(set.contains(UnixAddress::abstract(std::string_view("a\0b", 3))));
}

// --- from_sockaddr ----------------------------------------------------------------------------

TEST(UnixAddress, FromSockaddrWithLength0Or2IsUnnamed) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strcpy(sa.sun_path, "/ignored");
    EXPECT_TRUE(UnixAddress::from_sockaddr(&sa, 0).is_unnamed());
    EXPECT_TRUE(UnixAddress::from_sockaddr(&sa, 2).is_unnamed());
    EXPECT_EQ(UnixAddress::from_sockaddr(&sa, 2), UnixAddress::unnamed());
    EXPECT_TRUE(UnixAddress::from_sockaddr(nullptr, sizeof sa).is_unnamed());
}

TEST(UnixAddress, FromSockaddrKeepsTheRawBytes) {
    const auto abs = UnixAddress::abstract(std::string_view("x\0y", 3));
    EXPECT_EQ(UnixAddress::from_sockaddr(abs.data(), abs.length()), abs);
    const auto path = UnixAddress::pathname("/run/x.sock");
    EXPECT_EQ(UnixAddress::from_sockaddr(path.data(), path.length()), path);
}

TEST(UnixAddress, FromSockaddrClampsAnOverlongLength) {
    sockaddr_storage ss{};
    ss.ss_family = AF_UNIX;
    std::memset(reinterpret_cast<char*>(&ss) + kHeader, 'z', sizeof ss - kHeader);
    const auto a = UnixAddress::from_sockaddr(&ss, sizeof ss);
    EXPECT_EQ(a.length(), sizeof(sockaddr_un));
    EXPECT_TRUE(a.is_pathname());
    EXPECT_EQ(a.name(), std::string(sizeof(sockaddr_un::sun_path), 'z'));
}

// --- through a real socket --------------------------------------------------------------------

TEST(UnixAddressKernel, PathnameRoundTripsThroughGetsockname) {
    TempDir dir;
    const auto bound = UnixAddress::pathname(dir.path() + "/server.sock");
    Socket s;
    ASSERT_GE(s.fd(), 0);
    ASSERT_EQ(s.bind(bound), 0);
    const auto reported = s.local_name();
    EXPECT_EQ(reported, bound);
    EXPECT_EQ(std::hash<UnixAddress>{}(reported), std::hash<UnixAddress>{}(bound));
    EXPECT_EQ(reported.to_string(), dir.path() + "/server.sock");
}

TEST(UnixAddressKernel, LongestPathnameRoundTrips) {
    TempDir dir;
    std::string path = dir.path() + "/";
    if (path.size() >= UnixAddress::kMaxNameLength) GTEST_SKIP() << "TMPDIR is too long: " << path;
    path += std::string(UnixAddress::kMaxNameLength - path.size(), 's');
    const auto bound = UnixAddress::pathname(path);
    Socket s;
    ASSERT_EQ(s.bind(bound), 0);
    EXPECT_EQ(s.local_name(), bound);
}

TEST(UnixAddressKernel, AutobindGetsAFiveHexDigitAbstractName) {
    Socket s;
    ASSERT_GE(s.fd(), 0);
    ASSERT_EQ(s.bind(UnixAddress::autobind()), 0);
    const auto reported = s.local_name();
    ASSERT_TRUE(reported.is_abstract()) << reported.to_string();
    ASSERT_EQ(reported.name().size(), 5u) << reported.to_string();
    for (char c : reported.name())
        EXPECT_TRUE((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) << reported.to_string();
    EXPECT_EQ(reported, UnixAddress::parse(reported.to_string()));
}

TEST(UnixAddressKernel, AbstractNameWithEmbeddedNulRoundTrips) {
    const auto bound = UnixAddress::abstract(unique_abstract_name("nul") + std::string("\0tail", 5));
    Socket s;
    ASSERT_EQ(s.bind(bound), 0);
    const auto reported = s.local_name();
    EXPECT_EQ(reported, bound);
    EXPECT_EQ(reported.name(), bound.name());
}

TEST(UnixAddressKernel, UnboundSocketIsUnnamed) {
    Socket s;
    ASSERT_GE(s.fd(), 0);
    EXPECT_TRUE(s.local_name().is_unnamed());
}

TEST(UnixAddressKernel, RecvfromReportsTheSendersAddress) {
    const auto server_address = UnixAddress::abstract(unique_abstract_name("server"));
    Socket server;
    ASSERT_EQ(server.bind(server_address), 0);

    TempDir dir;
    const auto client_address = UnixAddress::pathname(dir.path() + "/client.sock");
    Socket bound_client;
    ASSERT_EQ(bound_client.bind(client_address), 0);
    Socket unbound_client;

    auto receive_from = [&](const Socket& sender) {
        EXPECT_EQ(::sendto(sender.fd(), "x", 1, 0, server_address.data(), server_address.length()), 1);
        char byte;
        sockaddr_un from{};
        socklen_t len = sizeof from;
        EXPECT_EQ(::recvfrom(server.fd(), &byte, 1, 0, reinterpret_cast<sockaddr*>(&from), &len), 1);
        return UnixAddress::from_sockaddr(&from, len);
    };
    EXPECT_EQ(receive_from(bound_client), client_address);
    EXPECT_TRUE(receive_from(unbound_client).is_unnamed());
}

}  // namespace
