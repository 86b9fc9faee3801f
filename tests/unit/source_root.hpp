// SPDX-License-Identifier: MIT
// The source tree, for the unit tests that read the project's own files (the README, the headers).
#pragma once

#include <filesystem>

namespace unixgram::testing {

/// Where the sources are: meson passes UNIXGRAM_SOURCE_ROOT to the unit tests; else from this file's path.
inline std::filesystem::path source_root() {
#ifdef UNIXGRAM_SOURCE_ROOT
    return UNIXGRAM_SOURCE_ROOT;
#else
    return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
#endif
}

}  // namespace unixgram::testing
