// XEP-0198 stream management, the client's counting and resend queue (xmpp/stream/sm_client.h),
// byte for byte.
#include <gtest/gtest.h>

#include <string>

#include "xml/stream_parser.h"
#include "xmpp/stream/sm_client.h"

namespace kabar::xmpp::stream {
namespace {

using Input = SmClient::Input;

// One top-level element parsed the way the session reads it (inside a jabber:client stream).
xml::Element parse(std::string_view text) {
  struct Collect : xml::StreamHandler {
    std::optional<xml::Element> el;
    void on_stream_open(const xml::Element&, std::string_view) override {}
    void on_element(xml::Element&& e) override { el = std::move(e); }
    void on_stream_close() override {}
  } c;
  xml::StreamParser p(c);
  std::string doc =
      "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
  doc += text;
  EXPECT_EQ(p.feed(doc).status, xml::StreamParser::Status::kOk) << text;
  EXPECT_TRUE(c.el.has_value()) << text;
  return c.el ? std::move(*c.el) : xml::Element("none", "");
}

std::string msg(int n) {
  return "<message to='b@x'><body>" + std::to_string(n) + "</body></message>";
}

// Enabled with resumption: what a session has after <enabled/>.
SmClient enabled(std::uint32_t request_every = 5) {
  SmClient sm(request_every);
  sm.enable(true);
  sm.inbound(parse("<enabled xmlns='urn:xmpp:sm:3' id='abc' resume='true' max='120'/>"));
  return sm;
}

TEST(SmClient, Offered) {
  EXPECT_TRUE(SmClient::offered(parse(
      "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><sm xmlns='urn:xmpp:sm:3'/>"
      "</stream:features>")));
  EXPECT_FALSE(
      SmClient::offered(parse("<stream:features><sm xmlns='urn:xmpp:sm:2'/></stream:features>")));
}

TEST(SmClient, EnableAndEnabled) {
  SmClient sm;
  EXPECT_EQ(sm.enable(true), "<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
  EXPECT_EQ(sm.state(), SmClient::State::kEnabling);
  EXPECT_FALSE(sm.on());
  EXPECT_EQ(sm.inbound(parse(
                "<enabled xmlns='urn:xmpp:sm:3' id='some-long-sm-id' resume='1' max='300'/>")),
            Input::kEnabled);
  EXPECT_TRUE(sm.on());
  EXPECT_TRUE(sm.resumable());
  EXPECT_EQ(sm.id(), "some-long-sm-id");
  EXPECT_EQ(sm.max_seconds(), 300u);
  SmClient plain;
  EXPECT_EQ(plain.enable(false), "<enable xmlns='urn:xmpp:sm:3'/>");
}

TEST(SmClient, EnabledWithoutResumeIsNotResumable) {
  SmClient sm;
  sm.enable(true);
  // §5: resumption only when the server says resume='true' (or '1'), whatever the id.
  sm.inbound(parse("<enabled xmlns='urn:xmpp:sm:3' id='x' resume='false'/>"));
  EXPECT_TRUE(sm.on());
  EXPECT_FALSE(sm.resumable());
}

TEST(SmClient, FailedEnableTurnsItOff) {
  SmClient sm;
  sm.enable(true);
  EXPECT_EQ(sm.outbound(msg(1)), msg(1));  // counted from <enable/> on (§4 note)
  EXPECT_EQ(sm.inbound(parse("<failed xmlns='urn:xmpp:sm:3'><unexpected-request "
                             "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>")),
            Input::kFailed);
  EXPECT_EQ(sm.state(), SmClient::State::kOff);
  EXPECT_EQ(sm.unacked(), 0u);
  EXPECT_EQ(sm.outbound(msg(2)), msg(2));
  EXPECT_EQ(sm.unacked(), 0u);
}

TEST(SmClient, OffPassesEverythingThrough) {
  SmClient sm;
  EXPECT_EQ(sm.outbound(msg(1)), msg(1));
  EXPECT_EQ(sm.unacked(), 0u);
  EXPECT_EQ(sm.inbound(parse("<r xmlns='urn:xmpp:sm:3'/>")), Input::kOther);
  EXPECT_EQ(sm.inbound(parse(msg(1))), Input::kStanza);
  EXPECT_EQ(sm.handled(), 0u);
}

TEST(SmClient, CountsInboundStanzasOnlyOnceEnabled) {
  SmClient sm;
  sm.enable(true);
  EXPECT_EQ(sm.inbound(parse(msg(0))), Input::kStanza);  // before <enabled/>: not counted
  sm.inbound(parse("<enabled xmlns='urn:xmpp:sm:3' id='abc' resume='true'/>"));
  EXPECT_EQ(sm.inbound(parse(msg(1))), Input::kStanza);
  EXPECT_EQ(sm.inbound(parse("<presence from='b@x/r'/>")), Input::kStanza);
  EXPECT_EQ(sm.inbound(parse("<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>")),
            Input::kStanza);
  // Nonzas are not stanzas (§1): neither <r/>, <a/> nor anything else at the top level.
  EXPECT_EQ(sm.inbound(parse("<r xmlns='urn:xmpp:sm:3'/>")), Input::kRequest);
  EXPECT_EQ(sm.inbound(parse("<other xmlns='urn:example'/>")), Input::kOther);
  EXPECT_EQ(sm.handled(), 3u);
  EXPECT_EQ(sm.unacked_inbound(), 3u);
  EXPECT_EQ(sm.ack(), "<a xmlns='urn:xmpp:sm:3' h='3'/>");
  EXPECT_EQ(sm.unacked_inbound(), 0u);
  EXPECT_EQ(sm.ack(), "<a xmlns='urn:xmpp:sm:3' h='3'/>");
}

TEST(SmClient, RequestsAnAckEveryNStanzas) {
  SmClient sm = enabled(3);
  EXPECT_EQ(sm.outbound(msg(1)), msg(1));
  EXPECT_EQ(sm.outbound(msg(2)), msg(2));
  EXPECT_FALSE(sm.request_outstanding());
  EXPECT_EQ(sm.outbound(msg(3)), msg(3) + "<r xmlns='urn:xmpp:sm:3'/>");
  EXPECT_TRUE(sm.request_outstanding());
  EXPECT_EQ(sm.outbound(msg(4)), msg(4));
  EXPECT_EQ(sm.unacked(), 4u);
  SmClient never = enabled(0);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(never.outbound(msg(i)), msg(i));
}

TEST(SmClient, AcksDropWhatTheyCover) {
  SmClient sm = enabled(0);
  for (int i = 1; i <= 5; ++i) sm.outbound(msg(i));
  EXPECT_EQ(sm.request(), "<r xmlns='urn:xmpp:sm:3'/>");
  EXPECT_EQ(sm.inbound(parse("<a xmlns='urn:xmpp:sm:3' h='2'/>")), Input::kAck);
  EXPECT_FALSE(sm.request_outstanding());
  EXPECT_EQ(sm.unacked(), 3u);
  EXPECT_EQ(sm.acks_received(), 1u);
  // The same 'h' again acknowledges nothing new.
  EXPECT_EQ(sm.inbound(parse("<a xmlns='urn:xmpp:sm:3' h='2'/>")), Input::kAck);
  EXPECT_EQ(sm.unacked(), 3u);
  EXPECT_EQ(sm.inbound(parse("<a xmlns='urn:xmpp:sm:3' h='5'/>")), Input::kAck);
  EXPECT_EQ(sm.unacked(), 0u);
}

TEST(SmClient, AckTooHighOrMalformed) {
  SmClient sm = enabled(0);
  sm.outbound(msg(1));
  // §6: acknowledging more than was sent.
  EXPECT_EQ(sm.inbound(parse("<a xmlns='urn:xmpp:sm:3' h='2'/>")), Input::kTooHigh);
  EXPECT_EQ(sm.unacked(), 1u);
  // §4: 'h' is REQUIRED and an xs:unsignedInt; anything else acknowledges nothing.
  for (const char* bad : {"<a xmlns='urn:xmpp:sm:3'/>", "<a xmlns='urn:xmpp:sm:3' h=''/>",
                          "<a xmlns='urn:xmpp:sm:3' h='-1'/>", "<a xmlns='urn:xmpp:sm:3' h='1x'/>",
                          "<a xmlns='urn:xmpp:sm:3' h='4294967296'/>",
                          "<a xmlns='urn:xmpp:sm:3' h='99999999999999999999'/>"}) {
    EXPECT_EQ(sm.inbound(parse(bad)), Input::kOther) << bad;
  }
  EXPECT_EQ(sm.unacked(), 1u);
}

TEST(SmClient, HIsAnUnsignedInt) {
  // §4: an xs:unsignedInt, up to 2^32-1.
  EXPECT_EQ(sm_h(parse("<a xmlns='urn:xmpp:sm:3' h='4294967295'/>")), 4294967295u);
  EXPECT_EQ(sm_h(parse("<a xmlns='urn:xmpp:sm:3' h='0'/>")), 0u);
  EXPECT_EQ(sm_h(parse("<a xmlns='urn:xmpp:sm:3' h='4294967296'/>")), std::nullopt);
  EXPECT_EQ(sm_h(parse("<a xmlns='urn:xmpp:sm:3' h=' 1'/>")), std::nullopt);
  EXPECT_EQ(sm_h(parse("<a xmlns='urn:xmpp:sm:3'/>")), std::nullopt);
}

TEST(SmClient, ResumedResendsTheRestInOrder) {
  SmClient sm = enabled(0);
  for (int i = 1; i <= 4; ++i) sm.outbound(msg(i));
  sm.inbound(parse("<a xmlns='urn:xmpp:sm:3' h='1'/>"));
  sm.inbound(parse(msg(100)));
  sm.inbound(parse(msg(101)));
  // The server handled two of ours (one more than it acknowledged): 3 and 4 go again, then <r/>.
  auto again = sm.resumed(2);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, msg(3) + msg(4) + "<r xmlns='urn:xmpp:sm:3'/>");
  EXPECT_EQ(sm.unacked(), 2u);
  EXPECT_EQ(sm.handled(), 2u);  // §5: the counts carry over
  EXPECT_TRUE(sm.resumable());
  EXPECT_EQ(sm.inbound(parse("<a xmlns='urn:xmpp:sm:3' h='4'/>")), Input::kAck);
  EXPECT_EQ(sm.unacked(), 0u);
  // Nothing unacknowledged: nothing to write.
  EXPECT_EQ(sm.resumed(4), std::optional<std::string>(""));
  EXPECT_EQ(sm.resumed(9), std::nullopt);
}

TEST(SmClient, FailedResumptionHandsBackTheUnacknowledged) {
  SmClient sm = enabled(0);
  for (int i = 1; i <= 4; ++i) sm.outbound(msg(i));
  sm.inbound(parse(msg(100)));
  // §5: <failed h='1'/>: the first was handled before the session timed out.
  auto rest = sm.failed(1);
  ASSERT_EQ(rest.size(), 3u);
  EXPECT_EQ(rest[0], msg(2));
  EXPECT_EQ(rest[2], msg(4));
  EXPECT_EQ(sm.state(), SmClient::State::kOff);
  EXPECT_FALSE(sm.resumable());
  EXPECT_EQ(sm.handled(), 0u);
  // Without an 'h' everything unacknowledged comes back.
  SmClient s2 = enabled(0);
  s2.outbound(msg(1));
  s2.outbound(msg(2));
  EXPECT_EQ(s2.failed(std::nullopt).size(), 2u);
  // A new session starts from zero.
  EXPECT_EQ(sm.enable(true), "<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
  sm.inbound(parse("<enabled xmlns='urn:xmpp:sm:3' id='new' resume='true'/>"));
  sm.outbound(msg(5));
  EXPECT_EQ(sm.inbound(parse("<a xmlns='urn:xmpp:sm:3' h='1'/>")), Input::kAck);
  EXPECT_EQ(sm.unacked(), 0u);
}

}  // namespace
}  // namespace kabar::xmpp::stream
