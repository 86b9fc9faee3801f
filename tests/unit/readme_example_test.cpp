// SPDX-License-Identifier: MIT
// The README's example ("A handler in 20 lines"), compiled verbatim, and its handler run on a real server.

#include <gtest/gtest.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <type_traits>

#include <unixgram/unixgram.hpp>

#include "contract/harness.hpp"  // RunningServer, RawClient: a real server on a temp path
#include "unit/source_root.hpp"  // source_root(): the README is read from the source tree

// The README's program, byte for byte between the markers. Everything it includes is included
// above, so the rename reaches only its main(): gtest_main supplies this program's main(). Only
// main() may end without a return statement, hence the pragma; readme_main() is never called.
#define main readme_main
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wreturn-type"
// BEGIN README EXAMPLE
#include <unixgram/unixgram.hpp>

#include <cctype>

class Upper : public unixgram::DatagramRequestHandler<std::string, std::string> {
public:
    unixgram::Session<std::string> handle(unixgram::Client<std::string>& client) override {
        std::string reply;
        try {
            reply = co_yield unixgram::recv();  // the client's next datagram, parsed as UTF-8 text
        } catch (const unixgram::ParseError& e) {
            reply = e.what();                   // invalid UTF-8: thrown at the co_yield
        }
        for (char& c : reply) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        co_await client.send_packet(reply);
    }
};

int main() {
    Upper handler;
    unixgram::ServerOptions options;
    options.mode = 0660;  // socket file permissions, applied with no window of wider ones
    unixgram::UnixDatagramServer server(unixgram::UnixAddress::pathname("/tmp/upper.sock"),
                                        unixgram::TextProtocol{}, handler, options);
    server.serve_forever();  // until server.shutdown() is called from another thread
}
// END README EXAMPLE
#pragma GCC diagnostic pop
#undef main

namespace {

// readme_main() is compiled, never called: it would serve /tmp/upper.sock forever.
static_assert(std::is_same_v<decltype(readme_main), int()>);

using UpperServer = unixgram::testing::RunningServer<std::string, std::string, unixgram::TextProtocol>;

using unixgram::testing::source_root;

std::string read_file(const std::filesystem::path& file) {
    std::ifstream in(file, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// The text between the line `begin` and the next line `end`, both excluded; "<missing>" if absent.
std::string between_lines(const std::string& text, const std::string& begin, const std::string& end,
                          std::size_t from = 0) {
    const auto open = text.find("\n" + begin + "\n", from);
    if (open == std::string::npos) return "<missing>";
    const auto start = open + begin.size() + 2;
    const auto close = text.find("\n" + end + "\n", start - 1);
    if (close == std::string::npos) return "<missing>";
    return text.substr(start, close + 1 - start);
}

TEST(ReadmeExample, CopyIsTheReadmeBlockByteForByte) {
    const auto root = source_root();
    const auto readme_path = root / "README.md";
    const auto self_path = root / "tests" / "unit" / "readme_example_test.cpp";
    if (!std::filesystem::exists(readme_path) || !std::filesystem::exists(self_path))
        GTEST_SKIP() << "sources not found at " << root;
    const std::string readme = read_file(readme_path);
    const auto section = readme.find("\n## A handler in 20 lines\n");
    ASSERT_NE(section, std::string::npos) << "README.md has no section \"A handler in 20 lines\"";
    const std::string block = between_lines(readme, "```cpp", "```", section);
    const std::string copy = between_lines(read_file(self_path), "// BEGIN README EXAMPLE", "// END README EXAMPLE");
    ASSERT_NE(block, "<missing>");
    ASSERT_NE(copy, "<missing>");
    EXPECT_EQ(copy, block);
}

TEST(ReadmeExample, UpperUpperCasesARequest) {
    Upper handler;
    UpperServer srv(handler);
    auto c = srv.client();
    c.send(srv.address(), "hello, wörld 42");
    EXPECT_EQ(c.recv(), "HELLO, WöRLD 42");  // toupper leaves the bytes of multi-byte characters alone
}

TEST(ReadmeExample, UpperAnswersInvalidUtf8WithTheUpperCasedParseError) {
    Upper handler;
    UpperServer srv(handler);
    auto c = srv.client();
    c.send(srv.address(), "ab\xff");
    EXPECT_EQ(c.recv(), "ERROR WHILE PARSING DATA: INVALID UTF-8 AT BYTE 2");
    c.send(srv.address(), "still serving");
    EXPECT_EQ(c.recv(), "STILL SERVING");
    EXPECT_EQ(srv.server().stats().parse_errors, 1u);
}

}  // namespace
