// SPDX-License-Identifier: MIT
// Shared by the errors contract tests: a handler-side wait, the exception a RuntimeError nests, a crashing protocol.
#pragma once

#include <atomic>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

#include "contract/harness.hpp"

namespace unixgram::testing {

using Text = RunningServer<std::string, std::string, TextProtocol>;

/// Suspends the calling session or task until `pred` holds, checking it on the loop every
/// millisecond. A handler-side signal: the test decides when `pred` holds, no duration is assumed.
inline Task<> wait_for(std::function<bool()> pred) {
    while (!pred()) co_await sleep(1ms);
}

/// What the exception nested in `e` says, "<none>" if it nests nothing.
inline std::string nested_what(const std::exception& e) {
    try {
        std::rethrow_if_nested(e);
    } catch (const std::logic_error& inner) {
        return inner.what();
    } catch (...) {
        return "<not the original exception>";
    }
    return "<none>";
}

/// TextProtocol that counts make_datagram calls and crashes (std::logic_error "CRASH") on "crash",
/// in either direction.
struct ProbeProtocol {
    std::shared_ptr<std::atomic<int>> make_calls = std::make_shared<std::atomic<int>>(0);
    void make_datagram(const std::string& response, Buffer& out) const {
        ++*make_calls;
        if (response == "crash") throw std::logic_error("CRASH");
        out.append(std::string_view(response));
    }
    std::string build_packet(std::span<const std::byte> datagram) const {
        std::string text = TextProtocol{}.build_packet(datagram);
        if (text == "crash") throw std::logic_error("CRASH");
        return text;
    }
};
static_assert(DatagramProtocol<ProbeProtocol, std::string, std::string>);
using Probe = RunningServer<std::string, std::string, ProbeProtocol>;

}  // namespace unixgram::testing
