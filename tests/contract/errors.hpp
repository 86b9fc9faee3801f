// SPDX-License-Identifier: MIT
// Shared by the errors contract tests: the exception a RuntimeError nests, a crashing protocol.
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
#include "contract/session_waits.hpp"

namespace unixgram::testing {

using Text = RunningServer<std::string, std::string, TextProtocol>;

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
