// C2sSession over net::TestTransport: no socket, the test plays the client.
#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <utility>  // before Asio: Boost 1.74 awaitable.hpp uses std::exchange

#include "net/test_transport.h"
#include "server/c2s_session.h"
#include "server/server.h"
#include "store/store.h"
#include "xmpp/scram.h"

namespace kabar::server {
namespace {

class SessionTest : public ::testing::Test {
 protected:
  SessionTest() : server_(io_, make_config()) {
    shard_.io = &io_;
    // Stanzas a session ends without delivering are routed again, which may reach the store.
    server_.use_store(store::make_memory_store());
  }
  ~SessionTest() override {
    // Every session the test made ends with its connection.
    // (Bound ones are left bound: their end would record the last activity in a store.)
    for (auto& [raw, weak] : shard_.sessions) {
      if (auto s = weak.lock(); s && !s->bound()) s->abort();
    }
    run();
  }

  static Config make_config() {
    Config cfg;
    cfg.domain = "example.com";
    // The byte path and the write queue, without the archive's full path for every message.
    cfg.archive_enabled = false;
    return cfg;
  }

  // A started session over a new test transport.
 public:
  std::shared_ptr<C2sSession> open_for_test(net::TestTransport*& t) { return open(t); }

 protected:
  std::shared_ptr<C2sSession> open(net::TestTransport*& t) {
    auto transport = std::make_unique<net::TestTransport>(shard_);
    t = transport.get();
    auto s = std::make_shared<C2sSession>(server_, shard_, std::move(transport));
    s->start();
    return s;
  }

  void run() {
    io_.restart();
    io_.poll();
  }

  boost::asio::io_context io_;
  Server server_;
  Shard shard_;
};

// A bound session whose client has opened its stream (bind_for_test() skips the header).
std::shared_ptr<C2sSession> bound_with_stream(SessionTest& t, net::TestTransport*& tr,
                                              std::string_view full) {
  auto s = t.open_for_test(tr);
  EXPECT_TRUE(s->bind_for_test(*xmpp::Jid::parse(full)));
  tr->push(
      "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
      "to='example.com' version='1.0'>");
  return s;
}

TEST_F(SessionTest, AnswersTheStreamHeaderWithFeatures) {
  net::TestTransport* t = nullptr;
  auto s = open(t);
  t->push(
      "<?xml version='1.0'?><stream:stream to='example.com' version='1.0' "
      "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>");
  // Written at the end of the read event, in one write: header and features.
  EXPECT_EQ(t->write_calls(), 1u);
  const std::string out = t->written();
  EXPECT_NE(out.find("<stream:stream xmlns='jabber:client'"), std::string::npos) << out;
  EXPECT_NE(out.find("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("<mechanisms"), std::string::npos) << "no SASL before TLS: " << out;
  EXPECT_EQ(s->out_queue().queued(), 0u) << "stream-level bytes are not stanzas";
}

TEST_F(SessionTest, StartTlsThroughTheTransport) {
  net::TestTransport* t = nullptr;
  auto s = open(t);
  const std::string header =
      "<?xml version='1.0'?><stream:stream to='example.com' version='1.0' "
      "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
  t->push(header);
  t->take_written();
  // RFC 6120 §5.3.3: what follows <starttls/> in the same read is dropped.
  t->push("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><iq type='get' id='x'/>");
  run();
  EXPECT_EQ(t->take_written(), "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
  EXPECT_TRUE(t->security().tls);
  EXPECT_TRUE(t->reading());
  t->push(header);
  const std::string out = t->take_written();
  EXPECT_NE(out.find("<mechanism>SCRAM-SHA-256</mechanism>"), std::string::npos) << out;
  EXPECT_FALSE(s->closed());
}

TEST_F(SessionTest, DirectTlsOffersSaslWithChannelBinding) {
  net::TestTransport* t = nullptr;
  auto s = open(t);
  // XEP-0368: the handshake is done before the stream starts; TLS 1.2 has tls-unique.
  net::Security sec;
  sec.tls = true;
  sec.tls_version = 0x0303;
  sec.tls_unique = "0123456789ab";
  t->set_security(sec);
  t->push(
      "<?xml version='1.0'?><stream:stream to='example.com' version='1.0' "
      "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>");
  const std::string out = t->take_written();
  EXPECT_EQ(out.find("<starttls"), std::string::npos) << "secure already: " << out;
  EXPECT_NE(out.find("<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>"
                     "SCRAM-SHA-256-PLUS</mechanism>"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("<channel-binding type='tls-unique'/>"), std::string::npos) << out;
  EXPECT_FALSE(s->closed());
}

TEST_F(SessionTest, BadXmlIsAStreamError) {
  net::TestTransport* t = nullptr;
  auto s = open(t);
  t->push(
      "<stream:stream to='example.com' version='1.0' xmlns='jabber:client' "
      "xmlns:stream='http://etherx.jabber.org/streams'><a></b>");
  run();
  EXPECT_NE(t->written().find("<not-well-formed"), std::string::npos) << t->written();
  EXPECT_TRUE(s->closed());
  EXPECT_TRUE(t->is_closed());
}

TEST_F(SessionTest, BoundSessionWritesStanzasInOneWrite) {
  net::TestTransport* t = nullptr;
  auto s = open(t);
  auto jid = xmpp::Jid::parse("alice@example.com/phone");
  ASSERT_TRUE(jid);
  ASSERT_TRUE(s->bind_for_test(*jid));
  EXPECT_TRUE(s->bound());
  EXPECT_EQ(s->jid_str(), "alice@example.com/phone");
  EXPECT_EQ(server_.bound_session(*jid), s);
  int written = 0;
  s->send_raw("<message id='1'/>", [&] { ++written; });
  auto head = std::make_shared<const std::string>("<presence to='");
  auto tail = std::make_shared<const std::string>("'/>");
  s->send_shared(head, "alice@example.com/phone", tail);
  run();
  EXPECT_EQ(t->written(), "<message id='1'/><presence to='alice@example.com/phone'/>");
  EXPECT_EQ(t->write_calls(), 1u);
  EXPECT_EQ(written, 1);
  EXPECT_EQ(s->out_queue().queued(), 2u);
  EXPECT_EQ(s->out_queue().written(), 2u);
}

TEST_F(SessionTest, ShortWritesGoOnWhenTheTransportCan) {
  net::TestTransport* t = nullptr;
  auto s = open(t);
  ASSERT_TRUE(s->bind_for_test(*xmpp::Jid::parse("alice@example.com/phone")));
  t->set_write_limit(4);
  int written = 0;
  s->send_raw("<message id='1'/>", [&] { ++written; });
  s->send_raw("<message id='2'/>", [&] { ++written; });
  run();
  EXPECT_EQ(t->written(), "<mes");
  EXPECT_EQ(written, 0);
  while (t->written().size() < 34) {
    const std::size_t before = t->written().size();
    t->unblock();
    run();
    ASSERT_GT(t->written().size(), before);
  }
  EXPECT_EQ(t->written(), "<message id='1'/><message id='2'/>");
  EXPECT_EQ(written, 2);
}

// 64 messages of about 1 KB to `to`: one read event's worth.
std::string flood_chunk(std::string_view to, int first) {
  std::string out;
  for (int i = first; i < first + 64; ++i) {
    out += "<message to='" + std::string(to) + "' type='chat' id='f" + std::to_string(i) +
           "'><body>" + std::string(1000, 'x') + "</body></message>";
  }
  return out;
}

TEST_F(SessionTest, ACongestedReaderHoldsBackItsSenderUntilItDrains) {
  net::TestTransport* tr = nullptr;
  net::TestTransport* ts = nullptr;
  net::TestTransport* to = nullptr;
  net::TestTransport* tx = nullptr;
  auto reader = bound_with_stream(*this, tr, "bob@example.com/phone");
  auto sender = bound_with_stream(*this, ts, "alice@example.com/pc");
  auto other = bound_with_stream(*this, to, "dave@example.com/pc");
  auto third = bound_with_stream(*this, tx, "carol@example.com/pc");
  tr->stall();  // the reader's client reads nothing
  int chunks = 0;
  while (ts->reading() && chunks < 64) {
    ts->push(flood_chunk("bob@example.com/phone", chunks * 64));
    run();
    ++chunks;
  }
  // Held back past the high watermark, well before the hard cap (4 MiB) would cut the reader.
  EXPECT_FALSE(ts->reading());
  EXPECT_TRUE(reader->congested());
  EXPECT_FALSE(reader->closed());
  EXPECT_GT(reader->out_queue().queued(), C2sSession::kHighWatermark / 1100);
  EXPECT_LT(reader->out_queue().queued(), C2sSession::kHighWatermark / 1000 + 64 + 1);
  // What the sender's client sends meanwhile waits in its socket.
  const std::uint64_t queued = reader->out_queue().queued();
  ts->push(flood_chunk("bob@example.com/phone", 100'000));
  run();
  EXPECT_EQ(reader->out_queue().queued(), queued);
  // Others are not held back.
  tx->push("<message to='dave@example.com/pc' type='chat' id='c1'><body>hi</body></message>");
  run();
  EXPECT_TRUE(tx->reading());
  EXPECT_NE(to->written().find("id='c1'"), std::string::npos);
  // The reader's client reads, slowly: still over the low watermark, the sender waits.
  tr->set_write_limit(64 * 1024);
  tr->unblock();
  run();
  EXPECT_FALSE(ts->reading());
  EXPECT_TRUE(reader->congested());
  // Drained below the low watermark: the sender reads on, and what waited arrives.
  tr->set_write_limit(0);
  tr->unblock();
  run();
  EXPECT_FALSE(reader->congested());
  EXPECT_TRUE(ts->reading());
  EXPECT_EQ(reader->out_queue().queued(), queued + 64);
  EXPECT_NE(tr->written().find("id='f100063'"), std::string::npos);
  EXPECT_FALSE(reader->closed());
}

TEST_F(SessionTest, ASenderHeldBackByAReaderThatStopsIsFreedWhenTheReaderIsCut) {
  net::TestTransport* tr = nullptr;
  net::TestTransport* ts = nullptr;
  auto reader = bound_with_stream(*this, tr, "bob@example.com/phone");
  auto sender = bound_with_stream(*this, ts, "alice@example.com/pc");
  tr->stall();
  for (int i = 0; ts->reading() && i < 64; ++i) {
    ts->push(flood_chunk("bob@example.com/phone", i * 64));
    run();
  }
  ASSERT_FALSE(ts->reading());
  ASSERT_TRUE(reader->congested());
  // No progress: not stalled before the timeout, stalled after it.
  const std::int64_t now = server_.now_ms();
  EXPECT_FALSE(reader->write_stalled(now, 60'000));
  EXPECT_TRUE(reader->write_stalled(now + 60'001, 60'000));
  reader->cut_stalled();
  run();
  EXPECT_TRUE(reader->closed());
  EXPECT_FALSE(reader->congested());
  EXPECT_TRUE(ts->reading());
}

TEST_F(SessionTest, ClosedTransportEndsTheSession) {
  net::TestTransport* t = nullptr;
  auto s = open(t);
  auto jid = *xmpp::Jid::parse("alice@example.com/phone");
  ASSERT_TRUE(s->bind_for_test(jid));
  // A second resource stays (and keeps the last-activity write, which needs a store, away).
  net::TestTransport* t2 = nullptr;
  auto other = open(t2);
  ASSERT_TRUE(other->bind_for_test(*xmpp::Jid::parse("alice@example.com/laptop")));
  ASSERT_FALSE(open(t2)->bind_for_test(jid)) << "a bound full JID is taken";
  t->drop();
  run();
  EXPECT_TRUE(s->closed());
  EXPECT_EQ(server_.bound_session(jid), nullptr);
  EXPECT_EQ(server_.sessions_of("alice@example.com"), std::vector<SessionPtr>{other});
  EXPECT_EQ(shard_.sessions.count(s.get()), 0u);
  s->send_raw("<message/>");  // after the end: dropped
  run();
  EXPECT_EQ(t->written(), "");
}

TEST_F(SessionTest, DetachedSessionResendsUnackedStanzasOnANewConnection) {
  net::TestTransport* t = nullptr;
  auto s = open(t);
  auto jid = *xmpp::Jid::parse("alice@example.com/phone");
  ASSERT_TRUE(s->bind_for_test(jid));
  s->set_resumable(true);
  for (int i = 1; i <= 3; ++i) s->send_raw("<message id='" + std::to_string(i) + "'/>");
  run();
  EXPECT_EQ(t->written(), "<message id='1'/><message id='2'/><message id='3'/>");
  EXPECT_EQ(s->out_queue().written(), 3u);
  EXPECT_TRUE(s->ack(1));  // the client has handled the first one
  EXPECT_FALSE(s->ack(4));
  EXPECT_EQ(s->out_queue().unacked(), 2u);

  t->drop();  // the connection dies (t goes with it)
  run();
  EXPECT_TRUE(s->detached());
  EXPECT_FALSE(s->closed());
  EXPECT_EQ(server_.bound_session(jid), s) << "still bound while detached";
  s->send_raw("<message id='4'/>");  // arrives meanwhile: kept for the next connection
  run();
  EXPECT_EQ(s->out_queue().unacked(), 3u);

  auto fresh = std::make_unique<net::TestTransport>(shard_, "198.51.100.7");
  net::TestTransport* t2 = fresh.get();
  s->attach(std::move(fresh));
  run();
  EXPECT_FALSE(s->detached());
  EXPECT_EQ(s->peer_address(), "198.51.100.7");
  // Not acknowledged before, in order, whole; then what came while detached.
  EXPECT_EQ(t2->take_written(), "<message id='2'/><message id='3'/><message id='4'/>");
  EXPECT_TRUE(s->ack(4));
  EXPECT_EQ(s->out_queue().unacked(), 0u);
  // The stream goes on over the new connection: a ping is answered.
  t2->push("<iq type='get' id='p1' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>");
  run();
  const std::string reply = t2->take_written();
  EXPECT_NE(reply.find("id='p1'"), std::string::npos) << reply;
  EXPECT_NE(reply.find("type='result'"), std::string::npos) << reply;
  EXPECT_FALSE(s->closed());
}

TEST_F(SessionTest, DetachedSessionEndsOnStreamError) {
  net::TestTransport* t = nullptr;
  auto s = open(t);
  auto jid = *xmpp::Jid::parse("alice@example.com/phone");
  ASSERT_TRUE(s->bind_for_test(jid));
  net::TestTransport* t2 = nullptr;
  auto other = open(t2);  // keeps the last-activity write (a store) away
  ASSERT_TRUE(other->bind_for_test(*xmpp::Jid::parse("alice@example.com/laptop")));
  s->set_resumable(true);
  t->drop();
  run();
  ASSERT_TRUE(s->detached());
  s->stream_error("connection-timeout");  // what the sweep does when nobody comes back
  run();
  EXPECT_TRUE(s->closed());
  EXPECT_EQ(server_.bound_session(jid), nullptr);
}

// Negotiation through the session: a scripted client over the test transport, a real store (on
// its thread) and the CPU pool. Every step's bytes are delivered whole, byte by byte, or cut in
// two at one offset (the same offset for every step).
class LoginTest : public ::testing::Test {
 protected:
  static constexpr std::size_t kWhole = 0;
  static constexpr std::size_t kBytewise = std::numeric_limits<std::size_t>::max();

  LoginTest() : server_(io_, make_config()) {
    shard_.io = &io_;
    dir_ =
        std::filesystem::temp_directory_path() /
        ("kabar-login-test-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
         "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto store = store::open_sqlite_store(dir_);
    store::Account alice;
    alice.username = "alice";
    alice.sha1 = xmpp::make_credentials(xmpp::ScramHash::kSha1, kPassword);
    alice.sha256 = xmpp::make_credentials(xmpp::ScramHash::kSha256, kPassword);
    EXPECT_TRUE(store->create_account(alice));
    store::Account bob = alice;
    bob.username = "bob";
    EXPECT_TRUE(store->create_account(bob));
    server_.use_store_for_test(std::move(store));
  }
  ~LoginTest() override {
    for (auto& [raw, weak] : shard_.sessions) {
      if (auto s = weak.lock()) s->abort();
    }
    run_until([&] { return shard_.sessions.empty(); });
    std::filesystem::remove_all(dir_);
  }

  static Config make_config() {
    Config cfg;
    cfg.domain = "example.com";
    // The byte path and the write queue, without the archive's full path for every message.
    cfg.archive_enabled = false;
    cfg.allow_plaintext = true;
    cfg.auth_failures_per_account = 2;
    cfg.auth_failure_delay_ms = 1;  // the throttle's delays are tested on their own
    cfg.auth_failure_max_delay_ms = 1;
    return cfg;
  }

  std::shared_ptr<C2sSession> open(net::TestTransport*& t) {
    auto transport = std::make_unique<net::TestTransport>(shard_);
    t = transport.get();
    auto s = std::make_shared<C2sSession>(server_, shard_, std::move(transport));
    s->start();
    return s;
  }

  void run() {
    io_.restart();
    io_.poll();
  }
  // Runs the loop until `done` (the store and the CPU pool answer from their threads).
  template <typename F>
  bool run_until(F done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      run();
      if (done()) return true;
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  // A SASL PLAIN message (RFC 4616 §2) without authzid.
  static std::string plain(std::string_view user, std::string_view password) {
    std::string m(1, '\0');
    m += user;
    m += '\0';
    m += password;
    return m;
  }

  // Sends `bytes` as the client, cut by `cut`.
  static void push(net::TestTransport* t, std::string_view bytes, std::size_t cut) {
    if (cut == kWhole || cut >= bytes.size()) {
      t->push(bytes);
    } else if (cut == kBytewise) {
      for (char c : bytes) t->push(std::string_view(&c, 1));
    } else {
      t->push(bytes.substr(0, cut));
      t->push(bytes.substr(cut));
    }
  }
  // Sends `bytes` and returns what the session wrote up to and including `until`.
  std::string exchange(net::TestTransport* t, std::string_view bytes, std::size_t cut,
                       std::string_view until) {
    push(t, bytes, cut);
    const bool done = run_until([&] { return t->written().find(until) != std::string::npos; });
    EXPECT_TRUE(done) << "waiting for " << until << " after " << bytes << " (cut " << cut
                      << "), got: " << t->written();
    return t->take_written();
  }

  // SCRAM-SHA-256 in the clear up to the server's answer to the client-final message (a
  // <success/> or a <failure/>). `c` is the client's state, for checking the signature.
  std::string scram(net::TestTransport* t, xmpp::ScramClient& c, std::size_t cut) {
    const std::string challenge =
        exchange(t,
                 "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>" +
                     xmpp::base64_encode(c.client_first()) + "</auth>",
                 cut, "</challenge>");
    const std::string prefix = "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>";
    EXPECT_EQ(challenge.rfind(prefix, 0), 0u) << challenge;
    auto server_first =
        xmpp::base64_decode(challenge.substr(prefix.size(), challenge.size() - prefix.size() - 12));
    EXPECT_TRUE(server_first) << challenge;
    auto client_final = c.client_final(server_first.value_or(""));
    EXPECT_TRUE(client_final) << *server_first;
    push(t,
         "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" +
             xmpp::base64_encode(client_final.value_or("")) + "</response>",
         cut);
    const bool answered = run_until([&] {
      return t->written().find("</failure>") != std::string::npos ||
             t->written().find("</success>") != std::string::npos;
    });
    EXPECT_TRUE(answered) << t->written();
    return t->take_written();
  }

  // A full login as alice: stream, SCRAM-SHA-256 in the clear, restart, bind of `resource`.
  std::shared_ptr<C2sSession> login(net::TestTransport*& t, std::size_t cut,
                                    const std::string& resource) {
    auto s = open(t);
    const std::string features = exchange(t, kHeader, cut, "</stream:features>");
    // RFC 6120 §5.3.1: STARTTLS offered but not required where the clear is allowed.
    EXPECT_NE(features.find("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
              std::string::npos)
        << features;
    EXPECT_NE(features.find("<mechanism>SCRAM-SHA-256</mechanism>"), std::string::npos) << features;
    EXPECT_EQ(features.find("-PLUS"), std::string::npos) << "no channel binding: " << features;
    xmpp::ScramClient c(xmpp::ScramHash::kSha256, "alice", kPassword);
    const std::string success = scram(t, c, cut);
    const std::string prefix = "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>";
    EXPECT_EQ(success.rfind(prefix, 0), 0u) << success;
    auto server_final =
        xmpp::base64_decode(success.substr(prefix.size(), success.size() - prefix.size() - 10));
    EXPECT_TRUE(server_final && c.verify_server_final(*server_final)) << success;
    EXPECT_TRUE(s->authenticated());
    EXPECT_EQ(s->username(), "alice");
    EXPECT_FALSE(s->bound());

    const std::string bound_features = exchange(t, kHeader, cut, "</stream:features>");
    EXPECT_NE(
        // Beside <bind/>: what the modules registered, in their setup order (roster, sm, csi,
        // presence, basics).
        bound_features.find("<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                            "<ver xmlns='urn:xmpp:features:rosterver'/>"
                            "<sm xmlns='urn:xmpp:sm:3'/>"
                            "<csi xmlns='urn:xmpp:csi:0'/>"
                            "<sub xmlns='urn:xmpp:features:pre-approval'/>"
                            "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/>"
                            "</session>"
                            "</stream:features>"),
        std::string::npos)
        << bound_features;
    EXPECT_EQ(bound_features.find("<mechanisms"), std::string::npos) << bound_features;

    const std::string bind = exchange(t,
                                      "<iq type='set' id='b1'><bind "
                                      "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>" +
                                          resource + "</resource></bind></iq>",
                                      cut, "</iq>");
    EXPECT_EQ(bind,
              "<iq id='b1' type='result'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>"
              "alice@example.com/" +
                  resource + "</jid></bind></iq>");
    return s;
  }

  static constexpr const char* kPassword = "correct horse";
  static constexpr std::string_view kHeader =
      "<?xml version='1.0'?><stream:stream to='example.com' version='1.0' "
      "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

  boost::asio::io_context io_;
  Server server_;
  Shard shard_;
  std::filesystem::path dir_;
};

TEST_F(LoginTest, ScramSha256InTheClearThenBind) {
  // Whole, byte by byte, then cut in two at every offset up to the longest step's length.
  std::vector<std::size_t> cuts = {kWhole, kBytewise};
  for (std::size_t k = 1; k < 200; ++k) cuts.push_back(k);
  for (std::size_t cut : cuts) {
    SCOPED_TRACE("cut " + std::to_string(cut));
    const std::string resource = "r" + std::to_string(cut % 1000);
    net::TestTransport* t = nullptr;
    auto s = login(t, cut, resource);
    ASSERT_TRUE(s->bound());
    EXPECT_EQ(s->jid_str(), "alice@example.com/" + resource);
    EXPECT_EQ(server_.bound_session(s->jid()), s);
    EXPECT_FALSE(s->negotiating()) << "the negotiator is freed once bound";
    EXPECT_EQ(s->out_queue().queued(), 0u) << "negotiation is stream-level, not stanzas";
    // Bound: stanzas go to the server (a ping to the server is answered).
    const std::string pong =
        exchange(t, "<iq type='get' id='p1' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>",
                 cut, "id='p1'");
    EXPECT_NE(pong.find("id='p1'"), std::string::npos) << pong;
    EXPECT_NE(pong.find("type='result'"), std::string::npos) << pong;
    EXPECT_FALSE(s->closed());
    s->close();
    ASSERT_TRUE(run_until([&] { return shard_.sessions.count(s.get()) == 0; }));
    EXPECT_EQ(t->written(), "</stream:stream>");
  }
}

TEST_F(LoginTest, BadPasswordFailsAndIsCounted) {
  // Each run with an account of its own: the throttle counts per account (from the test's one
  // address) for a minute.
  for (auto [cut, user] : {std::pair{kWhole, "alice"}, std::pair{kBytewise, "bob"}}) {
    SCOPED_TRACE("cut " + std::to_string(cut));
    net::TestTransport* t = nullptr;
    auto s = open(t);
    exchange(t, kHeader, cut, "</stream:features>");
    xmpp::ScramClient wrong(xmpp::ScramHash::kSha256, user, "wrong horse");
    EXPECT_EQ(scram(t, wrong, cut),
              "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>");
    EXPECT_FALSE(s->authenticated());
    EXPECT_FALSE(s->closed()) << "RFC 6120 §6.4.5: the client may try again";
    // PLAIN's check runs on the CPU pool; a wrong password is the same failure.
    EXPECT_EQ(exchange(t,
                       "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" +
                           xmpp::base64_encode(plain(user, "wrong horse")) + "</auth>",
                       cut, "</failure>"),
              "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>");
    EXPECT_FALSE(s->authenticated());
    // Two failures for the account within the minute (auth_failures_per_account = 2): now even the
    // right password is refused before it is checked.
    const std::string refused =
        exchange(t,
                 "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" +
                     xmpp::base64_encode(plain(user, kPassword)) + "</auth>",
                 cut, "</failure>");
    EXPECT_EQ(refused,
              "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><temporary-auth-failure/>"
              "<text>too many failed attempts; try again later</text></failure>");
    EXPECT_FALSE(s->authenticated());
    // RFC 6120 §6.4.5: the third not-authorized on this stream closes it.
    xmpp::ScramClient again(xmpp::ScramHash::kSha256, "nobody", "x");
    const std::string last = scram(t, again, cut);
    EXPECT_NE(last.find("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/>"),
              std::string::npos)
        << last;
    EXPECT_NE(last.find("<stream:error><policy-violation "), std::string::npos) << last;
    EXPECT_TRUE(last.ends_with("</stream:error></stream:stream>")) << last;
    EXPECT_TRUE(s->closed());
    EXPECT_TRUE(run_until([&] { return t->is_closed(); }));
  }
}

TEST_F(LoginTest, BindReplacesTheSessionOfTheSameFullJid) {
  for (std::size_t cut : {kWhole, kBytewise, std::size_t{7}}) {
    SCOPED_TRACE("cut " + std::to_string(cut));
    net::TestTransport* t1 = nullptr;
    auto first = login(t1, cut, "phone");
    ASSERT_TRUE(first->bound());
    net::TestTransport* t2 = nullptr;
    auto second = login(t2, cut, "phone");
    // RFC 6120 §7.7.2.2: the new session binds; the old one ends with a <conflict/> error.
    ASSERT_TRUE(second->bound());
    EXPECT_EQ(server_.bound_session(*xmpp::Jid::parse("alice@example.com/phone")), second);
    EXPECT_TRUE(first->closed());
    EXPECT_NE(t1->written().find("<stream:error><conflict "
                                 "xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
              std::string::npos)
        << t1->written();
    EXPECT_TRUE(run_until([&] { return t1->is_closed(); }));
    EXPECT_EQ(server_.sessions_of("alice@example.com"), std::vector<SessionPtr>{second});
    second->close();
    ASSERT_TRUE(run_until([&] { return shard_.sessions.empty(); }));
  }
}

}  // namespace
}  // namespace kabar::server
