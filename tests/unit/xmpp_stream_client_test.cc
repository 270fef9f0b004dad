// The initiating entity's negotiator against a scripted server, and against the server's
// negotiator back to back (RFC 6120 §4-§7).
#include <gtest/gtest.h>

#include "xmpp/stream/negotiator.h"
#include "xmpp_stream_harness.h"

namespace kabar::xmpp::stream {
namespace {

using testing::bind_result;
using testing::Conversation;
using testing::converse;
using testing::kServerHeader;
using testing::last_between;
using testing::log_text;
using testing::Outcome;
using testing::send;
using testing::Step;

const std::string kStarttlsFeatures =
    "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
    "</stream:features>";
const std::string kBindFeatures =
    "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
    "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>"
    "</stream:features>";

std::string mechanisms(std::initializer_list<std::string_view> mechs, std::string_view extra = {}) {
  std::string f = "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>";
  for (std::string_view m : mechs) f += "<mechanism>" + std::string(m) + "</mechanism>";
  return f + "</mechanisms>" + std::string(extra) + "</stream:features>";
}

struct ClientSetup {
  ClientOptions options;
  bool direct_tls = false;
  std::string cb_type = "tls-unique";
  std::string cb_data = "finished-message";
};

Conversation client(ClientSetup setup) {
  Conversation c;
  c.cb_type = setup.cb_type;
  c.cb_data = setup.cb_data;
  c.make = [setup]() -> std::unique_ptr<Negotiator> {
    ClientOptions o = setup.options;
    if (o.jid.empty()) o.jid = "alice@example.com";
    if (o.password.empty()) o.password = "pencil";
    o.random = testing::counting_random();
    auto n = std::make_unique<ClientNegotiator>(std::move(o));
    if (setup.direct_tls) n->tls_established(setup.cb_type, setup.cb_data);
    return n;
  };
  c.start = [](Negotiator& n) { static_cast<ClientNegotiator&>(n).start(); };
  return c;
}

// The decoded initial response of the <auth/> the client wrote with `mech`.
std::string initial(const Outcome& o, std::string_view mech) {
  return base64_decode(last_between(o.wire, "mechanism='" + std::string(mech) + "'>", "</auth>"))
      .value_or("?");
}

// The server half of a SCRAM exchange, answering what the client wrote.
struct ScriptedScramServer {
  std::shared_ptr<ScramServer> server;
  std::shared_ptr<bool> tamper = std::make_shared<bool>(false);
  ScriptedScramServer(ScramHash h, std::string cb_data = {}, bool plus = false)
      : server(std::make_shared<ScramServer>(h)), hash_(h) {
    server->set_channel_binding(!cb_data.empty(), plus, "tls-unique", cb_data);
  }
  Step challenge() const {
    return [s = server, h = hash()](const std::string& written) {
      std::string first = last_between(written, "'>", "</auth>");
      SaslFailure f = SaslFailure::kNone;
      auto user = s->client_first(base64_decode(first).value_or(""), f);
      EXPECT_TRUE(user.has_value()) << "client-first '" << first << "'";
      std::string c = s->server_first(derive_credentials(h, "pencil", "salt", 4096));
      return "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64_encode(c) +
             "</challenge>";
    };
  }
  Step outcome() const {
    return [s = server, t = tamper](const std::string& written) {
      std::string final_msg = last_between(
          written, "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>", "</response>");
      SaslFailure f = SaslFailure::kNone;
      auto v = s->client_final(base64_decode(final_msg).value_or(""), f);
      if (!v) {
        return std::string(
            "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/>"
            "</failure>");
      }
      if (*t) (*v)[3] = (*v)[3] == 'A' ? 'B' : 'A';
      return "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64_encode(*v) +
             "</success>";
    };
  }
  ScramHash hash_;
  ScramHash hash() const { return hash_; }
};

TEST(StreamClient, StarttlsScramSha256AndBind) {
  ClientSetup s;
  s.options.resource = "phone";
  s.cb_type.clear();
  s.cb_data.clear();
  ScriptedScramServer scram(ScramHash::kSha256);
  Outcome o = converse(
      client(s),
      {send(std::string(kServerHeader) + kStarttlsFeatures),
       send("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
       send(std::string(kServerHeader) + mechanisms({"SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN"})),
       scram.challenge(), scram.outcome(), send(std::string(kServerHeader) + kBindFeatures),
       bind_result("alice@example.com/phone")});
  SCOPED_TRACE(log_text(o));
  EXPECT_EQ(o.log[1], "send <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
  EXPECT_EQ(o.log[2], "starttls");
  EXPECT_EQ(o.log[3], "restart");
  // RFC 6120 §6.3.4: the strongest offered, whatever the server's order; no channel binding.
  EXPECT_EQ(initial(o, "SCRAM-SHA-256").rfind("n,,n=alice,r=", 0), 0u);
  EXPECT_TRUE(o.contains("authenticated alice"));
  EXPECT_TRUE(o.wrote("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource>"));
  EXPECT_EQ(o.log.back(), "bound alice@example.com/phone");
}

TEST(StreamClient, ScramSha256PlusWithChannelBinding) {
  ClientSetup s;
  s.direct_tls = true;
  ScriptedScramServer scram(ScramHash::kSha256, "finished-message", true);
  Outcome o = converse(
      client(s),
      {send(std::string(kServerHeader) +
            mechanisms({"SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256"},
                       "<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>"
                       "<channel-binding type='tls-unique'/></sasl-channel-binding>")),
       scram.challenge(), scram.outcome(), send(std::string(kServerHeader) + kBindFeatures),
       bind_result("alice@example.com/kabar-x")});
  SCOPED_TRACE(log_text(o));
  EXPECT_EQ(initial(o, "SCRAM-SHA-256-PLUS").rfind("p=tls-unique,,n=alice,r=", 0), 0u);
  // No resource asked for: the server's is taken.
  EXPECT_TRUE(o.wrote("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"));
  EXPECT_EQ(o.log.back(), "bound alice@example.com/kabar-x");
}

TEST(StreamClient, ScramSha1PlusWhenThatIsTheStrongestOffered) {
  ClientSetup s;
  s.direct_tls = true;
  ScriptedScramServer scram(ScramHash::kSha1, "finished-message", true);
  Outcome o = converse(client(s), {send(std::string(kServerHeader) +
                                        mechanisms({"PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"})),
                                   scram.challenge(), scram.outcome()});
  SCOPED_TRACE(log_text(o));
  EXPECT_EQ(initial(o, "SCRAM-SHA-1-PLUS").rfind("p=tls-unique,,n=alice,r=", 0), 0u);
  EXPECT_TRUE(o.contains("authenticated alice"));
}

TEST(StreamClient, PlusOfOtherTypeIsNotUsed) {
  ClientSetup s;
  s.direct_tls = true;
  Outcome o =
      converse(client(s),
               {send(std::string(kServerHeader) +
                     mechanisms({"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"},
                                "<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>"
                                "<channel-binding type='tls-exporter'/></sasl-channel-binding>"))});
  SCOPED_TRACE(log_text(o));
  EXPECT_EQ(initial(o, "SCRAM-SHA-256").rfind("n,,n=alice,r=", 0), 0u);
}

TEST(StreamClient, CouldBindButNoPlusOffered) {
  ClientSetup s;
  s.direct_tls = true;
  Outcome o = converse(client(s),
                       {send(std::string(kServerHeader) + mechanisms({"SCRAM-SHA-1", "PLAIN"}))});
  // RFC 5802 §6: "y" tells a server that stripped -PLUS that we noticed.
  EXPECT_EQ(initial(o, "SCRAM-SHA-1").rfind("y,,n=alice,r=", 0), 0u);
}

TEST(StreamClient, PlainOverTls) {
  ClientSetup s;
  s.direct_tls = true;
  Outcome o = converse(client(s), {send(std::string(kServerHeader) + mechanisms({"PLAIN"})),
                                   send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
                                   send(std::string(kServerHeader) + kBindFeatures),
                                   bind_result("alice@example.com/r")});
  SCOPED_TRACE(log_text(o));
  EXPECT_EQ(initial(o, "PLAIN"), std::string("\0alice\0pencil", 13));
  EXPECT_EQ(o.log.back(), "bound alice@example.com/r");
}

TEST(StreamClient, NoStarttlsOffered) {
  ClientSetup s;
  Outcome o = converse(client(s), {send(std::string(kServerHeader) + mechanisms({"PLAIN"}))});
  EXPECT_EQ(o.log.back(),
            "closed : the server does not offer STARTTLS; refusing to continue in the clear");
  EXPECT_FALSE(o.wrote("<auth"));
}

TEST(StreamClient, PlainInTheClearOnlyWhenAllowed) {
  ClientSetup s;
  s.options.allow_plaintext = true;
  Outcome o = converse(client(s), {send(std::string(kServerHeader) + mechanisms({"PLAIN"})),
                                   send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")});
  EXPECT_EQ(initial(o, "PLAIN"), std::string("\0alice\0pencil", 13));
  EXPECT_TRUE(o.contains("authenticated alice"));
  // Offered STARTTLS is still taken.
  Outcome tls = converse(client(s), {send(std::string(kServerHeader) +
                                          "<stream:features><starttls xmlns='urn:ietf:params:xml:"
                                          "ns:xmpp-tls'/><mechanisms xmlns='urn:ietf:params:xml:ns:"
                                          "xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms>"
                                          "</stream:features>")});
  EXPECT_EQ(tls.log.back(), "send <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
}

TEST(StreamClient, StarttlsRefused) {
  ClientSetup s;
  Outcome o = converse(client(s), {send(std::string(kServerHeader) + kStarttlsFeatures),
                                   send("<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")});
  EXPECT_EQ(o.log.back(), "closed : the server refused STARTTLS");
}

TEST(StreamClient, BadPassword) {
  ClientSetup s;
  s.direct_tls = true;
  s.options.password = "wrong";
  ScriptedScramServer scram(ScramHash::kSha256);
  Outcome o = converse(client(s), {send(std::string(kServerHeader) + mechanisms({"SCRAM-SHA-256"})),
                                   scram.challenge(), scram.outcome()});
  SCOPED_TRACE(log_text(o));
  EXPECT_EQ(o.log.back(),
            "closed not-authorized: wrong password or unknown account alice@example.com");
  EXPECT_FALSE(o.contains("authenticated alice"));
}

TEST(StreamClient, OtherSaslFailures) {
  ClientSetup s;
  s.direct_tls = true;
  Outcome o = converse(client(s), {send(std::string(kServerHeader) + mechanisms({"PLAIN"})),
                                   send("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                                        "<aborted/><text>bye</text></failure>")});
  EXPECT_EQ(o.log.back(), "closed aborted: login refused: aborted (bye)");
}

TEST(StreamClient, NoMechanismInCommon) {
  ClientSetup s;
  s.direct_tls = true;
  Outcome o = converse(client(s),
                       {send(std::string(kServerHeader) + mechanisms({"DIGEST-MD5", "X-OAUTH2"}))});
  EXPECT_EQ(o.log.back(), "closed : the server offers no SASL mechanism kabar supports");
}

TEST(StreamClient, MalformedChallenge) {
  ClientSetup s;
  s.direct_tls = true;
  for (std::string challenge : {std::string("!!!"), base64_encode("r=othernonce,s=c2FsdA==,i=4096"),
                                base64_encode("garbage")}) {
    Outcome o =
        converse(client(s), {send(std::string(kServerHeader) + mechanisms({"SCRAM-SHA-256"})),
                             send("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" +
                                  challenge + "</challenge>")});
    EXPECT_EQ(o.log.back(), "closed : malformed SCRAM challenge from the server") << challenge;
  }
}

TEST(StreamClient, WrongServerSignature) {
  ClientSetup s;
  s.direct_tls = true;
  ScriptedScramServer scram(ScramHash::kSha256);
  *scram.tamper = true;
  Outcome o = converse(client(s), {send(std::string(kServerHeader) + mechanisms({"SCRAM-SHA-256"})),
                                   scram.challenge(), scram.outcome()});
  SCOPED_TRACE(log_text(o));
  EXPECT_EQ(o.log.back(),
            "closed : the server could not prove it knows the password (SCRAM "
            "server signature wrong)");
  EXPECT_FALSE(o.contains("authenticated alice"));
}

TEST(StreamClient, SuccessWithoutAChallengeIsNoProof) {
  ClientSetup s;
  s.direct_tls = true;
  Outcome o = converse(client(s), {send(std::string(kServerHeader) + mechanisms({"SCRAM-SHA-256"})),
                                   send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")});
  EXPECT_FALSE(o.contains("authenticated alice"));
}

TEST(StreamClient, BindConflict) {
  ClientSetup s;
  s.direct_tls = true;
  s.options.resource = "phone";
  Outcome o = converse(
      client(s),
      {send(std::string(kServerHeader) + mechanisms({"PLAIN"})),
       send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
       send(std::string(kServerHeader) + kBindFeatures), [](const std::string& written) {
         std::string id = last_between(written, "id='", "'");
         return "<iq type='error' id='" + id +
                "'><error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                "</error></iq>";
       }});
  EXPECT_EQ(o.log.back(), "closed conflict: resource binding failed: conflict");
}

TEST(StreamClient, RequiredLegacySession) {
  ClientSetup s;
  s.direct_tls = true;
  Outcome o =
      converse(client(s),
               {send(std::string(kServerHeader) + mechanisms({"PLAIN"})),
                send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
                send(std::string(kServerHeader) +
                     "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                     "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></stream:features>"),
                bind_result("alice@example.com/r"), [](const std::string& written) {
                  EXPECT_NE(written.find("<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>"),
                            std::string::npos);
                  return "<message from='x@y'/><iq type='result' id='" +
                         last_between(written, "id='", "'") + "'/>";
                }});
  SCOPED_TRACE(log_text(o));
  const std::size_t n = o.log.size();
  EXPECT_EQ(o.log[n - 2], "stanza <message from='x@y'/>");
  EXPECT_EQ(o.log[n - 1], "bound alice@example.com/r");
}

TEST(StreamClient, StreamErrorFromTheServer) {
  ClientSetup s;
  Outcome o = converse(client(s),
                       {send(std::string(kServerHeader) +
                             "<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-"
                             "streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>no</text>"
                             "</stream:error></stream:stream>")});
  EXPECT_EQ(o.log.back(), "closed host-unknown: stream error from the server: host-unknown (no)");
}

TEST(StreamClient, ServerClosesOrSendsGarbage) {
  ClientSetup s;
  Outcome closed = converse(client(s), {send(std::string(kServerHeader) + "</stream:stream>")});
  EXPECT_EQ(closed.log.back(), "closed : the server closed the stream");
  Outcome bad = converse(client(s), {send(std::string(kServerHeader) + "<a></b>")});
  EXPECT_EQ(bad.log.back(), "closed : the server sent malformed XML");
}

TEST(StreamClient, RegistrationStopsAtTheSecuredFeatures) {
  ClientSetup s;
  s.options.authenticate = false;
  Outcome o = converse(client(s), {send(std::string(kServerHeader) + kStarttlsFeatures),
                                   send("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
                                   send(std::string(kServerHeader) + mechanisms({"PLAIN"}))});
  EXPECT_EQ(o.log.back(), "ready");
  EXPECT_FALSE(o.wrote("<auth"));
}

// Client and server negotiators wired to each other through two real parsers.
struct BackToBack {
  ServerNegotiator server;
  ClientNegotiator client;
  ParsedInput to_server{server};
  ParsedInput to_client{client};
  std::set<std::string> taken;
  std::vector<std::string> server_log;
  std::vector<std::string> client_log;
  std::string cb_data;

  BackToBack(ClientOptions co, std::string cb)
      : server([] {
          ServerOptions o;
          o.domain = "example.com";
          o.random = testing::counting_random();
          return o;
        }()),
        client(std::move(co)),
        cb_data(std::move(cb)) {}

  // Moves bytes until neither side has anything to say; bytes go across in halves.
  void run() {
    client.start();
    for (int round = 0; round < 100 && (client.has_events() || server.has_events()); ++round) {
      pump(client, client_log, to_server, to_client);
      pump(server, server_log, to_client, to_server);
    }
  }
  void pump(Negotiator& n, std::vector<std::string>& log, ParsedInput& peer, ParsedInput& own) {
    for (Event& ev : n.take_events()) {
      log.push_back(testing::describe(ev));
      switch (ev.kind) {
        case Event::Kind::kSend: {
          const std::size_t half = ev.data.size() / 2;
          peer.feed(std::string_view(ev.data).substr(0, half));
          peer.feed(std::string_view(ev.data).substr(half));
          break;
        }
        case Event::Kind::kStartTls:
          n.tls_established(cb_data.empty() ? "" : "tls-unique", cb_data);
          break;
        case Event::Kind::kRestartStream:
          own.restart();
          break;
        case Event::Kind::kNeedScramCredentials:
          server.scram_credentials(ev.user == "alice" ? std::optional(derive_credentials(
                                                            ev.hash, "pencil", "salt", 4096))
                                                      : std::nullopt);
          break;
        case Event::Kind::kVerifyPlain:
          server.plain_result(false);
          break;
        case Event::Kind::kBindRequest:
          if (taken.contains(ev.jid))
            server.bind_refused("conflict");
          else
            server.bind_accepted();
          break;
        default:
          break;
      }
    }
  }
};

ClientOptions alice(std::string password, std::string resource) {
  ClientOptions o;
  o.jid = "alice@example.com";
  o.password = std::move(password);
  o.resource = std::move(resource);
  o.random = testing::counting_random();
  return o;
}

TEST(StreamBackToBack, StarttlsPlusAndBind) {
  BackToBack b(alice("pencil", "phone"), "finished-message");
  b.run();
  EXPECT_EQ(b.client.mechanism(), "SCRAM-SHA-256-PLUS");
  EXPECT_TRUE(b.client.bound());
  EXPECT_TRUE(b.server.bound());
  EXPECT_EQ(b.client.bound_jid(), "alice@example.com/phone");
  EXPECT_EQ(b.server_log.back(), "bound alice@example.com/phone");
}

TEST(StreamBackToBack, WithoutChannelBindingAndServerResource) {
  BackToBack b(alice("pencil", ""), "");
  b.run();
  EXPECT_EQ(b.client.mechanism(), "SCRAM-SHA-256");
  ASSERT_TRUE(b.client.bound());
  EXPECT_EQ(b.client.bound_jid().rfind("alice@example.com/kabar-", 0), 0u);
}

TEST(StreamBackToBack, BadPassword) {
  BackToBack b(alice("wrong", "phone"), "finished-message");
  b.run();
  EXPECT_FALSE(b.client.bound());
  EXPECT_EQ(b.client.failure(), FailureKind::kAuth);
  EXPECT_FALSE(b.server.authenticated());
  EXPECT_TRUE(std::count(b.server_log.begin(), b.server_log.end(),
                         "auth-failed alice not-authorized") == 1);
}

TEST(StreamBackToBack, BindConflict) {
  BackToBack b(alice("pencil", "phone"), "finished-message");
  b.taken.insert("alice@example.com/phone");
  b.run();
  EXPECT_FALSE(b.client.bound());
  EXPECT_EQ(b.client.failure(), FailureKind::kProtocol);
  EXPECT_EQ(b.client_log.back(), "closed conflict: resource binding failed: conflict");
}

}  // namespace
}  // namespace kabar::xmpp::stream
