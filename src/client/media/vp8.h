// VP8 over RTP (RFC 7741): frames split into packets with a one-byte payload descriptor, and put
// back together on the receiving side.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <vector>

namespace kabar::client::media {

// Payloads (descriptor and data) of at most `max_payload` bytes; the last one carries the frame's
// end (the RTP marker bit).
std::vector<std::vector<std::uint8_t>> packetize_vp8(std::span<const std::uint8_t> frame,
                                                     std::size_t max_payload = 1100);

struct Vp8Payload {
  bool start = false;  // S=1 and partition 0: the first packet of a frame
  std::span<const std::uint8_t> data;
};
// Reads the descriptor, with its extensions (picture ID, TL0PICIDX, TID/KEYIDX) skipped.
std::optional<Vp8Payload> parse_vp8(std::span<const std::uint8_t> payload);

// RFC 7741 §4.3: the P bit of the frame's first byte is 0 on a key frame.
inline bool is_vp8_keyframe(std::span<const std::uint8_t> frame) {
  return !frame.empty() && (frame[0] & 1) == 0;
}

// Collects one frame's packets (same RTP timestamp) in sequence order.
class Vp8Assembler {
 public:
  // A whole frame once this packet completes it. A frame left incomplete when the next begins
  // is dropped and counted; so is a frame lost whole (a gap in the sequence numbers between the
  // last frame completed and the one this packet completes, which still comes out: a key frame
  // decodes, any other refers to what was lost).
  std::optional<std::vector<std::uint8_t>> push(std::uint16_t sequence, std::uint32_t timestamp,
                                                bool marker, std::span<const std::uint8_t> payload);
  std::uint64_t dropped() const { return dropped_; }

 private:
  bool active_ = false;
  std::uint32_t timestamp_ = 0;
  std::uint16_t first_seen_ = 0;
  std::optional<int> start_;  // offsets from first_seen_
  std::optional<int> end_;
  std::map<int, std::vector<std::uint8_t>> parts_;
  bool have_last_ = false;
  std::uint32_t last_timestamp_ = 0;       // the last frame completed or dropped
  std::optional<std::uint16_t> last_end_;  // the last packet of the last frame, if completed
  std::uint64_t dropped_ = 0;
};

}  // namespace kabar::client::media
