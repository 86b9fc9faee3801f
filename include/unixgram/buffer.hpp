// SPDX-License-Identifier: MIT
// Buffer: the growable byte buffer a protocol serializes a datagram into.
#pragma once

/// \file
/// `Buffer` is handed to `Protocol::make_datagram` to fill. The server recycles buffers, so once a
/// buffer has grown to the size of the largest reply, serializing costs no allocation.
///
/// Example:
/// \code
///   unixgram::Buffer buf;
///   buf.append(std::string_view("hello"));
///   buf.append(std::as_bytes(std::span("!", 1)));
///   assert(buf.size() == 6);
///   buf.clear();  // keeps its capacity
/// \endcode

#include <cstddef>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

#include "unixgram/detail/frame_pool.hpp"

namespace unixgram {

/// Raw datagram bytes, as the built-in RawProtocol delivers and sends them.
using Bytes = std::vector<std::byte>;

/// A std::allocator replacement drawing from the calling thread's recycling pool, the one session frames
/// use: blocks of up to 4 KiB go back to that pool when freed (on whichever thread frees them) and are
/// reused instead of returning to malloc; larger ones use operator new. Stateless: all instances compare equal.
template <class T>
struct PoolAllocator {
    using value_type = T;
    PoolAllocator() noexcept = default;
    template <class U>
    PoolAllocator(const PoolAllocator<U>&) noexcept {}
    T* allocate(std::size_t n) { return static_cast<T*>(detail::frame_allocate(n * sizeof(T))); }
    void deallocate(T* p, std::size_t n) noexcept { detail::frame_deallocate(p, n * sizeof(T)); }
    template <class U>
    bool operator==(const PoolAllocator<U>&) const noexcept { return true; }
};

/// Bytes whose storage is recycled per thread (PoolAllocator): what PooledRawProtocol parses requests into.
using PooledBytes = std::vector<std::byte, PoolAllocator<std::byte>>;

class Buffer {
public:
    void clear() noexcept { bytes_.clear(); }
    /// May allocate (grows the buffer).
    void append(std::span<const std::byte> data) { bytes_.insert(bytes_.end(), data.begin(), data.end()); }
    void append(std::string_view text) { append(std::as_bytes(std::span(text.data(), text.size()))); }
    /// May allocate; new bytes are zeroed.
    void resize(std::size_t n) { bytes_.resize(n); }
    void reserve(std::size_t n) { bytes_.reserve(n); }

    std::byte* data() noexcept { return bytes_.data(); }
    const std::byte* data() const noexcept { return bytes_.data(); }
    std::size_t size() const noexcept { return bytes_.size(); }
    bool empty() const noexcept { return bytes_.empty(); }
    std::span<const std::byte> view() const noexcept { return {bytes_.data(), bytes_.size()}; }

private:
    std::vector<std::byte> bytes_;
};

}  // namespace unixgram
