// SPDX-License-Identifier: MIT
// RateLimitedLog: at most a few lines per second for one kind of event, with a count of the rest.
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <string_view>

namespace unixgram::detail {

class RateLimitedLog {
public:
    static constexpr int kBurst = 5;
    static constexpr auto kWindow = std::chrono::seconds(1);

    /// Logs `message` at `level` unless kBurst lines were logged in the current window; the first
    /// line after a suppressed stretch says how many were suppressed. Formats nothing when the
    /// level is off.
    template <class... Args>
    void log(spdlog::logger& logger, spdlog::level::level_enum level, spdlog::format_string_t<Args...> fmt,
             Args&&... args) {
        if (!logger.should_log(level)) return;
        const auto now = std::chrono::steady_clock::now();
        if (now - window_start_ >= kWindow) {
            window_start_ = now;
            in_window_ = 0;
        }
        if (in_window_ >= kBurst) {
            ++suppressed_;
            return;
        }
        ++in_window_;
        logger.log(level, fmt, std::forward<Args>(args)...);
        if (suppressed_ > 0) {
            logger.log(level, "({} similar messages suppressed)", suppressed_);
            suppressed_ = 0;
        }
    }

private:
    std::chrono::steady_clock::time_point window_start_{};
    int in_window_ = 0;
    std::uint64_t suppressed_ = 0;
};

}  // namespace unixgram::detail
