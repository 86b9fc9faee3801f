// SPDX-License-Identifier: MIT
// ClientTable (src/server/client_table.hpp): lookups by the kernel's name bytes, growth, and erasure with
// backward shift, checked against std::unordered_map under random churn and forced hash collisions.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "server/client_table.hpp"

namespace unixgram::detail {
namespace {

/// Owns the ClientStates the table points to; `hash_of` picks each client's table hash.
struct Clients {
    std::vector<std::unique_ptr<ClientState>> all;

    ClientState* make(const std::string& path, std::size_t hash) {
        auto c = std::make_unique<ClientState>();
        c->address = UnixAddress::pathname(path);
        c->address_hash = hash;
        all.push_back(std::move(c));
        return all.back().get();
    }
};

SenderName name_of(const ClientState* c) { return {&c->address.raw(), c->address.length(), c->address_hash}; }

TEST(ClientTable, FindsBySenderBytesAndHash) {
    Clients clients;
    ClientTable table;
    ClientState* a = clients.make("/tmp/a", UnixAddress::pathname("/tmp/a").hash());
    table.insert(a, a->address_hash);
    const UnixAddress copy = UnixAddress::pathname("/tmp/a");  // the kernel's bytes, not the stored key
    EXPECT_EQ(table.find(SenderName::of(&copy.raw(), copy.length())), a);
    const UnixAddress other = UnixAddress::pathname("/tmp/b");
    EXPECT_EQ(table.find(SenderName::of(&other.raw(), other.length())), nullptr);
    EXPECT_EQ(table.size(), 1u);
}

TEST(ClientTable, SameHashDifferentNamesAreDifferentClients) {
    Clients clients;
    ClientTable table;
    ClientState* a = clients.make("/a", 42);
    ClientState* b = clients.make("/b", 42);
    table.insert(a, 42);
    table.insert(b, 42);
    EXPECT_EQ(table.find(name_of(a)), a);
    EXPECT_EQ(table.find(name_of(b)), b);
    table.erase(a, 42);
    EXPECT_EQ(table.find(name_of(a)), nullptr);
    table.erase(a, 42);  // no longer there: nothing happens
    EXPECT_EQ(table.size(), 1u);
    EXPECT_EQ(table.find(name_of(b)), b) << "erasing the first of a probe chain lost the second";
}

// Random inserts and erases, with hashes drawn from a few values so that probe chains collide, wrap
// around the end of the slot array and cross growth; every live client must stay findable.
void churn(std::size_t distinct_hashes, std::uint32_t seed) {
    Clients clients;
    ClientTable table;
    std::unordered_map<ClientState*, bool> live;
    std::mt19937 rng(seed);
    for (int i = 0; i < 20000; ++i) {
        if (live.empty() || rng() % 3 != 0) {
            const std::size_t hash = distinct_hashes == 0 ? rng() : (rng() % distinct_hashes) * 64 + 63;
            ClientState* c = clients.make("/c/" + std::to_string(i), hash);
            table.insert(c, hash);
            live[c] = true;
        } else {
            auto it = live.begin();
            std::advance(it, static_cast<long>(rng() % live.size()));
            table.erase(it->first, it->first->address_hash);
            it->second = false;
            EXPECT_EQ(table.find(name_of(it->first)), nullptr);
            live.erase(it);
        }
        if (i % 997 == 0) {
            for (const auto& [c, alive] : live) ASSERT_EQ(table.find(name_of(c)), c) << "step " << i;
        }
    }
    EXPECT_EQ(table.size(), live.size());
    std::size_t visited = 0;
    table.for_each([&](ClientState* c) {
        EXPECT_TRUE(live.count(c) == 1);
        ++visited;
    });
    EXPECT_EQ(visited, live.size());
    table.clear();
    EXPECT_EQ(table.size(), 0u);
    for (const auto& [c, alive] : live) EXPECT_EQ(table.find(name_of(c)), nullptr);
}

TEST(ClientTable, RandomChurnWithRealHashes) { churn(0, 1); }
TEST(ClientTable, RandomChurnWithCollidingHashes) { churn(5, 2); }  // every hash lands on the last slot

TEST(ClientTable, SameBytesFindsADifferenceAtEveryPositionOfEveryLength) {
    // Names up to sizeof(sockaddr_un): 8-byte steps, then a tail; unaligned starts on both sides.
    std::vector<unsigned char> a(130), b(130);
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = b[i] = static_cast<unsigned char>(i * 7 + 3);
    for (std::size_t offset = 0; offset < 3; ++offset) {
        for (std::size_t n = 0; n <= 110; ++n) {
            ASSERT_TRUE(same_bytes(a.data() + offset, b.data() + offset, n)) << "n=" << n;
            for (std::size_t k = 0; k < n; ++k) {
                b[offset + k] ^= 0x40;
                ASSERT_FALSE(same_bytes(a.data() + offset, b.data() + offset, n)) << "n=" << n << " k=" << k;
                b[offset + k] ^= 0x40;
            }
            b[offset + n] ^= 0x40;  // a difference just past the end is not compared
            ASSERT_TRUE(same_bytes(a.data() + offset, b.data() + offset, n)) << "n=" << n;
            b[offset + n] ^= 0x40;
        }
    }
}

}  // namespace
}  // namespace unixgram::detail
