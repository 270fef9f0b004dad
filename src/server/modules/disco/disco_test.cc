#include "server/modules/disco/disco.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "server/modules/testing/module_test.h"
#include "server/server.h"
#include "xmpp/namespaces.h"

namespace kabar::server {
namespace {

namespace ns = xmpp::ns;

std::vector<std::string> features_of(const xml::Element& query) {
  std::vector<std::string> out;
  for (const xml::Element* f : query.children("feature", ns::kDiscoInfo)) {
    out.emplace_back(f->attr("var"));
  }
  return out;
}

bool has(const std::vector<std::string>& v, std::string_view x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

class DiscoTest : public ::testing::Test {
 protected:
  Server& make(bool registration) {
    cfg_.domain = "example.com";
    cfg_.allow_registration = registration;
    server_ = std::make_unique<Server>(io_, cfg_);
    return *server_;
  }
  asio::io_context io_;
  Config cfg_;
  std::unique_ptr<Server> server_;
};

TEST_F(DiscoTest, ServerAnswerIsBuiltFromWhatModulesRegistered) {
  Server& s = make(false);
  xml::Element q = disco_info_query(s.modules(), kToServer);
  EXPECT_EQ(q.name(), "query");
  EXPECT_EQ(q.xmlns(), ns::kDiscoInfo);
  auto ids = q.children("identity", ns::kDiscoInfo);
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(ids[0]->attr("category"), "server");
  EXPECT_EQ(ids[0]->attr("type"), "im");
  auto f = features_of(q);
  // Exactly the registered features, each once.
  EXPECT_EQ(f, s.modules().disco_features(kToServer));
  for (const char* want :
       {ns::kDiscoInfo, ns::kDiscoItems, ns::kVersion, ns::kPing, ns::kLast, ns::kVcard,
        ns::kOffline, ns::kRoster, ns::kRosterVer, "urn:xmpp:extdisco:2", "urn:xmpp:time"}) {
    EXPECT_TRUE(has(f, want)) << want;
  }
  // In-band registration is off: not announced.
  EXPECT_FALSE(has(f, ns::kRegister));
}

TEST_F(DiscoTest, RegistrationIsAnnouncedOnlyWhenOn) {
  Server& s = make(true);
  EXPECT_TRUE(has(features_of(disco_info_query(s.modules(), kToServer)), ns::kRegister));
}

TEST_F(DiscoTest, AccountAnswerIsAnAccountWithItsOwnFeatures) {
  Server& s = make(true);
  xml::Element q = disco_info_query(s.modules(), kToAccount);
  auto ids = q.children("identity", ns::kDiscoInfo);
  ASSERT_EQ(ids.size(), 2u);  // the account, and its PEP service (XEP-0163 §8.1)
  EXPECT_EQ(ids[0]->attr("category"), "account");
  EXPECT_EQ(ids[0]->attr("type"), "registered");
  EXPECT_EQ(ids[1]->attr("category"), "pubsub");
  EXPECT_EQ(ids[1]->attr("type"), "pep");
  auto f = features_of(q);
  for (const char* want : {ns::kDiscoInfo, ns::kDiscoItems, ns::kVcard, ns::kLast}) {
    EXPECT_TRUE(has(f, want)) << want;
  }
  // Server-only features are not the account's.
  for (const char* not_here : {ns::kVersion, ns::kRoster, ns::kOffline, ns::kRegister}) {
    EXPECT_FALSE(has(f, not_here)) << not_here;
  }
}

TEST_F(DiscoTest, NoComponentsBeforeStart) {
  // The proxy and upload register their components when they start, with their listeners.
  Server& s = make(false);
  EXPECT_TRUE(s.modules().components().empty());
}

class DiscoSessionTest : public testing::ModuleTest {
 protected:
  void SetUp() override { add_account("alice"); }
};

TEST_F(DiscoSessionTest, TheServerAnswersWithTheRegisteredFeatures) {
  auto& alice = connect("alice@example.com/phone");
  send(alice,
       "<iq type='get' id='d1' to='example.com'>"
       "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
  auto got = alice.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].attr("type"), "result");
  const xml::Element* q = got[0].child("query", ns::kDiscoInfo);
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(features_of(*q), server_.modules().disco_features(kToServer));
}

TEST_F(DiscoSessionTest, OwnBareJidIsAnsweredForTheAccount) {
  // XEP-0030 §3.1, RFC 6121 §8.5: the account's bare JID is the account, not the server.
  auto& alice = connect("alice@example.com/phone");
  send(alice,
       "<iq type='get' id='d2' to='alice@example.com'>"
       "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
  auto got = alice.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].attr("type"), "result");
  const xml::Element* q = got[0].child("query", ns::kDiscoInfo);
  ASSERT_NE(q, nullptr);
  auto ids = q->children("identity", ns::kDiscoInfo);
  ASSERT_EQ(ids.size(), 2u);  // and the PEP service (XEP-0163 §8.1)
  EXPECT_EQ(ids[0]->attr("category"), "account");
  EXPECT_EQ(ids[1]->attr("category"), "pubsub");
  EXPECT_EQ(ids[1]->attr("type"), "pep");
  EXPECT_EQ(features_of(*q), server_.modules().disco_features(kToAccount));
}

TEST_F(DiscoSessionTest, AStrangersAccountIsNotDisclosed) {
  add_account("bob");
  auto& alice = connect("alice@example.com/phone");
  send(alice,
       "<iq type='get' id='d3' to='bob@example.com'>"
       "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
  auto got = alice.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].attr("type"), "error");
  EXPECT_NE(got[0].child("error")->child("service-unavailable"), nullptr);
}

}  // namespace
}  // namespace kabar::server
