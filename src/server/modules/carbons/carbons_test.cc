// Message Carbons (XEP-0280) through scripted sessions.
#include "server/modules/carbons/carbons.h"

#include "server/modules/testing/module_test.h"
#include "xml/serializer.h"
#include "xmpp/stanza.h"

namespace kabar::server {
namespace {

using testing::Client;
using testing::ModuleTest;
using testing::named;

// One element parsed as a stanza of a jabber:client stream.
xml::Element parse_one(std::string_view bytes) {
  auto e = xmpp::parse_stanza(bytes);
  EXPECT_TRUE(e.has_value()) << bytes;
  return e ? std::move(*e) : xml::Element();
}

class CarbonsTest : public ModuleTest {
 protected:
  void SetUp() override {
    add_account("romeo");
    add_account("juliet");
    add_account("tybalt");
  }
  // A bound, available session; with carbons enabled when `carbons`.
  Client& online(std::string_view full, bool carbons) {
    Client& c = connect(full);
    send(c, "<presence/>");
    if (carbons) {
      send(c, "<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
      auto got = c.take();
      auto iqs = named(got, "iq");
      EXPECT_EQ(iqs.size(), 1u);
      if (!iqs.empty()) {
        EXPECT_EQ(iqs[0]->attr("type"), "result");
      }
    }
    for (auto& cl : clients_) cl->take();
    return c;
  }
  // The carbons (<sent/> or <received/>, by `flag`) among `got`, as their inner messages.
  static std::vector<const xml::Element*> carbons(const std::vector<xml::Element>& got,
                                                  std::string_view flag) {
    std::vector<const xml::Element*> out;
    for (const auto* m : named(got, "message")) {
      const xml::Element* f = m->child(flag, kCarbonsNs);
      if (f == nullptr) continue;
      const xml::Element* fwd = f->child("forwarded", kForwardNs);
      if (fwd == nullptr) continue;
      if (const xml::Element* inner = fwd->child("message", "jabber:client")) out.push_back(inner);
    }
    return out;
  }
};

TEST_F(CarbonsTest, EnableAndDisableAnswerResultEveryTime) {
  auto& r = connect("romeo@example.com/home");
  for (const char* op : {"enable", "enable", "disable", "disable"}) {
    send(r, std::string("<iq type='set' id='x'><") + op + " xmlns='urn:xmpp:carbons:2'/></iq>");
    auto got = r.take();
    ASSERT_EQ(named(got, "iq").size(), 1u) << op;
    EXPECT_EQ(named(got, "iq")[0]->attr("type"), "result") << op;
  }
  // Anything else in the namespace is a bad request; a get is not served.
  send(r, "<iq type='set' id='y'><private xmlns='urn:xmpp:carbons:2'/></iq>");
  auto got = r.take();
  ASSERT_EQ(named(got, "iq").size(), 1u);
  EXPECT_EQ(named(got, "iq")[0]->attr("type"), "error");
  EXPECT_NE(named(got, "iq")[0]->child("error")->child("bad-request"), nullptr);
  send(r,
       "<iq type='set' id='z' to='juliet@example.com'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
  got = r.take();
  ASSERT_EQ(named(got, "iq").size(), 1u);
  EXPECT_NE(named(got, "iq")[0]->child("error")->child("not-allowed"), nullptr);
}

TEST_F(CarbonsTest, AccountFlagFollowsTheEnabledResources) {
  auto& a = online("romeo@example.com/a", true);
  EXPECT_NE(server_.account_flags("romeo") & kCarbonsUser, 0u);
  auto& b = online("romeo@example.com/b", true);
  send(a, "<iq type='set' id='d'><disable xmlns='urn:xmpp:carbons:2'/></iq>");
  EXPECT_NE(server_.account_flags("romeo") & kCarbonsUser, 0u);  // b still has it on
  send(b, "<iq type='set' id='d'><disable xmlns='urn:xmpp:carbons:2'/></iq>");
  EXPECT_EQ(server_.account_flags("romeo") & kCarbonsUser, 0u);
  send(b, "<iq type='set' id='e'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
  EXPECT_NE(server_.account_flags("romeo") & kCarbonsUser, 0u);
  // The enabled resource ends: nobody wants copies any more.
  send(b, "</stream:stream>");
  EXPECT_EQ(server_.account_flags("romeo") & kCarbonsUser, 0u);
}

TEST_F(CarbonsTest, ReceivedCopiesGoToEnabledResourcesThatDidNotGetIt) {
  auto& home = online("romeo@example.com/home", true);
  auto& garden = online("romeo@example.com/garden", true);
  auto& plain = online("romeo@example.com/plain", false);
  auto& juliet = online("juliet@example.com/balcony", false);
  send(juliet,
       "<message to='romeo@example.com/garden' type='chat' id='m1'><body>hi</body></message>");
  auto garden_got = garden.take();
  ASSERT_EQ(named(garden_got, "message").size(), 1u);
  EXPECT_EQ(named(garden_got, "message")[0]->child("received", kCarbonsNs), nullptr);
  auto home_got = home.take();
  auto copies = carbons(home_got, "received");
  ASSERT_EQ(copies.size(), 1u);
  const xml::Element* wrapper = named(home_got, "message")[0];
  // §5.1: from the bare JID, to the copy's recipient, the same type; the original inside.
  EXPECT_EQ(wrapper->attr("from"), "romeo@example.com");
  EXPECT_EQ(wrapper->attr("to"), "romeo@example.com/home");
  EXPECT_EQ(wrapper->attr("type"), "chat");
  EXPECT_EQ(copies[0]->attr("from"), "juliet@example.com/balcony");
  EXPECT_EQ(copies[0]->attr("to"), "romeo@example.com/garden");
  EXPECT_EQ(copies[0]->child_text("body"), "hi");
  // A resource without carbons gets nothing.
  EXPECT_TRUE(named(plain.take(), "message").empty());
}

TEST_F(CarbonsTest, MessageToTheBareJidIsNotCopiedToResourcesThatGetIt) {
  auto& home = online("romeo@example.com/home", true);
  auto& garden = online("romeo@example.com/garden", true);
  auto& juliet = online("juliet@example.com/balcony", false);
  // Equal priorities: both get the original (RFC 6121 §8.5.2.1.1), so neither gets a copy.
  send(juliet, "<message to='romeo@example.com' type='chat'><body>both</body></message>");
  for (Client* c : {&home, &garden}) {
    auto got = c->take();
    ASSERT_EQ(named(got, "message").size(), 1u);
    EXPECT_TRUE(carbons(got, "received").empty());
  }
  // A negative priority resource with carbons gets a copy instead.
  auto& away = connect("romeo@example.com/away");
  send(away, "<presence><priority>-1</priority></presence>");
  send(away, "<iq type='set' id='c'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
  for (auto& cl : clients_) cl->take();
  send(juliet, "<message to='romeo@example.com' type='chat'><body>again</body></message>");
  EXPECT_EQ(carbons(away.take(), "received").size(), 1u);
}

TEST_F(CarbonsTest, SentCopiesGoToTheOtherEnabledResources) {
  auto& home = online("romeo@example.com/home", true);
  auto& garden = online("romeo@example.com/garden", true);
  auto& plain = online("romeo@example.com/plain", false);
  auto& juliet = online("juliet@example.com/balcony", false);
  send(home, "<message to='juliet@example.com' type='chat' id='s1'><body>out</body></message>");
  ASSERT_EQ(named(juliet.take(), "message").size(), 1u);
  auto garden_got = garden.take();
  auto copies = carbons(garden_got, "sent");
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(named(garden_got, "message")[0]->attr("from"), "romeo@example.com");
  EXPECT_EQ(named(garden_got, "message")[0]->attr("to"), "romeo@example.com/garden");
  EXPECT_EQ(copies[0]->attr("from"), "romeo@example.com/home");
  EXPECT_EQ(copies[0]->attr("to"), "juliet@example.com");
  EXPECT_EQ(copies[0]->attr("id"), "s1");
  // Not back to the sender, not to a resource without carbons.
  EXPECT_TRUE(named(home.take(), "message").empty());
  EXPECT_TRUE(named(plain.take(), "message").empty());
  // A resource without carbons that sends still has its message copied to the enabled ones.
  send(plain, "<message to='juliet@example.com' type='chat'><body>p</body></message>");
  EXPECT_EQ(carbons(home.take(), "sent").size(), 1u);
  EXPECT_EQ(carbons(garden.take(), "sent").size(), 1u);
}

TEST_F(CarbonsTest, PrivateAndNoCopyAreNotCopied) {
  auto& home = online("romeo@example.com/home", true);
  auto& garden = online("romeo@example.com/garden", true);
  auto& juliet = online("juliet@example.com/balcony", false);
  // §7: the sending server does not copy it...
  send(home,
       "<message to='juliet@example.com' type='chat'><body>secret</body>"
       "<private xmlns='urn:xmpp:carbons:2'/><no-copy xmlns='urn:xmpp:hints'/></message>");
  EXPECT_TRUE(named(garden.take(), "message").empty());
  auto got = juliet.take();
  ASSERT_EQ(named(got, "message").size(), 1u);
  // ...and <private/> stays in it (the interoperability note of §7).
  EXPECT_NE(named(got, "message")[0]->child("private", kCarbonsNs), nullptr);
  // Nor does the receiving one.
  send(juliet,
       "<message to='romeo@example.com/garden' type='chat'><body>secret</body>"
       "<private xmlns='urn:xmpp:carbons:2'/><no-copy xmlns='urn:xmpp:hints'/></message>");
  EXPECT_EQ(named(garden.take(), "message").size(), 1u);
  EXPECT_TRUE(named(home.take(), "message").empty());
}

TEST_F(CarbonsTest, EligibilityRules) {
  const auto msg = [](std::string_view xml) { return parse_one(xml); };
  using D = CarbonDirection;
  const auto ok = [&](std::string_view xml, D d = D::kReceived) {
    return carbons_eligible(msg(xml), d);
  };
  // §6.1
  EXPECT_TRUE(ok("<message xmlns='jabber:client' type='chat'/>"));
  EXPECT_TRUE(ok("<message xmlns='jabber:client'><body>x</body></message>"));
  EXPECT_TRUE(ok("<message xmlns='jabber:client' type='normal'><body>x</body></message>"));
  EXPECT_FALSE(ok("<message xmlns='jabber:client' type='normal'><subject>x</subject></message>"));
  EXPECT_TRUE(
      ok("<message xmlns='jabber:client'><received xmlns='urn:xmpp:receipts' id='1'/>"
         "</message>"));
  EXPECT_TRUE(
      ok("<message xmlns='jabber:client'><active "
         "xmlns='http://jabber.org/protocol/chatstates'/></message>"));
  EXPECT_TRUE(
      ok("<message xmlns='jabber:client'><displayed xmlns='urn:xmpp:chat-markers:0' "
         "id='1'/></message>"));
  EXPECT_FALSE(ok("<message xmlns='jabber:client' type='headline'><body>x</body></message>"));
  EXPECT_FALSE(ok("<message xmlns='jabber:client' type='error'><body>x</body></message>"));
  EXPECT_FALSE(
      ok("<message xmlns='jabber:client' type='chat'><private "
         "xmlns='urn:xmpp:carbons:2'/></message>"));
  EXPECT_FALSE(
      ok("<message xmlns='jabber:client' type='chat'><no-copy xmlns='urn:xmpp:hints'/></message>"));
  // §6.1.1: group chat not; invitations yes; a private message from an occupant not when
  // received, yes when sent.
  EXPECT_FALSE(ok("<message xmlns='jabber:client' type='groupchat'><body>x</body></message>"));
  EXPECT_TRUE(
      ok("<message xmlns='jabber:client' from='room@muc.example.com'><x "
         "xmlns='jabber:x:conference' jid='room@muc.example.com'/></message>"));
  EXPECT_TRUE(
      ok("<message xmlns='jabber:client' from='room@muc.example.com'><x "
         "xmlns='http://jabber.org/protocol/muc#user'><invite from='a@b'/></x></message>"));
  const std::string pm =
      "<message xmlns='jabber:client' type='chat' from='room@muc.example.com/nick'><body>x</body>"
      "<x xmlns='http://jabber.org/protocol/muc#user'/></message>";
  EXPECT_FALSE(ok(pm, D::kReceived));
  EXPECT_TRUE(ok(pm, D::kSent));
  // A carbon is not copied again (and a forged one is not dressed up as a real one).
  EXPECT_FALSE(
      ok("<message xmlns='jabber:client' type='chat'><received "
         "xmlns='urn:xmpp:carbons:2'/></message>"));
  EXPECT_FALSE(
      ok("<message xmlns='jabber:client' type='chat'><sent "
         "xmlns='urn:xmpp:carbons:2'/></message>"));
}

TEST_F(CarbonsTest, ForgedCarbonFromAnotherAccountStaysFromItsSender) {
  // §11: a client ignores carbons not from its own bare JID. Tybalt's forgery reaches romeo as
  // his message (from tybalt), never wrapped again as a copy from romeo's bare JID.
  auto& home = online("romeo@example.com/home", true);
  auto& garden = online("romeo@example.com/garden", true);
  auto& tybalt = online("tybalt@example.com/home", false);
  send(tybalt,
       "<message to='romeo@example.com/garden' type='chat'>"
       "<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
       "<message xmlns='jabber:client' from='juliet@example.com/balcony' "
       "to='romeo@example.com/garden' type='chat'><body>meet me</body></message>"
       "</forwarded></received></message>");
  auto got = garden.take();
  ASSERT_EQ(named(got, "message").size(), 1u);
  EXPECT_EQ(named(got, "message")[0]->attr("from"), "tybalt@example.com/home");
  EXPECT_TRUE(named(home.take(), "message").empty());
  // And a client cannot make the server send anything from the bare JID by putting it in 'from'.
  send(tybalt,
       "<message from='romeo@example.com' to='romeo@example.com/garden' type='chat'>"
       "<body>x</body></message>");
  got = garden.take();
  ASSERT_EQ(named(got, "message").size(), 1u);
  EXPECT_EQ(named(got, "message")[0]->attr("from"), "tybalt@example.com/home");
}

TEST_F(CarbonsTest, MessagesToOneselfAreNotDuplicated) {
  auto& home = online("romeo@example.com/home", true);
  auto& garden = online("romeo@example.com/garden", true);
  auto& work = online("romeo@example.com/work", true);
  send(home, "<message to='romeo@example.com/garden' type='chat'><body>note</body></message>");
  EXPECT_TRUE(named(home.take(), "message").empty());
  auto g = garden.take();
  ASSERT_EQ(named(g, "message").size(), 1u);
  EXPECT_TRUE(carbons(g, "received").empty());
  auto w = work.take();
  ASSERT_EQ(named(w, "message").size(), 1u);
  EXPECT_EQ(carbons(w, "received").size(), 1u);
}

TEST_F(CarbonsTest, DiscoAnnouncesTheFeature) {
  auto& r = connect("romeo@example.com/home");
  send(r, "<iq type='get' id='d'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
  const std::string written = xml::serialize(named(r.take(), "iq")[0][0], "jabber:client");
  EXPECT_NE(written.find("urn:xmpp:carbons:2"), std::string::npos) << written;
}

TEST_F(CarbonsTest, AccountsWithoutCarbonsKeepTheBytePath) {
  // The byte fast path forwards a message as the bytes it came in (double quotes kept); the
  // full path serializes it again. Only the account with carbons on leaves the byte path.
  online("romeo@example.com/home", true);
  auto& juliet = online("juliet@example.com/balcony", false);
  auto& tybalt = online("tybalt@example.com/home", false);
  EXPECT_EQ(server_.account_flags("juliet"), 0u);
  send(juliet, "<message to=\"tybalt@example.com\" type=\"chat\"><body>x</body></message>");
  EXPECT_NE(tybalt.transport().written().find("type=\"chat\""), std::string::npos)
      << tybalt.transport().written();
  tybalt.take();
}

}  // namespace
}  // namespace kabar::server
