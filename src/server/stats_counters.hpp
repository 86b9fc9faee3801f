// SPDX-License-Identifier: MIT
// ServerStatsCounters: the live, atomic form of ServerStats (written by the loop, read anywhere).
#pragma once

#include <atomic>
#include <cstdint>

#include "unixgram/stats.hpp"

#define UNIXGRAM_STATS_FIELDS(X)                                                                                   \
    X(datagrams_received) X(bytes_received) X(datagrams_sent) X(bytes_sent) X(sessions_started) X(parse_errors)    \
    X(handler_errors) X(dropped_unnamed) X(dropped_truncated) X(dropped_queue_full) X(dropped_unconsumed)          \
    X(dropped_at_shutdown) X(send_retries) X(send_errors) X(send_timeouts) X(sends_abandoned) X(fds_closed)        \
    X(control_truncated) X(enobufs) X(cq_overflows) X(receive_pauses)

namespace unixgram::detail {

struct ServerStatsCounters {
#define UNIXGRAM_DECLARE(name) std::atomic<std::uint64_t> name{0};
    UNIXGRAM_STATS_FIELDS(UNIXGRAM_DECLARE)
#undef UNIXGRAM_DECLARE

    /// Only the loop thread writes, so a relaxed load + store is enough (no locked instruction).
    static void add(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
        c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }

    ServerStats snapshot() const noexcept {
        ServerStats s;
#define UNIXGRAM_COPY(name) s.name = name.load(std::memory_order_relaxed);
        UNIXGRAM_STATS_FIELDS(UNIXGRAM_COPY)
#undef UNIXGRAM_COPY
        return s;
    }
};

}  // namespace unixgram::detail
