// SPDX-License-Identifier: MIT
// EpollBackend: level-triggered epoll, recvmmsg and sendmmsg batches of up to 32 datagrams.
#pragma once

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstddef>
#include <ctime>
#include <memory>
#include <vector>

#include "io/send_batch.hpp"
#include "unixgram/detail/engine.hpp"

namespace unixgram::detail {

class Shard;
struct BackendConfig;
struct SendOp;
struct ServerStatsCounters;

/// epoll_wait's timeout for `timeout` (null: forever, -1), in milliseconds rounded up.
int epoll_wait_timeout_ms(const timespec* timeout) noexcept;

class EpollBackend {
public:
    /// Throws std::system_error naming the failing step.
    EpollBackend(Shard& shard, int socket_fd, const BackendConfig& config);
    ~EpollBackend();
    EpollBackend(const EpollBackend&) = delete;
    EpollBackend& operator=(const EpollBackend&) = delete;

    void start_receiving() noexcept;
    void stop_receiving() noexcept;
    bool receive_active() const noexcept { return false; }  // nothing asynchronous to wait for

    /// Queues `op` for this turn's batch (op->queued until the batch goes to the kernel).
    void submit_send(SendOp* op) noexcept;
    /// Takes a queued op out of the batch (the shard sends it itself).
    void unqueue_send(SendOp* op) noexcept;
    /// Sends what is queued now (sendmmsg); completions are reported before it returns.
    void flush() noexcept { flush_sends(); }
    void poll(bool block, Clock::time_point deadline) noexcept;
    void wake() noexcept;
    /// Wakes `target`'s loop: a write to its eventfd.
    void notify(EpollBackend& target) noexcept { target.wake(); }
    unsigned messages_in_flight() const noexcept { return 0; }
    const char* name() const noexcept { return "epoll"; }

private:
    static constexpr std::size_t kBatch = 32;
    /// Turns in a row that may read the socket without asking epoll first (bounds how long a wake-up
    /// on the eventfd can wait while the socket keeps delivering).
    static constexpr unsigned kMaxPollSkips = 16;
    void flush_sends() noexcept;
    /// Reads and dispatches up to a few batches; returns how many datagrams it read.
    std::size_t receive_batches() noexcept;
    /// Readies the receive headers that the last recvmmsg filled (lengths and flags) for the next one.
    void reset_recv_headers() noexcept;
    void set_interest(bool readable) noexcept;
    /// epoll_pwait2, or epoll_wait with the timeout rounded up to milliseconds where the kernel (before
    /// 5.11) or a seccomp profile refuses it (ENOSYS, EPERM); the first refusal switches for good.
    int wait(epoll_event* events, int max_events, const timespec* timeout) noexcept;

    Shard& shard_;
    int socket_fd_;
    int epoll_fd_ = -1;
    int wake_fd_ = -1;
    bool receiving_ = false;
    bool socket_registered_ = false;  ///< in this epoll set: the receiving shard's only
    bool socket_hot_ = false;  ///< the last recvmmsg returned more than one datagram: read before polling
    unsigned poll_skips_ = 0;
    bool control_ = false;
    bool have_pwait2_ = true;
    std::size_t buffer_size_ = 0;
    std::unique_ptr<std::byte[]> buffers_;
    std::unique_ptr<std::byte[]> controls_;
    mmsghdr recv_msgs_[kBatch];
    iovec recv_iovs_[kBatch];
    sockaddr_un recv_names_[kBatch];
    std::size_t recv_filled_ = 0;  ///< headers the last recvmmsg wrote to
    SendBatch pending_sends_;
    std::vector<SendOp*> flushing_;  ///< the batch being sent (completions may queue new sends)
    std::vector<mmsghdr> send_msgs_;
};

}  // namespace unixgram::detail
