// SPDX-License-Identifier: MIT
// A server whose backend cannot start: what start() throws, and that it leaves no socket file behind.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <optional>
#include <string>
#include <system_error>

#include "contract/harness.hpp"

namespace unixgram::testing {

struct StartFailure {
    int code;
    std::string what;
};

/// Starts a text echo server on a fresh pathname: nullopt if it started, else the std::system_error that start()
/// threw. Either way the server is closed, and a failed start must have removed its socket file (checked here).
inline std::optional<StartFailure> start_failure() {
    class EchoHandler : public DatagramRequestHandler<std::string, std::string> {
    public:
        Session<std::string> handle(Client<std::string>& client) override {
            std::string datagram = co_yield recv();
            co_await client.send_packet(datagram);
        }
    };
    TempDir dir;
    const std::string path = dir.file("server.sock");
    EchoHandler handler;
    UnixDatagramServer<std::string, std::string, TextProtocol> server(UnixAddress::pathname(path), TextProtocol{},
                                                                      handler);
    std::optional<StartFailure> failure;
    try {
        server.start();
    } catch (const std::system_error& e) {
        failure = StartFailure{e.code().value(), e.what()};
    }
    server.close();
    if (failure) {
        EXPECT_FALSE(std::filesystem::exists(path)) << "the failed start left its socket file behind";
    }
    return failure;
}

}  // namespace unixgram::testing
