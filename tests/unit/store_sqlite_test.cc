#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "store/archive_index.h"
#include "store/store.h"
#include "store_test_util.h"

namespace kabar::store {
namespace {

namespace fs = std::filesystem;
using namespace kabar::store::testing;

// Runs one statement on the database file directly, as an outside tool would.
std::string raw_query(const fs::path& db_file, const std::string& sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(db_file.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db);
  std::string out;
  if (sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_text(stmt, 0)) {
    out = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return out;
}

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "kabar-store-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    dir_ = root_ / "data";
    store_ = open_sqlite_store(dir_);
  }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  void reopen() {
    store_.reset();
    store_ = open_sqlite_store(dir_);
  }
  fs::path db_file() const { return dir_ / "kabar.db"; }

  fs::path root_;
  fs::path dir_;
  std::unique_ptr<Store> store_;
};

// Opening.

TEST_F(SqliteStoreTest, CreatesPrivateDataDirAndDatabase) {
  ASSERT_TRUE(fs::is_directory(dir_));
  struct stat st {};
  ASSERT_EQ(::stat(dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_TRUE(fs::exists(db_file()));
}

TEST_F(SqliteStoreTest, CreatesMissingParents) {
  auto nested = root_ / "a" / "b" / "c";
  auto s = open_sqlite_store(nested);
  EXPECT_TRUE(fs::exists(nested / "kabar.db"));
}

TEST_F(SqliteStoreTest, WalModeIsOn) {
  EXPECT_EQ(raw_query(db_file(), "PRAGMA journal_mode"), "wal");
}

TEST_F(SqliteStoreTest, MigrationsAreIdempotentOnReopen) {
  int v = store_->schema_version();
  EXPECT_GE(v, 1);
  EXPECT_EQ(raw_query(db_file(), "PRAGMA user_version"), std::to_string(v));
  reopen();
  EXPECT_EQ(store_->schema_version(), v);
  reopen();
  EXPECT_EQ(store_->schema_version(), v);
}

TEST_F(SqliteStoreTest, MigratesAnOfflineQueueOfSchemaOne) {
  // A data directory written by a kabar of schema 1, with two messages queued (the first holds
  // a two-byte character: sizes are kept in bytes).
  store_.reset();
  fs::remove_all(dir_);
  fs::create_directories(dir_);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_file().c_str(), &db), SQLITE_OK);
  const char* v1 =
      "CREATE TABLE offline (id INTEGER PRIMARY KEY AUTOINCREMENT, username TEXT NOT NULL, "
      "stanza TEXT NOT NULL, stamp_ms INTEGER NOT NULL);"
      "CREATE INDEX offline_by_user ON offline (username, id);"
      "INSERT INTO offline (username, stanza, stamp_ms) VALUES ('alice', '<m>\xc3\xa9</m>', 5);"
      "INSERT INTO offline (username, stanza, stamp_ms) VALUES ('alice', '<m/>', 6);"
      "PRAGMA user_version = 1;";
  ASSERT_EQ(sqlite3_exec(db, v1, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);
  store_ = open_sqlite_store(dir_);
  EXPECT_GE(store_->schema_version(), 3);
  OfflineSummary sum = store_->offline_summary("alice");
  EXPECT_EQ(sum.count, 2u);
  EXPECT_EQ(sum.bytes, 9u + 4u);
  EXPECT_EQ(sum.oldest_ms, 5);
  ASSERT_EQ(sum.senders.size(), 1u);
  EXPECT_EQ(sum.senders[0].first, "");  // not known for rows stored before
  OfflineLimits limits;
  limits.bytes = 14;
  EXPECT_EQ(store_->push_offline_from("alice", "bob@example.com", "<x/>", 7, limits).full,
            OfflinePush::Full::kBytes);
}

TEST_F(SqliteStoreTest, ArchivesOfSchemaSevenMoveToChunks) {
  // An archive of schema 7 (one row per message, three indexes): at the first open its rows
  // become archive_msg rows, its ids go to the index of ids, and its chunks are written.
  store_.reset();
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(db_file().c_str(), &db), SQLITE_OK);
    ASSERT_EQ(
        sqlite3_exec(db,
                     "DROP TABLE archive_msg; DROP TABLE archive_id; DROP TABLE archive_chunk; "
                     "DROP TABLE archive_meta; DROP TABLE in_flight; "
                     "CREATE TABLE archive (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                     "username TEXT NOT NULL, id TEXT NOT NULL, with_jid TEXT NOT NULL, "
                     "with_resource TEXT NOT NULL, stamp_ms INTEGER NOT NULL, "
                     "stanza TEXT NOT NULL, pos INTEGER NOT NULL DEFAULT 0, "
                     "wpos INTEGER NOT NULL DEFAULT 0); "
                     "CREATE UNIQUE INDEX archive_by_id ON archive (username, id); "
                     "PRAGMA user_version = 7;",
                     nullptr, nullptr, nullptr),
        SQLITE_OK)
        << sqlite3_errmsg(db);
    std::string sql = "BEGIN;";
    for (int i = 1; i <= 600; ++i) {
      sql +=
          "INSERT INTO archive (username, id, with_jid, with_resource, stamp_ms, stanza) "
          "VALUES ('" +
          std::string(i % 3 == 0 ? "bob" : "alice") + "', 'old" + std::to_string(i) + "', '" +
          (i % 5 == 0 ? "carol@example.com" : "dave@example.com") + "', 'r', " +
          std::to_string(1000 + i) + ", '<message>" + std::to_string(i) + "</message>');";
    }
    sql += "DELETE FROM archive WHERE seq > 598; COMMIT;";  // the AUTOINCREMENT mark stays 600
    ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  store_ = open_sqlite_store(dir_);
  EXPECT_EQ(store_->schema_version(), 9);
  EXPECT_EQ(raw_query(db_file(), "SELECT count(*) FROM sqlite_master WHERE name = 'archive'"), "0");
  EXPECT_NE(raw_query(db_file(), "SELECT count(*) FROM archive_chunk"), "0");
  EXPECT_EQ(store_->archive_last_seq(), 600);
  EXPECT_EQ(store_->archive_count("alice", {}), 399u);
  EXPECT_EQ(store_->archive_count("bob", {}), 199u);
  ArchiveFilter carol;
  carol.with = "carol@example.com";
  EXPECT_EQ(store_->archive_count("alice", carol), 80u);  // i % 5 == 0 and i % 3 != 0, i <= 598
  EXPECT_EQ(store_->archive_seq("alice", "old10"), 10);
  EXPECT_FALSE(store_->archive_seq("bob", "old10").has_value());
  auto newest = store_->archive_query("alice", {}, 2, true);
  ASSERT_EQ(newest.size(), 2u);
  EXPECT_EQ(newest[0].id, "old596");
  EXPECT_EQ(newest[1].stanza, "<message>598</message>");
  // New messages come after the old ones, with seqs past the old mark.
  std::vector<ArchivedMessage> more(1);
  more[0].username = "alice";
  more[0].id = "new";
  more[0].with = "carol@example.com";
  more[0].stanza = "<message/>";
  store_->archive_append(more);
  EXPECT_GT(more[0].seq, 600);
  EXPECT_EQ(store_->archive_query("alice", {}, 1, true).at(0).id, "new");
  EXPECT_EQ(store_->archive_count("alice", carol), 81u);
}

TEST_F(SqliteStoreTest, MessagesInFlightOfSchemaEightMoveToTheirTable) {
  // Until schema 8 a message in flight was an offline row with a negative stamp (-1 - stamp).
  ASSERT_TRUE(store_->push_offline("bob", "<message>first</message>", 5, 100));
  store_.reset();
  raw_query(db_file(),
            "INSERT INTO offline (username, stanza, stamp_ms, sender, bytes) "
            "VALUES ('bob', '<message>flying</message>', -1 - 7, 'carol@localhost', 25)");
  raw_query(db_file(), "DROP TABLE in_flight");
  raw_query(db_file(), "PRAGMA user_version = 8");
  store_ = open_sqlite_store(dir_);
  EXPECT_EQ(store_->schema_version(), 9);
  EXPECT_EQ(store_->offline_count("bob"), 1u);
  EXPECT_EQ(store_->release_in_flight(), 1u);
  const auto bob = store_->offline_messages("bob");
  ASSERT_EQ(bob.size(), 2u);
  EXPECT_EQ(bob[1].stanza, "<message>flying</message>");
  EXPECT_EQ(bob[1].stamp_ms, 7);
  EXPECT_EQ(bob[1].id, 2);
  // New messages in flight take ids after it, from the offline queue's sequence.
  std::vector<InFlightMessage> added{
      InFlightMessage{"bob", "carol@localhost", "<message>next</message>", 9, false, 0}};
  store_->log_in_flight(added, {});
  EXPECT_EQ(added[0].id, 3);
  ASSERT_TRUE(store_->push_offline("bob", "<message>after</message>", 10, 100));
  EXPECT_EQ(store_->release_in_flight(), 1u);
  const auto all = store_->offline_messages("bob");
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[2].stanza, "<message>next</message>");  // its place: before "after"
  EXPECT_EQ(all[3].stanza, "<message>after</message>");
}

std::vector<ArchivedMessage> numbered(const std::string& user, int from, int n) {
  std::vector<ArchivedMessage> out;
  for (int i = from; i < from + n; ++i) {
    ArchivedMessage m;
    m.username = user;
    m.id = "m" + std::to_string(i);
    m.with = i % 4 == 0 ? "carol@example.com" : "dave@example.com";
    m.with_resource = i % 2 == 0 ? "phone" : "pc";
    m.stamp_ms = 1'000'000 + i * 10;
    m.stanza = "<message>" + std::to_string(i) + "</message>";
    out.push_back(std::move(m));
  }
  return out;
}

// Every filter's count agrees with its query, and each page with the messages in order, over an
// archive in chunks of every kind: full ones, ones joined at checkpoints (each reopen), and the
// tail in memory.
TEST_F(SqliteStoreTest, ArchiveChunksTailsAndCheckpointsAgree) {
  int next = 0;
  for (const int n : {300, 1, 7, 255, 256, 2, 600, 3}) {
    auto batch = numbered("alice", next, n);
    store_->archive_append(batch);
    next += n;
    if (n % 2 == 1) reopen();  // a checkpoint: the tail joins the last chunk
  }
  auto bob = numbered("bob", 0, 10);
  store_->archive_append(bob);
  const auto all = store_->archive_query("alice", {}, 100'000, false);
  ASSERT_EQ(all.size(), static_cast<std::size_t>(next));
  for (int i = 0; i < next; ++i) {
    ASSERT_EQ(all[static_cast<std::size_t>(i)].id, "m" + std::to_string(i));
  }
  EXPECT_EQ(store_->archive_seq("alice", "m700"), all[700].seq);
  for (const std::size_t a : {std::size_t{0}, std::size_t{255}, std::size_t{700}}) {
    for (const std::size_t b : {std::size_t{256}, std::size_t{1000}, all.size() - 1}) {
      for (const char* with : {"", "carol@example.com"}) {
        ArchiveFilter f;
        f.after_seq = all[a].seq;
        f.before_seq = all[b].seq;
        f.with = with;
        f.start_ms = 1'000'000 + 100 * 10;
        const auto page = store_->archive_query("alice", f, 100'000, false);
        EXPECT_EQ(store_->archive_count("alice", f), page.size()) << a << " " << b << " " << with;
        const auto last = store_->archive_query("alice", f, 5, true);
        if (page.size() >= 5) {
          ASSERT_EQ(last.size(), 5u);
          EXPECT_EQ(last.back().seq, page.back().seq);
          EXPECT_EQ(last.front().seq, page[page.size() - 5].seq);
        }
      }
    }
  }
  ArchiveFilter phone;
  phone.with = "carol@example.com";
  phone.with_resource = "phone";
  EXPECT_EQ(store_->archive_count("alice", phone), static_cast<std::size_t>((next + 3) / 4));
  // Expiry through the middle of a chunk, then the whole archive of one account.
  EXPECT_EQ(store_->archive_expire(1'000'000 + 400 * 10, 100'000), 400u);
  EXPECT_EQ(store_->archive_count("alice", {}), static_cast<std::size_t>(next - 400));
  EXPECT_EQ(store_->archive_query("alice", {}, 1, false).at(0).id, "m400");
  EXPECT_EQ(store_->archive_count("bob", {}), 10u);
  reopen();
  EXPECT_EQ(store_->archive_count("alice", {}), static_cast<std::size_t>(next - 400));
  EXPECT_EQ(store_->archive_clear("alice"), static_cast<std::size_t>(next - 400));
  EXPECT_EQ(raw_query(db_file(), "SELECT count(*) FROM archive_msg WHERE username = 'alice'"), "0");
  EXPECT_EQ(store_->archive_count("bob", {}), 10u);
}

// A crash loses no index entry: the tails are read back from the messages at the next open.
TEST_F(SqliteStoreTest, ArchiveTailsComeBackAfterACrash) {
  store_.reset();
  // A child process owns the archive, writes a chunk and a tail of 49, and dies without closing
  // it (no checkpoint), as a killed kabard would.
  const std::int64_t last = testing::in_a_dying_child([this] {
    auto s = open_sqlite_store(dir_);
    auto batch = numbered("alice", 0, 300);
    s->archive_append(batch);
    auto more = numbered("alice", 300, 5);
    s->archive_append(more);
    return more.back().seq;
  });
  ASSERT_GT(last, 0);
  store_ = open_sqlite_store(dir_);
  EXPECT_EQ(store_->archive_count("alice", {}), 305u);
  const auto newest = store_->archive_query("alice", {}, 3, true);
  ASSERT_EQ(newest.size(), 3u);
  EXPECT_EQ(newest.back().id, "m304");
  EXPECT_GE(store_->archive_last_seq(), last);
  auto after = numbered("alice", 305, 1);
  store_->archive_append(after);
  EXPECT_GT(after[0].seq, last);
  EXPECT_EQ(store_->archive_count("alice", {}), 306u);
}

// A second store on the same file (kabarctl beside kabard) sees the owner's tails as the
// database has them at each query, never twice, and writes no archive of its own.
TEST_F(SqliteStoreTest, ASecondStoreReadsTheOwnersArchive) {
  auto batch = numbered("alice", 0, 10);
  store_->archive_append(batch);
  auto guest = open_sqlite_store(dir_);
  EXPECT_EQ(guest->archive_count("alice", {}), 10u);
  auto more = numbered("alice", 10, 300);  // the owner's tail becomes a chunk
  store_->archive_append(more);
  EXPECT_EQ(guest->archive_count("alice", {}), 310u);
  EXPECT_EQ(guest->archive_query("alice", {}, 1000, false).size(), 310u);
  EXPECT_EQ(guest->archive_seq("alice", "m5"), batch[5].seq);
  auto refused = numbered("alice", 310, 1);
  EXPECT_THROW(guest->archive_append(refused), StoreError);
  guest.reset();  // writes no checkpoint of the owner's tail
  auto last = numbered("alice", 310, 3);
  store_->archive_append(last);
  EXPECT_EQ(store_->archive_count("alice", {}), 313u);
  reopen();
  EXPECT_EQ(store_->archive_count("alice", {}), 313u);
  EXPECT_EQ(store_->archive_query("alice", {}, 1000, false).size(), 313u);
}

// A store opened as a reader (kabarctl) never takes the archive, even with no owner open: a
// kabard that opens the file meanwhile owns it.
TEST_F(SqliteStoreTest, AReaderNeverTakesTheArchive) {
  store_.reset();
  auto reader = open_sqlite_store(dir_, /*archive_owner=*/false);
  auto refused = numbered("alice", 0, 1);
  EXPECT_THROW(reader->archive_append(refused), StoreError);
  store_ = open_sqlite_store(dir_);
  auto batch = numbered("alice", 0, 3);
  store_->archive_append(batch);
  EXPECT_EQ(reader->archive_count("alice", {}), 3u);
  EXPECT_EQ(reader->archive_clear("bob"), 0u);
}

// Ids of archive_id()'s form are found from the seq they name; the random part must match.
TEST_F(SqliteStoreTest, ArchiveIdsThatNameTheirSeq) {
  std::vector<ArchivedMessage> batch(1);
  batch[0].username = "alice";
  batch[0].seq = 1'700'000'000'000'000;
  batch[0].id = archive_id(batch[0].seq, 0xabcdef123456);
  batch[0].with = "bob@example.com";
  batch[0].stanza = "<message/>";
  store_->archive_append(batch);
  EXPECT_EQ(batch[0].seq, 1'700'000'000'000'000);
  EXPECT_EQ(raw_query(db_file(), "SELECT count(*) FROM archive_id"), "0");
  EXPECT_EQ(store_->archive_seq("alice", batch[0].id), batch[0].seq);
  EXPECT_FALSE(store_->archive_seq("bob", batch[0].id).has_value());
  EXPECT_FALSE(store_->archive_seq("alice", archive_id(batch[0].seq, 0xabcdef123457)));
  EXPECT_FALSE(store_->archive_seq("alice", archive_id(batch[0].seq + 1, 0xabcdef123456)));
}

TEST_F(SqliteStoreTest, RefusesNewerSchema) {
  store_.reset();
  raw_query(db_file(), "PRAGMA user_version = 9999");
  EXPECT_THROW(open_sqlite_store(dir_), StoreError);
}

TEST_F(SqliteStoreTest, RefusesFileThatIsNotADatabase) {
  store_.reset();
  fs::remove(db_file());
  fs::remove(dir_ / "kabar.db-wal");
  fs::remove(dir_ / "kabar.db-shm");
  std::ofstream(db_file()) << std::string(4096, 'x');
  EXPECT_THROW(open_sqlite_store(dir_), StoreError);
}

TEST_F(SqliteStoreTest, RefusesDataDirThatIsAFile) {
  auto file = root_ / "file";
  std::ofstream(file) << "x";
  EXPECT_THROW(open_sqlite_store(file), StoreError);
  EXPECT_THROW(open_sqlite_store(file / "below"), StoreError);
  EXPECT_THROW(open_sqlite_store(""), StoreError);
}

TEST_F(SqliteStoreTest, DataPersistsAcrossReopen) {
  ASSERT_TRUE(store_->create_account(make_account("alice")));
  store_->put_roster_item("alice", item("bob@example.com", {"Friends"}));
  ASSERT_TRUE(store_->push_offline("alice", "<message/>", 42, 10));
  store_->set_vcard("alice", "<vCard xmlns='vcard-temp'/>");
  store_->set_last_activity("alice", {123, "gone"});
  std::int64_t ver = store_->roster_version("alice");
  reopen();
  ASSERT_TRUE(store_->account("alice"));
  ASSERT_EQ(store_->roster("alice").size(), 1u);
  EXPECT_EQ(store_->roster("alice")[0].groups, std::vector<std::string>{"Friends"});
  EXPECT_EQ(store_->roster_version("alice"), ver);
  EXPECT_EQ(store_->offline_count("alice"), 1u);
  EXPECT_EQ(store_->vcard("alice"), "<vCard xmlns='vcard-temp'/>");
  EXPECT_EQ(store_->last_activity("alice")->status, "gone");
}

TEST_F(SqliteStoreTest, TwoConnectionsShareTheFile) {
  // kabarctl writes while kabard has the database open.
  auto other = open_sqlite_store(dir_);
  ASSERT_TRUE(other->create_account(make_account("carol")));
  EXPECT_TRUE(store_->account("carol"));
  EXPECT_FALSE(store_->create_account(make_account("carol")));
}

// What only the SQLite schema shows: the group rows go with the account.
TEST_F(SqliteStoreTest, DeleteAccountRemovesRosterGroupRows) {
  ASSERT_TRUE(store_->create_account(make_account("alice")));
  store_->put_roster_item("alice", item("x@example.com", {"G1", "G2"}));
  ASSERT_TRUE(store_->delete_account("alice"));
  EXPECT_EQ(raw_query(db_file(), "SELECT count(*) FROM roster_groups WHERE username = 'alice'"),
            "0");
}

}  // namespace
}  // namespace kabar::store
