// Messages in flight (OfflineStore::log_in_flight(), release_in_flight()) against both backends,
// and the group commit of store::MessageLog over them.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "store/archive_index.h"
#include "store/message_log.h"
#include "store/store.h"
#include "store_test_util.h"

namespace kabar::store {
namespace {

namespace fs = std::filesystem;

enum class Backend { kSqlite, kMemory };

class InFlightTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (GetParam() == Backend::kSqlite) {
      std::string tmpl = (fs::temp_directory_path() / "kabar-store-log-XXXXXX").string();
      ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
      root_ = tmpl;
    }
    open();
  }
  void TearDown() override {
    store_.reset();
    if (!root_.empty()) {
      std::error_code ec;
      fs::remove_all(root_, ec);
    }
  }
  void open() {
    store_ =
        GetParam() == Backend::kSqlite ? open_sqlite_store(root_ / "data") : make_memory_store();
  }
  // SQLite: what is in flight survives closing the file (as after a crash).
  void reopen() {
    if (GetParam() == Backend::kSqlite) {
      store_.reset();
      open();
    }
  }
  static InFlightMessage msg(std::string user, std::string body, std::int64_t stamp) {
    return InFlightMessage{std::move(user), "carol@localhost", "<message>" + body + "</message>",
                           stamp};
  }

  fs::path root_;
  std::unique_ptr<Store> store_;
};

TEST_P(InFlightTest, InvisibleUntilReleased) {
  ASSERT_TRUE(store_->push_offline("bob", "<message>stored</message>", 5, 100));
  std::vector<InFlightMessage> added{msg("bob", "a", 10), msg("bob", "b", 11),
                                     msg("alice", "c", 12)};
  store_->log_in_flight(added, {});
  EXPECT_GT(added[0].id, 0);
  EXPECT_LT(added[0].id, added[1].id);
  // Not offline messages: no count, page, summary, or share of the limits.
  EXPECT_EQ(store_->offline_count("bob"), 1u);
  EXPECT_EQ(store_->offline_page("bob", 0, 10, 1 << 20).size(), 1u);
  EXPECT_EQ(store_->offline_summary("bob").count, 1u);
  EXPECT_EQ(store_->offline_count("alice"), 0u);
  EXPECT_TRUE(store_->push_offline("bob", "<message>second</message>", 6, 2));
  reopen();
  EXPECT_EQ(store_->release_in_flight(), 3u);
  EXPECT_EQ(store_->release_in_flight(), 0u);
  auto bob = store_->offline_messages("bob");
  ASSERT_EQ(bob.size(), 4u);
  // In id order, with their own stamps.
  EXPECT_EQ(bob[0].stanza, "<message>stored</message>");
  EXPECT_EQ(bob[1].stanza, "<message>a</message>");
  EXPECT_EQ(bob[1].stamp_ms, 10);
  EXPECT_EQ(bob[1].sender, "carol@localhost");
  EXPECT_EQ(bob[2].stanza, "<message>b</message>");
  EXPECT_EQ(bob[3].stanza, "<message>second</message>");
  EXPECT_EQ(store_->offline_count("alice"), 1u);
}

TEST_P(InFlightTest, RemovedOrMadeOffline) {
  std::vector<InFlightMessage> added{msg("bob", "a", 10), msg("bob", "b", 11), msg("bob", "c", 12)};
  store_->log_in_flight(added, {});
  std::vector<InFlightMessage> none;
  // Another account's id changes nothing.
  store_->log_in_flight(none, {InFlightChange{"alice", added[0].id, false}});
  store_->log_in_flight(
      none, {InFlightChange{"bob", added[0].id, false}, InFlightChange{"bob", added[1].id, true}});
  auto bob = store_->offline_messages("bob");
  ASSERT_EQ(bob.size(), 1u);
  EXPECT_EQ(bob[0].stanza, "<message>b</message>");
  EXPECT_EQ(bob[0].stamp_ms, 11);
  // An offline message delivered is removed by its id the same way.
  store_->log_in_flight(none, {InFlightChange{"bob", bob[0].id, false}});
  EXPECT_EQ(store_->offline_count("bob"), 0u);
  EXPECT_EQ(store_->release_in_flight(), 1u);  // "c"
  // Written straight as an offline message.
  std::vector<InFlightMessage> direct{msg("bob", "d", 13)};
  direct[0].offline = true;
  store_->log_in_flight(direct, {});
  EXPECT_EQ(store_->offline_count("bob"), 2u);
  EXPECT_EQ(store_->release_in_flight(), 0u);
}

TEST_P(InFlightTest, GoesWithTheAccount) {
  std::vector<InFlightMessage> added{msg("bob", "a", 10)};
  store_->log_in_flight(added, {});
  store_->delete_account("bob");
  EXPECT_EQ(store_->release_in_flight(), 0u);
}

// MessageLog: what is queued between two runs goes in one transaction.
class MessageLogTest : public InFlightTest {
 protected:
  void SetUp() override {
    InFlightTest::SetUp();
    log_ = std::make_unique<MessageLog>([this] { ++scheduled_; },
                                        [](std::string stanza, std::int64_t stamp) {
                                          return stanza + "@" + std::to_string(stamp);
                                        });
  }
  std::shared_ptr<LogRecord> rec(const std::string& user) {
    auto r = std::make_shared<LogRecord>();
    r->username = user;
    return r;
  }
  std::unique_ptr<MessageLog> log_;
  int scheduled_ = 0;
};

TEST_P(MessageLogTest, GroupCommit) {
  std::vector<bool> done;
  auto a = rec("bob");
  auto b = rec("bob");
  log_->add(a, "alice@localhost", "<message>a</message>", 1, [&](bool ok) { done.push_back(ok); });
  log_->add(b, "alice@localhost", "<message>b</message>", 2, [&](bool ok) { done.push_back(ok); });
  EXPECT_EQ(scheduled_, 1);  // one run for the whole batch
  EXPECT_TRUE(done.empty());
  EXPECT_FALSE(log_->run(*store_));
  EXPECT_EQ(done, (std::vector<bool>{true, true}));
  EXPECT_EQ(log_->counts().batches, 1u);
  EXPECT_EQ(log_->counts().written, 2u);
  EXPECT_GT(a->id, 0);
  // a delivered, b not: b is an offline message, with what prepare made of it.
  log_->remove(a);
  log_->release(b);
  log_->remove(b);  // settled already: nothing more happens to it
  EXPECT_EQ(scheduled_, 2);
  EXPECT_FALSE(log_->run(*store_));
  auto bob = store_->offline_messages("bob");
  ASSERT_EQ(bob.size(), 1u);
  EXPECT_EQ(bob[0].stanza, "<message>b</message>@2");
  EXPECT_EQ(store_->release_in_flight(), 0u);
}

// Archive records wait for a lazy run (large commits). A barrier with a waiter asks for a run at
// once, and that run takes the archive records too; a run for messages in flight leaves them.
TEST_P(MessageLogTest, ArchiveRecordsWaitForALazyRunUnlessAReaderWaits) {
  int lazy = 0;
  MessageLog log([this] { ++scheduled_; }, [](std::string stanza, std::int64_t) { return stanza; },
                 [&] { ++lazy; });
  auto archived = [](const std::string& id) {
    ArchivedMessage m;
    m.username = "bob";
    m.id = id;
    m.with = "alice@localhost";
    m.stanza = "<message/>";
    return m;
  };
  log.archive(archived("a1"));
  log.archive(archived("a2"));
  EXPECT_EQ(lazy, 1);  // one lazy run for both
  EXPECT_EQ(scheduled_, 0);
  // A message in flight, and a barrier without a waiter: their run leaves the archive records.
  bool in_flight = false;
  log.add(rec("carol"), "alice@localhost", "<message>c</message>", 1,
          [&](bool ok) { in_flight = ok; });
  bool gathered = false;
  log.barrier([&](bool ok) { gathered = ok; }, false);
  EXPECT_EQ(scheduled_, 1);
  EXPECT_FALSE(log.run(*store_));
  EXPECT_TRUE(in_flight);
  EXPECT_TRUE(gathered);
  EXPECT_EQ(store_->archive_count("bob", {}), 0u);
  EXPECT_EQ(log.counts().archived, 0u);
  log.archive(archived("a2b"));
  EXPECT_EQ(lazy, 1);  // the lazy run asked for is still to come
  bool committed = false;
  log.barrier([&](bool ok) { committed = ok; });
  EXPECT_EQ(scheduled_, 2);  // the barrier wants it now
  log.archive(archived("a3"));
  EXPECT_EQ(lazy, 1);  // a run is coming anyway
  EXPECT_FALSE(log.run(*store_));
  EXPECT_TRUE(committed);
  EXPECT_EQ(store_->archive_count("bob", {}), 4u);
  EXPECT_EQ(log.counts().archived, 4u);
  // The lazy run comes later and finds nothing: no batch is counted.
  EXPECT_FALSE(log.run(*store_, true));
  EXPECT_EQ(log.counts().batches, 2u);
  log.archive(archived("a4"));
  EXPECT_EQ(lazy, 2);
  EXPECT_FALSE(log.run(*store_, true));  // the lazy run takes it
  EXPECT_EQ(store_->archive_count("bob", {}), 5u);
  // A gather ends when it grows too large: a run is asked for at once, and takes the records.
  for (int i = 0; i < 20000 && scheduled_ == 2; ++i) log.archive(archived("b" + std::to_string(i)));
  EXPECT_EQ(scheduled_, 3);
  EXPECT_EQ(lazy, 3);
  EXPECT_FALSE(log.run(*store_));
  EXPECT_EQ(store_->archive_count("bob", {}), 5u + MessageLog::kArchiveGatherMax);
}

// archive_new() hands out the records a run wrote, emptied, their buffers kept (no allocation
// per record on the shards); a record whose stanza needed a large buffer is not kept. What the
// store gets is each record as filled in, with seqs in the order given.
TEST_P(MessageLogTest, ArchiveNewReusesWrittenRecordsEmptied) {
  MessageLog log([this] { ++scheduled_; }, [](std::string stanza, std::int64_t) { return stanza; },
                 [] {});
  const std::string big(MessageLog::kRecycledStanzaMax + 1, 'x');
  for (int i = 0; i < 3; ++i) {
    log.archive_new([&](ArchivedMessage& a, std::int64_t seq) {
      a.username = "bob";
      a.seq = seq;
      a.id = archive_id(seq, 7);
      a.with = "alice@localhost";
      a.with_resource = "phone";
      a.stamp_ms = 1000 + i;
      a.stanza = i == 2 ? "<message><body>" + big + "</body></message>"
                        : "<message>" + std::to_string(i) + "</message>";
    });
  }
  EXPECT_FALSE(log.run(*store_, true));
  EXPECT_EQ(store_->archive_count("bob", {}), 3u);
  int reused = 0;
  for (int i = 0; i < 3; ++i) {
    log.archive_new([&](ArchivedMessage& a, std::int64_t seq) {
      EXPECT_TRUE(a.username.empty() && a.id.empty() && a.with.empty() && a.with_resource.empty() &&
                  a.stanza.empty());
      EXPECT_EQ(a.seq, 0);
      EXPECT_EQ(a.stamp_ms, 0);
      if (a.stanza.capacity() > std::string().capacity()) ++reused;  // past the inline buffer
      EXPECT_LE(a.stanza.capacity(), MessageLog::kRecycledStanzaMax);
      a.username = "carol";
      a.seq = seq;
      a.id = archive_id(seq, 9);
      a.with = "bob@localhost";
      a.stamp_ms = 2000;
      a.stanza = "<message>again</message>";
    });
  }
  EXPECT_EQ(reused, 2);  // the large one was not kept
  EXPECT_FALSE(log.run(*store_, true));
  const auto got = store_->archive_query("carol", {}, 10, false);
  ASSERT_EQ(got.size(), 3u);
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].with, "bob@localhost");
    EXPECT_EQ(got[i].with_resource, "");
    EXPECT_EQ(got[i].stanza, "<message>again</message>");
    EXPECT_EQ(archive_id_seq(got[i].id), got[i].seq);
    if (i > 0) {
      EXPECT_GT(got[i].seq, got[i - 1].seq);
    }
  }
  EXPECT_EQ(store_->archive_count("bob", {}), 3u);
  // A fill that throws leaves nothing queued.
  EXPECT_THROW(log.archive_new([](ArchivedMessage& a, std::int64_t) {
    a.username = "dave";
    throw std::runtime_error("no");
  }),
               std::runtime_error);
  EXPECT_FALSE(log.run(*store_, true));
  EXPECT_EQ(store_->archive_count("dave", {}), 0u);
}

// A barrier has a waiter (an archive query): with `schedule_now` its run skips the gather
// `schedule` waits for, also when a gathering run is scheduled already.
TEST_P(MessageLogTest, ABarrierRunsNow) {
  int now = 0;
  MessageLog log([this] { ++scheduled_; }, [](std::string stanza, std::int64_t) { return stanza; },
                 {}, [&] { ++now; });
  auto a = rec("bob");
  log.add(a, "alice@localhost", "<message>a</message>", 1, {});
  EXPECT_EQ(scheduled_, 1);
  bool committed = false;
  log.barrier([&](bool ok) { committed = ok; });
  EXPECT_EQ(now, 1);
  EXPECT_EQ(scheduled_, 1);
  EXPECT_FALSE(log.run(*store_));
  EXPECT_TRUE(committed);
  EXPECT_FALSE(log.run(*store_));  // the gathering run finds nothing
  EXPECT_EQ(log.counts().batches, 1u);
  log.close();
  bool refused = true;
  log.barrier([&](bool ok) { refused = !ok; });
  EXPECT_TRUE(refused);
  EXPECT_EQ(now, 1);
}

TEST_P(MessageLogTest, RemovedBeforeItsBatchRunsIsNeverWritten) {
  bool committed = false;
  auto a = rec("bob");
  auto c = rec("bob");
  log_->add(a, "", "<message>a</message>", 1, [&](bool ok) { committed = ok; });
  log_->add(c, "", "<message>c</message>", 3, {});
  log_->remove(a);   // acknowledged before the store's thread came to it
  log_->release(c);  // failed before: written straight as an offline message
  bool barrier = false;
  log_->barrier([&](bool ok) { barrier = ok; });
  EXPECT_FALSE(log_->run(*store_));
  EXPECT_TRUE(committed);  // its sender may count it: it was delivered
  EXPECT_TRUE(barrier);
  EXPECT_EQ(log_->counts().never_written, 1u);
  EXPECT_EQ(log_->counts().written, 1u);
  auto bob = store_->offline_messages("bob");
  ASSERT_EQ(bob.size(), 1u);
  EXPECT_EQ(bob[0].stanza, "<message>c</message>@3");
  EXPECT_EQ(store_->release_in_flight(), 0u);
}

TEST_P(MessageLogTest, ClosedTakesNothing) {
  log_->close();
  bool called = false;
  bool ok = true;
  log_->barrier([&](bool r) {
    called = true;
    ok = r;
  });
  EXPECT_TRUE(called);
  EXPECT_FALSE(ok);
  EXPECT_EQ(scheduled_, 0);
}

// SQLite's owner keeps its messages in flight in a journal beside the file
// (store/inflight_journal.h).
class SqliteInFlightTest : public InFlightTest {};

// A crash (a child that dies without closing its store) loses nothing: what was in flight is
// an offline message at the next open, in order among those stored meanwhile.
TEST_P(SqliteInFlightTest, NothingInFlightIsLostInACrash) {
  store_.reset();
  const bool written = testing::in_a_dying_child([this] {
    auto s = open_sqlite_store(root_ / "data");
    if (!s->push_offline("bob", "<message>stored</message>", 5, 100)) return false;
    std::vector<InFlightMessage> added{msg("bob", "a", 10), msg("bob", "b", 11),
                                       msg("bob", "c", 12)};
    s->log_in_flight(added, {});
    std::vector<InFlightMessage> none;
    s->log_in_flight(none, {InFlightChange{"bob", added[1].id, false}});  // b delivered
    return s->push_offline("bob", "<message>later</message>", 13, 100).has_value();
  });
  ASSERT_TRUE(written);
  open();
  EXPECT_EQ(store_->release_in_flight(), 2u);
  std::vector<std::string> stanzas;
  for (const auto& m : store_->offline_messages("bob")) stanzas.push_back(m.stanza);
  EXPECT_EQ(stanzas,
            (std::vector<std::string>{"<message>stored</message>", "<message>a</message>",
                                      "<message>c</message>", "<message>later</message>"}));
  // New ids follow every one given before the crash.
  std::vector<InFlightMessage> more{msg("bob", "d", 14)};
  store_->log_in_flight(more, {});
  EXPECT_GT(more[0].id, store_->offline_messages("bob").back().id);
  EXPECT_EQ(store_->release_in_flight(), 1u);
  EXPECT_EQ(store_->offline_messages("bob").back().stanza, "<message>d</message>");
}

// Only the store's owner (kabard) writes messages in flight; another (kabarctl) cannot.
TEST_P(SqliteInFlightTest, OnlyTheOwnerLogs) {
  auto second = open_sqlite_store(root_ / "data", false);
  std::vector<InFlightMessage> seconds{msg("bob", "b", 11)};
  EXPECT_THROW(second->log_in_flight(seconds, {}), StoreError);
  EXPECT_THROW(second->release_in_flight(), StoreError);
  second.reset();
  // An account's deletion takes its messages in flight from the journal too.
  std::vector<InFlightMessage> added{msg("carol", "c", 12), msg("bob", "a", 13)};
  store_->log_in_flight(added, {});
  store_->delete_account("carol");
  reopen();
  EXPECT_EQ(store_->release_in_flight(), 1u);
  EXPECT_EQ(store_->offline_count("bob"), 1u);
  EXPECT_EQ(store_->offline_count("carol"), 0u);
}

INSTANTIATE_TEST_SUITE_P(Sqlite, SqliteInFlightTest, ::testing::Values(Backend::kSqlite));
INSTANTIATE_TEST_SUITE_P(Backends, InFlightTest,
                         ::testing::Values(Backend::kSqlite, Backend::kMemory));
INSTANTIATE_TEST_SUITE_P(Backends, MessageLogTest,
                         ::testing::Values(Backend::kSqlite, Backend::kMemory));

}  // namespace
}  // namespace kabar::store
