#include <gtest/gtest.h>

#include "client/media/jitter_buffer.h"

namespace kabar::client::media {
namespace {

std::vector<std::uint8_t> payload(std::uint16_t seq) {
  return {std::uint8_t(seq >> 8), std::uint8_t(seq)};
}

// Pops `n` frames: the sequence numbers played, -1 for a concealed one.
std::vector<int> play(JitterBuffer& jb, int n, int* concealed) {
  std::vector<int> out;
  for (int i = 0; i < n; ++i) {
    auto f = jb.pop();
    if (!f) break;
    if (f->missing) {
      ++*concealed;
      out.push_back(-1);
    } else {
      EXPECT_EQ(f->payload, payload(f->sequence));
      out.push_back(f->sequence);
    }
  }
  return out;
}

TEST(MediaJitterBuffer, NothingBeforeTheFirstPacket) {
  JitterBuffer jb;
  EXPECT_FALSE(jb.pop());
}

TEST(MediaJitterBuffer, ReordersAndConcealsTheLost) {
  JitterBuffer jb;
  for (std::uint16_t s : {100, 102, 101, 104, 105, 103, 108}) jb.push(s, payload(s));
  int concealed = 0;
  EXPECT_EQ(play(jb, 9, &concealed), (std::vector<int>{100, 101, 102, 103, 104, 105, -1, -1, 108}));
  EXPECT_EQ(concealed, 2);
  EXPECT_EQ(jb.size(), 0u);
}

TEST(MediaJitterBuffer, DropsLateAndDuplicatePackets) {
  JitterBuffer jb;
  jb.push(10, payload(10));
  EXPECT_EQ(jb.push(10, payload(10)), JitterBuffer::Push::kDuplicate);
  int concealed = 0;
  play(jb, 2, &concealed);  // 10, then 11 concealed
  EXPECT_EQ(jb.push(11, payload(11)), JitterBuffer::Push::kLate);
  EXPECT_EQ(jb.push(12, payload(12)), JitterBuffer::Push::kQueued);
  EXPECT_EQ(play(jb, 1, &concealed), std::vector<int>{12});
  EXPECT_EQ(concealed, 1);
}

TEST(MediaJitterBuffer, FollowsTheSequenceAcrossTheWrap) {
  JitterBuffer jb;
  for (std::uint16_t s : {65534, 0, 65535, 1}) jb.push(s, payload(s));
  int concealed = 0;
  EXPECT_EQ(play(jb, 4, &concealed), (std::vector<int>{65534, 65535, 0, 1}));
  EXPECT_EQ(concealed, 0);
}

TEST(MediaJitterBuffer, RestartsOnAJumpBeyondItsCapacity) {
  JitterBuffer jb(8);
  jb.push(5, payload(5));
  EXPECT_EQ(jb.push(5000, payload(5000)), JitterBuffer::Push::kResync);
  jb.push(5001, payload(5001));
  int concealed = 0;
  EXPECT_EQ(play(jb, 2, &concealed), (std::vector<int>{5000, 5001}));
}

}  // namespace
}  // namespace kabar::client::media
