// C2sSession over net::TestTransport: no socket, the test plays the client.
#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <memory>
#include <string>
#include <utility>  // before Asio: Boost 1.74 awaitable.hpp uses std::exchange

#include "net/test_transport.h"
#include "server/c2s_session.h"
#include "server/server.h"

namespace kabar::server {
namespace {

class SessionTest : public ::testing::Test {
 protected:
  SessionTest() : server_(io_, make_config()) { shard_.io = &io_; }
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
    return cfg;
  }

  // A started session over a new test transport.
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

}  // namespace
}  // namespace kabar::server
