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

/// H22's handler: replies "crash" (which ProbeProtocol cannot serialize), then replies with a report of what that
/// threw. Its replies are awaited (`co_await send_packet`) or posted (`post_packet`).
class SerializeCrashHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    enum class Reply { awaited, posted };
    explicit SerializeCrashHandler(Reply how) : how_(how) {}

    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        std::string report = "no exception";
        try {
            if (how_ == Reply::posted) {
                client.post_packet("crash");
            } else {
                co_await client.send_packet("crash");
            }
        } catch (const std::runtime_error& e) {
            report = std::string("RuntimeError: ") + e.what() + " (caused by " + nested_what(e) + ")";
        }
        if (how_ == Reply::posted) {
            client.post_packet(report);
        } else {
            co_await client.send_packet(report);
        }
    }

private:
    Reply how_;
};

/// H22's scenario, for SerializeCrashHandler: the client gets the report and nothing else, not even an empty
/// datagram, and nothing is logged. Returns the server's stats at the end.
inline ServerStats run_serialize_crash_scenario(SerializeCrashHandler& handler) {
    ProbeProtocol protocol;
    Probe srv(handler, protocol);
    auto c = srv.client();

    c.send(srv.address(), "go");

    EXPECT_EQ(c.recv(), "RuntimeError: protocol.make_datagram() crashed (caused by CRASH)")
        << "the failed reply must not reach the client, not even empty";
    EXPECT_TRUE(wait_until([&] { return srv.server().stats().datagrams_sent == 1; }));
    EXPECT_EQ(protocol.make_calls->load(), 2);
    EXPECT_EQ(c.recv(300ms), std::nullopt);
    EXPECT_EQ(srv.server().stats().datagrams_sent, 1u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
    return srv.server().stats();
}

}  // namespace unixgram::testing
