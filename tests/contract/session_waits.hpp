// SPDX-License-Identifier: MIT
// Shared by contract tests whose handlers or tasks wait, on the loop, until a condition the test controls holds
// (often the server's own counters).
#pragma once

#include <cctype>
#include <cstdint>
#include <functional>
#include <string>

#include "contract/harness.hpp"

namespace unixgram::testing {

/// Suspends the calling session or task until `pred` holds, checking it on the loop every millisecond.
/// A handler-side signal: the test decides when `pred` holds, no duration is assumed.
inline Task<> wait_for(std::function<bool()> pred) {
    while (!pred()) co_await sleep(1ms);
}

/// Base of handlers that remember their server (service_init) so that a session can wait on the server's
/// own counters, e.g. until every datagram the test sent has been read.
class CountingHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Task<> service_init(ExitStack&, Server& server) override {
        server_ = &server;
        co_return;
    }

protected:
    Task<> wait_received(std::uint64_t n) {
        return wait_for([this, n] { return server_->stats().datagrams_received >= n; });
    }
    Server* server_ = nullptr;
};

inline std::string upper(std::string s) {
    for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
}

}  // namespace unixgram::testing
