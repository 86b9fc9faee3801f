// SPDX-License-Identifier: MIT
// Lets log calls take a UnixAddress as an argument: it is turned into text only when the line is
// written, so a suppressed (rate-limited or disabled) drop warning costs no string per datagram.
#pragma once

#include <fmt/format.h>

#include <string>
#include <string_view>

#include "unixgram/address.hpp"

template <>
struct fmt::formatter<unixgram::UnixAddress> : fmt::formatter<std::string_view> {
    template <class FormatContext>
    auto format(const unixgram::UnixAddress& address, FormatContext& ctx) const {
        const std::string text = address.to_string();
        return fmt::formatter<std::string_view>::format(text, ctx);
    }
};
