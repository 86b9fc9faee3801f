// SPDX-License-Identifier: MIT
// Contract tests for ancillary data: SCM_RIGHTS claimed, refused and closed, SCM_CREDENTIALS (A3–A10, H10).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "contract/harness.hpp"

namespace unixgram::testing {
namespace {

using Text = RunningServer<std::string, std::string, TextProtocol>;
using TextClient = Client<std::string>;

ServerOptions receiving_ancillary_data() {
    ServerOptions options;
    options.receive_ancillary_data = true;
    return options;
}

/// A pipe the test owns. The write end is what gets passed; the read end tells when every copy
/// of the write end is closed (read() returns 0).
struct Pipe {
    UniqueFd read_end;
    UniqueFd write_end;
    Pipe() {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
        read_end.reset(fds[0]);
        write_end.reset(fds[1]);
    }
};

/// Reads `read_fd` until EOF, appending what was written to `data`. Returns false if EOF has not
/// come after `guard`, which only bounds a failure (EOF normally comes at once).
bool reaches_eof(int read_fd, std::string* data = nullptr, std::chrono::milliseconds guard = 5000ms) {
    const auto deadline = std::chrono::steady_clock::now() + guard;
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        pollfd p{read_fd, POLLIN, 0};
        const int ready = ::poll(&p, 1, left.count() > 0 ? static_cast<int>(left.count()) : 0);
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) return false;
        char buf[256];
        const ssize_t n = ::read(read_fd, buf, sizeof buf);
        if (n == 0) return true;
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        if (data != nullptr) data->append(buf, static_cast<std::size_t>(n));
    }
}

/// True while some copy of the write end is open and nothing was written (checked without waiting).
bool still_has_a_writer(int read_fd) {
    pollfd p{read_fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 0;
}

// ---- A3: claiming -------------------------------------------------------------------------------

/// Claims the fds of its datagram, writes the request into each (they are pipes) and reports.
class ClaimingHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        Ancillary anc;
        const std::string request = co_yield recv({.timeout = std::nullopt, .ancillary = &anc});
        std::size_t usable = 0;
        for (auto& fd : anc.fds) {
            struct stat st {};
            if (::fstat(fd.get(), &st) == 0 && S_ISFIFO(st.st_mode) &&
                ::write(fd.get(), request.data(), request.size()) == static_cast<ssize_t>(request.size()))
                ++usable;
        }
        if (usable != anc.fds.size()) {
            co_await client.send_packet("only " + std::to_string(usable) + " usable fds");
            co_return;
        }
        co_await client.send_packet("Received " + std::to_string(anc.fds.size()) + " file descriptors.");
    }  // anc goes: the claimed fds are closed
};

TEST(AncillaryContract, A3_HandlerReceivesTheFdsSentWithScmRights) {
    ClaimingHandler handler;
    Text srv(handler, TextProtocol{}, receiving_ancillary_data());
    auto c = srv.client();
    Pipe pipes[3];

    c.send(srv.address(), "through the pipe",
           {pipes[0].write_end.get(), pipes[1].write_end.get(), pipes[2].write_end.get()});
    for (auto& p : pipes) p.write_end.reset();  // from now on only the server's copies keep them open

    EXPECT_EQ(c.recv(), "Received 3 file descriptors.");
    for (auto& p : pipes) {
        std::string data;
        EXPECT_TRUE(reaches_eof(p.read_end.get(), &data)) << "the claimed fd must be closed when the Ancillary goes";
        EXPECT_EQ(data, "through the pipe");
    }
    EXPECT_EQ(srv.server().stats().fds_closed, 0u) << "claimed fds are the handler's, not the server's, to close";
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

/// Claims the fds of its first datagram and keeps them until its second datagram arrives.
class HoldingHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        Ancillary anc;
        co_yield recv({.timeout = std::nullopt, .ancillary = &anc});
        co_await client.send_packet("holding " + std::to_string(anc.fds.size()));
        co_yield recv({.timeout = 30s});
        anc.fds.clear();
        co_await client.send_packet("dropped");
        co_await sleep(1h);  // still running: nothing else may close the fds
    }
};

TEST(AncillaryContract, A3_ClaimedFdsAreOwnedAndClosedWhenDropped) {
    HoldingHandler handler;
    Text srv(handler, TextProtocol{}, receiving_ancillary_data());
    auto c = srv.client();
    Pipe p;

    c.send(srv.address(), "take it", {p.write_end.get()});
    p.write_end.reset();
    ASSERT_EQ(c.recv(), "holding 1");
    EXPECT_TRUE(still_has_a_writer(p.read_end.get())) << "the handler holds the fd: it must still be open";

    c.send(srv.address(), "drop it");
    ASSERT_EQ(c.recv(), "dropped");
    EXPECT_TRUE(reaches_eof(p.read_end.get())) << "clearing Ancillary::fds must close the fd";
    EXPECT_EQ(srv.server().stats().fds_closed, 0u);
}

/// Claims at its first and third co_yield only.
class ClaimFirstAndThirdHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        Ancillary first;
        co_yield recv({.timeout = std::nullopt, .ancillary = &first});
        co_await client.send_packet("first claimed " + std::to_string(first.fds.size()));
        co_yield recv({.timeout = 30s});  // not claimed: the server closes this datagram's fds
        co_await client.send_packet("first still holds " + std::to_string(first.fds.size()));
        Ancillary third;
        co_yield recv({.timeout = 30s, .ancillary = &third});
        co_await client.send_packet("third claimed " + std::to_string(third.fds.size()) +
                                    (third.credentials ? " with credentials" : " without credentials"));
    }
};

TEST(AncillaryContract, A3_EachYieldClaimsOnlyTheDatagramItConsumes) {
    ClaimFirstAndThirdHandler handler;
    Text srv(handler, TextProtocol{}, receiving_ancillary_data());
    auto c = srv.client();
    Pipe claimed, unclaimed;

    c.send(srv.address(), "1", {claimed.write_end.get()});
    claimed.write_end.reset();
    ASSERT_EQ(c.recv(), "first claimed 1");

    c.send(srv.address(), "2", {unclaimed.write_end.get()});
    unclaimed.write_end.reset();
    ASSERT_EQ(c.recv(), "first still holds 1");
    EXPECT_TRUE(reaches_eof(unclaimed.read_end.get())) << "the second yield did not claim: the server closes it";
    EXPECT_TRUE(still_has_a_writer(claimed.read_end.get())) << "the first yield's claim is unaffected";

    c.send(srv.address(), "3");  // no control message: the claim comes back empty (A3)
    EXPECT_EQ(c.recv(), "third claimed 0 without credentials");
    EXPECT_TRUE(reaches_eof(claimed.read_end.get())) << "the session ended: its Ancillary went";
    EXPECT_EQ(srv.server().stats().fds_closed, 1u);
}

// ---- A5 / H10: asking without the option ------------------------------------------------------

/// Asks for ancillary data at its first co_yield.
class AskAtFirstYieldHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        std::string reply;
        try {
            Ancillary anc;
            reply = "delivered " + (co_yield recv({.timeout = std::nullopt, .ancillary = &anc}));
        } catch (const UnsupportedOperation& e) {
            reply = std::string("UnsupportedOperation: ") + e.what();
        }
        co_await client.send_packet(reply);
    }
};

TEST(AncillaryContract, A5_AskingWithoutReceiveAncillaryDataThrowsUnsupportedOperation) {
    AskAtFirstYieldHandler handler;
    Text srv(handler);  // receive_ancillary_data is off
    auto c = srv.client();

    c.send(srv.address(), "lost");
    EXPECT_EQ(c.recv(), "UnsupportedOperation: The server is not configured to handle ancillary data.");
    EXPECT_EQ(srv.server().stats().dropped_unconsumed, 1u) << "at the first yield the datagram is lost (H10.2)";
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

/// "hold": answers "holding", waits until another client sends "open", then asks for ancillary
/// data at its second co_yield. Any other first request is answered "fresh session got <it>".
class AskAtLaterYieldHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        const std::string first = co_yield recv();
        if (first == "open") {
            gate_open_ = true;
            co_return;
        }
        if (first != "hold") {
            co_await client.send_packet("fresh session got " + first);
            co_return;
        }
        co_await client.send_packet("holding");
        for (int i = 0; i < 10000 && !gate_open_; ++i) co_await sleep(1ms);  // bounded wait for "open"
        std::string reply;
        try {
            Ancillary anc;
            reply = "delivered " + (co_yield recv({.timeout = 30s, .ancillary = &anc}));
        } catch (const UnsupportedOperation& e) {
            reply = std::string("UnsupportedOperation: ") + e.what();
        }
        co_await client.send_packet(reply);
    }

private:
    bool gate_open_ = false;  // loop thread only
};

TEST(AncillaryContract, H10_AskingAtALaterYieldThrowsWithoutConsumingTheQueuedDatagram) {
    AskAtLaterYieldHandler handler;
    Text srv(handler);  // receive_ancillary_data is off
    auto c = srv.client();
    auto opener = srv.client();

    c.send(srv.address(), "hold");
    ASSERT_EQ(c.recv(), "holding");
    c.send(srv.address(), "queued");
    ASSERT_TRUE(wait_until([&] { return srv.server().stats().datagrams_received == 2; }));  // queued behind "hold"
    opener.send(srv.address(), "open");

    EXPECT_EQ(c.recv(), "UnsupportedOperation: The server is not configured to handle ancillary data.");
    EXPECT_EQ(c.recv(), "fresh session got queued") << "the error is thrown before the datagram is popped";
    EXPECT_EQ(srv.server().stats().dropped_unconsumed, 0u);
}

// ---- A6: unclaimed fds are closed ---------------------------------------------------------------

/// Never claims: plain co_yield recv().
class PlainEcho : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        const std::string request = co_yield recv();
        co_await client.send_packet("echo " + request);
    }
};

TEST(AncillaryContract, A6_UnclaimedFdsAreClosedByTheServer) {
    PlainEcho handler;
    Text srv(handler, TextProtocol{}, receiving_ancillary_data());
    auto c = srv.client();
    Pipe a, b;

    c.send(srv.address(), "two fds", {a.write_end.get(), b.write_end.get()});
    a.write_end.reset();
    b.write_end.reset();

    EXPECT_EQ(c.recv(), "echo two fds");
    EXPECT_TRUE(reaches_eof(a.read_end.get()));
    EXPECT_TRUE(reaches_eof(b.read_end.get()));
    EXPECT_TRUE(wait_until([&] { return srv.server().stats().fds_closed == 2; })) << srv.server().stats().fds_closed;
}

/// Returns before its first co_yield (H6), optionally after suspending once.
class RefusingHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    explicit RefusingHandler(bool suspend_first) : suspend_first_(suspend_first) {}
    Session<std::string> handle(TextClient&) override {
        if (suspend_first_) co_await sleep(1ms);  // the datagram is held for a session not yet at its yield
        co_return;
    }

private:
    bool suspend_first_;
};

TEST(AncillaryContract, A6_FdsOfADatagramRefusedBeforeTheFirstYieldAreClosed) {
    RefusingHandler handler(false);
    Text srv(handler, TextProtocol{}, receiving_ancillary_data());
    auto c = srv.client();
    Pipe p;

    c.send(srv.address(), "refused", {p.write_end.get()});
    p.write_end.reset();

    EXPECT_TRUE(reaches_eof(p.read_end.get()));
    EXPECT_TRUE(wait_until([&] {
        const auto s = srv.server().stats();
        return s.dropped_unconsumed == 1 && s.fds_closed == 1;
    })) << "dropped_unconsumed=" << srv.server().stats().dropped_unconsumed
        << " fds_closed=" << srv.server().stats().fds_closed;
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

TEST(AncillaryContract, A6_FdsOfADatagramRefusedAfterSuspendingAreClosed) {
    RefusingHandler handler(true);
    Text srv(handler, TextProtocol{}, receiving_ancillary_data());
    auto c = srv.client();
    Pipe p;

    c.send(srv.address(), "refused later", {p.write_end.get()});
    p.write_end.reset();

    EXPECT_TRUE(reaches_eof(p.read_end.get()));
    EXPECT_TRUE(wait_until([&] {
        const auto s = srv.server().stats();
        return s.dropped_unconsumed == 1 && s.fds_closed == 1;
    })) << "dropped_unconsumed=" << srv.server().stats().dropped_unconsumed
        << " fds_closed=" << srv.server().stats().fds_closed;
}

/// Answers its first datagram, then sleeps until shutdown: later datagrams stay queued.
class BusyHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        co_yield recv();
        co_await client.send_packet("busy");
        co_await sleep(1h);  // Cancelled at shutdown
    }
};

TEST(AncillaryContract, A6_FdsOfDatagramsStillQueuedAtShutdownAreClosed) {
    BusyHandler handler;
    Text srv(handler, TextProtocol{}, receiving_ancillary_data());
    auto c = srv.client();
    Pipe a, b;

    c.send(srv.address(), "first");
    ASSERT_EQ(c.recv(), "busy");
    c.send(srv.address(), "queued 1", {a.write_end.get()});
    c.send(srv.address(), "queued 2", {b.write_end.get()});
    a.write_end.reset();
    b.write_end.reset();
    ASSERT_TRUE(wait_until([&] { return srv.server().stats().datagrams_received == 3; }));
    EXPECT_TRUE(still_has_a_writer(a.read_end.get())) << "queued: the server keeps the fd until it is consumed";

    srv.server().stop();

    EXPECT_TRUE(reaches_eof(a.read_end.get()));
    EXPECT_TRUE(reaches_eof(b.read_end.get()));
    const auto stats = srv.server().stats();
    EXPECT_EQ(stats.dropped_at_shutdown, 2u);
    EXPECT_EQ(stats.fds_closed, 2u);
}

TEST(AncillaryContract, A6_WithoutReceiveAncillaryDataTheKernelDiscardsPassedFds) {
    PlainEcho handler;
    Text srv(handler);  // receive_ancillary_data is off
    auto c = srv.client();
    Pipe p;

    c.send(srv.address(), "fd ignored", {p.write_end.get()});
    p.write_end.reset();

    EXPECT_EQ(c.recv(), "echo fd ignored");
    EXPECT_TRUE(reaches_eof(p.read_end.get())) << "nobody may keep the passed fd open";
    EXPECT_EQ(srv.server().stats().fds_closed, 0u) << "the server never saw it";
}

TEST(AncillaryContract, A6_FdsOfADatagramDroppedForAFullQueueAreClosed) {
    BusyHandler handler;
    ServerOptions options = receiving_ancillary_data();
    options.max_queued_datagrams = 1;
    Text srv(handler, TextProtocol{}, options);
    auto c = srv.client();
    Pipe queued, dropped;

    c.send(srv.address(), "first");
    ASSERT_EQ(c.recv(), "busy");
    c.send(srv.address(), "fills the queue", {queued.write_end.get()});
    c.send(srv.address(), "over the bound", {dropped.write_end.get()});
    queued.write_end.reset();
    dropped.write_end.reset();

    EXPECT_TRUE(reaches_eof(dropped.read_end.get())) << "a datagram dropped for a full queue must not keep its fds";
    EXPECT_TRUE(wait_until([&] { return srv.server().stats().dropped_queue_full == 1; }));
    EXPECT_TRUE(still_has_a_writer(queued.read_end.get())) << "the queued one is still waiting for its session";
}

TEST(AncillaryContract, A6_FdsFromAnUnboundSenderAreClosed) {
    PlainEcho handler;
    Text srv(handler, TextProtocol{}, receiving_ancillary_data());  // unnamed senders: ignore (H24)
    auto unbound = RawClient::unbound();
    Pipe p;

    unbound.send(srv.address(), "from nowhere", {p.write_end.get()});
    p.write_end.reset();

    EXPECT_TRUE(reaches_eof(p.read_end.get()));
    EXPECT_TRUE(wait_until([&] {
        const auto s = srv.server().stats();
        return s.dropped_unnamed == 1 && s.fds_closed == 1;
    })) << "dropped_unnamed=" << srv.server().stats().dropped_unnamed
        << " fds_closed=" << srv.server().stats().fds_closed;
}

TEST(AncillaryContract, A6_FdsOfADatagramOverMaxDatagramSizeAreClosed) {
    PlainEcho handler;
    ServerOptions options = receiving_ancillary_data();
    options.max_datagram_size = 16;
    Text srv(handler, TextProtocol{}, options);
    auto c = srv.client();
    Pipe p;

    c.send(srv.address(), std::string(100, 'x'), {p.write_end.get()});
    p.write_end.reset();

    EXPECT_TRUE(reaches_eof(p.read_end.get()));
    EXPECT_TRUE(wait_until([&] {
        const auto s = srv.server().stats();
        return s.dropped_truncated == 1 && s.fds_closed == 1;
    })) << "dropped_truncated=" << srv.server().stats().dropped_truncated
        << " fds_closed=" << srv.server().stats().fds_closed;
}

/// Sleeps before its first co_yield until shutdown cancels it: its datagram is never consumed.
class SleepBeforeFirstYieldHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        co_await sleep(1h);
        co_yield recv();
        co_await client.send_packet("unreachable");
    }
};

TEST(AncillaryContract, A6_FdsHeldForASessionCancelledBeforeItsFirstYieldAreClosed) {
    SleepBeforeFirstYieldHandler handler;
    Text srv(handler, TextProtocol{}, receiving_ancillary_data());
    auto c = srv.client();
    Pipe p;

    c.send(srv.address(), "held", {p.write_end.get()});
    p.write_end.reset();
    ASSERT_TRUE(wait_until([&] { return srv.server().stats().sessions_started == 1; }));
    EXPECT_TRUE(still_has_a_writer(p.read_end.get())) << "held for the session's first co_yield";

    srv.server().stop();

    EXPECT_TRUE(reaches_eof(p.read_end.get()));
    EXPECT_EQ(srv.server().stats().dropped_unconsumed, 1u);
    EXPECT_EQ(srv.server().stats().fds_closed, 1u);
}

/// Yields a negative timeout at its first co_yield (H7): std::invalid_argument, the datagram is dropped.
class InvalidTimeoutHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        std::string reply;
        try {
            Ancillary anc;
            reply = "delivered " + (co_yield recv({.timeout = -1s, .ancillary = &anc}));
        } catch (const std::invalid_argument& e) {
            reply = std::string("invalid_argument: ") + e.what();
        }
        co_await client.send_packet(reply);
    }
};

TEST(AncillaryContract, A7_FdsOfADatagramRejectedForAnInvalidTimeoutAreNotLeaked) {
    InvalidTimeoutHandler handler;
    Text srv(handler, TextProtocol{}, receiving_ancillary_data());
    auto c = srv.client();
    Pipe p;

    c.send(srv.address(), "bad params", {p.write_end.get()});
    p.write_end.reset();

    const auto reply = c.recv();
    ASSERT_TRUE(reply.has_value());
    EXPECT_EQ(reply->rfind("invalid_argument: Invalid delay: negative value", 0), 0u) << *reply;
    EXPECT_TRUE(reaches_eof(p.read_end.get()));
    EXPECT_EQ(srv.server().stats().dropped_unconsumed, 1u);
}

// ---- A10: credentials ---------------------------------------------------------------------------

/// "enable" turns SO_PASSCRED on through the client's socket; anything else reports the
/// credentials of its datagram.
class CredentialsHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        Ancillary anc;
        const std::string request = co_yield recv({.timeout = std::nullopt, .ancillary = &anc});
        std::string reply;
        if (request == "enable") {
            const int r = client.socket().set_option(SOL_SOCKET, SO_PASSCRED, 1);
            reply = r == 0 ? "enabled" : "set_option failed: " + std::to_string(r);
        } else if (anc.credentials) {
            reply = "pid=" + std::to_string(anc.credentials->pid) + " uid=" + std::to_string(anc.credentials->uid) +
                    " gid=" + std::to_string(anc.credentials->gid);
        } else {
            reply = "no credentials";
        }
        co_await client.send_packet(reply);
    }
};

TEST(AncillaryContract, A10_CredentialsArriveOnceSoPasscredIsSetOnTheServerSocket) {
    CredentialsHandler handler;
    Text srv(handler, TextProtocol{}, receiving_ancillary_data());
    auto c = srv.client();

    c.send(srv.address(), "before");
    EXPECT_EQ(c.recv(), "no credentials") << "the server never sets SO_PASSCRED itself";
    c.send(srv.address(), "enable");
    ASSERT_EQ(c.recv(), "enabled");
    c.send(srv.address(), "who am I");
    EXPECT_EQ(c.recv(), "pid=" + std::to_string(::getpid()) + " uid=" + std::to_string(::getuid()) +
                            " gid=" + std::to_string(::getgid()));
    EXPECT_EQ(srv.server().stats().fds_closed, 0u);
}

/// "enable" sets SO_PASSCRED; "hold" keeps its session busy until another client sends "release",
/// so that the client's next datagram is queued; anything else reports its fds and credentials.
class QueuedClaimHandler : public DatagramRequestHandler<std::string, std::string> {
public:
    Session<std::string> handle(TextClient& client) override {
        Ancillary anc;
        const std::string request = co_yield recv({.timeout = std::nullopt, .ancillary = &anc});
        if (request == "release") {
            released_ = true;
            co_return;
        }
        std::string reply;
        if (request == "enable") {
            reply = client.socket().set_option(SOL_SOCKET, SO_PASSCRED, 1) == 0 ? "enabled" : "set_option failed";
        } else if (request == "hold") {
            co_await client.send_packet("holding");
            for (int i = 0; i < 10000 && !released_; ++i) co_await sleep(1ms);  // bounded wait for "release"
            reply = "released";
        } else {
            for (auto& fd : anc.fds) {
                if (::write(fd.get(), request.data(), request.size()) < 0) reply = "write failed; ";
            }
            reply += request + ": " + std::to_string(anc.fds.size()) + " fds";
            if (anc.credentials)
                reply += ", pid=" + std::to_string(anc.credentials->pid) + " uid=" +
                         std::to_string(anc.credentials->uid) + " gid=" + std::to_string(anc.credentials->gid);
        }
        co_await client.send_packet(reply);
    }

private:
    bool released_ = false;  // loop thread only
};

TEST(AncillaryContract, A3_AQueuedDatagramKeepsItsFdsAndCredentialsForTheSessionThatConsumesIt) {
    QueuedClaimHandler handler;
    Text srv(handler, TextProtocol{}, receiving_ancillary_data());
    auto c = srv.client();
    auto releaser = srv.client();
    Pipe a, b;

    c.send(srv.address(), "enable");
    ASSERT_EQ(c.recv(), "enabled");
    c.send(srv.address(), "hold");
    ASSERT_EQ(c.recv(), "holding");
    c.send(srv.address(), "queued", {a.write_end.get(), b.write_end.get()});
    a.write_end.reset();
    b.write_end.reset();
    ASSERT_TRUE(wait_until([&] { return srv.server().stats().datagrams_received == 3; }));  // queued behind "hold"
    releaser.send(srv.address(), "release");

    EXPECT_EQ(c.recv(), "released");
    EXPECT_EQ(c.recv(), "queued: 2 fds, pid=" + std::to_string(::getpid()) + " uid=" + std::to_string(::getuid()) +
                            " gid=" + std::to_string(::getgid()));
    for (Pipe* p : {&a, &b}) {
        std::string data;
        EXPECT_TRUE(reaches_eof(p->read_end.get(), &data));
        EXPECT_EQ(data, "queued");
    }
    EXPECT_EQ(srv.server().stats().fds_closed, 0u);
}

}  // namespace
}  // namespace unixgram::testing
