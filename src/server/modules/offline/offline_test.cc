// Offline storage (XEP-0160) through scripted sessions, on the in-memory store.
#include "server/modules/testing/module_test.h"

namespace kabar::server {
namespace {

using testing::Client;
using testing::ModuleTest;
using testing::named;

constexpr const char* kChat =
    "<message to='bob@example.com' type='chat' id='m{}'><body>hello {}</body></message>";

std::string chat(int i) {
  std::string s = kChat;
  for (int k = 0; k < 2; ++k) s.replace(s.find("{}"), 2, std::to_string(i));
  return s;
}

Config with_limit(std::size_t limit) {
  Config cfg;
  cfg.archive_enabled = false;  // as ModuleTest::default_config()
  cfg.domain = "example.com";
  cfg.offline_limit = limit;
  return cfg;
}

class OfflineTest : public ModuleTest {
 protected:
  OfflineTest() : ModuleTest(with_limit(2)) {}
  void SetUp() override {
    add_account("alice");
    add_account("bob");
  }
};

TEST_F(OfflineTest, StoredWhileOfflineAndDeliveredOnInitialPresence) {
  auto& alice = connect("alice@example.com/phone");
  send(alice, chat(1));
  EXPECT_TRUE(alice.take().empty()) << "stored, not bounced";
  auto stored = store().offline_messages("bob");
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].stamp_ms, clock_->ms);

  auto& bob = connect("bob@example.com/desk");
  EXPECT_TRUE(bob.take().empty()) << "nothing before initial presence";
  send(bob, "<presence/>");
  const auto bob_got = bob.take();
  auto messages = named(bob_got, "message");
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0]->attr("from"), "alice@example.com/phone");
  EXPECT_EQ(messages[0]->child_text("body"), "hello 1");
  // XEP-0203: stamped with the time it was stored (the test's clock).
  const xml::Element* delay = messages[0]->child("delay", "urn:xmpp:delay");
  ASSERT_NE(delay, nullptr);
  EXPECT_EQ(delay->attr("stamp"), "2006-12-19T17:58:35.000Z");
  // Deleted once written to the connection.
  EXPECT_EQ(store().offline_count("bob"), 0u);
}

TEST_F(OfflineTest, NotDeliveredToANegativePriority) {
  auto& alice = connect("alice@example.com/phone");
  send(alice, chat(1));
  auto& bob = connect("bob@example.com/desk");
  send(bob, "<presence><priority>-1</priority></presence>");
  EXPECT_TRUE(named(bob.take(), "message").empty());
  EXPECT_EQ(store().offline_count("bob"), 1u);
}

TEST_F(OfflineTest, TheLimitBouncesTheRest) {
  auto& alice = connect("alice@example.com/phone");
  send(alice, chat(1));
  send(alice, chat(2));
  EXPECT_TRUE(alice.take().empty());
  send(alice, chat(3));
  auto got = alice.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].attr("type"), "error");
  EXPECT_EQ(got[0].attr("id"), "m3");
  ASSERT_NE(got[0].child("error"), nullptr);
  // RFC 6120 §8.3.3.18: the queue is full for now, not the service missing.
  EXPECT_EQ(got[0].child("error")->attr("type"), "wait");
  EXPECT_NE(got[0].child("error")->child("resource-constraint", xmpp::ns::kStanzas), nullptr);
  EXPECT_EQ(store().offline_count("bob"), 2u);
}

TEST_F(OfflineTest, AMessageToNoAccountIsServiceUnavailable) {
  auto& alice = connect("alice@example.com/phone");
  send(alice, "<message to='nobody@example.com' type='chat' id='x'><body>hi</body></message>");
  auto got = alice.take();
  ASSERT_EQ(got.size(), 1u);
  ASSERT_NE(got[0].child("error"), nullptr);
  EXPECT_NE(got[0].child("error")->child("service-unavailable", xmpp::ns::kStanzas), nullptr);
}

// Bounced messages: the error replies among `got`, checked to be <resource-constraint/> of type
// 'wait', by id.
std::vector<std::string> resource_constraint_ids(const std::vector<xml::Element>& got) {
  std::vector<std::string> ids;
  for (const auto& e : got) {
    const xml::Element* error = e.child("error");
    EXPECT_EQ(e.attr("type"), "error");
    if (error == nullptr) continue;
    EXPECT_EQ(error->attr("type"), "wait");
    EXPECT_NE(error->child("resource-constraint", xmpp::ns::kStanzas), nullptr);
    ids.emplace_back(e.attr("id"));
  }
  return ids;
}

Config with_limits(std::size_t count, std::size_t bytes, std::size_t per_sender) {
  Config cfg = with_limit(count);
  cfg.offline_limit_bytes = bytes;
  cfg.offline_limit_per_sender = per_sender;
  return cfg;
}

class OfflineLimitTest : public ModuleTest {
 protected:
  OfflineLimitTest() : ModuleTest(with_limits(10, 2000, 3)) {}
  void SetUp() override {
    for (const char* u : {"alice", "bob", "carol"}) add_account(u);
  }
};

TEST_F(OfflineLimitTest, OneSenderFillsOnlyItsShare) {
  auto& alice = connect("alice@example.com/phone");
  for (int i = 1; i <= 5; ++i) send(alice, chat(i));
  EXPECT_EQ(resource_constraint_ids(alice.take()), (std::vector<std::string>{"m4", "m5"}));
  EXPECT_EQ(store().offline_count("bob"), 3u);
  // Another sender still has room, and the stored messages name their sender.
  auto& carol = connect("carol@example.com/desk");
  send(carol, chat(6));
  EXPECT_TRUE(carol.take().empty());
  auto stored = store().offline_messages("bob");
  ASSERT_EQ(stored.size(), 4u);
  EXPECT_EQ(stored[0].sender, "alice@example.com");
  EXPECT_EQ(stored[3].sender, "carol@example.com");
  // Once bob has read them, alice may leave more.
  auto& bob = connect("bob@example.com/desk");
  send(bob, "<presence/>");
  EXPECT_EQ(named(bob.take(), "message").size(), 4u);
  send(bob, "<presence type='unavailable'/>");
  send(alice, chat(7));
  EXPECT_TRUE(alice.take().empty());
  EXPECT_EQ(store().offline_count("bob"), 1u);
}

TEST_F(OfflineLimitTest, TheByteLimitBounces) {
  auto& alice = connect("alice@example.com/phone");
  auto& carol = connect("carol@example.com/desk");
  const std::string body(600, 'x');
  auto big = [&body](int i) {
    return "<message to='bob@example.com' type='chat' id='b" + std::to_string(i) + "'><body>" +
           body + "</body></message>";
  };
  send(alice, big(1));
  send(carol, big(2));
  EXPECT_TRUE(alice.take().empty());
  EXPECT_TRUE(carol.take().empty());
  // Two of about 800 bytes stored (with the delay stamp): a third passes 2000 bytes.
  auto stored = store().offline_messages("bob");
  ASSERT_EQ(stored.size(), 2u);
  ASSERT_GT(stored[0].stanza.size() + stored[1].stanza.size(), 1400u);
  ASSERT_LT(stored[0].stanza.size() + stored[1].stanza.size(), 1700u);
  send(carol, big(3));
  EXPECT_EQ(resource_constraint_ids(carol.take()), (std::vector<std::string>{"b3"}));
  EXPECT_EQ(store().offline_count("bob"), 2u);
  // A small one still fits.
  send(carol, chat(4));
  EXPECT_TRUE(carol.take().empty());
  EXPECT_EQ(store().offline_count("bob"), 3u);
}

// Pacing: a queue far larger than the session's output cap (4 MiB) arrives whole, batch by batch.

constexpr std::size_t kBody = 20 * 1024;
constexpr int kQueued = 300;  // 300 x 20 KiB: about 6 MiB

Config unlimited() { return with_limits(100000, std::size_t{1} << 30, 100000); }

class OfflinePacingTest : public ModuleTest {
 protected:
  OfflinePacingTest() : ModuleTest(unlimited()) {}
  void SetUp() override {
    add_account("alice");
    add_account("bob");
    auto& alice = connect("alice@example.com/phone");
    const std::string body(kBody, 'x');
    for (int i = 0; i < kQueued; ++i) {
      alice.send("<message to='bob@example.com' type='chat' id='p" + std::to_string(i) +
                 "'><body>" + body + "</body></message>");
    }
    run();
    ASSERT_TRUE(alice.take().empty());
    ASSERT_EQ(store().offline_count("bob"), static_cast<std::size_t>(kQueued));
  }

  // Lets `bob` write at most `n` bytes a write, runs, and returns what its output holds then.
  std::size_t step(Client& bob, std::size_t n) {
    bob.transport().set_write_limit(n);
    bob.transport().unblock();
    run();
    return bob.session()->out_queue().unwritten_bytes();
  }

  // The ids of the messages in `got`, in order.
  static void collect(const std::vector<xml::Element>& got, std::vector<std::string>& ids) {
    for (const auto* m : named(got, "message")) ids.emplace_back(m->attr("id"));
  }
};

TEST_F(OfflinePacingTest, AQueueLargerThanTheOutputCapArrivesInBatches) {
  auto& bob = connect("bob@example.com/desk");
  bob.transport().set_write_limit(64 * 1024);
  send(bob, "<presence/>");
  std::vector<std::string> ids;
  std::size_t most = 0;
  int steps = 0;
  while (ids.size() < static_cast<std::size_t>(kQueued) && steps < 10000) {
    ++steps;
    const std::size_t held = step(bob, 64 * 1024);
    most = std::max(most, held);
    ASSERT_FALSE(bob.session()->closed()) << "cut off after " << ids.size();
    collect(bob.take(), ids);
  }
  ASSERT_EQ(ids.size(), static_cast<std::size_t>(kQueued));
  for (int i = 0; i < kQueued; ++i) EXPECT_EQ(ids[i], "p" + std::to_string(i));
  // Never more than one batch (256 KiB, and the message that passes it) waiting in the output.
  EXPECT_LE(most, 256 * 1024 + kBody + 1024);
  EXPECT_GT(steps, 20);  // 6 MiB at 64 KiB a write
  EXPECT_EQ(store().offline_count("bob"), 0u);
  EXPECT_FALSE(bob.session()->closed());
}

TEST_F(OfflinePacingTest, NothingIsQueuedBeyondABatchWhileTheClientReadsNothing) {
  auto& bob = connect("bob@example.com/desk");
  bob.transport().stall();
  send(bob, "<presence/>");
  const std::size_t held = bob.session()->out_queue().unwritten_bytes();
  EXPECT_GT(held, 0u);
  EXPECT_LE(held, 256 * 1024 + kBody + 1024);
  EXPECT_EQ(store().offline_count("bob"), static_cast<std::size_t>(kQueued));
  EXPECT_FALSE(bob.session()->closed());
}

TEST_F(OfflinePacingTest, ADeliveryCutShortKeepsTheRest) {
  auto& bob = connect("bob@example.com/desk");
  bob.transport().set_write_limit(50 * 1024);
  send(bob, "<presence/>");
  std::vector<std::string> ids;
  // Part of the way: through a few batches and into the middle of one.
  for (int i = 0; i < 30; ++i) {
    step(bob, 50 * 1024);
    collect(bob.take(), ids);
  }
  ASSERT_GT(ids.size(), 0u);
  ASSERT_LT(ids.size(), static_cast<std::size_t>(kQueued));
  bob.transport().drop();
  run();
  // What the session saw written is deleted, also of the batch cut short; the rest stays, in
  // order. The stanzas of the last write before the drop reached the client, but the session
  // had not yet been told they were with the kernel (it learns that when the connection can take
  // more): they stay stored too and come again (at most the 2-3 of one 50 KiB write).
  auto left = store().offline_messages("bob");
  ASSERT_GE(left.size() + ids.size(), static_cast<std::size_t>(kQueued));
  ASSERT_LE(left.size() + ids.size(), static_cast<std::size_t>(kQueued) + 3);
  const std::size_t first_left = kQueued - left.size();
  EXPECT_NE(left.front().stanza.find("id='p" + std::to_string(first_left) + "'"),
            std::string::npos);

  // The next login gets the rest.
  auto& again = connect("bob@example.com/desk");
  send(again, "<presence/>");
  std::vector<std::string> rest;
  collect(again.take(), rest);
  ASSERT_EQ(rest.size(), left.size());
  EXPECT_EQ(rest.front(), "p" + std::to_string(first_left));
  EXPECT_EQ(rest.back(), "p" + std::to_string(kQueued - 1));
  EXPECT_EQ(store().offline_count("bob"), 0u);
}

TEST_F(OfflineTest, OnlineRecipientGetsItAtOnce) {
  auto& alice = connect("alice@example.com/phone");
  auto& bob = connect("bob@example.com/desk");
  send(bob, "<presence/>");
  bob.take();
  send(alice, chat(1));
  const auto bob_got = bob.take();
  auto messages = named(bob_got, "message");
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0]->child("delay", "urn:xmpp:delay"), nullptr);
  EXPECT_EQ(store().offline_count("bob"), 0u);
}

TEST_F(OfflineTest, AFlaggedAccountsMessagesLeaveTheBytePath) {
  // The byte fast path forwards a message as the bytes it came in (double quotes kept); with
  // AccountFlag kSeesMessages on the recipient it takes the router, which serializes it.
  auto& alice = connect("alice@example.com/phone");
  auto& bob = connect("bob@example.com/desk");
  send(bob, "<presence/>");
  bob.take();
  const std::string quoted =
      "<message to=\"bob@example.com\" type=\"chat\" id=\"q\"><body>hi</body></message>";
  send(alice, quoted);
  EXPECT_NE(bob.transport().written().find("type=\"chat\""), std::string::npos)
      << bob.transport().written();
  bob.take();

  server_.set_account_flags("bob", kSeesMessages, true);
  EXPECT_EQ(server_.account_flags("bob"), static_cast<std::uint32_t>(kSeesMessages));
  send(alice, quoted);
  EXPECT_NE(bob.transport().written().find("type='chat'"), std::string::npos)
      << bob.transport().written();
  ASSERT_EQ(named(bob.take(), "message").size(), 1u);

  // The sender's flag does the same.
  server_.set_account_flags("bob", kSeesMessages, false);
  EXPECT_EQ(server_.account_flags("bob"), 0u);
  server_.set_account_flags("alice", kSeesMessages, true);
  send(alice, quoted);
  EXPECT_NE(bob.transport().written().find("type='chat'"), std::string::npos)
      << bob.transport().written();
  ASSERT_EQ(named(bob.take(), "message").size(), 1u);
}

}  // namespace
}  // namespace kabar::server
