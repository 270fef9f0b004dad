// The SQLite backend of Store: one file, data_dir/kabar.db, in WAL mode.
//
// Threading: the connection is opened with SQLITE_OPEN_NOMUTEX (SQLite's multi-thread mode), so
// SQLite takes no per-connection lock. That is safe because a SqliteStore is used by one thread at
// a time (the server serializes calls on its storage thread); callers that share one object
// between threads must serialize themselves. Other processes (kabarctl while kabard runs) may use
// the same file: WAL lets readers proceed, every write takes the write lock up front
// (BEGIN IMMEDIATE), and busy_timeout makes a writer wait for the other instead of failing.
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <unordered_map>
#include <utility>

#include "store/archive_index.h"
#include "store/inflight_journal.h"
#include "store/store.h"

namespace kabar::store {
namespace {

constexpr int kBusyTimeoutMs = 5000;

#define KABAR_PEP_NODE_SELECT                                                             \
  "SELECT node, access_model, max_items, persist_items, notify_retract, notify_delete, "  \
  "deliver_notifications, deliver_payloads, send_last, title, affiliations, subscribers " \
  "FROM pep_node"

// Schema migrations, applied in order at open, each in its own transaction together with the
// PRAGMA user_version that records it. Never edit a released entry: append a new one.
struct Migration {
  int version;
  const char* sql;
};

constexpr Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE accounts (
  username TEXT PRIMARY KEY NOT NULL,
  sha1_salt BLOB NOT NULL,
  sha1_iterations INTEGER NOT NULL,
  sha1_stored_key BLOB NOT NULL,
  sha1_server_key BLOB NOT NULL,
  sha256_salt BLOB NOT NULL,
  sha256_iterations INTEGER NOT NULL,
  sha256_stored_key BLOB NOT NULL,
  sha256_server_key BLOB NOT NULL,
  created INTEGER NOT NULL
);

CREATE TABLE roster (
  username TEXT NOT NULL,
  contact TEXT NOT NULL,
  name TEXT NOT NULL DEFAULT '',
  sub TEXT NOT NULL CHECK (sub IN ('none', 'to', 'from', 'both')),
  pending_out INTEGER NOT NULL DEFAULT 0,
  pending_in INTEGER NOT NULL DEFAULT 0,
  preapproved INTEGER NOT NULL DEFAULT 0,
  pending_in_stanza TEXT NOT NULL DEFAULT '',
  in_roster INTEGER NOT NULL DEFAULT 1,
  PRIMARY KEY (username, contact)
);

-- A contact's groups in the order the client gave them.
CREATE TABLE roster_groups (
  username TEXT NOT NULL,
  contact TEXT NOT NULL,
  position INTEGER NOT NULL,
  name TEXT NOT NULL,
  PRIMARY KEY (username, contact, position),
  FOREIGN KEY (username, contact) REFERENCES roster (username, contact) ON DELETE CASCADE
);

-- XEP-0237 roster versions. Every change takes the next value of one global sequence, so a
-- version is never handed out twice, even to an account deleted and registered again under the
-- same name (whose clients may still cache the old roster and its version).
CREATE TABLE roster_version (
  username TEXT PRIMARY KEY NOT NULL,
  version INTEGER NOT NULL
);
CREATE TABLE roster_version_seq (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  last INTEGER NOT NULL
);
INSERT INTO roster_version_seq (id, last) VALUES (1, 0);

-- AUTOINCREMENT: ids are never reused, so a late delete_offline cannot hit a newer message.
CREATE TABLE offline (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  username TEXT NOT NULL,
  stanza TEXT NOT NULL,
  stamp_ms INTEGER NOT NULL
);
CREATE INDEX offline_by_user ON offline (username, id);

CREATE TABLE vcard (
  username TEXT PRIMARY KEY NOT NULL,
  vcard TEXT NOT NULL
);

CREATE TABLE last_activity (
  username TEXT PRIMARY KEY NOT NULL,
  logout_unix INTEGER NOT NULL,
  status TEXT NOT NULL
);
)sql"},
    // Offline queue limits per recipient in bytes and per sender: each message's size and sender
    // are kept, so the checks need no stanza parsed or read. Rows stored before have no known
    // sender ('').
    {2, R"sql(
ALTER TABLE offline ADD COLUMN sender TEXT NOT NULL DEFAULT '';
ALTER TABLE offline ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
UPDATE offline SET bytes = length(CAST(stanza AS BLOB));
CREATE INDEX offline_by_sender ON offline (username, sender);
)sql"},
    // Blocklists (XEP-0191): one row per blocked JID.
    {3, R"sql(
CREATE TABLE blocklist (
  username TEXT NOT NULL,
  jid TEXT NOT NULL,
  PRIMARY KEY (username, jid)
) WITHOUT ROWID;
)sql"},
    // Personal eventing (XEP-0163) and private XML storage (XEP-0049). A node's affiliations
    // are lines "JID<TAB>affiliation", its explicit subscribers lines "JID" (a prepared JID has
    // no control characters). Items are ordered by seq, newest highest.
    {4, R"sql(
CREATE TABLE pep_node (
  username TEXT NOT NULL,
  node TEXT NOT NULL,
  access_model TEXT NOT NULL,
  max_items INTEGER NOT NULL,
  persist_items INTEGER NOT NULL,
  notify_retract INTEGER NOT NULL,
  notify_delete INTEGER NOT NULL,
  deliver_notifications INTEGER NOT NULL,
  deliver_payloads INTEGER NOT NULL,
  send_last TEXT NOT NULL,
  title TEXT NOT NULL,
  affiliations TEXT NOT NULL,
  subscribers TEXT NOT NULL,
  PRIMARY KEY (username, node)
) WITHOUT ROWID;
CREATE TABLE pep_item (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  username TEXT NOT NULL,
  node TEXT NOT NULL,
  item_id TEXT NOT NULL,
  payload TEXT NOT NULL,
  publisher TEXT NOT NULL,
  stamp_ms INTEGER NOT NULL,
  UNIQUE (username, node, item_id)
);
CREATE INDEX pep_item_by_node ON pep_item (username, node, seq);
CREATE TABLE private_xml (
  username TEXT NOT NULL,
  name TEXT NOT NULL,
  xmlns TEXT NOT NULL,
  xml TEXT NOT NULL,
  PRIMARY KEY (username, name, xmlns)
) WITHOUT ROWID;
)sql"},
    // XEP-0313 message archives. AUTOINCREMENT: a seq is never handed out twice (§3.2: the
    // UIDs of deleted messages are not reused, and the UID's order is the seq's).
    {5, R"sql(
CREATE TABLE archive (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  username TEXT NOT NULL,
  id TEXT NOT NULL,
  with_jid TEXT NOT NULL,
  with_resource TEXT NOT NULL,
  stamp_ms INTEGER NOT NULL,
  stanza TEXT NOT NULL
);
CREATE UNIQUE INDEX archive_by_id ON archive (username, id);
CREATE INDEX archive_by_user ON archive (username, seq);
CREATE INDEX archive_by_with ON archive (username, with_jid, seq);
CREATE TABLE archive_prefs (
  username TEXT PRIMARY KEY NOT NULL,
  default_mode TEXT NOT NULL,
  always TEXT NOT NULL,
  never TEXT NOT NULL
) WITHOUT ROWID;
)sql"},
    // XEP-0357 push notification registrations: one row per account, push service and node;
    // `options` is the serialized publish-options form, or ''.
    {6, R"sql(
CREATE TABLE push_registration (
  username TEXT NOT NULL,
  jid TEXT NOT NULL,
  node TEXT NOT NULL,
  options TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  PRIMARY KEY (username, jid, node)
) WITHOUT ROWID;
)sql"},
    // Each archived message's place in its account's archive (pos: 1, 2, 3...) and among the
    // messages with its correspondent (wpos): an archive loses only its oldest part (XEP-0313
    // §3.2: no holes), so a count of a range is the difference of two places, two lookups
    // instead of a walk over the range (RSM count and index on every page).
    {7, R"sql(
ALTER TABLE archive ADD COLUMN pos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE archive ADD COLUMN wpos INTEGER NOT NULL DEFAULT 0;
UPDATE archive SET pos = r.pos, wpos = r.wpos FROM (
  SELECT seq,
         ROW_NUMBER() OVER (PARTITION BY username ORDER BY seq) AS pos,
         ROW_NUMBER() OVER (PARTITION BY username, with_jid ORDER BY seq) AS wpos
  FROM archive) AS r
WHERE archive.seq = r.seq;
)sql"},
    // The archive without an index per message (store/archive_index.h): the messages in the
    // order written (seq, given by the server), each account's index in chunks, the ids that do
    // not name their seq (those archived before) in an index of their own. The chunks of the
    // messages kept from before are written at the first open (no row is 'indexed' yet).
    {8, R"sql(
CREATE TABLE archive_msg (
  seq INTEGER PRIMARY KEY,
  username TEXT NOT NULL,
  id TEXT NOT NULL,
  with_jid TEXT NOT NULL,
  with_resource TEXT NOT NULL,
  stamp_ms INTEGER NOT NULL,
  stanza TEXT NOT NULL
);
INSERT INTO archive_msg (seq, username, id, with_jid, with_resource, stamp_ms, stanza)
  SELECT seq, username, id, with_jid, with_resource, stamp_ms, stanza FROM archive ORDER BY seq;
CREATE TABLE archive_id (
  username TEXT NOT NULL,
  id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  PRIMARY KEY (username, id)
) WITHOUT ROWID;
INSERT INTO archive_id (username, id, seq) SELECT username, id, seq FROM archive;
CREATE INDEX archive_id_by_seq ON archive_id (seq);
CREATE TABLE archive_chunk (
  username TEXT NOT NULL,
  last_seq INTEGER NOT NULL,
  first_seq INTEGER NOT NULL,
  n INTEGER NOT NULL,
  min_stamp INTEGER NOT NULL,
  max_stamp INTEGER NOT NULL,
  withs BLOB NOT NULL,
  entries BLOB NOT NULL,
  PRIMARY KEY (username, last_seq)
) WITHOUT ROWID;
CREATE INDEX archive_chunk_by_first ON archive_chunk (first_seq);
CREATE TABLE archive_meta (
  name TEXT PRIMARY KEY NOT NULL,
  value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO archive_meta (name, value)
  SELECT 'last_seq', COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'archive'), 0);
INSERT INTO archive_meta (name, value) VALUES ('indexed', 0);
DROP TABLE archive;
)sql"},
    // Messages in flight in a table of their own, with no index but their id (log_in_flight()).
    // Those of schema 8 (offline rows with a negative stamp) move there.
    {9, R"sql(
CREATE TABLE in_flight (
  id INTEGER PRIMARY KEY,
  username TEXT NOT NULL,
  stanza TEXT NOT NULL,
  stamp_ms INTEGER NOT NULL,
  sender TEXT NOT NULL,
  bytes INTEGER NOT NULL
);
INSERT INTO in_flight (id, username, stanza, stamp_ms, sender, bytes)
  SELECT id, username, stanza, -1 - stamp_ms, sender, bytes FROM offline WHERE stamp_ms < 0;
DELETE FROM offline WHERE stamp_ms < 0;
)sql"},
};

constexpr int kLatestSchema = kMigrations[std::size(kMigrations) - 1].version;

[[noreturn]] void fail(sqlite3* db, std::string_view what) {
  throw StoreError(std::string("sqlite: ") + std::string(what) + ": " +
                   (db ? sqlite3_errmsg(db) : "out of memory"));
}

std::string_view subscription_text(xmpp::Subscription s) {
  switch (s) {
    case xmpp::Subscription::kNone:
      return "none";
    case xmpp::Subscription::kTo:
      return "to";
    case xmpp::Subscription::kFrom:
      return "from";
    case xmpp::Subscription::kBoth:
      return "both";
  }
  return "none";
}

xmpp::Subscription subscription_from_text(std::string_view s) {
  if (s == "to") return xmpp::Subscription::kTo;
  if (s == "from") return xmpp::Subscription::kFrom;
  if (s == "both") return xmpp::Subscription::kBoth;
  if (s == "none") return xmpp::Subscription::kNone;
  throw StoreError("sqlite: corrupt roster row: subscription '" + std::string(s) + "'");
}

// One use of a cached prepared statement: binds, steps, reads columns, and resets the statement on
// destruction so it can be reused (and holds no read lock past its scope).
class Query {
 public:
  Query(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;
  ~Query() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

  Query& bind(int i, std::string_view text) {
    // A null data pointer would bind SQL NULL; an empty view means the empty string.
    check(sqlite3_bind_text(stmt_, i, text.data() ? text.data() : "", static_cast<int>(text.size()),
                            SQLITE_TRANSIENT));
    return *this;
  }
  // `text` must stay as it is until the query ends (no copy is made).
  Query& bind_static(int i, std::string_view text) {
    check(sqlite3_bind_text(stmt_, i, text.data() ? text.data() : "", static_cast<int>(text.size()),
                            SQLITE_STATIC));
    return *this;
  }
  Query& bind(int i, std::int64_t v) {
    check(sqlite3_bind_int64(stmt_, i, v));
    return *this;
  }
  Query& bind(int i, bool v) { return bind(i, std::int64_t{v ? 1 : 0}); }
  Query& bind_blob(int i, std::string_view bytes) {
    if (bytes.empty()) {
      check(sqlite3_bind_zeroblob(stmt_, i, 0));  // empty, not NULL
    } else {
      check(sqlite3_bind_blob(stmt_, i, bytes.data(), static_cast<int>(bytes.size()),
                              SQLITE_TRANSIENT));
    }
    return *this;
  }

  // True when a row is available; false when the statement is done.
  bool step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail(db_, sqlite3_sql(stmt_));
  }
  void run() {
    while (step()) {
    }
  }

  std::int64_t int64(int col) const { return sqlite3_column_int64(stmt_, col); }
  std::string text(int col) const {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col)))
             : std::string();
  }
  // Valid until the next step() or the end of the query.
  std::string_view view(int col) const {
    auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, col));
    return p ? std::string_view(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col)))
             : std::string_view();
  }
  std::string blob(int col) const {
    auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, col));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col)))
             : std::string();
  }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) fail(db_, "bind");
  }

  sqlite3* db_;
  sqlite3_stmt* stmt_;
};

class SqliteStore final : public Store {
 public:
  SqliteStore(const std::filesystem::path& file, bool archive_owner) {
    int rc =
        sqlite3_open_v2(file.c_str(), &db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
      sqlite3_close_v2(db_);
      db_ = nullptr;
      throw StoreError("sqlite: cannot open " + file.string() + ": " + msg);
    }
    try {
      sqlite3_extended_result_codes(db_, 1);
      sqlite3_busy_timeout(db_, kBusyTimeoutMs);
      exec("PRAGMA foreign_keys = ON");
      if (pragma_text("PRAGMA journal_mode = WAL") != "wal") {
        throw StoreError("sqlite: " + file.string() + ": cannot switch to WAL journal mode");
      }
      exec("PRAGMA synchronous = NORMAL");
      // The archive writes every message twice, in group commits that touch a page per active
      // account: pages read back from the file, and checkpoints that copy a page to the database
      // for each of its versions, were a third of the store thread's time at 4,000 msg/s. Reads
      // come from a map of the file instead of a pread each, the page cache holds the hot
      // indexes of some thousand accounts (SQLite's default is 2 MiB), and the WAL is
      // checkpointed every 10,000 pages (40 MiB) instead of 1,000, so that a page rewritten by
      // many commits is copied once. 13.5k -> 17.3k messages per CPU-second (bench/profile's
      // load, docs/PERFORMANCE.md). The WAL file is cut back to 64 MiB after a checkpoint.
      exec("PRAGMA mmap_size = 268435456");
      exec("PRAGMA cache_size = -65536");
      exec("PRAGMA wal_autocheckpoint = 10000");
      exec("PRAGMA journal_size_limit = 67108864");
      migrate();
      // The archive's tails live in one process's memory: the first store opened on a file as
      // their owner (kabard) holds a lock on a file beside it and owns them. Any other (kabarctl,
      // which never asks to own them) reads the tails from the database at each archive query
      // instead, and writes none.
      if (archive_owner) {
        owner_fd_ =
            ::open((file.string() + "-archive.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        archive_owner_ = owner_fd_ >= 0 && ::flock(owner_fd_, LOCK_EX | LOCK_NB) == 0;
      }
      // The owner keeps its messages in flight in a journal beside the file (inflight_journal.h).
      if (archive_owner_) {
        journal_ = std::make_unique<InFlightJournal>(file.string() + "-in-flight");
        // Past the journal's ids and the offline sequence (which the in_flight table's rows moved
        // past them).
        last_offline_id_ = journal_->max_id();
        last_offline_id_ = next_offline_id() - 1;
      }
      load_archive_index();
    } catch (...) {
      close();
      throw;
    }
  }

  ~SqliteStore() override {
    try {
      if (db_ && archive_owner_) archive_checkpoint();  // else the next open reads them back
    } catch (const StoreError&) {
    }
    close();
  }

  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  // Accounts.

  bool create_account(const Account& a) override {
    Transaction tx(*this);
    bool created;
    {
      Query q = query(
          "INSERT INTO accounts (username, sha1_salt, sha1_iterations, sha1_stored_key, "
          "sha1_server_key, sha256_salt, sha256_iterations, sha256_stored_key, sha256_server_key, "
          "created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
          "ON CONFLICT (username) DO NOTHING");
      q.bind(1, a.username);
      bind_credentials(q, 2, a.sha1);
      bind_credentials(q, 6, a.sha256);
      q.bind(10, a.created_unix);
      q.run();
      created = sqlite3_changes(db_) == 1;
    }
    tx.commit();
    return created;
  }

  std::optional<Account> account(std::string_view username) override {
    Query q = query(
        "SELECT sha1_salt, sha1_iterations, sha1_stored_key, sha1_server_key, sha256_salt, "
        "sha256_iterations, sha256_stored_key, sha256_server_key, created "
        "FROM accounts WHERE username = ?1");
    q.bind(1, username);
    if (!q.step()) return std::nullopt;
    Account a;
    a.username = std::string(username);
    a.sha1 = read_credentials(q, 0);
    a.sha256 = read_credentials(q, 4);
    a.created_unix = q.int64(8);
    return a;
  }

  bool set_credentials(const Account& a) override {
    Transaction tx(*this);
    bool updated;
    {
      Query q = query(
          "UPDATE accounts SET sha1_salt = ?2, sha1_iterations = ?3, sha1_stored_key = ?4, "
          "sha1_server_key = ?5, sha256_salt = ?6, sha256_iterations = ?7, "
          "sha256_stored_key = ?8, sha256_server_key = ?9 WHERE username = ?1");
      q.bind(1, a.username);
      bind_credentials(q, 2, a.sha1);
      bind_credentials(q, 6, a.sha256);
      q.run();
      updated = sqlite3_changes(db_) == 1;
    }
    tx.commit();
    return updated;
  }

  bool delete_account(std::string_view username) override {
    Transaction tx(*this);
    bool existed;
    {
      Query q = query("DELETE FROM accounts WHERE username = ?1");
      q.bind(1, username).run();
      existed = sqlite3_changes(db_) == 1;
    }
    // Also sweeps rows left without an account, so the call always leaves nothing behind.
    for (const char* sql :
         {"DELETE FROM roster_groups WHERE username = ?1", "DELETE FROM roster WHERE username = ?1",
          "DELETE FROM roster_version WHERE username = ?1",
          "DELETE FROM offline WHERE username = ?1", "DELETE FROM in_flight WHERE username = ?1",
          "DELETE FROM vcard WHERE username = ?1", "DELETE FROM last_activity WHERE username = ?1",
          "DELETE FROM blocklist WHERE username = ?1", "DELETE FROM pep_node WHERE username = ?1",
          "DELETE FROM pep_item WHERE username = ?1", "DELETE FROM private_xml WHERE username = ?1",
          "DELETE FROM archive_prefs WHERE username = ?1",
          "DELETE FROM push_registration WHERE username = ?1"}) {
      Query q = query(sql);
      q.bind(1, username).run();
    }
    clear_archive(username);
    tx.commit();
    if (journal_) journal_->append({}, journal_->ids_of(username));
    forget_tail(username);
    return existed;
  }

  std::vector<std::string> list_accounts() override {
    // BINARY collation: the same order as std::string's operator<.
    Query q = query("SELECT username FROM accounts ORDER BY username");
    std::vector<std::string> names;
    while (q.step()) names.push_back(q.text(0));
    return names;
  }

  // Rosters.

  std::vector<RosterItem> roster(std::string_view username) override {
    std::vector<RosterItem> items;
    std::unordered_map<std::string, std::size_t> index;
    {
      Query q = query(
          "SELECT contact, name, sub, pending_out, pending_in, preapproved, pending_in_stanza, "
          "in_roster FROM roster WHERE username = ?1 ORDER BY contact");
      q.bind(1, username);
      while (q.step()) {
        items.push_back(read_roster_item(q));
        index.emplace(items.back().jid, items.size() - 1);
      }
    }
    Query g = query(
        "SELECT contact, name FROM roster_groups WHERE username = ?1 ORDER BY contact, position");
    g.bind(1, username);
    while (g.step()) {
      auto it = index.find(g.text(0));
      if (it != index.end()) items[it->second].groups.push_back(g.text(1));
    }
    return items;
  }

  std::optional<RosterItem> roster_item(std::string_view username,
                                        std::string_view contact) override {
    std::optional<RosterItem> item;
    {
      Query q = query(
          "SELECT contact, name, sub, pending_out, pending_in, preapproved, pending_in_stanza, "
          "in_roster FROM roster WHERE username = ?1 AND contact = ?2");
      q.bind(1, username).bind(2, contact);
      if (!q.step()) return std::nullopt;
      item = read_roster_item(q);
    }
    Query g = query(
        "SELECT name FROM roster_groups WHERE username = ?1 AND contact = ?2 ORDER BY position");
    g.bind(1, username).bind(2, contact);
    while (g.step()) item->groups.push_back(g.text(0));
    return item;
  }

  std::int64_t put_roster_item(std::string_view username, const RosterItem& item) override {
    Transaction tx(*this);
    {
      Query q = query(
          "INSERT INTO roster (username, contact, name, sub, pending_out, pending_in, "
          "preapproved, pending_in_stanza, in_roster) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
          "ON CONFLICT (username, contact) DO UPDATE SET name = excluded.name, "
          "sub = excluded.sub, pending_out = excluded.pending_out, "
          "pending_in = excluded.pending_in, preapproved = excluded.preapproved, "
          "pending_in_stanza = excluded.pending_in_stanza, in_roster = excluded.in_roster");
      q.bind(1, username)
          .bind(2, item.jid)
          .bind(3, item.name)
          .bind(4, subscription_text(item.state.sub))
          .bind(5, item.state.pending_out)
          .bind(6, item.state.pending_in)
          .bind(7, item.state.preapproved)
          .bind(8, item.pending_in_stanza)
          .bind(9, item.in_roster);
      q.run();
    }
    {
      Query q = query("DELETE FROM roster_groups WHERE username = ?1 AND contact = ?2");
      q.bind(1, username).bind(2, item.jid).run();
    }
    // RFC 6121 §2.1.2.2: a group name appears once per item; keep the first of any duplicates.
    std::vector<std::string_view> seen;
    std::int64_t position = 0;
    for (const std::string& group : item.groups) {
      if (std::find(seen.begin(), seen.end(), group) != seen.end()) continue;
      seen.push_back(group);
      Query q = query(
          "INSERT INTO roster_groups (username, contact, position, name) VALUES (?1, ?2, ?3, ?4)");
      q.bind(1, username).bind(2, item.jid).bind(3, position++).bind(4, group).run();
    }
    std::int64_t version = bump_roster_version(username);
    tx.commit();
    return version;
  }

  std::optional<std::int64_t> remove_roster_item(std::string_view username,
                                                 std::string_view contact) override {
    Transaction tx(*this);
    {
      Query q = query("DELETE FROM roster_groups WHERE username = ?1 AND contact = ?2");
      q.bind(1, username).bind(2, contact).run();
    }
    {
      Query q = query("DELETE FROM roster WHERE username = ?1 AND contact = ?2");
      q.bind(1, username).bind(2, contact).run();
      if (sqlite3_changes(db_) == 0) return std::nullopt;  // tx rolls back
    }
    std::int64_t version = bump_roster_version(username);
    tx.commit();
    return version;
  }

  std::int64_t roster_version(std::string_view username) override {
    Query q = query("SELECT version FROM roster_version WHERE username = ?1");
    q.bind(1, username);
    return q.step() ? q.int64(0) : 0;
  }

  // Offline messages.

  std::size_t offline_count(std::string_view username) override {
    Query q = query("SELECT count(*) FROM offline WHERE username = ?1 AND stamp_ms >= 0");
    q.bind(1, username);
    q.step();
    return static_cast<std::size_t>(q.int64(0));
  }

  OfflinePush push_offline_from(std::string_view username, std::string_view sender,
                                std::string_view stanza, std::int64_t stamp_ms,
                                const OfflineLimits& limits) override {
    // The checks and the insert run inside one write transaction (BEGIN IMMEDIATE): no other
    // writer can slip a message in between, so the limits hold.
    OfflinePush r;
    Transaction tx(*this);
    std::size_t count = 0;
    std::size_t bytes = 0;
    {
      Query q = query(
          "SELECT count(*), coalesce(sum(bytes), 0) FROM offline WHERE username = ?1 "
          "AND stamp_ms >= 0");
      q.bind(1, username);
      q.step();
      count = static_cast<std::size_t>(q.int64(0));
      bytes = static_cast<std::size_t>(q.int64(1));
    }
    if (count >= limits.messages) {
      r.full = OfflinePush::Full::kMessages;
      return r;
    }
    if (stanza.size() > limits.bytes || bytes > limits.bytes - stanza.size()) {
      r.full = OfflinePush::Full::kBytes;
      return r;
    }
    if (limits.per_sender != SIZE_MAX) {
      Query q = query(
          "SELECT count(*) FROM offline WHERE username = ?1 AND sender = ?2 "
          "AND stamp_ms >= 0");
      q.bind(1, username).bind(2, sender);
      q.step();
      if (static_cast<std::size_t>(q.int64(0)) >= limits.per_sender) {
        r.full = OfflinePush::Full::kSender;
        return r;
      }
    }
    // The id follows the journal's too (its messages in flight take ids from the same run, and
    // keep them when they become offline messages).
    const std::int64_t id = next_offline_id();
    insert_offline(id, username, stanza, stamp_ms, sender, false);
    tx.commit();
    r.id = id;
    last_offline_id_ = id;
    return r;
  }

  std::vector<OfflineMessage> offline_messages(std::string_view username) override {
    Query q = query(
        "SELECT id, stanza, stamp_ms, sender FROM offline WHERE username = ?1 AND stamp_ms >= 0 "
        "ORDER BY id");
    q.bind(1, username);
    std::vector<OfflineMessage> out;
    while (q.step()) {
      out.push_back(OfflineMessage{q.int64(0), q.text(1), q.int64(2), q.text(3)});
    }
    return out;
  }

  std::vector<OfflineMessage> offline_page(std::string_view username, std::int64_t after_id,
                                           std::size_t max_count, std::size_t max_bytes) override {
    std::vector<OfflineMessage> out;
    if (max_count == 0) return out;
    const auto max = static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max());
    Query q = query(
        "SELECT id, stanza, stamp_ms, sender FROM offline WHERE username = ?1 AND id > ?2 "
        "AND stamp_ms >= 0 ORDER BY id LIMIT ?3");
    q.bind(1, username)
        .bind(2, after_id)
        .bind(3, static_cast<std::int64_t>(std::min(max_count, max)));
    std::size_t bytes = 0;
    // Rows are read one at a time and the reading stops at the byte bound: a page never holds
    // more than one message past it.
    while ((out.empty() || bytes < max_bytes) && q.step()) {
      out.push_back(OfflineMessage{q.int64(0), q.text(1), q.int64(2), q.text(3)});
      bytes += out.back().stanza.size();
    }
    return out;
  }

  OfflineSummary offline_summary(std::string_view username) override {
    OfflineSummary sum;
    {
      Query q = query(
          "SELECT count(*), coalesce(sum(bytes), 0), coalesce(min(stamp_ms), 0), "
          "coalesce(max(stamp_ms), 0) FROM offline WHERE username = ?1 AND stamp_ms >= 0");
      q.bind(1, username);
      q.step();
      sum.count = static_cast<std::size_t>(q.int64(0));
      sum.bytes = static_cast<std::size_t>(q.int64(1));
      sum.oldest_ms = q.int64(2);
      sum.newest_ms = q.int64(3);
    }
    Query q = query(
        "SELECT sender, count(*) AS n FROM offline WHERE username = ?1 AND stamp_ms >= 0 "
        "GROUP BY sender "
        "ORDER BY n DESC, sender");
    q.bind(1, username);
    while (q.step()) sum.senders.emplace_back(q.text(0), static_cast<std::size_t>(q.int64(1)));
    return sum;
  }

  void delete_offline(std::string_view username, const std::vector<std::int64_t>& ids) override {
    if (ids.empty()) return;
    Transaction tx(*this);
    for (std::int64_t id : ids) {
      Query q = query("DELETE FROM offline WHERE username = ?1 AND id = ?2");
      q.bind(1, username).bind(2, id).run();
    }
    tx.commit();
  }

  std::size_t clear_offline(std::string_view username) override {
    Query q = query("DELETE FROM offline WHERE username = ?1");
    q.bind(1, username).run();
    return static_cast<std::size_t>(sqlite3_changes(db_));
  }

  // The next id of an offline message or a message in flight: past the offline table's
  // AUTOINCREMENT sequence and every id the journal gave (an explicit id moves the sequence).
  std::int64_t next_offline_id() {
    std::int64_t seq = 0;
    {
      Query q = query("SELECT seq FROM sqlite_sequence WHERE name = 'offline'");
      if (q.step()) seq = q.int64(0);
    }
    return std::max(seq, last_offline_id_) + 1;
  }

  // Messages in flight, in the owner's journal (inflight_journal.h): a batch is one write()
  // there, where rows of a table cost a SQLite commit every few milliseconds. Their ids come
  // from the offline queue's run of ids, so a message that becomes an offline message keeps its
  // id, and with it its place in the queue among the messages stored offline meanwhile.
  void log_in_flight(std::vector<InFlightMessage>& added,
                     const std::vector<InFlightChange>& changed) override {
    if (added.empty() && changed.empty()) return;
    InFlightJournal& journal = owned_journal();
    // What SQLite takes (messages that failed before they were written, offline messages
    // delivered, messages in flight that failed) commits first; then the journal is written. A
    // crash in between leaves a message both offline and in flight, with one id: released at
    // the next start, it is not stored twice.
    std::vector<JournalEntry> entries;
    std::vector<std::int64_t> settled;
    std::vector<bool> journaled;  // per change: the message is live in the journal
    journaled.reserve(changed.size());
    bool rows = false;
    for (const InFlightMessage& m : added) rows = rows || m.offline;
    for (const InFlightChange& c : changed) {
      journaled.push_back(journal.live(c.id, c.username));
      rows = rows || c.to_offline || !journaled.back();
    }
    std::optional<Transaction> tx;
    if (rows) tx.emplace(*this);
    std::int64_t id = rows ? next_offline_id() - 1 : last_offline_id_;
    entries.reserve(added.size());
    for (InFlightMessage& m : added) {
      m.id = ++id;
      if (m.offline) {
        insert_offline(m.id, m.username, m.stanza, m.stamp_ms, m.sender);
      } else {
        entries.push_back(JournalEntry{m.id, m.stamp_ms, m.username, m.sender, m.stanza});
      }
    }
    for (std::size_t i = 0; i < changed.size(); ++i) {
      const InFlightChange& c = changed[i];
      if (journaled[i]) {
        if (c.to_offline) {
          JournalRecord r = journal.read(c.id);
          insert_offline(r.id, r.username, r.stanza, r.stamp_ms, r.sender);
        }
        settled.push_back(c.id);
      } else if (!c.to_offline) {
        // An offline message delivered is removed the same way (ids are never reused).
        Query d = query("DELETE FROM offline WHERE username = ?1 AND id = ?2");
        d.bind(1, c.username).bind(2, c.id).run();
      }
    }
    if (tx) tx->commit();
    last_offline_id_ = id;
    journal.append(entries, settled);
  }

  // The journal of messages in flight, which only the store's owner has.
  InFlightJournal& owned_journal() {
    if (!journal_) {
      throw StoreError(
          "sqlite: messages in flight are written by the process that holds the store (kabard)");
    }
    return *journal_;
  }

  // An offline message with its id. `was_in_flight`: the id is the one it had in flight, and a
  // second insert of the same message (after a crash between the two writes of log_in_flight())
  // changes nothing; else the id is new.
  void insert_offline(std::int64_t id, std::string_view username, std::string_view stanza,
                      std::int64_t stamp_ms, std::string_view sender, bool was_in_flight = true) {
    Query q = query(was_in_flight
                        ? "INSERT OR IGNORE INTO offline (id, username, stanza, stamp_ms, sender, "
                          "bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                        : "INSERT INTO offline (id, username, stanza, stamp_ms, sender, bytes) "
                          "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    q.bind(1, id)
        .bind_static(2, username)
        .bind_static(3, stanza)
        .bind(4, stamp_ms)
        .bind_static(5, sender)
        .bind(6, static_cast<std::int64_t>(stanza.size()))
        .run();
  }

  // Every message in flight becomes an offline message: the journal's, and rows of the in_flight
  // table that kabard wrote before the journal (schema 9).
  std::size_t release_in_flight() override {
    InFlightJournal& journal = owned_journal();
    const std::vector<JournalRecord> journaled = journal.live_records();
    Transaction tx(*this);
    {
      Query q = query(
          "INSERT INTO offline (id, username, stanza, stamp_ms, sender, bytes) "
          "SELECT id, username, stanza, stamp_ms, sender, bytes FROM in_flight ORDER BY id");
      q.run();
    }
    std::size_t n = static_cast<std::size_t>(sqlite3_changes(db_));
    query("DELETE FROM in_flight").run();
    for (const JournalRecord& r : journaled) {
      insert_offline(r.id, r.username, r.stanza, r.stamp_ms, r.sender);
    }
    tx.commit();
    journal.clear();
    return n + journaled.size();
  }

  // vcard-temp.

  std::optional<std::string> vcard(std::string_view username) override {
    Query q = query("SELECT vcard FROM vcard WHERE username = ?1");
    q.bind(1, username);
    if (!q.step()) return std::nullopt;
    return q.text(0);
  }

  void set_vcard(std::string_view username, std::string_view vcard_xml) override {
    Transaction tx(*this);
    {
      Query q = query(
          "INSERT INTO vcard (username, vcard) VALUES (?1, ?2) "
          "ON CONFLICT (username) DO UPDATE SET vcard = excluded.vcard");
      q.bind(1, username).bind(2, vcard_xml).run();
    }
    tx.commit();
  }

  // Last activity.

  std::optional<LastActivity> last_activity(std::string_view username) override {
    Query q = query("SELECT logout_unix, status FROM last_activity WHERE username = ?1");
    q.bind(1, username);
    if (!q.step()) return std::nullopt;
    return LastActivity{q.int64(0), q.text(1)};
  }

  void set_last_activity(std::string_view username, const LastActivity& last) override {
    Transaction tx(*this);
    {
      Query q = query(
          "INSERT INTO last_activity (username, logout_unix, status) VALUES (?1, ?2, ?3) "
          "ON CONFLICT (username) DO UPDATE SET logout_unix = excluded.logout_unix, "
          "status = excluded.status");
      q.bind(1, username).bind(2, last.logout_unix).bind(3, last.status).run();
    }
    tx.commit();
  }

  // Blocklists.

  std::vector<std::string> blocklist(std::string_view username) override {
    // BINARY collation: the same order as std::string's operator<.
    Query q = query("SELECT jid FROM blocklist WHERE username = ?1 ORDER BY jid");
    q.bind(1, username);
    std::vector<std::string> out;
    while (q.step()) out.push_back(q.text(0));
    return out;
  }

  std::vector<std::string> block(std::string_view username,
                                 const std::vector<std::string>& jids) override {
    std::set<std::string> added;
    Transaction tx(*this);
    for (const auto& j : jids) {
      Query q = query("INSERT OR IGNORE INTO blocklist (username, jid) VALUES (?1, ?2)");
      q.bind(1, username).bind(2, j).run();
      if (sqlite3_changes(db_) == 1) added.insert(j);
    }
    tx.commit();
    return {added.begin(), added.end()};
  }

  std::vector<std::string> unblock(std::string_view username,
                                   const std::vector<std::string>& jids) override {
    std::set<std::string> removed;
    Transaction tx(*this);
    for (const auto& j : jids) {
      Query q = query("DELETE FROM blocklist WHERE username = ?1 AND jid = ?2");
      q.bind(1, username).bind(2, j).run();
      if (sqlite3_changes(db_) == 1) removed.insert(j);
    }
    tx.commit();
    return {removed.begin(), removed.end()};
  }

  std::vector<std::string> unblock_all(std::string_view username) override {
    Transaction tx(*this);
    std::vector<std::string> all = blocklist(username);
    {
      Query q = query("DELETE FROM blocklist WHERE username = ?1");
      q.bind(1, username).run();
    }
    tx.commit();
    return all;
  }

  // Personal eventing.

  std::vector<PepNode> pep_nodes(std::string_view username) override {
    Query q = query(KABAR_PEP_NODE_SELECT " WHERE username = ?1 ORDER BY node");
    q.bind(1, username);
    std::vector<PepNode> out;
    while (q.step()) out.push_back(read_pep_node(q));
    return out;
  }

  std::optional<PepNode> pep_node(std::string_view username, std::string_view node) override {
    Query q = query(KABAR_PEP_NODE_SELECT " WHERE username = ?1 AND node = ?2");
    q.bind(1, username).bind(2, node);
    if (!q.step()) return std::nullopt;
    return read_pep_node(q);
  }

  void put_pep_node(std::string_view username, const PepNode& node) override {
    std::string affiliations;
    for (const auto& [jid, aff] : node.affiliations) affiliations += jid + '\t' + aff + '\n';
    std::vector<std::string> subs = node.subscribers;
    std::sort(subs.begin(), subs.end());
    std::string subscribers;
    for (const auto& jid : subs) subscribers += jid + '\n';
    const PepNodeConfig& c = node.config;
    Transaction tx(*this);
    {
      Query q = query(
          "INSERT OR REPLACE INTO pep_node (username, node, access_model, max_items, "
          "persist_items, notify_retract, notify_delete, deliver_notifications, "
          "deliver_payloads, send_last, title, affiliations, subscribers) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)");
      q.bind(1, username).bind(2, node.name).bind(3, c.access_model);
      q.bind(4, static_cast<std::int64_t>(c.max_items)).bind(5, c.persist_items);
      q.bind(6, c.notify_retract).bind(7, c.notify_delete).bind(8, c.deliver_notifications);
      q.bind(9, c.deliver_payloads).bind(10, c.send_last_published_item).bind(11, c.title);
      q.bind(12, affiliations).bind(13, subscribers).run();
    }
    trim_pep_items(username, node.name, c.max_items);
    tx.commit();
  }

  bool delete_pep_node(std::string_view username, std::string_view node) override {
    Transaction tx(*this);
    bool existed;
    {
      Query q = query("DELETE FROM pep_node WHERE username = ?1 AND node = ?2");
      q.bind(1, username).bind(2, node).run();
      existed = sqlite3_changes(db_) == 1;
    }
    {
      Query q = query("DELETE FROM pep_item WHERE username = ?1 AND node = ?2");
      q.bind(1, username).bind(2, node).run();
    }
    tx.commit();
    return existed;
  }

  std::vector<std::string> publish_pep_item(std::string_view username, std::string_view node,
                                            const PepItem& item, std::size_t max_items) override {
    Transaction tx(*this);
    {
      // A new seq: a republished id becomes the newest item.
      Query q = query(
          "INSERT OR REPLACE INTO pep_item (username, node, item_id, payload, publisher, "
          "stamp_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
      q.bind(1, username).bind(2, node).bind(3, item.id).bind(4, item.payload);
      q.bind(5, item.publisher).bind(6, item.stamp_ms).run();
    }
    std::vector<std::string> gone = trim_pep_items(username, node, max_items);
    tx.commit();
    return gone;
  }

  std::vector<PepItem> pep_items(std::string_view username, std::string_view node) override {
    Query q = query(
        "SELECT item_id, payload, publisher, stamp_ms FROM pep_item "
        "WHERE username = ?1 AND node = ?2 ORDER BY seq DESC");
    q.bind(1, username).bind(2, node);
    std::vector<PepItem> out;
    while (q.step()) out.push_back(PepItem{q.text(0), q.text(1), q.text(2), q.int64(3)});
    return out;
  }

  bool retract_pep_item(std::string_view username, std::string_view node,
                        std::string_view id) override {
    Transaction tx(*this);
    bool existed;
    {
      Query q = query("DELETE FROM pep_item WHERE username = ?1 AND node = ?2 AND item_id = ?3");
      q.bind(1, username).bind(2, node).bind(3, id).run();
      existed = sqlite3_changes(db_) == 1;
    }
    tx.commit();
    return existed;
  }

  // Private XML storage.

  std::optional<std::string> private_xml(std::string_view username, std::string_view name,
                                         std::string_view xmlns) override {
    Query q = query("SELECT xml FROM private_xml WHERE username = ?1 AND name = ?2 AND xmlns = ?3");
    q.bind(1, username).bind(2, name).bind(3, xmlns);
    if (!q.step()) return std::nullopt;
    return q.text(0);
  }

  void set_private_xml(std::string_view username, std::string_view name, std::string_view xmlns,
                       std::string_view xml) override {
    Transaction tx(*this);
    {
      Query q = query(
          "INSERT OR REPLACE INTO private_xml (username, name, xmlns, xml) VALUES (?1, ?2, ?3, "
          "?4)");
      q.bind(1, username).bind(2, name).bind(3, xmlns).bind(4, xml).run();
    }
    tx.commit();
  }

  std::vector<std::pair<std::string, std::vector<std::string>>> all_blocklists() override {
    Query q = query("SELECT username, jid FROM blocklist ORDER BY username, jid");
    std::vector<std::pair<std::string, std::vector<std::string>>> out;
    while (q.step()) {
      std::string user = q.text(0);
      if (out.empty() || out.back().first != user)
        out.emplace_back(std::move(user), std::vector<std::string>());
      out.back().second.push_back(q.text(1));
    }
    return out;
  }

  // Push registrations.

  std::vector<PushRegistration> push_registrations(std::string_view username) override {
    Query q = query(
        "SELECT jid, node, options, created_ms FROM push_registration WHERE username = ?1 "
        "ORDER BY jid, node");
    q.bind(1, username);
    std::vector<PushRegistration> out;
    while (q.step()) out.push_back(read_push_registration(q, 0));
    return out;
  }

  void put_push_registration(std::string_view username, const PushRegistration& r) override {
    Query q = query(
        "INSERT OR REPLACE INTO push_registration (username, jid, node, options, created_ms) "
        "VALUES (?1, ?2, ?3, ?4, ?5)");
    q.bind(1, username).bind(2, r.jid).bind(3, r.node).bind(4, r.options).bind(5, r.created_ms);
    q.run();
  }

  std::size_t delete_push_registrations(std::string_view username, std::string_view jid,
                                        std::optional<std::string_view> node) override {
    if (node) {
      Query q =
          query("DELETE FROM push_registration WHERE username = ?1 AND jid = ?2 AND node = ?3");
      q.bind(1, username).bind(2, jid).bind(3, *node).run();
    } else {
      Query q = query("DELETE FROM push_registration WHERE username = ?1 AND jid = ?2");
      q.bind(1, username).bind(2, jid).run();
    }
    return static_cast<std::size_t>(sqlite3_changes(db_));
  }

  std::vector<std::pair<std::string, std::vector<PushRegistration>>> all_push_registrations()
      override {
    Query q = query(
        "SELECT username, jid, node, options, created_ms FROM push_registration "
        "ORDER BY username, jid, node");
    std::vector<std::pair<std::string, std::vector<PushRegistration>>> out;
    while (q.step()) {
      std::string user = q.text(0);
      if (out.empty() || out.back().first != user) {
        out.emplace_back(std::move(user), std::vector<PushRegistration>());
      }
      out.back().second.push_back(read_push_registration(q, 1));
    }
    return out;
  }

  // Message archives: each message a row of archive_msg, in the order written (seq), with no
  // index; each account's index of them in chunks (archive_chunk) and, for its newest entries,
  // a tail in memory (store/archive_index.h). A chunk holds about kChunkEntries entries. Every
  // kCheckpointS seconds (or once the tails hold kTailEntriesMax entries, or at close) every
  // tail goes to the database, and archive_meta's 'indexed' says so: at open, the messages
  // written after it are read back into the tails (a crash loses no index entry).

  void archive_append(std::vector<ArchivedMessage>& batch) override {
    if (batch.empty()) return;
    if (!archive_owner_) {
      throw StoreError("sqlite: the archive is written by the process that holds it (kabard)");
    }
    // The tails change as the rows are written; if the transaction fails, they are put back.
    // Keyed by the tail's address (stable in tails_): no string hashed or copied per message.
    struct Undo {
      const std::string* user;  // the tail's key in tails_
      bool existed;
      std::size_t entries;
      std::size_t withs;
    };
    std::unordered_map<IndexRun*, Undo> touched;
    const std::size_t tail_entries = tail_entries_;
    std::int64_t last = archive_last_seq_;
    try {
      Transaction tx(*this);
      for (ArchivedMessage& m : batch) {
        if (m.seq <= last) m.seq = next_archive_seq(last);
        last = m.seq;
        {
          Query q = query(
              "INSERT INTO archive_msg (seq, username, id, with_jid, with_resource, stamp_ms, "
              "stanza) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
          q.bind(1, m.seq)
              .bind_static(2, m.username)
              .bind_static(3, m.id)
              .bind_static(4, m.with)
              .bind_static(5, m.with_resource)
              .bind(6, m.stamp_ms)
              .bind_static(7, m.stanza)
              .run();
        }
        if (!m.id.empty() && archive_id_seq(m.id) != m.seq) {
          // An id that does not name its seq: found through the index of ids.
          Query q =
              query("INSERT OR REPLACE INTO archive_id (username, id, seq) VALUES (?1, ?2, ?3)");
          q.bind(1, m.username).bind(2, m.id).bind(3, m.seq).run();
        }
        auto [tail, created] = tails_.try_emplace(m.username);
        touched.try_emplace(&tail->second, Undo{&tail->first, !created, tail->second.size(),
                                                tail->second.withs().size()});
        if (tail_entries_++ == 0) tails_since_ = std::chrono::steady_clock::now();
        tail->second.add(m.seq, m.stamp_ms, m.with, m.with_resource);
      }
      // At a checkpoint every tail goes to the database; else a tail that reached a chunk's size
      // goes as one.
      const bool checkpoint =
          tail_entries_ >= kTailEntriesMax ||
          std::chrono::steady_clock::now() - tails_since_ >= std::chrono::seconds(kCheckpointS);
      std::vector<std::string> flushed;
      if (checkpoint) {
        write_tails(last);
      } else {
        for (const auto& [tail, undo] : touched) {
          if (tail->size() < kChunkEntries) continue;
          write_chunks(*undo.user, *tail);
          flushed.push_back(*undo.user);
        }
      }
      tx.commit();
      archive_last_seq_ = last;
      if (checkpoint) {
        tails_.clear();
        tail_entries_ = 0;
      } else {
        for (const std::string& user : flushed) {
          auto it = tails_.find(user);
          tail_entries_ -= it->second.size();
          tails_.erase(it);
        }
      }
    } catch (...) {
      for (const auto& [tail, undo] : touched) {
        if (!undo.existed) {
          tails_.erase(tails_.find(*undo.user));
        } else {
          tail->truncate(undo.entries, undo.withs);
        }
      }
      tail_entries_ = tail_entries;
      throw;
    }
  }

  std::int64_t archive_last_seq() override { return archive_last_seq_; }

  std::optional<std::int64_t> archive_seq(std::string_view username, std::string_view id) override {
    if (const std::int64_t seq = archive_id_seq(id); seq > 0) {
      Query q = query("SELECT id FROM archive_msg WHERE seq = ?1 AND username = ?2");
      q.bind(1, seq).bind(2, username);
      if (q.step() && q.text(0) == id) return seq;
    }
    Query q = query("SELECT seq FROM archive_id WHERE username = ?1 AND id = ?2");
    q.bind(1, username).bind(2, id);
    if (!q.step()) return std::nullopt;
    return q.int64(0);
  }

  std::vector<ArchivedMessage> archive_query(std::string_view username, const ArchiveFilter& f,
                                             std::size_t limit, bool newest) override {
    std::vector<ArchivedMessage> out;
    if (limit == 0) return out;
    if (!f.seqs.empty()) {
      // Single items (the 'ids' field): each looked up, the other bounds checked here.
      for (const std::int64_t seq : f.seqs) {
        auto m = archived_message(username, seq);
        if (m && archive_matches(f, *m)) out.push_back(std::move(*m));
      }
      std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.seq < b.seq; });
      out.erase(std::unique(out.begin(), out.end(),
                            [](const auto& a, const auto& b) { return a.seq == b.seq; }),
                out.end());
      if (out.size() > limit) {
        if (newest) {
          out.erase(out.begin(), out.end() - static_cast<std::ptrdiff_t>(limit));
        } else {
          out.resize(limit);
        }
      }
      return out;
    }
    // The page's seqs from the index, then its messages.
    ReadSnapshot snapshot(*this);
    std::vector<std::int64_t> seqs;
    archive_scan(username, f, newest, [&](const IndexRun&, auto&& full) {
      const IndexRun& run = full();
      const auto& entries = run.entries();
      if (newest) {
        for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
          if (!run.matches(f, *it)) continue;
          seqs.push_back(it->seq);
          if (seqs.size() == limit) return false;
        }
      } else {
        for (const IndexEntry& e : entries) {
          if (!run.matches(f, e)) continue;
          seqs.push_back(e.seq);
          if (seqs.size() == limit) return false;
        }
      }
      return true;
    });
    if (newest) std::reverse(seqs.begin(), seqs.end());
    out.reserve(seqs.size());
    for (const std::int64_t seq : seqs) {
      if (auto m = archived_message(username, seq)) out.push_back(std::move(*m));
    }
    return out;
  }

  std::size_t archive_count(std::string_view username, const ArchiveFilter& f) override {
    if (!f.seqs.empty()) return archive_query(username, f, f.seqs.size(), false).size();
    ReadSnapshot snapshot(*this);
    std::size_t n = 0;
    archive_scan(username, f, false, [&](const IndexRun& head, auto&& full) {
      // A run wholly inside the bounds is counted from its correspondents' counts.
      n += head.inside(f) ? head.count(f) : full().count(f);
      return true;
    });
    return n;
  }

  std::size_t archive_expire(std::int64_t before_ms, std::size_t limit) override {
    if (limit == 0) return 0;
    // Seqs follow the order of writing and stamps that of time, so the cut is found by
    // bisection on the primary key (a few dozen lookups), not by a scan of the table: the
    // largest seq whose message is stamped before `before_ms`, as seen by probing.
    auto first_from =
        [this](std::int64_t seq) -> std::optional<std::pair<std::int64_t, std::int64_t>> {
      Query q = query("SELECT seq, stamp_ms FROM archive_msg WHERE seq >= ?1 ORDER BY seq LIMIT 1");
      q.bind(1, seq);
      if (!q.step()) return std::nullopt;
      return std::pair{q.int64(0), q.int64(1)};
    };
    auto oldest = first_from(0);
    if (!oldest || oldest->second >= before_ms) return 0;
    std::int64_t lo = oldest->first;
    std::int64_t hi = lo;
    {
      Query q = query("SELECT MAX(seq) FROM archive_msg");
      if (q.step()) hi = q.int64(0);
    }
    while (lo < hi) {
      const std::int64_t mid = lo + (hi - lo) / 2 + 1;
      auto row = first_from(mid);
      if (row && row->second < before_ms) {
        lo = row->first;
      } else {
        hi = mid - 1;
      }
    }
    // At most `limit` rows in one transaction: the store's thread serves logins between them.
    std::int64_t cut = lo;
    {
      Query q = query("SELECT seq FROM archive_msg WHERE seq <= ?1 ORDER BY seq LIMIT 1 OFFSET ?2");
      q.bind(1, lo).bind(2, static_cast<std::int64_t>(limit - 1));
      if (q.step()) cut = q.int64(0);
    }
    Transaction tx(*this);
    if (!archive_owner_) read_tails();
    std::size_t n = 0;
    {
      Query q = query("DELETE FROM archive_msg WHERE seq <= ?1");
      q.bind(1, cut).run();
      n = static_cast<std::size_t>(sqlite3_changes(db_));
    }
    {
      Query q = query("DELETE FROM archive_id WHERE seq <= ?1");
      q.bind(1, cut).run();
    }
    // The chunks that begin at or before the cut lose those entries.
    struct Cut {
      std::string user;
      std::int64_t last_seq;
      bool whole;
      IndexRun kept;
    };
    std::vector<Cut> cuts;
    {
      Query q = query(
          "SELECT username, last_seq, withs, entries FROM archive_chunk WHERE first_seq <= ?1");
      q.bind(1, cut);
      while (q.step()) {
        Cut c{q.text(0), q.int64(1), q.int64(1) <= cut, {}};
        if (!c.whole) {
          c.kept = IndexRun::decode(q.view(2), q.view(3));
          c.kept.drop_through(cut);
        }
        cuts.push_back(std::move(c));
      }
    }
    for (const Cut& c : cuts) {
      {
        Query q = query("DELETE FROM archive_chunk WHERE username = ?1 AND last_seq = ?2");
        q.bind(1, c.user).bind(2, c.last_seq).run();
      }
      if (!c.whole) write_chunks(c.user, c.kept);
    }
    set_archive_meta("last_seq", archive_last_seq_);
    tx.commit();
    for (auto it = tails_.begin(); it != tails_.end();) {
      tail_entries_ -= it->second.size();
      it->second.drop_through(cut);
      tail_entries_ += it->second.size();
      if (it->second.empty()) {
        it = tails_.erase(it);
      } else {
        ++it;
      }
    }
    return n;
  }

  std::size_t archive_clear(std::string_view username) override {
    Transaction tx(*this);
    const std::size_t n = clear_archive(username);
    tx.commit();
    forget_tail(username);
    return n;
  }

  std::optional<ArchivePrefs> archive_prefs(std::string_view username) override {
    Query q = query("SELECT default_mode, always, never FROM archive_prefs WHERE username = ?1");
    q.bind(1, username);
    if (!q.step()) return std::nullopt;
    ArchivePrefs p;
    p.default_mode = q.text(0);
    p.always = split_lines(q.text(1));
    p.never = split_lines(q.text(2));
    return p;
  }

  void set_archive_prefs(std::string_view username, const ArchivePrefs& p) override {
    Transaction tx(*this);
    {
      Query q = query(
          "INSERT INTO archive_prefs (username, default_mode, always, never) "
          "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (username) DO UPDATE SET "
          "default_mode = excluded.default_mode, always = excluded.always, "
          "never = excluded.never");
      q.bind(1, username)
          .bind(2, p.default_mode)
          .bind(3, join_lines(p.always))
          .bind(4, join_lines(p.never))
          .run();
    }
    tx.commit();
  }

  int schema_version() override { return user_version(); }

 private:
  static ArchivedMessage read_archived(Query& q, std::string_view username) {
    ArchivedMessage m;
    m.username = std::string(username);
    m.seq = q.int64(0);
    m.id = q.text(1);
    m.with = q.text(2);
    m.with_resource = q.text(3);
    m.stamp_ms = q.int64(4);
    m.stanza = q.text(5);
    return m;
  }

  std::optional<ArchivedMessage> archived_message(std::string_view username, std::int64_t seq) {
    Query q = query(
        "SELECT seq, id, with_jid, with_resource, stamp_ms, stanza FROM archive_msg "
        "WHERE seq = ?1 AND username = ?2");
    q.bind(1, seq).bind(2, username);
    if (!q.step()) return std::nullopt;
    return read_archived(q, username);
  }

  // Calls visit(head, full) for each of the account's runs (its chunks, then its tail) that may
  // hold what `f` selects, oldest first or with `newest` newest first, until it returns false.
  // `head` has the run's bounds and correspondents; full() returns the run with its entries.
  template <class Visit>
  void archive_scan(std::string_view username, const ArchiveFilter& f, bool newest, Visit&& visit) {
    const auto tail = tails_.find(std::string(username));
    const IndexRun* t = tail == tails_.end() ? nullptr : &tail->second;
    // Columns: last_seq, first_seq, n, min_stamp, max_stamp, withs, entries.
    auto chunk = [&](Query& q) {
      const IndexRun head =
          IndexRun::decode_head(q.view(5), q.int64(1), q.int64(0),
                                static_cast<std::size_t>(q.int64(2)), q.int64(3), q.int64(4));
      if (!head.can_match(f)) return true;
      std::optional<IndexRun> decoded;
      return visit(head, [&]() -> const IndexRun& {
        if (!decoded) decoded = IndexRun::decode(q.view(5), q.view(6));
        return *decoded;
      });
    };
    auto tail_visit = [&] {
      return t == nullptr || !t->can_match(f) || visit(*t, [&]() -> const IndexRun& { return *t; });
    };
    if (!newest) {
      Query q = query(
          "SELECT last_seq, first_seq, n, min_stamp, max_stamp, withs, entries FROM "
          "archive_chunk WHERE username = ?1 AND last_seq > ?2 ORDER BY last_seq");
      q.bind(1, username).bind(2, f.after_seq);
      while (q.step()) {
        if (q.int64(1) >= f.before_seq) return;
        if (!chunk(q)) return;
      }
      tail_visit();
      return;
    }
    if (!tail_visit()) return;
    {
      // The chunk that holds before_seq, if any: the first that ends at or after it.
      Query q = query(
          "SELECT last_seq, first_seq, n, min_stamp, max_stamp, withs, entries FROM "
          "archive_chunk WHERE username = ?1 AND last_seq >= ?2 ORDER BY last_seq LIMIT 1");
      q.bind(1, username).bind(2, f.before_seq);
      if (q.step() && !chunk(q)) return;
    }
    Query q = query(
        "SELECT last_seq, first_seq, n, min_stamp, max_stamp, withs, entries FROM "
        "archive_chunk WHERE username = ?1 AND last_seq > ?2 AND last_seq < ?3 "
        "ORDER BY last_seq DESC");
    q.bind(1, username).bind(2, f.after_seq).bind(3, f.before_seq);
    while (q.step()) {
      if (!chunk(q)) return;
    }
  }

  // Writes `run` as chunks of at most kChunkEntries entries.
  void write_chunks(const std::string& username, const IndexRun& run) {
    auto write = [&](const IndexRun& c) {
      Query q = query(
          "INSERT INTO archive_chunk (username, last_seq, first_seq, n, min_stamp, max_stamp, "
          "withs, entries) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
      q.bind(1, username)
          .bind(2, c.last_seq())
          .bind(3, c.first_seq())
          .bind(4, static_cast<std::int64_t>(c.size()))
          .bind(5, c.min_stamp())
          .bind(6, c.max_stamp())
          .bind_blob(7, c.encode_withs())
          .bind_blob(8, c.encode_entries())
          .run();
    };
    if (run.size() <= kChunkEntries) {
      write(run);
      return;
    }
    IndexRun piece;
    for (const IndexEntry& e : run.entries()) {
      const Correspondent& c = run.withs()[e.with];
      piece.add(e.seq, e.stamp_ms, c.jid, c.resource);
      if (piece.size() == kChunkEntries) {
        write(piece);
        piece = IndexRun();
      }
    }
    if (!piece.empty()) write(piece);
  }

  // A tail smaller than a chunk goes to the database joined to the account's last chunk when
  // that one is small too (a quiet account's checkpoints would otherwise leave a chunk of a
  // few entries each time).
  void flush_tail(const std::string& username, const IndexRun& tail) {
    std::optional<IndexRun> last;
    {
      Query q = query(
          "SELECT last_seq, n, withs, entries FROM archive_chunk WHERE username = ?1 "
          "ORDER BY last_seq DESC LIMIT 1");
      q.bind(1, username);
      if (q.step() && static_cast<std::size_t>(q.int64(1)) < kChunkEntries) {
        last = IndexRun::decode(q.view(2), q.view(3));
      }
    }
    if (!last) {
      write_chunks(username, tail);
      return;
    }
    {
      Query q = query("DELETE FROM archive_chunk WHERE username = ?1 AND last_seq = ?2");
      q.bind(1, username).bind(2, last->last_seq()).run();
    }
    last->append(tail);
    write_chunks(username, *last);
  }

  // Writes every tail to the database (at close, and at open after a crash).
  void archive_checkpoint() {
    if (tail_entries_ == 0) return;
    Transaction tx(*this);
    write_tails(archive_last_seq_);
    tx.commit();
    tails_.clear();
    tail_entries_ = 0;
  }

  // In the caller's transaction: every tail into chunks, and the marks that say the chunks hold
  // every message up to `last` (the caller empties the tails once it has committed).
  void write_tails(std::int64_t last) {
    for (const auto& [user, tail] : tails_) {
      if (!tail.empty()) flush_tail(user, tail);
    }
    set_archive_meta("indexed", last);
    set_archive_meta("last_seq", last);
  }

  std::int64_t archive_meta(const char* name) {
    Query q = query("SELECT value FROM archive_meta WHERE name = ?1");
    q.bind(1, std::string_view(name));
    return q.step() ? q.int64(0) : 0;
  }

  void set_archive_meta(const char* name, std::int64_t value) {
    Query q = query(
        "INSERT INTO archive_meta (name, value) VALUES (?1, ?2) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value");
    q.bind(1, std::string_view(name)).bind(2, value).run();
  }

  // At open: the newest seq and, for the owner, the tails as they were (the messages written
  // after the last checkpoint that no chunk holds), then a checkpoint.
  void load_archive_index() {
    archive_last_seq_ = archive_meta("last_seq");
    {
      Query q = query("SELECT MAX(seq) FROM archive_msg");
      if (q.step()) archive_last_seq_ = std::max(archive_last_seq_, q.int64(0));
    }
    if (!archive_owner_) return;
    read_tails();
    archive_checkpoint();
  }

  // The tails from the database: the messages after the last checkpoint ('indexed') that no
  // chunk of their account holds.
  void read_tails() {
    tails_.clear();
    tail_entries_ = 0;
    std::unordered_map<std::string, std::int64_t> chunked;  // account -> its last chunk's end
    Query q = query(
        "SELECT seq, username, with_jid, with_resource, stamp_ms FROM archive_msg "
        "WHERE seq > ?1 ORDER BY seq");
    q.bind(1, archive_meta("indexed"));
    while (q.step()) {
      std::string user = q.text(1);
      auto it = chunked.find(user);
      if (it == chunked.end()) {
        Query c = query("SELECT MAX(last_seq) FROM archive_chunk WHERE username = ?1");
        c.bind(1, user);
        it = chunked.emplace(user, c.step() ? c.int64(0) : 0).first;
      }
      const std::int64_t seq = q.int64(0);
      if (seq <= it->second) continue;
      tails_[user].add(seq, q.int64(4), q.view(2), q.view(3));
      ++tail_entries_;
    }
    if (tail_entries_ > 0) tails_since_ = std::chrono::steady_clock::now();
  }

  // For a store that does not own the archive (archive_owner_), an archive read runs in one
  // read transaction, over the tails as the database has them then.
  class ReadSnapshot {
   public:
    explicit ReadSnapshot(SqliteStore& s) : s_(s) {
      if (s_.archive_owner_ || !sqlite3_get_autocommit(s_.db_)) return;
      s_.exec("BEGIN");
      open_ = true;
      s_.read_tails();
    }
    ReadSnapshot(const ReadSnapshot&) = delete;
    ReadSnapshot& operator=(const ReadSnapshot&) = delete;
    ~ReadSnapshot() {
      if (open_ && !sqlite3_get_autocommit(s_.db_)) {
        sqlite3_exec(s_.db_, "COMMIT", nullptr, nullptr, nullptr);
      }
    }

   private:
    SqliteStore& s_;
    bool open_ = false;
  };

  // Deletes the account's archive in the caller's transaction (forget_tail() after its
  // commit); returns how many messages it held.
  std::size_t clear_archive(std::string_view username) {
    if (!archive_owner_) read_tails();
    std::vector<std::int64_t> seqs;
    {
      Query q = query("SELECT withs, entries FROM archive_chunk WHERE username = ?1");
      q.bind(1, username);
      while (q.step()) {
        const IndexRun run = IndexRun::decode(q.view(0), q.view(1));
        for (const IndexEntry& e : run.entries()) seqs.push_back(e.seq);
      }
    }
    if (auto t = tails_.find(std::string(username)); t != tails_.end()) {
      for (const IndexEntry& e : t->second.entries()) seqs.push_back(e.seq);
    }
    std::size_t n = 0;
    for (const std::int64_t seq : seqs) {
      Query q = query("DELETE FROM archive_msg WHERE seq = ?1 AND username = ?2");
      q.bind(1, seq).bind(2, username).run();
      n += static_cast<std::size_t>(sqlite3_changes(db_));
    }
    for (const char* sql : {"DELETE FROM archive_chunk WHERE username = ?1",
                            "DELETE FROM archive_id WHERE username = ?1"}) {
      Query q = query(sql);
      q.bind(1, username).run();
    }
    set_archive_meta("last_seq", archive_last_seq_);
    return n;
  }

  void forget_tail(std::string_view username) {
    if (auto t = tails_.find(std::string(username)); t != tails_.end()) {
      tail_entries_ -= t->second.size();
      tails_.erase(t);
    }
  }

  static std::vector<std::string> split_lines(const std::string& text) {
    std::vector<std::string> out;
    for (std::size_t at = 0; at < text.size();) {
      std::size_t end = text.find('\n', at);
      if (end == std::string::npos) end = text.size();
      if (end > at) out.push_back(text.substr(at, end - at));
      at = end + 1;
    }
    return out;
  }

  static std::string join_lines(const std::vector<std::string>& lines) {
    std::string out;
    for (const auto& l : lines) {
      if (!out.empty()) out += '\n';
      out += l;
    }
    return out;
  }

  // A push_registration row's jid, node, options and created_ms, from column `col` on.
  static PushRegistration read_push_registration(Query& q, int col) {
    PushRegistration r;
    r.jid = q.text(col);
    r.node = q.text(col + 1);
    r.options = q.text(col + 2);
    r.created_ms = q.int64(col + 3);
    return r;
  }

  static PepNode read_pep_node(Query& q) {
    PepNode n;
    n.name = q.text(0);
    PepNodeConfig& c = n.config;
    c.access_model = q.text(1);
    c.max_items = static_cast<std::size_t>(q.int64(2));
    c.persist_items = q.int64(3) != 0;
    c.notify_retract = q.int64(4) != 0;
    c.notify_delete = q.int64(5) != 0;
    c.deliver_notifications = q.int64(6) != 0;
    c.deliver_payloads = q.int64(7) != 0;
    c.send_last_published_item = q.text(8);
    c.title = q.text(9);
    const std::string affiliations = q.text(10);
    for (std::size_t at = 0; at < affiliations.size();) {
      std::size_t end = affiliations.find('\n', at);
      if (end == std::string::npos) end = affiliations.size();
      std::string line = affiliations.substr(at, end - at);
      const std::size_t tab = line.find('\t');
      if (tab != std::string::npos)
        n.affiliations.emplace_back(line.substr(0, tab), line.substr(tab + 1));
      at = end + 1;
    }
    const std::string subscribers = q.text(11);
    for (std::size_t at = 0; at < subscribers.size();) {
      std::size_t end = subscribers.find('\n', at);
      if (end == std::string::npos) end = subscribers.size();
      if (end > at) n.subscribers.push_back(subscribers.substr(at, end - at));
      at = end + 1;
    }
    return n;
  }

  // Keeps the node's newest `max` items, inside the caller's transaction; returns the ids of
  // those removed.
  std::vector<std::string> trim_pep_items(std::string_view username, std::string_view node,
                                          std::size_t max) {
    std::vector<std::string> gone;
    {
      Query q = query(
          "SELECT item_id FROM pep_item WHERE username = ?1 AND node = ?2 "
          "ORDER BY seq DESC LIMIT -1 OFFSET ?3");
      q.bind(1, username).bind(2, node).bind(3, static_cast<std::int64_t>(max));
      while (q.step()) gone.push_back(q.text(0));
    }
    for (const auto& id : gone) {
      Query q = query("DELETE FROM pep_item WHERE username = ?1 AND node = ?2 AND item_id = ?3");
      q.bind(1, username).bind(2, node).bind(3, id).run();
    }
    return gone;
  }

  // A write transaction. BEGIN IMMEDIATE takes the write lock at once (waiting up to
  // busy_timeout), so a transaction that reads and then writes cannot fail with SQLITE_BUSY
  // half-way. Rolls back unless committed.
  class Transaction {
   public:
    explicit Transaction(SqliteStore& s) : s_(s) { s_.query("BEGIN IMMEDIATE").run(); }
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    ~Transaction() {
      // Some errors (SQLITE_FULL, SQLITE_IOERR, ...) have already rolled back.
      if (!committed_ && !sqlite3_get_autocommit(s_.db_)) {
        sqlite3_exec(s_.db_, "ROLLBACK", nullptr, nullptr, nullptr);
      }
    }
    void commit() {
      s_.query("COMMIT").run();
      committed_ = true;
    }

   private:
    SqliteStore& s_;
    bool committed_ = false;
  };

  // `sql` must be a string with static storage: it is the cache key's backing text.
  Query query(const char* sql) {
    auto it = statements_.find(sql);
    if (it == statements_.end()) {
      sqlite3_stmt* stmt = nullptr;
      if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) !=
          SQLITE_OK) {
        fail(db_, sql);
      }
      it = statements_.emplace(sql, stmt).first;
    }
    return Query(db_, it->second);
  }

  void exec(const char* sql) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) fail(db_, sql);
  }

  std::string pragma_text(const char* sql) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &stmt, nullptr) != SQLITE_OK) fail(db_, sql);
    std::string out;
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
      auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
      if (p) out = p;
    } else if (rc != SQLITE_DONE) {
      std::string msg = sqlite3_errmsg(db_);
      sqlite3_finalize(stmt);
      throw StoreError(std::string("sqlite: ") + sql + ": " + msg);
    }
    sqlite3_finalize(stmt);
    return out;
  }

  int user_version() { return std::stoi(pragma_text("PRAGMA user_version")); }

  void migrate() {
    int current = user_version();
    if (current > kLatestSchema) {
      throw StoreError("sqlite: database schema version " + std::to_string(current) +
                       " is newer than this kabar supports (" + std::to_string(kLatestSchema) +
                       ")");
    }
    for (const Migration& m : kMigrations) {
      if (m.version <= current) continue;
      Transaction tx(*this);
      // Another process may have migrated while we waited for the write lock.
      current = user_version();
      if (m.version <= current) continue;  // tx rolls back an empty transaction
      exec(m.sql);
      exec(("PRAGMA user_version = " + std::to_string(m.version)).c_str());
      tx.commit();
      current = m.version;
    }
  }

  static void bind_credentials(Query& q, int first, const xmpp::ScramCredentials& c) {
    q.bind_blob(first, c.salt)
        .bind(first + 1, std::int64_t{c.iterations})
        .bind_blob(first + 2, c.stored_key)
        .bind_blob(first + 3, c.server_key);
  }

  static xmpp::ScramCredentials read_credentials(const Query& q, int first) {
    xmpp::ScramCredentials c;
    c.salt = q.blob(first);
    c.iterations = static_cast<int>(q.int64(first + 1));
    c.stored_key = q.blob(first + 2);
    c.server_key = q.blob(first + 3);
    return c;
  }

  // Columns: contact, name, sub, pending_out, pending_in, preapproved, pending_in_stanza,
  // in_roster.
  static RosterItem read_roster_item(const Query& q) {
    RosterItem item;
    item.jid = q.text(0);
    item.name = q.text(1);
    item.state.sub = subscription_from_text(q.text(2));
    item.state.pending_out = q.int64(3) != 0;
    item.state.pending_in = q.int64(4) != 0;
    item.state.preapproved = q.int64(5) != 0;
    item.pending_in_stanza = q.text(6);
    item.in_roster = q.int64(7) != 0;
    return item;
  }

  // Inside a write transaction.
  std::int64_t bump_roster_version(std::string_view username) {
    std::int64_t version;
    {
      Query q = query("UPDATE roster_version_seq SET last = last + 1 WHERE id = 1 RETURNING last");
      if (!q.step()) throw StoreError("sqlite: roster_version_seq is empty");
      version = q.int64(0);
      q.run();
    }
    Query q = query(
        "INSERT INTO roster_version (username, version) VALUES (?1, ?2) "
        "ON CONFLICT (username) DO UPDATE SET version = excluded.version");
    q.bind(1, username).bind(2, version).run();
    return version;
  }

  void close() {
    for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
    statements_.clear();
    if (db_) sqlite3_close_v2(db_);
    db_ = nullptr;
    journal_.reset();
    if (owner_fd_ >= 0) ::close(owner_fd_);  // and its lock with it
    owner_fd_ = -1;
  }

  sqlite3* db_ = nullptr;
  // Keyed by the SQL text's address: every call site passes the same literal.
  std::unordered_map<const char*, sqlite3_stmt*> statements_;
  // The archive's index (archive_append()): entries per chunk, the tails' total that makes a
  // checkpoint, and the seconds between checkpoints.
  static constexpr std::size_t kChunkEntries = 256;
  static constexpr std::size_t kTailEntriesMax = 131'072;
  static constexpr int kCheckpointS = 60;
  std::unordered_map<std::string, IndexRun> tails_;    // account -> its newest index entries
  std::size_t tail_entries_ = 0;                       // in all tails
  std::chrono::steady_clock::time_point tails_since_;  // when the tails were last empty
  std::int64_t archive_last_seq_ = 0;
  int owner_fd_ = -1;                         // the archive's lock file
  bool archive_owner_ = false;                // this store holds its lock: the tails are its own
  std::unique_ptr<InFlightJournal> journal_;  // the owner's messages in flight
  std::int64_t last_offline_id_ = 0;          // the largest offline or in-flight id given
};

// Creates `dir` (and missing parents) with mode 0700: the database holds credentials.
void ensure_data_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  if (std::filesystem::is_directory(dir, ec)) return;
  if (std::filesystem::exists(dir, ec)) {
    throw StoreError("data dir " + dir.string() + " exists and is not a directory");
  }
  if (dir.has_parent_path()) {
    std::filesystem::create_directories(dir.parent_path(), ec);
    if (ec) throw StoreError("cannot create " + dir.parent_path().string() + ": " + ec.message());
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    throw StoreError("cannot create data dir " + dir.string() + ": " + std::strerror(errno));
  }
  if (!std::filesystem::is_directory(dir, ec)) {
    throw StoreError("data dir " + dir.string() + " is not a directory");
  }
}

}  // namespace

std::unique_ptr<Store> open_sqlite_store(const std::filesystem::path& data_dir,
                                         bool archive_owner) {
  if (data_dir.empty()) throw StoreError("empty data dir");
  ensure_data_dir(data_dir);
  return std::make_unique<SqliteStore>(data_dir / "kabar.db", archive_owner);
}

}  // namespace kabar::store
