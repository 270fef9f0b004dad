// Blocking Command (XEP-0191) through scripted sessions.
#include "server/modules/testing/module_test.h"
#include "xml/serializer.h"

namespace kabar::server {
namespace {

using testing::Client;
using testing::ModuleTest;
using testing::named;

constexpr std::string_view kNs = "urn:xmpp:blocking";

class BlockingTest : public ModuleTest {
 protected:
  void SetUp() override {
    for (const char* u : {"alice", "bob", "carol", "dave"}) add_account(u);
  }
  void befriend(const std::string& a, const std::string& b) {
    store::RosterItem it;
    it.state.sub = xmpp::Subscription::kBoth;
    it.jid = b + "@example.com";
    store().put_roster_item(a, it);
    it.jid = a + "@example.com";
    store().put_roster_item(b, it);
  }
  Client& online(std::string_view full) {
    Client& c = connect(full);
    send(c, "<presence/>");
    for (auto& cl : clients_) cl->take();
    return c;
  }
  // Sends an IQ and returns the reply of that id.
  xml::Element iq(Client& c, std::string_view xml, std::vector<xml::Element>* rest = nullptr) {
    send(c, xml);
    auto got = c.take();
    xml::Element reply;
    for (auto& e : got) {
      if (e.name() == "iq" && (e.attr("type") == "result" || e.attr("type") == "error")) {
        reply = e;
      } else if (rest != nullptr) {
        rest->push_back(e);
      }
    }
    return reply;
  }
  static std::vector<std::string> items(const xml::Element* list) {
    std::vector<std::string> out;
    if (list == nullptr) return out;
    for (const auto* i : list->children("item", kNs)) out.emplace_back(i->attr("jid"));
    return out;
  }
  static bool has_condition(const xml::Element& e, std::string_view cond) {
    const xml::Element* err = e.child("error");
    return err != nullptr && err->child(cond) != nullptr;
  }
};

TEST_F(BlockingTest, BlockUnblockAndTheList) {
  auto& a = online("alice@example.com/home");
  auto r = iq(a, "<iq type='get' id='g'><blocklist xmlns='urn:xmpp:blocking'/></iq>");
  ASSERT_EQ(r.attr("type"), "result");
  ASSERT_NE(r.child("blocklist", kNs), nullptr);
  EXPECT_TRUE(items(r.child("blocklist", kNs)).empty());
  r = iq(a,
         "<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item jid='Bob@Example.com'/>"
         "<item jid='evil.example'/></block></iq>");
  EXPECT_EQ(r.attr("type"), "result");
  r = iq(a, "<iq type='get' id='g2'><blocklist xmlns='urn:xmpp:blocking'/></iq>");
  EXPECT_EQ(items(r.child("blocklist", kNs)),
            (std::vector<std::string>{"bob@example.com", "evil.example"}));
  EXPECT_EQ(store().blocklist("alice"),
            (std::vector<std::string>{"bob@example.com", "evil.example"}));
  EXPECT_NE(server_.account_flags("alice") & kBlocksJids, 0u);
  r = iq(a,
         "<iq type='set' id='u'><unblock xmlns='urn:xmpp:blocking'><item jid='evil.example'/>"
         "</unblock></iq>");
  EXPECT_EQ(r.attr("type"), "result");
  EXPECT_EQ(store().blocklist("alice"), std::vector<std::string>{"bob@example.com"});
  // §3.4: an empty unblock unblocks everyone.
  r = iq(a, "<iq type='set' id='u2'><unblock xmlns='urn:xmpp:blocking'/></iq>");
  EXPECT_EQ(r.attr("type"), "result");
  EXPECT_TRUE(store().blocklist("alice").empty());
  EXPECT_EQ(server_.account_flags("alice") & kBlocksJids, 0u);
}

TEST_F(BlockingTest, BadRequests) {
  auto& a = online("alice@example.com/home");
  // §3.3: a block with no item.
  auto r = iq(a, "<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'/></iq>");
  EXPECT_TRUE(has_condition(r, "bad-request"));
  r = iq(a,
         "<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item jid='a@@b'/></block>"
         "</iq>");
  EXPECT_TRUE(has_condition(r, "jid-malformed"));
  r = iq(a,
         "<iq type='get' id='b'><block xmlns='urn:xmpp:blocking'><item jid='x@y'/></block>"
         "</iq>");
  EXPECT_TRUE(has_condition(r, "bad-request"));
  EXPECT_TRUE(store().blocklist("alice").empty());
}

TEST_F(BlockingTest, PushesGoToResourcesThatAskedForTheList) {
  auto& a1 = online("alice@example.com/one");
  auto& a2 = online("alice@example.com/two");
  auto& a3 = online("alice@example.com/three");
  iq(a2, "<iq type='get' id='g'><blocklist xmlns='urn:xmpp:blocking'/></iq>");
  iq(a3, "<iq type='get' id='g'><blocklist xmlns='urn:xmpp:blocking'/></iq>");
  iq(a1,
     "<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item jid='carol@example.com'/>"
     "</block></iq>");
  for (Client* c : {&a2, &a3}) {
    auto got = c->take();
    auto pushes = named(got, "iq");
    ASSERT_EQ(pushes.size(), 1u);
    EXPECT_EQ(pushes[0]->attr("type"), "set");
    EXPECT_EQ(items(pushes[0]->child("block", kNs)), std::vector<std::string>{"carol@example.com"});
  }
  // The requester did not ask for the list: only its result.
  EXPECT_TRUE(named(a1.take(), "iq").empty());
  iq(a1, "<iq type='set' id='u'><unblock xmlns='urn:xmpp:blocking'/></iq>");
  auto got = a2.take();
  ASSERT_EQ(named(got, "iq").size(), 1u);
  const xml::Element* u = named(got, "iq")[0]->child("unblock", kNs);
  ASSERT_NE(u, nullptr);
  EXPECT_TRUE(items(u).empty());
}

TEST_F(BlockingTest, InboundFromABlockedJid) {
  auto& a = online("alice@example.com/home");
  auto& b = online("bob@example.com/desk");
  iq(a,
     "<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item jid='bob@example.com'/>"
     "</block></iq>");
  // §3.5: a message is answered service-unavailable and not delivered (to the bare JID or a
  // full one, and when alice is offline too).
  for (const char* to : {"alice@example.com", "alice@example.com/home"}) {
    send(b, std::string("<message to='") + to + "' type='chat' id='m'><body>hi</body></message>");
    EXPECT_TRUE(named(a.take(), "message").empty()) << to;
    auto got = b.take();
    ASSERT_EQ(named(got, "message").size(), 1u) << to;
    EXPECT_EQ(named(got, "message")[0]->attr("type"), "error");
    EXPECT_TRUE(has_condition(*named(got, "message")[0], "service-unavailable"));
  }
  // An IQ request: the same; a result: dropped.
  send(b,
       "<iq to='alice@example.com/home' type='get' id='v'><query xmlns='jabber:iq:version'/>"
       "</iq>");
  EXPECT_TRUE(named(a.take(), "iq").empty());
  auto got = b.take();
  ASSERT_EQ(named(got, "iq").size(), 1u);
  EXPECT_TRUE(has_condition(*named(got, "iq")[0], "service-unavailable"));
  send(b, "<iq to='alice@example.com' type='get' id='v2'><vCard xmlns='vcard-temp'/></iq>");
  got = b.take();
  ASSERT_EQ(named(got, "iq").size(), 1u);
  EXPECT_TRUE(has_condition(*named(got, "iq")[0], "service-unavailable"));
  send(b, "<iq to='alice@example.com/home' type='result' id='r'/>");
  EXPECT_TRUE(named(a.take(), "iq").empty());
  {
    const auto left = b.take();
    EXPECT_TRUE(left.empty()) << (left.empty() ? "" : xml::serialize(left[0], "jabber:client"));
  }
  // Presence (directed, subscription): dropped, no error.
  send(b, "<presence to='alice@example.com/home'/>");
  send(b, "<presence to='alice@example.com' type='subscribe'/>");
  {
    const auto left = a.take();
    EXPECT_TRUE(left.empty()) << (left.empty() ? "" : xml::serialize(left[0], "jabber:client"));
  }
  EXPECT_TRUE(named(b.take(), "presence").empty());
  // Someone else still gets through.
  auto& c = online("carol@example.com/x");
  send(c, "<message to='alice@example.com' type='chat'><body>hi</body></message>");
  EXPECT_EQ(named(a.take(), "message").size(), 1u);
}

TEST_F(BlockingTest, OutboundToABlockedJidIsRefusedWithBlocked) {
  auto& a = online("alice@example.com/home");
  auto& b = online("bob@example.com/desk");
  iq(a,
     "<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item jid='bob@example.com'/>"
     "</block></iq>");
  send(a, "<message to='bob@example.com' type='chat' id='o'><body>hi</body></message>");
  EXPECT_TRUE(named(b.take(), "message").empty());
  auto got = a.take();
  ASSERT_EQ(named(got, "message").size(), 1u);
  const xml::Element* m = named(got, "message")[0];
  EXPECT_EQ(m->attr("type"), "error");
  EXPECT_TRUE(has_condition(*m, "not-acceptable"));
  ASSERT_NE(m->child("error"), nullptr);
  EXPECT_NE(m->child("error")->child("blocked", "urn:xmpp:blocking:errors"), nullptr);
  auto r = iq(a,
              "<iq to='bob@example.com/desk' type='get' id='q'><ping xmlns='urn:xmpp:ping'/>"
              "</iq>");
  EXPECT_TRUE(has_condition(r, "not-acceptable"));
  EXPECT_TRUE(named(b.take(), "iq").empty());
  // The user's own resources are never blocked (§5), even under a domain block.
  iq(a,
     "<iq type='set' id='b2'><block xmlns='urn:xmpp:blocking'><item jid='example.com'/>"
     "</block></iq>");
  auto& a2 = online("alice@example.com/phone");
  send(a, "<message to='alice@example.com/phone' type='chat'><body>me</body></message>");
  EXPECT_EQ(named(a2.take(), "message").size(), 1u);
  // A full-JID item blocks only that resource.
  iq(a, "<iq type='set' id='u'><unblock xmlns='urn:xmpp:blocking'/></iq>");
  iq(a,
     "<iq type='set' id='b3'><block xmlns='urn:xmpp:blocking'>"
     "<item jid='bob@example.com/other'/></block></iq>");
  send(b, "<message to='alice@example.com/home' type='chat'><body>ok</body></message>");
  EXPECT_EQ(named(a.take(), "message").size(), 1u);
}

TEST_F(BlockingTest, PresenceHiddenBothWaysAndBackOnUnblock) {
  befriend("alice", "bob");
  auto& a = online("alice@example.com/home");
  auto& b = online("bob@example.com/desk");
  for (auto& cl : clients_) cl->take();
  iq(a,
     "<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item jid='bob@example.com'/>"
     "</block></iq>");
  // Unavailable both ways.
  auto bob_got = b.take();
  auto p = named(bob_got, "presence");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0]->attr("from"), "alice@example.com/home");
  EXPECT_EQ(p[0]->attr("type"), "unavailable");
  std::vector<xml::Element> rest;
  send(a, "<presence><show>away</show></presence>");
  EXPECT_TRUE(named(b.take(), "presence").empty());  // the broadcast skips bob
  send(b, "<presence><show>dnd</show></presence>");
  auto alice_got = a.take();
  for (const auto* q : named(alice_got, "presence")) {
    EXPECT_NE(q->attr("from"), "bob@example.com/desk");
  }
  // A new resource of bob does not see alice either (initial presence), nor she it.
  auto& b2 = connect("bob@example.com/phone");
  send(b2, "<presence/>");
  // (What take() returns is kept: named() points into it, and a temporary in a range-for's
  // initializer is gone before the loop body runs.)
  auto b2_got = b2.take();
  for (const auto* q : named(b2_got, "presence")) {
    EXPECT_NE(q->attr("from"), "alice@example.com/home");
  }
  alice_got = a.take();
  for (const auto* q : named(alice_got, "presence")) {
    EXPECT_NE(q->attr("from"), "bob@example.com/phone");
  }
  b.take();
  // Unblock: the current presence both ways.
  iq(a,
     "<iq type='set' id='u'><unblock xmlns='urn:xmpp:blocking'><item jid='bob@example.com'/>"
     "</unblock></iq>",
     &rest);
  bool got_bob = false;
  for (const auto* q : named(rest, "presence")) {
    if (q->attr("from") == "bob@example.com/desk") {
      got_bob = true;
      EXPECT_EQ(q->child_text("show"), "dnd");
    }
  }
  EXPECT_TRUE(got_bob);
  bob_got = b.take();
  ASSERT_EQ(named(bob_got, "presence").size(), 1u);
  EXPECT_EQ(named(bob_got, "presence")[0]->child_text("show"), "away");
}

TEST_F(BlockingTest, BlocklistsAreLoadedFromTheStore) {
  store().block("alice", {"bob@example.com"});
  auto& a = online("alice@example.com/home");
  auto& b = online("bob@example.com/desk");
  EXPECT_NE(server_.account_flags("alice") & kBlocksJids, 0u);
  send(b, "<message to='alice@example.com' type='chat'><body>hi</body></message>");
  EXPECT_TRUE(named(a.take(), "message").empty());
  auto r = iq(a, "<iq type='get' id='g'><blocklist xmlns='urn:xmpp:blocking'/></iq>");
  EXPECT_EQ(items(r.child("blocklist", kNs)), std::vector<std::string>{"bob@example.com"});
}

TEST_F(BlockingTest, AccountsWithoutBlocksKeepTheBytePath) {
  // The byte fast path forwards a message as the bytes it came in (double quotes kept); the
  // full path serializes it again. Only the blocking account's messages leave the byte path.
  auto& a = online("alice@example.com/home");
  auto& b = online("bob@example.com/desk");
  auto& d = online("dave@example.com/x");
  iq(a,
     "<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item jid='carol@example.com'/>"
     "</block></iq>");
  EXPECT_EQ(server_.account_flags("bob"), 0u);
  send(b, "<message to=\"dave@example.com\" type=\"chat\"><body>x</body></message>");
  EXPECT_NE(d.transport().written().find("type=\"chat\""), std::string::npos)
      << d.transport().written();
  d.take();
  send(b, "<message to=\"alice@example.com\" type=\"chat\"><body>x</body></message>");
  EXPECT_NE(a.transport().written().find("type='chat'"), std::string::npos)
      << a.transport().written();
  ASSERT_EQ(named(a.take(), "message").size(), 1u);
}

TEST_F(BlockingTest, ADeletedAccountsBlocklistIsForgotten) {
  auto& a = online("alice@example.com/home");
  iq(a,
     "<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item jid='bob@example.com'/>"
     "</block></iq>");
  auto r = iq(a,
              "<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query>"
              "</iq>");
  EXPECT_EQ(r.attr("type"), "result");
  EXPECT_TRUE(store().blocklist("alice").empty());
  EXPECT_EQ(server_.account_flags("alice") & kBlocksJids, 0u);
  // The name registered again starts with an empty list, and bob gets through.
  add_account("alice");
  auto& a2 = online("alice@example.com/new");
  r = iq(a2, "<iq type='get' id='g'><blocklist xmlns='urn:xmpp:blocking'/></iq>");
  EXPECT_TRUE(items(r.child("blocklist", kNs)).empty());
  auto& b = online("bob@example.com/desk");
  send(b, "<message to='alice@example.com' type='chat'><body>hi</body></message>");
  EXPECT_EQ(named(a2.take(), "message").size(), 1u);
}

}  // namespace
}  // namespace kabar::server
