// Presence (RFC 6121 §4) and the subscription handshake (§3) through scripted sessions.
#include <algorithm>
#include <set>

#include "server/modules/testing/module_test.h"

namespace kabar::server {
namespace {

using testing::Client;
using testing::ModuleTest;
using testing::named;
namespace ns = xmpp::ns;

class PresenceTest : public ModuleTest {
 protected:
  void SetUp() override {
    add_account("alice");
    add_account("bob");
  }
  void befriend(const std::string& a, const std::string& b) {
    store::RosterItem it;
    it.state.sub = xmpp::Subscription::kBoth;
    it.jid = b + "@example.com";
    store().put_roster_item(a, it);
    it.jid = a + "@example.com";
    store().put_roster_item(b, it);
  }
  // The presence stanzas `c` got from `from`.
  static std::vector<const xml::Element*> presence_from(const std::vector<xml::Element>& got,
                                                        std::string_view from) {
    std::vector<const xml::Element*> out;
    for (const auto* p : named(got, "presence")) {
      if (p->attr("from") == from) out.push_back(p);
    }
    return out;
  }
};

TEST_F(PresenceTest, InitialPresenceGoesToSubscribersAndProbesTheirs) {
  befriend("alice", "bob");
  auto& bob = connect("bob@example.com/desk");
  send(bob, "<presence><show>away</show></presence>");
  bob.take();
  auto& alice = connect("alice@example.com/phone");
  send(alice, "<presence><status>hi</status></presence>");
  // §4.2.2: bob (subscribed to alice) gets her presence, addressed to his bare JID.
  const auto bob_got = bob.take();
  auto to_bob = presence_from(bob_got, "alice@example.com/phone");
  ASSERT_EQ(to_bob.size(), 1u);
  EXPECT_EQ(to_bob[0]->attr("to"), "bob@example.com");
  EXPECT_EQ(to_bob[0]->child_text("status"), "hi");
  // §4.3: alice gets bob's current presence (the answer to the probe of her contacts).
  const auto alice_got = alice.take();
  // §4.2.2: and her own, back ("including the resource that generated" it).
  EXPECT_EQ(presence_from(alice_got, "alice@example.com/phone").size(), 1u);
  auto to_alice = presence_from(alice_got, "bob@example.com/desk");
  ASSERT_EQ(to_alice.size(), 1u);
  EXPECT_EQ(to_alice[0]->child_text("show"), "away");
}

// §3.1.3: the subscription requests that came while the user was away are redelivered at login.
// Thirty of 200 KiB (about 6 MiB, past the 4 MiB output cap) arrive paced, and the session stays.
TEST_F(PresenceTest, ManyLargePendingSubscriptionRequestsArriveWhole) {
  constexpr int kContacts = 30;
  const std::string status(200 * 1024, 's');
  for (int i = 0; i < kContacts; ++i) {
    store::RosterItem it;
    it.jid = "c" + std::to_string(i) + "@example.com";
    it.state.sub = xmpp::Subscription::kNone;
    it.state.pending_in = true;
    it.in_roster = false;
    it.pending_in_stanza = "<presence type='subscribe' from='" + it.jid +
                           "' to='bob@example.com'><status>" + status + "</status></presence>";
    store().put_roster_item("bob", it);
  }
  auto& bob = connect("bob@example.com/desk");
  bob.transport().set_write_limit(64 * 1024);
  send(bob, "<presence/>");
  std::set<std::string> from;
  std::size_t most = 0;
  for (int step = 0; step < 10000 && from.size() < kContacts; ++step) {
    most = std::max(most, bob.session()->out_queue().unwritten_bytes());
    ASSERT_FALSE(bob.session()->closed()) << "cut off after " << from.size();
    const auto got = bob.take();
    for (const auto* p : named(got, "presence")) {
      if (p->attr("type") == "subscribe") {
        EXPECT_EQ(p->child_text("status").size(), status.size());
        from.insert(std::string(p->attr("from")));
      }
    }
    bob.transport().unblock();
    run();
  }
  EXPECT_EQ(from.size(), static_cast<std::size_t>(kContacts));
  EXPECT_LE(most, 256 * 1024 + status.size() + 1024);
  EXPECT_FALSE(bob.session()->closed());
}

TEST_F(PresenceTest, NoPresenceForThoseWithoutASubscription) {
  auto& bob = connect("bob@example.com/desk");
  send(bob, "<presence/>");
  bob.take();
  auto& alice = connect("alice@example.com/phone");
  send(alice, "<presence/>");
  EXPECT_TRUE(presence_from(bob.take(), "alice@example.com/phone").empty());
  EXPECT_TRUE(presence_from(alice.take(), "bob@example.com/desk").empty());
}

TEST_F(PresenceTest, UnavailableWhenTheSessionEnds) {
  befriend("alice", "bob");
  auto& bob = connect("bob@example.com/desk");
  send(bob, "<presence/>");
  auto& alice = connect("alice@example.com/phone");
  send(alice, "<presence/>");
  bob.take();
  alice.transport().drop();
  run();
  // §4.5.2: the contacts learn the resource is gone.
  const auto bob_got = bob.take();
  auto gone = presence_from(bob_got, "alice@example.com/phone");
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0]->attr("type"), "unavailable");
  // The account's last resource went: its last activity is the clock's time (XEP-0012).
  auto last = store().last_activity("alice");
  ASSERT_TRUE(last);
  EXPECT_EQ(last->logout_unix, clock_->ms / 1000);
}

TEST_F(PresenceTest, SubscriptionHandshake) {
  auto& alice = connect("alice@example.com/phone");
  auto& bob = connect("bob@example.com/desk");
  for (Client* c : {&alice, &bob}) {
    send(*c, "<iq type='get' id='g'><query xmlns='jabber:iq:roster'/></iq>");
    send(*c, "<presence/>");
    c->take();
  }
  // §3.1.2: alice asks; her roster shows the pending request (ask='subscribe').
  send(alice, "<presence to='bob@example.com' type='subscribe'/>");
  const auto alice_got = alice.take();
  auto pushes = named(alice_got, "iq");
  ASSERT_EQ(pushes.size(), 1u);
  const xml::Element* item = pushes[0]->child("query", ns::kRoster)->child("item", ns::kRoster);
  EXPECT_EQ(item->attr("jid"), "bob@example.com");
  EXPECT_EQ(item->attr("subscription"), "none");
  EXPECT_EQ(item->attr("ask"), "subscribe");
  // §3.1.3: bob gets the request from alice's bare JID.
  const auto bob_got = bob.take();
  auto req = presence_from(bob_got, "alice@example.com");
  ASSERT_EQ(req.size(), 1u);
  EXPECT_EQ(req[0]->attr("type"), "subscribe");

  // §3.1.5: bob approves; both rosters change, alice gets bob's presence.
  send(bob, "<presence to='alice@example.com' type='subscribed'/>");
  auto to_alice = alice.take();
  bool pushed_to = false;
  for (const auto* iq : named(to_alice, "iq")) {
    const xml::Element* it = iq->child("query", ns::kRoster)->child("item", ns::kRoster);
    if (it->attr("jid") == "bob@example.com" && it->attr("subscription") == "to") {
      pushed_to = true;
    }
  }
  EXPECT_TRUE(pushed_to);
  bool subscribed = false;
  bool available = false;
  for (const auto* p : named(to_alice, "presence")) {
    if (p->attr("from") == "bob@example.com" && p->attr("type") == "subscribed") subscribed = true;
    if (p->attr("from") == "bob@example.com/desk" && p->attr("type").empty()) available = true;
  }
  EXPECT_TRUE(subscribed);
  EXPECT_TRUE(available) << "§3.1.5: the contact's current presence follows the approval";
  auto a = store().roster_item("alice", "bob@example.com");
  auto b = store().roster_item("bob", "alice@example.com");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->state.sub, xmpp::Subscription::kTo);
  EXPECT_FALSE(a->state.pending_out);
  EXPECT_EQ(b->state.sub, xmpp::Subscription::kFrom);
  EXPECT_FALSE(b->state.pending_in);
}

TEST_F(PresenceTest, SubscriptionRequestToNoAccountIsRefused) {
  auto& alice = connect("alice@example.com/phone");
  send(alice, "<presence/>");
  alice.take();
  send(alice, "<presence to='nobody@example.com' type='subscribe'/>");
  // §3.1.3: answered 'unsubscribed' on the missing account's behalf.
  auto a = store().roster_item("alice", "nobody@example.com");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->state.sub, xmpp::Subscription::kNone);
  EXPECT_FALSE(a->state.pending_out);
}

}  // namespace
}  // namespace kabar::server
