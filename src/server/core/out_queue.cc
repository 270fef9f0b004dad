#include "server/core/out_queue.h"

#include <algorithm>
#include <utility>

namespace kabar::server {

std::size_t OutQueue::Entry::size() const {
  return (head ? head->size() : 0) + own.size() + (tail ? tail->size() : 0);
}

void OutQueue::push(Entry e) {
  unwritten_bytes_ += e.size();
  if (e.stanza) ++queued_;
  q_.push_back(std::move(e));
}

std::size_t OutQueue::gather(std::span<std::string_view> out) const {
  std::size_t count = 0;
  std::size_t skip = off_;
  for (std::size_t i = pos_; i < q_.size() && count < out.size(); ++i) {
    const Entry& e = q_[i];
    const std::string_view parts[3] = {e.head ? std::string_view(*e.head) : std::string_view(),
                                       e.own,
                                       e.tail ? std::string_view(*e.tail) : std::string_view()};
    for (std::string_view p : parts) {
      if (skip >= p.size()) {
        skip -= p.size();
        continue;
      }
      if (count == out.size()) return count;
      out[count++] = p.substr(skip);
      skip = 0;
    }
  }
  return count;
}

void OutQueue::taken(std::size_t n) {
  unwritten_bytes_ -= std::min(unwritten_bytes_, n);
  while (pos_ < q_.size()) {
    Entry& e = q_[pos_];
    const std::size_t left = e.size() - off_;
    if (n < left) {
      off_ += n;
      break;
    }
    n -= left;
    off_ = 0;
    // Kept for acks: the callback waits for the ack that covers the entry (ack()).
    if (e.on_written && !keep_) done_.push_back(std::move(e.on_written));
    if (e.stanza) ++written_;
    ++pos_;
  }
  // Without stream management a written entry is of no more use.
  if (!keep_) {
    for (std::size_t i = first_; i < pos_; ++i) q_[i] = Entry();
    first_ = pos_;
  }
  compact();
}

void OutQueue::run_written() {
  if (done_.empty()) return;
  auto done = std::move(done_);
  done_.clear();
  for (auto& cb : done) cb();
}

bool OutQueue::ack(std::uint32_t h) {
  // Modulo 2^32 (XEP-0198 §4: "h" wraps): how many more than already acknowledged.
  const std::uint64_t more = static_cast<std::uint32_t>(h - static_cast<std::uint32_t>(acked_));
  if (more > written_ - acked_) return false;
  std::uint64_t left = more;
  while (first_ < pos_ && (left > 0 || !q_[first_].stanza)) {
    Entry& e = q_[first_++];
    if (e.stanza) --left;
    // Delivery is certain now: the peer says it handled the stanza.
    if (e.on_written) done_.push_back(std::move(e.on_written));
    e = Entry();
  }
  acked_ += more;
  compact();
  return true;
}

void OutQueue::start_counting() {
  // Entries not taken yet belong to the stream before <enabled/>: no longer stanzas to count.
  for (std::size_t i = pos_; i < q_.size(); ++i) q_[i].stanza = false;
  queued_ = written_ = acked_ = 0;
  keep_ = true;
}

std::vector<OutQueue::Entry> OutQueue::take_unacked() {
  std::vector<Entry> out;
  for (std::size_t i = first_; i < q_.size(); ++i) {
    if (q_[i].stanza) out.push_back(std::move(q_[i]));
  }
  acked_ = queued_;
  written_ = queued_;
  q_.clear();
  first_ = pos_ = off_ = 0;
  unwritten_bytes_ = 0;
  return out;
}

void OutQueue::rewind(std::string preface) {
  std::vector<Entry> kept;
  kept.reserve(q_.size() - first_ + 1);
  if (!preface.empty()) {
    Entry p;
    p.own = std::move(preface);
    p.stanza = false;
    kept.push_back(std::move(p));
  }
  for (std::size_t i = first_; i < q_.size(); ++i) {
    if (q_[i].stanza) kept.push_back(std::move(q_[i]));
  }
  q_ = std::move(kept);
  first_ = pos_ = off_ = 0;
  unwritten_bytes_ = 0;
  for (const Entry& e : q_) unwritten_bytes_ += e.size();
  written_ = acked_;
}

void OutQueue::clear() {
  q_.clear();
  first_ = pos_ = off_ = 0;
  unwritten_bytes_ = 0;
  done_.clear();
}

void OutQueue::compact() {
  if (first_ == q_.size()) {
    q_.clear();
    first_ = pos_ = 0;
    if (q_.capacity() > 8) std::vector<Entry>().swap(q_);  // an idle connection keeps none
  } else if (first_ >= 64 && first_ * 2 >= q_.size()) {
    q_.erase(q_.begin(), q_.begin() + static_cast<std::ptrdiff_t>(first_));
    pos_ -= first_;
    first_ = 0;
  }
}

void OutQueue::release_memory() {
  if (q_.empty()) std::vector<Entry>().swap(q_);
  if (done_.empty()) std::vector<std::function<void()>>().swap(done_);
}

}  // namespace kabar::server
