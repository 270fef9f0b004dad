// Stream management (XEP-0198) through scripted sessions over TestTransport.
#include "server/modules/sm/sm.h"

#include "server/modules/testing/module_test.h"

namespace kabar::server {
namespace {

using testing::Client;
using testing::ModuleTest;
using testing::named;

std::string chat_to(std::string_view to, int i) {
  return "<message to='" + std::string(to) + "' type='chat' id='m" + std::to_string(i) +
         "'><body>hello " + std::to_string(i) + "</body></message>";
}

class SmTest : public ModuleTest {
 protected:
  SmTest() = default;
  explicit SmTest(Config cfg) : ModuleTest(std::move(cfg)) {}
  void SetUp() override {
    add_account("alice");
    add_account("bob");
  }

  // A bound session that has enabled stream management; returns its <enabled/>.
  xml::Element enable(Client& c, bool resume) {
    send(c, resume ? "<enable xmlns='urn:xmpp:sm:3' resume='true'/>"
                   : "<enable xmlns='urn:xmpp:sm:3'/>");
    auto got = c.take();
    EXPECT_EQ(got.size(), 1u);
    if (got.empty()) return xml::Element("none", "");
    return got[0];
  }

  static std::vector<std::string> bodies(const std::vector<xml::Element>& got) {
    std::vector<std::string> out;
    for (const auto* m : named(got, "message")) out.push_back(m->child_text("body"));
    return out;
  }
};

TEST_F(SmTest, FeatureOfferedAfterAuthentication) {
  const auto& features = server_.modules().stream_features();
  bool found = false;
  for (const auto& f : features) found = found || f.is("sm", "urn:xmpp:sm:3");
  EXPECT_TRUE(found);
}

TEST_F(SmTest, EnableWithResumeGivesAnUnguessableId) {
  auto& alice = connect("alice@example.com/phone");
  const xml::Element enabled = enable(alice, true);
  EXPECT_TRUE(enabled.is("enabled", "urn:xmpp:sm:3"));
  EXPECT_EQ(enabled.attr("resume"), "true");
  EXPECT_EQ(enabled.attr("max"), "300");
  EXPECT_EQ(enabled.attr("id").size(), 32u) << "128 bits, hex";
  EXPECT_TRUE(alice.session()->sm_enabled());
}

TEST_F(SmTest, EnableWithoutResumeHasNoId) {
  auto& alice = connect("alice@example.com/phone");
  const xml::Element enabled = enable(alice, false);
  EXPECT_TRUE(enabled.is("enabled", "urn:xmpp:sm:3"));
  EXPECT_FALSE(enabled.has_attr("id"));
  EXPECT_FALSE(enabled.has_attr("resume"));
}

TEST_F(SmTest, EnableTwiceFails) {
  auto& alice = connect("alice@example.com/phone");
  enable(alice, true);
  const xml::Element again = enable(alice, true);
  EXPECT_TRUE(again.is("failed", "urn:xmpp:sm:3"));
  EXPECT_NE(again.child("unexpected-request", xmpp::ns::kStanzas), nullptr);
}

TEST_F(SmTest, EnableBeforeBindFails) {
  auto& alice = opened("alice");
  send(alice, "<enable xmlns='urn:xmpp:sm:3'/>");
  auto got = alice.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].is("failed", "urn:xmpp:sm:3"));
  EXPECT_NE(got[0].child("unexpected-request", xmpp::ns::kStanzas), nullptr);
  EXPECT_FALSE(alice.session()->closed());
}

TEST_F(SmTest, RequestWithoutStreamManagementIsAStreamError) {
  auto& alice = connect("alice@example.com/phone");
  send(alice, "<r xmlns='urn:xmpp:sm:3'/>");
  auto got = alice.take();
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got[0].name(), "error");
  EXPECT_NE(got[0].child("unsupported-stanza-type", xmpp::ns::kStreams), nullptr);
}

TEST_F(SmTest, InboundCountCoversStanzasNotNonzas) {
  auto& alice = connect("alice@example.com/phone");
  auto& bob = connect("bob@example.com/desk");
  send(bob, "<presence/>");
  enable(alice, false);
  send(alice, "<r xmlns='urn:xmpp:sm:3'/>");
  auto got = alice.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].attr("h"), "0");
  // An IQ (general path), a message to an online contact (fast path), a message to an offline
  // account (stored), a presence: four stanzas; the <r/> and <a/> between them are not counted.
  send(alice, "<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>");
  send(alice, chat_to("bob@example.com", 1));
  send(alice, "<r xmlns='urn:xmpp:sm:3'/>");
  send(alice, "<a xmlns='urn:xmpp:sm:3' h='0'/>");
  add_account("carol");
  send(alice, chat_to("carol@example.com", 2));
  EXPECT_EQ(store().offline_count("carol"), 1u) << "stored before it is counted";
  send(alice, "<presence/>");
  send(alice, "<r xmlns='urn:xmpp:sm:3'/>");
  got = alice.take();
  auto acks = named(got, "a");
  ASSERT_EQ(acks.size(), 2u);
  EXPECT_EQ(acks[0]->attr("h"), "2");
  EXPECT_EQ(acks[1]->attr("h"), "4");
}

TEST_F(SmTest, ServerRequestsAcksAndAcksDropStanzas) {
  auto& alice = connect("alice@example.com/phone");
  auto& bob = connect("bob@example.com/desk");
  enable(alice, false);
  send(alice, "<presence/>");
  alice.take();
  const std::uint64_t base = alice.session()->out_queue().unacked();
  for (int i = 1; i <= 5; ++i) send(bob, chat_to("alice@example.com/phone", i));
  auto got = alice.take();
  EXPECT_EQ(bodies(got).size(), 5u);
  EXPECT_EQ(named(got, "r").size(), 1u) << "an ack asked for after 5 stanzas";
  const auto unacked = alice.session()->out_queue().unacked();
  EXPECT_EQ(unacked, base + 5);
  send(alice, "<a xmlns='urn:xmpp:sm:3' h='" + std::to_string(unacked) + "'/>");
  EXPECT_EQ(alice.session()->out_queue().unacked(), 0u);
  EXPECT_FALSE(alice.session()->closed());
}

TEST_F(SmTest, AckTooHighEndsTheStream) {
  auto& alice = connect("alice@example.com/phone");
  auto& bob = connect("bob@example.com/desk");
  enable(alice, false);
  send(alice, "<presence/>");
  send(bob, chat_to("alice@example.com/phone", 1));
  alice.take();
  const auto sent = alice.session()->out_queue().written();
  send(alice, "<a xmlns='urn:xmpp:sm:3' h='" + std::to_string(sent + 5) + "'/>");
  auto got = alice.take();
  ASSERT_FALSE(got.empty());
  const xml::Element& err = got.back();
  EXPECT_EQ(err.name(), "error");
  EXPECT_NE(err.child("undefined-condition", xmpp::ns::kStreams), nullptr);
  const xml::Element* high = err.child("handled-count-too-high", "urn:xmpp:sm:3");
  ASSERT_NE(high, nullptr);
  EXPECT_EQ(high->attr("h"), std::to_string(sent + 5));
  EXPECT_EQ(high->attr("send-count"), std::to_string(sent));
  EXPECT_TRUE(alice.session()->closed());
}

TEST_F(SmTest, ResumeResendsUnackedStanzasInOrder) {
  auto& alice = connect("alice@example.com/phone");
  auto& bob = connect("bob@example.com/desk");
  const std::string id(enable(alice, true).attr("id"));
  send(alice, "<presence/>");
  send(alice, chat_to("bob@example.com", 100));  // inbound: presence + this message
  alice.take();
  const auto before = alice.session()->out_queue().written();
  send(bob, chat_to("alice@example.com/phone", 1));
  send(bob, chat_to("alice@example.com/phone", 2));
  EXPECT_EQ(bodies(alice.take()), (std::vector<std::string>{"hello 1", "hello 2"}));
  const SessionPtr old = alice.session();
  alice.transport().drop();
  run();
  ASSERT_TRUE(old->detached());
  send(bob, chat_to("alice@example.com/phone", 3));  // kept for the next connection
  EXPECT_EQ(server_.bound_session(*xmpp::Jid::parse("alice@example.com/phone")), old);

  auto& again = opened("alice");
  // The client saw "hello 1" only.
  send(again, "<resume xmlns='urn:xmpp:sm:3' previd='" + id + "' h='" + std::to_string(before + 1) +
                  "'/>");
  auto got = again.take();
  ASSERT_FALSE(got.empty());
  EXPECT_TRUE(got[0].is("resumed", "urn:xmpp:sm:3"));
  EXPECT_EQ(got[0].attr("previd"), id);
  EXPECT_EQ(got[0].attr("h"), "2");
  EXPECT_EQ(bodies(got), (std::vector<std::string>{"hello 2", "hello 3"}));
  EXPECT_EQ(server_.bound_session(*xmpp::Jid::parse("alice@example.com/phone")), again.session());
  EXPECT_TRUE(again.session()->bound());
  EXPECT_TRUE(old->closed());
  // Still alice's session: messages reach it, and no unavailable presence went out.
  EXPECT_TRUE(named(bob.take(), "presence").empty());
  send(bob, chat_to("alice@example.com", 4));
  EXPECT_EQ(bodies(again.take()), (std::vector<std::string>{"hello 4"}));
  // And it can be resumed again with the same id.
  again.transport().drop();
  run();
  auto& third = opened("alice");
  send(third, "<resume xmlns='urn:xmpp:sm:3' previd='" + id + "' h='" + std::to_string(before + 4) +
                  "'/>");
  got = third.take();
  ASSERT_FALSE(got.empty());
  EXPECT_TRUE(got[0].is("resumed", "urn:xmpp:sm:3"));
  EXPECT_TRUE(bodies(got).empty());
}

TEST_F(SmTest, ResumeOfAnUnknownOrForeignIdFails) {
  auto& alice = connect("alice@example.com/phone");
  const std::string id(enable(alice, true).attr("id"));
  alice.transport().drop();
  run();
  auto& bob = opened("bob");
  send(bob, "<resume xmlns='urn:xmpp:sm:3' previd='" + id + "' h='0'/>");
  auto got = bob.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].is("failed", "urn:xmpp:sm:3"));
  EXPECT_NE(got[0].child("item-not-found", xmpp::ns::kStanzas), nullptr);
  EXPECT_FALSE(bob.session()->bound());
  auto& mallory = opened("alice");
  send(mallory, "<resume xmlns='urn:xmpp:sm:3' previd='00112233445566778899aabbccddeeff' h='0'/>");
  got = mallory.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_NE(got[0].child("item-not-found", xmpp::ns::kStanzas), nullptr);
  EXPECT_FALSE(got[0].has_attr("h"));
}

TEST_F(SmTest, ExpiryStoresUnackedMessagesOffline) {
  auto& alice = connect("alice@example.com/phone");
  auto& bob = connect("bob@example.com/desk");
  const std::string id(enable(alice, true).attr("id"));
  send(alice, "<presence/>");
  alice.take();
  send(bob, chat_to("alice@example.com/phone", 1));
  send(bob, chat_to("alice@example.com/phone", 2));
  send(bob,
       "<iq to='alice@example.com/phone' type='get' id='q1'><query "
       "xmlns='jabber:iq:version'/></iq>");
  bob.take();
  const SessionPtr old = alice.session();
  alice.transport().drop();
  run();
  ASSERT_TRUE(old->detached());
  send(bob, chat_to("alice@example.com/phone", 3));
  // Within the window the session waits.
  clock_->ms += 299'000;
  EXPECT_TRUE(old->sm_tick(clock_->ms));
  run();
  EXPECT_FALSE(old->closed());
  EXPECT_EQ(store().offline_count("alice"), 0u);
  clock_->ms += 1000;
  old->sm_tick(clock_->ms);
  run();
  EXPECT_TRUE(old->closed());
  EXPECT_EQ(server_.bound_session(*xmpp::Jid::parse("alice@example.com/phone")), nullptr);
  // Never dropped: the messages are stored, the IQ request is answered with an error.
  EXPECT_EQ(store().offline_count("alice"), 3u);
  auto bob_got = bob.take();
  auto iqs = named(bob_got, "iq");
  ASSERT_EQ(iqs.size(), 1u);
  EXPECT_EQ(iqs[0]->attr("type"), "error");
  EXPECT_EQ(iqs[0]->attr("id"), "q1");
  // Resuming now fails, saying how many stanzas the session had handled (its presence).
  auto& late = opened("alice");
  send(late, "<resume xmlns='urn:xmpp:sm:3' previd='" + id + "' h='0'/>");
  auto got = late.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].is("failed", "urn:xmpp:sm:3"));
  EXPECT_NE(got[0].child("item-not-found", xmpp::ns::kStanzas), nullptr);
  EXPECT_EQ(got[0].attr("h"), "1");
  // The next login gets them from offline storage, in order.
  auto& laptop = connect("alice@example.com/laptop");
  send(laptop, "<presence/>");
  EXPECT_EQ(bodies(laptop.take()), (std::vector<std::string>{"hello 1", "hello 2", "hello 3"}));
}

TEST_F(SmTest, UnackedMessagesGoToAnotherResource) {
  auto& phone = connect("alice@example.com/phone");
  auto& laptop = connect("alice@example.com/laptop");
  auto& bob = connect("bob@example.com/desk");
  enable(phone, false);
  send(phone, "<presence/>");
  send(laptop, "<presence/>");
  phone.take();
  laptop.take();
  send(bob, chat_to("alice@example.com/phone", 1));
  EXPECT_EQ(bodies(phone.take()).size(), 1u);
  phone.transport().drop();  // not resumable: the session ends at once
  run();
  EXPECT_EQ(bodies(laptop.take()), (std::vector<std::string>{"hello 1"}));
  EXPECT_EQ(store().offline_count("alice"), 0u);
}

TEST_F(SmTest, OfflineMessagesAreDeletedOnlyWhenAcked) {
  auto& bob = connect("bob@example.com/desk");
  send(bob, chat_to("alice@example.com", 1));
  send(bob, chat_to("alice@example.com", 2));
  ASSERT_EQ(store().offline_count("alice"), 2u);
  {
    // Delivered, never acknowledged, the connection dies: still stored, and not stored twice.
    auto& phone = connect("alice@example.com/phone");
    enable(phone, false);
    send(phone, "<presence/>");
    EXPECT_EQ(bodies(phone.take()).size(), 2u);
    EXPECT_EQ(store().offline_count("alice"), 2u);
    phone.transport().drop();
    run();
    EXPECT_EQ(store().offline_count("alice"), 2u);
  }
  auto& laptop = connect("alice@example.com/laptop");
  enable(laptop, false);
  send(laptop, "<presence/>");
  EXPECT_EQ(bodies(laptop.take()).size(), 2u);
  EXPECT_EQ(store().offline_count("alice"), 2u);
  const auto n = laptop.session()->out_queue().written();
  send(laptop, "<a xmlns='urn:xmpp:sm:3' h='" + std::to_string(n) + "'/>");
  EXPECT_EQ(store().offline_count("alice"), 0u);
}

// Acknowledged means durable (store/message_log.h): a message delivered live where either side
// uses stream management is logged in flight before the sender's <a/> counts it; the record
// goes when the recipient acknowledges it, and a message never acknowledged is routed again.
TEST_F(SmTest, AMessageDeliveredLiveIsLoggedUntilItsRecipientAcks) {
  auto& alice = connect("alice@example.com/phone");
  auto& bob = connect("bob@example.com/desk");
  enable(alice, false);
  enable(bob, false);
  send(bob, "<presence/>");
  bob.take();
  send(alice, chat_to("bob@example.com/desk", 1));
  EXPECT_EQ(bodies(bob.take()).size(), 1u);
  EXPECT_EQ(server_.message_log().counts().written, 1u);
  send(alice, "<r xmlns='urn:xmpp:sm:3'/>");
  const auto got = alice.take();
  auto acks = named(got, "a");
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0]->attr("h"), "1");
  EXPECT_EQ(alice.session()->durable_h(), 1u);
  EXPECT_EQ(store().offline_count("bob"), 0u) << "in flight, not an offline message";
  const auto n = bob.session()->out_queue().written();
  send(bob, "<a xmlns='urn:xmpp:sm:3' h='" + std::to_string(n) + "'/>");
  EXPECT_EQ(store().release_in_flight(), 0u) << "nothing would come back after a crash";
  // Not acknowledged: the session's end routes it again (offline here) and lets the record go.
  send(alice, chat_to("bob@example.com/desk", 2));
  EXPECT_EQ(bodies(bob.take()).size(), 1u);
  bob.transport().drop();
  run();
  EXPECT_EQ(store().offline_count("bob"), 1u);
  EXPECT_EQ(store().release_in_flight(), 0u);
}

TEST_F(SmTest, WithoutStreamManagementNothingIsLogged) {
  auto& alice = connect("alice@example.com/phone");
  auto& bob = connect("bob@example.com/desk");
  send(bob, "<presence/>");
  bob.take();
  for (int i = 1; i <= 3; ++i) send(alice, chat_to("bob@example.com", i));
  EXPECT_EQ(bodies(bob.take()).size(), 3u);
  EXPECT_EQ(server_.message_log().counts().batches, 0u);
  EXPECT_FALSE(bob.session()->logs_messages());
}

// Without stream management on the recipient, the record goes once the message is written:
// in the batch that would have written it, so it never reaches the disk.
TEST_F(SmTest, ASenderWithStreamManagementToAClientWithoutIt) {
  auto& alice = connect("alice@example.com/phone");
  auto& bob = connect("bob@example.com/desk");
  enable(alice, false);
  send(bob, "<presence/>");
  bob.take();
  send(alice, chat_to("bob@example.com", 1));
  EXPECT_EQ(bodies(bob.take()).size(), 1u);
  send(alice, "<r xmlns='urn:xmpp:sm:3'/>");
  const auto got = alice.take();
  auto acks = named(got, "a");
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0]->attr("h"), "1");
  const auto counts = server_.message_log().counts();
  EXPECT_EQ(counts.written + counts.never_written, 1u);
  EXPECT_EQ(store().release_in_flight(), 0u);
}

TEST_F(SmTest, ResumeTakesOverAConnectionStillOpen) {
  // The server has not noticed the old connection died: the resumption drops it (XEP-0198 §5).
  auto& alice = connect("alice@example.com/phone");
  auto& bob = connect("bob@example.com/desk");
  const std::string id(enable(alice, true).attr("id"));
  send(alice, "<presence/>");
  send(bob, chat_to("alice@example.com/phone", 1));
  alice.take();
  // The old session hands its transport over and frees it: watched through ended(), not read.
  const std::shared_ptr<const bool> old_connection_ended = alice.transport().ended();
  auto& again = opened("alice");
  send(again, "<resume xmlns='urn:xmpp:sm:3' previd='" + id + "' h='0'/>");
  auto got = again.take();
  ASSERT_FALSE(got.empty());
  EXPECT_TRUE(got[0].is("resumed", "urn:xmpp:sm:3"));
  EXPECT_EQ(bodies(got), (std::vector<std::string>{"hello 1"}));
  EXPECT_TRUE(*old_connection_ended);
  EXPECT_TRUE(alice.session()->closed());
  EXPECT_EQ(server_.bound_session(*xmpp::Jid::parse("alice@example.com/phone")), again.session());
}

TEST_F(SmTest, ResumeWithAnAckTooHighEndsTheStream) {
  auto& alice = connect("alice@example.com/phone");
  auto& bob = connect("bob@example.com/desk");
  const std::string id(enable(alice, true).attr("id"));
  send(alice, "<presence/>");
  send(bob, chat_to("alice@example.com/phone", 1));
  alice.take();
  const auto sent = alice.session()->out_queue().written();  // its own presence, the message
  alice.transport().drop();
  run();
  auto& again = opened("alice");
  send(again, "<resume xmlns='urn:xmpp:sm:3' previd='" + id + "' h='7'/>");
  auto got = again.take();
  ASSERT_FALSE(got.empty());
  const xml::Element& err = got.back();
  EXPECT_EQ(err.name(), "error");
  const xml::Element* high = err.child("handled-count-too-high", "urn:xmpp:sm:3");
  ASSERT_NE(high, nullptr);
  EXPECT_EQ(high->attr("h"), "7");
  EXPECT_EQ(high->attr("send-count"), std::to_string(sent));
  EXPECT_TRUE(again.session()->closed());
  // The session ended: its unacknowledged message is stored, not lost.
  EXPECT_EQ(store().offline_count("alice"), 1u);
}

TEST_F(SmTest, ConnectionLostWithAStanzaUnhandledDetaches) {
  auto& alice = connect("alice@example.com/phone");
  const std::string id(enable(alice, true).attr("id"));
  add_account("carol");
  // Read, not handled yet (it waits for its turn in a coroutine) when the connection dies: not
  // counted, so the client sends it again after resuming.
  alice.send(chat_to("carol@example.com", 1));
  alice.transport().drop();
  run();
  EXPECT_TRUE(alice.session()->detached());
  EXPECT_FALSE(alice.session()->closed());
  EXPECT_EQ(store().offline_count("carol"), 0u);
  auto& again = opened("alice");
  send(again, "<resume xmlns='urn:xmpp:sm:3' previd='" + id + "' h='0'/>");
  auto got = again.take();
  ASSERT_FALSE(got.empty());
  EXPECT_TRUE(got[0].is("resumed", "urn:xmpp:sm:3"));
  EXPECT_EQ(got[0].attr("h"), "0");
  send(again, chat_to("carol@example.com", 1));
  send(again, "<r xmlns='urn:xmpp:sm:3'/>");
  got = again.take();
  ASSERT_EQ(named(got, "a").size(), 1u);
  EXPECT_EQ(named(got, "a")[0]->attr("h"), "1");
  EXPECT_EQ(store().offline_count("carol"), 1u);
}

// The session resumed lives on another shard: its loop is turned here by hand, so that the
// handover meets messages routed to the old session just before the directory changed.
class SmTwoShardTest : public SmTest {
 protected:
  SmTwoShardTest() { other_.io = &other_io_; }
  ~SmTwoShardTest() override {
    clients_.clear();  // before other_ goes, as sessions on it do
    for (auto& [raw, weak] : other_.sessions) {
      if (auto s = weak.lock(); s && !s->bound()) s->abort();
    }
    run_both();
  }

  // Both loops until neither has a handler ready and the store has handed every result back
  // (run() waits for the first loop to run out of work, which it does not while one of its
  // coroutines waits on the other loop).
  void run_both() {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < give_up) {
      io_.restart();
      std::size_t n = io_.poll();
      other_io_.restart();
      n += other_io_.poll();
      if (n > 0) continue;
      if (server_.db_pending() == 0) return;
      io_.restart();
      io_.run_one_for(std::chrono::milliseconds(1));
    }
    ADD_FAILURE() << "the loops did not come to rest";
  }

  void settle() override { run_both(); }

  asio::io_context other_io_;
  Shard other_;
};

TEST_F(SmTwoShardTest, ResumptionKeepsEachSendersOrder) {
  auto& alice = connect("alice@example.com/phone", &other_);
  auto& bob = connect("bob@example.com/desk");
  alice.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
  run_both();
  auto got = alice.take();
  ASSERT_EQ(got.size(), 1u);
  const std::string id(got[0].attr("id"));
  alice.send("<presence/>");
  run_both();
  bob.send(chat_to("alice@example.com/phone", 1));
  run_both();
  EXPECT_EQ(bodies(alice.take()), (std::vector<std::string>{"hello 1"}));
  const auto seen = alice.session()->out_queue().written();
  const SessionPtr old = alice.session();
  alice.transport().drop();
  run_both();
  ASSERT_TRUE(old->detached());

  auto& again = opened("alice");
  again.send("<resume xmlns='urn:xmpp:sm:3' previd='" + id + "' h='" + std::to_string(seen) +
             "'/>");
  io_.restart();
  io_.poll();  // the handover is queued on the old session's shard
  // Routed by the directory as it still is: to the old session, behind the handover.
  bob.send(chat_to("alice@example.com/phone", 2));
  io_.restart();
  io_.poll();
  // The handover runs (the directory points at the new session), "hello 2" still waits.
  const auto full = *xmpp::Jid::parse("alice@example.com/phone");
  for (int i = 0; i < 10 && server_.bound_session(full) != again.session(); ++i) {
    other_io_.restart();
    other_io_.run_one();
  }
  ASSERT_EQ(server_.bound_session(full), again.session());
  // Routed to the new session directly, while "hello 2" is still on its way through the old.
  bob.send(chat_to("alice@example.com/phone", 3));
  io_.restart();
  io_.poll();
  run_both();
  got = again.take();
  ASSERT_FALSE(got.empty());
  EXPECT_TRUE(got[0].is("resumed", "urn:xmpp:sm:3"));
  EXPECT_EQ(bodies(got), (std::vector<std::string>{"hello 2", "hello 3"}));
}

// A small cap, so the test handles 150 stanzas, not 10,050 (the harness's loop must come to rest
// within its 10 s on a loaded machine under ASan).
Config with_small_unacked_cap() {
  Config cfg;
  cfg.archive_enabled = false;  // as ModuleTest::default_config()
  cfg.domain = "example.com";
  cfg.sm_max_unacked = 100;
  cfg.offline_limit_per_sender = 1'000;  // every stanza comes from one sender here
  return cfg;
}

class SmCapTest : public SmTest {
 protected:
  SmCapTest() : SmTest(with_small_unacked_cap()) {}
};

TEST_F(SmCapTest, PastTheUnackedCapTheSessionEndsAndNothingIsDropped) {
  auto& alice = connect("alice@example.com/phone");
  auto& bob = connect("bob@example.com/desk");
  enable(alice, true);
  send(alice, "<presence/>");
  alice.take();
  const SessionPtr old = alice.session();
  alice.transport().drop();
  run();
  ASSERT_TRUE(old->detached());
  // 100 unacknowledged stanzas is the cap here; these are 150.
  std::string burst;
  for (int i = 0; i < 150; ++i) burst += chat_to("alice@example.com/phone", i);
  send(bob, burst);
  EXPECT_TRUE(old->closed());
  EXPECT_EQ(server_.bound_session(*xmpp::Jid::parse("alice@example.com/phone")), nullptr);
  EXPECT_EQ(store().offline_count("alice"), 150u) << "every one stored, none dropped";
  EXPECT_TRUE(named(bob.take(), "message").empty()) << "none bounced";
}

}  // namespace
}  // namespace kabar::server
