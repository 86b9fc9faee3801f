// SPDX-License-Identifier: MIT
// Contract tests for exceptions escaping handle() and send-path errors: spec rules H13, H20–H23, H25 (real sockets).
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "contract/errors.hpp"

namespace unixgram::testing {
namespace {

/// The H13 log shape: exactly three ERROR records, a rule of dashes, the message naming the client
/// and the exception, and a rule of dashes again.
void expect_three_error_lines(CaptureSink& log, const std::string& address, const std::string& exception_text) {
    std::vector<std::string> errors;
    for (auto& r : log.records())
        if (r.level == spdlog::level::err) errors.push_back(r.text);
    ASSERT_EQ(errors.size(), 3u) << log.dump();
    const std::string rule(40, '-');
    EXPECT_EQ(errors[0], rule);
    EXPECT_NE(errors[1].find("Exception occurred during processing of request from " + address), std::string::npos)
        << errors[1];
    EXPECT_NE(errors[1].find(exception_text), std::string::npos) << errors[1];
    EXPECT_EQ(errors[2], rule);
}

// ---- H13: exceptions escaping handle() ----------------------------------------------------------------

/// Throws what the request names after its co_yield ("closed", "runtime", "system"); echoes
/// anything else. With `throw_before_yield`, its first session throws before its first co_yield.
class ThrowingHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    bool throw_before_yield = false;
    int sessions = 0;
    Session<std::string> handle(Client<std::string>& client) override {
        if (throw_before_yield && ++sessions == 1) throw std::runtime_error("crashed before yield");
        std::string request = co_yield recv();
        if (request == "closed") throw ClientClosedError();
        if (request == "runtime") throw std::runtime_error("random error");
        if (request == "system") throw std::system_error(ECONNRESET, std::generic_category(), "peer went away");
        co_await client.send_packet(request);
    }
};

TEST(ErrorsContract, H13_ClientClosedErrorLogsOneWarningAndServingGoesOn) {
    ThrowingHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "closed");
    c.send(srv.address(), "next");
    EXPECT_EQ(c.recv(), "next");

    ASSERT_TRUE(wait_until([&] { return srv.log().count(spdlog::level::warn) == 1; })) << srv.log().dump();
    for (auto& r : srv.log().records()) {
        if (r.level == spdlog::level::warn) {
            EXPECT_EQ(r.text.rfind("There have been attempts to do operation on closed client", 0), 0u) << r.text;
            EXPECT_NE(r.text.find(c.local_name().to_string()), std::string::npos) << r.text;
        }
    }
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << srv.log().dump();
}

/// Replies "ready", waits at a second co_yield, and after shutdown's Cancelled uses the client
/// anyway: the ClientClosedError escapes handle().
class LateSenderHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<bool> at_second_yield{false};
    Session<std::string> handle(Client<std::string>& client) override {
        std::string first = co_yield recv();
        bool cancelled = false;
        try {
            at_second_yield = true;
            first = co_yield recv();
        } catch (const Cancelled&) {
            cancelled = true;
        }
        if (cancelled) co_await client.send_packet("too late");
    }
};

TEST(ErrorsContract, H13_ClientClosedErrorAfterShutdownLogsOneWarning) {
    LateSenderHandler handler;
    Text srv(handler);
    auto c = srv.client();
    c.send(srv.address(), "first");
    ASSERT_TRUE(wait_until([&] { return handler.at_second_yield.load(); }));

    srv.server().stop();

    EXPECT_EQ(srv.log().count(spdlog::level::warn), 1u) << srv.log().dump();
    EXPECT_EQ(srv.log().count(spdlog::level::warn, "There have been attempts to do operation on closed client " +
                                                       c.local_name().to_string()),
              1u)
        << srv.log().dump();
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::err), 0u) << srv.log().dump();
    EXPECT_EQ(c.recv(300ms), std::nullopt) << "nothing is sent to a closed client";
}

TEST(ErrorsContract, H13_OtherExceptionLogsThreeErrorLinesAndServingGoesOn) {
    ThrowingHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "runtime");
    c.send(srv.address(), "next");
    EXPECT_EQ(c.recv(), "next");

    ASSERT_TRUE(wait_until([&] { return srv.log().count(spdlog::level::err) >= 3; })) << srv.log().dump();
    expect_three_error_lines(srv.log(), c.local_name().to_string(), "random error");
    EXPECT_EQ(srv.server().stats().handler_errors, 1u);
    EXPECT_EQ(srv.log().count(spdlog::level::warn), 0u) << srv.log().dump();
}

TEST(ErrorsContract, H13_SystemErrorIsNotSuppressed) {
    ThrowingHandler handler;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "system");
    c.send(srv.address(), "next");
    EXPECT_EQ(c.recv(), "next");

    ASSERT_TRUE(wait_until([&] { return srv.log().count(spdlog::level::err) >= 3; })) << srv.log().dump();
    expect_three_error_lines(srv.log(), c.local_name().to_string(), "peer went away");
    EXPECT_EQ(srv.log().count(spdlog::level::warn), 0u) << srv.log().dump();
}

TEST(ErrorsContract, H13_ExceptionBeforeTheFirstYieldDropsItsDatagram) {
    ThrowingHandler handler;
    handler.throw_before_yield = true;
    Text srv(handler);
    auto c = srv.client();

    c.send(srv.address(), "never answered");
    c.send(srv.address(), "next");
    EXPECT_EQ(c.recv(), "next") << "the crashing session's datagram gets no reply";

    ASSERT_TRUE(wait_until([&] { return srv.log().count(spdlog::level::err) >= 3; })) << srv.log().dump();
    expect_three_error_lines(srv.log(), c.local_name().to_string(), "crashed before yield");
    EXPECT_EQ(srv.server().stats().dropped_unconsumed, 1u);
    EXPECT_EQ(c.recv(300ms), std::nullopt);
}

// ---- H20: sending to a closing client -------------------------------------------------------------------

TEST(ErrorsContract, H20_SendFromTheExitStackRaisesClientClosedErrorBeforeSerializing) {
    run_closing_client_scenario(/*via_exit_stack=*/true, ReplyKind::awaited);
}

TEST(ErrorsContract, H20_SendFromACancelledTaskRaisesClientClosedErrorBeforeSerializing) {
    run_closing_client_scenario(/*via_exit_stack=*/false, ReplyKind::awaited);
}

// ---- H21: replies to unnamed clients -----------------------------------------------------------------

/// Replies with the request and records what the send threw.
class ReplyProbeHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<int> finished{0};
    std::mutex mutex;
    std::vector<std::string> requests;
    int error_code = 0;
    std::string error_category;
    std::string error_what;
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        {
            std::lock_guard lock(mutex);
            requests.push_back(request);
        }
        try {
            co_await client.send_packet(request);
        } catch (const std::system_error& e) {
            std::lock_guard lock(mutex);
            error_code = e.code().value();
            error_category = e.code().category().name();
            error_what = e.what();
        }
        ++finished;
    }
};

TEST(ErrorsContract, H21_ReplyToAnUnnamedClientRaisesEINVAL) {
    ReplyProbeHandler handler;
    ProbeProtocol protocol;
    ServerOptions opts;
    opts.unnamed_addresses = UnnamedAddresses::handle;
    Probe srv(handler, protocol, opts);
    auto u = RawClient::unbound();

    u.send(srv.address(), "hi");

    ASSERT_TRUE(wait_until([&] { return handler.finished.load() == 1; }));
    std::lock_guard lock(handler.mutex);
    EXPECT_EQ(handler.requests, std::vector<std::string>{"hi"});
    EXPECT_EQ(handler.error_code, EINVAL);
    EXPECT_EQ(handler.error_category, std::string(std::generic_category().name()));
    EXPECT_NE(handler.error_what.find("Cannot send a datagram to an unnamed address."), std::string::npos)
        << handler.error_what;
    EXPECT_EQ(protocol.make_calls->load(), 1) << "the response is serialized before the address is refused";
    EXPECT_EQ(srv.server().stats().datagrams_sent, 0u);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

// ---- H22: serialization failure ----------------------------------------------------------------------

TEST(ErrorsContract, H22_MakeDatagramCrashRaisesRuntimeErrorAndSendsNothing) {
    SerializeCrashHandler handler(ReplyKind::awaited);
    run_serialize_crash_scenario(handler);
}

// ---- H23: the send path ------------------------------------------------------------------------------------

/// Replies with the client's address as the server sees it.
class PeerNameHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        co_await client.send_packet(client.peer_name().to_string());
    }
};

TEST(ErrorsContract, H23_ReplyGoesToTheSendersBoundAddress) {
    PeerNameHandler handler;
    Text srv(handler);
    auto by_path = srv.client();
    RawClient autobound(UnixAddress::autobind());  // the kernel picks an abstract name
    ASSERT_TRUE(autobound.local_name().is_abstract());

    by_path.send(srv.address(), "who am I?");
    autobound.send(srv.address(), "who am I?");

    EXPECT_EQ(by_path.recv(), by_path.local_name().to_string());
    EXPECT_EQ(autobound.recv(), autobound.local_name().to_string());
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

/// "vanish": waits until the test has closed the peer, then replies and records what that threw.
class VanishingPeerHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<bool> waiting{false};
    std::atomic<bool> peer_gone{false};
    std::atomic<int> send_error{-1};
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        if (request != "vanish") {
            co_await client.send_packet(request);
            co_return;
        }
        waiting = true;
        co_await wait_for([this] { return peer_gone.load(); });
        int error = 0;
        try {
            co_await client.send_packet("into the void");
        } catch (const std::system_error& e) {
            error = e.code().value();
        }
        send_error = error;
    }
};

void run_vanishing_peer_scenario(bool unlink_file) {
    VanishingPeerHandler handler;
    Text srv(handler);
    const std::string path = srv.dir().file("vanishing.sock");
    std::optional<RawClient> peer(std::in_place, UnixAddress::pathname(path));
    peer->send(srv.address(), "vanish");
    ASSERT_TRUE(wait_until([&] { return handler.waiting.load(); }));

    peer.reset();
    if (unlink_file) std::filesystem::remove(path);
    handler.peer_gone = true;

    ASSERT_TRUE(wait_until([&] { return handler.send_error.load() != -1; }));
    const int error = handler.send_error.load();
    EXPECT_TRUE(error == ECONNREFUSED || error == ENOENT) << "errno " << error << ": " << std::strerror(error);
    EXPECT_TRUE(wait_until([&] { return srv.server().stats().send_errors == 1; }));
    auto other = srv.client();
    other.send(srv.address(), "still serving");
    EXPECT_EQ(other.recv(), "still serving");
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

TEST(ErrorsContract, H23_ReplyToAVanishedPeerRaisesSystemErrorAndServingGoesOn) {
    run_vanishing_peer_scenario(/*unlink_file=*/true);
}

TEST(ErrorsContract, H23_ReplyToAClosedPeerWhoseFileRemainsRaisesSystemError) {
    run_vanishing_peer_scenario(/*unlink_file=*/false);
}

// ---- H25: handler exceptions of the unnamed client --------------------------------------------------------

class UnnamedCrashHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    std::atomic<int> calls{0};
    Session<std::string> handle(Client<std::string>&) override {
        ++calls;
        std::string request = co_yield recv();
        throw std::runtime_error("boom: " + request);
    }
};

TEST(ErrorsContract, H25_UnnamedClientExceptionIsLoggedWithTheUnnamedAddress) {
    UnnamedCrashHandler handler;
    ServerOptions opts;
    opts.unnamed_addresses = UnnamedAddresses::handle;
    Text srv(handler, TextProtocol{}, opts);
    auto u = RawClient::unbound();

    u.send(srv.address(), "first");
    ASSERT_TRUE(wait_until([&] { return srv.log().count(spdlog::level::err) >= 3; })) << srv.log().dump();
    expect_three_error_lines(srv.log(), "<unnamed>", "boom: first");
    EXPECT_EQ(srv.log().count(spdlog::level::err, "Unhandled exception"), 0u);

    u.send(srv.address(), "second");
    EXPECT_TRUE(wait_until([&] { return handler.calls.load() == 2 && srv.log().count(spdlog::level::err) == 6; }))
        << "the server keeps serving the unnamed client\n"
        << srv.log().dump();
    EXPECT_EQ(srv.log().count(spdlog::level::err, "Exception occurred during processing of request from <unnamed>"),
              2u);
    EXPECT_EQ(srv.log().count(spdlog::level::warn), 0u) << srv.log().dump();
}

}  // namespace
}  // namespace unixgram::testing
