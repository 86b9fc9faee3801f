// SPDX-License-Identifier: MIT
// RawProtocol: the identity protocol; requests and responses are the datagram's bytes.
#pragma once

/// \file
/// `RawProtocol` hands the handler each datagram exactly as it arrived, as `unixgram::Bytes`, and
/// sends each response byte for byte. Every datagram is a valid request, the empty one included,
/// so `build_packet` never throws `ParseError`. Use it for binary formats parsed by the handler
/// itself, or for echo and relay servers.
///
/// `PooledRawProtocol` is the same with `unixgram::PooledBytes`: a request's bytes come from the
/// calling thread's recycling pool instead of malloc, so a steady stream of requests of up to
/// 4 KiB allocates nothing (the demo server `unixgram-echo` uses it).
///
/// Example:
/// \code
///   unixgram::RawProtocol raw;
///   unixgram::Buffer out;
///   raw.make_datagram(unixgram::Bytes{std::byte{0x01}, std::byte{0xff}}, out);
///   unixgram::Bytes back = raw.build_packet(out.view());
///   assert(back == (unixgram::Bytes{std::byte{0x01}, std::byte{0xff}}));
///   assert(raw.build_packet({}).empty());  // an empty datagram is a valid request
///
///   unixgram::PooledRawProtocol pooled;
///   unixgram::PooledBytes request = pooled.build_packet(out.view());
///   assert(std::ranges::equal(request, back));
/// \endcode

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <span>
#include <type_traits>

#include "unixgram/buffer.hpp"
#include "unixgram/protocol.hpp"

namespace unixgram {

/// Requests and responses are raw bytes, held in `ByteVector` (`Bytes` or `PooledBytes`). Holds no state.
template <class ByteVector>
struct BasicRawProtocol {
    /// Appends `response` to `out` unchanged. May allocate (grows `out`).
    void make_datagram(const ByteVector& response, Buffer& out) const {
        out.append(std::span<const std::byte>(response.data(), response.size()));
    }
    /// A copy of the datagram. Allocates (from the thread's pool for PooledBytes); never throws ParseError.
    ByteVector build_packet(std::span<const std::byte> datagram) const {
        if constexpr (std::is_same_v<typename ByteVector::allocator_type, std::allocator<std::byte>>) {
            return ByteVector(datagram.begin(), datagram.end());
        } else {
            // With an allocator other than std::allocator, vector's range constructor copies byte by byte
            // (libstdc++); zero-filling then memcpy is 2.4x faster at 1 KiB (benchmarks/micro).
            ByteVector out(datagram.size());
            if (!datagram.empty()) std::memcpy(out.data(), datagram.data(), datagram.size());
            return out;
        }
    }
};

/// Requests and responses are `unixgram::Bytes` (std::vector<std::byte>).
using RawProtocol = BasicRawProtocol<Bytes>;
/// Requests and responses are `unixgram::PooledBytes`: no malloc per request in steady state.
using PooledRawProtocol = BasicRawProtocol<PooledBytes>;

static_assert(DatagramProtocol<RawProtocol, Bytes, Bytes>);
static_assert(DatagramProtocol<PooledRawProtocol, PooledBytes, PooledBytes>);

}  // namespace unixgram
