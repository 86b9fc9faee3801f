// SPDX-License-Identifier: MIT
// UringBackend: multishot recvmsg on a provided-buffer ring, batched MSG_DONTWAIT sends (sendto, or sendmsg on kernels < 6.1).
#pragma once

#include <liburing.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "io/send_batch.hpp"
#include "unixgram/detail/engine.hpp"

namespace unixgram::detail {

class Shard;
struct BackendConfig;
struct SendOp;
struct ServerStatsCounters;

/// Kernel ≥ 6.0 (multishot recvmsg), SINGLE_ISSUER|DEFER_TASKRUN from 6.1 (falls back to
/// COOP_TASKRUN, then to no flags). The ring is created by, and only used from, the loop thread.
class UringBackend {
public:
    /// Throws std::system_error when io_uring cannot be set up (message says which step).
    UringBackend(Shard& shard, int socket_fd, const BackendConfig& config);
    ~UringBackend();
    UringBackend(const UringBackend&) = delete;
    UringBackend& operator=(const UringBackend&) = delete;

    void start_receiving() noexcept;
    /// Stops reading; returns at once (the multishot ends asynchronously).
    void stop_receiving() noexcept;
    /// True while a multishot receive is armed or being cancelled.
    bool receive_active() const noexcept { return recv_state_ != RecvState::idle; }

    /// Queues `op` for this turn's batch (op->queued until the batch goes to the kernel).
    void submit_send(SendOp* op) noexcept;
    /// Takes a queued op out of the batch (the shard sends it itself).
    void unqueue_send(SendOp* op) noexcept;
    /// Nothing to do: queued sends go to the kernel with the next poll()'s io_uring_enter.
    void flush() noexcept {}
    /// Submits queued SQEs and processes completions; waits until `deadline` when `block`.
    void poll(bool block, Clock::time_point deadline) noexcept;
    void wake() noexcept;
    /// Wakes `target`'s loop with IORING_OP_MSG_RING (submitted with this ring's next enter); falls
    /// back to its eventfd where the kernel lacks MSG_RING.
    void notify(UringBackend& target) noexcept;
    /// MSG_RING requests not yet completed (their targets must outlive them).
    unsigned messages_in_flight() const noexcept { return messages_in_flight_; }
    const char* name() const noexcept { return "io_uring"; }

private:
    enum class RecvState { idle, armed, cancelling };
    // Send ops are aligned pointers; a MSG_RING completion is its target's address | 1.
    static constexpr std::uint64_t kRecvTag = 1, kWakeTag = 2, kCancelTag = 3, kMessageTag = 4;

    /// Tears the ring down (the destructor; the constructor when a later step fails).
    void release() noexcept;
    io_uring_sqe* get_sqe() noexcept;
    void arm_receive() noexcept;
    void arm_wake() noexcept;
    void handle_cqe(const io_uring_cqe* cqe) noexcept;
    void handle_recv(const io_uring_cqe* cqe) noexcept;
    void recycle_buffer(unsigned bid) noexcept;
    void prepare_sends() noexcept;
    void prepare_send(SendOp* op) noexcept;

    Shard& shard_;
    ServerStatsCounters* stats_;
    io_uring ring_{};
    bool ring_ready_ = false;
    int wake_fd_ = -1;
    bool wake_armed_ = false;

    io_uring_buf_ring* buf_ring_ = nullptr;
    std::byte* buffers_ = nullptr;
    std::size_t buffer_size_ = 0;
    std::size_t buffers_bytes_ = 0;
    unsigned buffer_count_ = 0;
    unsigned pending_recycles_ = 0;

    msghdr recv_msg_{};
    RecvState recv_state_ = RecvState::idle;
    bool want_receive_ = false;
    bool msg_ring_ = false;  ///< the kernel supports IORING_OP_MSG_RING
    bool addressed_send_ = false;  ///< the kernel takes an address on IORING_OP_SEND (6.1)
    unsigned messages_in_flight_ = 0;
    SendBatch pending_sends_;  ///< this turn's replies, made SQEs just before the next enter
    std::vector<SendOp*> preparing_;
};

}  // namespace unixgram::detail
