// SPDX-License-Identifier: MIT
// Unit tests of the built-in protocols: RawProtocol, PooledRawProtocol, TextProtocol, JsonProtocol, StructProtocol<T>.
#include "unixgram/json_protocol.hpp"
#include "unixgram/raw_protocol.hpp"
#include "unixgram/struct_protocol.hpp"
#include "unixgram/text_protocol.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {

using unixgram::Buffer;
using unixgram::Bytes;
using unixgram::ParseError;

std::span<const std::byte> bytes_of(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }

std::string_view text_of(const Buffer& b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

/// Runs `f`, which must throw ParseError, and returns that error's reason().
template <class F>
std::string parse_error_reason(F&& f) {
    try {
        f();
    } catch (const ParseError& e) {
        return e.reason();
    }
    ADD_FAILURE() << "no ParseError was thrown";
    return {};
}

// --- ParseError -------------------------------------------------------------------------------

TEST(ParseError, WhatIsPrefixedReasonIsNot) {
    ParseError e("expected 4 bytes, got 3");
    EXPECT_EQ(e.reason(), "expected 4 bytes, got 3");
    EXPECT_STREQ(e.what(), "Error while parsing data: expected 4 bytes, got 3");
}

TEST(ParseError, IsARuntimeError) {
    const std::runtime_error& base = ParseError("x");
    EXPECT_STREQ(base.what(), "Error while parsing data: x");
}

// --- RawProtocol ------------------------------------------------------------------------------

static_assert(unixgram::DatagramProtocol<unixgram::RawProtocol, Bytes, Bytes>);

TEST(RawProtocol, EveryByteValueRoundTrips) {
    Bytes all;
    for (int v = 0; v < 256; ++v) all.push_back(static_cast<std::byte>(v));
    unixgram::RawProtocol raw;
    Buffer out;
    raw.make_datagram(all, out);
    ASSERT_EQ(out.size(), all.size());
    EXPECT_EQ(std::memcmp(out.data(), all.data(), all.size()), 0);
    EXPECT_EQ(raw.build_packet(out.view()), all);
}

TEST(RawProtocol, MakeDatagramAppends) {
    unixgram::RawProtocol raw;
    Buffer out;
    out.append(std::string_view("ab"));
    raw.make_datagram(Bytes{std::byte{'c'}}, out);
    EXPECT_EQ(text_of(out), "abc");
}

TEST(RawProtocol, EmptyDatagramIsAValidEmptyRequest) {
    unixgram::RawProtocol raw;
    Bytes request;
    EXPECT_NO_THROW(request = raw.build_packet({}));
    EXPECT_TRUE(request.empty());
    Buffer out;
    raw.make_datagram(Bytes{}, out);
    EXPECT_TRUE(out.empty());
}

TEST(RawProtocol, BuildPacketCopies) {
    std::vector<std::byte> storage{std::byte{1}, std::byte{2}};
    Bytes request = unixgram::RawProtocol{}.build_packet(storage);
    storage[0] = std::byte{9};
    EXPECT_EQ(request[0], std::byte{1});
}

// PooledRawProtocol builds its requests with its own copy path (a pooled vector, then memcpy).
TEST(PooledRawProtocol, EveryByteValueAndSizeRoundTrips) {
    unixgram::PooledRawProtocol pooled;
    for (std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{63}, std::size_t{64}, std::size_t{1024},
                             std::size_t{4097}, std::size_t{65536}}) {
        Bytes data(size);
        for (std::size_t i = 0; i < size; ++i) data[i] = static_cast<std::byte>((i * 7 + size) & 0xff);
        const unixgram::PooledBytes request = pooled.build_packet(data);
        ASSERT_EQ(request.size(), size);
        EXPECT_TRUE(std::equal(request.begin(), request.end(), data.begin())) << size << " bytes";
        Buffer out;
        pooled.make_datagram(request, out);
        ASSERT_EQ(out.size(), size);
        EXPECT_TRUE(size == 0 || std::memcmp(out.data(), data.data(), size) == 0) << size << " bytes";
    }
}

// --- TextProtocol -----------------------------------------------------------------------------

static_assert(unixgram::DatagramProtocol<unixgram::TextProtocol, std::string, std::string>);
static_assert(unixgram::utf8_error_offset("h\xC3\xA9llo") == std::nullopt);  // usable at compile time
static_assert(unixgram::utf8_error_offset("a\xED\xA0\x80") == 1u);

struct Utf8Case {
    const char* what;
    std::string_view bytes;
    std::size_t offset;  // of the first bad byte
};

// Hex escapes are split from what follows ("\xE2\x82" "A") so that no hex digit is swallowed.
const Utf8Case kInvalidUtf8[] = {
    // Overlong encodings.
    {"overlong 2-byte NUL (C0 80)", std::string_view("ab\xC0\x80", 4), 2},
    {"overlong 2-byte U+007F (C1 BF)", "ab\xC1\xBF", 2},
    {"overlong 3-byte U+0000 (E0 80 80)", "abc\xE0\x80\x80", 3},
    {"overlong 3-byte U+07FF (E0 9F BF)", "abc\xE0\x9F\xBF", 3},
    {"overlong 4-byte U+0000 (F0 80 80 80)", "\xF0\x80\x80\x80", 0},
    {"overlong 4-byte U+FFFF (F0 8F BF BF)", "x\xF0\x8F\xBF\xBF", 1},
    // UTF-16 surrogates.
    {"surrogate U+D800 (ED A0 80)", "abc\xED\xA0\x80", 3},
    {"surrogate U+DBFF (ED AF BF)", "\xED\xAF\xBF", 0},
    {"surrogate U+DC00 (ED B0 80)", "\xC3\xA9\xED\xB0\x80", 2},
    {"surrogate U+DFFF (ED BF BF)", "abc\xED\xBF\xBF", 3},
    {"surrogate pair encoded as two sequences", "\xED\xA0\xBD\xED\xB8\x80", 0},
    // Beyond U+10FFFF.
    {"U+110000 (F4 90 80 80)", "abc\xF4\x90\x80\x80", 3},
    {"U+13FFFF (F4 BF BF BF)", "\xF4\xBF\xBF\xBF", 0},
    {"lead byte F5", "abc\xF5\x80\x80\x80", 3},
    {"lead byte F7", "\xF7\xBF\xBF\xBF", 0},
    {"5-byte form (F8)", "ab\xF8\x88\x80\x80\x80", 2},
    {"6-byte form (FC)", "ab\xFC\x84\x80\x80\x80\x80", 2},
    {"byte FE", "abc\xFE", 3},
    {"byte FF", "\xFF", 0},
    // Truncated sequences, at the end and interrupted by another byte.
    {"truncated 2-byte at end", "abc\xC3", 3},
    {"truncated 3-byte at end", "abc\xE2\x82", 3},
    {"truncated 4-byte at end", "abc\xF0\x9F\x98", 3},
    {"lead byte alone at end", "\xE2", 0},
    {"3-byte interrupted by ASCII", "ab\xE2\x82" "A", 2},
    {"4-byte interrupted by a new lead byte", "ab\xF0\x9F\xC3\xA9", 2},
    {"2-byte interrupted by NUL", std::string_view("ab\xC3\0", 4), 2},
    // Stray continuation bytes.
    {"continuation 80 at start", "\x80" "abc", 0},
    {"continuation BF in ASCII", "abc\xBF", 3},
    {"extra continuation after a 2-byte sequence", "\xC3\xA9\xA9", 2},
    {"extra continuation after a 4-byte sequence", "\xF0\x9F\x98\x80\x80", 4},
};

TEST(Utf8ErrorOffset, AcceptsWellFormedUtf8AtEveryBoundary) {
    const std::string_view valid[] = {
        "",
        "plain ASCII",
        std::string_view("\0nul\0", 5),
        "\x7F",
        "\xC2\x80",          // U+0080, first 2-byte
        "\xDF\xBF",          // U+07FF, last 2-byte
        "\xE0\xA0\x80",      // U+0800, first 3-byte
        "\xED\x9F\xBF",      // U+D7FF, last before the surrogates
        "\xEE\x80\x80",      // U+E000, first after the surrogates
        "\xEF\xBF\xBF",      // U+FFFF, last 3-byte
        "\xF0\x90\x80\x80",  // U+10000, first 4-byte
        "\xF3\xBF\xBF\xBF",  // U+FFFFF
        "\xF4\x8F\xBF\xBF",  // U+10FFFF, the last code point
        "h\xC3\xA9llo w\xC3\xB6rld \xE2\x82\xAC \xF0\x9F\x98\x80",
    };
    for (std::string_view s : valid) {
        SCOPED_TRACE(testing::PrintToString(std::string(s)));
        EXPECT_EQ(unixgram::utf8_error_offset(s), std::nullopt);
    }
}

TEST(Utf8ErrorOffset, ReportsTheLeadByteOfEachInvalidClass) {
    for (const Utf8Case& c : kInvalidUtf8) {
        SCOPED_TRACE(c.what);
        EXPECT_EQ(unixgram::utf8_error_offset(c.bytes), c.offset);
    }
}

TEST(Utf8ErrorOffset, ReportsTheFirstErrorOnly) {
    EXPECT_EQ(unixgram::utf8_error_offset("ok\xC3\xA9\x80\xFF\xC0"), 4u);
}

TEST(TextProtocol, Utf8RoundTrips) {
    unixgram::TextProtocol text;
    for (std::string s : {"hello", "h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80", "\xF4\x8F\xBF\xBF", "line\n"}) {
        Buffer out;
        text.make_datagram(s, out);
        EXPECT_EQ(text_of(out), s);
        EXPECT_EQ(text.build_packet(out.view()), s);
    }
}

TEST(TextProtocol, EmbeddedNulIsValidText) {
    const std::string s("a\0b", 3);
    EXPECT_EQ(unixgram::TextProtocol{}.build_packet(bytes_of(s)), s);
}

TEST(TextProtocol, EmptyDatagramIsAnEmptyString) {
    unixgram::TextProtocol text;
    EXPECT_EQ(text.build_packet({}), "");
    Buffer out;
    text.make_datagram("", out);
    EXPECT_TRUE(out.empty());
}

TEST(TextProtocol, BuildPacketRejectsEachInvalidClassNamingTheOffset) {
    unixgram::TextProtocol text;
    for (const Utf8Case& c : kInvalidUtf8) {
        SCOPED_TRACE(c.what);
        const std::string expected = "invalid UTF-8 at byte " + std::to_string(c.offset);
        EXPECT_EQ(parse_error_reason([&] { (void)text.build_packet(bytes_of(c.bytes)); }), expected);
    }
}

TEST(TextProtocol, ParseErrorMessageHasTheStandardPrefix) {
    try {
        (void)unixgram::TextProtocol{}.build_packet(bytes_of("abc\xFF"));
        FAIL() << "no ParseError";
    } catch (const ParseError& e) {
        EXPECT_STREQ(e.what(), "Error while parsing data: invalid UTF-8 at byte 3");
        EXPECT_EQ(e.reason(), "invalid UTF-8 at byte 3");
    }
}

TEST(TextProtocol, MakeDatagramRejectsInvalidUtf8WithInvalidArgument) {
    unixgram::TextProtocol text;
    for (const Utf8Case& c : kInvalidUtf8) {
        SCOPED_TRACE(c.what);
        Buffer out;
        out.append(std::string_view("kept"));
        try {
            text.make_datagram(std::string(c.bytes), out);
            ADD_FAILURE() << "no std::invalid_argument";
        } catch (const ParseError&) {
            ADD_FAILURE() << "ParseError is for requests, not responses";
        } catch (const std::invalid_argument& e) {
            EXPECT_NE(std::string_view(e.what()).find("invalid UTF-8 at byte " + std::to_string(c.offset)),
                      std::string_view::npos)
                << e.what();
        }
        EXPECT_EQ(text_of(out), "kept");  // nothing half-appended
    }
}

// --- JsonProtocol -----------------------------------------------------------------------------

static_assert(unixgram::DatagramProtocol<unixgram::JsonProtocol, nlohmann::json, nlohmann::json>);

TEST(JsonProtocol, ValuesRoundTrip) {
    unixgram::JsonProtocol json;
    const nlohmann::json values[] = {
        nullptr, true, 42, -1.5, "h\xC3\xA9llo \xF0\x9F\x98\x80", nlohmann::json::array(), nlohmann::json::object(),
        {{"op", "get"}, {"ids", {1, 2, 3}}, {"nested", {{"a", nullptr}}}},
    };
    for (const auto& v : values) {
        SCOPED_TRACE(v.dump());
        Buffer out;
        json.make_datagram(v, out);
        EXPECT_EQ(json.build_packet(out.view()), v);
    }
}

TEST(JsonProtocol, DumpIsCompactWithoutTrailingNewline) {
    unixgram::JsonProtocol json;
    Buffer out;
    json.make_datagram({{"b", {1, 2}}, {"a", "x y"}}, out);
    EXPECT_EQ(text_of(out), R"({"a":"x y","b":[1,2]})");
}

TEST(JsonProtocol, MakeDatagramAppends) {
    unixgram::JsonProtocol json;
    Buffer out;
    out.append(std::string_view("> "));
    json.make_datagram(7, out);
    EXPECT_EQ(text_of(out), "> 7");
}

TEST(JsonProtocol, SurroundingWhitespaceIsAccepted) {
    EXPECT_EQ(unixgram::JsonProtocol{}.build_packet(bytes_of(" \t{\"a\": 1}\r\n")), nlohmann::json({{"a", 1}}));
}

TEST(JsonProtocol, EmptyDatagramIsAParseError) {
    const std::string reason = parse_error_reason([] { (void)unixgram::JsonProtocol{}.build_packet({}); });
    EXPECT_TRUE(reason.starts_with("JSON decode error: ")) << reason;
}

TEST(JsonProtocol, MalformedJsonIsAParseError) {
    unixgram::JsonProtocol json;
    for (std::string_view bad : {"{", "{\"a\":}", "[1,]", "nul", "{} x", "{'a': 1}", "01", "\"unterminated",
                                 "{\"a\" 1}", "// comment\n1", "NaN"}) {
        SCOPED_TRACE(std::string(bad));
        const std::string reason = parse_error_reason([&] { (void)json.build_packet(bytes_of(bad)); });
        EXPECT_TRUE(reason.starts_with("JSON decode error: ")) << reason;
        EXPECT_EQ(reason.find("[json.exception"), std::string::npos) << reason;
    }
}

TEST(JsonProtocol, InvalidUtf8IsAParseError) {
    unixgram::JsonProtocol json;
    for (std::string_view bad : {"\"\xFF\"", "\"\xC0\xAF\"", "\"\xED\xA0\x80\"", "\"\xF4\x90\x80\x80\"", "\"\xE2\x82\"",
                                 "\"\x80\"", "\"\\ud800\"", "{\"\xFF\": 1}"}) {
        SCOPED_TRACE(testing::PrintToString(std::string(bad)));
        const std::string reason = parse_error_reason([&] { (void)json.build_packet(bytes_of(bad)); });
        EXPECT_TRUE(reason.starts_with("JSON decode error: ")) << reason;
    }
}

TEST(JsonProtocol, ParseErrorMessageHasTheStandardPrefix) {
    try {
        (void)unixgram::JsonProtocol{}.build_packet(bytes_of("{"));
        FAIL() << "no ParseError";
    } catch (const ParseError& e) {
        EXPECT_TRUE(std::string_view(e.what()).starts_with("Error while parsing data: JSON decode error: "))
            << e.what();
    }
}

TEST(JsonProtocol, ResponseWithInvalidUtf8ThrowsButNotParseError) {
    unixgram::JsonProtocol json;
    Buffer out;
    EXPECT_THROW(json.make_datagram(nlohmann::json("bad \xFF"), out), nlohmann::json::type_error);
    EXPECT_TRUE(out.empty());
}

// --- StructProtocol ---------------------------------------------------------------------------

struct Sample {
    std::uint32_t id;
    std::int16_t delta;
    std::uint8_t flags;
    std::uint8_t kind;
    double value;
};
static_assert(sizeof(Sample) == 16);

/// Trivially copyable but not default-constructible: build_packet must not need a T{}.
struct NoDefault {
    explicit NoDefault(std::uint32_t value) : v(value) {}
    std::uint32_t v;
};

template <class T>
concept HasStructProtocol = requires { typename unixgram::StructProtocol<T>; };

static_assert(unixgram::DatagramProtocol<unixgram::StructProtocol<Sample>, Sample, Sample>);
static_assert(HasStructProtocol<NoDefault>);
static_assert(!HasStructProtocol<std::string>, "only trivially copyable types");
static_assert(!HasStructProtocol<std::vector<int>>, "only trivially copyable types");

TEST(StructProtocol, StructRoundTrips) {
    unixgram::StructProtocol<Sample> proto;
    Sample s{};
    s.id = 0xDEADBEEF;
    s.delta = -3;
    s.flags = 0x81;
    s.kind = 2;
    s.value = 2.5;
    Buffer out;
    proto.make_datagram(s, out);
    ASSERT_EQ(out.size(), sizeof(Sample));
    const Sample back = proto.build_packet(out.view());
    EXPECT_EQ(back.id, s.id);
    EXPECT_EQ(back.delta, s.delta);
    EXPECT_EQ(back.flags, s.flags);
    EXPECT_EQ(back.kind, s.kind);
    EXPECT_EQ(back.value, s.value);
}

TEST(StructProtocol, BytesAreTheObjectRepresentationInHostByteOrder) {
    const std::uint32_t v = 0x01020304;
    Buffer out;
    unixgram::StructProtocol<std::uint32_t>{}.make_datagram(v, out);
    ASSERT_EQ(out.size(), 4u);
    EXPECT_EQ(std::memcmp(out.data(), &v, sizeof v), 0);
}

TEST(StructProtocol, UnalignedDatagramIsParsed) {
    std::byte storage[sizeof(std::uint64_t) + 1];
    const std::uint64_t v = 0x0102030405060708;
    std::memcpy(storage + 1, &v, sizeof v);
    EXPECT_EQ(unixgram::StructProtocol<std::uint64_t>{}.build_packet(std::span(storage + 1, sizeof v)), v);
}

TEST(StructProtocol, NonDefaultConstructibleTypeRoundTrips) {
    unixgram::StructProtocol<NoDefault> proto;
    Buffer out;
    proto.make_datagram(NoDefault(77), out);
    EXPECT_EQ(proto.build_packet(out.view()).v, 77u);
}

TEST(StructProtocol, ShortDatagramIsAParseError) {
    unixgram::StructProtocol<Sample> proto;
    const std::vector<std::byte> bytes(sizeof(Sample) - 1);
    EXPECT_EQ(parse_error_reason([&] { (void)proto.build_packet(bytes); }), "expected 16 bytes, got 15");
}

TEST(StructProtocol, LongDatagramIsAParseError) {
    unixgram::StructProtocol<Sample> proto;
    const std::vector<std::byte> bytes(sizeof(Sample) + 1);
    EXPECT_EQ(parse_error_reason([&] { (void)proto.build_packet(bytes); }), "expected 16 bytes, got 17");
}

TEST(StructProtocol, EmptyDatagramIsAParseError) {
    try {
        (void)unixgram::StructProtocol<std::uint64_t>{}.build_packet({});
        FAIL() << "no ParseError";
    } catch (const ParseError& e) {
        EXPECT_EQ(e.reason(), "expected 8 bytes, got 0");
        EXPECT_STREQ(e.what(), "Error while parsing data: expected 8 bytes, got 0");
    }
}

}  // namespace
