// SPDX-License-Identifier: MIT
// Test harness for contract tests: temp dirs, raw client sockets, a capturing logger, a server runner.
#pragma once

#include <gtest/gtest.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "unixgram/unixgram.hpp"

namespace unixgram::testing {

using namespace std::chrono_literals;

/// A private directory under $TMPDIR (mkdtemp), removed with everything in it.
class TempDir {
public:
    TempDir() {
        std::string templ = (std::filesystem::temp_directory_path() / "unixgram-test-XXXXXX").string();
        if (::mkdtemp(templ.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path_ = templ;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    std::string file(const std::string& name) const { return (path_ / name).string(); }
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

/// Polls `pred` until it holds or `timeout` passes; returns whether it held.
inline bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 5000ms) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
        if (std::chrono::steady_clock::now() >= deadline) return pred();
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

/// A raw AF_UNIX datagram socket used as a client: the server's peer as the kernel sees it.
class RawClient {
public:
    /// Bound to `bind_to` (pathname, abstract), autobound when it is unnamed and `autobind` is set,
    /// or left unbound.
    explicit RawClient(const UnixAddress& bind_to, bool autobind = true) {
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd_ < 0) throw std::runtime_error("socket failed");
        if (!bind_to.is_unnamed()) {
            if (::bind(fd_, bind_to.data(), bind_to.length()) != 0) throw std::runtime_error("bind failed");
        } else if (autobind) {
            sockaddr_un a{};
            a.sun_family = AF_UNIX;
            if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(sa_family_t)) != 0)
                throw std::runtime_error("autobind failed");
        }
        int big = 1 << 20;
        ::setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    }
    static RawClient unbound() { return RawClient(UnixAddress(), false); }
    RawClient(RawClient&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    ~RawClient() {
        if (fd_ >= 0) ::close(fd_);
    }

    UnixAddress local_name() const {
        sockaddr_un a{};
        socklen_t len = sizeof a;
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
        return UnixAddress::from_sockaddr(&a, len);
    }
    int fd() const { return fd_; }

    /// Sends one datagram (blocking until the server's queue has room); optional fds via SCM_RIGHTS.
    void send(const UnixAddress& to, std::string_view data, const std::vector<int>& fds = {}) {
        iovec iov{const_cast<char*>(data.data()), data.size()};
        msghdr m{};
        m.msg_name = const_cast<sockaddr*>(to.data());
        m.msg_namelen = to.length();
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        std::vector<char> control;
        if (!fds.empty()) {
            control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
            m.msg_control = control.data();
            m.msg_controllen = control.size();
            cmsghdr* c = CMSG_FIRSTHDR(&m);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
            std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
        }
        if (::sendmsg(fd_, &m, 0) != static_cast<ssize_t>(data.size()))
            throw std::runtime_error(std::string("sendmsg failed: ") + std::strerror(errno));
    }

    /// The next datagram, or nullopt after `timeout`.
    std::optional<std::string> recv(std::chrono::milliseconds timeout = 5000ms) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
        std::string buf(70000, '\0');
        const ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
        if (n < 0) return std::nullopt;
        buf.resize(static_cast<std::size_t>(n));
        return buf;
    }

private:
    int fd_ = -1;
};

/// A spdlog sink that records every message, for assertions on what the server logged.
class CaptureSink : public spdlog::sinks::base_sink<std::mutex> {
public:
    struct Record {
        spdlog::level::level_enum level;
        std::string text;
    };
    std::vector<Record> records() {
        std::lock_guard lock(mutex_);
        return records_;
    }
    std::size_t count(spdlog::level::level_enum level, const std::string& needle = "") {
        std::size_t n = 0;
        for (auto& r : records())
            if (r.level == level && r.text.find(needle) != std::string::npos) ++n;
        return n;
    }
    std::size_t count_at_least(spdlog::level::level_enum level) {
        std::size_t n = 0;
        for (auto& r : records())
            if (r.level >= level) ++n;
        return n;
    }
    std::string dump() {
        std::string out;
        for (auto& r : records()) out += std::string(spdlog::level::to_string_view(r.level).data()) + ": " + r.text + "\n";
        return out;
    }

protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        records_.push_back({msg.level, std::string(msg.payload.data(), msg.payload.size())});
    }
    void flush_() override {}

private:
    std::vector<Record> records_;
};

inline std::pair<std::shared_ptr<spdlog::logger>, std::shared_ptr<CaptureSink>> capturing_logger() {
    auto sink = std::make_shared<CaptureSink>();
    auto log = std::make_shared<spdlog::logger>("test", sink);
    log->set_level(spdlog::level::trace);
    return {log, sink};
}

/// Shards for test servers that ask for none: $UNIXGRAM_TEST_SHARDS (set by the *_sharded meson tests), or 1.
inline unsigned test_shards() {
    static const unsigned n = [] {
        const char* v = std::getenv("UNIXGRAM_TEST_SHARDS");
        const unsigned long parsed = v != nullptr ? std::strtoul(v, nullptr, 10) : 1;
        return parsed >= 1 && parsed <= 1024 ? static_cast<unsigned>(parsed) : 1u;
    }();
    return n;
}

/// Starts a UnixDatagramServer on a pathname in its own temp dir, logging into a CaptureSink;
/// stops and closes it on destruction.
template <class Req, class Resp, class Protocol>
class RunningServer {
public:
    RunningServer(DatagramRequestHandler<Req, Resp>& handler, Protocol protocol = Protocol{},
                  ServerOptions options = {}, std::optional<UnixAddress> address = std::nullopt) {
        auto [log, sink] = capturing_logger();
        sink_ = sink;
        options.logger = log;
        // The *_sharded runs of a contract suite: the same rules must hold when clients live on
        // several shards (most of them on a worker, reached through shard 0's mailbox).
        if (options.shards == 1) options.shards = test_shards();
        server_ = std::make_unique<UnixDatagramServer<Req, Resp, Protocol>>(
            address ? *address : UnixAddress::pathname(dir_.file("server.sock")), std::move(protocol), handler,
            options);
        server_->start();
    }
    ~RunningServer() {
        if (server_) {
            server_->stop();
            server_->close();
        }
    }
    UnixDatagramServer<Req, Resp, Protocol>& server() { return *server_; }
    UnixAddress address() const { return server_->address(); }
    CaptureSink& log() { return *sink_; }
    TempDir& dir() { return dir_; }
    /// A client bound to a fresh pathname in this server's temp dir.
    RawClient client(const std::string& name = "") {
        static int counter = 0;
        return RawClient(UnixAddress::pathname(dir_.file(name.empty() ? "c" + std::to_string(++counter) + ".sock" : name)));
    }

private:
    TempDir dir_;
    std::shared_ptr<CaptureSink> sink_;
    std::unique_ptr<UnixDatagramServer<Req, Resp, Protocol>> server_;
};

/// The usual shape: text requests and responses.
template <class Handler>
using TextServer = RunningServer<std::string, std::string, TextProtocol>;

/// Counts open fds of this process.
inline std::size_t open_fd_count() {
    std::size_t n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
    return n;
}

}  // namespace unixgram::testing
