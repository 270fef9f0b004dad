// The sound devices' frame logic (audio_device.h) without a device; the ALSA path itself runs in
// tests/integration/test_kabar_call_devices.py through ALSA's file plugin.
#include <gtest/gtest.h>

#include <array>
#include <numeric>

#include "client/media/audio_device.h"

namespace kabar::client::media {
namespace {

using Frame = std::array<std::int16_t, kOpusFrame>;

// Samples numbered from `first`, as a device would hand them out.
std::vector<std::int16_t> ramp(int first, std::size_t n) {
  std::vector<std::int16_t> v(n);
  std::iota(v.begin(), v.end(), std::int16_t(first));
  return v;
}

TEST(MediaCaptureRing, HandsOutWholeFramesFromPiecesInOrder) {
  CaptureRing ring(4 * kOpusFrame);
  Frame f;
  // Periods of 10 ms, 7 ms and odd sizes: frames come out whole and in order.
  int next = 0;
  for (std::size_t piece : {480u, 336u, 144u, 1u, 959u, 480u, 480u}) {
    ring.push(ramp(next, piece));
    next += int(piece);
  }
  for (int k = 0; k < 3; ++k) {
    ASSERT_TRUE(ring.pop(f)) << k;
    EXPECT_EQ(f.front(), std::int16_t(k * kOpusFrame));
    EXPECT_EQ(f.back(), std::int16_t(k * kOpusFrame + kOpusFrame - 1));
  }
  EXPECT_EQ(ring.size(), 0u);
  EXPECT_EQ(ring.dropped(), 0u);
  EXPECT_EQ(ring.silent_frames(), 0u);
}

TEST(MediaCaptureRing, SilenceWhileAFrameIsNotThereAndWhatIsThereStays) {
  CaptureRing ring;
  Frame f;
  f.fill(7);
  EXPECT_FALSE(ring.pop(f));
  EXPECT_EQ(f, Frame{});
  ring.push(ramp(1, 500));
  EXPECT_FALSE(ring.pop(f));
  EXPECT_EQ(ring.size(), 500u);
  ring.push(ramp(501, 460));
  ASSERT_TRUE(ring.pop(f));
  EXPECT_EQ(f.front(), 1);
  EXPECT_EQ(f.back(), 960);
  EXPECT_EQ(ring.silent_frames(), 2u);
}

TEST(MediaCaptureRing, DropsTheOldestBeyondItsBound) {
  CaptureRing ring(2 * kOpusFrame);
  Frame f;
  // Three frames' worth, in pieces that wrap the circle: the first frame goes.
  for (int k = 0; k < 6; ++k) ring.push(ramp(k * 480, 480));
  EXPECT_EQ(ring.size(), 2u * kOpusFrame);
  EXPECT_EQ(ring.dropped(), std::uint64_t(kOpusFrame));
  ASSERT_TRUE(ring.pop(f));
  EXPECT_EQ(f.front(), std::int16_t(kOpusFrame));
  // One piece larger than the whole ring keeps its newest samples.
  ring.push(ramp(10000, 3 * kOpusFrame));
  ASSERT_TRUE(ring.pop(f));
  EXPECT_EQ(f.front(), std::int16_t(10000 + kOpusFrame));
  ASSERT_TRUE(ring.pop(f));
  EXPECT_EQ(f.back(), std::int16_t(10000 + 3 * kOpusFrame - 1));
  EXPECT_FALSE(ring.pop(f));
}

TEST(MediaReadPacer, AllowsTheRateFromTheStartWithABurstAtMost) {
  ReadPacer pacer(48000, 1920);
  pacer.start(1000000);
  EXPECT_EQ(pacer.allowance(1000000), 0u);
  EXPECT_EQ(pacer.allowance(1020000), 960u);
  pacer.took(960);
  EXPECT_EQ(pacer.allowance(1020000), 0u);
  // 10 ms later: half a frame; reading less than allowed leaves the credit.
  EXPECT_EQ(pacer.allowance(1030000), 480u);
  pacer.took(100);
  EXPECT_EQ(pacer.allowance(1030000), 380u);
  // A long stall: at most the burst, and the credit above it is gone for good.
  EXPECT_EQ(pacer.allowance(3000000), 1920u);
  pacer.took(1920);
  EXPECT_EQ(pacer.allowance(3000000), 0u);
  EXPECT_EQ(pacer.allowance(3020000), 960u);
}

TEST(MediaReadPacer, NoRoundingDriftOverAnHour) {
  ReadPacer pacer(48000, 1920);
  pacer.start(0);
  std::uint64_t total = 0;
  // Odd tick lengths (10.3 ms) over an hour: exactly the rate in total.
  for (std::int64_t t = 10300; t <= 3600000000; t += 10300) {
    std::size_t n = pacer.allowance(t);
    pacer.took(n);
    total += n;
  }
  EXPECT_NEAR(double(total), 48000.0 * 3600, 48000 * 0.0103 + 1);
}

TEST(MediaAudioDevice, ANameAlsaDoesNotKnowIsAnErrorNotACrash) {
  std::string error;
  EXPECT_EQ(AudioCapture::open("kabar-no-such-pcm", 0, error), nullptr);
  EXPECT_NE(error.find("sound device 'kabar-no-such-pcm'"), std::string::npos) << error;
  error.clear();
  EXPECT_EQ(AudioPlayback::open("kabar-no-such-pcm", error), nullptr);
  EXPECT_NE(error.find("cannot open"), std::string::npos) << error;
}

}  // namespace
}  // namespace kabar::client::media
