// SPDX-License-Identifier: MIT
// Shared by the runtime contract tests: the text server and client types, a substring check, an empty task.
#pragma once

#include <string>

#include "contract/harness.hpp"

namespace unixgram::testing {

using Text = RunningServer<std::string, std::string, TextProtocol>;
using TextClient = Client<std::string>;

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

inline Task<> nothing() { co_return; }

}  // namespace unixgram::testing
