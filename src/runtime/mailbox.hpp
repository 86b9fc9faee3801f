// SPDX-License-Identifier: MIT
// Mailbox: the single-producer single-consumer ring that hands received datagrams from the
// receiving shard to a client's owner shard (DESIGN §5).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "io/datagram.hpp"

namespace unixgram::detail {

/// A byte ring of variable-size records, each a copy of one datagram: sender name, fds,
/// credentials and payload. The producer writes records at its private tail and makes them
/// visible in batches with publish() (one release store per batch); the consumer reads them in
/// place — the payload is parsed straight from the ring — and returns the space per batch.
/// Capacity is fixed: push() fails when the ring is full, and nothing is ever allocated.
class Mailbox {
public:
    /// Room for at least four records of a datagram of `max_datagram_size` bytes with all fds.
    explicit Mailbox(std::size_t max_datagram_size);
    Mailbox(const Mailbox&) = delete;
    Mailbox& operator=(const Mailbox&) = delete;

    std::size_t capacity() const noexcept { return capacity_; }
    /// Bytes one record of `d` takes.
    static std::size_t record_size(const RecvDatagram& d) noexcept;

    // ---- producer side (one thread) ----
    /// Copies `d` into the ring (not yet visible); false when the ring has no room for it.
    bool push(const RecvDatagram& d) noexcept;
    /// Copies an encoded record (see encode()) into the ring; false when there is no room.
    bool push_encoded(std::span<const std::byte> record) noexcept;
    /// Encodes `d` into `out` (record_size(d) bytes, 8-byte aligned).
    static void encode(const RecvDatagram& d, std::byte* out) noexcept;
    /// Decodes an encoded record into `d` (which points into it); returns the record's size.
    static std::size_t decode(const std::byte* record, RecvDatagram& d) noexcept;
    /// Makes the records pushed so far visible to the consumer; true when there were any.
    bool publish() noexcept {
        if (local_tail_ == published_tail_) return false;
        published_tail_ = local_tail_;
        tail_.store(local_tail_, std::memory_order_release);
        return true;
    }
    /// Set by the producer when push() failed: the consumer wakes it once it has freed space.
    std::atomic<bool> producer_waiting{false};

    // ---- consumer side (one thread) ----
    /// True when nothing published is left to read.
    bool empty() const noexcept { return head_local_ == tail_.load(std::memory_order_acquire); }
    /// Decodes up to `max` published records in order and calls `f(RecvDatagram&)` for each; the
    /// datagram is valid only during the call. Returns how many were delivered.
    template <class F>
    std::size_t drain(F&& f, std::size_t max) {
        const std::uint64_t tail = tail_.load(std::memory_order_acquire);
        std::size_t n = 0;
        RecvDatagram d;
        while (head_local_ != tail && n < max) {
            const std::size_t pos = head_local_ & mask_;
            if (read_record(pos, d)) {
                f(d);
                ++n;
            }
        }
        head_.store(head_local_, std::memory_order_release);
        return n;
    }
    /// Drained below half and the producer waits for room: the caller should wake it (once).
    bool should_wake_producer() noexcept {
        std::atomic_thread_fence(std::memory_order_seq_cst);  // head_ stored before producer_waiting is read
        return producer_waiting.load(std::memory_order_relaxed) &&
               tail_.load(std::memory_order_relaxed) - head_local_ <= capacity_ / 2 &&
               producer_waiting.exchange(false, std::memory_order_acq_rel);
    }

private:
    struct Header;
    /// Decodes the record at `pos` into `d` and advances the head; false for a wrap marker.
    bool read_record(std::size_t pos, RecvDatagram& d) noexcept;
    std::byte* reserve(std::size_t size) noexcept;

    std::size_t capacity_;
    std::size_t mask_;
    std::unique_ptr<std::byte[]> ring_;
    // Producer's cache line: its private tail, what it published, and its view of the head.
    alignas(64) std::uint64_t local_tail_ = 0;
    std::uint64_t published_tail_ = 0;
    std::uint64_t cached_head_ = 0;
    alignas(64) std::atomic<std::uint64_t> tail_{0};
    alignas(64) std::atomic<std::uint64_t> head_{0};
    alignas(64) std::uint64_t head_local_ = 0;  // consumer's
};

}  // namespace unixgram::detail
