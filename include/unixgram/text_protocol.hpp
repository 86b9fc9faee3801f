// SPDX-License-Identifier: MIT
// TextProtocol: datagrams as strictly validated UTF-8 std::strings.
#pragma once

/// \file
/// `TextProtocol` delivers each datagram as a `std::string` holding well-formed UTF-8 and sends
/// each response string unchanged (no terminator is added or removed). Validation is strict, as in
/// Unicode's table 3-7: overlong forms, surrogates (U+D800..U+DFFF), code points above U+10FFFF,
/// truncated sequences and stray continuation bytes are all rejected. A bad request becomes a
/// `ParseError` whose reason names the offset of the first bad byte ("invalid UTF-8 at byte 3");
/// a bad response is a bug in the handler, so `make_datagram` throws `std::invalid_argument`.
///
/// Example:
/// \code
///   unixgram::TextProtocol text;
///   unixgram::Buffer out;
///   text.make_datagram("héllo", out);
///   assert(text.build_packet(out.view()) == "héllo");
///   assert(unixgram::utf8_error_offset("ok\xC0\xAF") == 2u);  // overlong encoding of '/'
///   try {
///       text.build_packet(std::as_bytes(std::span("a\xED\xA0\x80", 4)));  // a surrogate
///       assert(false);
///   } catch (const unixgram::ParseError& e) {
///       assert(e.reason() == "invalid UTF-8 at byte 1");
///   }
/// \endcode

#include <cstddef>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

#include "unixgram/buffer.hpp"
#include "unixgram/errors.hpp"
#include "unixgram/protocol.hpp"

namespace unixgram {

/// The offset of the first byte of the first ill-formed sequence in `text`, or nullopt when all of
/// `text` is well-formed UTF-8. A truncated or interrupted sequence is reported at its lead byte.
constexpr std::optional<std::size_t> utf8_error_offset(std::string_view text) noexcept {
    const std::size_t n = text.size();
    std::size_t i = 0;
    while (i < n) {
        const auto lead = static_cast<unsigned char>(text[i]);
        if (lead < 0x80) {
            ++i;
            continue;
        }
        // The second byte's range is what rules out overlongs (E0, F0), surrogates (ED) and
        // code points above U+10FFFF (F4); every other continuation byte is 80..BF.
        std::size_t length = 0;
        unsigned char low = 0x80;
        unsigned char high = 0xBF;
        if (lead >= 0xC2 && lead <= 0xDF) {
            length = 2;
        } else if (lead >= 0xE0 && lead <= 0xEF) {
            length = 3;
            if (lead == 0xE0) low = 0xA0;
            if (lead == 0xED) high = 0x9F;
        } else if (lead >= 0xF0 && lead <= 0xF4) {
            length = 4;
            if (lead == 0xF0) low = 0x90;
            if (lead == 0xF4) high = 0x8F;
        } else {
            return i;  // a continuation byte, C0/C1 (always overlong) or F5..FF (beyond U+10FFFF)
        }
        if (n - i < length) return i;
        const auto second = static_cast<unsigned char>(text[i + 1]);
        if (second < low || second > high) return i;
        for (std::size_t k = 2; k < length; ++k) {
            const auto c = static_cast<unsigned char>(text[i + k]);
            if (c < 0x80 || c > 0xBF) return i;
        }
        i += length;
    }
    return std::nullopt;
}

/// Requests and responses are UTF-8 strings. Holds no state.
struct TextProtocol {
    /// Appends `response` to `out`. Throws std::invalid_argument naming the offset if it is not
    /// well-formed UTF-8 (nothing is appended then). May allocate (grows `out`).
    void make_datagram(const std::string& response, Buffer& out) const {
        if (auto bad = utf8_error_offset(response))
            throw std::invalid_argument("TextProtocol: response is not valid UTF-8: invalid UTF-8 at byte " +
                                        std::to_string(*bad));
        out.append(std::string_view(response));
    }

    /// The datagram as a string. Throws ParseError("invalid UTF-8 at byte N") if it is not
    /// well-formed UTF-8. Allocates.
    std::string build_packet(std::span<const std::byte> datagram) const {
        std::string_view text(reinterpret_cast<const char*>(datagram.data()), datagram.size());
        if (auto bad = utf8_error_offset(text)) throw ParseError("invalid UTF-8 at byte " + std::to_string(*bad));
        return std::string(text);
    }
};

static_assert(DatagramProtocol<TextProtocol, std::string, std::string>);

}  // namespace unixgram
