// Offline storage (XEP-0160) through scripted sessions, on the in-memory store.
#include "server/modules/testing/module_test.h"

namespace kabar::server {
namespace {

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
  EXPECT_NE(got[0].child("error")->child("service-unavailable"), nullptr);
  EXPECT_EQ(store().offline_count("bob"), 2u);
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
