#include "client/media/jitter_buffer.h"

namespace kabar::client::media {

JitterBuffer::Push JitterBuffer::push(std::uint16_t sequence, std::vector<std::uint8_t> payload) {
  if (!started_) {
    started_ = true;
    // Start one cycle up so sequence numbers just below the first still extend without wrapping
    // under zero.
    next_ = (1u << 16) | sequence;
  }
  auto delta = std::int16_t(std::uint16_t(sequence - std::uint16_t(next_)));
  if (delta < 0) return Push::kLate;
  if (std::size_t(delta) >= capacity_) {
    packets_.clear();
    next_ = (next_ & ~0xFFFFu) + (1u << 16) + sequence;
    packets_.emplace(next_, std::move(payload));
    return Push::kResync;
  }
  std::uint32_t extended = next_ + std::uint32_t(delta);
  auto [it, inserted] = packets_.emplace(extended, std::move(payload));
  return inserted ? Push::kQueued : Push::kDuplicate;
}

const std::vector<std::uint8_t>* JitterBuffer::peek() const {
  if (!started_) return nullptr;
  auto it = packets_.find(next_);
  return it == packets_.end() ? nullptr : &it->second;
}

std::optional<JitterBuffer::Frame> JitterBuffer::pop() {
  if (!started_) return std::nullopt;
  Frame frame;
  frame.sequence = std::uint16_t(next_);
  auto it = packets_.find(next_);
  if (it == packets_.end()) {
    frame.missing = true;
  } else {
    frame.payload = std::move(it->second);
    packets_.erase(it);
  }
  ++next_;
  return frame;
}

}  // namespace kabar::client::media
