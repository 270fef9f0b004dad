// Latency histogram with log-linear buckets (about 1.6% resolution) over microseconds, enough
// for percentiles up to p99.9 without keeping samples.
#pragma once

#include <array>
#include <bit>
#include <cstdint>

namespace kabar::bench {

class Histogram {
 public:
  void add(std::int64_t us) {
    if (us < 0) us = 0;
    ++counts_[index(static_cast<std::uint64_t>(us))];
    ++total_;
    if (static_cast<std::uint64_t>(us) > max_) max_ = us;
  }
  void merge(const Histogram& o) {
    for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += o.counts_[i];
    total_ += o.total_;
    if (o.max_ > max_) max_ = o.max_;
  }
  std::uint64_t count() const { return total_; }
  std::uint64_t max() const { return max_; }
  // The smallest bucket upper bound at or above fraction q of the samples (q in [0, 1]).
  double percentile_us(double q) const {
    if (total_ == 0) return 0;
    auto want = static_cast<std::uint64_t>(q * static_cast<double>(total_) + 0.5);
    if (want == 0) want = 1;
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= want) {
        std::uint64_t hi = upper(i);
        return static_cast<double>(hi < max_ ? hi : max_);
      }
    }
    return static_cast<double>(max_);
  }

 private:
  static constexpr int kSub = 64;  // buckets per power of two, above 128 us
  static constexpr std::size_t kBuckets = 128 + 40 * kSub;
  static std::size_t index(std::uint64_t v) {
    if (v < 128) return v;
    int msb = 63 - std::countl_zero(v);  // >= 7
    int shift = msb - 6;
    std::size_t i = 128 + static_cast<std::size_t>(msb - 7) * kSub + ((v >> shift) - kSub);
    return i < kBuckets ? i : kBuckets - 1;
  }
  static std::uint64_t upper(std::size_t i) {
    if (i < 128) return i;
    std::size_t k = (i - 128) / kSub, sub = (i - 128) % kSub;
    int shift = static_cast<int>(k) + 1;
    return ((kSub + sub + 1) << shift) - 1;
  }
  std::array<std::uint64_t, kBuckets> counts_{};
  std::uint64_t total_ = 0;
  std::uint64_t max_ = 0;
};

}  // namespace kabar::bench
