// The client session's stanza handlers: several per namespace and stanza kind, each free to
// claim or decline, and the one answer an IQ nobody claims gets. Driven through the session's
// dispatch() with no connection: what it sends stays in its write queue.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "client/client_impl.h"
#include "client_stanzas.h"
#include "kabar/filetransfer.h"
#include "xml/stream_parser.h"
#include "xmpp/jid.h"
#include "xmpp/stanza.h"

namespace kabar::client {
namespace {

using testing::parse_stanzas;
using testing::reply_condition;

using testing::parse_stanza;

// A bound session with no transport: dispatch() runs the real handling, and every stanza it
// sends stays in outq (no writer is started while `writing` is set).
class ClientHandlers : public ::testing::Test {
 protected:
  void receive(const std::string& xml) { session.dispatch(xml); }
  std::vector<xml::Element> sent() { return session.queued(); }

  asio::io_context io;
  testing::OfflineSession session{io, testing::alice_options()};
  Client& client = session.client;
  Client::Impl& impl = session.impl;
};

constexpr const char* kQueryIq =
    "<iq type='set' id='q1' from='bob@example.org/phone' to='alice@example.org/desk'>"
    "<query xmlns='urn:example:thing'/></iq>";

TEST_F(ClientHandlers, FirstDeclinesSecondTakes) {
  std::vector<std::string> calls;
  client.add_iq_handler("urn:example:thing", [&](const xml::Element& iq) {
    calls.push_back("first:" + std::string(iq.attr("id")));
    return false;
  });
  client.add_iq_handler("urn:example:thing", [&](const xml::Element& iq) {
    calls.push_back("second:" + std::string(iq.attr("id")));
    client.send_stanza(xmpp::make_iq_result(iq));
    return true;
  });
  client.add_iq_handler("urn:example:thing", [&](const xml::Element&) {
    calls.push_back("third");
    return true;
  });
  receive(kQueryIq);
  EXPECT_EQ(calls, (std::vector<std::string>{"first:q1", "second:q1"}));
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);  // the taker's result, and no error from the session
  EXPECT_EQ(out[0].attr("type"), "result");
  EXPECT_EQ(out[0].attr("id"), "q1");
}

TEST_F(ClientHandlers, OnlyHandlersOfThePayloadNamespaceAreAsked) {
  int other = 0, any = 0;
  client.add_iq_handler("urn:example:other", [&](const xml::Element&) {
    ++other;
    return true;
  });
  client.add_iq_handler("", [&](const xml::Element&) {
    ++any;
    return false;
  });
  receive(kQueryIq);
  EXPECT_EQ(other, 0);
  EXPECT_EQ(any, 1);
}

TEST_F(ClientHandlers, NoneTakesOneServiceUnavailable) {
  int asked = 0;
  for (int i = 0; i < 3; ++i)
    client.add_iq_handler("urn:example:thing", [&](const xml::Element&) {
      ++asked;
      return false;
    });
  receive(kQueryIq);
  EXPECT_EQ(asked, 3);
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].attr("type"), "error");
  EXPECT_EQ(out[0].attr("id"), "q1");
  EXPECT_EQ(out[0].attr("to"), "bob@example.org/phone");
  EXPECT_EQ(reply_condition(out[0]), "service-unavailable");  // RFC 6120 §8.4
}

TEST_F(ClientHandlers, UnclaimedGetWithNoHandlerAtAllIsAnsweredOnce) {
  receive("<iq type='get' id='g1' from='bob@example.org/phone'><x xmlns='urn:example:none'/></iq>");
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(reply_condition(out[0]), "service-unavailable");
}

TEST_F(ClientHandlers, ResultsAndErrorsAreNeverAnswered) {
  int asked = 0;
  client.add_iq_handler("urn:example:thing", [&](const xml::Element&) {
    ++asked;
    return false;
  });
  receive(
      "<iq type='result' id='r1' from='bob@example.org/phone'>"
      "<query xmlns='urn:example:thing'/></iq>");
  receive(
      "<iq type='error' id='r2' from='bob@example.org/phone'>"
      "<query xmlns='urn:example:thing'/></iq>");
  EXPECT_EQ(asked, 0);
  EXPECT_TRUE(sent().empty());
}

TEST_F(ClientHandlers, UnregisteredHandlerIsNotAsked) {
  int first = 0, second = 0;
  HandlerToken t1 = client.add_iq_handler("urn:example:thing", [&](const xml::Element&) {
    ++first;
    return true;
  });
  HandlerToken t2 = client.add_iq_handler("urn:example:thing", [&](const xml::Element& iq) {
    ++second;
    client.send_stanza(xmpp::make_iq_result(iq));
    return true;
  });
  ASSERT_TRUE(t1);
  ASSERT_TRUE(t2);
  EXPECT_NE(t1.id, t2.id);
  EXPECT_TRUE(client.remove_handler(t1));
  EXPECT_FALSE(client.remove_handler(t1));  // once only
  receive(kQueryIq);
  EXPECT_EQ(first, 0);
  EXPECT_EQ(second, 1);
  EXPECT_TRUE(client.remove_handler(t2));
  impl.outq.clear();
  receive(kQueryIq);
  EXPECT_EQ(second, 1);
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(reply_condition(out[0]), "service-unavailable");
}

TEST_F(ClientHandlers, HandlerMayRemoveItselfAndTheNextWhileRunning) {
  HandlerToken self_token, next_token;
  int first = 0, next = 0, last = 0;
  self_token = client.add_iq_handler("urn:example:thing", [&](const xml::Element&) {
    ++first;
    client.remove_handler(self_token);
    client.remove_handler(next_token);
    return false;
  });
  next_token = client.add_iq_handler("urn:example:thing", [&](const xml::Element&) {
    ++next;
    return true;
  });
  client.add_iq_handler("urn:example:thing", [&](const xml::Element& iq) {
    ++last;
    client.send_stanza(xmpp::make_iq_result(iq));
    return true;
  });
  receive(kQueryIq);
  receive(kQueryIq);
  EXPECT_EQ(first, 1);
  EXPECT_EQ(next, 0);
  EXPECT_EQ(last, 2);
  EXPECT_EQ(sent().size(), 2u);
}

TEST_F(ClientHandlers, ClaimedMessageSkipsTheEventAndTheReceipt) {
  int events = 0;
  client.on_message = [&](const Message&) { ++events; };
  std::vector<std::string> seen;
  client.add_message_handler("urn:xmpp:jingle-message:0", [&](const xml::Element& m) {
    seen.push_back(std::string(m.attr("id")));
    return m.child("propose", "urn:xmpp:jingle-message:0") != nullptr;
  });
  // Claimed: no on_message, no XEP-0184 receipt.
  receive(
      "<message id='m1' from='bob@example.org/phone'><propose xmlns='urn:xmpp:jingle-message:0' "
      "id='c1'/><request xmlns='urn:xmpp:receipts'/></message>");
  // Declined: handled as before.
  receive(
      "<message id='m2' from='bob@example.org/phone'><retract "
      "xmlns='urn:xmpp:jingle-message:0' id='c1'/><request xmlns='urn:xmpp:receipts'/>"
      "</message>");
  // Not in the namespace: not offered.
  receive("<message id='m3' from='bob@example.org/phone'><body>hi</body></message>");
  EXPECT_EQ(seen, (std::vector<std::string>{"m1", "m2"}));
  EXPECT_EQ(events, 2);
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);  // the receipt for m2
  const xml::Element* r = out[0].child("received", "urn:xmpp:receipts");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->attr("id"), "m2");
}

TEST_F(ClientHandlers, ClaimedPresenceIsNotTracked) {
  int events = 0;
  client.on_presence = [&](const Presence&) { ++events; };
  client.add_presence_handler("vcard-temp:x:update", [&](const xml::Element&) { return true; });
  receive("<presence from='bob@example.org/phone'><x xmlns='vcard-temp:x:update'/></presence>");
  EXPECT_EQ(events, 0);
  EXPECT_TRUE(client.presences().empty());
  receive("<presence from='carol@example.org/desk'/>");
  EXPECT_EQ(events, 1);
  EXPECT_EQ(client.presences().count("carol@example.org"), 1u);
}

constexpr const char* kJingle = "urn:xmpp:jingle:1";

TEST_F(ClientHandlers, JingleUnclaimedActionGetsUnknownSession) {
  client.add_iq_handler(kJingle, [](const xml::Element&) { return false; });
  receive(
      "<iq type='set' id='j1' from='bob@example.org/phone'><jingle xmlns='urn:xmpp:jingle:1' "
      "action='transport-info' sid='s1'/></iq>");
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(reply_condition(out[0]), "item-not-found");  // XEP-0166 §10
  EXPECT_NE(out[0].child("error")->child("unknown-session", "urn:xmpp:jingle:errors:1"), nullptr);
}

TEST_F(ClientHandlers, JingleUnclaimedOfferIsAcknowledgedThenTerminated) {
  client.add_iq_handler(kJingle, [](const xml::Element&) { return false; });
  receive(
      "<iq type='set' id='j2' from='bob@example.org/phone'><jingle xmlns='urn:xmpp:jingle:1' "
      "action='session-initiate' sid='s2' initiator='bob@example.org/phone'>"
      "<content creator='initiator' name='voice'>"
      "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></content>"
      "</jingle></iq>");
  auto out = sent();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].attr("type"), "result");
  EXPECT_EQ(out[0].attr("id"), "j2");
  EXPECT_EQ(out[1].attr("type"), "set");
  EXPECT_EQ(out[1].attr("to"), "bob@example.org/phone");
  const xml::Element* j = out[1].child("jingle", kJingle);
  ASSERT_NE(j, nullptr);
  EXPECT_EQ(j->attr("action"), "session-terminate");
  EXPECT_EQ(j->attr("sid"), "s2");
  const xml::Element* reason = j->child("reason", kJingle);
  ASSERT_NE(reason, nullptr);
  EXPECT_NE(reason->child("unsupported-applications", kJingle), nullptr);
}

TEST_F(ClientHandlers, JingleUnclaimedOfferWithNoSenderIsNotTerminatedToNobody) {
  client.add_iq_handler(kJingle, [](const xml::Element&) { return false; });
  receive(
      "<iq type='set' id='j4'><jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' "
      "sid='s4'/></iq>");
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);  // one error, no session-terminate without an addressee
  EXPECT_EQ(out[0].attr("type"), "error");
  EXPECT_EQ(reply_condition(out[0]), "item-not-found");
}

TEST_F(ClientHandlers, JingleWithoutAnyJingleHandlerIsUnsupported) {
  receive(
      "<iq type='set' id='j3' from='bob@example.org/phone'><jingle xmlns='urn:xmpp:jingle:1' "
      "action='transport-info' sid='s3'/></iq>");
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(reply_condition(out[0]), "service-unavailable");
}

// File transfer shares the Jingle namespace: it takes offers of a file and actions on its own
// sessions, and leaves a call's offer to the handler registered after it.
TEST_F(ClientHandlers, FileTransferAndACallShareJingle) {
  FileTransfer ft(client);
  std::vector<std::string> calls;
  HandlerToken call = client.add_iq_handler(kJingle, [&](const xml::Element& iq) {
    const xml::Element* j = iq.first_child();
    const xml::Element* c = j->child("content", kJingle);
    if (!c || !c->child("description", "urn:xmpp:jingle:apps:rtp:1")) return false;
    calls.push_back(std::string(j->attr("sid")));
    client.send_stanza(xmpp::make_iq_result(iq));
    return true;
  });
  receive(
      "<iq type='set' id='c1' from='bob@example.org/phone'><jingle xmlns='urn:xmpp:jingle:1' "
      "action='session-initiate' sid='call1' initiator='bob@example.org/phone'>"
      "<content creator='initiator' name='voice'>"
      "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></content>"
      "</jingle></iq>");
  EXPECT_EQ(calls, (std::vector<std::string>{"call1"}));
  receive(
      "<iq type='set' id='f1' from='bob@example.org/phone'><jingle xmlns='urn:xmpp:jingle:1' "
      "action='session-initiate' sid='file1' initiator='bob@example.org/phone'>"
      "<content creator='initiator' name='a'>"
      "<description xmlns='urn:xmpp:jingle:apps:file-transfer:5'><file><name>a.txt</name>"
      "<size>3</size></file></description>"
      "<transport xmlns='urn:xmpp:jingle:transports:ibb:1' sid='ibb1' block-size='4096'/>"
      "</content></jingle></iq>");
  EXPECT_EQ(calls.size(), 1u);  // not offered to the call handler: file transfer took it
  // A transport-info for neither session: XEP-0166's unknown-session, once.
  receive(
      "<iq type='set' id='u1' from='bob@example.org/phone'><jingle xmlns='urn:xmpp:jingle:1' "
      "action='transport-info' sid='nosuch'/></iq>");
  auto out = sent();
  std::vector<std::string> answers;
  for (const auto& s : out)
    if (s.attr("id") == "c1" || s.attr("id") == "f1" || s.attr("id") == "u1")
      answers.push_back(std::string(s.attr("id")) + ":" + std::string(s.attr("type")));
  EXPECT_EQ(answers, (std::vector<std::string>{"c1:result", "f1:result", "u1:error"}));
  EXPECT_TRUE(client.remove_handler(call));
}

TEST_F(ClientHandlers, FileTransferUnregistersWhenDestroyed) {
  { FileTransfer ft(client); }
  receive(
      "<iq type='set' id='i1' from='bob@example.org/phone'><open "
      "xmlns='http://jabber.org/protocol/ibb' sid='x' block-size='4096'/></iq>");
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(reply_condition(out[0]), "service-unavailable");
}

// RFC 6120 §8.1.2.1: an IQ result or error answers a request only when it comes from the
// request's addressee (our server for one to our account or domain). Anyone else who guesses
// the id is ignored, and the real answer still arrives.
class ClientIqAnswers : public ClientHandlers {
 protected:
  // Sends `iq` through Impl::iq() and returns the id it was given; the answer lands in `got`.
  std::string ask(const std::string& xml) {
    impl.outq.clear();
    asio::co_spawn(
        io,
        [this, iq = parse_stanza(xml)]() mutable -> awaitable<void> {
          got = co_await impl.iq(std::move(iq));
          finished = true;
        },
        asio::detached);
    io.restart();  // a finished ask() may have left it stopped, out of work
    io.poll();
    auto out = sent();
    EXPECT_EQ(out.size(), 1u);
    return out.empty() ? std::string() : std::string(out.front().attr("id"));
  }
  void answer(const std::string& from_attr, const std::string& id) {
    receive("<iq type='result' id='" + id + "' " + from_attr +
            " to='alice@example.org/desk'><query xmlns='urn:example:thing'/></iq>");
    io.restart();
    io.poll();
  }

  std::optional<xml::Element> got;
  bool finished = false;
};

TEST_F(ClientIqAnswers, OnlyTheAddresseeAnswers) {
  std::string id =
      ask("<iq type='get' to='bob@example.org/phone'><query xmlns='urn:example:thing'/></iq>");
  ASSERT_FALSE(id.empty());
  answer("from='mallory@example.net/x'", id);
  answer("from='bob@example.org'", id);  // the bare JID is not the full JID asked
  answer("", id);                        // nor is our server
  answer("from='example.org'", id);
  EXPECT_FALSE(finished);
  answer("from='Bob@Example.org/phone'", id);  // the same JID, as another case spells it
  ASSERT_TRUE(finished);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->attr("from"), "Bob@Example.org/phone");
}

TEST_F(ClientIqAnswers, OurServerAnswersForTheAccount) {
  std::string id = ask("<iq type='get'><query xmlns='urn:example:thing'/></iq>");
  answer("from='mallory@example.net/x'", id);
  answer("from='bob@example.org'", id);
  EXPECT_FALSE(finished);
  answer("", id);  // RFC 6120 §8.1.2.1: no 'from' is our account
  ASSERT_TRUE(finished);
  EXPECT_TRUE(got.has_value());

  finished = false;
  id = ask("<iq type='get' to='example.org'><query xmlns='urn:example:thing'/></iq>");
  answer("from='example.net'", id);
  EXPECT_FALSE(finished);
  answer("from='example.org'", id);
  EXPECT_TRUE(finished);
}

}  // namespace
}  // namespace kabar::client
