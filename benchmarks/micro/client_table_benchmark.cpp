// SPDX-License-Identifier: MIT
// Micro-benchmarks of the client table: the shard's ClientTable (open addressing, src/server/client_table.hpp)
// looked up by the kernel's sender bytes, against the std::unordered_map<UnixAddress, …> it replaced.
#include "server/client_table.hpp"
#include "unixgram/address.hpp"

#include <benchmark/benchmark.h>

#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace {

using unixgram::UnixAddress;
using unixgram::detail::ClientState;
using unixgram::detail::SenderName;

// The table before ClientTable, with the ClientState* erased to void*.
using MapTable = std::unordered_map<UnixAddress, void*>;

/// Client number `i`'s address. Half the clients bind a pathname, half autobind; an autobound client
/// gets the kernel's abstract name of five hex digits, so both key shapes the server sees are measured.
UnixAddress client_address(std::size_t i) {
    if (i % 2 == 0) return UnixAddress::pathname("/run/user/1000/app/client-" + std::to_string(i) + ".sock");
    char name[16];
    const int n = std::snprintf(name, sizeof(name), "%05zx", i);
    return UnixAddress::abstract(std::string_view(name, static_cast<std::size_t>(n)));
}

std::vector<UnixAddress> client_addresses(std::size_t first, std::size_t count) {
    std::vector<UnixAddress> out;
    out.reserve(count);
    for (std::size_t i = first; i < first + count; ++i) out.push_back(client_address(i));
    return out;
}

MapTable make_table(const std::vector<UnixAddress>& keys) {
    MapTable table;
    for (const auto& k : keys) table.emplace(k, nullptr);
    return table;
}

// A datagram's sender arrives as a fresh copy (from recvfrom), never as the key object itself, and
// in no particular order: the probes are shuffled copies.
std::vector<UnixAddress> shuffled(std::vector<UnixAddress> keys) {
    std::shuffle(keys.begin(), keys.end(), std::mt19937_64(42));
    return keys;
}

// libstdc++ keeps each key's hash in its node only when the hasher may throw; std::hash<UnixAddress>
// is noexcept, so MapTable does not, and a lookup re-hashes the key of every node it steps over to
// find where its bucket ends. This hasher may throw (it never does), so this table caches the hash:
// the comparison tells what caching (or a table that stores the hash) would save.
struct MayThrowHash {
    std::size_t operator()(const UnixAddress& a) const { return a.hash(); }
};
using CachedHashMapTable = std::unordered_map<UnixAddress, void*, MayThrowHash>;

// A known client's datagram: ServerCore::find_or_create's hit path.
template <class Table>
void lookup_hit(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    const auto keys = client_addresses(0, n);
    Table table;
    for (const auto& k : keys) table.emplace(k, nullptr);
    const auto probes = shuffled(keys);
    std::size_t i = 0;
    for (auto _ : state) {
        auto it = table.find(probes[i]);
        benchmark::DoNotOptimize(it);
        if (++i == probes.size()) i = 0;
    }
    state.SetItemsProcessed(state.iterations());
}

void BM_ClientTableLookupHit(benchmark::State& state) { lookup_hit<MapTable>(state); }
BENCHMARK(BM_ClientTableLookupHit)->Arg(16)->Arg(1000)->Arg(100000);

void BM_ClientTableLookupHitCachedHash(benchmark::State& state) { lookup_hit<CachedHashMapTable>(state); }
BENCHMARK(BM_ClientTableLookupHitCachedHash)->Arg(16)->Arg(1000)->Arg(100000);

// A new client's first datagram: the miss before the insert.
void BM_ClientTableLookupMiss(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    const MapTable table = make_table(client_addresses(0, n));
    const auto probes = client_addresses(n, 1024);
    std::size_t i = 0;
    for (auto _ : state) {
        auto it = table.find(probes[i]);
        benchmark::DoNotOptimize(it);
        if (++i == probes.size()) i = 0;
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ClientTableLookupMiss)->Arg(16)->Arg(1000)->Arg(100000);

// A client arriving and leaving while N others stay: find (miss) + emplace, as find_or_create does,
// then erase by key, as destroy_client does. Includes the node allocation and free.
void BM_ClientTableInsertErase(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    MapTable table = make_table(client_addresses(0, n));
    const auto newcomers = client_addresses(n, 1024);
    std::size_t i = 0;
    for (auto _ : state) {
        const UnixAddress& a = newcomers[i];
        if (table.find(a) == table.end()) table.emplace(a, nullptr);
        table.erase(a);
        if (++i == newcomers.size()) i = 0;
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ClientTableInsertErase)->Arg(16)->Arg(1000)->Arg(100000);

// The server's table: a datagram's sender bytes are hashed (UnixAddress::hash_of) and looked up in place;
// a hit returns the ClientState the dispatch goes on with.
struct RealTable {
    std::vector<std::unique_ptr<ClientState>> states;
    unixgram::detail::ClientTable table;

    explicit RealTable(const std::vector<UnixAddress>& keys) {
        for (const auto& k : keys) add(k);
    }
    ClientState* add(const UnixAddress& k) {
        auto c = std::make_unique<ClientState>();
        c->address = k;
        c->address_hash = k.hash();
        table.insert(c.get(), c->address_hash);
        states.push_back(std::move(c));
        return states.back().get();
    }
};

// Looks each probe up by its raw bytes, round-robin, as the receive path does with each sender.
void lookup_raw(benchmark::State& state, const RealTable& t, const std::vector<UnixAddress>& probes) {
    std::size_t i = 0;
    for (auto _ : state) {
        const UnixAddress& p = probes[i];
        ClientState* c = t.table.find(SenderName::of(&p.raw(), p.length()));
        benchmark::DoNotOptimize(c);
        if (++i == probes.size()) i = 0;
    }
    state.SetItemsProcessed(state.iterations());
}

void BM_ServerClientTableLookupHit(benchmark::State& state) {
    const auto keys = client_addresses(0, static_cast<std::size_t>(state.range(0)));
    lookup_raw(state, RealTable(keys), shuffled(keys));
}
BENCHMARK(BM_ServerClientTableLookupHit)->Arg(16)->Arg(1000)->Arg(100000);

void BM_ServerClientTableLookupMiss(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    lookup_raw(state, RealTable(client_addresses(0, n)), client_addresses(n, 1024));
}
BENCHMARK(BM_ServerClientTableLookupMiss)->Arg(16)->Arg(1000)->Arg(100000);

// find (miss) + insert + erase of a client while N others stay (the ClientState itself is reused here;
// the server allocates one per new client).
void BM_ServerClientTableInsertErase(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    RealTable t(client_addresses(0, n));
    const auto newcomers = client_addresses(n, 1024);
    ClientState c;
    std::size_t i = 0;
    for (auto _ : state) {
        const UnixAddress& a = newcomers[i];
        const SenderName name = SenderName::of(&a.raw(), a.length());
        if (t.table.find(name) == nullptr) {
            c.address = a;
            c.address_hash = name.hash;
            t.table.insert(&c, name.hash);
        }
        t.table.erase(&c, c.address_hash);
        if (++i == newcomers.size()) i = 0;
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ServerClientTableInsertErase)->Arg(16)->Arg(1000)->Arg(100000);

// The hash and the copy-in cost grow with the name's length: an autobind name (8 bytes of sockaddr),
// a typical pathname, and the longest pathname the kernel accepts.
const UnixAddress kAutobind = client_address(0x2a1);
const UnixAddress kPathname = client_address(42);
const UnixAddress kLongest = UnixAddress::pathname("/" + std::string(UnixAddress::kMaxNameLength - 1, 'x'));

void BM_UnixAddressHash(benchmark::State& state, const UnixAddress& address) {
    UnixAddress a = address;
    for (auto _ : state) {
        benchmark::DoNotOptimize(a);  // keeps the hash from being hoisted out of the loop
        std::size_t h = a.hash();
        benchmark::DoNotOptimize(h);
    }
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(a.length()));
}
BENCHMARK_CAPTURE(BM_UnixAddressHash, autobind, kAutobind);
BENCHMARK_CAPTURE(BM_UnixAddressHash, pathname, kPathname);
BENCHMARK_CAPTURE(BM_UnixAddressHash, longest, kLongest);

// What the receive path does with each sender address the kernel reports.
void BM_UnixAddressFromSockaddr(benchmark::State& state, const UnixAddress& address) {
    sockaddr_un raw = address.raw();
    const socklen_t length = address.length();
    for (auto _ : state) {
        benchmark::DoNotOptimize(raw);
        UnixAddress a = UnixAddress::from_sockaddr(&raw, length);
        benchmark::DoNotOptimize(a);
    }
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(length));
}
BENCHMARK_CAPTURE(BM_UnixAddressFromSockaddr, autobind, kAutobind);
BENCHMARK_CAPTURE(BM_UnixAddressFromSockaddr, pathname, kPathname);
BENCHMARK_CAPTURE(BM_UnixAddressFromSockaddr, longest, kLongest);

}  // namespace

BENCHMARK_MAIN();
