// SPDX-License-Identifier: MIT
// StructProtocol<T>: datagrams that are the bytes of one trivially copyable T.
#pragma once

/// \file
/// `StructProtocol<T>` sends a `T` as its object representation (`sizeof(T)` bytes, copied with
/// memcpy) and parses a datagram of exactly `sizeof(T)` bytes back into a `T`; any other size is
/// `ParseError("expected N bytes, got M")`. The bytes are in host byte order and host layout, so
/// both ends must share the ABI (same architecture and struct layout): this is for local IPC
/// between programs built together, not a portable wire format. Padding bytes are sent as they
/// are in memory: value-initialize a `T` (`T{}`) before filling it, or use a type without padding
/// (`std::has_unique_object_representations_v<T>`), so that no stale memory leaves the process.
///
/// Example:
/// \code
///   struct Point { std::int32_t x, y; };
///   unixgram::StructProtocol<Point> proto;
///   unixgram::Buffer out;
///   proto.make_datagram(Point{3, -4}, out);
///   assert(out.size() == sizeof(Point));
///   Point p = proto.build_packet(out.view());
///   assert(p.x == 3 && p.y == -4);
/// \endcode

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>

#include "unixgram/buffer.hpp"
#include "unixgram/errors.hpp"
#include "unixgram/protocol.hpp"

namespace unixgram {

/// Requests and responses are `T` values, sent as their raw bytes. Holds no state.
template <class T>
    requires std::is_trivially_copyable_v<T>
struct StructProtocol {
    /// Appends the sizeof(T) bytes of `response` to `out`. May allocate (grows `out`).
    void make_datagram(const T& response, Buffer& out) const { out.append(std::as_bytes(std::span(&response, 1))); }

    /// The T whose bytes the datagram holds. Throws ParseError("expected N bytes, got M") unless the
    /// datagram is exactly sizeof(T) bytes long. Does not allocate.
    T build_packet(std::span<const std::byte> datagram) const {
        if (datagram.size() != sizeof(T))
            throw ParseError("expected " + std::to_string(sizeof(T)) + " bytes, got " +
                             std::to_string(datagram.size()));
        // Through an array and bit_cast rather than into a T: T need not be default-constructible,
        // and the datagram's bytes need not be aligned for T.
        std::array<std::byte, sizeof(T)> bytes;
        std::memcpy(bytes.data(), datagram.data(), sizeof(T));
        return std::bit_cast<T>(bytes);
    }
};

static_assert(DatagramProtocol<StructProtocol<std::uint64_t>, std::uint64_t, std::uint64_t>);

}  // namespace unixgram
