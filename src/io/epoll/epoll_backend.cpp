// SPDX-License-Identifier: MIT
// EpollBackend implementation.
#include "io/epoll/epoll_backend.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <string>
#include <system_error>

#include "io/backend.hpp"
#include "io/datagram.hpp"
#include "runtime/shard.hpp"

namespace unixgram::detail {

namespace {
[[noreturn]] void fail(const char* step) {
    throw std::system_error(errno, std::generic_category(), std::string("epoll backend: ") + step);
}
constexpr std::uint64_t kSocketTag = 1, kWakeTag = 2;
}  // namespace

EpollBackend::EpollBackend(Shard& shard, int socket_fd, const BackendConfig& config)
    : shard_(shard), socket_fd_(socket_fd), control_(config.receive_control) {
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) fail("epoll_create1");
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) {
        ::close(epoll_fd_);
        fail("eventfd");
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kWakeTag;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
    // Only the receiving shard watches the socket. An entry, even with no events, hangs on the socket's wait
    // queue, and every datagram in and every reply freed walks that queue, taking each entry's lock.
    if (config.receiver) {
        ev.events = 0;
        ev.data.u64 = kSocketTag;
        if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, socket_fd_, &ev) < 0) {
            const int e = errno;
            ::close(wake_fd_);
            ::close(epoll_fd_);
            errno = e;
            fail("epoll_ctl(ADD socket)");
        }
        socket_registered_ = true;
    }
    // One extra byte detects datagrams over the limit (MSG_TRUNC also reports their real length).
    buffer_size_ = config.max_datagram_size + 1;
    // Only the receiving shard reads; the others keep one slot so that the pointers below are valid.
    const std::size_t slots = config.receiver ? kBatch : 1;
    buffers_ = std::make_unique<std::byte[]>(buffer_size_ * slots);
    if (control_) controls_ = std::make_unique<std::byte[]>(kControlSize * slots);
    for (std::size_t i = 0; i < slots; ++i) {
        recv_iovs_[i] = {buffers_.get() + i * buffer_size_, buffer_size_};
        msghdr& m = recv_msgs_[i].msg_hdr;
        m = msghdr{};
        m.msg_name = &recv_names_[i];
        m.msg_iov = &recv_iovs_[i];
        m.msg_iovlen = 1;
        if (control_) m.msg_control = controls_.get() + i * kControlSize;
    }
    recv_filled_ = slots;
    reset_recv_headers();
    pending_sends_.reserve(kBatch);
    flushing_.reserve(kBatch);
    send_msgs_.reserve(kBatch);
}

EpollBackend::~EpollBackend() {
    flush_sends();
    ::close(wake_fd_);
    ::close(epoll_fd_);
}

void EpollBackend::set_interest(bool readable) noexcept {
    if (!socket_registered_) return;  // not the receiving shard: only shard 0 starts and stops the receive
    epoll_event ev{};
    ev.events = readable ? static_cast<std::uint32_t>(EPOLLIN) : 0u;
    ev.data.u64 = kSocketTag;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, socket_fd_, &ev);
}

void EpollBackend::start_receiving() noexcept {
    if (receiving_) return;
    receiving_ = true;
    set_interest(true);
}

void EpollBackend::stop_receiving() noexcept {
    if (!receiving_) return;
    receiving_ = false;
    set_interest(false);
}

void EpollBackend::wake() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

void EpollBackend::submit_send(SendOp* op) noexcept {
    op->prepare_msghdr();
    pending_sends_.push(op);
}

void EpollBackend::unqueue_send(SendOp* op) noexcept { pending_sends_.remove(op); }

void EpollBackend::flush_sends() noexcept {
    while (!pending_sends_.empty()) {
        // Completions may queue new sends (a resumed session); take the current batch first.
        std::vector<SendOp*>& batch = flushing_;
        pending_sends_.take(batch);
        std::size_t i = 0;
        while (i < batch.size()) {
            const std::size_t n = std::min(kBatch, batch.size() - i);
            // MSG_DONTWAIT: a full peer answers EAGAIN, which the shard retries with backoff.
            i += send_some(socket_fd_, batch.data() + i, n, send_msgs_,
                           [this](SendOp* op, int result) { shard_.on_send_complete(op, result); });
        }
        batch.clear();  // keeps its capacity: no allocation per flush
    }
}

void EpollBackend::reset_recv_headers() noexcept {
    // Only what the kernel wrote back, in the headers it filled: each call used to reset all 32, 600 of the
    // loop's 2,400 instructions per datagram in ping-pong (callgrind), where a call reads one datagram.
    const socklen_t control_size = control_ ? kControlSize : 0;
    for (std::size_t i = 0; i < recv_filled_; ++i) {
        msghdr& m = recv_msgs_[i].msg_hdr;
        m.msg_namelen = sizeof(sockaddr_un);
        m.msg_controllen = control_size;
        m.msg_flags = 0;
        recv_msgs_[i].msg_len = 0;
    }
    recv_filled_ = 0;
}

std::size_t EpollBackend::receive_batches() noexcept {
    std::size_t read = 0;
    // A few batches per turn, then let sends and sessions run (fairness between directions).
    for (int round = 0; round < 4 && receiving_; ++round) {
        reset_recv_headers();
        // The raw system call: glibc's wrapper is a cancellation point, whose bookkeeping costs about 60
        // instructions a call (callgrind), two calls per datagram in ping-pong.
        const int n = static_cast<int>(::syscall(SYS_recvmmsg, socket_fd_, recv_msgs_, kBatch,
                                                 MSG_DONTWAIT | MSG_TRUNC | MSG_CMSG_CLOEXEC, nullptr));
        // Hot (read it directly next turn) only after more than one datagram: a lone datagram is what a
        // ping-pong client sends, and it sends nothing more until its reply, so reading again would only
        // return EAGAIN: one system call in four per exchange.
        socket_hot_ = n > 1;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) shard_.on_receive_error(errno);
        if (n <= 0) return read;
        recv_filled_ = static_cast<std::size_t>(n);
        read += static_cast<std::size_t>(n);
        // Everything read is dispatched, even if a datagram pauses receiving (queue cap reached).
        for (int i = 0; i < n; ++i) {
            const msghdr& m = recv_msgs_[i].msg_hdr;
            RecvDatagram d;
            d.name = m.msg_name;
            d.name_length = m.msg_namelen;
            d.real_length = recv_msgs_[i].msg_len;
            d.truncated = (m.msg_flags & MSG_TRUNC) != 0 || d.real_length > buffer_size_ - 1;
            d.control_truncated = (m.msg_flags & MSG_CTRUNC) != 0;
            d.payload = {static_cast<const std::byte*>(recv_iovs_[i].iov_base),
                         std::min<std::size_t>(d.real_length, buffer_size_)};
            if (control_) decode_control(m, d);
            shard_.on_datagram(d);
        }
        if (static_cast<std::size_t>(n) < kBatch) return read;
    }
    return read;
}

void EpollBackend::poll(bool block, Clock::time_point deadline) noexcept {
    flush_sends();
    // Under load the socket refills between turns: read it directly, as a recvmmsg loop would, and ask
    // epoll only once it is empty (or every kMaxPollSkips turns, so that eventfd wake-ups are seen).
    if (receiving_ && socket_hot_ && poll_skips_ < kMaxPollSkips) {
        ++poll_skips_;
        // Whatever it read was dispatched and may have queued replies: send them and let the sessions
        // run before any sleep.
        if (receive_batches() > 0) {
            flush_sends();
            return;
        }
    }
    poll_skips_ = 0;
    epoll_event events[4];
    timespec ts{0, 0};
    timespec* tsp = &ts;
    // Completions of the sends just flushed made coroutines ready: do not sleep on them.
    if (block && !shard_.has_ready_work()) {
        if (deadline == Clock::time_point::max()) {
            tsp = nullptr;
        } else {
            auto left = deadline - Clock::now();
            if (left < Clock::duration::zero()) left = Clock::duration::zero();
            const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
            ts = {static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
        }
    }
    const int n = wait(events, 4, tsp);
    for (int i = 0; i < n; ++i) {
        if (events[i].data.u64 == kWakeTag) {
            std::uint64_t v;
            [[maybe_unused]] auto r = ::read(wake_fd_, &v, sizeof v);
        } else if (events[i].data.u64 == kSocketTag) {
            receive_batches();
        }
    }
    flush_sends();
}

int EpollBackend::wait(epoll_event* events, int max_events, const timespec* timeout) noexcept {
    if (have_pwait2_) {
        const int n = ::epoll_pwait2(epoll_fd_, events, max_events, timeout, nullptr);
        // Kernels before 5.11 lack epoll_pwait2, and some seccomp profiles (containers, sandboxes) refuse it;
        // without the fallback the loop would spin without ever reading the socket.
        if (n >= 0 || (errno != ENOSYS && errno != EPERM)) return n;
        have_pwait2_ = false;
    }
    return ::epoll_wait(epoll_fd_, events, max_events, epoll_wait_timeout_ms(timeout));
}

int epoll_wait_timeout_ms(const timespec* timeout) noexcept {
    if (timeout == nullptr) return -1;
    // Rounded up: a deadline 0.3 ms away must not become a 0 ms poll that spins until it passes.
    const long long ms = static_cast<long long>(timeout->tv_sec) * 1000 + (timeout->tv_nsec + 999999) / 1000000;
    return ms > std::numeric_limits<int>::max() ? std::numeric_limits<int>::max() : static_cast<int>(ms);
}

}  // namespace unixgram::detail
