// VP8 RTP payloads and Y4M files alone.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <numeric>

#include "client/media/vp8.h"
#include "client/media/y4m.h"

namespace kabar::client::media {
namespace {

std::vector<std::uint8_t> bytes(std::size_t n) {
  std::vector<std::uint8_t> v(n);
  std::iota(v.begin(), v.end(), std::uint8_t(0));
  return v;
}

TEST(MediaVp8, PacketizesIntoEqualPartsAndBack) {
  auto frame = bytes(2500);
  auto parts = packetize_vp8(frame, 1100);
  ASSERT_EQ(parts.size(), 3u);
  for (const auto& p : parts) EXPECT_LE(p.size(), 1100u);
  EXPECT_EQ(parts[0][0], 0x10);  // S
  EXPECT_EQ(parts[1][0], 0x00);
  Vp8Assembler assembler;
  // Out of order: the frame comes out with the last missing piece.
  EXPECT_FALSE(assembler.push(11, 9000, false, parts[1]));
  EXPECT_FALSE(assembler.push(12, 9000, true, parts[2]));
  auto whole = assembler.push(10, 9000, false, parts[0]);
  ASSERT_TRUE(whole);
  EXPECT_EQ(*whole, frame);
  EXPECT_EQ(assembler.dropped(), 0u);
  EXPECT_FALSE(assembler.push(10, 9000, false, parts[0]));  // a duplicate of a finished frame
}

TEST(MediaVp8, AFrameMissingAPieceIsDropped) {
  auto parts = packetize_vp8(bytes(2000), 1100);
  Vp8Assembler assembler;
  EXPECT_FALSE(assembler.push(1, 100, false, parts[0]));  // its marker packet is lost
  auto next = packetize_vp8(bytes(10));
  auto frame = assembler.push(3, 3100, true, next[0]);
  ASSERT_TRUE(frame);
  EXPECT_EQ(frame->size(), 10u);
  EXPECT_EQ(assembler.dropped(), 1u);
  EXPECT_FALSE(assembler.push(2, 100, true, parts[1]));  // too late
}

TEST(MediaVp8, AFrameLostWholeIsCounted) {
  // One packet per frame: frame 2 (sequence 21) never arrives, so frame 3 refers to a frame the
  // decoder does not have. It still comes out (a key frame would decode), counted as a drop.
  auto one = packetize_vp8(bytes(300));
  Vp8Assembler assembler;
  ASSERT_TRUE(assembler.push(20, 3000, true, one[0]));
  ASSERT_TRUE(assembler.push(22, 9000, true, one[0]));
  EXPECT_EQ(assembler.dropped(), 1u);
  ASSERT_TRUE(assembler.push(23, 12000, true, one[0]));  // consecutive again
  EXPECT_EQ(assembler.dropped(), 1u);
  // Sequence numbers wrap.
  Vp8Assembler wrap;
  ASSERT_TRUE(wrap.push(65535, 3000, true, one[0]));
  ASSERT_TRUE(wrap.push(0, 6000, true, one[0]));
  EXPECT_EQ(wrap.dropped(), 0u);
}

TEST(MediaVp8, ReadsTheDescriptorExtensions) {
  // X, then I with a 15-bit picture ID, L and T: five descriptor bytes before the data.
  std::vector<std::uint8_t> p = {0x90, 0xE0, 0x81, 0x23, 0x05, 0x40, 0xAA, 0xBB};
  auto vp8 = parse_vp8(p);
  ASSERT_TRUE(vp8);
  EXPECT_TRUE(vp8->start);
  EXPECT_EQ(std::vector<std::uint8_t>(vp8->data.begin(), vp8->data.end()),
            (std::vector<std::uint8_t>{0xAA, 0xBB}));
  EXPECT_FALSE(parse_vp8(std::vector<std::uint8_t>{0x90}));
  EXPECT_TRUE(is_vp8_keyframe(std::vector<std::uint8_t>{0x10}));
  EXPECT_FALSE(is_vp8_keyframe(std::vector<std::uint8_t>{0x11}));
}

TEST(MediaY4m, WritesAndReadsFrames) {
  auto path = std::filesystem::temp_directory_path() /
              ("kabar-media-y4m-" + std::to_string(::getpid()) + ".y4m");
  VideoFrame f{4, 2, {}};
  f.data = bytes(VideoFrame::size(4, 2));
  ASSERT_EQ(f.data.size(), 12u);
  std::string error;
  {
    Y4mWriter writer;
    ASSERT_TRUE(writer.open(path.string(), error)) << error;
    const std::uint8_t* planes[3] = {f.data.data(), f.data.data() + 8, f.data.data() + 10};
    const int strides[3] = {4, 2, 2};
    writer.write(4, 2, planes, strides);
    writer.write(4, 2, planes, strides);
    EXPECT_EQ(writer.frames(), 2u);
  }
  Y4mReader reader;
  ASSERT_TRUE(reader.open(path.string(), error)) << error;
  EXPECT_EQ(reader.width(), 4);
  EXPECT_EQ(reader.fps_num(), 30);
  VideoFrame got;
  ASSERT_TRUE(reader.read(got));
  EXPECT_EQ(got.data, f.data);
  ASSERT_TRUE(reader.read(got));
  EXPECT_FALSE(reader.read(got));
  std::filesystem::remove(path);
}

TEST(MediaY4m, RefusesOtherChromaFormats) {
  auto path = std::filesystem::temp_directory_path() /
              ("kabar-media-y4m444-" + std::to_string(::getpid()) + ".y4m");
  std::ofstream(path) << "YUV4MPEG2 W4 H2 F25:1 C444\n";
  Y4mReader reader;
  std::string error;
  EXPECT_FALSE(reader.open(path.string(), error));
  EXPECT_NE(error.find("4:2:0"), std::string::npos);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace kabar::client::media
