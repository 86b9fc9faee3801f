// SPDX-License-Identifier: MIT
// The epoll backend's own internals, seen from /proc (built with the epoll backend only).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "contract/sharding.hpp"

namespace unixgram::testing {
namespace {

class EchoHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        for (;;) {
            std::string datagram = co_yield recv();
            co_await client.send_packet(datagram);
        }
    }
};

std::string fd_link(const std::filesystem::path& fd) {
    std::error_code ec;
    const auto target = std::filesystem::read_symlink(fd, ec);
    return ec ? std::string() : target.string();
}

/// The inode of the socket bound to `path`, from /proc/net/unix ("... Inode Path" per line).
unsigned long socket_inode(const std::string& path) {
    std::ifstream in("/proc/net/unix");
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        std::string num, refs, protocol, flags, type, state, inode, name;
        if (fields >> num >> refs >> protocol >> flags >> type >> state >> inode >> name && name == path)
            return std::stoul(inode);
    }
    return 0;
}

/// The fds that the epoll instance `epoll_fd` watches ("tfd: N" lines of its fdinfo).
std::vector<int> watched_fds(int epoll_fd) {
    std::ifstream in("/proc/self/fdinfo/" + std::to_string(epoll_fd));
    std::vector<int> fds;
    std::string key;
    while (in >> key) {
        if (key == "tfd:") {
            int fd = -1;
            in >> fd;
            fds.push_back(fd);
        }
    }
    return fds;
}

TEST(EpollBackend, OnlyTheReceivingShardWatchesTheSocket) {
    // Every other shard only sends on the socket. An epoll entry, even one with no events, hangs on the
    // socket's wait queue, and every datagram in and every reply freed walks that queue, taking each entry's
    // lock: with 8 shards on 16 CPUs that cost 2.6× the server's CPU per datagram (benchmarks/results).
    EchoHandler handler;
    RunningServer<std::string, std::string, TextProtocol> srv(handler, TextProtocol{}, shards(4));
    RawClient c = srv.client();
    c.send(srv.address(), "ready");
    ASSERT_EQ(c.recv(kGuard), "ready") << "the server must serve before its loops are inspected";

    const std::string path = srv.address().to_string();
    const unsigned long inode = socket_inode(path);
    ASSERT_NE(inode, 0u) << path << " is not in /proc/net/unix";
    int socket_fd = -1;
    std::vector<int> epoll_fds;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
        const std::string link = fd_link(entry.path());
        const int fd = std::stoi(entry.path().filename().string());
        if (link == "socket:[" + std::to_string(inode) + "]") socket_fd = fd;
        if (link == "anon_inode:[eventpoll]") epoll_fds.push_back(fd);
    }
    ASSERT_NE(socket_fd, -1) << "no fd of this process is the server's socket (inode " << inode << ")";
    ASSERT_GE(epoll_fds.size(), 4u) << "expected an epoll instance per shard";

    int watching = 0;
    for (int ep : epoll_fds) {
        for (int fd : watched_fds(ep)) {
            if (fd == socket_fd) ++watching;
        }
    }
    EXPECT_EQ(watching, 1) << "epoll instances watching the server's socket (fd " << socket_fd << "), of "
                           << epoll_fds.size();
}

}  // namespace
}  // namespace unixgram::testing
