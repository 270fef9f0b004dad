// Scripted sessions for module unit tests: the real Server (every module, the router and the
// session directory) on the in-memory store, a fixed clock and a predictable generator, with
// C2sSessions over net::TestTransport that the test plays the client of. Each test runs on one
// thread; run() turns the loop until neither it nor the store has work left.
#pragma once

#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <utility>  // before Asio: Boost 1.74 awaitable.hpp uses std::exchange
#include <vector>

#include "net/test_transport.h"
#include "server/c2s_session.h"
#include "server/server.h"
#include "store/store.h"
#include "xml/stream_parser.h"
#include "xmpp/namespaces.h"

namespace kabar::server::testing {

// 2006-12-19T17:58:35Z unless a test moves it.
class FixedClock final : public Clock {
 public:
  std::int64_t now_ms() const override { return ms; }
  std::int64_t ms = 1166551115000;
};

// Bytes 0, 1, 2, ... (secrets are predictable in tests, which is the point).
class CountingRandom final : public Random {
 public:
  std::string bytes(std::size_t n) override {
    std::string out(n, '\0');
    for (auto& c : out) c = static_cast<char>(next_++);
    return out;
  }

 private:
  unsigned char next_ = 0;
};

// What one client has read: the stanzas the server wrote to it, parsed.
class Client : private xml::StreamHandler {
 public:
  Client(net::TestTransport* t, SessionPtr s) : t_(t), s_(std::move(s)), parser_(*this) {
    parser_.feed(
        "<stream:stream xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams'>");
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const SessionPtr& session() const { return s_; }
  net::TestTransport& transport() { return *t_; }
  // Sends bytes as the client (the caller runs the loop).
  void send(std::string_view xml) { t_->push(xml); }
  // The stanzas written to this client since the last take().
  std::vector<xml::Element> take() {
    const std::string bytes = t_->take_written();
    const auto r = parser_.feed(bytes);
    EXPECT_EQ(r.status, xml::StreamParser::Status::kOk) << r.message << " in: " << bytes;
    return std::exchange(got_, {});
  }

 private:
  void on_stream_open(const xml::Element&, std::string_view) override {}
  void on_element(xml::Element&& e) override { got_.push_back(std::move(e)); }
  void on_stream_close() override {}

  net::TestTransport* t_;
  SessionPtr s_;
  xml::StreamParser parser_;
  std::vector<xml::Element> got_;
};

// The stanzas of `got` named `name` (pointers into `got`, which must outlive them).
inline std::vector<const xml::Element*> named(const std::vector<xml::Element>& got,
                                              std::string_view name) {
  std::vector<const xml::Element*> out;
  for (const auto& e : got) {
    if (e.name() == name) out.push_back(&e);
  }
  return out;
}

class ModuleTest : public ::testing::Test {
 protected:
  // Archiving off: each module's tests see that module (and the byte fast path, which the
  // archive turns off for every message); the archive's tests (modules/mam/) turn it on.
  static Config default_config() {
    Config cfg;
    cfg.domain = "example.com";
    cfg.archive_enabled = false;
    return cfg;
  }

  explicit ModuleTest(Config cfg = default_config()) : server_(io_, std::move(cfg)) {
    shard_.io = &io_;
    auto st = store::make_memory_store();
    store_ = st.get();
    server_.use_store(std::move(st));
    auto clock = std::make_unique<FixedClock>();
    clock_ = clock.get();
    server_.set_clock(std::move(clock));
    server_.set_random(std::make_unique<CountingRandom>());
  }

  ~ModuleTest() override {
    clients_.clear();
    for (auto& [raw, weak] : shard_.sessions) {
      if (auto s = weak.lock(); s && !s->bound()) s->abort();
    }
    run();
  }

  // Runs the loop until it has no work left (no handler ready, no timer or operation pending)
  // and the store thread has handed every result back. A session's end waits on a timer for its
  // queue to drain: poll() alone would return before it.
  void run() {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      io_.restart();
      io_.poll();
      if (io_.stopped() && server_.db_pending() == 0) {
        io_.restart();
        if (io_.poll() == 0 && io_.stopped()) return;
        continue;
      }
      if (std::chrono::steady_clock::now() > give_up) {
        ADD_FAILURE() << "the loop did not come to rest";
        return;
      }
      io_.restart();
      io_.run_one_for(std::chrono::milliseconds(1));
    }
  }

  // The store, for seeding and checking (only while run() is not running: the store thread is
  // idle then).
  store::Store& store() { return *store_; }

  void add_account(const std::string& user) {
    store::Account a;
    a.username = user;
    a.created_unix = clock_->ms / 1000;
    ASSERT_TRUE(store_->create_account(a));
  }

  // Turns the loops until they come to rest: run(), unless a test has more loops than one.
  virtual void settle() { run(); }

  // A bound session for `full` with its stream open (on `shard`, shard_ unless told); what the
  // server wrote so far is read.
  Client& connect(std::string_view full, Shard* shard = nullptr) {
    Shard& on = shard != nullptr ? *shard : shard_;
    auto transport = std::make_unique<net::TestTransport>(on);
    net::TestTransport* t = transport.get();
    auto s = std::make_shared<C2sSession>(server_, on, std::move(transport));
    s->start();
    auto jid = xmpp::Jid::parse(full);
    EXPECT_TRUE(jid && s->bind_for_test(*jid)) << full;
    t->push(
        "<stream:stream to='example.com' version='1.0' xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams'>");
    settle();
    t->take_written();  // the stream header and features
    clients_.push_back(std::make_unique<Client>(t, std::move(s)));
    return *clients_.back();
  }

  // A new connection with its stream open (what the server wrote so far is read), not bound:
  // authenticated as `user` unless it is empty.
  Client& opened(const std::string& user = {}) {
    auto transport = std::make_unique<net::TestTransport>(shard_);
    net::TestTransport* t = transport.get();
    auto s = std::make_shared<C2sSession>(server_, shard_, std::move(transport));
    s->start();
    t->push(
        "<stream:stream to='example.com' version='1.0' xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams'>");
    run();
    t->take_written();
    if (!user.empty()) s->authenticate_for_test(user);
    clients_.push_back(std::make_unique<Client>(t, std::move(s)));
    return *clients_.back();
  }

  // Sends `xml` from `c` and runs until everything it caused is done.
  void send(Client& c, std::string_view xml) {
    c.send(xml);
    run();
  }

  asio::io_context io_;
  Server server_;
  Shard shard_;
  store::Store* store_ = nullptr;
  FixedClock* clock_ = nullptr;
  std::vector<std::unique_ptr<Client>> clients_;
};

}  // namespace kabar::server::testing
