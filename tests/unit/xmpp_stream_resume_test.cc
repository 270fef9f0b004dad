// The client negotiator resuming a stream-managed session (XEP-0198 §5) instead of binding.
#include <gtest/gtest.h>

#include "xmpp/stream/negotiator.h"
#include "xmpp_stream_harness.h"

namespace kabar::xmpp::stream {
namespace {

using testing::Conversation;
using testing::converse;
using testing::log_text;
using testing::Outcome;
using testing::send;
using testing::Step;

constexpr std::string_view kHeader = testing::kServerHeader;
const std::string kPlain =
    "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
    "<mechanism>PLAIN</mechanism></mechanisms></stream:features>";
const std::string kBindAndSm =
    "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
    "<sm xmlns='urn:xmpp:sm:3'/></stream:features>";
const std::string kBindOnly =
    "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>";

ClientOptions resume_options(std::string previd, std::uint32_t h) {
  ClientOptions o;
  o.jid = "alice@example.com";
  o.password = "pencil";
  o.resource = "r";
  o.resume_previd = std::move(previd);
  o.resume_h = h;
  o.random = testing::counting_random();
  return o;
}

Conversation resuming(std::string previd, std::uint32_t h) {
  Conversation c;
  c.make = [previd, h]() -> std::unique_ptr<Negotiator> {
    auto n = std::make_unique<ClientNegotiator>(resume_options(previd, h));
    n->tls_established("", "");  // direct TLS
    return n;
  };
  return c;
}

Step bind_result() { return testing::bind_result("alice@example.com/r"); }

TEST(StreamResume, ResumedInsteadOfBinding) {
  Outcome o = converse(resuming("sm-<id>&1", 7),
                       {send(std::string(kHeader) + kPlain),
                        send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
                        send(std::string(kHeader) + kBindAndSm),
                        send("<resumed xmlns='urn:xmpp:sm:3' h='3' previd='sm-&lt;id&gt;&amp;1'/>"
                             "<message from='bob@example.com/x'><body>hi</body></message>")});
  SCOPED_TRACE(log_text(o));
  // §5: previd (escaped as an attribute) and the count of stanzas we handled; no bind.
  EXPECT_TRUE(o.wrote("<resume xmlns='urn:xmpp:sm:3' h='7' previd='sm-&lt;id&gt;&amp;1'/>"));
  EXPECT_FALSE(o.wrote("urn:ietf:params:xml:ns:xmpp-bind"));
  ASSERT_GE(o.log.size(), 2u);
  EXPECT_EQ(o.log[o.log.size() - 2], "bound ");
  EXPECT_EQ(o.log.back(), "stanza <message from='bob@example.com/x'><body>hi</body></message>");
}

TEST(StreamResume, FailedThenBindsANewSession) {
  Outcome o =
      converse(resuming("old", 2), {send(std::string(kHeader) + kPlain),
                                    send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
                                    send(std::string(kHeader) + kBindAndSm),
                                    send("<failed xmlns='urn:xmpp:sm:3' h='5'><item-not-found "
                                         "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"),
                                    bind_result()});
  SCOPED_TRACE(log_text(o));
  EXPECT_TRUE(o.wrote("<resume xmlns='urn:xmpp:sm:3' h='2' previd='old'/>"));
  EXPECT_TRUE(o.wrote("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource>"));
  EXPECT_EQ(o.log.back(), "bound alice@example.com/r");
}

TEST(StreamResume, NoStreamManagementOfferedBindsAtOnce) {
  Outcome o =
      converse(resuming("old", 0), {send(std::string(kHeader) + kPlain),
                                    send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
                                    send(std::string(kHeader) + kBindOnly), bind_result()});
  SCOPED_TRACE(log_text(o));
  EXPECT_FALSE(o.wrote("<resume"));
  EXPECT_EQ(o.log.back(), "bound alice@example.com/r");
}

TEST(StreamResume, AnythingElseIsAProtocolError) {
  Outcome o = converse(resuming("old", 0),
                       {send(std::string(kHeader) + kPlain),
                        send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
                        send(std::string(kHeader) + kBindAndSm),
                        send("<message from='bob@example.com/x'><body>early</body></message>")});
  SCOPED_TRACE(log_text(o));
  EXPECT_TRUE(o.closed());
  EXPECT_EQ(o.log.back(), "closed : expected <resumed/> or <failed/>, got <message/>");
}

TEST(StreamResume, WithoutPrevidItBindsAsBefore) {
  Outcome o =
      converse(resuming("", 0), {send(std::string(kHeader) + kPlain),
                                 send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
                                 send(std::string(kHeader) + kBindAndSm), bind_result()});
  SCOPED_TRACE(log_text(o));
  EXPECT_FALSE(o.wrote("<resume"));
  EXPECT_EQ(o.log.back(), "bound alice@example.com/r");
}

// What the caller learns of a refusal: resume_refused(), and the <failed/> with its 'h'.
TEST(StreamResume, TheRefusalIsKept) {
  struct Run {
    ClientNegotiator n;
    ParsedInput in{n};
    explicit Run(ClientOptions o) : n(std::move(o)) { n.tls_established("", ""); }
    void feed(std::string_view bytes) {
      in.feed(bytes);
      for (Event& ev : n.take_events()) {
        if (ev.kind == Event::Kind::kRestartStream) in.restart();
      }
    }
  };
  Run failed(resume_options("old", 2));
  failed.feed(std::string(kHeader) + kPlain);
  failed.feed("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
  failed.feed(std::string(kHeader) + kBindAndSm);
  EXPECT_FALSE(failed.n.resume_refused());
  failed.feed("<failed xmlns='urn:xmpp:sm:3' h='5'/>");
  EXPECT_TRUE(failed.n.resume_refused());
  ASSERT_TRUE(failed.n.resume_failure().has_value());
  EXPECT_EQ(failed.n.resume_failure()->attr("h"), "5");

  Run unoffered(resume_options("old", 2));
  unoffered.feed(std::string(kHeader) + kPlain);
  unoffered.feed("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
  unoffered.feed(std::string(kHeader) + kBindOnly);
  EXPECT_TRUE(unoffered.n.resume_refused());
  EXPECT_FALSE(unoffered.n.resume_failure().has_value());
}

}  // namespace
}  // namespace kabar::xmpp::stream
