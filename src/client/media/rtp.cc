#include "client/media/rtp.h"

#include <cstdlib>

namespace kabar::client::media {

std::vector<std::uint8_t> write_rtp(const RtpHeader& h, std::span<const std::uint8_t> payload) {
  std::vector<std::uint8_t> out(12 + payload.size());
  out[0] = 0x80;  // version 2, no padding, no extension, no CSRC
  out[1] = std::uint8_t((h.marker ? 0x80 : 0) | (h.payload_type & 0x7F));
  out[2] = std::uint8_t(h.sequence >> 8);
  out[3] = std::uint8_t(h.sequence);
  for (int i = 0; i < 4; ++i) {
    out[4 + i] = std::uint8_t(h.timestamp >> (24 - 8 * i));
    out[8 + i] = std::uint8_t(h.ssrc >> (24 - 8 * i));
  }
  std::copy(payload.begin(), payload.end(), out.begin() + 12);
  return out;
}

std::optional<RtpPacket> parse_rtp(std::span<const std::uint8_t> p) {
  if (p.size() < 12 || (p[0] >> 6) != 2) return std::nullopt;
  RtpPacket out;
  out.header.marker = (p[1] & 0x80) != 0;
  out.header.payload_type = p[1] & 0x7F;
  out.header.sequence = std::uint16_t(p[2] << 8 | p[3]);
  out.header.timestamp =
      std::uint32_t(p[4]) << 24 | std::uint32_t(p[5]) << 16 | std::uint32_t(p[6]) << 8 | p[7];
  out.header.ssrc =
      std::uint32_t(p[8]) << 24 | std::uint32_t(p[9]) << 16 | std::uint32_t(p[10]) << 8 | p[11];
  std::size_t begin = 12 + 4 * std::size_t(p[0] & 0x0F);
  std::size_t end = p.size();
  if (begin > end) return std::nullopt;
  if (p[0] & 0x10) {  // RFC 3550 §5.3.1: 4-byte extension header, then length words
    if (begin + 4 > end) return std::nullopt;
    begin += 4 + 4 * std::size_t(p[begin + 2] << 8 | p[begin + 3]);
    if (begin > end) return std::nullopt;
  }
  if (p[0] & 0x20) {  // padding: its length is the last byte
    std::size_t pad = p[end - 1];
    if (pad == 0 || pad > end - begin) return std::nullopt;
    end -= pad;
  }
  out.payload = p.subspan(begin, end - begin);
  return out;
}

bool is_rtcp(std::span<const std::uint8_t> p) {
  return p.size() >= 2 && p[1] >= 192 && p[1] <= 223;
}

PacketKind classify(std::span<const std::uint8_t> p) {
  if (p.empty()) return PacketKind::kOther;
  std::uint8_t b = p[0];
  if (b <= 3) return PacketKind::kStun;
  if (b >= 20 && b <= 63) return PacketKind::kDtls;
  if (b >= 128 && b <= 191) return PacketKind::kRtp;
  return PacketKind::kOther;
}

void ReceiveStats::on_packet(std::uint16_t sequence, std::uint32_t timestamp,
                             std::uint32_t arrival) {
  std::int64_t transit = std::int64_t(arrival) - std::int64_t(timestamp);
  if (!started_) {
    started_ = true;
    base_ = highest_ = sequence;
    last_transit_ = transit;
  } else {
    // The extended sequence number nearest to the highest seen (wraps at 2^16).
    auto delta = std::int16_t(std::uint16_t(sequence - std::uint16_t(highest_)));
    std::uint32_t extended = highest_ + std::uint32_t(std::int32_t(delta));
    if (delta > 0) highest_ = extended;
    // RFC 3550 A.8: J += (|D| - J) / 16.
    double d = double(std::llabs(transit - last_transit_));
    jitter_ += (d - jitter_) / 16.0;
    last_transit_ = transit;
  }
  ++received_;
}

std::uint64_t ReceiveStats::lost() const {
  if (!started_) return 0;
  std::uint64_t expected = std::uint64_t(highest_ - base_) + 1;
  return expected > received_ ? expected - received_ : 0;
}

}  // namespace kabar::client::media
