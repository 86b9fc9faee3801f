// SPDX-License-Identifier: MIT
// liburing 2.3 compatibility helpers (provided-buffer ring setup and teardown).
#include "io/uring/compat.hpp"

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

namespace unixgram::detail::uring_compat {

io_uring_buf_ring* setup_buf_ring(io_uring* ring, unsigned entries, int bgid, int* err) noexcept {
    const std::size_t size = entries * sizeof(io_uring_buf);
    void* mem = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) {
        *err = -errno;
        return nullptr;
    }
    auto* br = static_cast<io_uring_buf_ring*>(mem);
    io_uring_buf_ring_init(br);
    io_uring_buf_reg reg;
    std::memset(&reg, 0, sizeof reg);
    reg.ring_addr = reinterpret_cast<unsigned long>(br);
    reg.ring_entries = entries;
    reg.bgid = static_cast<__u16>(bgid);
    if (int r = io_uring_register_buf_ring(ring, &reg, 0); r < 0) {
        ::munmap(mem, size);
        *err = r;
        return nullptr;
    }
    return br;
}

void free_buf_ring(io_uring* ring, io_uring_buf_ring* br, unsigned entries, int bgid) noexcept {
    if (br == nullptr) return;
    io_uring_unregister_buf_ring(ring, bgid);
    ::munmap(br, entries * sizeof(io_uring_buf));
}

namespace {

constexpr int kProbeGroup = 0;

struct ProbeResources {
    int target = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int sender = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    io_uring ring{};
    bool ring_ready = false;
    ~ProbeResources() {
        if (ring_ready) io_uring_queue_exit(&ring);
        if (target >= 0) ::close(target);
        if (sender >= 0) ::close(sender);
    }
    /// Autobinds `target` (an abstract name chosen by the kernel: no file, nothing to clean up), reads its
    /// name back and sets up a ring of `ring_entries`; false if any step fails.
    bool open(unsigned ring_entries) noexcept {
        if (target < 0 || sender < 0) return false;
        const sa_family_t family = AF_UNIX;
        if (::bind(target, reinterpret_cast<const sockaddr*>(&family), sizeof family) != 0) return false;
        name_length = sizeof name;
        if (::getsockname(target, reinterpret_cast<sockaddr*>(&name), &name_length) != 0) return false;
        if (io_uring_queue_init(ring_entries, &ring, 0) != 0) return false;
        ring_ready = true;
        return true;
    }
    sockaddr_un name{};
    socklen_t name_length = 0;
};

bool probe_addressed_send() noexcept {
    ProbeResources p;
    if (!p.open(2)) return false;

    static const char byte = 'p';
    io_uring_sqe* sqe = io_uring_get_sqe(&p.ring);
    io_uring_prep_send(sqe, p.sender, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    io_uring_prep_send_set_addr(sqe, reinterpret_cast<const sockaddr*>(&p.name), static_cast<__u16>(p.name_length));
    io_uring_cqe* cqe = nullptr;
    if (io_uring_submit_and_wait(&p.ring, 1) != 1 || io_uring_peek_cqe(&p.ring, &cqe) != 0) return false;
    const int res = cqe->res;
    io_uring_cqe_seen(&p.ring, cqe);
    char got = 0;
    return res == 1 && ::recv(p.target, &got, 1, MSG_DONTWAIT) == 1 && got == byte;
}

}  // namespace

MultishotProbe probe_multishot_recvmsg(unsigned extra_ioprio) noexcept {
    MultishotProbe out;
    ProbeResources p;
    if (!p.open(4)) return out;

    // Two small provided buffers; the datagram is queued first, so that a kernel that has multishot
    // recvmsg completes the request at once with it (and stays armed), and one that has not refuses it.
    constexpr unsigned kEntries = 2;
    constexpr unsigned kBufferSize = sizeof(io_uring_recvmsg_out) + sizeof(sockaddr_un) + 64;
    alignas(64) std::byte buffers[kEntries][kBufferSize];
    int err = 0;
    io_uring_buf_ring* br = setup_buf_ring(&p.ring, kEntries, kProbeGroup, &err);
    if (br == nullptr) return out;
    for (unsigned i = 0; i < kEntries; ++i)
        io_uring_buf_ring_add(br, buffers[i], kBufferSize, static_cast<unsigned short>(i),
                              io_uring_buf_ring_mask(kEntries), static_cast<int>(i));
    io_uring_buf_ring_advance(br, kEntries);

    static const char byte = 'p';
    if (::sendto(p.sender, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&p.name),
                 p.name_length) != 1) {
        free_buf_ring(&p.ring, br, kEntries, kProbeGroup);
        return out;
    }
    msghdr msg{};
    msg.msg_namelen = sizeof(sockaddr_un);
    io_uring_sqe* sqe = io_uring_get_sqe(&p.ring);
    io_uring_prep_recvmsg_multishot(sqe, p.target, &msg, MSG_TRUNC);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = kProbeGroup;
    sqe->ioprio |= static_cast<__u16>(extra_ioprio);
    io_uring_sqe_set_data64(sqe, 1);
    bool armed = false;
    io_uring_cqe* cqe = nullptr;
    if (io_uring_submit_and_wait(&p.ring, 1) == 1 && io_uring_peek_cqe(&p.ring, &cqe) == 0) {
        armed = (cqe->flags & IORING_CQE_F_MORE) != 0;
        out.ran = true;
        // Delivered without staying armed (a kernel that ignores the flag): not multishot either.
        if (cqe->res < 0) {
            out.result = cqe->res;
        } else if (!armed || (cqe->flags & IORING_CQE_F_BUFFER) == 0) {
            out.result = -EINVAL;
        }
        io_uring_cqe_seen(&p.ring, cqe);
    }
    if (armed) {
        // Cancel the receive and reap its last completion before its buffers go.
        sqe = io_uring_get_sqe(&p.ring);
        io_uring_prep_cancel64(sqe, 1, 0);
        io_uring_sqe_set_data64(sqe, 2);
        io_uring_submit(&p.ring);
        while (armed && io_uring_wait_cqe(&p.ring, &cqe) == 0) {
            if (cqe->user_data == 1 && (cqe->flags & IORING_CQE_F_MORE) == 0) armed = false;
            io_uring_cqe_seen(&p.ring, cqe);
        }
    }
    free_buf_ring(&p.ring, br, kEntries, kProbeGroup);
    return out;
}

bool multishot_recvmsg_refused() noexcept {
    static const bool refused = [] {
        const MultishotProbe probe = probe_multishot_recvmsg(0);
        return probe.ran && probe.result == -EINVAL;
    }();
    return refused;
}

bool addressed_send_supported() noexcept {
    static const bool supported = probe_addressed_send();
    return supported;
}

}  // namespace unixgram::detail::uring_compat
