// net::TcpTransport over a loopback connection (plain TCP), and net::TestTransport.
#include <gtest/gtest.h>

#include <array>
#include <boost/asio.hpp>
#include <memory>
#include <string>
#include <utility>  // before Asio: Boost 1.74 awaitable.hpp uses std::exchange
#include <vector>

#include "net/listener.h"
#include "net/shard.h"
#include "net/tcp_transport.h"
#include "net/test_transport.h"

namespace kabar::net {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

// Records what the transport tells it; stays alive through a shared_ptr as a session does.
class Recorder : public TransportHandler, public std::enable_shared_from_this<Recorder> {
 public:
  bool on_bytes(std::string_view bytes) override {
    received += bytes;
    ++reads;
    return true;
  }
  bool on_read_done() override { return keep_reading; }
  void on_peer_closed() override { peer_closed = true; }
  void on_transport_closed() override { closed = true; }
  void on_writable() override { ++writable; }
  std::shared_ptr<void> keep_alive() override { return shared_from_this(); }

  std::string received;
  int reads = 0;
  bool keep_reading = true;
  bool peer_closed = false;
  bool closed = false;
  int writable = 0;
  std::unique_ptr<Transport> transport;  // owned as a session owns it
};

class TcpTransportTest : public ::testing::Test {
 protected:
  TcpTransportTest() {
    shard_.io = &io_;
    acc_ = open_listener(io_, "127.0.0.1", 0, "test");
    client_.connect(acc_->local_endpoint());
    tcp::socket server_side(io_);
    acc_->accept(server_side);
    handler_ = std::make_shared<Recorder>();
    handler_->transport =
        std::make_unique<TcpTransport>(shard_, std::move(server_side), nullptr, false);
    handler_->transport->start(*handler_);
  }
  ~TcpTransportTest() override {
    handler_->transport->close();
    io_.poll();
    handler_->transport.reset();
  }

  void run_until(const std::function<bool()>& done) {
    for (int i = 0; i < 200 && !done(); ++i) {
      io_.restart();
      io_.run_for(std::chrono::milliseconds(10));
    }
  }

  asio::io_context io_;
  Shard shard_;
  std::unique_ptr<tcp::acceptor> acc_;
  tcp::socket client_{io_};
  std::shared_ptr<Recorder> handler_;
};

TEST_F(TcpTransportTest, DeliversWhatThePeerSends) {
  asio::write(client_, asio::buffer(std::string("<message/>")));
  run_until([&] { return handler_->received.size() == 10; });
  EXPECT_EQ(handler_->received, "<message/>");
  EXPECT_EQ(handler_->transport->peer_address(), "127.0.0.1");
  EXPECT_FALSE(handler_->transport->security().tls);
}

TEST_F(TcpTransportTest, GatheredBuffersGoOutInOneWrite) {
  const std::array<std::string_view, 3> bufs = {"<presence to='", "b@x", "'/>"};
  const auto r = handler_->transport->write(bufs);
  EXPECT_EQ(r.status, Transport::WriteStatus::kDone);
  EXPECT_EQ(r.taken, 20u);
  std::string got(20, '\0');
  asio::read(client_, asio::buffer(got));
  EXPECT_EQ(got, "<presence to='b@x'/>");
}

TEST_F(TcpTransportTest, PeerCloseEndsTheTransport) {
  client_.close();
  run_until([&] { return handler_->closed; });
  EXPECT_TRUE(handler_->closed);
}

TEST_F(TcpTransportTest, PausedReadingResumesOnRead) {
  handler_->keep_reading = false;
  asio::write(client_, asio::buffer(std::string("one")));
  run_until([&] { return handler_->reads == 1; });
  asio::write(client_, asio::buffer(std::string("two")));
  io_.restart();
  io_.run_for(std::chrono::milliseconds(50));
  EXPECT_EQ(handler_->received, "one") << "nothing is read while paused";
  handler_->transport->read();
  run_until([&] { return handler_->received.size() == 6; });
  EXPECT_EQ(handler_->received, "onetwo");
}

TEST_F(TcpTransportTest, AFullSocketBlocksAndSaysWhenWritable) {
  const std::string chunk(64 * 1024, 'x');
  std::size_t sent = 0;
  Transport::WriteResult r;
  for (int i = 0; i < 1000; ++i) {
    const std::array<std::string_view, 1> bufs = {chunk};
    r = handler_->transport->write(bufs);
    sent += r.taken;
    if (r.status != Transport::WriteStatus::kDone) break;
  }
  ASSERT_EQ(r.status, Transport::WriteStatus::kBlocked) << "the peer reads nothing";
  EXPECT_EQ(handler_->writable, 0);
  std::vector<char> sink(sent);
  asio::read(client_, asio::buffer(sink));
  run_until([&] { return handler_->writable > 0; });
  EXPECT_EQ(handler_->writable, 1);
}

TEST(TestTransport, RecordsWritesAndDeliversPushes) {
  asio::io_context io;
  Shard shard;
  shard.io = &io;
  auto h = std::make_shared<Recorder>();
  auto t = std::make_unique<TestTransport>(shard);
  TestTransport& tt = *t;
  h->transport = std::move(t);
  h->transport->start(*h);
  tt.push("abc");
  EXPECT_EQ(h->received, "abc");
  tt.set_write_limit(2);
  const std::array<std::string_view, 2> bufs = {"xy", "z"};
  auto r = tt.write(bufs);
  EXPECT_EQ(r.taken, 2u);
  EXPECT_EQ(r.status, Transport::WriteStatus::kBlocked);
  tt.unblock();
  EXPECT_EQ(h->writable, 1);
  EXPECT_EQ(tt.written(), "xy");
  tt.drop();
  EXPECT_TRUE(h->closed);
}

}  // namespace
}  // namespace kabar::net
