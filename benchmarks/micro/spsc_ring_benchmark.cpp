// SPDX-License-Identifier: MIT
// Reference design and micro-benchmark of a bounded SPSC ring, the candidate for the cross-shard mailbox.
//
// REFERENCE FOR THE SHARDING WORK. The library has no cross-shard mailbox yet; SpscRing below is the
// design we mean to start from (one ring per ordered pair of shards, as in Seastar's smp queues),
// kept here so that its cost is measured before anything depends on it. It is not part of the
// library: when the mailbox lands under src/, this benchmark should switch to that type and the
// numbers here become the baseline it must match.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <thread>
#include <type_traits>

namespace {

// 64 bytes on x86-64 and most AArch64 parts. Not std::hardware_destructive_interference_size: GCC
// warns that its value may differ between compilations (-Winterference-size), and -Werror is on.
constexpr std::size_t kCacheLine = 64;

/// A bounded single-producer / single-consumer ring of `T`. `Capacity` is a power of two so that an
/// index maps to its slot with a mask, and the indices run free (they wrap at 2^64, never in practice).
/// The producer alone writes `tail_`, the consumer alone writes `head_`; a release store of one and
/// an acquire load by the other side publish the slots in between, with no read-modify-write.
template <class T, std::size_t Capacity>
    requires std::is_trivially_copyable_v<T> && (Capacity >= 2) && ((Capacity & (Capacity - 1)) == 0)
class SpscRing {
public:
    /// Producer only. Copies as many of `items` as there is room for; returns how many.
    std::size_t try_push(std::span<const T> items) noexcept {
        const std::uint64_t tail = tail_.load(std::memory_order_relaxed);
        if (tail - head_cache_ + items.size() > Capacity) {
            head_cache_ = head_.load(std::memory_order_acquire);
        }
        const std::size_t n = std::min<std::size_t>(items.size(), Capacity - (tail - head_cache_));
        for (std::size_t k = 0; k < n; ++k) slots_[(tail + k) & kMask] = items[k];
        if (n != 0) tail_.store(tail + n, std::memory_order_release);
        return n;
    }

    /// Consumer only. Moves up to `out.size()` items into `out`; returns how many.
    std::size_t try_pop(std::span<T> out) noexcept {
        const std::uint64_t head = head_.load(std::memory_order_relaxed);
        if (tail_cache_ - head < out.size()) tail_cache_ = tail_.load(std::memory_order_acquire);
        const std::size_t n = std::min<std::size_t>(out.size(), tail_cache_ - head);
        for (std::size_t k = 0; k < n; ++k) out[k] = slots_[(head + k) & kMask];
        if (n != 0) head_.store(head + n, std::memory_order_release);
        return n;
    }

private:
    static constexpr std::uint64_t kMask = Capacity - 1;

    // Each index shares its cache line only with the copy of the other index that the same side
    // keeps. Without the padding every push would invalidate the consumer's line and every pop the
    // producer's (false sharing); without the cached copies each call would read the other side's
    // line, which the other core keeps writing. With both, a side touches the other's line only
    // when its cached view says the ring is full (producer) or empty (consumer).
    alignas(kCacheLine) std::atomic<std::uint64_t> tail_{0};  // written by the producer
    std::uint64_t head_cache_ = 0;                            // the producer's view of head_
    alignas(kCacheLine) std::atomic<std::uint64_t> head_{0};  // written by the consumer
    std::uint64_t tail_cache_ = 0;                            // the consumer's view of tail_
    alignas(kCacheLine) std::array<T, Capacity> slots_{};
};

// A message is one pointer-sized word, e.g. a pointer to a request owned by the sending shard.
using Message = std::uint64_t;
constexpr std::size_t kRingCapacity = 1024;
using Ring = SpscRing<Message, kRingCapacity>;

/// How a side waits for the other (ring full, ring empty): a short spin, then it gives up the core.
/// The yield matters where the two threads share a core (one core, or a loaded machine): spinning
/// through a whole time slice would measure the scheduler instead of the ring.
class Backoff {
public:
    void wait() noexcept {
        if (++spins_ < kSpins) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        } else {
            std::this_thread::yield();
        }
    }
    void reset() noexcept { spins_ = 0; }

private:
    static constexpr unsigned kSpins = 128;
    unsigned spins_ = 0;
};

/// Sends the next `scratch.size()` messages of the sequence 0, 1, 2, ...; waits while the ring is full.
void push_batch(Ring& ring, Message& next, std::span<Message> scratch) noexcept {
    for (auto& m : scratch) m = next++;
    std::span<const Message> rest = scratch;
    Backoff backoff;
    while (!rest.empty()) {
        const std::size_t n = ring.try_push(rest);
        if (n == 0) {
            backoff.wait();
            continue;
        }
        backoff.reset();
        rest = rest.subspan(n);
    }
}

// range(0): messages per push and per pop. 1 publishes every message on its own (the latency-bound
// case: one cache-line transfer per message); 32 amortizes the index stores and line transfers.
// The producer is the benchmark's thread and is what is timed; the consumer is a second thread that
// checks every message arrives once and in order. On a machine with one core, both share it.
void BM_SpscRingCrossThread(benchmark::State& state) {
    const auto batch = static_cast<std::size_t>(state.range(0));
    auto ring = std::make_unique<Ring>();
    std::atomic<bool> producer_done{false};
    std::atomic<bool> out_of_order{false};
    std::uint64_t received = 0;

    std::thread consumer([&] {
        std::array<Message, 32> buffer;
        const std::span<Message> out(buffer.data(), batch);
        Message expected = 0;
        Backoff backoff;
        for (;;) {
            // Read before popping: once the producer is done, an empty ring means all has arrived.
            const bool done = producer_done.load(std::memory_order_acquire);
            const std::size_t n = ring->try_pop(out);
            if (n == 0) {
                if (done) break;
                backoff.wait();
                continue;
            }
            backoff.reset();
            for (std::size_t k = 0; k < n; ++k) {
                if (out[k] != expected++) out_of_order.store(true, std::memory_order_relaxed);
            }
        }
        received = expected;
    });

    std::array<Message, 32> scratch;
    Message next = 0;
    for (auto _ : state) push_batch(*ring, next, std::span(scratch.data(), batch));
    producer_done.store(true, std::memory_order_release);
    consumer.join();

    state.SetItemsProcessed(state.iterations() * state.range(0));
    if (out_of_order.load() || received != next) state.SkipWithError("the consumer lost or reordered messages");
}
BENCHMARK(BM_SpscRingCrossThread)->Arg(1)->Arg(32)->UseRealTime();

// The same push and pop on one thread: the ring's own instruction cost, with no cache line moving
// between cores. The gap to BM_SpscRingCrossThread is what the cross-core traffic costs.
void BM_SpscRingSameThread(benchmark::State& state) {
    const auto batch = static_cast<std::size_t>(state.range(0));
    auto ring = std::make_unique<Ring>();
    std::array<Message, 32> scratch;
    std::array<Message, 32> out;
    Message next = 0;
    for (auto _ : state) {
        push_batch(*ring, next, std::span(scratch.data(), batch));
        benchmark::DoNotOptimize(ring->try_pop(std::span(out.data(), batch)));
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_SpscRingSameThread)->Arg(1)->Arg(32);

}  // namespace

BENCHMARK_MAIN();
