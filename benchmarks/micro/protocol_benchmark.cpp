// SPDX-License-Identifier: MIT
// Micro-benchmarks of the built-in protocols: build_packet (parse) and make_datagram (serialize) per datagram.
#include "unixgram/buffer.hpp"
#include "unixgram/json_protocol.hpp"
#include "unixgram/raw_protocol.hpp"
#include "unixgram/struct_protocol.hpp"
#include "unixgram/text_protocol.hpp"

#include <benchmark/benchmark.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include <nlohmann/json.hpp>

namespace {

std::span<const std::byte> as_datagram(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }

unixgram::Bytes raw_payload(std::size_t n) {
    unixgram::Bytes b(n);
    for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::byte>(i * 31 + 7);
    return b;
}

std::string ascii_text(std::size_t n) {
    constexpr std::string_view kLine = "GET /v1/users/1234/profile?fields=name,email HTTP-ish line\n";
    std::string s;
    while (s.size() < n) s += kLine;
    s.resize(n);
    return s;
}

/// `n` bytes of UTF-8 made of 2-, 3- and 4-byte sequences (ñ € 日 🙂), padded with ASCII where the
/// next sequence would not fit, so the validator's multi-byte paths are what is measured.
std::string utf8_text(std::size_t n) {
    constexpr std::array<std::string_view, 4> kChars = {"\xC3\xB1", "\xE2\x82\xAC", "\xE6\x97\xA5", "\xF0\x9F\x99\x82"};
    std::string s;
    for (std::size_t i = 0;; ++i) {
        std::string_view c = kChars[i % kChars.size()];
        if (s.size() + c.size() > n) break;
        s += c;
    }
    s.resize(n, 'x');
    return s;
}

void BM_RawProtocolBuildPacket(benchmark::State& state) {
    const unixgram::RawProtocol proto;
    const auto payload = raw_payload(static_cast<std::size_t>(state.range(0)));
    for (auto _ : state) {
        unixgram::Bytes request = proto.build_packet(payload);
        benchmark::DoNotOptimize(request.data());
    }
    state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_RawProtocolBuildPacket)->Arg(64)->Arg(1024);

// The demo's protocol: the request's bytes come from the thread's frame pool, not malloc.
void BM_PooledRawProtocolBuildPacket(benchmark::State& state) {
    const unixgram::PooledRawProtocol proto;
    const auto payload = raw_payload(static_cast<std::size_t>(state.range(0)));
    for (auto _ : state) {
        unixgram::PooledBytes request = proto.build_packet(payload);
        benchmark::DoNotOptimize(request.data());
    }
    state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_PooledRawProtocolBuildPacket)->Arg(64)->Arg(1024);

// make_datagram into one reused Buffer, as the server does once the buffer has grown.
void BM_RawProtocolMakeDatagram(benchmark::State& state) {
    const unixgram::RawProtocol proto;
    const auto response = raw_payload(static_cast<std::size_t>(state.range(0)));
    unixgram::Buffer out;
    for (auto _ : state) {
        out.clear();
        proto.make_datagram(response, out);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_RawProtocolMakeDatagram)->Arg(64)->Arg(1024);

void BM_TextProtocolBuildPacket(benchmark::State& state, std::string (*make_text)(std::size_t)) {
    const unixgram::TextProtocol proto;
    const std::string text = make_text(static_cast<std::size_t>(state.range(0)));
    for (auto _ : state) {
        std::string request = proto.build_packet(as_datagram(text));
        benchmark::DoNotOptimize(request.data());
    }
    state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK_CAPTURE(BM_TextProtocolBuildPacket, ascii, &ascii_text)->Arg(64)->Arg(1024);
BENCHMARK_CAPTURE(BM_TextProtocolBuildPacket, utf8, &utf8_text)->Arg(64)->Arg(1024);

void BM_TextProtocolMakeDatagram(benchmark::State& state, std::string (*make_text)(std::size_t)) {
    const unixgram::TextProtocol proto;
    const std::string response = make_text(static_cast<std::size_t>(state.range(0)));
    unixgram::Buffer out;
    for (auto _ : state) {
        out.clear();
        proto.make_datagram(response, out);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK_CAPTURE(BM_TextProtocolMakeDatagram, ascii, &ascii_text)->Arg(64)->Arg(1024);
BENCHMARK_CAPTURE(BM_TextProtocolMakeDatagram, utf8, &utf8_text)->Arg(64)->Arg(1024);

// A small request object, as a key-value or control protocol sends: 63 bytes on the wire.
nlohmann::json small_object() {
    return {{"op", "get"}, {"id", 7}, {"key", "user:1234"}, {"ttl", 30}, {"tags", {"a", "b"}}};
}

void BM_JsonProtocolBuildPacket(benchmark::State& state) {
    const unixgram::JsonProtocol proto;
    const std::string wire = small_object().dump();
    for (auto _ : state) {
        nlohmann::json request = proto.build_packet(as_datagram(wire));
        benchmark::DoNotOptimize(request);
    }
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(wire.size()));
}
BENCHMARK(BM_JsonProtocolBuildPacket);

void BM_JsonProtocolMakeDatagram(benchmark::State& state) {
    const unixgram::JsonProtocol proto;
    const nlohmann::json response = small_object();
    unixgram::Buffer out;
    for (auto _ : state) {
        out.clear();
        proto.make_datagram(response, out);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(out.size()));
}
BENCHMARK(BM_JsonProtocolMakeDatagram);

/// A fixed-layout message of `N` bytes with no padding (so every byte sent is a defined byte).
template <std::size_t N>
struct Message {
    std::uint64_t id;
    std::uint32_t kind;
    std::uint32_t length;
    std::array<std::byte, N - 16> body;
};
using Message64 = Message<64>;
using Message1K = Message<1024>;
static_assert(sizeof(Message64) == 64 && std::has_unique_object_representations_v<Message64>);
static_assert(sizeof(Message1K) == 1024 && std::has_unique_object_representations_v<Message1K>);

template <class T>
T sample_message() {
    T m{};
    m.id = 0x0123456789abcdef;
    m.kind = 3;
    m.length = static_cast<std::uint32_t>(m.body.size());
    for (std::size_t i = 0; i < m.body.size(); ++i) m.body[i] = static_cast<std::byte>(i);
    return m;
}

template <class T>
void BM_StructProtocolBuildPacket(benchmark::State& state) {
    const unixgram::StructProtocol<T> proto;
    const T message = sample_message<T>();
    const auto wire = std::as_bytes(std::span(&message, 1));
    for (auto _ : state) {
        T request = proto.build_packet(wire);
        benchmark::DoNotOptimize(request);
    }
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(sizeof(T)));
}
BENCHMARK_TEMPLATE(BM_StructProtocolBuildPacket, Message64);
BENCHMARK_TEMPLATE(BM_StructProtocolBuildPacket, Message1K);

template <class T>
void BM_StructProtocolMakeDatagram(benchmark::State& state) {
    const unixgram::StructProtocol<T> proto;
    const T response = sample_message<T>();
    unixgram::Buffer out;
    for (auto _ : state) {
        out.clear();
        proto.make_datagram(response, out);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(sizeof(T)));
}
BENCHMARK_TEMPLATE(BM_StructProtocolMakeDatagram, Message64);
BENCHMARK_TEMPLATE(BM_StructProtocolMakeDatagram, Message1K);

}  // namespace

BENCHMARK_MAIN();
