// The engine's file and packet code alone: WAV in and out, RTP headers, receive statistics.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "client/media/rtp.h"
#include "client/media/wav.h"

namespace kabar::client::media {
namespace {

TEST(MediaWav, MonoAtTheEngineRateComesBackAsIs) {
  std::vector<std::int16_t> samples = {0, 1000, -1000, 32767, -32768};
  auto bytes = make_wav(48000, 1, samples);
  WavAudio audio;
  std::string error;
  ASSERT_TRUE(parse_wav(bytes, 48000, audio, error)) << error;
  EXPECT_EQ(audio.samples, samples);
}

TEST(MediaWav, StereoIsDownmixed) {
  std::vector<std::int16_t> interleaved = {100, 300, -200, -400};
  WavAudio audio;
  std::string error;
  ASSERT_TRUE(parse_wav(make_wav(48000, 2, interleaved), 48000, audio, error)) << error;
  EXPECT_EQ(audio.samples, (std::vector<std::int16_t>{200, -300}));
}

TEST(MediaWav, OtherRatesAreResampled) {
  std::vector<std::int16_t> samples(24000, 500);  // one second at 24 kHz
  WavAudio audio;
  std::string error;
  ASSERT_TRUE(parse_wav(make_wav(24000, 1, samples), 48000, audio, error)) << error;
  EXPECT_EQ(audio.samples.size(), 48000u);
  EXPECT_EQ(audio.samples[1001], 500);
}

TEST(MediaWav, RefusesWhatItCannotRead) {
  WavAudio audio;
  std::string error;
  std::vector<std::uint8_t> junk = {'R', 'I', 'F', 'F', 0, 0, 0, 0, 'A', 'V', 'I', ' '};
  EXPECT_FALSE(parse_wav(junk, 48000, audio, error));
  auto eight_bit = make_wav(48000, 1, std::vector<std::int16_t>(10));
  eight_bit[34] = 8;  // bits per sample
  EXPECT_FALSE(parse_wav(eight_bit, 48000, audio, error));
  EXPECT_EQ(error, "only 16-bit PCM WAV is supported");
  EXPECT_FALSE(read_wav("/nonexistent/x.wav", 48000, audio, error));
}

TEST(MediaWav, WriterFixesTheHeaderOnClose) {
  auto path = std::filesystem::temp_directory_path() /
              ("kabar-media-wav-" + std::to_string(::getpid()) + ".wav");
  std::string error;
  {
    WavWriter writer;
    ASSERT_TRUE(writer.open(path.string(), 48000, error)) << error;
    std::vector<std::int16_t> a(960, 7), b(480, -7);
    writer.write(a);
    writer.write(b);
    EXPECT_EQ(writer.samples_written(), 1440u);
  }  // the destructor closes
  WavAudio audio;
  ASSERT_TRUE(read_wav(path.string(), 48000, audio, error)) << error;
  ASSERT_EQ(audio.samples.size(), 1440u);
  EXPECT_EQ(audio.samples[0], 7);
  EXPECT_EQ(audio.samples[1439], -7);
  EXPECT_EQ(std::filesystem::file_size(path), 44u + 2 * 1440);
  std::filesystem::remove(path);
}

TEST(MediaRtp, HeaderRoundTrips) {
  RtpHeader h{true, 111, 65535, 0xDEADBEEF, 0x01020304};
  std::vector<std::uint8_t> payload = {1, 2, 3};
  auto packet = write_rtp(h, payload);
  ASSERT_EQ(packet.size(), 15u);
  EXPECT_EQ(classify(packet), PacketKind::kRtp);
  EXPECT_FALSE(is_rtcp(packet));
  auto parsed = parse_rtp(packet);
  ASSERT_TRUE(parsed);
  EXPECT_TRUE(parsed->header.marker);
  EXPECT_EQ(parsed->header.payload_type, 111);
  EXPECT_EQ(parsed->header.sequence, 65535);
  EXPECT_EQ(parsed->header.timestamp, 0xDEADBEEF);
  EXPECT_EQ(parsed->header.ssrc, 0x01020304u);
  EXPECT_EQ(std::vector<std::uint8_t>(parsed->payload.begin(), parsed->payload.end()), payload);
}

TEST(MediaRtp, SkipsCsrcsExtensionAndPadding) {
  // A browser's packet: one CSRC, a one-word extension, 2 bytes of padding.
  std::vector<std::uint8_t> p = {0xB1, 0x6F, 0, 1, 0,    0,    0, 2,
                                 0,    0,    0, 3,                    // header, X, P, CC=1
                                 9,    9,    9, 9,                    // CSRC
                                 0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0,  // extension
                                 42,   43,                            // payload
                                 0,    2};                            // padding
  auto parsed = parse_rtp(p);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->header.payload_type, 111);
  EXPECT_EQ(std::vector<std::uint8_t>(parsed->payload.begin(), parsed->payload.end()),
            (std::vector<std::uint8_t>{42, 43}));
  p[19] = 9;  // extension longer than the packet
  EXPECT_FALSE(parse_rtp(p));
  EXPECT_FALSE(parse_rtp(std::vector<std::uint8_t>(11, 0x80)));
}

TEST(MediaRtp, DemultiplexesByFirstByte) {
  EXPECT_EQ(classify(std::vector<std::uint8_t>{0x00, 0x01}), PacketKind::kStun);
  EXPECT_EQ(classify(std::vector<std::uint8_t>{22, 0xFE}), PacketKind::kDtls);
  EXPECT_EQ(classify(std::vector<std::uint8_t>{0x80, 200}), PacketKind::kRtp);
  EXPECT_TRUE(is_rtcp(std::vector<std::uint8_t>{0x80, 200}));
  EXPECT_EQ(classify(std::vector<std::uint8_t>{70}), PacketKind::kOther);
}

TEST(MediaRtp, ReceiveStatsCountLossAcrossTheWrap) {
  ReceiveStats s;
  for (std::uint32_t i = 0; i < 10; ++i) {
    std::uint16_t seq = std::uint16_t(65530 + i);
    if (i == 3 || i == 7) continue;  // lost
    s.on_packet(seq, i * 960, i * 960);
  }
  EXPECT_EQ(s.received(), 8u);
  EXPECT_EQ(s.lost(), 2u);
  EXPECT_DOUBLE_EQ(s.jitter(), 0.0);
  s.on_packet(65531, 960, 20000);  // a duplicate of an old one: no negative loss
  EXPECT_EQ(s.lost(), 1u);
  EXPECT_GT(s.jitter(), 0.0);
}

}  // namespace
}  // namespace kabar::client::media

namespace kabar::client::media {
namespace {

TEST(MediaRtcp, SenderReportRoundTrips) {
  SenderInfo sender{0x0123456789ABCDEFull, 48000, 50, 4000};
  ReportBlock block;
  block.ssrc = 0xCAFE;
  block.fraction_lost = 12;
  block.cumulative_lost = -3;
  block.highest_sequence = 70000;
  block.jitter = 96;
  block.last_sr = 0x456789AB;
  block.delay_since_sr = 65536;
  auto packet = write_rtcp_report(0xBEEF, sender, block, "kabar-test");
  ASSERT_EQ(packet.size() % 4, 0u);
  EXPECT_TRUE(is_rtcp(packet));
  EXPECT_EQ(packet[1], 200);
  auto summary = parse_rtcp(packet);
  ASSERT_TRUE(summary);
  EXPECT_EQ(summary->sender_ntp, sender.ntp);
  ASSERT_TRUE(summary->report);
  EXPECT_EQ(summary->report->ssrc, 0xCAFEu);
  EXPECT_EQ(summary->report->fraction_lost, 12);
  EXPECT_EQ(summary->report->cumulative_lost, -3);
  EXPECT_EQ(summary->report->highest_sequence, 70000u);
  EXPECT_EQ(summary->report->last_sr, 0x456789ABu);
  packet.pop_back();
  EXPECT_FALSE(parse_rtcp(packet));
}

TEST(MediaRtcp, ReceiverReportFromTheStats) {
  ReceiveStats stats;
  for (std::uint16_t s = 0; s < 10; ++s)
    if (s != 4) stats.on_packet(s, s * 960u, s * 960u);
  ReportBlock r = stats.report(7);
  EXPECT_EQ(r.cumulative_lost, 1);
  EXPECT_EQ(r.fraction_lost, 256 / 10);
  EXPECT_EQ(r.highest_sequence, 9u);
  EXPECT_EQ(stats.report(7).fraction_lost, 0);  // nothing new since the last report
  auto packet = write_rtcp_report(1, std::nullopt, r, "x");
  EXPECT_EQ(packet[1], 201);
  auto summary = parse_rtcp(packet);
  ASSERT_TRUE(summary && summary->report);
  EXPECT_FALSE(summary->sender_ntp);
  EXPECT_EQ(summary->report->cumulative_lost, 1);
}

}  // namespace
}  // namespace kabar::client::media
