// SPDX-License-Identifier: MIT
// LatencyHistogram: round-trip times in constant memory, for unixgram-bench.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

/// Round-trip times in nanoseconds, HdrHistogram-style: values below 2^kSubBits have a bucket each, and every
/// power of two above has 2^(kSubBits-1) equal buckets, so a bucket's midpoint is within 0.4 % of any value in it.
class LatencyHistogram {
public:
    void record(std::uint64_t ns) noexcept {
        ns = std::min(ns, kMaxValue);
        ++counts_[index(ns)];
        ++count_;
        sum_ += ns;
        max_ = std::max(max_, ns);
    }

    void merge(const LatencyHistogram& other) noexcept {
        for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
        count_ += other.count_;
        sum_ += other.sum_;
        max_ = std::max(max_, other.max_);
    }

    std::uint64_t count() const noexcept { return count_; }
    double mean_ns() const noexcept { return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) : 0.0; }
    double max_ns() const noexcept { return static_cast<double>(max_); }

    /// The smallest recorded value with at least q of the values at or below it (its bucket's midpoint).
    double quantile_ns(double q) const noexcept {
        if (count_ == 0) return 0.0;
        const auto rank = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_))));
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < kBuckets; ++i) {
            seen += counts_[i];
            if (seen >= rank) {
                const auto [low, width] = bucket(i);
                return std::min(static_cast<double>(low) + static_cast<double>(width - 1) / 2.0, max_ns());
            }
        }
        return max_ns();
    }

private:
    static constexpr int kSubBits = 8;
    static constexpr std::uint64_t kHalf = std::uint64_t{1} << (kSubBits - 1);
    static constexpr int kMaxBits = 40;  // 2^40 ns, 18 minutes: anything longer is clamped
    static constexpr std::uint64_t kMaxValue = (std::uint64_t{1} << kMaxBits) - 1;
    static constexpr std::size_t kBuckets = (kMaxBits - kSubBits + 2) * kHalf;

    static std::size_t index(std::uint64_t v) noexcept {
        if (v < 2 * kHalf) return static_cast<std::size_t>(v);
        const int shift = std::bit_width(v) - kSubBits;  // >= 1; leaves a mantissa in [kHalf, 2*kHalf)
        return static_cast<std::size_t>(static_cast<std::uint64_t>(shift) * kHalf + (v >> shift));
    }

    static std::pair<std::uint64_t, std::uint64_t> bucket(std::size_t i) noexcept {
        if (i < 2 * kHalf) return {i, 1};
        const std::uint64_t shift = i / kHalf - 1;
        const std::uint64_t mantissa = i - shift * kHalf;
        return {mantissa << shift, std::uint64_t{1} << shift};
    }

    std::vector<std::uint64_t> counts_ = std::vector<std::uint64_t>(kBuckets);
    std::uint64_t count_ = 0;
    std::uint64_t sum_ = 0;
    std::uint64_t max_ = 0;
};
