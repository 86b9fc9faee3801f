// SPDX-License-Identifier: MIT
// Control-message decoding shared by both backends.
#include "io/datagram.hpp"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace unixgram::detail {

void decode_control(const msghdr& msg, RecvDatagram& d) noexcept {
    if (msg.msg_control == nullptr || msg.msg_controllen == 0) return;
    msghdr m = msg;
    for (cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET) continue;
        if (c->cmsg_type == SCM_RIGHTS) {
            const std::size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (std::size_t i = 0; i < n && d.fd_count < kMaxFdsPerDatagram; ++i) {
                int fd;
                std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                ::fcntl(fd, F_SETFD, FD_CLOEXEC);
                d.fds[d.fd_count++] = fd;
            }
        } else if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
            std::memcpy(&d.credentials, CMSG_DATA(c), sizeof(struct ucred));
            d.has_credentials = true;
        }
    }
}

long send_ops(int fd, SendOp* const* ops, std::size_t n, std::vector<mmsghdr>& msgs) noexcept {
    msgs.resize(n);  // within the reserved capacity: no allocation per flush
    for (std::size_t k = 0; k < n; ++k) msgs[k] = mmsghdr{ops[k]->msg, 0};
    long sent;
    do {
        // The raw system call: glibc's sendmmsg() is a cancellation point; loop threads are never cancelled.
        sent = ::syscall(SYS_sendmmsg, fd, msgs.data(), static_cast<unsigned>(n), MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    return sent >= 0 ? sent : -errno;
}

}  // namespace unixgram::detail
