// SPDX-License-Identifier: MIT
// Proves the steady-state hot path makes no heap allocation per datagram (a counting global allocator).
#include <gtest/gtest.h>
#include <poll.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "contract/harness.hpp"

// The replacement operators below pair malloc with free; GCC cannot see that through inlining.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {
std::atomic<std::uint64_t> g_allocations{0};
}

void* operator new(std::size_t n) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace unixgram::testing {
namespace {

struct Message {
    std::uint64_t client;
    std::uint64_t sequence;
    std::array<char, 48> text;
};

/// Echoes a fixed-size struct: parsing and serializing allocate nothing by themselves, so every
/// allocation the counter sees comes from the engine.
class StructEcho : public DatagramRequestHandler<Message, Message> {
public:
    Session<Message> handle(Client<Message>& client) override {
        Message m = co_yield recv();
        co_await client.send_packet(m);
    }
};

/// The demo server's handler (examples/echo_server.cpp): raw bytes, parsed into PooledBytes.
class PooledRawEcho : public DatagramRequestHandler<PooledBytes, PooledBytes> {
public:
    Session<PooledBytes> handle(Client<PooledBytes>& client) override {
        PooledBytes request = co_yield recv();
        co_await client.send_packet(request);
    }
};

/// The demo server's handler with `unixgram-echo --post`: the reply is posted, not awaited.
class PostingPooledRawEcho : public DatagramRequestHandler<PooledBytes, PooledBytes> {
public:
    Session<PooledBytes> handle(Client<PooledBytes>& client) override {
        PooledBytes request = co_yield recv();
        client.post_packet(request);
    }
};

/// Sends `rounds` rounds of one datagram per client and reads every reply, without allocating.
bool echo_rounds(std::vector<RawClient>& clients, const UnixAddress& server, int rounds, int& mismatches) {
    Message out{}, in{};
    for (int r = 0; r < rounds; ++r) {
        for (std::size_t c = 0; c < clients.size(); ++c) {
            out.client = c;
            out.sequence = static_cast<std::uint64_t>(r);
            if (::sendto(clients[c].fd(), &out, sizeof out, 0, server.data(), server.length()) != sizeof out)
                return false;
        }
        for (std::size_t c = 0; c < clients.size(); ++c) {
            pollfd p{clients[c].fd(), POLLIN, 0};
            if (::poll(&p, 1, 5000) != 1) return false;
            if (::recv(clients[c].fd(), &in, sizeof in, 0) != sizeof in) return false;
            if (in.client != c || in.sequence != static_cast<std::uint64_t>(r)) ++mismatches;
        }
    }
    return true;
}

/// Echoes 16 clients for warm-up, then counts heap allocations (every thread) over 2000 more rounds.
template <class Handler, class Req, class Protocol>
void expect_no_allocation_per_datagram(unsigned shards, Protocol protocol) {
    Handler handler;
    ServerOptions options;
    options.shards = shards;
    RunningServer<Req, Req, Protocol> srv(handler, std::move(protocol), options);
    srv.server().logger().set_level(spdlog::level::warn);
    std::vector<RawClient> clients;
    for (int i = 0; i < 16; ++i) clients.push_back(srv.client());
    const UnixAddress server = srv.address();
    int mismatches = 0;
    ASSERT_TRUE(echo_rounds(clients, server, 1000, mismatches)) << "warm-up echo failed";
    const std::uint64_t before = g_allocations.load();
    const bool ok = echo_rounds(clients, server, 2000, mismatches);
    const std::uint64_t after = g_allocations.load();
    ASSERT_TRUE(ok) << "echo failed during the measured interval";
    EXPECT_EQ(mismatches, 0);
    EXPECT_EQ(after - before, 0u) << (after - before) << " heap allocations for " << 2000 * clients.size()
                                  << " echoed datagrams on " << shards << " shard(s)";
    // The server counts a send when it reaps its completion, which may come after the client read it.
    EXPECT_TRUE(wait_until([&] { return srv.server().stats().datagrams_sent >= 3000u * clients.size(); }))
        << srv.server().stats().datagrams_sent << " sends counted";
}

TEST(ZeroAllocation, SteadyStateEchoAllocatesNothingPerDatagram) {
    expect_no_allocation_per_datagram<StructEcho, Message>(1, StructProtocol<Message>{});
}

// The demo server's protocol: each request is a copy of the datagram's bytes, drawn from the loop
// thread's pool rather than malloc.
TEST(ZeroAllocation, PooledRawEchoAllocatesNothingPerDatagram) {
    expect_no_allocation_per_datagram<PooledRawEcho, PooledBytes>(1, PooledRawProtocol{});
}

// Client::post_packet: the posted replies' batch and its sendmmsg headers are reserved up front.
TEST(ZeroAllocation, PostedRepliesAllocateNothingPerDatagram) {
    expect_no_allocation_per_datagram<PostingPooledRawEcho, PooledBytes>(1, PooledRawProtocol{});
}

// With 4 shards, most datagrams cross a mailbox to a worker shard: the ring is fixed, the workers'
// pools are prewarmed on their own threads, so the hand-over allocates nothing either.
TEST(ZeroAllocation, SteadyStateEchoWithFourShardsAllocatesNothingPerDatagram) {
    expect_no_allocation_per_datagram<StructEcho, Message>(4, StructProtocol<Message>{});
}

}  // namespace
}  // namespace unixgram::testing
