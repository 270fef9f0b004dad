// Opus for calls (RFC 6716, RFC 7587): 48 kHz mono, 20 ms frames. The sender encodes with
// in-band FEC; the receiver plays out of the jitter buffer, recovering a lost frame from the
// next packet's FEC when that packet is already here, else concealing it (PLC).
#pragma once

#include <opus/opus.h>

#include <cstdint>
#include <span>
#include <vector>

#include "client/media/jitter_buffer.h"

namespace kabar::client::media {

inline constexpr int kOpusRate = 48000;
inline constexpr int kOpusFrame = 960;  // 20 ms

class OpusSender {
 public:
  explicit OpusSender(int bitrate = 32000);
  ~OpusSender();
  OpusSender(const OpusSender&) = delete;
  OpusSender& operator=(const OpusSender&) = delete;
  bool ok() const { return encoder_ != nullptr; }
  // One 20 ms frame in, one packet out (empty on an encoder error).
  std::vector<std::uint8_t> encode(std::span<const std::int16_t, kOpusFrame> pcm);

 private:
  OpusEncoder* encoder_ = nullptr;
};

class OpusReceiver {
 public:
  OpusReceiver();
  ~OpusReceiver();
  OpusReceiver(const OpusReceiver&) = delete;
  OpusReceiver& operator=(const OpusReceiver&) = delete;
  bool ok() const { return decoder_ != nullptr; }

  JitterBuffer::Push push(std::uint16_t sequence, std::span<const std::uint8_t> payload);
  // The next frame's samples (20 ms, or what the peer's packet held); empty before the first
  // packet. Valid until the next call.
  std::span<const std::int16_t> pull();

  // Frames not decoded from their own packet: recovered from FEC or concealed.
  std::uint64_t concealed() const { return concealed_; }
  std::uint64_t recovered() const { return recovered_; }  // of those, from FEC

 private:
  JitterBuffer jitter_;
  OpusDecoder* decoder_ = nullptr;
  std::int16_t pcm_[kOpusFrame * 6];  // the longest Opus packet, 120 ms
  std::uint64_t concealed_ = 0;
  std::uint64_t recovered_ = 0;
};

}  // namespace kabar::client::media
