#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

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

TEST_F(SqliteStoreTest, ArchivesOfSchemaSixGetTheirPlaces) {
  // Rows archived before schema 7 get their places in their accounts' archives (and among
  // their correspondents') from the order they were written: counts come from those.
  std::vector<ArchivedMessage> batch;
  for (int i = 0; i < 6; ++i) {
    ArchivedMessage m;
    m.username = i % 2 == 0 ? "alice" : "bob";
    m.id = "id" + std::to_string(i);
    m.with = i < 4 ? "carol@example.com" : "dave@example.com";
    m.stamp_ms = 1000 + i;
    m.stanza = "<message/>";
    batch.push_back(std::move(m));
  }
  store_->archive_append(batch);
  store_.reset();
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(db_file().c_str(), &db), SQLITE_OK);
    // Back to schema 6: no places.
    ASSERT_EQ(sqlite3_exec(db,
                           "ALTER TABLE archive DROP COLUMN pos; "
                           "ALTER TABLE archive DROP COLUMN wpos; PRAGMA user_version = 6;",
                           nullptr, nullptr, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  store_ = open_sqlite_store(dir_);
  EXPECT_EQ(raw_query(db_file(),
                      "SELECT group_concat(pos || '/' || wpos, ' ') FROM "
                      "(SELECT pos, wpos FROM archive WHERE username = 'alice' "
                      "ORDER BY seq)"),
            "1/1 2/2 3/1");
  ArchiveFilter f;
  f.with = "carol@example.com";
  EXPECT_EQ(store_->archive_count("alice", f), 2u);
  EXPECT_EQ(store_->archive_count("bob", {}), 3u);
  std::vector<ArchivedMessage> more(1);
  more[0].username = "alice";
  more[0].id = "id9";
  more[0].with = "dave@example.com";
  more[0].stanza = "<message/>";
  store_->archive_append(more);
  EXPECT_EQ(raw_query(db_file(), "SELECT pos || '/' || wpos FROM archive WHERE id = 'id9'"), "4/2");
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
