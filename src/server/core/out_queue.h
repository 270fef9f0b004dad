// A session's write queue: one entry per stanza, so stream management (XEP-0198) can count what
// was sent and acknowledged and resend what was not. No I/O: the session gathers the unwritten
// front as buffers, hands them to its transport in one write, and reports how many bytes it took.
//
// A broadcast (presence to every contact) shares its serialization among the recipients' queues:
// an entry is a shared head, bytes of its own (the recipient's 'to') and a shared tail.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kabar::server {

class OutQueue {
 public:
  struct Entry {
    std::shared_ptr<const std::string> head;  // shared with other recipients, or null
    std::string own;
    std::shared_ptr<const std::string> tail;  // shared with other recipients, or null
    // Runs once the entry's delivery is certain (offline messages are deleted then): once its
    // bytes are with the kernel, or, while unacknowledged stanzas are kept (keep_unacked(),
    // XEP-0198), once the peer's ack covers it. It never runs for an entry that is dropped or
    // handed on undelivered (clear(), take_unacked()): whoever made the entry keeps what it
    // stands for.
    std::function<void()> on_written;
    // A message also logged in flight (store/message_log.h): handed on undelivered, it is
    // routed again like any stanza, and then its callback runs (the log lets it go).
    bool reroute = false;
    // A stanza (XEP-0198 §4 counts stanzas only); false for stream-level bytes (headers,
    // features, SASL, </stream:stream>), which belong to one connection and are never resent.
    bool stanza = true;
    std::size_t size() const;
  };

  void push(Entry e);
  // Bytes queued and not yet taken by the transport.
  std::size_t unwritten_bytes() const { return unwritten_bytes_; }
  bool has_unwritten() const { return pos_ < q_.size(); }
  // Fills `out` with the unwritten bytes from the front, in order (one view per part of an
  // entry); returns how many views it filled.
  std::size_t gather(std::span<std::string_view> out) const;
  // The transport took `n` bytes of what gather() gave. Entries now complete have their
  // callbacks collected, to run with run_written().
  void taken(std::size_t n);
  // Runs the callbacks of completed entries (once their bytes are with the kernel). They may
  // push more.
  void run_written();
  bool has_written_callbacks() const { return !done_.empty(); }

  // Stream management. While kept, written stanzas stay until acked (else they are dropped once
  // written), and their callbacks wait for the ack.
  void keep_unacked(bool keep) { keep_ = keep; }
  bool keeps_unacked() const { return keep_; }
  // XEP-0198 §4: counting starts at <enabled/>. What is queued before it (the stream-level
  // <enabled/> included) is neither counted nor resent; the counters start from zero and
  // written stanzas are kept until acked from now on.
  void start_counting();
  // XEP-0198 §4: `h` is the count (modulo 2^32) of stanzas the peer has handled. Drops the
  // stanzas it acknowledges; false when it acknowledges more than was written (the peer is
  // wrong, XEP-0198 §5 "handled-count-too-high"), then nothing changes.
  bool ack(std::uint32_t h);
  // Stanzas queued and not acknowledged, written or not.
  std::uint64_t unacked() const { return queued_ - acked_; }
  // For a new connection: every stanza not acknowledged is to be written again, from its first
  // byte, in order; stream-level bytes of the old connection not written yet are dropped.
  // `preface`, when not empty, is stream-level bytes written before them (XEP-0198 §5
  // <resumed/>).
  void rewind(std::string preface = {});
  // Removes and returns every stanza entry not acknowledged (written or not), in order, their
  // callbacks not run: the session is over and they are undelivered (XEP-0198 §5: the server
  // handles them as it would stanzas to an unavailable resource). Stream-level entries go.
  std::vector<Entry> take_unacked();
  // Calls `f(const Entry&)` for each stanza entry not acknowledged (written or not), in order:
  // what take_unacked() would hand on (a hibernating session's, for push notifications).
  template <typename F>
  void visit_unacked(F&& f) const {
    for (std::size_t i = first_; i < q_.size(); ++i) {
      if (q_[i].stanza) f(q_[i]);
    }
  }
  // Counters of stanzas since the queue was made (or since start_counting()).
  std::uint64_t queued() const { return queued_; }
  std::uint64_t written() const { return written_; }
  std::uint64_t acked() const { return acked_; }

  // Drops every entry (the connection is gone for good), with the callbacks of what did not go
  // out; the counters keep what happened before.
  void clear();
  // An idle queue gives its storage back.
  void release_memory();

 private:
  void compact();

  // Vectors, not deques: an empty std::deque still holds a 576-byte block.
  std::vector<Entry> q_;
  std::size_t first_ = 0;  // entries before it are gone (written, or acked when kept)
  std::size_t pos_ = 0;    // the first entry not completely written
  std::size_t off_ = 0;    // bytes of q_[pos_] already written
  std::size_t unwritten_bytes_ = 0;
  std::vector<std::function<void()>> done_;
  bool keep_ = false;
  std::uint64_t queued_ = 0;
  std::uint64_t written_ = 0;
  std::uint64_t acked_ = 0;
};

}  // namespace kabar::server
