// SPDX-License-Identifier: MIT
// The usage examples of the public headers, compiled (and run where they need no server).
//
// Each example sits between "// BEGIN EXAMPLE <header>" and "// END EXAMPLE" with the text of the
// header's \code block, line for line; HeaderExamples.TextMatchesTheHeaders checks that they agree.

#undef NDEBUG  // the examples check themselves with assert(), in every build type
#include <cassert>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include "unixgram/address.hpp"
#include "unixgram/buffer.hpp"
#include "unixgram/client.hpp"
#include "unixgram/errors.hpp"
#include "unixgram/handler.hpp"
#include "unixgram/json_protocol.hpp"
#include "unixgram/protocol.hpp"
#include "unixgram/raw_protocol.hpp"
#include "unixgram/session.hpp"
#include "unixgram/struct_protocol.hpp"
#include "unixgram/text_protocol.hpp"

namespace {

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

// errors.hpp: compiled, not run (it needs a server). NOTE: this is the corrected example; the one
// in errors.hpp has a co_await inside a catch block, which C++20 forbids ([expr.await]/2), and does
// not compile. Until errors.hpp carries this text, TextMatchesTheHeaders expects them to differ.
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
static_assert(!std::is_abstract_v<ErrorsExample>);

TEST(HeaderExamples, RawProtocol) {
    // BEGIN EXAMPLE raw_protocol.hpp
    unixgram::RawProtocol raw;
    unixgram::Buffer out;
    raw.make_datagram(unixgram::Bytes{std::byte{0x01}, std::byte{0xff}}, out);
    unixgram::Bytes back = raw.build_packet(out.view());
    assert(back == (unixgram::Bytes{std::byte{0x01}, std::byte{0xff}}));
    assert(raw.build_packet({}).empty());  // an empty datagram is a valid request
    // END EXAMPLE
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

// --- keeping the copies above equal to the headers --------------------------------------------

/// Headers whose example above is a corrected version that the header does not carry yet.
/// Remove an entry once the header's \code block has been replaced with the text above.
const std::set<std::string> kHeadersWithStaleExamples = {};

std::filesystem::path source_root() {
#ifdef UNIXGRAM_SOURCE_ROOT
    return UNIXGRAM_SOURCE_ROOT;
#else
    return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
#endif
}

std::vector<std::string> read_lines(const std::filesystem::path& file) {
    std::ifstream in(file);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
}

/// The lines with their common leading whitespace removed, joined by '\n'.
std::string dedent(const std::vector<std::string>& lines) {
    std::size_t indent = std::string::npos;
    for (const auto& l : lines) {
        if (auto first = l.find_first_not_of(' '); first != std::string::npos) indent = std::min(indent, first);
    }
    std::string out;
    for (const auto& l : lines) out += (l.size() > indent ? l.substr(indent) : std::string()) + "\n";
    return out;
}

/// The \code block of a header's doc comment, dedented.
std::string header_example(const std::filesystem::path& header) {
    std::vector<std::string> block;
    bool inside = false;
    for (const auto& line : read_lines(header)) {
        std::string_view l = line;
        if (!l.starts_with("///")) {
            if (inside) break;
            continue;
        }
        l.remove_prefix(3);
        if (l.find("\\endcode") != std::string_view::npos) break;
        if (inside) block.emplace_back(l);
        if (l.find("\\code") != std::string_view::npos) inside = true;
    }
    return dedent(block);
}

/// The examples in this file, by header name, dedented.
std::map<std::string, std::string> test_examples(const std::filesystem::path& self) {
    std::map<std::string, std::string> examples;
    std::string current;
    std::vector<std::string> block;
    for (const auto& line : read_lines(self)) {
        std::string_view l = line;
        const auto text = l.find_first_not_of(' ');
        const std::string_view code = text == std::string_view::npos ? std::string_view() : l.substr(text);
        if (code.starts_with("// BEGIN EXAMPLE ")) {
            current = std::string(code.substr(17));
            block.clear();
        } else if (code == "// END EXAMPLE" && !current.empty()) {
            examples[current] = dedent(block);
            current.clear();
        } else if (!current.empty()) {
            block.push_back(line);
        }
    }
    return examples;
}

TEST(HeaderExamples, TextMatchesTheHeaders) {
    const auto root = source_root();
    const auto self = root / "tests" / "unit" / "header_examples_test.cpp";
    if (!std::filesystem::exists(self)) GTEST_SKIP() << "sources not found at " << root;
    const auto examples = test_examples(self);
    EXPECT_EQ(examples.size(), 8u);
    for (const auto& [header, copy] : examples) {
        SCOPED_TRACE(header);
        const auto path = root / "include" / "unixgram" / header;
        ASSERT_TRUE(std::filesystem::exists(path)) << path;
        if (kHeadersWithStaleExamples.contains(header)) {
            EXPECT_NE(header_example(path), copy) << header << " now carries the example of this test: remove it from "
                                                  << "kHeadersWithStaleExamples";
        } else {
            EXPECT_EQ(header_example(path), copy);
        }
    }
}

}  // namespace
