// SPDX-License-Identifier: MIT
// RecvDatagram and SendOp: what crosses the boundary between a backend and the server.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "unixgram/buffer.hpp"
#include "unixgram/detail/engine.hpp"

namespace unixgram::detail {

/// Largest number of fds one datagram can carry (the kernel's SCM_MAX_FD).
inline constexpr std::size_t kMaxFdsPerDatagram = 253;
/// Control buffer that holds SCM_RIGHTS with kMaxFdsPerDatagram fds plus SCM_CREDENTIALS.
inline constexpr std::size_t kControlSize =
    CMSG_SPACE(sizeof(int) * kMaxFdsPerDatagram) + CMSG_SPACE(sizeof(struct ucred));

/// One received datagram, valid only during the dispatch call that receives it. The consumer takes
/// the fds it keeps by setting fd_count to 0; the backend closes none (the server does).
struct RecvDatagram {
    const void* name = nullptr;
    socklen_t name_length = 0;
    std::span<const std::byte> payload;
    std::size_t real_length = 0;  ///< the datagram's length; > payload.size() when truncated
    bool truncated = false;
    bool control_truncated = false;
    int fds[kMaxFdsPerDatagram];
    std::uint32_t fd_count = 0;
    bool has_credentials = false;
    struct ucred credentials {};
};

/// Decodes the SCM_RIGHTS and SCM_CREDENTIALS messages in msg.msg_control[0..msg_controllen) into
/// `d`, and sets FD_CLOEXEC on received fds (io_uring's recvmsg does not apply MSG_CMSG_CLOEXEC).
void decode_control(const msghdr& msg, RecvDatagram& d) noexcept;

/// One reply on its way to the kernel. Lives in the shard's pool; the buffer keeps its capacity.
struct SendOp {
    Buffer buffer;
    sockaddr_un dest{};
    socklen_t dest_length = 0;
    msghdr msg{};
    iovec iov{};
    SendWait* waiter = nullptr;  ///< null once the awaiting coroutine gave up (cancelled)
    Clock::time_point deadline{};
    TimerNode retry_timer;
    unsigned attempts = 0;
    bool in_kernel = false;
    bool queued = false;           ///< in the backend's batch, not yet handed to the kernel
    std::uint32_t queue_index = 0;  ///< its slot in that batch
    ClientState* client = nullptr;  ///< whose reply this is (null once abandoned)
    bool posted = false;            ///< Client::post_packet(): nobody awaits it; the shard settles it
    SendOp* posted_next = nullptr;  ///< behind it, a later posted reply to the same peer (a backlog)
    SendOp* next_free = nullptr;

    void prepare_msghdr() noexcept {
        iov.iov_base = buffer.data();
        iov.iov_len = buffer.size();
        msg = msghdr{};
        msg.msg_name = &dest;
        msg.msg_namelen = dest_length;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
    }
};

/// One sendmmsg(2) of ops[0..n) on `fd` (MSG_DONTWAIT | MSG_NOSIGNAL, retried on EINTR), with each op's prepared
/// msghdr copied into `msgs` (its capacity reused): how many the kernel took, their lengths in msgs[k].msg_len, or
/// -errno when it refused the first (sendmmsg reports an error only for the first message of a call).
long send_ops(int fd, SendOp* const* ops, std::size_t n, std::vector<mmsghdr>& msgs) noexcept;

/// One send_ops() of ops[0..n), each op the kernel answered reported to `settle(op, result)` in order: bytes sent, or
/// -errno for the first when it refused that one. Returns how many it answered (at least one), where the next call
/// starts.
template <class Settle>
std::size_t send_some(int fd, SendOp* const* ops, std::size_t n, std::vector<mmsghdr>& msgs, Settle&& settle) noexcept {
    const long sent = send_ops(fd, ops, n, msgs);
    if (sent < 0) {
        settle(ops[0], static_cast<int>(sent));  // sendmmsg reports only the first failure: go on after it
        return 1;
    }
    for (std::size_t k = 0; k < static_cast<std::size_t>(sent); ++k) settle(ops[k], static_cast<int>(msgs[k].msg_len));
    return static_cast<std::size_t>(sent);
}

}  // namespace unixgram::detail
