// The client session's stream-management glue (XEP-0198), with no connection: what the session
// writes stays in its write queue, and what it reads is handed to take() as the reader would.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "client/client_impl.h"
#include "client_stanzas.h"

namespace kabar::client {
namespace {

xml::Element parse(const std::string& text) { return testing::parse_stanza(text); }

class ClientSm : public ::testing::Test {
 protected:
  ClientSm() {
    impl.sm.enable(true);
    impl.sm.inbound(parse("<enabled xmlns='urn:xmpp:sm:3' id='sm1' resume='true'/>"));
    client.on_message = [this](const Message& m) { bodies.push_back(m.body); };
  }
  static Options opts() {
    Options o;
    o.jid = "alice@example.org";
    return o;
  }
  bool take(const std::string& text) {
    xml::Element el = parse(text);
    Error why;
    return impl.take(el, why) && !why;
  }
  std::string written() {
    std::string all;
    for (const auto& s : impl.outq) all += s;
    impl.outq.clear();
    return all;
  }

  asio::io_context io;
  testing::OfflineSession session{io, opts()};  // no writer: what is written stays in outq
  Client& client = session.client;
  Client::Impl& impl = session.impl;
  std::vector<std::string> bodies;
};

TEST_F(ClientSm, CountsStanzasAndAnswersRequests) {
  EXPECT_TRUE(take("<message from='bob@example.org/x' type='chat'><body>one</body></message>"));
  EXPECT_TRUE(take("<message from='bob@example.org/x' type='chat'><body>two</body></message>"));
  EXPECT_EQ(bodies, (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(written(), "");
  // XEP-0198 §4: an <r/> is answered at once with the count handled.
  EXPECT_TRUE(take("<r xmlns='urn:xmpp:sm:3'/>"));
  EXPECT_EQ(written(), "<a xmlns='urn:xmpp:sm:3' h='2'/>");
}

TEST_F(ClientSm, SentStanzasWaitForTheirAck) {
  client.send_message("bob@example.org", "hi");
  EXPECT_EQ(impl.sm.unacked(), 1u);
  EXPECT_NE(written().find("<body>hi</body>"), std::string::npos);
  EXPECT_TRUE(take("<a xmlns='urn:xmpp:sm:3' h='1'/>"));
  EXPECT_EQ(impl.sm.unacked(), 0u);
}

TEST_F(ClientSm, AckTooHighEndsTheStream) {
  client.send_message("bob@example.org", "one");
  EXPECT_TRUE(take("<a xmlns='urn:xmpp:sm:3' h='1'/>"));
  client.send_message("bob@example.org", "two");
  written();
  xml::Element el = parse("<a xmlns='urn:xmpp:sm:3' h='3'/>");
  Error why;
  EXPECT_FALSE(impl.take(el, why));
  EXPECT_EQ(why.code, Errc::kProtocol);
  // XEP-0198 §6: with what we sent in all (two), not only what is unacknowledged (one).
  EXPECT_NE(written().find("<handled-count-too-high xmlns='urn:xmpp:sm:3' h='3' send-count='2'/>"),
            std::string::npos);
}

TEST_F(ClientSm, WhileReconnectingStanzasAreKeptNotWritten) {
  impl.link_down = true;
  client.send_message("bob@example.org", "while away");
  EXPECT_EQ(written(), "");
  EXPECT_EQ(impl.sm.unacked(), 1u);  // goes out again on <resumed/>
  auto again = impl.sm.resumed(0);
  ASSERT_TRUE(again.has_value());
  EXPECT_NE(again->find("<body>while away</body>"), std::string::npos);
}

TEST_F(ClientSm, AfterAFailedResumptionStanzasWaitForTheNewSession) {
  client.send_message("bob@example.org", "first");
  written();
  impl.link_down = true;
  // What negotiate() does on <failed/>: the old queue is handed back, stream management is off.
  for (std::string& s : impl.sm.failed(std::nullopt)) impl.resend_after_failure.push_back(s);
  client.send_message("bob@example.org", "second");
  EXPECT_EQ(written(), "");
  ASSERT_EQ(impl.resend_after_failure.size(), 2u);
  EXPECT_NE(impl.resend_after_failure[0].find("<body>first</body>"), std::string::npos);
  EXPECT_NE(impl.resend_after_failure[1].find("<body>second</body>"), std::string::npos);
}

}  // namespace
}  // namespace kabar::client
