// SPDX-License-Identifier: MIT
// Ancillary data of a received datagram: passed file descriptors (SCM_RIGHTS) and credentials.
#pragma once

/// \file
/// With `ServerOptions::receive_ancillary_data`, a handler claims the control messages of the
/// datagram consumed at one `co_yield` by passing an `Ancillary` to fill (A3). Claimed fds are owned
/// `UniqueFd`s (closed when dropped); unclaimed ones are closed by the server (A6), and so are the
/// fds of datagrams that are dropped or still queued at shutdown. Without that option the kernel
/// discards passed fds itself and asking for them throws `UnsupportedOperation` (A5).
///
/// Example:
/// \code
///   unixgram::Ancillary anc;
///   std::string request = co_yield unixgram::recv({.timeout = std::nullopt, .ancillary = &anc});
///   for (auto& fd : anc.fds) {  // owned: closed when anc goes
///       if (::write(fd.get(), request.data(), request.size()) < 0) break;
///   }
///   if (anc.credentials) co_await client.send_packet(std::to_string(anc.credentials->uid));
/// \endcode

#include <sys/types.h>
#include <unistd.h>

#include <optional>
#include <utility>
#include <vector>

namespace unixgram {

/// An owned file descriptor.
class UniqueFd {
public:
    UniqueFd() noexcept = default;
    explicit UniqueFd(int fd) noexcept : fd_(fd) {}
    UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    UniqueFd& operator=(UniqueFd&& o) noexcept {
        if (this != &o) reset(std::exchange(o.fd_, -1));
        return *this;
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() { reset(); }

    int get() const noexcept { return fd_; }
    explicit operator bool() const noexcept { return fd_ >= 0; }
    int release() noexcept { return std::exchange(fd_, -1); }
    void reset(int fd = -1) noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }

private:
    int fd_ = -1;
};

/// SCM_CREDENTIALS of the sender (needs SO_PASSCRED on the server socket).
struct Credentials {
    pid_t pid = 0;
    uid_t uid = 0;
    gid_t gid = 0;
};

/// The control messages of one datagram.
class Ancillary {
public:
    std::vector<UniqueFd> fds;
    std::optional<Credentials> credentials;
    /// The kernel truncated the control data (more fds than fit): the missing fds were closed by it.
    bool truncated = false;

    void clear() noexcept {
        fds.clear();
        credentials.reset();
        truncated = false;
    }
};

}  // namespace unixgram
