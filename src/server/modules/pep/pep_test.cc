// Personal eventing (XEP-0163) through scripted sessions, and its form and access helpers.
#include "server/modules/pep/pep.h"

#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <string>

#include "server/modules/testing/module_test.h"
#include "xml/serializer.h"
#include "xmpp/caps.h"
#include "xmpp/stanza.h"

namespace kabar::server {
namespace {

using testing::Client;
using testing::ModuleTest;
using testing::named;
namespace ns = xmpp::ns;

constexpr std::string_view kNick = "http://jabber.org/protocol/nick";

TEST(PepForms, PreconditionsCompareWithTheNodeConfiguration) {
  store::PepNodeConfig c;
  EXPECT_EQ(pep::meets_precondition(c, {"pubsub#access_model", {"presence"}}), true);
  EXPECT_EQ(pep::meets_precondition(c, {"pubsub#access_model", {"open"}}), false);
  EXPECT_EQ(pep::meets_precondition(c, {"pubsub#access_model", {"roster"}}), std::nullopt);
  EXPECT_EQ(pep::meets_precondition(c, {"pubsub#persist_items", {"1"}}), true);
  EXPECT_EQ(pep::meets_precondition(c, {"pubsub#persist_items", {"true"}}), true);
  EXPECT_EQ(pep::meets_precondition(c, {"pubsub#persist_items", {"maybe"}}), std::nullopt);
  EXPECT_EQ(pep::meets_precondition(c, {"pubsub#no_such_option", {"1"}}), std::nullopt);
  EXPECT_EQ(pep::meets_precondition(c, {"pubsub#publish_model", {"publishers"}}), true);
  EXPECT_EQ(pep::meets_precondition(c, {"pubsub#publish_model", {"open"}}), false);
  store::PepNodeConfig big;
  ASSERT_TRUE(pep::apply_config_field(big, {"pubsub#max_items", {"max"}}));
  EXPECT_EQ(big.max_items, store::kPepMaxItems);
  EXPECT_EQ(pep::meets_precondition(big, {"pubsub#max_items", {"max"}}), true);
  EXPECT_EQ(pep::meets_precondition(big, {"pubsub#max_items", {"100000"}}), true);  // capped
  EXPECT_EQ(pep::meets_precondition(big, {"pubsub#max_items", {"5"}}), false);
  EXPECT_FALSE(pep::apply_config_field(big, {"pubsub#max_items", {"0"}}));
  EXPECT_FALSE(pep::apply_config_field(big, {"pubsub#max_items", {"-3"}}));
}

TEST(PepForms, AccessModels) {
  store::PepNode n;
  n.config.access_model = "presence";
  EXPECT_FALSE(pep::check_access(n, "romeo@example.com", true));
  auto denied = pep::check_access(n, "tybalt@example.com", false);
  ASSERT_TRUE(denied);
  EXPECT_EQ(denied->condition, "not-authorized");
  EXPECT_EQ(denied->pubsub_condition, "presence-subscription-required");
  n.config.access_model = "open";
  EXPECT_FALSE(pep::check_access(n, "tybalt@example.com", false));
  n.config.access_model = "whitelist";
  denied = pep::check_access(n, "romeo@example.com", true);
  ASSERT_TRUE(denied);
  EXPECT_EQ(denied->condition, "not-allowed");
  EXPECT_EQ(denied->pubsub_condition, "closed-node");
  n.affiliations.emplace_back("romeo@example.com", "member");
  EXPECT_FALSE(pep::check_access(n, "romeo@example.com", true));
}

TEST(PepCaps, TheCacheForgetsTheOldestHashPastItsBound) {
  pep::CapsCache cache;
  auto f = std::make_shared<const std::set<std::string>>(std::set<std::string>{"x+notify"});
  for (std::size_t i = 0; i < pep::CapsCache::kMaxVers + 5; ++i) {
    cache.put_ver("v" + std::to_string(i), f);
  }
  EXPECT_EQ(cache.size(), pep::CapsCache::kMaxVers);
  EXPECT_EQ(cache.by_ver("v0"), nullptr);
  EXPECT_NE(cache.by_ver("v10004"), nullptr);
}

class PepTest : public ModuleTest {
 protected:
  void SetUp() override {
    add_account("juliet");
    add_account("romeo");
    add_account("tybalt");
    // juliet and romeo share presence both ways; tybalt is a stranger.
    for (auto [user, contact] :
         {std::pair{"juliet", "romeo@example.com"}, std::pair{"romeo", "juliet@example.com"}}) {
      store::RosterItem item;
      item.jid = contact;
      item.state.sub = xmpp::Subscription::kBoth;
      store().put_roster_item(user, item);
    }
  }

  // The disco#info a client answers for its caps, with `notify` as its +notify features.
  static std::string disco_answer(std::string_view id, std::string_view node,
                                  const std::vector<std::string>& notify) {
    std::string q = "<query xmlns='http://jabber.org/protocol/disco#info' node='" +
                    std::string(node) + "'><identity category='client' type='pc' name='t'/>";
    q += "<feature var='http://jabber.org/protocol/disco#info'/>";
    for (const auto& n : notify) q += "<feature var='" + n + "+notify'/>";
    q += "</query>";
    return "<iq type='result' id='" + std::string(id) + "' to='example.com'>" + q + "</iq>";
  }

  static std::string ver_of(const std::vector<std::string>& notify) {
    std::string q = disco_answer("x", "n", notify);
    auto start = q.find("<query");
    std::string query = q.substr(start, q.rfind("</iq>") - start);
    xml::Element parsed = parse(query);
    return *xmpp::caps_hash("sha-1", *xmpp::caps_verification_string(parsed));
  }

  static xml::Element parse(std::string_view bytes) {
    auto e = xmpp::parse_stanza(bytes);
    return e ? std::move(*e) : xml::Element();
  }

  // Online with caps asking for `notify`; answers the server's disco#info when it asks.
  // Returns whether it asked.
  bool online(Client& c, const std::vector<std::string>& notify, bool verified = true) {
    const std::string ver = verified ? ver_of(notify) : "not-a-real-hash";
    send(c,
         "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
         "node='http://test' ver='" +
             ver + "'/></presence>");
    auto got = c.take();
    for (const auto* iq : named(got, "iq")) {
      const xml::Element* q = iq->child("query", ns::kDiscoInfo);
      if (iq->attr("type") != "get" || q == nullptr) continue;
      EXPECT_EQ(q->attr("node"), "http://test#" + ver);
      send(c, disco_answer(iq->attr("id"), q->attr("node"), notify));
      return true;
    }
    return false;
  }

  static std::vector<const xml::Element*> events(const std::vector<xml::Element>& got) {
    std::vector<const xml::Element*> out;
    for (const auto* m : named(got, "message")) {
      if (m->child("event", pep::kPubsubEvent)) out.push_back(m);
    }
    return out;
  }

  // A copy: callers pass what take() returned, which dies at the end of their statement.
  static std::optional<xml::Element> error_of(const std::vector<xml::Element>& got) {
    for (const auto* iq : named(got, "iq")) {
      if (iq->attr("type") != "error") continue;
      if (const xml::Element* e = iq->child("error", ns::kClient)) return *e;
    }
    return std::nullopt;
  }

  std::string publish_nick(std::string_view nick, std::string_view options = {}) {
    return "<iq type='set' id='p1'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
           "<publish node='http://jabber.org/protocol/nick'><item id='current'>"
           "<nick xmlns='http://jabber.org/protocol/nick'>" +
           std::string(nick) + "</nick></item></publish>" + std::string(options) + "</pubsub></iq>";
  }
};

TEST_F(PepTest, AccountDiscoIsAPepService) {
  auto& j = connect("juliet@example.com/balcony");
  send(j,
       "<iq type='get' id='d1' to='juliet@example.com'>"
       "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
  auto got = j.take();
  ASSERT_EQ(named(got, "iq").size(), 1u);
  const xml::Element* q = named(got, "iq")[0]->child("query", ns::kDiscoInfo);
  ASSERT_NE(q, nullptr);
  bool pep_identity = false;
  for (const auto* id : q->children("identity", ns::kDiscoInfo)) {
    pep_identity |= id->attr("category") == "pubsub" && id->attr("type") == "pep";
  }
  EXPECT_TRUE(pep_identity);
  std::set<std::string> features;
  for (const auto* f : q->children("feature", ns::kDiscoInfo)) features.emplace(f->attr("var"));
  EXPECT_TRUE(features.contains("http://jabber.org/protocol/pubsub#publish-options"));
  EXPECT_TRUE(features.contains("http://jabber.org/protocol/pubsub#access-whitelist"));
  EXPECT_FALSE(features.contains("http://jabber.org/protocol/pubsub#access-roster"));
}

TEST_F(PepTest, PublishReachesContactsWhoseCapsAskAndTheOwner) {
  auto& romeo = connect("romeo@example.com/orchard");
  EXPECT_TRUE(online(romeo, {std::string(kNick)}));
  auto& romeo2 = connect("romeo@example.com/phone");
  EXPECT_FALSE(online(romeo2, {std::string(kNick)}));  // the hash is known: not asked again
  auto& deaf = connect("romeo@example.com/deaf");
  online(deaf, {"urn:xmpp:avatar:metadata"});
  auto& j = connect("juliet@example.com/balcony");
  online(j, {std::string(kNick)});
  auto& t = connect("tybalt@example.com/street");
  online(t, {std::string(kNick)});
  for (auto& c : clients_) c->take();

  send(j, publish_nick("Juliet"));
  auto got = j.take();
  ASSERT_EQ(named(got, "iq").size(), 1u);
  EXPECT_EQ(named(got, "iq")[0]->attr("type"), "result");
  EXPECT_EQ(events(got).size(), 1u);  // the owner's own resource
  for (Client* c : {&romeo, &romeo2}) {
    const auto mine = c->take();  // events() points into it
    auto ev = events(mine);
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0]->attr("from"), "juliet@example.com");
    EXPECT_EQ(ev[0]->attr("type"), "headline");
    const xml::Element* item =
        ev[0]->child("event", pep::kPubsubEvent)->child("items", pep::kPubsubEvent)->first_child();
    ASSERT_NE(item, nullptr);
    EXPECT_EQ(item->attr("id"), "current");
    EXPECT_EQ(item->child_text("nick", kNick), "Juliet");
  }
  EXPECT_TRUE(events(deaf.take()).empty());  // no nick+notify
  EXPECT_TRUE(events(t.take()).empty());     // no presence subscription
}

TEST_F(PepTest, LastItemAtInitialPresenceAndUnverifiedCapsStayWithTheirResource) {
  auto& j = connect("juliet@example.com/balcony");
  send(j, publish_nick("Juliet"));
  j.take();
  auto& romeo = connect("romeo@example.com/orchard");
  ASSERT_TRUE(online(romeo, {std::string(kNick)}, false));
  const auto got = romeo.take();
  auto ev = events(got);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_NE(ev[0]->child("delay", ns::kDelay), nullptr);
  // An answer that does not match its hash is not taken for anyone else with it.
  auto& other = connect("romeo@example.com/other");
  EXPECT_TRUE(online(other, {std::string(kNick)}, false));
  // A later presence with the same caps is not initial: nothing again.
  send(romeo,
       "<presence><show>away</show><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
       "node='http://test' ver='not-a-real-hash'/></presence>");
  EXPECT_TRUE(events(romeo.take()).empty());
}

TEST_F(PepTest, PreconditionsPublishOptionsAndErrors) {
  auto& j = connect("juliet@example.com/balcony");
  const std::string open =
      "<publish-options><x xmlns='jabber:x:data' type='submit'>"
      "<field var='FORM_TYPE' type='hidden'>"
      "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
      "<field var='pubsub#access_model'><value>open</value></field></x></publish-options>";
  send(j, publish_nick("J", open));  // auto-created open
  auto got = j.take();
  ASSERT_EQ(named(got, "iq").size(), 1u);
  EXPECT_EQ(named(got, "iq")[0]->attr("type"), "result");
  const std::string whitelist =
      "<publish-options><x xmlns='jabber:x:data' type='submit'>"
      "<field var='FORM_TYPE' type='hidden'>"
      "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
      "<field var='pubsub#access_model'><value>whitelist</value></field></x></publish-options>";
  send(j, publish_nick("J2", whitelist));
  got = j.take();
  auto err = error_of(got);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->attr("type"), "cancel");
  EXPECT_NE(err->child("conflict", ns::kStanzas), nullptr);
  EXPECT_NE(err->child("precondition-not-met", pep::kPubsubErrors), nullptr);
  const std::string unknown =
      "<publish-options><x xmlns='jabber:x:data' type='submit'>"
      "<field var='FORM_TYPE' type='hidden'>"
      "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
      "<field var='pubsub#frobnicate'><value>1</value></field></x></publish-options>";
  send(j, publish_nick("J3", unknown));
  err = error_of(j.take());
  ASSERT_TRUE(err);
  EXPECT_NE(err->child("bad-request", ns::kStanzas), nullptr);
  // A stranger reads the open node, cannot publish to it, and finds no other node.
  auto& t = connect("tybalt@example.com/street");
  send(t,
       "<iq type='get' id='i1' to='juliet@example.com'><pubsub "
       "xmlns='http://jabber.org/protocol/pubsub'><items "
       "node='http://jabber.org/protocol/nick'/></pubsub></iq>");
  got = t.take();
  ASSERT_EQ(named(got, "iq").size(), 1u);
  EXPECT_EQ(named(got, "iq")[0]->attr("type"), "result");
  send(t,
       "<iq type='set' id='i2' to='juliet@example.com'><pubsub "
       "xmlns='http://jabber.org/protocol/pubsub'><publish "
       "node='http://jabber.org/protocol/nick'><item><nick xmlns='" +
           std::string(kNick) + "'>T</nick></item></publish></pubsub></iq>");
  err = error_of(t.take());
  ASSERT_TRUE(err);
  EXPECT_NE(err->child("forbidden", ns::kStanzas), nullptr);
  send(t,
       "<iq type='get' id='i3' to='juliet@example.com'><pubsub "
       "xmlns='http://jabber.org/protocol/pubsub'><items node='nope'/></pubsub></iq>");
  err = error_of(t.take());
  ASSERT_TRUE(err);
  EXPECT_NE(err->child("item-not-found", ns::kStanzas), nullptr);
}

TEST_F(PepTest, WhitelistPresenceAccessMaxItemsAndDelete) {
  auto& j = connect("juliet@example.com/balcony");
  auto publish = [&](std::string_view node, std::string_view id, std::string_view access) {
    send(j,
         "<iq type='set' id='p'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
         "<publish node='" +
             std::string(node) + "'><item id='" + std::string(id) +
             "'><x xmlns='urn:test'/></item></publish><publish-options><x "
             "xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' "
             "type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</"
             "value></field><field var='pubsub#access_model'><value>" +
             std::string(access) +
             "</value></field><field var='pubsub#max_items'><value>2</value></field></x>"
             "</publish-options></pubsub></iq>");
    auto got = j.take();
    ASSERT_EQ(named(got, "iq").size(), 1u);
    EXPECT_EQ(named(got, "iq")[0]->attr("type"), "result") << xml::serialize(got[0]);
  };
  publish("secret", "a", "whitelist");
  publish("mood", "1", "presence");
  publish("mood", "2", "presence");
  publish("mood", "3", "presence");
  auto& romeo = connect("romeo@example.com/orchard");
  auto& t = connect("tybalt@example.com/street");
  auto items = [&](Client& c, std::string_view node, std::string_view extra = {}) {
    send(c,
         "<iq type='get' id='g' to='juliet@example.com'><pubsub "
         "xmlns='http://jabber.org/protocol/pubsub'><items node='" +
             std::string(node) + "' " + std::string(extra) + "/></pubsub></iq>");
    return c.take();
  };
  auto err = error_of(items(romeo, "secret"));
  ASSERT_TRUE(err);
  EXPECT_NE(err->child("not-allowed", ns::kStanzas), nullptr);
  EXPECT_NE(err->child("closed-node", pep::kPubsubErrors), nullptr);
  err = error_of(items(t, "mood"));
  ASSERT_TRUE(err);
  EXPECT_NE(err->child("not-authorized", ns::kStanzas), nullptr);
  EXPECT_NE(err->child("presence-subscription-required", pep::kPubsubErrors), nullptr);
  auto got = items(romeo, "mood");
  ASSERT_EQ(named(got, "iq").size(), 1u);
  const xml::Element* its =
      named(got, "iq")[0]->child("pubsub", pep::kPubsub)->child("items", pep::kPubsub);
  ASSERT_NE(its, nullptr);
  auto list = its->children("item", pep::kPubsub);
  ASSERT_EQ(list.size(), 2u);  // max_items 2 kept the newest two
  EXPECT_EQ(list[0]->attr("id"), "2");
  EXPECT_EQ(list[1]->attr("id"), "3");
  got = items(romeo, "mood", "max_items='1'");
  its = named(got, "iq")[0]->child("pubsub", pep::kPubsub)->child("items", pep::kPubsub);
  ASSERT_EQ(its->children("item", pep::kPubsub).size(), 1u);
  EXPECT_EQ(its->children("item", pep::kPubsub)[0]->attr("id"), "3");
  // Whitelisted, romeo reads the secret node.
  send(j,
       "<iq type='set' id='a1'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'>"
       "<affiliations node='secret'><affiliation jid='romeo@example.com' "
       "affiliation='member'/></affiliations></pubsub></iq>");
  j.take();
  got = items(romeo, "secret");
  EXPECT_FALSE(error_of(got));
  // Deleting the node: gone for everyone.
  send(j,
       "<iq type='set' id='d1'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'>"
       "<delete node='mood'/></pubsub></iq>");
  got = j.take();
  EXPECT_EQ(named(got, "iq")[0]->attr("type"), "result");
  err = error_of(items(romeo, "mood"));
  ASSERT_TRUE(err);
  EXPECT_NE(err->child("item-not-found", ns::kStanzas), nullptr);
  // disco#items: romeo sees secret (member); tybalt, a stranger who may see no node, learns
  // nothing of the account.
  send(t,
       "<iq type='get' id='di' to='juliet@example.com'><query "
       "xmlns='http://jabber.org/protocol/disco#items'/></iq>");
  err = error_of(t.take());
  ASSERT_TRUE(err);
  EXPECT_NE(err->child("service-unavailable", ns::kStanzas), nullptr);
  send(romeo,
       "<iq type='get' id='di' to='juliet@example.com'><query "
       "xmlns='http://jabber.org/protocol/disco#items'/></iq>");
  got = romeo.take();
  auto ditems = named(got, "iq")[0]->child("query", ns::kDiscoItems)->children();
  ASSERT_EQ(ditems.size(), 1u);
  EXPECT_EQ(ditems[0]->attr("node"), "secret");
}

TEST_F(PepTest, PrivateStorageAndBookmarksCompat) {
  auto& j = connect("juliet@example.com/balcony");
  online(j, {"urn:xmpp:bookmarks:1"});
  j.take();
  send(j,
       "<iq type='set' id='s1'><query xmlns='jabber:iq:private'>"
       "<prefs xmlns='urn:test:prefs'><a>1</a></prefs></query></iq>");
  EXPECT_EQ(named(j.take(), "iq")[0]->attr("type"), "result");
  send(j,
       "<iq type='get' id='g1'><query xmlns='jabber:iq:private'>"
       "<prefs xmlns='urn:test:prefs'/></query></iq>");
  auto got = j.take();
  const xml::Element* q = named(got, "iq")[0]->child("query", "jabber:iq:private");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->child("prefs", "urn:test:prefs")->child_text("a", "urn:test:prefs"), "1");
  // Someone else's: forbidden.
  send(j,
       "<iq type='get' id='g2' to='romeo@example.com'><query xmlns='jabber:iq:private'>"
       "<prefs xmlns='urn:test:prefs'/></query></iq>");
  auto err = error_of(j.take());
  ASSERT_TRUE(err);
  EXPECT_NE(err->child("forbidden", ns::kStanzas), nullptr);
  // Legacy bookmarks become native items, with a notification to the +notify resource.
  send(j,
       "<iq type='set' id='b1'><query xmlns='jabber:iq:private'>"
       "<storage xmlns='storage:bookmarks'><conference jid='room@muc.example.com' "
       "name='Room' autojoin='true'><nick>J</nick></conference></storage></query></iq>");
  got = j.take();
  EXPECT_EQ(events(got).size(), 1u);
  send(j,
       "<iq type='get' id='b2'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
       "<items node='urn:xmpp:bookmarks:1'/></pubsub></iq>");
  got = j.take();
  const xml::Element* its =
      named(got, "iq")[0]->child("pubsub", pep::kPubsub)->child("items", pep::kPubsub);
  ASSERT_NE(its, nullptr);
  ASSERT_EQ(its->children().size(), 1u);
  EXPECT_EQ(its->children()[0]->attr("id"), "room@muc.example.com");
  const xml::Element* conf = its->children()[0]->child("conference", "urn:xmpp:bookmarks:1");
  ASSERT_NE(conf, nullptr);
  EXPECT_EQ(conf->attr("autojoin"), "true");
  // A native publish shows in the legacy view.
  send(j,
       "<iq type='set' id='b3'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
       "<publish node='urn:xmpp:bookmarks:1'><item id='other@muc.example.com'>"
       "<conference xmlns='urn:xmpp:bookmarks:1' name='Other'/></item></publish></pubsub></iq>");
  j.take();
  send(j,
       "<iq type='get' id='b4'><query xmlns='jabber:iq:private'>"
       "<storage xmlns='storage:bookmarks'/></query></iq>");
  got = j.take();
  const xml::Element* storage = named(got, "iq")[0]
                                    ->child("query", "jabber:iq:private")
                                    ->child("storage", "storage:bookmarks");
  ASSERT_NE(storage, nullptr);
  EXPECT_EQ(storage->children("conference", "storage:bookmarks").size(), 2u);
}

TEST_F(PepTest, DeletedWithTheAccount) {
  auto& j = connect("juliet@example.com/balcony");
  send(j, publish_nick("Juliet"));
  j.take();
  run();
  EXPECT_EQ(store().pep_nodes("juliet").size(), 1u);
  store().delete_account("juliet");
  EXPECT_TRUE(store().pep_nodes("juliet").empty());
}

// A request the store fails under is still answered (RFC 6120 §8.2.3): an IQ left without an
// answer stalls its client for good (Converse.js waits on each). Here the items table goes
// behind the server's back, so the publish's store call throws StoreError.
class PepStoreFailureTest : public ModuleTest {
 protected:
  PepStoreFailureTest() {
    dir_ = std::filesystem::temp_directory_path() /
           ("kabar-pep-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto st = store::open_sqlite_store(dir_);
    store_ = st.get();
    server_.use_store(std::move(st));
  }
  ~PepStoreFailureTest() override { std::filesystem::remove_all(dir_); }

  void drop_table(const char* table) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_ / "kabar.db").c_str(), &db), SQLITE_OK);
    const std::string sql = std::string("DROP TABLE ") + table;
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
  }

  std::filesystem::path dir_;
};

TEST_F(PepStoreFailureTest, APublishTheStoreFailsUnderIsAnsweredWithAnError) {
  add_account("juliet");
  auto& j = connect("juliet@example.com/balcony");
  drop_table("pep_item");
  // Converse.js's OMEMO device list: publish-options, to the own bare JID, a new node.
  send(j,
       "<iq type='set' id='omemo1' to='juliet@example.com'>"
       "<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
       "<publish node='eu.siacs.conversations.axolotl.devicelist'><item id='current'>"
       "<list xmlns='eu.siacs.conversations.axolotl'><device id='7'/></list></item></publish>"
       "<publish-options><x xmlns='jabber:x:data' type='submit'>"
       "<field var='FORM_TYPE' type='hidden'>"
       "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
       "<field var='pubsub#access_model'><value>open</value></field></x></publish-options>"
       "</pubsub></iq>"
       "<iq type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>");
  auto got = j.take();
  auto iqs = named(got, "iq");
  ASSERT_EQ(iqs.size(), 2u);
  EXPECT_EQ(iqs[0]->attr("id"), "omemo1");
  EXPECT_EQ(iqs[0]->attr("type"), "error");
  EXPECT_EQ(iqs[0]->attr("from"), "juliet@example.com");
  EXPECT_EQ(iqs[0]->attr("to"), "juliet@example.com/balcony");
  const xml::Element* err = iqs[0]->child("error", ns::kClient);
  ASSERT_NE(err, nullptr);
  EXPECT_EQ(err->attr("type"), "wait");
  EXPECT_NE(err->child("internal-server-error", ns::kStanzas), nullptr);
  // The session goes on: the next request is answered as usual.
  EXPECT_EQ(iqs[1]->attr("id"), "ping1");
  EXPECT_EQ(iqs[1]->attr("type"), "result");
}

}  // namespace
}  // namespace kabar::server
