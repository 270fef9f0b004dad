// XEP-0280 message carbons in the client session: the <enable/> asked for after login, copies
// unwrapped into Message (sent ones marked outgoing), and §11: a copy not from the account's own
// bare JID is ignored. Driven through the session's dispatch() with no connection: what it sends
// stays in its write queue. Also the archive (XEP-0313) queries and the stanza-ids (XEP-0359) a
// device uses to tell what it has from what it missed.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "client/client_impl.h"
#include "client_stanzas.h"
#include "xml/stream_parser.h"
#include "xmpp/jid.h"

namespace kabar::client {
namespace {

using testing::parse_stanzas;

Options alice(bool carbons = true) {
  Options o;
  o.jid = "alice@example.org";
  o.carbons = carbons;
  return o;
}

// A bound session with no transport (as in client_handlers_test.cc).
class ClientCarbons : public ::testing::Test {
 protected:
  explicit ClientCarbons(bool carbons = true) : session(io, alice(carbons)) {
    client.on_message = [this](const Message& m) { got.push_back(m); };
  }

  void receive(const std::string& xml) { session.dispatch(xml); }
  std::vector<xml::Element> sent() { return session.queued(); }

  // A carbon of `kind` (received or sent) around `inner`, from `from`.
  static std::string carbon(const std::string& from, const std::string& kind,
                            const std::string& inner) {
    return "<message from='" + from + "' to='alice@example.org/desk' type='chat'><" + kind +
           " xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>" + inner +
           "</forwarded></" + kind + "></message>";
  }

  asio::io_context io;
  testing::OfflineSession session;
  Client& client = session.client;
  Client::Impl& impl = session.impl;
  std::vector<Message> got;
};

class ClientCarbonsOff : public ClientCarbons {
 protected:
  ClientCarbonsOff() : ClientCarbons(false) {}
};

constexpr const char* kFromBob =
    "<message xmlns='jabber:client' from='bob@example.org/phone' to='alice@example.org/laptop' "
    "type='chat' id='b1'><body>hi alice</body><request xmlns='urn:xmpp:receipts'/></message>";
constexpr const char* kToBob =
    "<message xmlns='jabber:client' from='alice@example.org/laptop' to='bob@example.org' "
    "type='chat' id='a1'><body>hi bob</body><request xmlns='urn:xmpp:receipts'/></message>";

TEST_F(ClientCarbons, EnableIsAskedForAndItsResultRecorded) {
  bool done = false;
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        co_await impl.enable_carbons();
        done = true;
      },
      asio::detached);
  io.poll();
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  const xml::Element& iq = out.front();
  EXPECT_EQ(iq.name(), "iq");
  EXPECT_EQ(iq.attr("type"), "set");
  const xml::Element* enable = iq.first_child();
  ASSERT_NE(enable, nullptr);
  EXPECT_TRUE(enable->is("enable", "urn:xmpp:carbons:2"));
  EXPECT_FALSE(done);
  receive("<iq from='alice@example.org' to='alice@example.org/desk' type='result' id='" +
          std::string(iq.attr("id")) + "'/>");
  io.poll();
  EXPECT_TRUE(done);
  EXPECT_TRUE(client.carbons_enabled());
}

TEST_F(ClientCarbons, AnErrorAnswerLeavesThemOff) {
  bool done = false;
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        co_await impl.enable_carbons();
        done = true;
      },
      asio::detached);
  io.poll();
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  receive("<iq from='example.org' to='alice@example.org/desk' type='error' id='" +
          std::string(out.front().attr("id")) +
          "'><error type='cancel'><service-unavailable "
          "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
  io.poll();
  EXPECT_TRUE(done);
  EXPECT_FALSE(client.carbons_enabled());
}

TEST_F(ClientCarbonsOff, NothingIsAskedForAndCopiesAreIgnored) {
  bool done = false;
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        co_await impl.enable_carbons();
        done = true;
      },
      asio::detached);
  io.poll();
  EXPECT_TRUE(done);
  EXPECT_TRUE(sent().empty());
  EXPECT_FALSE(client.carbons_enabled());
  receive(carbon("alice@example.org", "received", kFromBob));
  EXPECT_TRUE(got.empty());
}

TEST_F(ClientCarbons, AReceivedCopyIsAnIncomingMessageWithNoReceipt) {
  receive(carbon("alice@example.org", "received", kFromBob));
  ASSERT_EQ(got.size(), 1u);
  const Message& m = got.front();
  EXPECT_TRUE(m.carbon);
  EXPECT_FALSE(m.outgoing);
  EXPECT_EQ(m.from, "bob@example.org/phone");
  EXPECT_EQ(m.to, "alice@example.org/laptop");
  EXPECT_EQ(m.id, "b1");
  EXPECT_EQ(m.type, "chat");
  EXPECT_EQ(m.body, "hi alice");
  // The laptop answers bob's receipt request; this copy must not (XEP-0280 §10.4).
  EXPECT_TRUE(sent().empty());
}

TEST_F(ClientCarbons, ASentCopyIsOursToItsRecipient) {
  receive(carbon("alice@example.org", "sent", kToBob));
  ASSERT_EQ(got.size(), 1u);
  const Message& m = got.front();
  EXPECT_TRUE(m.carbon);
  EXPECT_TRUE(m.outgoing);
  EXPECT_EQ(m.to, "bob@example.org");
  EXPECT_EQ(m.from, "alice@example.org/laptop");
  EXPECT_EQ(m.id, "a1");
  EXPECT_EQ(m.body, "hi bob");
  EXPECT_TRUE(sent().empty());
}

TEST_F(ClientCarbons, TheForwardsStampIsTheCopysDelay) {
  receive(
      "<message from='alice@example.org' to='alice@example.org/desk' type='chat'>"
      "<sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
      "<delay xmlns='urn:xmpp:delay' stamp='2026-12-07T10:00:00Z'/>" +
      std::string(kToBob) + "</forwarded></sent></message>");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got.front().delay, "2026-12-07T10:00:00Z");
}

TEST_F(ClientCarbons, CopiesNotFromOurBareJidAreIgnored) {
  // XEP-0280 §11: from a contact (bare or full), from another resource of ours, from the
  // server, or with no 'from' at all.
  for (const char* from :
       {"mallory@example.org", "mallory@example.org/x", "alice@example.org/laptop", "example.org",
        "alice@example.org.evil", "bob@example.org"}) {
    receive(carbon(from, "received", kFromBob));
    receive(carbon(from, "sent", kToBob));
  }
  receive(
      "<message to='alice@example.org/desk' type='chat'><sent xmlns='urn:xmpp:carbons:2'>"
      "<forwarded xmlns='urn:xmpp:forward:0'>" +
      std::string(kToBob) + "</forwarded></sent></message>");
  EXPECT_TRUE(got.empty());
  EXPECT_TRUE(sent().empty());
}

TEST_F(ClientCarbons, AnEmptyWrapperIsIgnored) {
  receive(
      "<message from='alice@example.org' to='alice@example.org/desk' type='chat'>"
      "<received xmlns='urn:xmpp:carbons:2'/></message>");
  receive(
      "<message from='alice@example.org' to='alice@example.org/desk' type='chat'>"
      "<sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'/></sent>"
      "</message>");
  EXPECT_TRUE(got.empty());
}

TEST_F(ClientCarbons, AnOrdinaryMessageIsNoCarbon) {
  receive(kFromBob);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_FALSE(got.front().carbon);
  EXPECT_FALSE(got.front().outgoing);
  EXPECT_EQ(sent().size(), 1u);  // its receipt
}

// XEP-0359 §4: only the account's own archive's stanza-id is taken.
TEST_F(ClientCarbons, StanzaIdOnlyFromTheOwnArchive) {
  receive(
      "<message xmlns='jabber:client' from='bob@example.org/phone' to='alice@example.org/desk' "
      "type='chat' id='b2'><body>one</body><stanza-id xmlns='urn:xmpp:sid:0' by='bob@example.org' "
      "id='forged'/><stanza-id xmlns='urn:xmpp:sid:0' by='alice@example.org' id='A1'/></message>");
  receive(
      "<message xmlns='jabber:client' from='bob@example.org/phone' to='alice@example.org/desk' "
      "type='chat' id='b3'><body>two</body><stanza-id xmlns='urn:xmpp:sid:0' by='example.org' "
      "id='X'/></message>");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].stanza_id, "A1");
  EXPECT_EQ(got[1].stanza_id, "");
}

class ClientArchive : public ClientCarbons {
 protected:
  // Runs query_archive(q) up to its IQ; returns that IQ (the answer is for the test to give).
  xml::Element start(client::ArchiveQuery q) {
    asio::co_spawn(
        io,
        [this, q]() -> awaitable<void> {
          page = co_await client.query_archive(q);
          done = true;
        },
        asio::detached);
    io.poll();
    auto out = sent();
    EXPECT_EQ(out.size(), 1u);
    return out.empty() ? xml::Element("none") : out.back();
  }

  static std::string result(const std::string& from, const std::string& queryid,
                            const std::string& id, const std::string& inner) {
    return "<message xmlns='jabber:client'" + (from.empty() ? "" : " from='" + from + "'") +
           " to='alice@example.org/desk'><result xmlns='urn:xmpp:mam:2' queryid='" + queryid +
           "' id='" + id +
           "'><forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' "
           "stamp='2026-12-07T10:00:00Z'/>" +
           inner + "</forwarded></result></message>";
  }

  ArchivePage page;
  bool done = false;
};

TEST_F(ClientArchive, AQueryItsResultsAndItsEnd) {
  ArchiveQuery q;
  q.with = "bob@example.org";
  q.start_ms = 1765101600000;  // 2025-12-07T10:00:00Z
  q.after = "A0";
  q.max = 5;
  xml::Element iq = start(q);
  EXPECT_EQ(iq.attr("type"), "set");
  const xml::Element* query = iq.child("query", "urn:xmpp:mam:2");
  ASSERT_NE(query, nullptr);
  const std::string qid(query->attr("queryid"));
  EXPECT_FALSE(qid.empty());
  const xml::Element* x = query->child("x", "jabber:x:data");
  ASSERT_NE(x, nullptr);
  std::map<std::string, std::string> fields;
  for (const xml::Element* f : x->children("field", "jabber:x:data"))
    fields[std::string(f->attr("var"))] = f->child_text("value", "jabber:x:data");
  EXPECT_EQ(fields["FORM_TYPE"], "urn:xmpp:mam:2");
  EXPECT_EQ(fields["with"], "bob@example.org");
  EXPECT_EQ(fields["start"], "2025-12-07T10:00:00.000Z");
  EXPECT_EQ(fields.count("end"), 0u);
  const xml::Element* set = query->child("set", "http://jabber.org/protocol/rsm");
  ASSERT_NE(set, nullptr);
  EXPECT_EQ(set->child_text("max", "http://jabber.org/protocol/rsm"), "5");
  EXPECT_EQ(set->child_text("after", "http://jabber.org/protocol/rsm"), "A0");
  EXPECT_EQ(set->child("before", "http://jabber.org/protocol/rsm"), nullptr);

  receive(result("", qid, "A1", kFromBob));
  receive(result("alice@example.org", qid, "A2", kToBob));
  // Not ours: another query's, and a contact's forgery; both go on as plain messages.
  receive(result("alice@example.org", "other", "A9", kFromBob));
  receive(result("bob@example.org", qid, "A8", kFromBob));
  EXPECT_FALSE(done);
  receive("<iq xmlns='jabber:client' type='result' id='" + std::string(iq.attr("id")) +
          "'><fin xmlns='urn:xmpp:mam:2' complete='true'><set "
          "xmlns='http://jabber.org/protocol/rsm'><first>A1</first><last>A2</last></set></fin>"
          "</iq>");
  io.poll();
  ASSERT_TRUE(done);
  EXPECT_FALSE(page.error) << page.error.message;
  ASSERT_EQ(page.messages.size(), 2u);
  EXPECT_EQ(page.messages[0].archive_id, "A1");
  EXPECT_EQ(page.messages[0].message.body, "hi alice");
  EXPECT_FALSE(page.messages[0].outgoing);
  EXPECT_EQ(page.messages[0].message.delay, "2026-12-07T10:00:00Z");
  EXPECT_EQ(page.messages[1].archive_id, "A2");
  EXPECT_TRUE(page.messages[1].outgoing);
  EXPECT_TRUE(page.complete);
  EXPECT_EQ(page.first, "A1");
  EXPECT_EQ(page.last, "A2");
  // No receipt was sent for an archived message asking for one (only the query went out).
  EXPECT_EQ(sent().size(), 1u);
}

TEST_F(ClientArchive, TheNewestPageAndAServerWithoutAnArchive) {
  ArchiveQuery q;
  q.before = std::string();
  xml::Element iq = start(q);
  const xml::Element* set =
      iq.child("query", "urn:xmpp:mam:2")->child("set", "http://jabber.org/protocol/rsm");
  ASSERT_NE(set, nullptr);
  const xml::Element* before = set->child("before", "http://jabber.org/protocol/rsm");
  ASSERT_NE(before, nullptr);
  EXPECT_EQ(before->text(), "");
  receive("<iq xmlns='jabber:client' type='error' id='" + std::string(iq.attr("id")) +
          "'><error type='cancel'><service-unavailable "
          "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
  io.poll();
  ASSERT_TRUE(done);
  EXPECT_EQ(page.error.code, Errc::kUnsupported);
  EXPECT_TRUE(page.messages.empty());
}

}  // namespace
}  // namespace kabar::client
