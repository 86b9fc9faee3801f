// SPDX-License-Identifier: MIT
// Micro-benchmarks of the shard's TimerHeap: arm and cancel among N armed timers, arm and expire in order.
#include "runtime/timer_heap.hpp"

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace {

using unixgram::detail::Clock;
using unixgram::detail::TimerHeap;
using unixgram::detail::TimerNode;

Clock::time_point at_tick(std::uint64_t tick) { return Clock::time_point(std::chrono::nanoseconds(tick)); }

// A receive timeout armed and then cancelled because the datagram came first, while N other
// sessions wait with their own timeouts: the common case on a busy server. Deadlines are random over
// the same span as the others', so each arm sifts up part way and each cancel refills a hole.
void BM_TimerHeapArmCancel(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    std::mt19937_64 rng(42);
    std::uniform_int_distribution<std::uint64_t> span(0, 1'000'000'000);  // one second, in ns
    std::vector<TimerNode> others(n);
    TimerHeap heap;
    for (auto& node : others) heap.arm(&node, at_tick(span(rng)));
    std::vector<Clock::time_point> deadlines(4096);
    for (auto& d : deadlines) d = at_tick(span(rng));

    TimerNode mine;
    std::size_t i = 0;
    for (auto _ : state) {
        heap.arm(&mine, deadlines[i]);
        benchmark::DoNotOptimize(heap.top());
        heap.cancel(&mine);
        i = (i + 1) % deadlines.size();
    }
    state.SetItemsProcessed(state.iterations());
    if (heap.size() != n) state.SkipWithError("the heap lost or kept a timer");
}
BENCHMARK(BM_TimerHeapArmCancel)->Arg(16)->Arg(1024)->Arg(65536);

// Timeouts of one fixed duration that all run out: each iteration arms a timer for the latest
// deadline (now + timeout goes to the bottom of the heap) and pops the earliest, which is due; the
// heap stays at N timers. A pop moves the last leaf to the root and sifts it down the full depth.
void BM_TimerHeapArmPopExpired(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    std::vector<TimerNode> nodes(n + 1);
    TimerHeap heap;
    for (std::size_t k = 0; k < n; ++k) heap.arm(&nodes[k], at_tick(k));

    TimerNode* spare = &nodes[n];
    std::uint64_t now = 0;
    for (auto _ : state) {
        heap.arm(spare, at_tick(now + n));
        spare = heap.pop_expired(at_tick(now));
        benchmark::DoNotOptimize(spare);
        ++now;
    }
    state.SetItemsProcessed(state.iterations());
    if (spare == nullptr || heap.size() != n) state.SkipWithError("pop_expired found no due timer");
}
BENCHMARK(BM_TimerHeapArmPopExpired)->Arg(16)->Arg(1024)->Arg(65536);

}  // namespace

BENCHMARK_MAIN();
