// Client State Indication (XEP-0352) through scripted sessions over TestTransport.
#include "server/modules/csi/csi.h"

#include "server/modules/testing/module_test.h"

namespace kabar::server {
namespace {

using testing::Client;
using testing::ModuleTest;
using testing::named;

constexpr std::string_view kInactive = "<inactive xmlns='urn:xmpp:csi:0'/>";
constexpr std::string_view kActive = "<active xmlns='urn:xmpp:csi:0'/>";

std::string chat_state(std::string_view to, std::string_view state) {
  return "<message to='" + std::string(to) + "' type='chat'><" + std::string(state) +
         " xmlns='http://jabber.org/protocol/chatstates'/></message>";
}

std::string chat(std::string_view to, std::string_view body) {
  return "<message to='" + std::string(to) + "' type='chat'><body>" + std::string(body) +
         "</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>";
}

std::string show(std::string_view s) {
  return "<presence><show>" + std::string(s) + "</show></presence>";
}

// What a stanza says, in a word, for comparing sequences: "presence bob@example.com/desk away",
// "message bob@example.com/desk composing", "message bob@example.com/desk body:hi".
std::string brief(const xml::Element& e) {
  std::string out = e.name() + " " + std::string(e.attr("from"));
  if (e.name() == "presence") {
    const std::string_view type = e.attr("type");
    out += " " + (type.empty() ? e.child_text("show") : std::string(type));
  } else if (e.name() == "message") {
    if (e.child("body") != nullptr) {
      out += " body:" + e.child_text("body");
    } else {
      for (const auto* c : e.children()) out += " " + c->name();
    }
  } else {
    out += " " + std::string(e.attr("type"));
  }
  return out;
}

std::vector<std::string> briefs(const std::vector<xml::Element>& got) {
  std::vector<std::string> out;
  for (const auto& e : got) out.push_back(brief(e));
  return out;
}

class CsiTest : public ModuleTest {
 protected:
  CsiTest() = default;
  explicit CsiTest(Config cfg) : ModuleTest(std::move(cfg)) {}
  void SetUp() override {
    for (const char* u : {"alice", "bob", "carol"}) add_account(u);
    befriend("alice", "bob");
    befriend("alice", "carol");
  }
  void befriend(const std::string& a, const std::string& b) {
    store::RosterItem it;
    it.state.sub = xmpp::Subscription::kBoth;
    it.jid = b + "@example.com";
    store().put_roster_item(a, it);
    it.jid = a + "@example.com";
    store().put_roster_item(b, it);
  }
  // Alice online and available, bob and carol too, everything so far read.
  void everyone_online() {
    alice_ = &connect("alice@example.com/phone");
    send(*alice_, "<presence/>");
    bob_ = &connect("bob@example.com/desk");
    send(*bob_, "<presence/>");
    carol_ = &connect("carol@example.com/home");
    send(*carol_, "<presence/>");
    alice_->take();
    bob_->take();
    carol_->take();
  }

  Client* alice_ = nullptr;
  Client* bob_ = nullptr;
  Client* carol_ = nullptr;
};

TEST_F(CsiTest, FeatureOfferedAfterAuthentication) {
  bool found = false;
  for (const auto& f : server_.modules().stream_features()) found = found || f.is("csi", kCsiNs);
  EXPECT_TRUE(found);
}

TEST_F(CsiTest, NonzaBeforeAuthenticationIsNotAuthorized) {
  auto& c = opened();
  c.send(kInactive);
  run();
  // RFC 6120 §4.9.3.12: nothing but negotiation before authentication.
  const std::string written = c.transport().take_written();
  EXPECT_NE(written.find("<not-authorized"), std::string::npos) << written;
  EXPECT_TRUE(c.session()->closed());
}

TEST_F(CsiTest, AuthenticatedNotBoundIsIgnored) {
  auto& c = opened();
  c.session()->authenticate_for_test("alice");
  send(c, kInactive);
  EXPECT_FALSE(c.session()->has_hold());
  EXPECT_EQ(c.transport().take_written(), "");
  EXPECT_FALSE(c.session()->closed());
}

TEST_F(CsiTest, NoReplyAndNothingHeldWhileActive) {
  everyone_online();
  send(*alice_, kInactive);
  EXPECT_TRUE(alice_->take().empty());  // §4: no reply
  EXPECT_TRUE(alice_->session()->has_hold());
  send(*alice_, kActive);
  EXPECT_TRUE(alice_->take().empty());
  EXPECT_FALSE(alice_->session()->has_hold());
  // Active again: presence goes at once.
  send(*bob_, show("away"));
  EXPECT_EQ(briefs(alice_->take()), std::vector<std::string>{"presence bob@example.com/desk away"});
  // Active twice, inactive twice: no harm, no reply.
  send(*alice_, kActive);
  send(*alice_, kInactive);
  send(*alice_, kInactive);
  EXPECT_TRUE(alice_->take().empty());
}

TEST_F(CsiTest, UnknownElementIsUnsupported) {
  everyone_online();
  send(*alice_, "<sleepy xmlns='urn:xmpp:csi:0'/>");
  const std::string written = alice_->transport().take_written();
  EXPECT_NE(written.find("<unsupported-stanza-type"), std::string::npos) << written;
}

TEST_F(CsiTest, PresenceIsCoalescedPerFullJid) {
  everyone_online();
  auto& bob_phone = connect("bob@example.com/phone");
  send(bob_phone, "<presence/>");
  alice_->take();
  send(*alice_, kInactive);
  send(*bob_, show("away"));
  send(bob_phone, show("chat"));
  send(*bob_, show("xa"));
  send(*bob_, show("dnd"));
  send(bob_phone, "<presence type='unavailable'/>");
  EXPECT_TRUE(alice_->take().empty());
  send(*alice_, kActive);
  // The latest of each full JID, in the order of their latest update.
  EXPECT_EQ(briefs(alice_->take()),
            (std::vector<std::string>{"presence bob@example.com/desk dnd",
                                      "presence bob@example.com/phone unavailable"}));
}

TEST_F(CsiTest, ChatStatesAreCoalescedPerSender) {
  everyone_online();
  send(*alice_, kInactive);
  send(*bob_, chat_state("alice@example.com/phone", "composing"));
  send(*bob_, chat_state("alice@example.com/phone", "paused"));
  send(*carol_, chat_state("alice@example.com/phone", "composing"));
  send(*bob_, chat_state("alice@example.com/phone", "gone"));
  EXPECT_TRUE(alice_->take().empty());
  send(*alice_, kActive);
  EXPECT_EQ(briefs(alice_->take()),
            (std::vector<std::string>{"message carol@example.com/home composing",
                                      "message bob@example.com/desk gone"}));
}

TEST_F(CsiTest, ABodyGoesAtOnceAfterWhatIsHeldFromItsSender) {
  everyone_online();
  send(*alice_, kInactive);
  send(*carol_, show("away"));
  send(*bob_, show("away"));
  send(*bob_, chat_state("alice@example.com/phone", "composing"));
  send(*bob_, chat("alice@example.com/phone", "hi"));
  // Bob's presence and chat state first, then his message; carol's presence waits.
  EXPECT_EQ(briefs(alice_->take()),
            (std::vector<std::string>{"presence bob@example.com/desk away",
                                      "message bob@example.com/desk composing",
                                      "message bob@example.com/desk body:hi"}));
  send(*alice_, kActive);
  EXPECT_EQ(briefs(alice_->take()),
            std::vector<std::string>{"presence carol@example.com/home away"});
}

TEST_F(CsiTest, ActiveFlushesEverythingInOrderBeforeTheNextStanza) {
  everyone_online();
  send(*alice_, kInactive);
  send(*bob_, show("away"));
  send(*carol_, chat_state("alice@example.com/phone", "composing"));
  send(*carol_, show("xa"));
  // §5.1: <active/> then a ping: what was held comes before the pong.
  send(*alice_, std::string(kActive) + "<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>");
  EXPECT_EQ(briefs(alice_->take()),
            (std::vector<std::string>{"presence bob@example.com/desk away",
                                      "message carol@example.com/home composing",
                                      "presence carol@example.com/home xa", "iq  result"}));
}

TEST_F(CsiTest, UrgentStanzasGoAtOnce) {
  everyone_online();
  add_account("dave");
  auto& dave = connect("dave@example.com/x");
  send(*alice_, kInactive);
  // An IQ to the full JID, after what is held from its sender.
  send(*bob_, show("away"));
  send(*bob_,
       "<iq to='alice@example.com/phone' type='get' id='v1'><query "
       "xmlns='jabber:iq:version'/></iq>");
  EXPECT_EQ(briefs(alice_->take()), (std::vector<std::string>{"presence bob@example.com/desk away",
                                                              "iq bob@example.com/desk get"}));
  // With nothing held, one from someone else.
  send(*carol_,
       "<iq to='alice@example.com/phone' type='get' id='v2'><query "
       "xmlns='jabber:iq:version'/></iq>");
  EXPECT_EQ(briefs(alice_->take()), std::vector<std::string>{"iq carol@example.com/home get"});
  // A subscription request.
  send(dave, "<presence to='alice@example.com' type='subscribe'/>");
  auto got = alice_->take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].attr("type"), "subscribe");
  // A chat state with a receipt beside it is not a chat state alone; an error is an error.
  send(*bob_,
       "<message to='alice@example.com/phone' type='chat'><received xmlns='urn:xmpp:receipts' "
       "id='x'/><active xmlns='http://jabber.org/protocol/chatstates'/></message>");
  EXPECT_EQ(named(alice_->take(), "message").size(), 1u);
  send(*bob_,
       "<message to='alice@example.com/phone' type='error'><composing "
       "xmlns='http://jabber.org/protocol/chatstates'/><error type='cancel'><gone "
       "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>");
  EXPECT_EQ(named(alice_->take(), "message").size(), 1u);
  // Her own presence comes back at once (RFC 6121 §4.2.2).
  send(*alice_, show("away"));
  EXPECT_EQ(briefs(alice_->take()),
            std::vector<std::string>{"presence alice@example.com/phone away"});
}

TEST_F(CsiTest, HeldStanzasAreNotCountedByStreamManagement) {
  everyone_online();
  send(*alice_, "<enable xmlns='urn:xmpp:sm:3'/>");
  alice_->take();
  C2sSession& s = *alice_->session();
  const std::uint32_t handled = s.handled_in();
  send(*alice_, kInactive);
  // A nonza is not a stanza: the client's count does not move (XEP-0198 §4).
  EXPECT_EQ(s.handled_in(), handled);
  const auto queued = s.out_queue().queued();
  send(*bob_, show("away"));
  send(*bob_, chat_state("alice@example.com/phone", "composing"));
  send(*carol_, show("xa"));
  EXPECT_EQ(s.out_queue().queued(), queued);
  EXPECT_TRUE(alice_->take().empty());
  send(*alice_, kActive);
  EXPECT_EQ(s.handled_in(), handled);
  EXPECT_EQ(s.out_queue().queued(), queued + 3);
  auto got = alice_->take();
  EXPECT_EQ(got.size(), 3u + (got.size() > 3 ? 1u : 0u));  // an <r/> may follow
  // The client acknowledges the three it got: exactly what was written.
  send(*alice_, "<a xmlns='urn:xmpp:sm:3' h='" + std::to_string(s.out_queue().written()) + "'/>");
  EXPECT_FALSE(s.closed());
  EXPECT_EQ(s.out_queue().unacked(), 0u);
}

TEST_F(CsiTest, ResumedStreamStartsActiveWithWhatWasHeld) {
  everyone_online();
  send(*alice_, "<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
  const auto enabled = alice_->take();
  ASSERT_EQ(enabled.size(), 1u);
  const std::string id(enabled[0].attr("id"));
  send(*alice_, kInactive);
  send(*bob_, show("away"));
  send(*bob_, chat_state("alice@example.com/phone", "composing"));
  const std::uint64_t written = alice_->session()->out_queue().written();
  alice_->transport().drop();
  run();
  send(*carol_, show("xa"));  // held by the detached session
  // A new stream resumes it.
  Client& again = opened("alice");
  send(again, kInactive);  // before <resume/>: ignored (the resumed stream starts active)
  send(again,
       "<resume xmlns='urn:xmpp:sm:3' previd='" + id + "' h='" + std::to_string(written) + "'/>");
  auto got = again.take();
  ASSERT_FALSE(got.empty());
  EXPECT_TRUE(got[0].is("resumed", "urn:xmpp:sm:3"));
  got.erase(got.begin());
  std::erase_if(got, [](const xml::Element& e) { return e.xmlns() == "urn:xmpp:sm:3"; });
  // §5.2: the resumed stream is active; what was held comes, counted from here on.
  EXPECT_EQ(briefs(got), (std::vector<std::string>{"presence bob@example.com/desk away",
                                                   "message bob@example.com/desk composing",
                                                   "presence carol@example.com/home xa"}));
  EXPECT_FALSE(again.session()->has_hold());
  send(*bob_, show("dnd"));
  EXPECT_EQ(briefs(again.take()), std::vector<std::string>{"presence bob@example.com/desk dnd"});
}

TEST_F(CsiTest, HeldChatStateGoesToAnotherResourceWhenTheSessionEnds) {
  everyone_online();
  auto& laptop = connect("alice@example.com/laptop");
  send(laptop, "<presence/>");
  laptop.take();
  alice_->take();
  send(*alice_, kInactive);
  send(*bob_, chat_state("alice@example.com/phone", "composing"));
  EXPECT_TRUE(named(laptop.take(), "message").empty());
  // The phone's stream ends: the chat state held for it is routed as undelivered (RFC 6121
  // §8.5.3.2.1: to the bare JID, so the other resource).
  send(*alice_, "</stream:stream>");
  const auto all = laptop.take();
  const auto got = named(all, "message");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_NE(got[0]->child("composing", "http://jabber.org/protocol/chatstates"), nullptr);
}

class CsiCapTest : public CsiTest {
 protected:
  static Config small() {
    Config cfg = default_config();
    cfg.csi_max_held = 2;
    return cfg;
  }
  CsiCapTest() : CsiTest(small()) {}
};

TEST_F(CsiCapTest, PastTheCapEverythingHeldIsQueued) {
  everyone_online();
  send(*alice_, kInactive);
  send(*bob_, show("away"));
  send(*carol_, show("away"));
  EXPECT_TRUE(alice_->take().empty());
  send(*bob_, chat_state("alice@example.com/phone", "composing"));
  EXPECT_EQ(briefs(alice_->take()),
            (std::vector<std::string>{"presence bob@example.com/desk away",
                                      "presence carol@example.com/home away",
                                      "message bob@example.com/desk composing"}));
  // Still inactive, holding again from nothing.
  EXPECT_TRUE(alice_->session()->has_hold());
  send(*bob_, show("xa"));
  EXPECT_TRUE(alice_->take().empty());
}

class CsiOffTest : public CsiTest {
 protected:
  static Config off() {
    Config cfg = default_config();
    cfg.csi_enabled = false;
    return cfg;
  }
  CsiOffTest() : CsiTest(off()) {}
};

TEST_F(CsiOffTest, NotOfferedAndRefused) {
  for (const auto& f : server_.modules().stream_features()) EXPECT_FALSE(f.is("csi", kCsiNs));
  everyone_online();
  send(*alice_, kInactive);
  const std::string written = alice_->transport().take_written();
  EXPECT_NE(written.find("<unsupported-stanza-type"), std::string::npos) << written;
}

TEST(CsiWait, Classifies) {
  auto parse = [](std::string_view xml) {
    xml::Element out;
    struct H : xml::StreamHandler {
      xml::Element* out;
      void on_stream_open(const xml::Element&, std::string_view) override {}
      void on_element(xml::Element&& e) override { *out = std::move(e); }
      void on_stream_close() override {}
    } h;
    h.out = &out;
    xml::StreamParser p(h);
    p.feed("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>");
    p.feed(xml);
    return out;
  };
  const std::string me = "a@x/r";
  EXPECT_EQ(csi_wait(parse("<presence from='b@x/r'/>"), me), CsiWait::kPresence);
  EXPECT_EQ(csi_wait(parse("<presence from='b@x/r' type='unavailable'/>"), me), CsiWait::kPresence);
  for (const char* t :
       {"subscribe", "subscribed", "unsubscribe", "unsubscribed", "error", "probe"}) {
    EXPECT_EQ(csi_wait(parse("<presence from='b@x/r' type='" + std::string(t) + "'/>"), me),
              CsiWait::kNow)
        << t;
  }
  EXPECT_EQ(csi_wait(parse("<presence/>"), me), CsiWait::kNow);  // from the server
  EXPECT_EQ(csi_wait(parse("<presence from='a@x/r'/>"), me), CsiWait::kNow);
  const std::string cs = "<paused xmlns='http://jabber.org/protocol/chatstates'/>";
  EXPECT_EQ(csi_wait(parse("<message from='b@x/r' type='chat'>" + cs + "</message>"), me),
            CsiWait::kChatState);
  EXPECT_EQ(csi_wait(parse("<message from='b@x/r'><thread>t</thread>" + cs +
                           "<no-store xmlns='urn:xmpp:hints'/><stanza-id xmlns='urn:xmpp:sid:0' "
                           "by='a@x' id='1'/></message>"),
                     me),
            CsiWait::kChatState);
  EXPECT_EQ(
      csi_wait(parse("<message from='b@x/r' type='chat'><body>hi</body>" + cs + "</message>"), me),
      CsiWait::kNow);
  EXPECT_EQ(csi_wait(parse("<message from='b@x/r' type='chat'/>"), me), CsiWait::kNow);
  EXPECT_EQ(csi_wait(parse("<message from='b@x/r' type='groupchat'>" + cs + "</message>"), me),
            CsiWait::kNow);
  EXPECT_EQ(csi_wait(parse("<message from='b@x/r'><delay xmlns='urn:xmpp:delay' stamp='x'/>" + cs +
                           "</message>"),
                     me),
            CsiWait::kNow);
  EXPECT_EQ(csi_wait(parse("<iq from='b@x/r' type='get' id='1'/>"), me), CsiWait::kNow);
}

}  // namespace
}  // namespace kabar::server
