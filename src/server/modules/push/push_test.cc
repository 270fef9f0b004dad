// Push notifications (XEP-0357) through scripted sessions: the push service is a client of the
// same server (push@example.com/app), as in the integration test.
#include "server/modules/push/push.h"

#include <map>

#include "server/modules/testing/module_test.h"

namespace kabar::server {
namespace {

using testing::Client;
using testing::ModuleTest;
using testing::named;

constexpr std::string_view kPushService = "push@example.com/app";

std::string push_chat(std::string_view to, int i) {
  return "<message to='" + std::string(to) + "' type='chat' id='p" + std::to_string(i) +
         "'><body>secret " + std::to_string(i) + "</body></message>";
}

// The fields of a notification's summary form, by var.
std::map<std::string, std::string> push_summary(const xml::Element& iq) {
  std::map<std::string, std::string> out;
  const xml::Element* pubsub = iq.child("pubsub", "http://jabber.org/protocol/pubsub");
  if (pubsub == nullptr) return out;
  const xml::Element* publish = pubsub->child("publish");
  if (publish == nullptr) return out;
  const xml::Element* item = publish->child("item");
  const xml::Element* n = item ? item->child("notification", "urn:xmpp:push:0") : nullptr;
  const xml::Element* x = n ? n->child("x", "jabber:x:data") : nullptr;
  if (x == nullptr) return out;
  for (const xml::Element* f : x->children("field")) {
    out[std::string(f->attr("var"))] = f->child_text("value");
  }
  return out;
}

class PushTest : public ModuleTest {
 protected:
  PushTest() = default;
  explicit PushTest(Config cfg) : ModuleTest(std::move(cfg)) {}
  void SetUp() override {
    add_account("alice");
    add_account("bob");
    add_account("push");
  }

  // Sends an IQ from `c` and returns the answer with that id.
  xml::Element iq(Client& c, const std::string& xml, std::string_view id) {
    send(c, xml);
    for (auto& e : c.take()) {
      if (e.name() == "iq" && e.attr("id") == id) return e;
    }
    ADD_FAILURE() << "no answer to " << id;
    return xml::Element("none", "");
  }

  static std::string enable_xml(std::string_view node, std::string_view id = "e1") {
    return "<iq type='set' id='" + std::string(id) + "'><enable xmlns='urn:xmpp:push:0' jid='" +
           std::string(kPushService) + "' node='" + std::string(node) +
           "'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>"
           "http://jabber.org/protocol/pubsub#publish-options</value></field>"
           "<field var='secret'><value>s3cr3t</value></field></x></enable></iq>";
  }

  // The publish requests the push service has received since the last call.
  static std::vector<xml::Element> publishes(Client& service) {
    std::vector<xml::Element> out;
    for (auto& e : service.take()) {
      if (e.name() == "iq" && e.attr("type") == "set") out.push_back(std::move(e));
    }
    return out;
  }

  void answer(Client& service, const xml::Element& req) {
    send(service, "<iq type='result' to='example.com' id='" + std::string(req.attr("id")) + "'/>");
  }

  // alice's phone enables notifications (node n1), then goes away without stream management.
  void enable_and_leave() {
    auto& phone = connect("alice@example.com/phone");
    EXPECT_EQ(iq(phone, enable_xml("n1"), "e1").attr("type"), "result");
    phone.transport().drop();
    run();
  }
};

TEST_F(PushTest, AdvertisedOnTheAccount) {
  auto& alice = connect("alice@example.com/phone");
  auto r = iq(alice,
              "<iq type='get' id='d1' to='alice@example.com'><query "
              "xmlns='http://jabber.org/protocol/disco#info'/></iq>",
              "d1");
  bool found = false;
  for (const auto* q : r.children("query")) {
    for (const auto* f : q->children("feature")) found = found || f->attr("var") == kPushNs;
  }
  EXPECT_TRUE(found);
}

TEST_F(PushTest, EnableStoresTheRegistrationWithItsOptions) {
  auto& alice = connect("alice@example.com/phone");
  EXPECT_EQ(iq(alice, enable_xml("n1"), "e1").attr("type"), "result");
  // §5: the same service and node again replaces the options.
  EXPECT_EQ(iq(alice, enable_xml("n1", "e2"), "e2").attr("type"), "result");
  EXPECT_EQ(iq(alice,
               "<iq type='set' id='e3' to='alice@example.com'><enable xmlns='urn:xmpp:push:0' "
               "jid='push@example.com/app' node='n2'/></iq>",
               "e3")
                .attr("type"),
            "result");
  auto regs = store().push_registrations("alice");
  ASSERT_EQ(regs.size(), 2u);
  EXPECT_EQ(regs[0].jid, kPushService);
  EXPECT_EQ(regs[0].node, "n1");
  EXPECT_NE(regs[0].options.find("s3cr3t"), std::string::npos);
  EXPECT_EQ(regs[1].node, "n2");
  EXPECT_TRUE(regs[1].options.empty());
}

TEST_F(PushTest, BadRequestsAreRefused) {
  auto& alice = connect("alice@example.com/phone");
  auto condition = [&](const std::string& payload, std::string to = "") {
    auto r = iq(
        alice,
        "<iq type='set' id='b'" + (to.empty() ? "" : " to='" + to + "'") + ">" + payload + "</iq>",
        "b");
    EXPECT_EQ(r.attr("type"), "error") << payload;
    const xml::Element* err = r.child("error");
    const xml::Element* c = err ? err->first_child() : nullptr;
    return c ? c->name() : std::string();
  };
  EXPECT_EQ(condition("<enable xmlns='urn:xmpp:push:0' node='n'/>"), "bad-request");
  EXPECT_EQ(condition("<enable xmlns='urn:xmpp:push:0' jid='a@b@c' node='n'/>"), "jid-malformed");
  EXPECT_EQ(condition("<enable xmlns='urn:xmpp:push:0' jid='push.example.org'/>"), "bad-request");
  EXPECT_EQ(condition("<enable xmlns='urn:xmpp:push:0' jid='alice@example.com/x' node='n'/>"),
            "bad-request");
  EXPECT_EQ(condition("<enable xmlns='urn:xmpp:push:0' jid='push.example.org' node='n'><x "
                      "xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>"
                      "urn:example</value></field></x></enable>"),
            "bad-request");
  EXPECT_EQ(condition("<disable xmlns='urn:xmpp:push:0'/>"), "bad-request");
  EXPECT_EQ(condition("<enable xmlns='urn:xmpp:push:0' jid='push.example.org' node='n'/>",
                      "bob@example.com"),
            "forbidden");
  // A get is not a request the XEP defines.
  auto r = iq(alice,
              "<iq type='get' id='g'><enable xmlns='urn:xmpp:push:0' jid='push.example.org' "
              "node='n'/></iq>",
              "g");
  EXPECT_EQ(r.attr("type"), "error");
  EXPECT_TRUE(store().push_registrations("alice").empty());
}

TEST_F(PushTest, DisableOneNodeOrTheWholeService) {
  auto& alice = connect("alice@example.com/phone");
  iq(alice, enable_xml("n1"), "e1");
  iq(alice, enable_xml("n2", "e2"), "e2");
  iq(alice,
     "<iq type='set' id='e3'><enable xmlns='urn:xmpp:push:0' jid='push.example.org' "
     "node='n1'/></iq>",
     "e3");
  ASSERT_EQ(store().push_registrations("alice").size(), 3u);
  EXPECT_EQ(iq(alice,
               "<iq type='set' id='d1'><disable xmlns='urn:xmpp:push:0' "
               "jid='push@example.com/app' node='n2'/></iq>",
               "d1")
                .attr("type"),
            "result");
  EXPECT_EQ(store().push_registrations("alice").size(), 2u);
  // §6: without a node, every node of that service.
  iq(alice, enable_xml("n3", "e4"), "e4");
  EXPECT_EQ(iq(alice,
               "<iq type='set' id='d2'><disable xmlns='urn:xmpp:push:0' "
               "jid='push@example.com/app'/></iq>",
               "d2")
                .attr("type"),
            "result");
  auto regs = store().push_registrations("alice");
  ASSERT_EQ(regs.size(), 1u);
  EXPECT_EQ(regs[0].jid, "push.example.org");
}

TEST_F(PushTest, OfflineMessageNotifiesWithTheSummaryAndNoBody) {
  auto& service = connect(kPushService);
  auto& bob = connect("bob@example.com/desk");
  enable_and_leave();
  send(bob, push_chat("alice@example.com", 1));
  auto got = publishes(service);
  ASSERT_EQ(got.size(), 1u);
  const xml::Element& req = got[0];
  EXPECT_EQ(req.attr("from"), "example.com");
  EXPECT_EQ(req.attr("to"), kPushService);
  const xml::Element* pubsub = req.child("pubsub", "http://jabber.org/protocol/pubsub");
  ASSERT_NE(pubsub, nullptr);
  EXPECT_EQ(pubsub->child("publish")->attr("node"), "n1");
  auto form = push_summary(req);
  EXPECT_EQ(form["FORM_TYPE"], "urn:xmpp:push:summary");
  EXPECT_EQ(form["message-count"], "1");
  EXPECT_EQ(form["last-message-sender"], "bob@example.com/desk");
  EXPECT_EQ(form.count("last-message-body"), 0u) << "no body unless configured";
  // §7: the enable request's form goes out as publish-options.
  const xml::Element* options = pubsub->child("publish-options");
  ASSERT_NE(options, nullptr);
  const xml::Element* x = options->child("x", "jabber:x:data");
  ASSERT_NE(x, nullptr);
  std::string secret;
  for (const auto* f : x->children("field")) {
    if (f->attr("var") == "secret") secret = f->child_text("value");
  }
  EXPECT_EQ(secret, "s3cr3t");
  answer(service, req);
  // The message itself is stored as usual.
  EXPECT_EQ(store().offline_count("alice"), 1u);
  EXPECT_EQ(store().push_registrations("alice").size(), 1u);
}

TEST_F(PushTest, ABurstNotifiesOnceThenAfterTheInterval) {
  auto& service = connect(kPushService);
  auto& bob = connect("bob@example.com/desk");
  enable_and_leave();
  send(bob, push_chat("alice@example.com", 1));
  ASSERT_EQ(publishes(service).size(), 1u);
  send(bob, push_chat("alice@example.com", 2));
  send(bob, push_chat("alice@example.com", 3));
  EXPECT_TRUE(publishes(service).empty()) << "coalesced";
  clock_->ms += 60'000;
  send(bob, push_chat("alice@example.com", 4));
  auto got = publishes(service);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(push_summary(got[0])["message-count"], "4");
  // The account comes back: the next absence notifies at once, counting afresh.
  auto& laptop = connect("alice@example.com/laptop");
  send(laptop, "<presence/>");
  laptop.transport().drop();
  run();
  send(bob, push_chat("alice@example.com", 5));
  got = publishes(service);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(push_summary(got[0])["message-count"], "1");
}

TEST_F(PushTest, NothingWhileASessionIsOnlineAndActive) {
  auto& service = connect(kPushService);
  auto& bob = connect("bob@example.com/desk");
  auto& phone = connect("alice@example.com/phone");
  iq(phone, enable_xml("n1"), "e1");
  send(phone, "<presence/>");
  phone.take();
  send(bob, push_chat("alice@example.com", 1));
  send(bob, push_chat("alice@example.com/phone", 2));
  EXPECT_EQ(named(phone.take(), "message").size(), 2u);
  EXPECT_TRUE(publishes(service).empty());
}

TEST_F(PushTest, OnlyPushWorthyMessagesNotify) {
  auto& service = connect(kPushService);
  auto& bob = connect("bob@example.com/desk");
  enable_and_leave();
  send(bob,
       "<message to='alice@example.com' type='chat'><composing "
       "xmlns='http://jabber.org/protocol/chatstates'/></message>");
  send(bob, "<message to='alice@example.com' type='headline'><body>news</body></message>");
  EXPECT_TRUE(publishes(service).empty());
  // Encrypted content notifies without a body.
  send(bob,
       "<message to='alice@example.com' type='chat'><encrypted "
       "xmlns='eu.siacs.conversations.axolotl'><payload>AAAA</payload></encrypted></message>");
  EXPECT_EQ(publishes(service).size(), 1u);
}

TEST_F(PushTest, HibernatedSessionNotifiesItsRegistration) {
  auto& service = connect(kPushService);
  auto& bob = connect("bob@example.com/desk");
  auto& phone = connect("alice@example.com/phone");
  send(phone, "<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
  const std::string id(phone.take().at(0).attr("id"));
  iq(phone, enable_xml("n1"), "e1");
  send(phone, "<presence/>");
  phone.take();
  const SessionPtr old = phone.session();
  phone.transport().drop();
  run();
  ASSERT_TRUE(old->detached());
  send(bob, push_chat("alice@example.com", 1));
  auto got = publishes(service);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(push_summary(got[0])["message-count"], "1");
  EXPECT_EQ(push_summary(got[0])["last-message-sender"], "bob@example.com/desk");
  answer(service, got[0]);
  EXPECT_EQ(store().offline_count("alice"), 0u) << "queued in the waiting session";
  // A full JID reaches it too (counted in the same burst).
  send(bob, push_chat("alice@example.com/phone", 2));
  EXPECT_TRUE(publishes(service).empty());
  // Resumed: nothing more while it is connected.
  auto& again = opened("alice");
  send(again, "<resume xmlns='urn:xmpp:sm:3' previd='" + id + "' h='0'/>");
  EXPECT_NE(again.transport().take_written().find("<resumed"), std::string::npos);
  send(bob, push_chat("alice@example.com/phone", 3));
  EXPECT_TRUE(publishes(service).empty());
  EXPECT_EQ(server_.account_flags("alice") & kPushHibernating, 0u);
  again.session()->abort();
  run();
}

TEST_F(PushTest, WhatTheHibernatingSessionNeverAcknowledgedNotifies) {
  auto& service = connect(kPushService);
  auto& bob = connect("bob@example.com/desk");
  auto& phone = connect("alice@example.com/phone");
  send(phone, "<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
  iq(phone, enable_xml("n1"), "e1");
  send(phone, "<presence/>");
  // Written to a connection that has died unnoticed: never acknowledged.
  send(bob, push_chat("alice@example.com", 1));
  send(bob,
       "<message to='alice@example.com' type='chat'><active "
       "xmlns='http://jabber.org/protocol/chatstates'/></message>");
  EXPECT_TRUE(publishes(service).empty()) << "the session looks active";
  phone.transport().drop();
  run();
  auto got = publishes(service);
  ASSERT_EQ(got.size(), 1u) << "at hibernation, for the unacknowledged message";
  EXPECT_EQ(push_summary(got[0])["message-count"], "1");
  EXPECT_EQ(push_summary(got[0])["last-message-sender"], "bob@example.com/desk");
}

TEST_F(PushTest, AHibernationThatExpiresDoesNotNotifyTwice) {
  auto& service = connect(kPushService);
  auto& bob = connect("bob@example.com/desk");
  auto& phone = connect("alice@example.com/phone");
  send(phone, "<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
  iq(phone, enable_xml("n1"), "e1");
  send(phone, "<presence/>");
  phone.take();
  const SessionPtr old = phone.session();
  phone.transport().drop();
  run();
  send(bob, push_chat("alice@example.com", 1));
  ASSERT_EQ(publishes(service).size(), 1u);
  // The window passes: the message goes to offline storage, without a second notification.
  clock_->ms += 301'000;
  old->sm_tick(clock_->ms);
  run();
  EXPECT_TRUE(old->closed());
  EXPECT_EQ(store().offline_count("alice"), 1u);
  EXPECT_TRUE(publishes(service).empty());
  EXPECT_EQ(server_.account_flags("alice") & kPushHibernating, 0u);
  // Now offline: the next message notifies as for any offline account.
  send(bob, push_chat("alice@example.com", 2));
  EXPECT_EQ(publishes(service).size(), 1u);
}

TEST_F(PushTest, AnErrorAnswerDisablesTheRegistration) {
  auto& service = connect(kPushService);
  auto& bob = connect("bob@example.com/desk");
  enable_and_leave();
  send(bob, push_chat("alice@example.com", 1));
  auto got = publishes(service);
  ASSERT_EQ(got.size(), 1u);
  // 'wait' is transient: kept.
  send(service, "<iq type='error' to='example.com' id='" + std::string(got[0].attr("id")) +
                    "'><error type='wait'><resource-constraint "
                    "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
  EXPECT_EQ(store().push_registrations("alice").size(), 1u);
  clock_->ms += 60'000;
  send(bob, push_chat("alice@example.com", 2));
  got = publishes(service);
  ASSERT_EQ(got.size(), 1u);
  // An answer from someone else is not the push service's.
  auto& mallory = connect("bob@example.com/mallory");
  send(mallory, "<iq type='error' to='example.com' id='" + std::string(got[0].attr("id")) +
                    "'><error type='cancel'><item-not-found "
                    "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
  EXPECT_EQ(store().push_registrations("alice").size(), 1u);
  // §8: any other error disables it.
  send(service, "<iq type='error' to='example.com' id='" + std::string(got[0].attr("id")) +
                    "'><error type='cancel'><item-not-found "
                    "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
  EXPECT_TRUE(store().push_registrations("alice").empty());
  clock_->ms += 60'000;
  send(bob, push_chat("alice@example.com", 3));
  EXPECT_TRUE(publishes(service).empty());
}

TEST_F(PushTest, AServiceNotOnlineIsDisabledAndARemoteOneKept) {
  auto& bob = connect("bob@example.com/desk");
  auto& phone = connect("alice@example.com/phone");
  iq(phone, enable_xml("n1"), "e1");  // push@example.com/app is not connected
  iq(phone,
     "<iq type='set' id='e2'><enable xmlns='urn:xmpp:push:0' jid='push.example.org' "
     "node='r'/></iq>",
     "e2");
  phone.transport().drop();
  run();
  send(bob, push_chat("alice@example.com", 1));
  auto regs = store().push_registrations("alice");
  ASSERT_EQ(regs.size(), 1u);
  EXPECT_EQ(regs[0].jid, "push.example.org") << "no s2s: never tried, kept";
}

TEST_F(PushTest, ARegistrationInTheStoreIsUsed) {
  // What a restart finds: registrations in the store, no session.
  store().put_push_registration("alice", {std::string(kPushService), "stored", "", 1});
  auto& service = connect(kPushService);
  auto& bob = connect("bob@example.com/desk");
  send(bob, push_chat("alice@example.com", 1));
  auto got = publishes(service);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(
      got[0].child("pubsub", "http://jabber.org/protocol/pubsub")->child("publish")->attr("node"),
      "stored");
}

TEST_F(PushTest, AccountDeletionRemovesTheRegistrations) {
  auto& alice = connect("alice@example.com/phone");
  iq(alice, enable_xml("n1"), "e1");
  ASSERT_EQ(store().push_registrations("alice").size(), 1u);
  send(alice, "<iq type='set' id='r1'><query xmlns='jabber:iq:register'><remove/></query></iq>");
  EXPECT_TRUE(store().push_registrations("alice").empty());
  EXPECT_TRUE(store().all_push_registrations().empty());
  // Registered again, the account has no registration (the module forgot it too).
  add_account("alice");
  auto& service = connect(kPushService);
  auto& bob = connect("bob@example.com/desk");
  send(bob, push_chat("alice@example.com", 1));
  EXPECT_TRUE(publishes(service).empty());
}

class PushWithBodyTest : public PushTest {
 protected:
  static Config with_body() {
    Config cfg = default_config();
    cfg.push_include_body = true;
    cfg.push_min_interval_s = 0;
    return cfg;
  }
  PushWithBodyTest() : PushTest(with_body()) {}
};

TEST_F(PushWithBodyTest, BodyIncludedWhenConfigured) {
  auto& service = connect(kPushService);
  auto& bob = connect("bob@example.com/desk");
  enable_and_leave();
  send(bob, push_chat("alice@example.com", 1));
  send(bob, push_chat("alice@example.com", 2));
  auto got = publishes(service);
  ASSERT_EQ(got.size(), 2u) << "min_interval 0: every message";
  EXPECT_EQ(push_summary(got[0])["last-message-body"], "secret 1");
  EXPECT_EQ(push_summary(got[1])["last-message-body"], "secret 2");
  EXPECT_EQ(push_summary(got[1])["message-count"], "2");
}

}  // namespace
}  // namespace kabar::server
