// Test audio for the media tests: a linear sine sweep and its frequency track.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <vector>

namespace kabar::client::media {

inline constexpr int kRate = 48000;
inline constexpr double kSweepSeconds = 3.0;

// A linear sweep from f0 to f1 Hz.
inline std::vector<std::int16_t> sweep(double f0, double f1) {
  std::size_t n = std::size_t(kSweepSeconds * kRate);
  std::vector<std::int16_t> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    double t = double(i) / kRate;
    double phase = 2 * M_PI * (f0 * t + (f1 - f0) * t * t / (2 * kSweepSeconds));
    out[i] = std::int16_t(12000 * std::sin(phase));
  }
  return out;
}

// The frequency of a window from its upward zero crossings (interpolated); 0 when too few.
inline double frequency(const std::int16_t* s, std::size_t n) {
  double first = -1, last = -1;
  int crossings = 0;
  for (std::size_t i = 1; i < n; ++i) {
    if (s[i - 1] < 0 && s[i] >= 0) {
      double x = double(i - 1) + double(-s[i - 1]) / double(s[i] - s[i - 1]);
      if (first < 0) first = x;
      last = x;
      ++crossings;
    }
  }
  if (crossings < 3) return 0;
  return double(crossings - 1) * kRate / (last - first);
}

// How many 50 ms windows of `received` follow the sweep f0 -> f1 within 5% (+10 Hz), with the
// received audio shifted by the best offset into the sweep (the first packets may be lost).
struct Track {
  int windows = 0;
  int matching = 0;
  double offset = 0;
};
inline Track follow_sweep(const std::vector<std::int16_t>& received, double f0, double f1) {
  constexpr std::size_t kWindow = kRate / 20;
  Track best;
  for (double offset = -0.2; offset <= 1.0; offset += 0.005) {
    Track t;
    t.offset = offset;
    // Windows wholly inside the sweep, away from its ends.
    for (double start = 0.05; start + 0.05 <= kSweepSeconds - 0.05; start += 0.05) {
      double at = start - offset;  // the window's start in the received audio
      if (at < 0) continue;
      auto i = std::size_t(at * kRate);
      if (i + kWindow > received.size()) break;
      ++t.windows;
      double expected = f0 + (f1 - f0) * (start + 0.025) / kSweepSeconds;
      double got = frequency(received.data() + i, kWindow);
      if (std::abs(got - expected) <= 0.05 * expected + 10) ++t.matching;
    }
    if (t.matching > best.matching) best = t;
  }
  return best;
}

}  // namespace kabar::client::media
