// SPDX-License-Identifier: MIT
// The DatagramProtocol concept: how requests are parsed and responses serialized.
#pragma once

/// \file
/// A protocol turns one datagram into one request (`build_packet`) and one response into one
/// datagram (`make_datagram`). It is shared by every client of a server, so it holds no per-client
/// state and both functions are `const`. `build_packet` throws `unixgram::ParseError` for bad input;
/// the server throws that into the handler at its `co_yield` (H9). Any other exception is a protocol
/// crash: the handler sees `std::runtime_error("protocol.build_packet() crashed")` nesting it.
///
/// Example (a protocol of upper-cased ASCII lines):
/// \code
///   struct ShoutProtocol {
///       void make_datagram(const std::string& s, unixgram::Buffer& out) const { out.append(s); }
///       std::string build_packet(std::span<const std::byte> in) const {
///           std::string s(reinterpret_cast<const char*>(in.data()), in.size());
///           for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
///           return s;
///       }
///   };
///   static_assert(unixgram::DatagramProtocol<ShoutProtocol, std::string, std::string>);
/// \endcode
/// Built-in protocols: RawProtocol (raw_protocol.hpp), TextProtocol (text_protocol.hpp),
/// JsonProtocol (json_protocol.hpp), StructProtocol<T> (struct_protocol.hpp).

#include <concepts>
#include <cstddef>
#include <span>

#include "unixgram/buffer.hpp"

namespace unixgram {

/// `P` serializes `Send` values into datagrams and parses datagrams into `Recv` values.
template <class P, class Send, class Recv>
concept DatagramProtocol = requires(const P& p, const Send& s, Buffer& out, std::span<const std::byte> in) {
    { p.make_datagram(s, out) };
    { p.build_packet(in) } -> std::convertible_to<Recv>;
};

}  // namespace unixgram
