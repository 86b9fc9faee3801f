// SPDX-License-Identifier: MIT
// ServerStatsCounters: the live, atomic form of ServerStats (one block per shard, written by that
// shard's loop only, read anywhere).
#pragma once

#include <atomic>
#include <cstdint>

#include "unixgram/stats.hpp"

#define UNIXGRAM_STATS_FIELDS(X)                                                                                   \
    X(datagrams_received) X(bytes_received) X(datagrams_sent) X(bytes_sent) X(sessions_started) X(parse_errors)    \
    X(handler_errors) X(dropped_unnamed) X(dropped_truncated) X(dropped_queue_full) X(dropped_unconsumed)          \
    X(dropped_at_shutdown) X(send_retries) X(send_errors) X(send_timeouts) X(sends_abandoned) X(fds_closed)        \
    X(control_truncated) X(enobufs) X(cq_overflows) X(receive_pauses) X(receive_errors)    \
    X(replies_sent_early)

namespace unixgram::detail {

struct alignas(64) ServerStatsCounters {
#define UNIXGRAM_DECLARE(name) std::atomic<std::uint64_t> name{0};
    UNIXGRAM_STATS_FIELDS(UNIXGRAM_DECLARE)
#undef UNIXGRAM_DECLARE

    /// Only the shard's loop thread writes, so a relaxed load + store is enough (no locked instruction).
    static void add(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
        c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }

    /// Adds these counters to `s` (stats() sums the shards' blocks).
    void accumulate(ServerStats& s) const noexcept {
#define UNIXGRAM_ADD(name) s.name += name.load(std::memory_order_relaxed);
        UNIXGRAM_STATS_FIELDS(UNIXGRAM_ADD)
#undef UNIXGRAM_ADD
    }
};

}  // namespace unixgram::detail
