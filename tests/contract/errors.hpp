// SPDX-License-Identifier: MIT
// Shared by the errors contract tests: the exception a RuntimeError nests, a crashing protocol, and the H20 and H22
// scenarios, run with awaited replies (send_packet) and posted ones (post_packet).
#pragma once

#include <atomic>
#include <cstddef>
#include <exception>
#include <functional>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
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

/// How a scenario's handler replies: `co_await client.send_packet(r)` or `client.post_packet(r)`. Both throw the
/// same errors before the reply is queued (H20, H21, H22), so one scenario checks both.
enum class ReplyKind { awaited, posted };

/// H22's handler: replies "crash" (which ProbeProtocol cannot serialize), then replies with a report of what that
/// threw.
class SerializeCrashHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    explicit SerializeCrashHandler(ReplyKind how) : how_(how) {}

    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        std::string report = "no exception";
        try {
            if (how_ == ReplyKind::posted) {
                client.post_packet("crash");
            } else {
                co_await client.send_packet("crash");
            }
        } catch (const std::runtime_error& e) {
            report = std::string("RuntimeError: ") + e.what() + " (caused by " + nested_what(e) + ")";
        }
        if (how_ == ReplyKind::posted) {
            client.post_packet(report);
        } else {
            co_await client.send_packet(report);
        }
    }

private:
    ReplyKind how_;
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

// ---- H20: replying to a closing client ----------------------------------------------------------------

/// Keeps a copy of the first client it serves and, once serving ends, tries to reply through it:
/// from an ExitStack callback (`via_exit_stack`) or from a background task that shutdown cancels.
class ClosingClientHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    ClosingClientHandler(bool via_exit_stack, ReplyKind how) : via_exit_stack_(via_exit_stack), how_(how) {}

    std::atomic<bool> closing_while_serving{true};
    std::atomic<bool> closing_afterwards{false};
    std::atomic<bool> task_cancelled{false};
    std::atomic<int> late_attempts{0};
    std::mutex mutex;
    std::string late_error;
    std::atomic<int> make_calls_at_late_send{-1};
    std::shared_ptr<std::atomic<int>> make_calls;

    Task<> service_init(ExitStack& stack, unixgram::Server& server) override {
        if (via_exit_stack_) {
            stack.push_async([this] { return send_late(); });
        } else {
            server.spawn(watch());
        }
        co_return;
    }

    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        if (!kept_) kept_.emplace(client);
        closing_while_serving = client.is_closing();
        if (how_ == ReplyKind::posted) {
            client.post_packet(request);
        } else {
            co_await client.send_packet(request);
        }
    }

private:
    Task<> watch() {
        try {
            co_await sleep(1h);
        } catch (const Cancelled&) {
            task_cancelled = true;
        }
        co_await send_late();
    }

    Task<> send_late() {
        if (!kept_) co_return;
        closing_afterwards = kept_->is_closing();
        ++late_attempts;
        try {
            if (how_ == ReplyKind::posted) {
                kept_->post_packet("too late");
            } else {
                co_await kept_->send_packet("too late");
            }
        } catch (const ClientClosedError& e) {
            std::lock_guard lock(mutex);
            late_error = e.what();
        }
        make_calls_at_late_send = make_calls->load();
        kept_.reset();  // Client copies must not outlive the run on the loop thread
    }

    bool via_exit_stack_;
    ReplyKind how_;
    std::optional<Client<std::string>> kept_;
};

/// H20's scenario: once serving has ended, replying through a kept Client copy throws ClientClosedError before
/// the response is serialized, and nothing reaches the client. `stats` gets the server's stats at the end.
inline void run_closing_client_scenario(bool via_exit_stack, ReplyKind how, ServerStats* stats = nullptr) {
    ClosingClientHandler handler(via_exit_stack, how);
    ProbeProtocol protocol;
    handler.make_calls = protocol.make_calls;
    Probe srv(handler, protocol);
    auto c = srv.client();
    c.send(srv.address(), "hello");
    ASSERT_EQ(c.recv(), "hello");
    EXPECT_FALSE(handler.closing_while_serving.load());
    EXPECT_EQ(protocol.make_calls->load(), 1);

    srv.server().stop();

    if (!via_exit_stack) {
        EXPECT_TRUE(handler.task_cancelled.load()) << "shutdown cancels the background task first";
    }
    ASSERT_EQ(handler.late_attempts.load(), 1);
    EXPECT_TRUE(handler.closing_afterwards.load());
    {
        std::lock_guard lock(handler.mutex);
        EXPECT_EQ(handler.late_error, "Closed client");
    }
    EXPECT_EQ(handler.make_calls_at_late_send.load(), 1) << "ClientClosedError comes before serializing";
    EXPECT_EQ(protocol.make_calls->load(), 1);
    EXPECT_EQ(c.recv(300ms), std::nullopt);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
    if (stats != nullptr) *stats = srv.server().stats();
}

}  // namespace unixgram::testing
