// SPDX-License-Identifier: MIT
// The usage examples of the public headers, compiled, and run (most of them against a real server).
//
// Each example sits between "// BEGIN EXAMPLE <header>" and "// END EXAMPLE" with the text of the
// header's \code block, line for line; header_examples_sync_test.cpp checks that they agree and that
// every header with an example has its copy here. Examples that are member functions sit in
// a handler class, free functions at namespace scope, statements in a function or a test.

#undef NDEBUG  // the examples check themselves with assert(), in every build type
#include <cassert>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include <gtest/gtest.h>

#include "contract/harness.hpp"  // TempDir, RawClient, RunningServer: a real server on a temp path
#include "unixgram/unixgram.hpp"

namespace {

using namespace std::chrono_literals;
using unixgram::testing::RunningServer;
using TextServer = RunningServer<std::string, std::string, unixgram::TextProtocol>;

// --- examples without a server ---------------------------------------------------------------

TEST(HeaderExamples, Address) {
    // BEGIN EXAMPLE address.hpp
    auto a = unixgram::UnixAddress::parse("@metrics");       // abstract
    auto p = unixgram::UnixAddress::pathname("/run/x.sock");  // pathname
    auto any = unixgram::UnixAddress::autobind();             // let the kernel pick (@0a1b2)
    assert(a.kind() == unixgram::UnixAddress::Kind::abstract);
    assert(p.to_string() == "/run/x.sock");
    assert(any.is_unnamed());
    // END EXAMPLE
}

TEST(HeaderExamples, Buffer) {
    // BEGIN EXAMPLE buffer.hpp
    unixgram::Buffer buf;
    buf.append(std::string_view("hello"));
    buf.append(std::as_bytes(std::span("!", 1)));
    assert(buf.size() == 6);
    buf.clear();  // keeps its capacity
    // END EXAMPLE
    EXPECT_TRUE(buf.empty());
}

TEST(HeaderExamples, Protocol) {
    // BEGIN EXAMPLE protocol.hpp
    struct ShoutProtocol {
        void make_datagram(const std::string& s, unixgram::Buffer& out) const { out.append(s); }
        std::string build_packet(std::span<const std::byte> in) const {
            std::string s(reinterpret_cast<const char*>(in.data()), in.size());
            for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
            return s;
        }
    };
    static_assert(unixgram::DatagramProtocol<ShoutProtocol, std::string, std::string>);
    // END EXAMPLE
    unixgram::Buffer out;
    ShoutProtocol{}.make_datagram("hi", out);
    EXPECT_EQ(ShoutProtocol{}.build_packet(out.view()), "HI");
}

TEST(HeaderExamples, RawProtocol) {
    // BEGIN EXAMPLE raw_protocol.hpp
    unixgram::RawProtocol raw;
    unixgram::Buffer out;
    raw.make_datagram(unixgram::Bytes{std::byte{0x01}, std::byte{0xff}}, out);
    unixgram::Bytes back = raw.build_packet(out.view());
    assert(back == (unixgram::Bytes{std::byte{0x01}, std::byte{0xff}}));
    assert(raw.build_packet({}).empty());  // an empty datagram is a valid request

    unixgram::PooledRawProtocol pooled;
    unixgram::PooledBytes request = pooled.build_packet(out.view());
    assert(std::ranges::equal(request, back));
    // END EXAMPLE
    EXPECT_TRUE(std::ranges::equal(request, back));
}

TEST(HeaderExamples, TextProtocol) {
    // BEGIN EXAMPLE text_protocol.hpp
    unixgram::TextProtocol text;
    unixgram::Buffer out;
    text.make_datagram("héllo", out);
    assert(text.build_packet(out.view()) == "héllo");
    assert(unixgram::utf8_error_offset("ok\xC0\xAF") == 2u);  // overlong encoding of '/'
    try {
        text.build_packet(std::as_bytes(std::span("a\xED\xA0\x80", 4)));  // a surrogate
        assert(false);
    } catch (const unixgram::ParseError& e) {
        assert(e.reason() == "invalid UTF-8 at byte 1");
    }
    // END EXAMPLE
}

TEST(HeaderExamples, JsonProtocol) {
    // BEGIN EXAMPLE json_protocol.hpp
    unixgram::JsonProtocol json;
    unixgram::Buffer out;
    json.make_datagram({{"op", "get"}, {"id", 7}}, out);
    std::string_view wire(reinterpret_cast<const char*>(out.data()), out.size());
    assert(wire == R"({"id":7,"op":"get"})");
    nlohmann::json request = json.build_packet(out.view());
    assert(request["op"] == "get");
    try {
        json.build_packet(std::as_bytes(std::span("{\"id\":", 6)));
        assert(false);
    } catch (const unixgram::ParseError& e) {
        assert(e.reason().starts_with("JSON decode error: "));
    }
    // END EXAMPLE
}

TEST(HeaderExamples, StructProtocol) {
    // BEGIN EXAMPLE struct_protocol.hpp
    struct Point { std::int32_t x, y; };
    unixgram::StructProtocol<Point> proto;
    unixgram::Buffer out;
    proto.make_datagram(Point{3, -4}, out);
    assert(out.size() == sizeof(Point));
    Point p = proto.build_packet(out.view());
    assert(p.x == 3 && p.y == -4);
    // END EXAMPLE
}

// --- handlers and servers --------------------------------------------------------------------

// BEGIN EXAMPLE handler.hpp
class Echo : public unixgram::DatagramRequestHandler<unixgram::Bytes, unixgram::Bytes> {
public:
    unixgram::Session<unixgram::Bytes> handle(unixgram::Client<unixgram::Bytes>& client) override {
        unixgram::Bytes request = co_yield unixgram::recv();
        co_await client.send_packet(request);
    }
};
// END EXAMPLE
using EchoServer = RunningServer<unixgram::Bytes, unixgram::Bytes, unixgram::RawProtocol>;

// server.hpp: compiled, not run: it binds /run/echo.sock. The tests below start the same server
// (Echo, RawProtocol, start/stop/close) on a path in a temporary directory.
[[maybe_unused]] void server_example() {
    // BEGIN EXAMPLE server.hpp
    Echo handler;  // a DatagramRequestHandler<unixgram::Bytes, unixgram::Bytes>
    unixgram::ServerOptions opts;
    opts.mode = 0600;
    unixgram::UnixDatagramServer server(unixgram::UnixAddress::pathname("/run/echo.sock"),
                                        unixgram::RawProtocol{}, handler, opts);
    server.start();               // returns once serving
    // ... server.address(), server.stats() ...
    server.stop();
    server.close();
    // END EXAMPLE
}
// What the example's class template argument deduction gives.
static_assert(std::is_same_v<decltype(unixgram::UnixDatagramServer(unixgram::UnixAddress(), unixgram::RawProtocol{},
                                                                   std::declval<Echo&>())),
                             unixgram::UnixDatagramServer<unixgram::Bytes, unixgram::Bytes, unixgram::RawProtocol>>);

void print_stats(const unixgram::Server& server) {
    // BEGIN EXAMPLE stats.hpp
    unixgram::ServerStats s = server.stats();
    std::printf("received %llu, sent %llu, dropped %llu\n",
                (unsigned long long)s.datagrams_received, (unsigned long long)s.datagrams_sent,
                (unsigned long long)s.dropped_total());
    // END EXAMPLE
}

TEST(HeaderExamples, HandlerEchoesAndStatsCountIt) {
    Echo handler;
    EchoServer srv(handler);
    auto c = srv.client();
    c.send(srv.address(), "ping");
    EXPECT_EQ(c.recv(), "ping");
    c.send(srv.address(), "");
    EXPECT_EQ(c.recv(), "");
    EXPECT_TRUE(unixgram::testing::wait_until([&] { return srv.server().stats().datagrams_sent == 2; }));
    print_stats(srv.server());
    EXPECT_EQ(srv.server().stats().datagrams_received, 2u);
    EXPECT_EQ(srv.server().stats().dropped_total(), 0u);
}

TEST(HeaderExamples, Options) {
    // BEGIN EXAMPLE options.hpp
    unixgram::ServerOptions opts;
    opts.mode = 0660;                                        // socket file permissions
    opts.unnamed_addresses = unixgram::UnnamedAddresses::warn;
    opts.max_queued_datagrams = 256;                         // per client
    opts.validate();
    // END EXAMPLE
    Echo handler;
    EchoServer srv(handler, unixgram::RawProtocol{}, opts);
    struct stat st {};
    ASSERT_EQ(::stat(std::string(srv.address().name()).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0660u);
    auto c = srv.client();
    c.send(srv.address(), "x");
    EXPECT_EQ(c.recv(), "x");
}

class SessionExample final : public unixgram::DatagramRequestHandler<std::string, std::string> {
public:
    // BEGIN EXAMPLE session.hpp
    unixgram::Session<std::string> handle(unixgram::Client<std::string>& client) override {
        std::string reply = co_yield unixgram::recv();
        try {
            reply += co_yield unixgram::recv({.timeout = std::chrono::seconds(2)});
        } catch (const unixgram::TimeoutError&) {
            // no second datagram within 2 s: answer the first alone
        }
        co_await client.send_packet(reply);
    }
    // END EXAMPLE
};

TEST(HeaderExamples, SessionJoinsTwoDatagrams) {
    SessionExample handler;
    TextServer srv(handler);
    auto c = srv.client();
    c.send(srv.address(), "ping ");
    c.send(srv.address(), "pong");
    EXPECT_EQ(c.recv(), "ping pong");
}

class ClientExample final : public unixgram::DatagramRequestHandler<std::string, std::string> {
public:
    // Client copies must not outlive the server: count and drop them on the loop, at teardown.
    unixgram::Task<> service_init(unixgram::ExitStack& stack, unixgram::Server&) override {
        stack.callback([this] {
            for (const auto& entry : seen_) counts.insert(entry.second);
            seen_.clear();
        });
        co_return;
    }

    // BEGIN EXAMPLE client.hpp
    unixgram::Session<std::string> handle(unixgram::Client<std::string>& client) override {
        std::string request = co_yield unixgram::recv();
        seen_[client] += 1;  // std::unordered_map<unixgram::Client<std::string>, int>
        co_await client.send_packet("hello " + client.peer_name().to_string());
    }
    // END EXAMPLE

    std::multiset<int> counts;  // filled when the server stops

private:
    std::unordered_map<unixgram::Client<std::string>, int> seen_;
};

TEST(HeaderExamples, ClientCopiesAreMapKeysPerAddress) {
    ClientExample handler;
    TextServer srv(handler);
    auto a = srv.client();
    auto b = srv.client();
    a.send(srv.address(), "1");
    EXPECT_EQ(a.recv(), "hello " + a.local_name().to_string());
    a.send(srv.address(), "2");
    EXPECT_EQ(a.recv(), "hello " + a.local_name().to_string());
    b.send(srv.address(), "3");
    EXPECT_EQ(b.recv(), "hello " + b.local_name().to_string());
    srv.server().stop();
    EXPECT_EQ(handler.counts, (std::multiset<int>{1, 2}));
}

// errors.hpp: co_await is not allowed in a catch block ([expr.await]/2), hence the reply variable.
class ErrorsExample final : public unixgram::DatagramRequestHandler<std::string, std::string> {
public:
    unixgram::Session<std::string> handle(unixgram::Client<std::string>& client) override {
        // BEGIN EXAMPLE errors.hpp
        std::string reply;
        try {
            auto request = co_yield unixgram::recv({.timeout = std::chrono::seconds(5)});
            reply = "got " + request;
        } catch (const unixgram::TimeoutError&) {
            co_return;  // the client went quiet
        } catch (const unixgram::ParseError& e) {
            reply = std::string("bad request: ") + e.what();  // co_await is not allowed in a catch block
        }
        co_await client.send_packet(reply);
        // END EXAMPLE
    }
};

TEST(HeaderExamples, ErrorsParseErrorBecomesAReply) {
    ErrorsExample handler;
    TextServer srv(handler);
    auto c = srv.client();
    c.send(srv.address(), "x");
    EXPECT_EQ(c.recv(), "got x");
    c.send(srv.address(), "ok\xff");
    EXPECT_EQ(c.recv(), "bad request: Error while parsing data: invalid UTF-8 at byte 2");
}

class AncillaryExample final : public unixgram::DatagramRequestHandler<std::string, std::string> {
public:
    unixgram::Session<std::string> handle(unixgram::Client<std::string>& client) override {
        // Not part of the example: the server does not set SO_PASSCRED, and without it the kernel
        // passes no credentials. Set here, it applies from the client's next datagram on.
        client.socket().set_option(SOL_SOCKET, SO_PASSCRED, 1);
        // BEGIN EXAMPLE ancillary.hpp
        unixgram::Ancillary anc;
        std::string request = co_yield unixgram::recv({.timeout = std::nullopt, .ancillary = &anc});
        for (auto& fd : anc.fds) {  // owned: closed when anc goes
            if (::write(fd.get(), request.data(), request.size()) < 0) break;
        }
        if (anc.credentials) co_await client.send_packet(std::to_string(anc.credentials->uid));
        // END EXAMPLE
    }
};

/// What arrives on `fd` within 5 s (one read).
std::string read_some(int fd) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) != 1) return "<nothing>";
    char buf[256];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    return n < 0 ? "<error>" : std::string(buf, static_cast<std::size_t>(n));
}

TEST(HeaderExamples, AncillaryFdsAndCredentials) {
    AncillaryExample handler;
    unixgram::ServerOptions options;
    options.receive_ancillary_data = true;
    TextServer srv(handler, unixgram::TextProtocol{}, options);
    int pipe_fds[2];
    ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
    unixgram::UniqueFd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
    auto c = srv.client();
    c.send(srv.address(), "first", {write_end.get()});
    EXPECT_EQ(read_some(read_end.get()), "first");  // written through the passed fd
    c.send(srv.address(), "second", {write_end.get()});
    EXPECT_EQ(read_some(read_end.get()), "second");
    EXPECT_EQ(c.recv(), std::to_string(::getuid()));
}

class ExitStackExample final : public unixgram::DatagramRequestHandler<std::string, std::string> {
public:
    std::vector<std::string> events;

    // BEGIN EXAMPLE exit_stack.hpp
    unixgram::Task<> service_init(unixgram::ExitStack& stack, unixgram::Server&) override {
        db_ = open_database();
        stack.callback([this] { db_.close(); });
        stack.push_async([this]() -> unixgram::Task<> { co_await flush_metrics(); });
        co_return;
    }
    // END EXAMPLE

    unixgram::Session<std::string> handle(unixgram::Client<std::string>&) override { co_return; }

private:
    struct Database {
        std::vector<std::string>* events = nullptr;
        void close() { events->push_back("database closed"); }
    };
    Database open_database() {
        events.push_back("database opened");
        return Database{&events};
    }
    unixgram::Task<> flush_metrics() {
        events.push_back("metrics flushed");
        co_return;
    }
    Database db_;
};

TEST(HeaderExamples, ExitStackUnwindsLastPushedFirst) {
    ExitStackExample handler;
    TextServer srv(handler);
    EXPECT_EQ(handler.events, std::vector<std::string>{"database opened"});
    srv.server().stop();
    EXPECT_EQ(handler.events, (std::vector<std::string>{"database opened", "metrics flushed", "database closed"}));
}

// BEGIN EXAMPLE context_var.hpp
inline unixgram::ContextVar<std::string> request_id{"none"};
class Tagged : public unixgram::DatagramRequestHandler<std::string, std::string> {
public:
    unixgram::Task<> service_init(unixgram::ExitStack&, unixgram::Server&) override {
        request_id.set("init");  // the value every session starts with
        co_return;
    }
    unixgram::Session<std::string> handle(unixgram::Client<std::string>& client) override {
        std::string before = request_id.get();  // "init", whatever earlier sessions set
        std::string request = co_yield unixgram::recv();
        request_id.set(request);                 // seen by this session only
        co_await client.send_packet(before + " -> " + request_id.get());
    }
};
// END EXAMPLE

TEST(HeaderExamples, ContextVarDefaultsComeFromServiceInit) {
    EXPECT_EQ(request_id.get(), "none");  // off the loop: the default
    Tagged handler;
    TextServer srv(handler);
    auto a = srv.client();
    auto b = srv.client();
    a.send(srv.address(), "a1");
    EXPECT_EQ(a.recv(), "init -> a1");
    a.send(srv.address(), "a2");
    EXPECT_EQ(a.recv(), "init -> a2");
    b.send(srv.address(), "b1");
    EXPECT_EQ(b.recv(), "init -> b1");
    EXPECT_EQ(request_id.get(), "none");
}

// --- coroutines on the loop: Task, sleep, with_timeout, TaskGroup ----------------------------

/// Awaits one Task<> per request on the server's loop, then answers with how long it took (ms).
class RunsTask final : public unixgram::DatagramRequestHandler<std::string, std::string> {
public:
    explicit RunsTask(unixgram::Task<> (*task)()) : task_(task) {}
    unixgram::Session<std::string> handle(unixgram::Client<std::string>& client) override {
        [[maybe_unused]] std::string request = co_yield unixgram::recv();
        const auto start = std::chrono::steady_clock::now();
        co_await task_();
        const auto elapsed = std::chrono::steady_clock::now() - start;
        co_await client.send_packet(
            std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()));
    }

private:
    unixgram::Task<> (*task_)();
};

/// Milliseconds the task took on a real server's loop, or -1 when no answer came.
long run_on_a_server(unixgram::Task<> (*task)()) {
    RunsTask handler(task);
    TextServer srv(handler);
    auto c = srv.client();
    c.send(srv.address(), "go");
    const auto reply = c.recv(15000ms);
    return reply ? std::stol(*reply) : -1;
}

namespace task_example {
// BEGIN EXAMPLE task.hpp
unixgram::Task<int> answer() { co_return 42; }
unixgram::Task<> use_it() {
    int v = co_await answer();
    co_await unixgram::sleep(std::chrono::milliseconds(v));
}
// END EXAMPLE
}  // namespace task_example

TEST(HeaderExamples, TaskAwaitsATaskAndSleeps) {
    const long ms = run_on_a_server(&task_example::use_it);
    EXPECT_GE(ms, 42);
    EXPECT_LT(ms, 5000);
}

namespace sleep_example {
// BEGIN EXAMPLE sleep.hpp
unixgram::Task<> slow() { co_await unixgram::sleep(std::chrono::seconds(10)); }
unixgram::Task<> bounded() {
    try {
        co_await unixgram::with_timeout(std::chrono::milliseconds(50), slow());
    } catch (const unixgram::TimeoutError&) {
        // gave up after 50 ms
    }
}
// END EXAMPLE
}  // namespace sleep_example

TEST(HeaderExamples, SleepWithTimeoutGivesUp) {
    const long ms = run_on_a_server(&sleep_example::bounded);
    EXPECT_GE(ms, 50);
    EXPECT_LT(ms, 5000);
}

namespace task_group_example {
// BEGIN EXAMPLE task_group.hpp
unixgram::Task<> tick() { for (;;) co_await unixgram::sleep(std::chrono::seconds(1)); }
unixgram::Task<> run_two() {
    unixgram::TaskGroup group;
    group.spawn(tick());
    group.spawn(tick());
    co_await unixgram::sleep(std::chrono::milliseconds(10));
    group.cancel();
    co_await group.join();
}
// END EXAMPLE
}  // namespace task_group_example

TEST(HeaderExamples, TaskGroupCancelsAndJoins) {
    const long ms = run_on_a_server(&task_group_example::run_two);
    EXPECT_GE(ms, 10);
    EXPECT_LT(ms, 1000) << "cancel() must not wait for the ticks' next second";
}

// --- the blocking client ---------------------------------------------------------------------

// datagram_client.hpp: compiled, not run: it connects to /run/echo.sock. datagram_client_test.cpp and
// datagram_client_threads_test.cpp run UnixDatagramClient against real sockets.
[[maybe_unused]] void datagram_client_example() {
    // BEGIN EXAMPLE datagram_client.hpp
    struct LineProtocol {
        void make_datagram(const std::string& s, unixgram::Buffer& out) const { out.append(s); }
        std::string build_packet(std::span<const std::byte> in) const {
            return {reinterpret_cast<const char*>(in.data()), in.size()};
        }
    };
    unixgram::UnixDatagramClient client(unixgram::UnixAddress::pathname("/run/echo.sock"), LineProtocol{});
    client.send_packet("ping");
    std::string reply = client.recv_packet(std::chrono::seconds(5));  // TimeoutError if silent
    client.close();
    // END EXAMPLE
}

}  // namespace
