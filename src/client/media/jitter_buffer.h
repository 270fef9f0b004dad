// The receive side's jitter buffer: packets are reordered by sequence number and played out on
// the receiver's clock, one frame per pop(), a delay after the first arrival (the engine owns
// the clock and raises the delay when packets come late; this class only orders). A missing packet
// comes out as a gap for packet loss concealment; a packet that arrives after its turn is dropped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

namespace kabar::client::media {

class JitterBuffer {
 public:
  // `capacity`: packets held at most; a packet further ahead than that restarts the sequence
  // (the sender restarted or jumped).
  explicit JitterBuffer(std::size_t capacity = 50) : capacity_(capacity) {}

  enum class Push { kQueued, kLate, kDuplicate, kResync };
  Push push(std::uint16_t sequence, std::vector<std::uint8_t> payload);

  // The next frame in sequence order: its payload, or an empty `payload` with `missing` set
  // (conceal it). nullopt before the first packet.
  struct Frame {
    bool missing = false;
    std::uint16_t sequence = 0;
    std::vector<std::uint8_t> payload;
  };
  std::optional<Frame> pop();

  // The payload the next pop() returns, if it is here.
  const std::vector<std::uint8_t>* peek() const;
  bool started() const { return started_; }
  std::size_t size() const { return packets_.size(); }

 private:
  std::size_t capacity_;
  bool started_ = false;
  std::uint32_t next_ = 0;  // extended sequence number of the next frame to play
  std::map<std::uint32_t, std::vector<std::uint8_t>> packets_;  // by extended sequence
};

}  // namespace kabar::client::media
