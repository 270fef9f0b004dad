// jabber:iq:roster through scripted sessions (RFC 6121 §2, XEP-0237).
#include "server/modules/testing/module_test.h"

namespace kabar::server {
namespace {

using testing::ModuleTest;
using testing::named;
namespace ns = xmpp::ns;

class RosterTest : public ModuleTest {
 protected:
  void SetUp() override {
    add_account("alice");
    add_account("bob");
  }
  store::RosterItem item(std::string jid, xmpp::Subscription sub, std::string name = {}) {
    store::RosterItem it;
    it.jid = std::move(jid);
    it.name = std::move(name);
    it.state.sub = sub;
    return it;
  }
};

TEST_F(RosterTest, GetReturnsTheVisibleItemsAndTheVersion) {
  store().put_roster_item("alice", item("bob@example.com", xmpp::Subscription::kBoth, "Bob"));
  store::RosterItem hidden = item("eve@example.com", xmpp::Subscription::kNone);
  hidden.in_roster = false;  // a pending request only (RFC 6121 §3.1.3)
  const std::int64_t version = store().put_roster_item("alice", hidden);
  auto& phone = connect("alice@example.com/phone");
  send(phone, "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>");
  auto got = phone.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].attr("type"), "result");
  EXPECT_EQ(got[0].attr("id"), "r1");
  const xml::Element* q = got[0].child("query", ns::kRoster);
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->attr("ver"), std::to_string(version));
  auto items = q->children("item", ns::kRoster);
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0]->attr("jid"), "bob@example.com");
  EXPECT_EQ(items[0]->attr("name"), "Bob");
  EXPECT_EQ(items[0]->attr("subscription"), "both");
}

TEST_F(RosterTest, GetWithTheCurrentVersionIsAnEmptyResult) {
  const std::int64_t v =
      store().put_roster_item("alice", item("bob@example.com", xmpp::Subscription::kBoth));
  auto& phone = connect("alice@example.com/phone");
  // XEP-0237 §3.3: unchanged since the client's version: no items.
  send(phone, "<iq type='get' id='r1'><query xmlns='jabber:iq:roster' ver='" + std::to_string(v) +
                  "'/></iq>");
  auto got = phone.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].attr("type"), "result");
  EXPECT_EQ(got[0].first_child(), nullptr);
  // An older version gets the whole roster.
  send(phone, "<iq type='get' id='r2'><query xmlns='jabber:iq:roster' ver='" +
                  std::to_string(v - 1) + "'/></iq>");
  got = phone.take();
  ASSERT_EQ(got.size(), 1u);
  ASSERT_NE(got[0].child("query", ns::kRoster), nullptr);
  EXPECT_EQ(got[0].child("query", ns::kRoster)->children("item", ns::kRoster).size(), 1u);
}

TEST_F(RosterTest, SetIsPushedToInterestedResourcesOnly) {
  auto& phone = connect("alice@example.com/phone");
  auto& laptop = connect("alice@example.com/laptop");
  auto& tablet = connect("alice@example.com/tablet");
  // phone and tablet ask for the roster: they are interested resources (RFC 6121 §2.1.6).
  send(phone, "<iq type='get' id='g'><query xmlns='jabber:iq:roster'/></iq>");
  send(tablet, "<iq type='get' id='g'><query xmlns='jabber:iq:roster'/></iq>");
  phone.take();
  tablet.take();
  send(phone,
       "<iq type='set' id='s1'><query xmlns='jabber:iq:roster'>"
       "<item jid='carol@example.com' name='Carol'><group>Friends</group></item>"
       "</query></iq>");
  auto got = phone.take();
  // The result and the push (§2.3.2: the push goes to the requesting resource too).
  ASSERT_EQ(got.size(), 2u);
  const xml::Element* result = nullptr;
  const xml::Element* push = nullptr;
  for (const auto& e : got) (e.attr("type") == "result" ? result : push) = &e;
  ASSERT_NE(result, nullptr);
  EXPECT_EQ(result->attr("id"), "s1");
  ASSERT_NE(push, nullptr);
  EXPECT_EQ(push->attr("type"), "set");
  const std::int64_t version = store().roster_version("alice");
  EXPECT_EQ(push->child("query", ns::kRoster)->attr("ver"), std::to_string(version));
  const xml::Element* pushed = push->child("query", ns::kRoster)->child("item", ns::kRoster);
  ASSERT_NE(pushed, nullptr);
  EXPECT_EQ(pushed->attr("jid"), "carol@example.com");
  EXPECT_EQ(pushed->attr("subscription"), "none");
  EXPECT_EQ(pushed->child_text("group", ns::kRoster), "Friends");

  auto to_tablet = tablet.take();
  ASSERT_EQ(to_tablet.size(), 1u);
  EXPECT_EQ(to_tablet[0].attr("to"), "alice@example.com/tablet");
  EXPECT_EQ(to_tablet[0].child("query", ns::kRoster)->attr("ver"), std::to_string(version));
  EXPECT_TRUE(laptop.take().empty()) << "never asked for the roster";

  auto stored = store().roster_item("alice", "carol@example.com");
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->name, "Carol");
}

TEST_F(RosterTest, EveryChangeTakesANewVersion) {
  auto& phone = connect("alice@example.com/phone");
  send(phone, "<iq type='get' id='g'><query xmlns='jabber:iq:roster'/></iq>");
  std::string last(phone.take()[0].child("query", ns::kRoster)->attr("ver"));
  for (const char* set :
       {"<iq type='set' id='a'><query xmlns='jabber:iq:roster'><item jid='carol@example.com'/>"
        "</query></iq>",
        "<iq type='set' id='b'><query xmlns='jabber:iq:roster'><item jid='carol@example.com' "
        "name='C'/></query></iq>",
        "<iq type='set' id='c'><query xmlns='jabber:iq:roster'><item jid='carol@example.com' "
        "subscription='remove'/></query></iq>"}) {
    send(phone, set);
    auto got = phone.take();
    auto pushes = named(got, "iq");
    std::string ver;
    for (const auto* e : pushes) {
      if (e->attr("type") == "set") ver = std::string(e->child("query", ns::kRoster)->attr("ver"));
    }
    ASSERT_FALSE(ver.empty()) << set;
    EXPECT_GT(std::stoll(ver), std::stoll(last)) << set;
    last = ver;
  }
  EXPECT_FALSE(store().roster_item("alice", "carol@example.com"));
}

TEST_F(RosterTest, SetWithTwoItemsIsABadRequest) {
  auto& phone = connect("alice@example.com/phone");
  send(phone,
       "<iq type='set' id='s'><query xmlns='jabber:iq:roster'><item jid='a@example.com'/>"
       "<item jid='b@example.com'/></query></iq>");
  auto got = phone.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].attr("type"), "error");
  ASSERT_NE(got[0].child("error"), nullptr);
  EXPECT_NE(got[0].child("error")->child("bad-request"), nullptr);
  EXPECT_TRUE(store().roster("alice").empty());
}

TEST_F(RosterTest, AnotherAccountsRosterIsForbidden) {
  auto& phone = connect("alice@example.com/phone");
  send(phone, "<iq type='get' id='x' to='bob@example.com'><query xmlns='jabber:iq:roster'/></iq>");
  auto got = phone.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].attr("type"), "error");
  EXPECT_NE(got[0].child("error")->child("forbidden"), nullptr);
}

}  // namespace
}  // namespace kabar::server
