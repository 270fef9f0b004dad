// The SQLite backend of Store: one file, data_dir/kabar.db, in WAL mode.
//
// Threading: the connection is opened with SQLITE_OPEN_NOMUTEX (SQLite's multi-thread mode), so
// SQLite takes no per-connection lock. That is safe because a SqliteStore is used by one thread at
// a time (the server serializes calls on its storage thread); callers that share one object
// between threads must serialize themselves. Other processes (kabarctl while kabard runs) may use
// the same file: WAL lets readers proceed, every write takes the write lock up front
// (BEGIN IMMEDIATE), and busy_timeout makes a writer wait for the other instead of failing.
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <unordered_map>
#include <utility>

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
  explicit SqliteStore(const std::filesystem::path& file) {
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
    } catch (...) {
      close();
      throw;
    }
  }

  ~SqliteStore() override { close(); }

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
    last_pos_.clear();
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
          "DELETE FROM offline WHERE username = ?1", "DELETE FROM vcard WHERE username = ?1",
          "DELETE FROM last_activity WHERE username = ?1",
          "DELETE FROM blocklist WHERE username = ?1", "DELETE FROM pep_node WHERE username = ?1",
          "DELETE FROM pep_item WHERE username = ?1", "DELETE FROM private_xml WHERE username = ?1",
          "DELETE FROM archive WHERE username = ?1",
          "DELETE FROM archive_prefs WHERE username = ?1",
          "DELETE FROM push_registration WHERE username = ?1"}) {
      Query q = query(sql);
      q.bind(1, username).run();
    }
    tx.commit();
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
    {
      Query q = query(
          "INSERT INTO offline (username, stanza, stamp_ms, sender, bytes) "
          "VALUES (?1, ?2, ?3, ?4, ?5)");
      q.bind(1, username)
          .bind(2, stanza)
          .bind(3, stamp_ms)
          .bind(4, sender)
          .bind(5, static_cast<std::int64_t>(stanza.size()));
      q.run();
    }
    r.id = sqlite3_last_insert_rowid(db_);
    tx.commit();
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

  // Messages in flight are rows of the offline table with a negative stamp_ms, -1 - the stamp:
  // every query of the offline queue skips them, and making one an offline message is one update
  // of the row (no schema change: the offline table already holds what a message needs).
  void log_in_flight(std::vector<InFlightMessage>& added,
                     const std::vector<InFlightChange>& changed) override {
    if (added.empty() && changed.empty()) return;
    Transaction tx(*this);
    for (InFlightMessage& m : added) {
      Query q = query(
          "INSERT INTO offline (username, stanza, stamp_ms, sender, bytes) "
          "VALUES (?1, ?2, ?3, ?4, ?5)");
      q.bind(1, m.username)
          .bind(2, m.stanza)
          .bind(3, m.offline ? m.stamp_ms : -1 - m.stamp_ms)
          .bind(4, m.sender)
          .bind(5, static_cast<std::int64_t>(m.stanza.size()));
      q.run();
      m.id = sqlite3_last_insert_rowid(db_);
    }
    for (const InFlightChange& c : changed) {
      if (c.to_offline) {
        Query q = query(
            "UPDATE offline SET stamp_ms = -1 - stamp_ms "
            "WHERE username = ?1 AND id = ?2 AND stamp_ms < 0");
        q.bind(1, c.username).bind(2, c.id).run();
      } else {
        // An offline message delivered is removed the same way (ids are never reused).
        Query q = query("DELETE FROM offline WHERE username = ?1 AND id = ?2");
        q.bind(1, c.username).bind(2, c.id).run();
      }
    }
    tx.commit();
  }

  std::size_t release_in_flight() override {
    Transaction tx(*this);
    {
      Query q = query("UPDATE offline SET stamp_ms = -1 - stamp_ms WHERE stamp_ms < 0");
      q.run();
    }
    const auto n = static_cast<std::size_t>(sqlite3_changes(db_));
    tx.commit();
    return n;
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

  // Message archives.

  void archive_append(std::vector<ArchivedMessage>& batch) override {
    if (batch.empty()) return;
    Transaction tx(*this);
    try {
      for (ArchivedMessage& m : batch) {
        // Bounded here, not in last_pos(): a clear between the two lookups would leave `pos`
        // naming a freed entry.
        if (last_pos_.size() >= kLastPosCached) last_pos_.clear();
        std::int64_t& pos = last_pos(m.username, {});
        std::int64_t& wpos = last_pos(m.username, m.with);
        Query q = query(
            "INSERT INTO archive (username, id, with_jid, with_resource, stamp_ms, stanza, pos, "
            "wpos) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
        q.bind(1, m.username)
            .bind(2, m.id)
            .bind(3, m.with)
            .bind(4, m.with_resource)
            .bind(5, m.stamp_ms)
            .bind(6, m.stanza)
            .bind(7, pos + 1)
            .bind(8, wpos + 1)
            .run();
        ++pos;
        ++wpos;
        m.seq = sqlite3_last_insert_rowid(db_);
      }
      tx.commit();
    } catch (...) {
      last_pos_.clear();  // the places counted up were rolled back
      throw;
    }
  }

  // The place of the account's newest message (`with` empty), or of its newest with `with`; 0
  // for none. Kept in memory once read (archive_clear() and a failed append forget them).
  std::int64_t& last_pos(const std::string& username, const std::string& with) {
    // The key is built in a buffer kept between calls: two lookups per archived message, and
    // no allocation for either once the buffer has grown.
    std::string& key = last_pos_key_;
    key.assign(username);
    key += '\0';
    key += with;
    auto it = last_pos_.find(key);
    if (it != last_pos_.end()) return it->second;
    std::int64_t p = 0;
    if (with.empty()) {
      Query q = query("SELECT pos FROM archive WHERE username = ?1 ORDER BY seq DESC LIMIT 1");
      q.bind(1, username);
      if (q.step()) p = q.int64(0);
    } else {
      Query q = query(
          "SELECT wpos FROM archive WHERE username = ?1 AND with_jid = ?2 "
          "ORDER BY seq DESC LIMIT 1");
      q.bind(1, username).bind(2, with);
      if (q.step()) p = q.int64(0);
    }
    return last_pos_.emplace(key, p).first->second;
  }

  // How many of the account's messages (with `f.with`, if set) lie between the filter's seq
  // bounds: the difference of the places of the first and the last.
  std::size_t archive_range_count(std::string_view username, const ArchiveFilter& f) {
    const bool with = !f.with.empty();
    auto place = [&](bool newest) -> std::optional<std::int64_t> {
      Query q = query(
          with ? (newest ? "SELECT wpos FROM archive WHERE username = ?1 AND with_jid = ?4 AND "
                           "seq > ?2 AND seq < ?3 ORDER BY seq DESC LIMIT 1"
                         : "SELECT wpos FROM archive WHERE username = ?1 AND with_jid = ?4 AND "
                           "seq > ?2 AND seq < ?3 ORDER BY seq ASC LIMIT 1")
               : (newest ? "SELECT pos FROM archive WHERE username = ?1 AND "
                           "seq > ?2 AND seq < ?3 ORDER BY seq DESC LIMIT 1"
                         : "SELECT pos FROM archive WHERE username = ?1 AND "
                           "seq > ?2 AND seq < ?3 ORDER BY seq ASC LIMIT 1"));
      q.bind(1, username).bind(2, f.after_seq).bind(3, f.before_seq);
      if (with) q.bind(4, std::string_view(f.with));
      if (!q.step()) return std::nullopt;
      return q.int64(0);
    };
    auto first = place(false);
    if (!first) return 0;
    auto last = place(true);
    return last && *last >= *first ? static_cast<std::size_t>(*last - *first + 1) : 0;
  }

  std::optional<std::int64_t> archive_seq(std::string_view username, std::string_view id) override {
    Query q = query("SELECT seq FROM archive WHERE username = ?1 AND id = ?2");
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
        Query q = query(
            "SELECT seq, id, with_jid, with_resource, stamp_ms, stanza FROM archive "
            "WHERE username = ?1 AND seq = ?2");
        q.bind(1, username).bind(2, seq);
        if (q.step()) {
          ArchivedMessage m = read_archived(q, username);
          if (archive_matches(f, m)) out.push_back(std::move(m));
        }
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
    ArchiveFilter g = f;
    if (!narrow_by_time(username, g)) return out;
    Query q = query(archive_sql(g, newest ? kPageNewest : kPageOldest));
    bind_archive_filter(q, username, g);
    q.bind(5, static_cast<std::int64_t>(std::min<std::size_t>(limit, INT64_MAX)));
    while (q.step()) {
      // The time bounds became seq bounds: a message stamped out of order next to them is
      // checked here (pages stay exact; the count may be off by such a message).
      ArchivedMessage m = read_archived(q, username);
      if (archive_matches(f, m)) out.push_back(std::move(m));
    }
    if (newest) std::reverse(out.begin(), out.end());
    return out;
  }

  std::size_t archive_count(std::string_view username, const ArchiveFilter& f) override {
    if (!f.seqs.empty()) return archive_query(username, f, f.seqs.size(), false).size();
    ArchiveFilter g = f;
    if (!narrow_by_time(username, g)) return 0;
    if (g.with.empty() || g.with_resource.empty()) return archive_range_count(username, g);
    Query q = query(archive_sql(g, kCount));
    bind_archive_filter(q, username, g);
    q.step();
    return static_cast<std::size_t>(q.int64(0));
  }

  std::size_t archive_expire(std::int64_t before_ms, std::size_t limit) override {
    if (limit == 0) return 0;
    // Seqs follow the order of writing and stamps that of time, so the cut is found by
    // bisection on the primary key (a few dozen lookups), not by a scan of the table: the
    // largest seq whose message is stamped before `before_ms`, as seen by probing.
    auto first_from =
        [this](std::int64_t seq) -> std::optional<std::pair<std::int64_t, std::int64_t>> {
      Query q = query("SELECT seq, stamp_ms FROM archive WHERE seq >= ?1 ORDER BY seq LIMIT 1");
      q.bind(1, seq);
      if (!q.step()) return std::nullopt;
      return std::pair{q.int64(0), q.int64(1)};
    };
    auto oldest = first_from(0);
    if (!oldest || oldest->second >= before_ms) return 0;
    std::int64_t lo = oldest->first;
    std::int64_t hi = lo;
    {
      Query q = query("SELECT MAX(seq) FROM archive");
      if (q.step()) hi = q.int64(0);
    }
    while (lo < hi) {
      const std::int64_t mid = lo + (hi - lo + 1) / 2;
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
      Query q = query("SELECT seq FROM archive WHERE seq <= ?1 ORDER BY seq LIMIT 1 OFFSET ?2");
      q.bind(1, lo).bind(2, static_cast<std::int64_t>(limit - 1));
      if (q.step()) cut = q.int64(0);
    }
    Transaction tx(*this);
    {
      Query q = query("DELETE FROM archive WHERE seq <= ?1");
      q.bind(1, cut).run();
    }
    const auto n = static_cast<std::size_t>(sqlite3_changes(db_));
    tx.commit();
    return n;
  }

  std::size_t archive_clear(std::string_view username) override {
    last_pos_.clear();
    Transaction tx(*this);
    {
      Query q = query("DELETE FROM archive WHERE username = ?1");
      q.bind(1, username).run();
    }
    const auto n = static_cast<std::size_t>(sqlite3_changes(db_));
    tx.commit();
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

  // An archive query's statement: only the terms the filter has, so that each runs on its index
  // alone (by_user or by_with: a count reads no table row). ?1 username, ?2 after_seq,
  // ?3 before_seq, ?4 with (if set), ?5 the limit (pages), ?6 with_resource (if set). The time
  // bounds are seq bounds by then (narrow_by_time()).
  enum ArchiveSqlKind { kPageOldest, kPageNewest, kCount };
  static const char* archive_sql(const ArchiveFilter& f, ArchiveSqlKind kind) {
    static const std::array<std::string, 12> sql = [] {
      std::array<std::string, 12> out;
      for (int i = 0; i < 12; ++i) {
        const bool with = (i & 1) != 0;
        const bool resource = (i & 2) != 0;
        const int k = i / 4;
        std::string w = " FROM archive WHERE username = ?1 AND seq > ?2 AND seq < ?3";
        if (with) w += " AND with_jid = ?4";
        if (resource) w += " AND with_resource = ?6";
        out[static_cast<std::size_t>(i)] =
            k == kCount
                ? "SELECT COUNT(*)" + w
                : "SELECT seq, id, with_jid, with_resource, stamp_ms, stanza" + w +
                      (k == kPageNewest ? " ORDER BY seq DESC" : " ORDER BY seq ASC") + " LIMIT ?5";
      }
      return out;
    }();
    const bool with = !f.with.empty();
    const bool resource = with && !f.with_resource.empty();
    return sql[static_cast<std::size_t>((with ? 1 : 0) | (resource ? 2 : 0) | (kind * 4))].c_str();
  }

  static void bind_archive_filter(Query& q, std::string_view username, const ArchiveFilter& f) {
    q.bind(1, username).bind(2, f.after_seq).bind(3, f.before_seq);
    if (!f.with.empty()) {
      q.bind(4, std::string_view(f.with));
      if (!f.with_resource.empty()) q.bind(6, std::string_view(f.with_resource));
    }
  }

  // The filter's time bounds as seq bounds (then cleared): seqs follow the order of writing and
  // stamps that of time, so the first message at or after `start` and the last at or before
  // `end` are found by bisection on the account's index, a few dozen lookups, where a term on
  // stamp_ms would read every row of the account from its first. False: nothing can match.
  bool narrow_by_time(std::string_view username, ArchiveFilter& f) {
    if (!f.start_ms && !f.end_ms) return true;
    // The account's first message at or after `seq`, within the filter's seq bounds.
    auto at_or_after =
        [&](std::int64_t seq) -> std::optional<std::pair<std::int64_t, std::int64_t>> {
      Query q = query(
          "SELECT seq, stamp_ms FROM archive WHERE username = ?1 AND seq >= ?2 AND seq < ?3 "
          "ORDER BY seq LIMIT 1");
      q.bind(1, username).bind(2, seq).bind(3, f.before_seq);
      if (!q.step()) return std::nullopt;
      return std::pair{q.int64(0), q.int64(1)};
    };
    auto first = at_or_after(f.after_seq + 1);
    if (!first) return false;
    std::int64_t last_seq = first->first;
    {
      Query q = query(
          "SELECT seq FROM archive WHERE username = ?1 AND seq > ?2 AND seq < ?3 "
          "ORDER BY seq DESC LIMIT 1");
      q.bind(1, username).bind(2, f.after_seq).bind(3, f.before_seq);
      if (q.step()) last_seq = q.int64(0);
    }
    // The smallest seq in [lo, hi] whose message (the first at or after it) is stamped at or
    // after `t`; hi + 1 when none is.
    auto first_stamped = [&](std::int64_t t) {
      std::int64_t lo = first->first;
      std::int64_t hi = last_seq + 1;
      while (lo < hi) {
        const std::int64_t mid = lo + (hi - lo) / 2;
        auto row = at_or_after(mid);
        if (!row || row->second >= t) {
          hi = mid;
        } else {
          lo = row->first + 1;
        }
      }
      return lo;
    };
    if (f.start_ms) {
      const std::int64_t from = first_stamped(*f.start_ms);
      if (from > last_seq) return false;
      f.after_seq = std::max(f.after_seq, from - 1);
    }
    if (f.end_ms) {
      if (*f.end_ms == INT64_MAX) {
        f.end_ms.reset();
      } else {
        const std::int64_t past = first_stamped(*f.end_ms + 1);
        f.before_seq = std::min(f.before_seq, past);
      }
    }
    f.start_ms.reset();
    f.end_ms.reset();
    return f.after_seq + 1 < f.before_seq;
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
  }

  sqlite3* db_ = nullptr;
  // Keyed by the SQL text's address: every call site passes the same literal.
  std::unordered_map<const char*, sqlite3_stmt*> statements_;
  // last_pos(): "username\0with" (with empty: the whole archive) -> the newest place.
  static constexpr std::size_t kLastPosCached = 100'000;
  std::unordered_map<std::string, std::int64_t> last_pos_;
  std::string last_pos_key_;  // last_pos()'s scratch key
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

std::unique_ptr<Store> open_sqlite_store(const std::filesystem::path& data_dir) {
  if (data_dir.empty()) throw StoreError("empty data dir");
  ensure_data_dir(data_dir);
  return std::make_unique<SqliteStore>(data_dir / "kabar.db");
}

}  // namespace kabar::store
