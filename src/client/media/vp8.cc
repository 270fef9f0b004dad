#include "client/media/vp8.h"

namespace kabar::client::media {

std::vector<std::vector<std::uint8_t>> packetize_vp8(std::span<const std::uint8_t> frame,
                                                     std::size_t max_payload) {
  std::vector<std::vector<std::uint8_t>> out;
  std::size_t room = max_payload - 1;
  std::size_t count = (frame.size() + room - 1) / room;
  if (count == 0) count = 1;
  // Equal sizes rather than full packets and a runt.
  std::size_t each = (frame.size() + count - 1) / count;
  for (std::size_t i = 0; i < count; ++i) {
    std::size_t begin = i * each;
    std::size_t end = std::min(frame.size(), begin + each);
    std::vector<std::uint8_t> p;
    p.reserve(1 + end - begin);
    p.push_back(i == 0 ? 0x10 : 0x00);  // X=0 R=0 N=0 S PID=0
    p.insert(p.end(), frame.begin() + std::ptrdiff_t(begin), frame.begin() + std::ptrdiff_t(end));
    out.push_back(std::move(p));
  }
  return out;
}

std::optional<Vp8Payload> parse_vp8(std::span<const std::uint8_t> p) {
  if (p.empty()) return std::nullopt;
  std::size_t pos = 1;
  std::uint8_t b = p[0];
  if (b & 0x80) {  // X: an extension byte follows
    if (pos >= p.size()) return std::nullopt;
    std::uint8_t x = p[pos++];
    if (x & 0x80) {  // I: picture ID, 7 or 15 bits
      if (pos >= p.size()) return std::nullopt;
      pos += (p[pos] & 0x80) ? 2 : 1;
    }
    if (x & 0x40) ++pos;  // L: TL0PICIDX
    if (x & 0x30) ++pos;  // T or K: TID/Y/KEYIDX
  }
  if (pos > p.size()) return std::nullopt;
  Vp8Payload out;
  out.start = (b & 0x10) != 0 && (b & 0x07) == 0;
  out.data = p.subspan(pos);
  return out;
}

std::optional<std::vector<std::uint8_t>> Vp8Assembler::push(std::uint16_t sequence,
                                                            std::uint32_t timestamp, bool marker,
                                                            std::span<const std::uint8_t> payload) {
  auto vp8 = parse_vp8(payload);
  if (!vp8) return std::nullopt;
  // A straggler of a frame already finished or given up.
  if (have_last_ && std::int32_t(timestamp - last_timestamp_) <= 0) return std::nullopt;
  if (active_ && timestamp != timestamp_) {
    if (std::int32_t(timestamp - timestamp_) < 0) return std::nullopt;
    ++dropped_;
    have_last_ = true;
    last_timestamp_ = timestamp_;
    last_end_.reset();  // where it ended is not known: no gap is counted twice
    active_ = false;
  }
  if (!active_) {
    active_ = true;
    timestamp_ = timestamp;
    first_seen_ = sequence;
    start_.reset();
    end_.reset();
    parts_.clear();
  }
  int offset = std::int16_t(std::uint16_t(sequence - first_seen_));
  parts_[offset].assign(vp8->data.begin(), vp8->data.end());
  if (vp8->start) start_ = offset;
  if (marker) end_ = offset;
  if (!start_ || !end_ || *end_ < *start_ || int(parts_.size()) < *end_ - *start_ + 1)
    return std::nullopt;
  std::vector<std::uint8_t> frame;
  for (int i = *start_; i <= *end_; ++i) {
    auto it = parts_.find(i);
    if (it == parts_.end()) return std::nullopt;
    frame.insert(frame.end(), it->second.begin(), it->second.end());
  }
  // Whole frames lost between the last one and this: what this one refers to may be gone.
  const auto first = std::uint16_t(first_seen_ + *start_);
  if (last_end_ && first != std::uint16_t(*last_end_ + 1)) ++dropped_;
  last_end_ = std::uint16_t(first_seen_ + *end_);
  active_ = false;
  have_last_ = true;
  last_timestamp_ = timestamp_;
  return frame;
}

}  // namespace kabar::client::media
