// Message Archive Management (XEP-0313) through scripted sessions.
#include "server/modules/mam/mam.h"

#include "server/modules/testing/module_test.h"
#include "xml/serializer.h"
#include "xmpp/stanza.h"

namespace kabar::server {
namespace {

using testing::Client;
using testing::ModuleTest;
using testing::named;

constexpr std::string_view kRsm = "http://jabber.org/protocol/rsm";

class MamTest : public ModuleTest {
 protected:
  static Config archiving() {
    Config cfg = default_config();
    cfg.archive_enabled = true;
    return cfg;
  }
  MamTest() : ModuleTest(archiving()) {}

  void SetUp() override {
    for (const char* u : {"alice", "bob", "carol"}) add_account(u);
  }
  Client& online(std::string_view full) {
    Client& c = connect(full);
    send(c, "<presence/>");
    for (auto& cl : clients_) cl->take();
    return c;
  }
  void chat(Client& c, std::string_view to, std::string_view body, std::string_view extra = {}) {
    send(c, "<message type='chat' to='" + std::string(to) + "'><body>" + std::string(body) +
                "</body>" + std::string(extra) + "</message>");
  }
  struct Page {
    std::vector<std::string> bodies;  // of the forwarded messages, in the order received
    std::vector<std::string> ids;     // their archive UIDs
    std::vector<std::string> queryids;
    xml::Element reply;  // the IQ result or error
    bool complete() const {
      const xml::Element* fin = reply.child("fin", kMamNs);
      return fin != nullptr && fin->attr("complete") == "true";
    }
    std::string rsm(std::string_view name) const {
      const xml::Element* fin = reply.child("fin", kMamNs);
      const xml::Element* set = fin != nullptr ? fin->child("set", kRsm) : nullptr;
      return set != nullptr ? set->child_text(name, kRsm) : std::string();
    }
  };
  // Sends a query (the <query/> element's inside given) and collects the results.
  Page query(Client& c, std::string_view inside, std::string_view attrs = {}) {
    send(c, "<iq type='set' id='q'><query xmlns='urn:xmpp:mam:2' queryid='f1'" +
                std::string(attrs) + ">" + std::string(inside) + "</query></iq>");
    Page p;
    for (auto& e : c.take()) {
      if (e.name() == "iq") {
        p.reply = e;
        continue;
      }
      const xml::Element* r = e.child("result", kMamNs);
      if (r == nullptr) continue;
      p.ids.emplace_back(r->attr("id"));
      p.queryids.emplace_back(r->attr("queryid"));
      const xml::Element* fwd = r->child("forwarded", "urn:xmpp:forward:0");
      const xml::Element* m = fwd != nullptr ? fwd->child("message", "jabber:client") : nullptr;
      p.bodies.push_back(m != nullptr ? m->child_text("body", "jabber:client") : "?");
      EXPECT_NE(fwd != nullptr ? fwd->child("delay", "urn:xmpp:delay") : nullptr, nullptr);
    }
    return p;
  }
  static std::string form(std::string_view fields) {
    return "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
           "<value>urn:xmpp:mam:2</value></field>" +
           std::string(fields) + "</x>";
  }
  static std::string field(std::string_view var, std::string_view value) {
    return "<field var='" + std::string(var) + "'><value>" + std::string(value) +
           "</value></field>";
  }
  static std::string rsm(std::string_view inside) {
    return "<set xmlns='http://jabber.org/protocol/rsm'>" + std::string(inside) + "</set>";
  }
  static bool has_condition(const xml::Element& e, std::string_view cond) {
    const xml::Element* err = e.child("error");
    return e.attr("type") == "error" && err != nullptr && err->child(cond) != nullptr;
  }
  // An available session with message carbons (XEP-0280) on.
  Client& with_carbons(std::string_view full) {
    Client& c = connect(full);
    send(c, "<presence/>");
    send(c, "<iq type='set' id='c'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
    for (auto& cl : clients_) cl->take();
    return c;
  }
  // The messages inside the carbons (<sent/> or <received/>, by `flag`) among `got`.
  static std::vector<const xml::Element*> carbons(const std::vector<xml::Element>& got,
                                                  std::string_view flag) {
    std::vector<const xml::Element*> out;
    for (const auto* m : named(got, "message")) {
      const xml::Element* f = m->child(flag, "urn:xmpp:carbons:2");
      const xml::Element* fwd =
          f != nullptr ? f->child("forwarded", "urn:xmpp:forward:0") : nullptr;
      if (fwd == nullptr) continue;
      if (const xml::Element* inner = fwd->child("message", "jabber:client")) out.push_back(inner);
    }
    return out;
  }
  // The ids of the stanza-ids of `m` in the name of `by`.
  static std::vector<std::string> stanza_ids(const xml::Element& m, std::string_view by) {
    std::vector<std::string> out;
    for (const auto* sid : m.children("stanza-id", kStanzaIdNs)) {
      if (sid->attr("by") == by) out.emplace_back(sid->attr("id"));
    }
    return out;
  }
};

TEST_F(MamTest, ArchivabilityRules) {
  auto m = [](std::string_view type, std::string_view inside) {
    xml::Element e("message", "jabber:client");
    if (!type.empty()) e.set_attr("type", type);
    if (inside == "body") e.add_child("body", "jabber:client").add_text("hi");
    if (inside == "store") e.add_child("store", "urn:xmpp:hints");
    if (inside == "state") e.add_child("composing", "http://jabber.org/protocol/chatstates");
    if (inside == "body+no-store") {
      e.add_child("body", "jabber:client").add_text("hi");
      e.add_child("no-store", "urn:xmpp:hints");
    }
    if (inside == "body+no-permanent-store") {
      e.add_child("body", "jabber:client").add_text("hi");
      e.add_child("no-permanent-store", "urn:xmpp:hints");
    }
    return e;
  };
  EXPECT_TRUE(mam_archivable(m("chat", "body")));
  EXPECT_TRUE(mam_archivable(m("", "body")));
  EXPECT_TRUE(mam_archivable(m("normal", "body")));
  EXPECT_TRUE(mam_archivable(m("chat", "store")));
  EXPECT_FALSE(mam_archivable(m("chat", "state")));  // chat states are not conversation
  EXPECT_FALSE(mam_archivable(m("chat", "body+no-store")));
  EXPECT_FALSE(mam_archivable(m("chat", "body+no-permanent-store")));
  EXPECT_FALSE(mam_archivable(m("error", "body")));
  EXPECT_FALSE(mam_archivable(m("headline", "body")));
  EXPECT_FALSE(mam_archivable(m("groupchat", "body")));
}

TEST_F(MamTest, BothSidesArchiveAndTheRecipientSeesItsStanzaId) {
  auto& a = online("alice@example.com/home");
  auto& b = online("bob@example.com/phone");
  chat(a, "bob@example.com", "hello bob");
  auto got = b.take();
  auto msgs = named(got, "message");
  ASSERT_EQ(msgs.size(), 1u);
  const xml::Element* sid = msgs[0]->child("stanza-id", kStanzaIdNs);
  ASSERT_NE(sid, nullptr);
  EXPECT_EQ(sid->attr("by"), "bob@example.com");
  ASSERT_FALSE(sid->attr("id").empty());
  Page pb = query(b, "");
  ASSERT_EQ(pb.reply.attr("type"), "result") << xml::serialize(pb.reply);
  EXPECT_EQ(pb.bodies, std::vector<std::string>{"hello bob"});
  EXPECT_EQ(pb.ids, std::vector<std::string>{std::string(sid->attr("id"))});
  EXPECT_EQ(pb.queryids, std::vector<std::string>{"f1"});
  EXPECT_TRUE(pb.complete());
  EXPECT_EQ(pb.rsm("count"), "1");
  EXPECT_EQ(pb.rsm("first"), pb.ids[0]);
  EXPECT_EQ(pb.rsm("last"), pb.ids[0]);
  // The sender's archive has its own copy, under another id; the sender got no stanza-id.
  Page pa = query(a, "");
  EXPECT_EQ(pa.bodies, std::vector<std::string>{"hello bob"});
  ASSERT_EQ(pa.ids.size(), 1u);
  EXPECT_NE(pa.ids[0], pb.ids[0]);
  EXPECT_TRUE(named(a.take(), "message").empty());
}

// A message to an online contact still goes out as the bytes it came in (its quoting, spacing
// and order kept), with 'from' and the stanza-id put in, and both archives get it.
TEST_F(MamTest, TheFastPathForwardsTheBytesWithTheStanzaIdSpliced) {
  auto& a = online("alice@example.com/home");
  auto& b = online("bob@example.com/phone");
  b.transport().take_written();
  send(a, "<message to=\"bob@example.com\"  type=\"chat\"><body>as  sent</body></message>");
  const std::string out = b.transport().take_written();
  EXPECT_EQ(out.find("<message from='alice@example.com/home' to=\"bob@example.com\"  "
                     "type=\"chat\"><body>as  sent</body><stanza-id xmlns='urn:xmpp:sid:0' "
                     "by='bob@example.com' id='"),
            0u)
      << out;
  Page pb = query(b, "");
  ASSERT_EQ(pb.bodies, std::vector<std::string>{"as  sent"});
  EXPECT_NE(out.find(pb.ids[0]), std::string::npos);
  EXPECT_EQ(query(a, "").bodies, std::vector<std::string>{"as  sent"});
}

TEST_F(MamTest, OfflineRecipientArchivesAndGetsTheIdWithTheOfflineCopy) {
  auto& a = online("alice@example.com/home");
  chat(a, "carol@example.com", "while you were out");
  auto& c = connect("carol@example.com/laptop");
  send(c, "<presence/>");
  auto got = c.take();
  std::string id;
  for (const auto* m : named(got, "message")) {
    if (const xml::Element* sid = m->child("stanza-id", kStanzaIdNs)) id = sid->attr("id");
  }
  ASSERT_FALSE(id.empty());
  Page p = query(c, "");
  EXPECT_EQ(p.bodies, std::vector<std::string>{"while you were out"});
  EXPECT_EQ(p.ids, std::vector<std::string>{id});
}

TEST_F(MamTest, NoArchiveForAnAccountThatDoesNotExist) {
  auto& a = online("alice@example.com/home");
  chat(a, "nobody@example.com", "anyone?");
  EXPECT_EQ(store().archive_count("nobody", {}), 0u);
  // The sender keeps what it sent, as a record of it.
  EXPECT_EQ(store().archive_count("alice", {}), 1u);
}

TEST_F(MamTest, ForgedStanzaIdsOfTheArchiveAreRemoved) {
  auto& a = online("alice@example.com/home");
  auto& b = online("bob@example.com/phone");
  // A chat state (not archived) still loses a stanza-id that claims to be bob's archive's.
  send(a,
       "<message type='chat' to='bob@example.com'><active "
       "xmlns='http://jabber.org/protocol/chatstates'/><stanza-id xmlns='urn:xmpp:sid:0' "
       "by='bob@example.com' id='forged'/><stanza-id xmlns='urn:xmpp:sid:0' by='other.example' "
       "id='kept'/></message>");
  auto got = b.take();
  auto msgs = named(got, "message");
  ASSERT_EQ(msgs.size(), 1u);
  auto sids = msgs[0]->children("stanza-id", kStanzaIdNs);
  ASSERT_EQ(sids.size(), 1u);
  EXPECT_EQ(sids[0]->attr("id"), "kept");
  EXPECT_EQ(store().archive_count("bob", {}), 0u);
}

TEST_F(MamTest, HintsAndChatStatesStayOut) {
  auto& a = online("alice@example.com/home");
  online("bob@example.com/phone");
  chat(a, "bob@example.com", "secret", "<no-store xmlns='urn:xmpp:hints'/>");
  send(a,
       "<message type='chat' to='bob@example.com'><composing "
       "xmlns='http://jabber.org/protocol/chatstates'/></message>");
  EXPECT_EQ(store().archive_count("alice", {}), 0u);
  EXPECT_EQ(store().archive_count("bob", {}), 0u);
}

TEST_F(MamTest, PagingForwardAndBackReturnsEachOnce) {
  auto& a = online("alice@example.com/home");
  auto& b = online("bob@example.com/phone");
  for (int i = 0; i < 23; ++i) chat(a, "bob@example.com", "m" + std::to_string(i));
  b.take();
  // Forward in pages of 5.
  std::vector<std::string> seen;
  std::string after;
  for (int guard = 0; guard < 10; ++guard) {
    Page p = query(b, rsm("<max>5</max>" + (after.empty() ? "" : "<after>" + after + "</after>")));
    ASSERT_EQ(p.reply.attr("type"), "result");
    EXPECT_EQ(p.rsm("count"), "23");
    EXPECT_EQ(p.rsm("first").empty(), p.bodies.empty());
    for (auto& body : p.bodies) seen.push_back(body);
    if (!p.bodies.empty()) {
      EXPECT_EQ(p.rsm("first"), p.ids.front());
      EXPECT_EQ(p.rsm("last"), p.ids.back());
      const xml::Element* first =
          p.reply.child("fin", kMamNs)->child("set", kRsm)->child("first", kRsm);
      EXPECT_EQ(first->attr("index"), std::to_string(seen.size() - p.bodies.size()));
    }
    if (p.complete()) break;
    after = p.rsm("last");
  }
  ASSERT_EQ(seen.size(), 23u);
  for (int i = 0; i < 23; ++i)
    EXPECT_EQ(seen[static_cast<std::size_t>(i)], "m" + std::to_string(i));
  // Backward from the end (<before/>), each page still oldest first.
  std::vector<std::string> back;
  std::string before;
  for (int guard = 0; guard < 10; ++guard) {
    Page p = query(b, rsm("<max>7</max><before>" + before + "</before>"));
    ASSERT_EQ(p.reply.attr("type"), "result");
    back.insert(back.begin(), p.bodies.begin(), p.bodies.end());
    if (p.complete()) break;
    before = p.rsm("first");
  }
  EXPECT_EQ(back, seen);
  // A flipped page: the same results, newest first.
  Page flipped = query(b, rsm("<max>3</max><before/>") + "<flip-page/>");
  EXPECT_EQ(flipped.bodies, (std::vector<std::string>{"m22", "m21", "m20"}));
}

TEST_F(MamTest, FiltersWithTimeAndIds) {
  auto& a = online("alice@example.com/home");
  auto& b = online("bob@example.com/phone");
  auto& c = online("carol@example.com/pc");
  const std::int64_t t0 = clock_->ms;
  chat(a, "bob@example.com", "from alice 1");
  clock_->ms += 60'000;
  chat(c, "bob@example.com/phone", "from carol");
  clock_->ms += 60'000;
  chat(a, "bob@example.com", "from alice 2");
  b.take();
  EXPECT_EQ(query(b, form(field("with", "alice@example.com"))).bodies,
            (std::vector<std::string>{"from alice 1", "from alice 2"}));
  EXPECT_EQ(query(b, form(field("with", "carol@example.com/pc"))).bodies,
            std::vector<std::string>{"from carol"});
  EXPECT_TRUE(query(b, form(field("with", "carol@example.com/other"))).bodies.empty());
  // start and end are inclusive.
  const std::string t1 = xmpp::format_datetime(t0 + 60'000);
  EXPECT_EQ(query(b, form(field("start", t1))).bodies,
            (std::vector<std::string>{"from carol", "from alice 2"}));
  EXPECT_EQ(query(b, form(field("end", t1))).bodies,
            (std::vector<std::string>{"from alice 1", "from carol"}));
  // ids, after-id, before-id.
  Page all = query(b, "");
  ASSERT_EQ(all.ids.size(), 3u);
  EXPECT_EQ(query(b, form(field("ids", all.ids[1]))).bodies,
            std::vector<std::string>{"from carol"});
  EXPECT_EQ(query(b, form(field("after-id", all.ids[0]))).bodies,
            (std::vector<std::string>{"from carol", "from alice 2"}));
  EXPECT_EQ(query(b, form(field("before-id", all.ids[2]))).bodies,
            (std::vector<std::string>{"from alice 1", "from carol"}));
  // An id that is not in the archive: item-not-found (§4.1.2), also through RSM (§4.3).
  EXPECT_TRUE(has_condition(query(b, form(field("after-id", "nope"))).reply, "item-not-found"));
  EXPECT_TRUE(has_condition(query(b, form(field("ids", "nope"))).reply, "item-not-found"));
  EXPECT_TRUE(has_condition(query(b, rsm("<after>nope</after>")).reply, "item-not-found"));
  // Someone else's ids are not in this archive.
  Page of_alice = query(a, "");
  ASSERT_FALSE(of_alice.ids.empty());
  EXPECT_TRUE(has_condition(query(b, form(field("ids", of_alice.ids[0]))).reply, "item-not-found"));
}

TEST_F(MamTest, BadQueriesGetTheirErrors) {
  auto& b = online("bob@example.com/phone");
  EXPECT_TRUE(has_condition(query(b, form(field("start", "yesterday"))).reply, "bad-request"));
  EXPECT_TRUE(has_condition(query(b, form(field("include-groupchat", "true"))).reply,
                            "feature-not-implemented"));
  EXPECT_TRUE(has_condition(query(b, form(field("with", "@@"))).reply, "jid-malformed"));
  EXPECT_TRUE(has_condition(query(b, rsm("<max>lots</max>")).reply, "bad-request"));
  EXPECT_TRUE(has_condition(
      query(b,
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:other</value>"
            "</field></x>")
          .reply,
      "bad-request"));
  // Someone else's archive: forbidden; the server's: service-unavailable.
  send(b, "<iq type='set' id='x' to='alice@example.com'><query xmlns='urn:xmpp:mam:2'/></iq>");
  auto got = b.take();
  ASSERT_EQ(named(got, "iq").size(), 1u);
  EXPECT_TRUE(has_condition(*named(got, "iq")[0], "forbidden"));
  EXPECT_TRUE(named(got, "message").empty());
}

TEST_F(MamTest, FormAndMetadata) {
  auto& a = online("alice@example.com/home");
  send(a, "<iq type='get' id='md'><metadata xmlns='urn:xmpp:mam:2'/></iq>");
  auto got = a.take();
  ASSERT_EQ(named(got, "iq").size(), 1u);
  const xml::Element* md = named(got, "iq")[0]->child("metadata", kMamNs);
  ASSERT_NE(md, nullptr);
  EXPECT_EQ(md->first_child(), nullptr);  // an empty archive: an empty <metadata/>
  online("bob@example.com/phone");
  chat(a, "bob@example.com", "one");
  chat(a, "bob@example.com", "two");
  send(a, "<iq type='get' id='md2'><metadata xmlns='urn:xmpp:mam:2'/></iq>");
  got = a.take();
  md = named(got, "iq")[0]->child("metadata", kMamNs);
  Page p = query(a, "");
  ASSERT_EQ(p.ids.size(), 2u);
  ASSERT_NE(md->child("start", kMamNs), nullptr);
  EXPECT_EQ(md->child("start", kMamNs)->attr("id"), p.ids[0]);
  EXPECT_EQ(md->child("end", kMamNs)->attr("id"), p.ids[1]);
  send(a, "<iq type='get' id='f'><query xmlns='urn:xmpp:mam:2'/></iq>");
  got = a.take();
  const xml::Element* x = named(got, "iq")[0]->child("query", kMamNs);
  ASSERT_NE(x, nullptr);
  x = x->child("x", "jabber:x:data");
  ASSERT_NE(x, nullptr);
  std::vector<std::string> vars;
  for (const auto* f : x->children("field")) vars.emplace_back(f->attr("var"));
  EXPECT_EQ(vars, (std::vector<std::string>{"FORM_TYPE", "with", "start", "end", "before-id",
                                            "after-id", "ids"}));
}

TEST_F(MamTest, PreferencesDecideWhatIsArchived) {
  auto& a = online("alice@example.com/home");
  online("bob@example.com/phone");
  online("carol@example.com/pc");
  send(a,
       "<iq type='set' id='p'><prefs xmlns='urn:xmpp:mam:2' default='never'><always>"
       "<jid>Bob@Example.com</jid></always><never/></prefs></iq>");
  auto got = a.take();
  ASSERT_EQ(named(got, "iq").size(), 1u);
  const xml::Element* prefs = named(got, "iq")[0]->child("prefs", kMamNs);
  ASSERT_NE(prefs, nullptr);
  EXPECT_EQ(prefs->attr("default"), "never");
  EXPECT_EQ(prefs->child("always", kMamNs)->child_text("jid", kMamNs), "bob@example.com");
  chat(a, "bob@example.com", "to bob");
  chat(a, "carol@example.com", "to carol");
  EXPECT_EQ(query(a, "").bodies, std::vector<std::string>{"to bob"});
  // Read back, from the store too.
  send(a, "<iq type='get' id='p2'><prefs xmlns='urn:xmpp:mam:2'/></iq>");
  got = a.take();
  EXPECT_EQ(named(got, "iq")[0]->child("prefs", kMamNs)->attr("default"), "never");
  ASSERT_TRUE(store().archive_prefs("alice").has_value());
  EXPECT_EQ(store().archive_prefs("alice")->always, std::vector<std::string>{"bob@example.com"});
  // A bad default is refused.
  send(a, "<iq type='set' id='p3'><prefs xmlns='urn:xmpp:mam:2' default='sometimes'/></iq>");
  got = a.take();
  EXPECT_TRUE(has_condition(*named(got, "iq")[0], "bad-request"));
}

TEST_F(MamTest, RosterModeArchivesContactsOnly) {
  store::RosterItem it;
  it.jid = "bob@example.com";
  it.state.sub = xmpp::Subscription::kBoth;
  store().put_roster_item("alice", it);
  auto& a = online("alice@example.com/home");
  online("bob@example.com/phone");
  online("carol@example.com/pc");
  send(a, "<iq type='set' id='p'><prefs xmlns='urn:xmpp:mam:2' default='roster'/></iq>");
  a.take();
  chat(a, "bob@example.com", "to a contact");
  chat(a, "carol@example.com", "to a stranger");
  EXPECT_EQ(query(a, "").bodies, std::vector<std::string>{"to a contact"});
}

TEST_F(MamTest, NoteToSelfIsArchivedOnce) {
  auto& a = online("alice@example.com/home");
  online("alice@example.com/phone");
  chat(a, "alice@example.com", "remember the milk");
  Page p = query(a, form(field("with", "alice@example.com")));
  EXPECT_EQ(p.bodies, std::vector<std::string>{"remember the milk"});
}

// XEP-0313 §3.5: the sender's archive id goes into the <sent/> carbons, inside the forwarded
// message, and not to the contact; to a bare or a full JID, online or offline.
TEST_F(MamTest, SentCarbonsCarryTheSendersArchiveIdAndTheContactNone) {
  auto& home = with_carbons("alice@example.com/home");
  auto& phone = with_carbons("alice@example.com/phone");
  auto& b = online("bob@example.com/phone");
  chat(home, "bob@example.com", "to the bare JID");
  chat(home, "bob@example.com/phone", "to the full JID");
  chat(home, "carol@example.com", "to carol, offline");
  auto got = phone.take();
  auto sent = carbons(got, "sent");
  ASSERT_EQ(sent.size(), 3u);
  EXPECT_TRUE(named(home.take(), "message").empty());  // not to the sending resource
  Page pa = query(home, "");
  ASSERT_EQ(pa.bodies,
            (std::vector<std::string>{"to the bare JID", "to the full JID", "to carol, offline"}));
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(sent[i]->child_text("body", "jabber:client"), pa.bodies[i]);
    EXPECT_EQ(sent[i]->children("stanza-id", kStanzaIdNs).size(), 1u);
    EXPECT_EQ(stanza_ids(*sent[i], "alice@example.com"), std::vector<std::string>{pa.ids[i]})
        << xml::serialize(*sent[i]);
  }
  // The contact gets only its own archive's id, online or offline.
  auto to_bob = b.take();
  auto msgs = named(to_bob, "message");
  ASSERT_EQ(msgs.size(), 2u);
  for (const auto* m : msgs) {
    EXPECT_TRUE(stanza_ids(*m, "alice@example.com").empty()) << xml::serialize(*m);
    EXPECT_EQ(stanza_ids(*m, "bob@example.com").size(), 1u);
  }
  auto& c = connect("carol@example.com/laptop");
  send(c, "<presence/>");
  auto to_carol = c.take();
  auto offline = named(to_carol, "message");
  ASSERT_EQ(offline.size(), 1u);
  EXPECT_TRUE(stanza_ids(*offline[0], "alice@example.com").empty());
  EXPECT_EQ(stanza_ids(*offline[0], "carol@example.com").size(), 1u);
  // The sender's archive itself holds the message as the contact got it.
  EXPECT_EQ(store().archive_query("alice", {}, 10, false)[0].stanza.find("stanza-id"),
            std::string::npos);
}

// A stanza-id the sender put there in its own archive's name reaches neither its carbons (they
// get the real one) nor the contact; nor one of a message that is not archived.
TEST_F(MamTest, SentCarbonsCarryOnlyTheRealId) {
  auto& home = with_carbons("alice@example.com/home");
  auto& phone = with_carbons("alice@example.com/phone");
  auto& b = online("bob@example.com/phone");
  const std::string forged =
      "<stanza-id xmlns='urn:xmpp:sid:0' by='alice@example.com' id='forged'/>";
  chat(home, "bob@example.com", "archived", forged);
  chat(home, "bob@example.com", "off the record", forged + "<no-store xmlns='urn:xmpp:hints'/>");
  auto got = phone.take();
  auto sent = carbons(got, "sent");
  ASSERT_EQ(sent.size(), 2u);
  Page pa = query(home, "");
  ASSERT_EQ(pa.bodies, std::vector<std::string>{"archived"});
  EXPECT_EQ(stanza_ids(*sent[0], "alice@example.com"), std::vector<std::string>{pa.ids[0]});
  EXPECT_TRUE(stanza_ids(*sent[1], "alice@example.com").empty()) << xml::serialize(*sent[1]);
  auto to_bob = b.take();
  auto msgs = named(to_bob, "message");
  ASSERT_EQ(msgs.size(), 2u);
  for (const auto* m : msgs) {
    EXPECT_TRUE(stanza_ids(*m, "alice@example.com").empty()) << xml::serialize(*m);
  }
}

// Received carbons carry the recipient's archive id, the one its other resources got.
TEST_F(MamTest, ReceivedCarbonsCarryTheRecipientsArchiveId) {
  auto& a = online("alice@example.com/home");
  auto& phone = with_carbons("bob@example.com/phone");
  auto& laptop = with_carbons("bob@example.com/laptop");
  chat(a, "bob@example.com/phone", "hi bob");
  auto direct = phone.take();
  auto msgs = named(direct, "message");
  ASSERT_EQ(msgs.size(), 1u);
  auto copy = laptop.take();
  auto received = carbons(copy, "received");
  ASSERT_EQ(received.size(), 1u);
  Page pb = query(phone, "");
  ASSERT_EQ(pb.ids.size(), 1u);
  EXPECT_EQ(stanza_ids(*msgs[0], "bob@example.com"), pb.ids);
  EXPECT_EQ(stanza_ids(*received[0], "bob@example.com"), pb.ids);
  EXPECT_TRUE(stanza_ids(*received[0], "alice@example.com").empty());
}

// A note to self is archived once, as received: the resource it goes to and the received
// carbons carry that one id, and there is no <sent/> copy.
TEST_F(MamTest, NoteToSelfWithCarbonsCarriesItsOneId) {
  auto& home = with_carbons("alice@example.com/home");
  auto& phone = with_carbons("alice@example.com/phone");
  auto& work = with_carbons("alice@example.com/work");
  chat(home, "alice@example.com/phone", "note");
  Page p = query(home, "");
  ASSERT_EQ(p.ids.size(), 1u);
  auto to_phone = phone.take();
  auto msgs = named(to_phone, "message");
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(stanza_ids(*msgs[0], "alice@example.com"), p.ids);
  auto to_work = work.take();
  EXPECT_TRUE(carbons(to_work, "sent").empty());
  auto received = carbons(to_work, "received");
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(stanza_ids(*received[0], "alice@example.com"), p.ids);
}

TEST_F(MamTest, RetentionDeletesTheOldestOnly) {
  auto& a = online("alice@example.com/home");
  online("bob@example.com/phone");
  chat(a, "bob@example.com", "old");
  clock_->ms += 10'000;
  chat(a, "bob@example.com", "new");
  EXPECT_EQ(store().archive_expire(clock_->ms - 5'000, 100), 2u);  // alice's and bob's "old"
  EXPECT_EQ(query(a, "").bodies, std::vector<std::string>{"new"});
}

TEST_F(MamTest, DiscoOfTheAccountAnnouncesTheArchive) {
  auto& a = online("alice@example.com/home");
  send(a,
       "<iq type='get' id='d' to='alice@example.com'><query "
       "xmlns='http://jabber.org/protocol/disco#info'/></iq>");
  auto got = a.take();
  ASSERT_EQ(named(got, "iq").size(), 1u);
  std::vector<std::string> features;
  for (const auto* f : named(got, "iq")[0]
                           ->child("query", "http://jabber.org/protocol/disco#info")
                           ->children("feature")) {
    features.emplace_back(f->attr("var"));
  }
  for (const char* f : {"urn:xmpp:mam:2", "urn:xmpp:mam:2#extended", "urn:xmpp:sid:0"}) {
    EXPECT_NE(std::find(features.begin(), features.end(), f), features.end()) << f;
  }
}

}  // namespace
}  // namespace kabar::server
