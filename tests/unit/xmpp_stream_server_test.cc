// The receiving entity's negotiator against a scripted client (RFC 6120 §4-§7).
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "xmpp/stream/negotiator.h"
#include "xmpp_stream_harness.h"

namespace kabar::xmpp::stream {
namespace {

using testing::Conversation;
using testing::converse;
using testing::last_between;
using testing::log_text;
using testing::Outcome;
using testing::send;
using testing::Step;

constexpr std::string_view kHeader =
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>";
constexpr std::string_view kSasl = "urn:ietf:params:xml:ns:xmpp-sasl";

const ScramCredentials& alice(ScramHash h) {
  static const ScramCredentials sha1 =
      derive_credentials(ScramHash::kSha1, "pencil", "salt1", 4096);
  static const ScramCredentials sha256 =
      derive_credentials(ScramHash::kSha256, "pencil", "salt2", 4096);
  return h == ScramHash::kSha1 ? sha1 : sha256;
}

// The server side of the store: one account, alice/pencil; some resources already taken.
struct Store {
  std::set<std::string> taken;
  bool temporary_failure = false;
  void operator()(Negotiator& n, const Event& ev) const {
    auto& s = static_cast<ServerNegotiator&>(n);
    if (ev.kind == Event::Kind::kNeedScramCredentials) {
      if (temporary_failure) {
        s.refuse_auth("temporary-auth-failure");
      } else if (ev.user == "alice") {
        s.scram_credentials(alice(ev.hash));
      } else {
        s.scram_credentials(std::nullopt);
      }
    } else if (ev.kind == Event::Kind::kVerifyPlain) {
      // PBKDF2 once per password, not once per replayed conversation.
      static std::map<std::string, bool> checked;
      auto it = checked.find(ev.password);
      if (it == checked.end()) {
        it = checked
                 .emplace(ev.password, verify_password(ScramHash::kSha256,
                                                       alice(ScramHash::kSha256), ev.password))
                 .first;
      }
      s.plain_result(ev.user == "alice" && it->second);
    } else if (ev.kind == Event::Kind::kBindRequest) {
      if (taken.contains(ev.jid)) {
        s.bind_refused("conflict");
      } else {
        s.bind_accepted();
      }
    }
  }
};

struct ServerSetup {
  ServerOptions options;
  Store store;
  bool direct_tls = false;
  std::string cb_type = "tls-unique";
  std::string cb_data = "finished-message";
};

Conversation server(ServerSetup setup) {
  Conversation c;
  c.cb_type = setup.cb_type;
  c.cb_data = setup.cb_data;
  c.make = [setup]() -> std::unique_ptr<Negotiator> {
    ServerOptions o = setup.options;
    if (o.domain.empty()) o.domain = "example.com";
    o.random = testing::counting_random();
    auto n = std::make_unique<ServerNegotiator>(std::move(o));
    if (setup.direct_tls) n->tls_established(setup.cb_type, setup.cb_data);
    return n;
  };
  c.answer = setup.store;
  return c;
}

std::string auth(std::string_view mech, std::string_view initial) {
  return "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='" + std::string(mech) + "'>" +
         base64_encode(initial) + "</auth>";
}

std::string plain(std::string_view user, std::string_view password) {
  return auth("PLAIN", std::string("\0", 1) + std::string(user) + std::string("\0", 1) +
                           std::string(password));
}

// A SCRAM exchange as a client would run it: <auth/>, then the response to the challenge.
struct ScriptedScram {
  std::shared_ptr<ScramClient> client;
  std::string mech;
  ScriptedScram(ScramHash h, std::string user, std::string password, std::string cb_type = {},
                std::string cb_data = {}, bool plus = false)
      : client(std::make_shared<ScramClient>(h, std::move(user), std::move(password),
                                             "fixedclientnonce")),
        mech(std::string(mechanism_name(h)) + (plus ? "-PLUS" : "")) {
    if (plus || !cb_type.empty()) client->set_channel_binding(cb_type, cb_data);
  }
  Step auth_step() const {
    return [c = client, m = mech](const std::string&) { return auth(m, c->client_first()); };
  }
  Step response_step() const {
    return [c = client](const std::string& written) {
      std::string challenge =
          last_between(written, "<challenge xmlns='" + std::string(kSasl) + "'>", "</challenge>");
      auto decoded = base64_decode(challenge);
      auto final_msg = c->client_final(decoded.value_or(std::string()));
      return "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" +
             base64_encode(final_msg.value_or("garbage")) + "</response>";
    };
  }
};

std::string bind_iq(std::string_view resource, std::string_view id = "b1") {
  std::string iq =
      "<iq type='set' id='" + std::string(id) + "'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>";
  if (!resource.empty()) iq += "<resource>" + std::string(resource) + "</resource>";
  return iq + "</bind></iq>";
}

TEST(StreamServer, StarttlsScramSha256AndBind) {
  ServerSetup s;
  ScriptedScram scram(ScramHash::kSha256, "alice", "pencil");
  Outcome o =
      converse(server(s), {send(std::string(kHeader)),
                           send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
                           send(std::string(kHeader)), scram.auth_step(), scram.response_step(),
                           send(std::string(kHeader)), send(bind_iq("phone"))});
  SCOPED_TRACE(log_text(o));
  // Before TLS: STARTTLS required, no mechanisms (RFC 6120 §5.3.1).
  ASSERT_GE(o.log.size(), 3u);
  EXPECT_NE(o.log[1].find("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>"),
            std::string::npos);
  EXPECT_EQ(o.log[1].find("mechanisms"), std::string::npos);
  EXPECT_EQ(o.log[2], "send <proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
  EXPECT_EQ(o.log[3], "starttls");
  EXPECT_EQ(o.log[4], "restart");
  // After TLS: -PLUS first, then the rest; the channel-binding type (XEP-0440).
  EXPECT_TRUE(
      o.wrote("<mechanism>SCRAM-SHA-256-PLUS</mechanism><mechanism>SCRAM-SHA-1-PLUS</mechanism>"
              "<mechanism>SCRAM-SHA-256</mechanism><mechanism>SCRAM-SHA-1</mechanism>"
              "<mechanism>PLAIN</mechanism>"));
  EXPECT_TRUE(o.wrote("<channel-binding type='tls-unique'/>"));
  EXPECT_TRUE(o.contains("need-scram alice sha256"));
  EXPECT_TRUE(o.contains("authenticated alice"));
  EXPECT_TRUE(
      o.wrote("<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
              "</stream:features>"));
  EXPECT_TRUE(o.contains("bind-request alice@example.com/phone"));
  EXPECT_EQ(o.log.back(), "bound alice@example.com/phone");
  EXPECT_TRUE(
      o.wrote("<iq id='b1' type='result'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
              "<jid>alice@example.com/phone</jid></bind></iq>"));
  // Each stream got its own header with a fresh id.
  EXPECT_NE(o.log[0], o.log[5]);
}

TEST(StreamServer, ScramSha1PlusWithChannelBinding) {
  ServerSetup s;
  s.direct_tls = true;
  ScriptedScram scram(ScramHash::kSha1, "alice", "pencil", "tls-unique", "finished-message", true);
  Outcome o =
      converse(server(s), {send(std::string(kHeader)), scram.auth_step(), scram.response_step()});
  SCOPED_TRACE(log_text(o));
  EXPECT_TRUE(o.contains("need-scram alice sha1"));
  EXPECT_TRUE(o.contains("authenticated alice"));
  EXPECT_EQ(o.log.back(), "restart");
}

TEST(StreamServer, PlusWithOtherChannelBindingDataFails) {
  ServerSetup s;
  s.direct_tls = true;
  ScriptedScram scram(ScramHash::kSha256, "alice", "pencil", "tls-unique", "not-the-same", true);
  Outcome o =
      converse(server(s), {send(std::string(kHeader)), scram.auth_step(), scram.response_step()});
  SCOPED_TRACE(log_text(o));
  EXPECT_FALSE(o.contains("authenticated alice"));
  EXPECT_EQ(o.log[o.log.size() - 2].rfind("auth-failed alice ", 0), 0u);
  EXPECT_TRUE(o.wrote("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"));
}

TEST(StreamServer, NoPlusWithoutChannelBindingData) {
  ServerSetup s;
  s.direct_tls = true;
  s.cb_type.clear();
  s.cb_data.clear();
  ScriptedScram scram(ScramHash::kSha256, "alice", "pencil", "tls-unique", "x", true);
  Outcome o = converse(server(s), {send(std::string(kHeader)), scram.auth_step()});
  SCOPED_TRACE(log_text(o));
  EXPECT_FALSE(o.wrote("PLUS"));
  EXPECT_FALSE(o.wrote("sasl-channel-binding"));
  EXPECT_EQ(
      o.log.back(),
      "send <failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><invalid-mechanism/></failure>");
}

TEST(StreamServer, ClientSayingYWhenPlusWasOfferedIsADowngrade) {
  ServerSetup s;
  s.direct_tls = true;
  ScriptedScram scram(ScramHash::kSha256, "alice", "pencil", "", "", false);
  scram.client->set_channel_binding({}, {});  // "y"
  Outcome o = converse(server(s), {send(std::string(kHeader)), scram.auth_step()});
  SCOPED_TRACE(log_text(o));
  EXPECT_FALSE(o.contains("need-scram alice sha256"));
  EXPECT_TRUE(o.wrote("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"));
}

TEST(StreamServer, PlainOverTlsAndBindWithoutResource) {
  ServerSetup s;
  s.direct_tls = true;
  Outcome o = converse(server(s), {send(std::string(kHeader)), send(plain("Alice", "pencil")),
                                   send(std::string(kHeader)), send(bind_iq(""))});
  SCOPED_TRACE(log_text(o));
  EXPECT_TRUE(o.contains("verify-plain alice pencil"));  // nodeprep'ed
  EXPECT_TRUE(o.wrote("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"));
  // RFC 6120 §7.6: a resource the server made up.
  ASSERT_EQ(o.log.back().rfind("bound alice@example.com/kabar-", 0), 0u) << o.log.back();
  EXPECT_EQ(o.log.back().size(), std::string("bound alice@example.com/kabar-").size() + 8);
}

TEST(StreamServer, PlainInTheClearIsRefused) {
  ServerSetup s;
  Outcome o = converse(server(s), {send(std::string(kHeader)), send(plain("alice", "pencil"))});
  SCOPED_TRACE(log_text(o));
  EXPECT_FALSE(o.wrote("<mechanisms"));
  EXPECT_EQ(o.log.back(),
            "send <failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
            "<encryption-required/></failure>");
}

TEST(StreamServer, PlainInTheClearWhenAllowed) {
  ServerSetup s;
  s.options.allow_plaintext = true;
  s.options.allow_registration = true;
  Outcome o = converse(server(s), {send(std::string(kHeader)), send(plain("alice", "pencil"))});
  SCOPED_TRACE(log_text(o));
  // STARTTLS offered, not required; no -PLUS without TLS; registration offered.
  EXPECT_TRUE(o.wrote("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><mechanisms"));
  EXPECT_FALSE(o.wrote("PLUS"));
  EXPECT_TRUE(o.wrote("<register xmlns='http://jabber.org/features/iq-register'/>"));
  EXPECT_TRUE(o.contains("authenticated alice"));
}

TEST(StreamServer, BadPasswordThreeTimesClosesTheStream) {
  ServerSetup s;
  s.direct_tls = true;
  ScriptedScram scram(ScramHash::kSha256, "alice", "wrong");
  Outcome o =
      converse(server(s), {send(std::string(kHeader)), send(plain("alice", "nope")),
                           scram.auth_step(), scram.response_step(), send(plain("alice", "nope"))});
  SCOPED_TRACE(log_text(o));
  EXPECT_EQ(std::count(o.log.begin(), o.log.end(), "auth-failed alice not-authorized"), 3);
  EXPECT_FALSE(o.contains("authenticated alice"));
  // RFC 6120 §6.4.5: after the configured number of retries, the stream is closed.
  EXPECT_EQ(o.log.back(), "closed policy-violation");
  EXPECT_TRUE(o.wrote("<not-authorized/></failure><stream:error><policy-violation"));
}

TEST(StreamServer, RetryAfterAFailureSucceeds) {
  ServerSetup s;
  s.direct_tls = true;
  Outcome o = converse(server(s), {send(std::string(kHeader)), send(plain("alice", "nope")),
                                   send(auth("DIGEST-MD5", "")), send(plain("alice", "pencil"))});
  SCOPED_TRACE(log_text(o));
  EXPECT_TRUE(o.contains("auth-failed alice not-authorized"));
  EXPECT_TRUE(o.contains(
      "send <failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><invalid-mechanism/></failure>"));
  EXPECT_TRUE(o.contains("authenticated alice"));
}

TEST(StreamServer, UnknownAccountFailsOnlyAtTheEnd) {
  ServerSetup s;
  s.direct_tls = true;
  ScriptedScram scram(ScramHash::kSha256, "bob", "pencil");
  Outcome o =
      converse(server(s), {send(std::string(kHeader)), scram.auth_step(), scram.response_step()});
  SCOPED_TRACE(log_text(o));
  EXPECT_TRUE(o.contains("need-scram bob sha256"));
  EXPECT_TRUE(o.wrote("<challenge"));  // RFC 5802 §9: no early "no such user"
  EXPECT_EQ(o.log[o.log.size() - 2], "auth-failed bob not-authorized");
}

TEST(StreamServer, Abort) {
  ServerSetup s;
  s.direct_tls = true;
  ScriptedScram scram(ScramHash::kSha256, "alice", "pencil");
  Outcome o = converse(server(s), {send(std::string(kHeader)), scram.auth_step(),
                                   send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
                                   scram.response_step()});
  SCOPED_TRACE(log_text(o));
  EXPECT_TRUE(
      o.contains("send <failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><aborted/></failure>"));
  // A response after the abort belongs to no exchange.
  EXPECT_EQ(o.log.back(),
            "send <failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
            "<malformed-request/></failure>");
  EXPECT_FALSE(o.contains("authenticated alice"));
}

TEST(StreamServer, MalformedClientMessages) {
  ServerSetup s;
  s.direct_tls = true;
  Outcome o =
      converse(server(s),
               {send(std::string(kHeader)), send(auth("SCRAM-SHA-256", "not a scram message")),
                send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!!</auth>"),
                send(auth("PLAIN", "no nul bytes")),
                send(auth("PLAIN", std::string("mallory@example.com\0alice\0pencil", 32)))});
  SCOPED_TRACE(log_text(o));
  const std::string f = "send <failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>";
  EXPECT_EQ(o.log[2], f + "<malformed-request/></failure>");
  EXPECT_EQ(o.log[3], f + "<incorrect-encoding/></failure>");
  EXPECT_EQ(o.log[4], f + "<malformed-request/></failure>");
  EXPECT_EQ(o.log[5], f + "<invalid-authzid/></failure>");
  EXPECT_FALSE(o.closed());
}

TEST(StreamServer, TemporaryFailureFromTheStore) {
  ServerSetup s;
  s.direct_tls = true;
  s.store.temporary_failure = true;
  ScriptedScram scram(ScramHash::kSha256, "alice", "pencil");
  Outcome o = converse(server(s), {send(std::string(kHeader)), scram.auth_step()});
  SCOPED_TRACE(log_text(o));
  EXPECT_EQ(o.log.back(),
            "send <failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
            "<temporary-auth-failure/><text>too many failed attempts; try again "
            "later</text></failure>");
}

TEST(StreamServer, BindConflictThenAnotherResource) {
  ServerSetup s;
  s.direct_tls = true;
  s.store.taken = {"alice@example.com/phone"};
  Outcome o = converse(server(s), {send(std::string(kHeader)), send(plain("alice", "pencil")),
                                   send(std::string(kHeader)), send(bind_iq("phone")),
                                   send(bind_iq("laptop", "b2"))});
  SCOPED_TRACE(log_text(o));
  EXPECT_TRUE(
      o.wrote("<iq id='b1' type='error'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
              "<resource>phone</resource></bind><error type='cancel'><conflict "
              "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"));
  EXPECT_EQ(o.log.back(), "bound alice@example.com/laptop");
}

TEST(StreamServer, BadResourceIsABadRequest) {
  ServerSetup s;
  s.direct_tls = true;
  Outcome o = converse(server(s), {send(std::string(kHeader)), send(plain("alice", "pencil")),
                                   send(std::string(kHeader)), send(bind_iq("a\u200Eb"))});
  SCOPED_TRACE(log_text(o));
  EXPECT_TRUE(o.wrote("<bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"));
  EXPECT_FALSE(o.closed());
  EXPECT_FALSE(o.log.back().starts_with("bound"));
}

TEST(StreamServer, StanzasBehindTheBindRequestWaitForIt) {
  ServerSetup s;
  s.direct_tls = true;
  Outcome o = converse(server(s), {send(std::string(kHeader)), send(plain("alice", "pencil")),
                                   send(std::string(kHeader)),
                                   send(bind_iq("phone") + "<presence/><message to='b@x'/>")});
  SCOPED_TRACE(log_text(o));
  const std::size_t n = o.log.size();
  ASSERT_GE(n, 3u);
  EXPECT_EQ(o.log[n - 3], "bound alice@example.com/phone");
  EXPECT_EQ(o.log[n - 2], "stanza <presence/>");
  EXPECT_EQ(o.log[n - 1], "stanza <message to='b@x'/>");
}

TEST(StreamServer, StanzaBeforeAuthentication) {
  ServerSetup s;
  s.direct_tls = true;
  Outcome o =
      converse(server(s), {send(std::string(kHeader)),
                           send("<message to='bob@example.com'><body>hi</body></message>")});
  SCOPED_TRACE(log_text(o));
  // RFC 6120 §6.4.1
  EXPECT_EQ(o.log.back(), "closed not-authorized");
  EXPECT_TRUE(
      o.wrote("<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
              "</stream:error></stream:stream>"));
}

TEST(StreamServer, BindBeforeAuthentication) {
  ServerSetup s;
  s.direct_tls = true;
  Outcome o = converse(server(s), {send(std::string(kHeader)), send(bind_iq("phone"))});
  EXPECT_EQ(o.log.back(), "closed not-authorized");
}

TEST(StreamServer, RegistrationBeforeAuthenticationIsTheCallers) {
  ServerSetup s;
  s.direct_tls = true;
  s.options.allow_registration = true;
  Outcome o = converse(server(s),
                       {send(std::string(kHeader)),
                        send("<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>")});
  SCOPED_TRACE(log_text(o));
  EXPECT_EQ(o.log.back(), "stanza <iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>");
}

TEST(StreamServer, StreamHeaderChecks) {
  ServerSetup s;
  Outcome host = converse(server(s), {send("<stream:stream xmlns='jabber:client' "
                                           "xmlns:stream='http://etherx.jabber.org/streams' "
                                           "to='elsewhere.org' version='1.0'>")});
  EXPECT_EQ(host.log.back(), "closed host-unknown");
  // RFC 6120 §4.7: our header goes out first, then the error.
  EXPECT_EQ(host.log[0].rfind("send <?xml version='1.0'?><stream:stream", 0), 0u);
  Outcome ns = converse(server(s), {send("<stream:stream xmlns='jabber:server' "
                                         "xmlns:stream='http://etherx.jabber.org/streams' "
                                         "to='example.com' version='1.0'>")});
  EXPECT_EQ(ns.log.back(), "closed invalid-namespace");
  Outcome root = converse(server(s), {send("<stream xmlns='jabber:client' to='example.com' "
                                           "version='1.0'>")});
  EXPECT_EQ(root.log.back(), "closed invalid-namespace");
  Outcome version = converse(server(s), {send("<stream:stream xmlns='jabber:client' "
                                              "xmlns:stream='http://etherx.jabber.org/streams' "
                                              "to='example.com'>")});
  EXPECT_EQ(version.log.back(), "closed unsupported-version");
}

TEST(StreamServer, NotWellFormed) {
  ServerSetup s;
  Outcome o = converse(server(s), {send(std::string(kHeader)), send("<a><b></a>")});
  SCOPED_TRACE(log_text(o));
  EXPECT_EQ(o.log.back(), "closed not-well-formed");
}

TEST(StreamServer, StarttlsTwiceIsAPolicyViolation) {
  ServerSetup s;
  s.direct_tls = true;
  Outcome o = converse(server(s), {send(std::string(kHeader)),
                                   send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")});
  EXPECT_EQ(o.log.back(), "closed policy-violation");
}

TEST(StreamServer, WithoutTlsNothingButTheClear) {
  ServerSetup s;
  s.options.tls_available = false;
  s.options.allow_plaintext = true;
  Outcome o = converse(server(s), {send(std::string(kHeader)),
                                   send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")});
  EXPECT_FALSE(o.wrote("<starttls"));
  EXPECT_TRUE(o.wrote("<mechanisms"));
  EXPECT_EQ(o.log.back(), "closed policy-violation");
}

TEST(StreamServer, NothingAfterStarttlsIsReadInTheClear) {
  ServerSetup s;
  Outcome o = converse(server(s), {send(std::string(kHeader)),
                                   send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" +
                                        plain("alice", "pencil"))});
  SCOPED_TRACE(log_text(o));
  // RFC 6120 §5.3.3: the injected <auth/> is dropped.
  EXPECT_FALSE(o.contains("verify-plain alice pencil"));
  EXPECT_EQ(o.log.back(), "restart");
}

TEST(StreamServer, SaslAfterAuthenticationIsAPolicyViolation) {
  ServerSetup s;
  s.direct_tls = true;
  Outcome o = converse(server(s), {send(std::string(kHeader)), send(plain("alice", "pencil")),
                                   send(std::string(kHeader)), send(plain("alice", "pencil"))});
  EXPECT_EQ(o.log.back(), "closed policy-violation");
}

TEST(StreamServer, PeerClosesTheStream) {
  ServerSetup s;
  Outcome o = converse(server(s), {send(std::string(kHeader)), send("</stream:stream>")});
  EXPECT_EQ(o.log[o.log.size() - 2], "send </stream:stream>");
  EXPECT_EQ(o.log.back(), "closed ");
}

}  // namespace
}  // namespace kabar::xmpp::stream
