#include "client/media/rtp.h"

#include <algorithm>
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

namespace {

void put32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(std::uint8_t(v >> (24 - 8 * i)));
}
std::uint32_t get32(const std::uint8_t* p) {
  return std::uint32_t(p[0]) << 24 | std::uint32_t(p[1]) << 16 | std::uint32_t(p[2]) << 8 | p[3];
}

}  // namespace

std::vector<std::uint8_t> write_rtcp_report(std::uint32_t ssrc,
                                            const std::optional<SenderInfo>& sender,
                                            const std::optional<ReportBlock>& block,
                                            const std::string& cname) {
  std::vector<std::uint8_t> out;
  // SR (200) or RR (201); the length is in 32-bit words minus one.
  out.push_back(std::uint8_t(0x80 | (block ? 1 : 0)));
  out.push_back(sender ? 200 : 201);
  std::size_t words = 1 + (sender ? 5 : 0) + (block ? 6 : 0);
  out.push_back(std::uint8_t(words >> 8));
  out.push_back(std::uint8_t(words));
  put32(out, ssrc);
  if (sender) {
    put32(out, std::uint32_t(sender->ntp >> 32));
    put32(out, std::uint32_t(sender->ntp));
    put32(out, sender->rtp_timestamp);
    put32(out, sender->packets);
    put32(out, sender->octets);
  }
  if (block) {
    put32(out, block->ssrc);
    put32(out, std::uint32_t(block->fraction_lost) << 24 |
                   (std::uint32_t(block->cumulative_lost) & 0xFFFFFF));
    put32(out, block->highest_sequence);
    put32(out, block->jitter);
    put32(out, block->last_sr);
    put32(out, block->delay_since_sr);
  }
  // SDES (202), one chunk: SSRC, CNAME item, a null item, padding to 32 bits.
  std::size_t name_len = std::min<std::size_t>(cname.size(), 255);
  std::size_t chunk = 4 + 2 + name_len + 1;
  chunk = (chunk + 3) / 4 * 4;
  out.push_back(0x81);
  out.push_back(202);
  out.push_back(std::uint8_t((chunk / 4) >> 8));
  out.push_back(std::uint8_t(chunk / 4));
  std::size_t start = out.size();
  put32(out, ssrc);
  out.push_back(1);  // CNAME
  out.push_back(std::uint8_t(name_len));
  out.insert(out.end(), cname.begin(), cname.begin() + std::ptrdiff_t(name_len));
  out.resize(start + chunk, 0);
  return out;
}

std::vector<std::uint8_t> write_rtcp_pli(std::uint32_t sender, std::uint32_t media) {
  std::vector<std::uint8_t> out = {0x81, 206, 0, 2};  // PSFB, FMT 1, two words after the header
  put32(out, sender);
  put32(out, media);
  return out;
}

std::optional<RtcpSummary> parse_rtcp(std::span<const std::uint8_t> p) {
  RtcpSummary summary;
  std::size_t pos = 0;
  while (pos + 4 <= p.size()) {
    const std::uint8_t* h = p.data() + pos;
    if ((h[0] >> 6) != 2) return std::nullopt;
    std::size_t len = 4 * (std::size_t(h[2] << 8 | h[3]) + 1);
    if (pos + len > p.size()) return std::nullopt;
    int count = h[0] & 0x1F;
    std::size_t blocks = 0;
    if (h[1] == 200 && len >= 28) {
      summary.sender_ntp = std::uint64_t(get32(h + 8)) << 32 | get32(h + 12);
      blocks = 28;
    } else if (h[1] == 201 && len >= 8) {
      blocks = 8;
    }
    if (h[1] == 206 && (count == 1 || count == 4)) summary.keyframe_request = true;
    if (blocks != 0 && count > 0 && blocks + 24 <= len && !summary.report) {
      const std::uint8_t* b = h + blocks;
      ReportBlock r;
      r.ssrc = get32(b);
      r.fraction_lost = b[4];
      std::uint32_t lost = get32(b + 4) & 0xFFFFFF;
      r.cumulative_lost = std::int32_t(lost & 0x800000 ? lost | 0xFF000000u : lost);
      r.highest_sequence = get32(b + 8);
      r.jitter = get32(b + 12);
      r.last_sr = get32(b + 16);
      r.delay_since_sr = get32(b + 20);
      summary.report = r;
    }
    pos += len;
  }
  if (pos != p.size()) return std::nullopt;
  return summary;
}

ReportBlock ReceiveStats::report(std::uint32_t ssrc) {
  ReportBlock r;
  r.ssrc = ssrc;
  if (!started_) return r;
  std::uint64_t expected = std::uint64_t(highest_ - base_) + 1;
  // RFC 3550 A.3: the fraction over the interval since the last report, 8-bit fixed point.
  std::int64_t expected_interval = std::int64_t(expected - expected_prior_);
  std::int64_t lost_interval = expected_interval - std::int64_t(received_ - received_prior_);
  expected_prior_ = expected;
  received_prior_ = received_;
  if (expected_interval > 0 && lost_interval > 0)
    r.fraction_lost =
        std::uint8_t(std::min<std::int64_t>((lost_interval << 8) / expected_interval, 255));
  std::int64_t lost = std::int64_t(expected) - std::int64_t(received_);
  r.cumulative_lost = std::int32_t(std::clamp<std::int64_t>(lost, -0x800000, 0x7FFFFF));
  r.highest_sequence = highest_;
  r.jitter = std::uint32_t(jitter_);
  return r;
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
