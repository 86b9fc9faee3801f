// SPDX-License-Identifier: MIT
// Recycling allocator for coroutine frames (sessions, tasks): no heap allocation per datagram.
#pragma once

#include <cstddef>

namespace unixgram::detail {

/// Allocates a coroutine frame of `size` bytes from the calling thread's recycling pool (size
/// classes of 64 bytes up to 4 KiB; larger frames go to operator new). Throws std::bad_alloc.
void* frame_allocate(std::size_t size);
/// Returns a frame to the calling thread's pool (bounded: beyond it, the memory is freed).
void frame_deallocate(void* frame, std::size_t size) noexcept;

/// Fills the calling thread's pool with `per_class` blocks of every size class up to `up_to_bytes`, so that
/// a new peak of concurrent sessions or queued datagrams (up to `per_class`) allocates nothing.
void frame_pool_prewarm(std::size_t up_to_bytes, std::size_t per_class);

/// Mixed into a promise type: its coroutine frames come from the frame pool.
struct PooledFrame {
    static void* operator new(std::size_t size) { return frame_allocate(size); }
    static void operator delete(void* frame, std::size_t size) noexcept { frame_deallocate(frame, size); }
};

}  // namespace unixgram::detail
