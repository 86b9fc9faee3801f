// SPDX-License-Identifier: MIT
// Shared by the UnixDatagramClient tests: a line protocol, a temp dir, a raw server socket, the fixture, waits.
#pragma once

#include <gtest/gtest.h>

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <future>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "unixgram/datagram_client.hpp"

// A namespace of its own: contract/harness.hpp has another unixgram::testing::TempDir, and the Client
// alias here would hide the server's unixgram::Client from the rest of unixgram::testing.
namespace unixgram::testing::datagram_client {

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

/// A hung client call would hang the whole suite (the future's destructor waits): stop instead.
template <class T>
T finish_within_5s(std::future<T>& future, const char* what) {
    if (future.wait_for(5s) != std::future_status::ready) {
        std::fprintf(stderr, "FATAL: %s did not finish within 5 s\n", what);
        std::abort();
    }
    return future.get();
}

template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "no exception";
}

class DatagramClientContract : public ::testing::Test {
protected:
    TempDir dir_;
    UnixAddress server_address_ = UnixAddress::pathname(dir_.file("server.sock"));
    RawServer server_{server_address_};
};

}  // namespace unixgram::testing::datagram_client
