// SPDX-License-Identifier: MIT
// Thread-local size-class free lists for coroutine frames.
#include "unixgram/detail/frame_pool.hpp"

#include <algorithm>
#include <array>
#include <new>

namespace unixgram::detail {

namespace {

constexpr std::size_t kGranule = 64;
constexpr std::size_t kClasses = 64;  // frames up to 4 KiB are pooled
constexpr std::size_t kMaxPerClass = 4096;

struct FreeBlock {
    FreeBlock* next;
};

/// One per thread; a loop thread allocates and frees its sessions' frames, so no lock is needed.
/// A frame freed on another thread simply joins that thread's lists. Trivially destructible, so that
/// an access is one %fs-relative load: a destructor would add a guard (and a __tls_get_addr call) to
/// every access. PoolReaper frees the lists at thread exit.
struct Pool {
    std::array<FreeBlock*, kClasses> heads{};
    std::array<std::size_t, kClasses> counts{};
};

// initial-exec: no __tls_get_addr call on the hot path (libunixgram is linked, not dlopen()ed).
[[gnu::tls_model("initial-exec")]] thread_local Pool pool;

struct PoolReaper {
    bool armed = false;
    ~PoolReaper() {
        for (auto*& head : pool.heads) {
            while (head != nullptr) {
                FreeBlock* next = head->next;
                ::operator delete(head);
                head = next;
            }
        }
        pool.counts = {};
    }
};
thread_local PoolReaper reaper;  // touched only where memory is taken from the heap (slow path)

void* allocate_block(std::size_t bytes) {
    reaper.armed = true;  // registers its destructor for this thread
    return ::operator new(bytes);
}

std::size_t size_class(std::size_t size) noexcept { return (size + kGranule - 1) / kGranule - 1; }

}  // namespace

void* frame_allocate(std::size_t size) {
    const std::size_t c = size_class(size);
    if (c >= kClasses) return ::operator new(size);
    if (FreeBlock* b = pool.heads[c]; b != nullptr) {
        pool.heads[c] = b->next;
        --pool.counts[c];
        return b;
    }
    return allocate_block((c + 1) * kGranule);
}

void frame_pool_prewarm(std::size_t up_to_bytes, std::size_t per_class) {
    const std::size_t last = std::min(size_class(up_to_bytes), kClasses - 1);
    for (std::size_t c = 0; c <= last; ++c) {
        while (pool.counts[c] < per_class) {
            auto* b = static_cast<FreeBlock*>(allocate_block((c + 1) * kGranule));
            b->next = pool.heads[c];
            pool.heads[c] = b;
            ++pool.counts[c];
        }
    }
}

void frame_deallocate(void* frame, std::size_t size) noexcept {
    const std::size_t c = size_class(size);
    if (c >= kClasses || pool.counts[c] >= kMaxPerClass) {
        ::operator delete(frame);
        return;
    }
    auto* b = static_cast<FreeBlock*>(frame);
    b->next = pool.heads[c];
    pool.heads[c] = b;
    ++pool.counts[c];
}

}  // namespace unixgram::detail
