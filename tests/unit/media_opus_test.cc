// Opus through the jitter buffer with packets lost and reordered, no network: what a call on a
// bad line plays.
#include <gtest/gtest.h>

#include <algorithm>

#include "client/media/opus_audio.h"
#include "media_test_util.h"

namespace kabar::client::media {
namespace {

TEST(MediaOpus, ASweepSurvivesFivePercentLossAndReordering) {
  auto input = sweep(300, 3000);
  OpusSender sender;
  ASSERT_TRUE(sender.ok());
  std::vector<std::vector<std::uint8_t>> packets;
  for (std::size_t i = 0; i + kOpusFrame <= input.size(); i += kOpusFrame)
    packets.push_back(
        sender.encode(std::span<const std::int16_t, kOpusFrame>(&input[i], kOpusFrame)));
  ASSERT_EQ(packets.size(), 150u);

  // Every 20th packet lost (5%); every 7th pair swapped on the way.
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < packets.size(); ++i)
    if (i % 20 != 10) order.push_back(i);
  for (std::size_t i = 3; i + 1 < order.size(); i += 7) std::swap(order[i], order[i + 1]);
  const std::uint64_t lost = packets.size() - order.size();

  OpusReceiver receiver;
  ASSERT_TRUE(receiver.ok());
  std::vector<std::int16_t> played;
  constexpr std::size_t kDelay = 3;  // frames: the playout delay
  std::size_t pulled = 0;
  for (std::size_t k = 0; k < order.size(); ++k) {
    std::uint16_t seq = std::uint16_t(65500 + order[k]);  // across the wrap too
    receiver.push(seq, packets[order[k]]);
    // Frame j is played once packet j + kDelay would have arrived.
    while (pulled + kDelay <= order[k] && pulled < packets.size()) {
      auto pcm = receiver.pull();
      played.insert(played.end(), pcm.begin(), pcm.end());
      ++pulled;
    }
  }
  while (pulled < packets.size()) {
    auto pcm = receiver.pull();
    played.insert(played.end(), pcm.begin(), pcm.end());
    ++pulled;
  }
  EXPECT_EQ(played.size(), input.size());
  EXPECT_EQ(receiver.concealed(), lost);
  EXPECT_EQ(receiver.recovered(), lost);  // the packet after each loss was there
  Track track = follow_sweep(played, 300, 3000);
  EXPECT_GE(track.windows, 50);
  EXPECT_GE(track.matching, track.windows * 85 / 100) << "offset " << track.offset;
}

TEST(MediaOpus, ConcealsWithoutTheNextPacket) {
  OpusSender sender;
  OpusReceiver receiver;
  std::vector<std::int16_t> tone(kOpusFrame, 1000);
  receiver.push(1,
                sender.encode(std::span<const std::int16_t, kOpusFrame>(tone.data(), kOpusFrame)));
  EXPECT_TRUE(receiver.pull().size() == std::size_t(kOpusFrame));
  EXPECT_EQ(receiver.pull().size(), std::size_t(kOpusFrame));  // 2 never came: concealed
  EXPECT_EQ(receiver.concealed(), 1u);
  EXPECT_EQ(receiver.recovered(), 0u);
}

}  // namespace
}  // namespace kabar::client::media
