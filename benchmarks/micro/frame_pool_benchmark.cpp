// SPDX-License-Identifier: MIT
// Micro-benchmarks of session start/finish: the coroutine frame pool against operator new, and a Task's life.
#include "unixgram/detail/frame_pool.hpp"
#include "unixgram/task.hpp"

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace {

using unixgram::detail::frame_allocate;
using unixgram::detail::frame_deallocate;

// range(0): the frame size; 128 B is a small helper task, 512 B a typical session, 2 KiB one with
// buffers in its frame. range(1): frames alive at once; 1 is a session that ends before the next
// starts, 64 a burst of sessions that overlap (the pool then hands out 64 different blocks).
void frame_args(benchmark::internal::Benchmark* b) {
    b->ArgNames({"size", "live"})->ArgsProduct({{128, 512, 2048}, {1, 64}});
}

void BM_FramePool(benchmark::State& state) {
    const auto size = static_cast<std::size_t>(state.range(0));
    std::vector<void*> frames(static_cast<std::size_t>(state.range(1)));
    for (auto _ : state) {
        for (auto& f : frames) f = frame_allocate(size);
        benchmark::DoNotOptimize(frames.data());
        benchmark::ClobberMemory();
        for (void* f : frames) frame_deallocate(f, size);
    }
    state.SetItemsProcessed(state.iterations() * state.range(1));
}
BENCHMARK(BM_FramePool)->Apply(frame_args);

// The baseline: what a coroutine frame costs without the pool (glibc malloc behind operator new).
void BM_OperatorNew(benchmark::State& state) {
    const auto size = static_cast<std::size_t>(state.range(0));
    std::vector<void*> frames(static_cast<std::size_t>(state.range(1)));
    for (auto _ : state) {
        for (auto& f : frames) f = ::operator new(size);
        benchmark::DoNotOptimize(frames.data());
        benchmark::ClobberMemory();
        for (void* f : frames) ::operator delete(f);
    }
    state.SetItemsProcessed(state.iterations() * state.range(1));
}
BENCHMARK(BM_OperatorNew)->Apply(frame_args);

unixgram::Task<int> answer() { co_return 42; }

unixgram::Task<int> awaits_answer() { co_return co_await answer() + 1; }

/// Starts `task` the way the engine starts a root coroutine (resume its handle), then destroys it.
int run_to_completion(unixgram::Task<int> task) {
    auto h = task.release();
    // The engine's root frames outlive the function that creates them. Hiding the handle keeps
    // Clang from seeing creation and destruction together and eliding the frame's allocation.
    benchmark::DoNotOptimize(h);
    h.resume();
    const int value = h.promise().take();
    h.destroy();
    return value;
}

// One trivial Task: frame from the pool, initial suspend, resume, co_return, final suspend, destroy.
void BM_TaskRun(benchmark::State& state) {
    if (run_to_completion(answer()) != 42) state.SkipWithError("answer() did not return 42");
    for (auto _ : state) {
        int v = run_to_completion(answer());
        benchmark::DoNotOptimize(v);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TaskRun);

// A trivial Task<int> created and finished by co_await from an outer Task: two frames, and the
// symmetric transfers into the inner task and back. The difference from BM_TaskRun is what a helper
// task awaited by a session costs. (Clang may elide the inner frame's allocation into the outer frame.)
void BM_TaskAwaitTrivial(benchmark::State& state) {
    if (run_to_completion(awaits_answer()) != 43) state.SkipWithError("awaits_answer() did not return 43");
    for (auto _ : state) {
        int v = run_to_completion(awaits_answer());
        benchmark::DoNotOptimize(v);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TaskAwaitTrivial);

}  // namespace

BENCHMARK_MAIN();
