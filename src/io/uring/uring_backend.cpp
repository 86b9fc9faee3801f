// SPDX-License-Identifier: MIT
// UringBackend implementation (see io-uring-notes: always MSG_DONTWAIT on AF_UNIX sends).
#include "io/uring/uring_backend.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>

#include "io/backend.hpp"
#include "io/datagram.hpp"
#include "io/uring/compat.hpp"
#include "runtime/shard.hpp"
#include "server/stats_counters.hpp"

namespace unixgram::detail {

namespace {
constexpr int kBufferGroup = 0;
// Receive buffers: the socket queue holds 11 datagrams with the kernel's net.unix.max_dgram_qlen (10), so 64
// cover bursts. With systemd's 512 the multishot receive runs dry every 64 datagrams (ENOBUFS, counted) and is
// re-armed at the end of the turn; 256 buffers measured no better there (A/B, 8 rounds in alternation at qlen
// 10 and 512: within the rounds' spread).
constexpr unsigned kBufferCount = 64;
constexpr unsigned kSqEntries = 256;
constexpr unsigned kCqEntries = 4096;
// A multishot receive lays out each buffer as io_uring_recvmsg_out (16 bytes), msg_namelen bytes for the
// name, msg_controllen bytes of control messages, then the payload. sizeof(sockaddr_un) is 110: rounded up
// to 112, the control messages (cmsghdr, 8-byte aligned) and the payload start 8-byte aligned in the
// 64-byte-aligned buffers (UBSan reported the misaligned cmsghdr at offset 126).
constexpr unsigned kNameRoom = (sizeof(sockaddr_un) + 7) & ~7u;
constexpr unsigned kCqeBatch = 64;  // completions handled before the CQ head and the buffers go back

[[noreturn]] void fail(const char* step, int neg_errno) {
    throw std::system_error(-neg_errno, std::generic_category(), std::string("io_uring backend: ") + step);
}
/// A kernel that lacks what the backend needs (provided-buffer rings 5.19, multishot recvmsg 6.0).
[[noreturn]] void fail_kernel_too_old(const char* step, int neg_errno) {
    utsname u{};
    ::uname(&u);
    const std::string what = std::string(step) +
                             " (this backend needs Linux 6.0 or later: provided-buffer rings and multishot recvmsg; "
                             "this kernel is " +
                             u.release + "; build unixgram with -Dio_backend=epoll)";
    fail(what.c_str(), neg_errno);
}
}  // namespace

UringBackend::UringBackend(Shard& shard, int socket_fd, const BackendConfig& config)
    : shard_(shard), stats_(config.stats) {
    pending_sends_.reserve(kSqEntries);
    preparing_.reserve(kSqEntries);
    io_uring_params params{};
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL |
                   IORING_SETUP_CQSIZE;
    params.cq_entries = kCqEntries;
    int r = io_uring_queue_init_params(kSqEntries, &ring_, &params);
    if (r == -EINVAL) {  // kernel < 6.1: no DEFER_TASKRUN
        params = io_uring_params{};
        params.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL |
                       IORING_SETUP_CQSIZE;
        params.cq_entries = kCqEntries;
        r = io_uring_queue_init_params(kSqEntries, &ring_, &params);
    }
    if (r == -EINVAL) {
        params = io_uring_params{};
        params.flags = IORING_SETUP_CQSIZE;
        params.cq_entries = kCqEntries;
        r = io_uring_queue_init_params(kSqEntries, &ring_, &params);
    }
    if (r == -EPERM || r == -ENOSYS || r == -EACCES)
        fail("io_uring_queue_init_params (io_uring is refused here: the sysctl kernel.io_uring_disabled, or a seccomp "
             "profile such as a container's, or a kernel without io_uring; build unixgram with -Dio_backend=epoll)",
             r);
    if (r < 0) fail("io_uring_queue_init_params", r);
    ring_ready_ = true;
    try {
        io_uring_register_ring_fd(&ring_);  // optional (5.18): saves an fd lookup per enter
        if (r = io_uring_register_files(&ring_, &socket_fd, 1); r < 0) fail("io_uring_register_files", r);

        if (io_uring_probe* probe = io_uring_get_probe_ring(&ring_); probe != nullptr) {
            msg_ring_ = io_uring_opcode_supported(probe, IORING_OP_MSG_RING) != 0;
            io_uring_free_probe(probe);
        }
        addressed_send_ = uring_compat::addressed_send_supported();
        buffer_size_ = sizeof(io_uring_recvmsg_out) + kNameRoom + (config.receive_control ? kControlSize : 0) +
                       config.max_datagram_size;
        buffer_size_ = (buffer_size_ + 63) & ~std::size_t{63};
        // Only the receiving shard needs receive buffers; the others get a token ring.
        buffer_count_ = config.receiver ? kBufferCount : 1;
        buffers_bytes_ = buffer_size_ * buffer_count_;
        void* mem = ::mmap(nullptr, buffers_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
        if (mem == MAP_FAILED) fail("mmap of receive buffers", -errno);
        buffers_ = static_cast<std::byte*>(mem);
        int err = 0;
        buf_ring_ = uring_compat::setup_buf_ring(&ring_, buffer_count_, kBufferGroup, &err);
        // Kernels before 5.19 (Ubuntu 22.04's 5.15, Debian 11's 5.10) have no provided-buffer rings.
        if (buf_ring_ == nullptr && err == -EINVAL) fail_kernel_too_old("io_uring_register_buf_ring", err);
        if (buf_ring_ == nullptr) fail("io_uring_register_buf_ring", err);
        // 5.19 has them but no multishot recvmsg: the receive would fail and be re-armed every turn, forever.
        if (config.receiver && uring_compat::multishot_recvmsg_refused())
            fail_kernel_too_old("io_uring_prep_recvmsg_multishot", -EINVAL);
        const int mask = io_uring_buf_ring_mask(buffer_count_);
        for (unsigned i = 0; i < buffer_count_; ++i)
            io_uring_buf_ring_add(buf_ring_, buffers_ + i * buffer_size_, static_cast<unsigned>(buffer_size_),
                                  static_cast<unsigned short>(i), mask, static_cast<int>(i));
        io_uring_buf_ring_advance(buf_ring_, static_cast<int>(buffer_count_));

        recv_msg_.msg_namelen = kNameRoom;
        recv_msg_.msg_controllen = config.receive_control ? kControlSize : 0;

        wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (wake_fd_ < 0) fail("eventfd", -errno);
        arm_wake();
    } catch (...) {
        release();  // not the destructor: the members are destroyed once, by the throw
        throw;
    }
}

UringBackend::~UringBackend() { release(); }

void UringBackend::release() noexcept {
    if (!ring_ready_) return;
    // Cancel the multishot and reap its final CQE before the ring goes: the ring holds a reference
    // to the socket, and an abstract name would otherwise stay bound after close (io-uring-notes §1.0).
    stop_receiving();
    for (int spins = 0; (receive_active() || shard_.ops_in_kernel() > 0 || messages_in_flight_ > 0) && spins < 1000;
         ++spins)
        poll(true, Clock::now() + std::chrono::milliseconds(5));
    uring_compat::free_buf_ring(&ring_, buf_ring_, buffer_count_, kBufferGroup);
    io_uring_unregister_files(&ring_);
    io_uring_queue_exit(&ring_);
    ring_ready_ = false;
    if (buffers_ != nullptr) ::munmap(buffers_, buffers_bytes_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
}

io_uring_sqe* UringBackend::get_sqe() noexcept {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    while (sqe == nullptr) {
        io_uring_submit(&ring_);
        sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
}

void UringBackend::start_receiving() noexcept {
    want_receive_ = true;
    if (recv_state_ == RecvState::idle) arm_receive();
}

void UringBackend::stop_receiving() noexcept {
    want_receive_ = false;
    if (recv_state_ != RecvState::armed) return;
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_cancel64(sqe, kRecvTag, 0);
    io_uring_sqe_set_data64(sqe, kCancelTag);
    recv_state_ = RecvState::cancelling;
}

void UringBackend::arm_receive() noexcept {
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_recvmsg_multishot(sqe, 0, &recv_msg_, MSG_TRUNC);
    sqe->flags |= IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
    sqe->buf_group = kBufferGroup;
    io_uring_sqe_set_data64(sqe, kRecvTag);
    recv_state_ = RecvState::armed;
}

void UringBackend::arm_wake() noexcept {
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_poll_multishot(sqe, wake_fd_, POLLIN);
    io_uring_sqe_set_data64(sqe, kWakeTag);
    wake_armed_ = true;
}

void UringBackend::wake() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

void UringBackend::notify(UringBackend& target) noexcept {
    if (!msg_ring_) {
        target.wake();
        return;
    }
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_msg_ring(sqe, target.ring_.ring_fd, 0, kMessageTag, 0);
    io_uring_sqe_set_data64(sqe, reinterpret_cast<std::uintptr_t>(&target) | 1u);
    ++messages_in_flight_;
}

void UringBackend::submit_send(SendOp* op) noexcept { pending_sends_.push(op); }

void UringBackend::unqueue_send(SendOp* op) noexcept { pending_sends_.remove(op); }

void UringBackend::prepare_sends() noexcept {
    if (pending_sends_.empty()) return;
    pending_sends_.take(preparing_);  // both keep their capacity: no allocation per turn
    for (SendOp* op : preparing_) prepare_send(op);
}

void UringBackend::prepare_send(SendOp* op) noexcept {
    io_uring_sqe* sqe = get_sqe();
    // MSG_DONTWAIT always: a blocking AF_UNIX send retried by io_uring can deliver an empty datagram.
    if (addressed_send_) {
        // sendto: the kernel reads the address directly instead of importing a msghdr and an iovec.
        io_uring_prep_send(sqe, 0, op->buffer.data(), op->buffer.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        io_uring_prep_send_set_addr(sqe, reinterpret_cast<const sockaddr*>(&op->dest),
                                    static_cast<__u16>(op->dest_length));
    } else {
        op->prepare_msghdr();
        io_uring_prep_sendmsg(sqe, 0, &op->msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data(sqe, op);
}

void UringBackend::recycle_buffer(unsigned bid) noexcept {
    io_uring_buf_ring_add(buf_ring_, buffers_ + bid * buffer_size_, static_cast<unsigned>(buffer_size_),
                          static_cast<unsigned short>(bid), io_uring_buf_ring_mask(buffer_count_),
                          static_cast<int>(pending_recycles_));
    ++pending_recycles_;
}

void UringBackend::poll(bool block, Clock::time_point deadline) noexcept {
    prepare_sends();
    int r;
    if (block) {
        io_uring_cqe* cqe = nullptr;
        if (deadline == Clock::time_point::max()) {
            // Not io_uring_submit_and_wait_timeout(..., nullptr): its get-CQE loop cost 185 more
            // instructions a turn (callgrind, ping-pong); the CQEs are peeked below anyway.
            r = io_uring_submit_and_wait(&ring_, 1);
        } else {
            auto left = deadline - Clock::now();
            if (left < Clock::duration::zero()) left = Clock::duration::zero();
            const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
            __kernel_timespec ts{static_cast<long long>(ns / 1000000000), static_cast<long long>(ns % 1000000000)};
            r = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
        }
    } else {
        r = io_uring_submit_and_get_events(&ring_);
    }
    (void)r;  // -ETIME, -EINTR and -EBUSY (CQ overflow) all mean: reap what is there and go on
    if (io_uring_cq_has_overflow(&ring_)) {
        ServerStatsCounters::add(stats_->cq_overflows);
        io_uring_get_events(&ring_);
    }
    // The CQ ring is read in place (io_uring_for_each_cqe, inline) rather than through io_uring_peek_batch_cqe,
    // which copies the pointers out first: 88 instructions per ping-pong exchange (callgrind). Batches of
    // kCqeBatch, each handed back (CQ head, receive buffers) before the next.
    for (;;) {
        unsigned head;
        unsigned n = 0;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(&ring_, head, cqe) {
            handle_cqe(cqe);
            if (++n == kCqeBatch) break;
        }
        if (n == 0) break;
        io_uring_cq_advance(&ring_, n);
        if (pending_recycles_ > 0) {
            io_uring_buf_ring_advance(buf_ring_, static_cast<int>(pending_recycles_));
            pending_recycles_ = 0;
        }
        if (n < kCqeBatch) break;
    }
    if (want_receive_ && recv_state_ == RecvState::idle) arm_receive();
    if (!wake_armed_) arm_wake();
}

void UringBackend::handle_cqe(const io_uring_cqe* cqe) noexcept {
    const std::uint64_t tag = cqe->user_data;
    if (tag == kRecvTag) {
        handle_recv(cqe);
    } else if (tag == kWakeTag) {
        std::uint64_t v;
        [[maybe_unused]] auto n = ::read(wake_fd_, &v, sizeof v);
        if (!(cqe->flags & IORING_CQE_F_MORE)) wake_armed_ = false;
    } else if (tag == kCancelTag || tag == kMessageTag) {
        // kCancelTag: the cancel request itself (the multishot's final CQE carries the state change).
        // kMessageTag: another shard's MSG_RING; waking this loop was its whole purpose.
    } else if ((tag & 1u) != 0) {
        --messages_in_flight_;
        if (cqe->res < 0) {  // unexpected (the probe said yes): use the eventfd from now on
            msg_ring_ = false;
            reinterpret_cast<UringBackend*>(static_cast<std::uintptr_t>(tag & ~std::uint64_t{1}))->wake();
        }
    } else {
        shard_.on_send_complete(reinterpret_cast<SendOp*>(static_cast<std::uintptr_t>(tag)), cqe->res);
    }
}

void UringBackend::handle_recv(const io_uring_cqe* cqe) noexcept {
    const bool more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    if (!more) recv_state_ = RecvState::idle;  // re-armed at the end of poll() if still wanted
    if (cqe->res < 0) {
        // ENOBUFS: the buffer ring ran dry (counted; re-armed once buffers are back). ECANCELED: stopped by us.
        if (cqe->res == -ENOBUFS) {
            ServerStatsCounters::add(stats_->enobufs);
        } else if (cqe->res != -ECANCELED && cqe->res != -EINTR) {
            shard_.on_receive_error(-cqe->res);
        }
        return;
    }
    if (!(cqe->flags & IORING_CQE_F_BUFFER)) return;
    const unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
    std::byte* buf = buffers_ + bid * buffer_size_;
    io_uring_recvmsg_out* out = io_uring_recvmsg_validate(buf, cqe->res, &recv_msg_);
    if (out != nullptr) {
        RecvDatagram d;
        d.name = io_uring_recvmsg_name(out);
        d.name_length = out->namelen > sizeof(sockaddr_un) ? sizeof(sockaddr_un) : out->namelen;
        auto* payload = static_cast<const std::byte*>(io_uring_recvmsg_payload(out, &recv_msg_));
        const unsigned length = io_uring_recvmsg_payload_length(out, cqe->res, &recv_msg_);
        d.real_length = out->payloadlen;
        d.truncated = (out->flags & MSG_TRUNC) != 0;
        d.control_truncated = (out->flags & MSG_CTRUNC) != 0;
        d.payload = {payload, length};
        if (out->controllen > 0) {
            msghdr view = recv_msg_;
            view.msg_control = reinterpret_cast<std::byte*>(out + 1) + recv_msg_.msg_namelen;
            view.msg_controllen = out->controllen;
            decode_control(view, d);
        }
        shard_.on_datagram(d);
    }
    recycle_buffer(bid);
}

}  // namespace unixgram::detail
