// SPDX-License-Identifier: MIT
// RawProtocol: the identity protocol; requests and responses are the datagram's bytes.
#pragma once

/// \file
/// `RawProtocol` hands the handler each datagram exactly as it arrived, as `unixgram::Bytes`, and
/// sends each response byte for byte. Every datagram is a valid request, the empty one included,
/// so `build_packet` never throws `ParseError`. Use it for binary formats parsed by the handler
/// itself, or for echo and relay servers.
///
/// Example:
/// \code
///   unixgram::RawProtocol raw;
///   unixgram::Buffer out;
///   raw.make_datagram(unixgram::Bytes{std::byte{0x01}, std::byte{0xff}}, out);
///   unixgram::Bytes back = raw.build_packet(out.view());
///   assert(back == (unixgram::Bytes{std::byte{0x01}, std::byte{0xff}}));
///   assert(raw.build_packet({}).empty());  // an empty datagram is a valid request
/// \endcode

#include <cstddef>
#include <span>

#include "unixgram/buffer.hpp"
#include "unixgram/protocol.hpp"

namespace unixgram {

/// Requests and responses are raw bytes. Holds no state.
struct RawProtocol {
    /// Appends `response` to `out` unchanged. May allocate (grows `out`).
    void make_datagram(const Bytes& response, Buffer& out) const { out.append(std::span<const std::byte>(response)); }
    /// A copy of the datagram. Allocates; never throws ParseError.
    Bytes build_packet(std::span<const std::byte> datagram) const { return Bytes(datagram.begin(), datagram.end()); }
};

static_assert(DatagramProtocol<RawProtocol, Bytes, Bytes>);

}  // namespace unixgram
