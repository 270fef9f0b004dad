#include <gtest/gtest.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "server/core/out_queue.h"

namespace kabar::server {
namespace {

OutQueue::Entry stanza(std::string bytes, std::function<void()> cb = {}) {
  OutQueue::Entry e;
  e.own = std::move(bytes);
  e.on_written = std::move(cb);
  return e;
}

// What a transport would write: the gathered front, of which it takes `limit` bytes.
std::string write(OutQueue& q, std::size_t limit = std::string::npos) {
  std::array<std::string_view, 64> bufs;
  const std::size_t n = q.gather(bufs);
  std::string all;
  for (std::size_t i = 0; i < n; ++i) all.append(bufs[i]);
  all.resize(std::min(all.size(), limit));
  q.taken(all.size());
  return all;
}

TEST(OutQueue, CountsStanzasNotStreamLevelBytes) {
  OutQueue q;
  OutQueue::Entry header;
  header.own = "<stream:stream>";
  header.stanza = false;
  q.push(std::move(header));
  q.push(stanza("<message/>"));
  q.push(stanza("<presence/>"));
  EXPECT_EQ(q.queued(), 2u);
  EXPECT_EQ(q.written(), 0u);
  EXPECT_EQ(q.unwritten_bytes(), 15u + 10u + 11u);
  EXPECT_EQ(write(q), "<stream:stream><message/><presence/>");
  EXPECT_EQ(q.written(), 2u);
  EXPECT_EQ(q.unacked(), 2u);
  EXPECT_FALSE(q.has_unwritten());
  EXPECT_EQ(q.unwritten_bytes(), 0u);
}

TEST(OutQueue, BroadcastSharesHeadAndTail) {
  auto head = std::make_shared<const std::string>("<presence from='a@x/r' to='");
  auto tail = std::make_shared<const std::string>("'><show>away</show></presence>");
  OutQueue q1;
  OutQueue q2;
  for (auto [q, to] : {std::pair{&q1, "b@x"}, std::pair{&q2, "c@x"}}) {
    OutQueue::Entry e;
    e.head = head;
    e.own = to;
    e.tail = tail;
    q->push(std::move(e));
  }
  // One buffer shared by both queues (and the caller): nothing copied per recipient.
  EXPECT_EQ(head.use_count(), 3);
  EXPECT_EQ(q1.queued(), 1u);  // one stanza, not three pieces
  std::array<std::string_view, 8> bufs;
  ASSERT_EQ(q1.gather(bufs), 3u);
  EXPECT_EQ(bufs[0].data(), head->data());
  EXPECT_EQ(bufs[2].data(), tail->data());
  EXPECT_EQ(write(q1), "<presence from='a@x/r' to='b@x'><show>away</show></presence>");
  EXPECT_EQ(write(q2), "<presence from='a@x/r' to='c@x'><show>away</show></presence>");
  EXPECT_EQ(head.use_count(), 1);  // written entries let go of it
}

TEST(OutQueue, PartialWritesInsideAnEntry) {
  auto head = std::make_shared<const std::string>("HEAD-");
  auto tail = std::make_shared<const std::string>("-TAIL");
  OutQueue q;
  int done1 = 0;
  int done2 = 0;
  q.push(stanza("first", [&] { ++done1; }));
  OutQueue::Entry e;
  e.head = head;
  e.own = "own";
  e.tail = tail;
  e.on_written = [&] { ++done2; };
  q.push(std::move(e));
  std::string out;
  // Every split point, three bytes at a time: across the entry boundary and inside each part.
  while (q.has_unwritten()) {
    out += write(q, 3);
    q.run_written();
    EXPECT_EQ(done1, out.size() >= 5 ? 1 : 0);
    EXPECT_EQ(done2, out.size() >= 18 ? 1 : 0);
  }
  EXPECT_EQ(out, "firstHEAD-own-TAIL");
  EXPECT_EQ(done1, 1);
  EXPECT_EQ(done2, 1);
  EXPECT_EQ(q.written(), 2u);
}

TEST(OutQueue, CallbacksRunOnlyWhenAsked) {
  OutQueue q;
  int done = 0;
  q.push(stanza("a", [&] { ++done; }));
  write(q);
  EXPECT_EQ(done, 0);  // taken, not yet with the kernel
  EXPECT_TRUE(q.has_written_callbacks());
  q.run_written();
  EXPECT_EQ(done, 1);
}

TEST(OutQueue, AckDropsAcknowledgedStanzas) {
  OutQueue q;
  q.keep_unacked(true);
  for (int i = 0; i < 5; ++i) q.push(stanza("<m" + std::to_string(i) + "/>"));
  write(q);
  EXPECT_EQ(q.written(), 5u);
  EXPECT_EQ(q.unacked(), 5u);
  EXPECT_TRUE(q.ack(2));
  EXPECT_EQ(q.acked(), 2u);
  EXPECT_EQ(q.unacked(), 3u);
  EXPECT_TRUE(q.ack(2));  // the same h again changes nothing
  EXPECT_EQ(q.unacked(), 3u);
  EXPECT_FALSE(q.ack(6));  // more than was written: refused, nothing changes
  EXPECT_EQ(q.acked(), 2u);
  EXPECT_TRUE(q.ack(5));
  EXPECT_EQ(q.unacked(), 0u);
}

TEST(OutQueue, AckCountsModulo2To32) {
  OutQueue q;
  q.keep_unacked(true);
  q.push(stanza("a"));
  write(q);
  EXPECT_FALSE(q.ack(0xffffffffu));  // not "one less than zero": 2^32 - 1 more, too many
  EXPECT_TRUE(q.ack(1));
}

TEST(OutQueue, RewindResendsUnackedStanzasInOrder) {
  OutQueue q;
  q.keep_unacked(true);
  OutQueue::Entry header;
  header.own = "<stream:stream>";
  header.stanza = false;
  q.push(std::move(header));
  for (int i = 1; i <= 4; ++i) q.push(stanza("<m" + std::to_string(i) + "/>"));
  write(q, 15 + 5 + 5 + 2);  // the header, m1, m2 and part of m3
  EXPECT_EQ(q.written(), 2u);
  EXPECT_TRUE(q.ack(1));
  OutQueue::Entry close;
  close.own = "</stream:stream>";
  close.stanza = false;
  q.push(std::move(close));
  // The connection died; a new one takes over: m2 (written, not acked), m3 (half written) and
  // m4 go again, whole and in order; the old stream's bytes do not.
  q.rewind();
  EXPECT_EQ(q.written(), 1u);
  EXPECT_EQ(q.unacked(), 3u);
  EXPECT_EQ(write(q), "<m2/><m3/><m4/>");
  EXPECT_EQ(q.written(), 4u);
  EXPECT_TRUE(q.ack(4));
  EXPECT_EQ(q.unacked(), 0u);
}

TEST(OutQueue, WithoutStreamManagementWrittenEntriesGo) {
  OutQueue q;
  auto shared = std::make_shared<const std::string>("x");
  OutQueue::Entry e;
  e.head = shared;
  q.push(std::move(e));
  write(q);
  EXPECT_EQ(shared.use_count(), 1);
  q.rewind();  // nothing is kept to resend
  EXPECT_FALSE(q.has_unwritten());
}

TEST(OutQueue, ClearDropsCallbacksOfUnwrittenEntries) {
  OutQueue q;
  int done = 0;
  q.push(stanza("abc", [&] { ++done; }));
  write(q, 1);
  q.clear();
  q.run_written();
  EXPECT_EQ(done, 0);
  EXPECT_FALSE(q.has_unwritten());
  EXPECT_EQ(q.unwritten_bytes(), 0u);
}

TEST(OutQueue, EmptyEntryCompletes) {
  OutQueue q;
  int done = 0;
  q.push(stanza("", [&] { ++done; }));
  EXPECT_TRUE(q.has_unwritten());
  write(q);
  q.run_written();
  EXPECT_EQ(done, 1);
  EXPECT_FALSE(q.has_unwritten());
}

TEST(OutQueue, KeptStanzasRunTheirCallbacksWhenAcked) {
  // XEP-0198: delivery is certain only once the peer acknowledges (offline messages are deleted
  // then), not when the bytes are with the kernel.
  OutQueue q;
  q.keep_unacked(true);
  int done = 0;
  q.push(stanza("<m1/>", [&] { ++done; }));
  q.push(stanza("<m2/>", [&] { ++done; }));
  write(q);
  q.run_written();
  EXPECT_EQ(done, 0);
  EXPECT_TRUE(q.ack(1));
  q.run_written();
  EXPECT_EQ(done, 1);
  EXPECT_TRUE(q.ack(2));
  q.run_written();
  EXPECT_EQ(done, 2);
}

TEST(OutQueue, StartCountingLeavesEarlierEntriesUncounted) {
  OutQueue q;
  q.push(stanza("<before/>"));
  write(q);
  q.push(stanza("<queued-before/>"));
  q.start_counting();
  EXPECT_EQ(q.queued(), 0u);
  q.push(stanza("<m1/>"));
  EXPECT_EQ(write(q), "<queued-before/><m1/>");
  EXPECT_EQ(q.written(), 1u);
  EXPECT_FALSE(q.ack(2));
  EXPECT_TRUE(q.ack(1));
  EXPECT_EQ(q.unacked(), 0u);
}

TEST(OutQueue, TakeUnackedReturnsStanzasInOrderWithoutRunningCallbacks) {
  OutQueue q;
  q.keep_unacked(true);
  int done = 0;
  for (int i = 1; i <= 3; ++i) q.push(stanza("<m" + std::to_string(i) + "/>", [&] { ++done; }));
  OutQueue::Entry r;
  r.own = "<r/>";
  r.stanza = false;
  q.push(std::move(r));
  q.push(stanza("<m4/>"));
  write(q, 10);  // m1 and m2
  EXPECT_TRUE(q.ack(1));
  q.run_written();
  EXPECT_EQ(done, 1);
  auto left = q.take_unacked();
  ASSERT_EQ(left.size(), 3u);
  EXPECT_EQ(left[0].own, "<m2/>");
  EXPECT_EQ(left[1].own, "<m3/>");
  EXPECT_EQ(left[2].own, "<m4/>");
  EXPECT_TRUE(left[0].on_written != nullptr);
  q.run_written();
  EXPECT_EQ(done, 1);
  EXPECT_EQ(q.unacked(), 0u);
  EXPECT_FALSE(q.has_unwritten());
}

TEST(OutQueue, RewindWritesThePrefaceFirst) {
  OutQueue q;
  q.keep_unacked(true);
  q.push(stanza("<m1/>"));
  q.push(stanza("<m2/>"));
  write(q);
  EXPECT_TRUE(q.ack(1));
  q.rewind("<resumed/>");
  EXPECT_EQ(write(q), "<resumed/><m2/>");
  EXPECT_TRUE(q.ack(2));
  EXPECT_EQ(q.unacked(), 0u);
}

}  // namespace
}  // namespace kabar::server
