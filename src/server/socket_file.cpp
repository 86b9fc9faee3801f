// SPDX-License-Identifier: MIT
// Socket creation, bind with an exact mode, and inode-checked cleanup.
#include "server/socket_file.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>
#include <system_error>

namespace unixgram::detail {

namespace {

std::string describe_existing(const UnixAddress& address) {
    if (!address.is_pathname()) return "";
    struct stat st;
    const std::string path(address.name());
    if (::lstat(path.c_str(), &st) != 0) return "";
    switch (st.st_mode & S_IFMT) {
        case S_IFREG: return " (a regular file is in the way; it was left untouched)";
        case S_IFDIR: return " (a directory is in the way; it was left untouched)";
        case S_IFLNK: return " (a symbolic link is in the way; it was left untouched)";
        case S_IFIFO: return " (a FIFO is in the way; it was left untouched)";
        case S_IFSOCK:
            return " (a socket file already exists, live or stale; it was left untouched: remove it if no server "
                   "uses it)";
        default: return " (a file is in the way; it was left untouched)";
    }
}

[[noreturn]] void fail(int err, const std::string& what) { throw std::system_error(err, std::generic_category(), what); }

std::string octal(mode_t m) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0%03o", static_cast<unsigned>(m));
    return buf;
}

}  // namespace

BoundSocket bind_socket(const UnixAddress& address, std::optional<mode_t> mode, std::size_t send_buffer) {
    const std::string shown = "'" + address.to_string() + "'";
    if (mode && !address.is_pathname())
        fail(EINVAL, "cannot apply mode " + octal(*mode) + " to " + shown + ": only pathname sockets have permissions");
    BoundSocket b;
    b.fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (b.fd < 0) fail(errno, "cannot create a socket for " + shown);
    auto close_fd = [&] {
        const int e = errno;
        ::close(b.fd);
        errno = e;
    };
    // Linux creates the socket inode with the socket's own mode minus the umask, so after this
    // fchmod the file is born with a subset of `mode`; the chmod below can only widen it to `mode`.
    if (mode && ::fchmod(b.fd, *mode) != 0) {
        close_fd();
        fail(errno, "cannot set mode " + octal(*mode) + " on the socket for " + shown);
    }
    const socklen_t len = address.is_unnamed() ? static_cast<socklen_t>(sizeof(sa_family_t)) : address.length();
    if (::bind(b.fd, address.data(), len) != 0) {
        const int e = errno;
        std::string extra = (e == EADDRINUSE) ? describe_existing(address) : "";
        ::close(b.fd);
        fail(e, "cannot bind to " + (address.is_unnamed() ? std::string("an automatic address") : shown) + extra);
    }
    if (address.is_pathname()) {
        const std::string path(address.name());
        struct stat st;
        if (::stat(path.c_str(), &st) != 0) {
            close_fd();
            fail(errno, "cannot stat the socket file " + shown + " just bound");
        }
        b.inode = std::make_pair(st.st_dev, st.st_ino);
        if (mode && ::chmod(path.c_str(), *mode) != 0) {
            const int e = errno;
            ::unlink(path.c_str());  // ours: bound a moment ago, inode checked above
            ::close(b.fd);
            fail(e, "cannot set mode " + octal(*mode) + " on " + shown);
        }
    }
    sockaddr_un name{};
    socklen_t name_len = sizeof name;
    ::getsockname(b.fd, reinterpret_cast<sockaddr*>(&name), &name_len);
    b.address = UnixAddress::from_sockaddr(&name, name_len);
    if (send_buffer > 0) {
        // Replies in flight are charged to the sender's buffer: size it for many peers at once.
        const int v = static_cast<int>(send_buffer);
        if (::setsockopt(b.fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof v) != 0)
            ::setsockopt(b.fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
    }
    return b;
}

void cleanup_socket_file(const UnixAddress& address, std::pair<dev_t, ino_t> inode, spdlog::logger& log) noexcept {
    const std::string path(address.name());
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) {
        if (errno != ENOENT)
            log.error("Unable to clean up listening Unix socket '{}': {}", path, std::strerror(errno));
        return;
    }
    if (st.st_dev != inode.first || st.st_ino != inode.second) return;  // replaced: not ours any more
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        log.error("Unable to clean up listening Unix socket '{}': {}", path, std::strerror(errno));
}

}  // namespace unixgram::detail
