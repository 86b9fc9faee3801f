// SPDX-License-Identifier: MIT
// JsonProtocol: one JSON value per datagram, as nlohmann::json.
#pragma once

/// \file
/// `JsonProtocol` parses each datagram as one JSON document (RFC 8259, UTF-8; whitespace around it
/// is allowed, anything else after it is not) and sends each response in compact form: no spaces,
/// object keys in sorted order, no trailing newline. A datagram that is not JSON, the empty one
/// included, becomes `ParseError("JSON decode error: ...")`.
///
/// Example:
/// \code
///   unixgram::JsonProtocol json;
///   unixgram::Buffer out;
///   json.make_datagram({{"op", "get"}, {"id", 7}}, out);
///   std::string_view wire(reinterpret_cast<const char*>(out.data()), out.size());
///   assert(wire == R"({"id":7,"op":"get"})");
///   nlohmann::json request = json.build_packet(out.view());
///   assert(request["op"] == "get");
///   try {
///       json.build_packet(std::as_bytes(std::span("{\"id\":", 6)));
///       assert(false);
///   } catch (const unixgram::ParseError& e) {
///       assert(e.reason().starts_with("JSON decode error: "));
///   }
/// \endcode

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "unixgram/buffer.hpp"
#include "unixgram/errors.hpp"
#include "unixgram/protocol.hpp"

namespace unixgram {

/// Requests and responses are JSON values. Holds no state.
struct JsonProtocol {
    /// Appends the compact serialization of `response` to `out`. Allocates. Throws
    /// nlohmann::json::type_error if a string in `response` is not valid UTF-8.
    void make_datagram(const nlohmann::json& response, Buffer& out) const {
        out.append(std::string_view(response.dump()));
    }

    /// The JSON value the datagram holds. Throws ParseError("JSON decode error: <where and why>")
    /// for malformed JSON or invalid UTF-8. Allocates.
    nlohmann::json build_packet(std::span<const std::byte> datagram) const {
        const auto* first = reinterpret_cast<const char*>(datagram.data());
        try {
            return nlohmann::json::parse(first, first + datagram.size());
        } catch (const nlohmann::json::parse_error& e) {
            // Drop nlohmann's "[json.exception.parse_error.101] " tag: the reason is for people.
            std::string_view what = e.what();
            if (what.starts_with("[json.exception.")) {
                if (auto end = what.find("] "); end != std::string_view::npos) what.remove_prefix(end + 2);
            }
            throw ParseError("JSON decode error: " + std::string(what));
        }
    }
};

static_assert(DatagramProtocol<JsonProtocol, nlohmann::json, nlohmann::json>);

}  // namespace unixgram
