// SPDX-License-Identifier: MIT
// Micro-benchmarks of the cross-shard Mailbox (DESIGN §5): push, publish and drain of datagram records
// on one thread (the ring's own cost), and a producer and a consumer thread (with cache-line traffic).
#include "runtime/mailbox.hpp"

#include <benchmark/benchmark.h>
#include <sys/un.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

using unixgram::detail::Mailbox;
using unixgram::detail::RecvDatagram;

/// A datagram with a `size`-byte payload from a client bound to a 20-byte pathname.
struct Datagram {
    sockaddr_un addr{};
    std::vector<std::byte> payload;
    RecvDatagram d;

    explicit Datagram(std::size_t size) : payload(size, std::byte{0x5a}) {
        constexpr char kPath[] = "/run/unixgram/c-0001";
        static_assert(sizeof kPath - 1 == 20);
        addr.sun_family = AF_UNIX;
        std::memcpy(addr.sun_path, kPath, sizeof kPath);
        d.name = &addr;
        d.name_length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + sizeof kPath);
        d.payload = payload;
        d.real_length = size;
    }
    void set_sequence(std::uint64_t seq) noexcept { std::memcpy(payload.data(), &seq, sizeof seq); }
};

/// Spins briefly, then gives up the core: the two threads may share one (2 cores, a busy machine).
class Backoff {
public:
    void wait() noexcept {
        if (++spins_ < 128) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        } else {
            std::this_thread::yield();
        }
    }
    void reset() noexcept { spins_ = 0; }

private:
    unsigned spins_ = 0;
};

constexpr std::size_t kBatch = 16;  // records per publish

// range(0): payload bytes. Push 16 records, publish once, drain them: copy in, decode in place.
void BM_MailboxPushDrain(benchmark::State& state) {
    Datagram dgram(static_cast<std::size_t>(state.range(0)));
    Mailbox box(64 * 1024);
    std::size_t bytes = 0;
    bool ok = true;
    for (auto _ : state) {
        for (std::size_t k = 0; k < kBatch; ++k) ok &= box.push(dgram.d);
        box.publish();
        ok &= box.drain([&](RecvDatagram& d) { bytes += d.payload.size(); }, kBatch) == kBatch;
        benchmark::DoNotOptimize(bytes);
    }
    const auto records = static_cast<double>(state.iterations() * kBatch);
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(kBatch));
    state.counters["time_per_record"] = benchmark::Counter(records, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
    state.counters["record_bytes"] = static_cast<double>(Mailbox::record_size(dgram.d));
    if (!ok) state.SkipWithError("a push or a drain came up short on a drained ring");
}
BENCHMARK(BM_MailboxPushDrain)->Arg(64)->Arg(1024);

// 64-byte records from the benchmark's thread to a consumer thread: the producer publishes every 16
// and, when the ring is full, publishes what it has and retries; an iteration ends once the consumer
// has drained its kPerIteration records. The consumer checks that each arrives once and in order.
void BM_MailboxCrossThread(benchmark::State& state) {
    constexpr std::uint64_t kPerIteration = 4096;
    Datagram dgram(64);
    Mailbox box(64 * 1024);
    std::atomic<std::uint64_t> received{0};
    std::atomic<bool> stop{false};
    std::atomic<bool> out_of_order{false};

    std::thread consumer([&] {
        std::uint64_t expected = 0;
        Backoff backoff;
        while (!stop.load(std::memory_order_acquire)) {
            const std::size_t n = box.drain(
                [&](RecvDatagram& d) {
                    std::uint64_t seq;
                    std::memcpy(&seq, d.payload.data(), sizeof seq);
                    if (seq != expected++) out_of_order.store(true, std::memory_order_relaxed);
                },
                256);
            if (n == 0) {
                backoff.wait();
                continue;
            }
            backoff.reset();
            received.store(expected, std::memory_order_release);
        }
    });

    std::uint64_t sent = 0;
    for (auto _ : state) {
        Backoff backoff;
        for (const std::uint64_t end = sent + kPerIteration; sent < end;) {
            dgram.set_sequence(sent);
            if (!box.push(dgram.d)) {
                box.publish();  // the consumer may be waiting on records not yet published
                backoff.wait();
                continue;
            }
            backoff.reset();
            if (++sent % kBatch == 0) box.publish();
        }
        box.publish();
        while (received.load(std::memory_order_acquire) != sent) backoff.wait();
    }
    stop.store(true, std::memory_order_release);
    consumer.join();

    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(kPerIteration));
    if (out_of_order.load()) state.SkipWithError("the consumer lost or reordered records");
}
BENCHMARK(BM_MailboxCrossThread)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
