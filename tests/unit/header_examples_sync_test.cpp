// SPDX-License-Identifier: MIT
// Keeps the examples of header_examples_test.cpp equal to the \code blocks of the public headers, and checks
// that every header with an example has its copy there.

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "unit/source_root.hpp"

namespace {

/// Headers whose example in header_examples_test.cpp is a corrected version that the header does not carry
/// yet. Remove an entry once the header's \code block has been replaced with that text.
const std::set<std::string> kHeadersWithStaleExamples = {};

using unixgram::testing::source_root;

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

/// The \code block of a header's doc comment, dedented; empty when it has none.
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
    return block.empty() ? std::string() : dedent(block);
}

/// The examples in `self` (header_examples_test.cpp), by header name, dedented.
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
    EXPECT_EQ(examples.size(), 21u);
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

TEST(HeaderExamples, EveryHeaderWithAnExampleHasACopyHere) {
    const auto root = source_root();
    const auto self = root / "tests" / "unit" / "header_examples_test.cpp";
    if (!std::filesystem::exists(self)) GTEST_SKIP() << "sources not found at " << root;
    const auto examples = test_examples(self);
    std::set<std::string> with_example;
    for (const auto& entry : std::filesystem::directory_iterator(root / "include" / "unixgram")) {
        if (entry.path().extension() == ".hpp" && !header_example(entry.path()).empty())
            with_example.insert(entry.path().filename().string());
    }
    std::set<std::string> copied;
    for (const auto& entry : examples) copied.insert(entry.first);
    EXPECT_EQ(copied, with_example);
}

}  // namespace
