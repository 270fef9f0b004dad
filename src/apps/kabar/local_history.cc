#include "local_history.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>

#include "common.h"

namespace kabar::cli {

namespace {

constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS message ("
    "  seq INTEGER PRIMARY KEY,"
    "  peer TEXT NOT NULL,"
    "  stamp_ms INTEGER NOT NULL,"
    "  outgoing INTEGER NOT NULL,"
    "  body TEXT NOT NULL,"
    "  msg_id TEXT NOT NULL DEFAULT '',"
    "  delivered INTEGER NOT NULL DEFAULT 0,"
    "  archive_id TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX IF NOT EXISTS message_peer ON message(peer, seq);";

// Files made before the archive id was kept get the column (an error when it exists: ignored).
constexpr const char* kAddArchiveId =
    "ALTER TABLE message ADD COLUMN archive_id TEXT NOT NULL DEFAULT ''";

// A prepared statement, finalized when it goes out of scope.
struct Stmt {
  sqlite3_stmt* s = nullptr;
  Stmt(sqlite3* db, const char* sql) { sqlite3_prepare_v2(db, sql, -1, &s, nullptr); }
  ~Stmt() { sqlite3_finalize(s); }
  void text(int i, const std::string& v) {
    sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
};

std::string column_text(sqlite3_stmt* s, int i) {
  const unsigned char* p = sqlite3_column_text(s, i);
  return p ? std::string(reinterpret_cast<const char*>(p),
                         static_cast<std::size_t>(sqlite3_column_bytes(s, i)))
           : std::string();
}

}  // namespace

History::~History() {
  if (db_) sqlite3_close(db_);
}

bool History::open(const std::string& path, std::string& error) {
  // Created 0600 before SQLite opens it; SQLite gives its -wal and -shm files the same mode.
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    error = "cannot open " + path;
    return false;
  }
  ::fchmod(fd, 0600);
  ::close(fd);
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, nullptr) !=
      SQLITE_OK) {
    error = path + ": " + (db_ ? sqlite3_errmsg(db_) : "cannot open");
    if (db_) sqlite3_close(db_);
    db_ = nullptr;
    return false;
  }
  // Two chats of one account may run at once: wait for the other's write instead of failing.
  sqlite3_busy_timeout(db_, 2000);
  char* msg = nullptr;
  if (sqlite3_exec(db_, "PRAGMA journal_mode=WAL;", nullptr, nullptr, &msg) != SQLITE_OK ||
      sqlite3_exec(db_, kSchema, nullptr, nullptr, &msg) != SQLITE_OK) {
    error = path + ": " + (msg ? msg : "cannot create the schema");
    sqlite3_free(msg);
    sqlite3_close(db_);
    db_ = nullptr;
    return false;
  }
  sqlite3_exec(db_, kAddArchiveId, nullptr, nullptr, nullptr);
  sqlite3_exec(db_, "CREATE INDEX IF NOT EXISTS message_archive ON message(peer, archive_id)",
               nullptr, nullptr, nullptr);
  return true;
}

void History::append(const std::string& peer, const HistoryEntry& e) {
  if (!db_) return;
  Stmt st(db_,
          "INSERT INTO message(peer, stamp_ms, outgoing, body, msg_id, delivered, archive_id) "
          "VALUES (?, ?, ?, ?, ?, ?, ?)");
  st.text(1, peer);
  sqlite3_bind_int64(st.s, 2, e.stamp_ms);
  sqlite3_bind_int(st.s, 3, e.outgoing ? 1 : 0);
  st.text(4, e.body);
  st.text(5, e.msg_id);
  sqlite3_bind_int(st.s, 6, e.delivered ? 1 : 0);
  st.text(7, e.archive_id);
  sqlite3_step(st.s);
}

void History::mark_delivered(const std::string& peer, const std::string& msg_id) {
  if (!db_ || msg_id.empty()) return;
  Stmt st(db_, "UPDATE message SET delivered = 1 WHERE peer = ? AND msg_id = ? AND outgoing = 1");
  st.text(1, peer);
  st.text(2, msg_id);
  sqlite3_step(st.s);
}

std::vector<HistoryEntry> History::tail(const std::string& peer, int limit) const {
  std::vector<HistoryEntry> out;
  if (!db_) return out;
  Stmt st(db_,
          "SELECT stamp_ms, outgoing, body, msg_id, delivered FROM message WHERE peer = ? "
          "ORDER BY seq DESC LIMIT ?");
  st.text(1, peer);
  sqlite3_bind_int(st.s, 2, limit);
  while (sqlite3_step(st.s) == SQLITE_ROW) {
    HistoryEntry e;
    e.stamp_ms = sqlite3_column_int64(st.s, 0);
    e.outgoing = sqlite3_column_int(st.s, 1) != 0;
    e.body = column_text(st.s, 2);
    e.msg_id = column_text(st.s, 3);
    e.delivered = sqlite3_column_int(st.s, 4) != 0;
    out.push_back(std::move(e));
  }
  return {out.rbegin(), out.rend()};
}

std::int64_t History::newest_stamp(const std::string& peer) const {
  if (!db_) return 0;
  Stmt st(db_, "SELECT MAX(stamp_ms) FROM message WHERE peer = ?");
  st.text(1, peer);
  return sqlite3_step(st.s) == SQLITE_ROW ? sqlite3_column_int64(st.s, 0) : 0;
}

bool History::knows(const std::string& peer, const std::string& archive_id,
                    const std::string& msg_id, bool outgoing, const std::string& body) const {
  if (!db_) return false;
  if (!archive_id.empty()) {
    Stmt st(db_, "SELECT 1 FROM message WHERE peer = ? AND archive_id = ? LIMIT 1");
    st.text(1, peer);
    st.text(2, archive_id);
    if (sqlite3_step(st.s) == SQLITE_ROW) return true;
  }
  if (msg_id.empty()) return false;
  Stmt st(db_,
          "SELECT 1 FROM message WHERE peer = ? AND msg_id = ? AND outgoing = ? AND body = ? "
          "LIMIT 1");
  st.text(1, peer);
  st.text(2, msg_id);
  sqlite3_bind_int(st.s, 3, outgoing ? 1 : 0);
  st.text(4, body);
  return sqlite3_step(st.s) == SQLITE_ROW;
}

std::string history_path(const std::string& jid) {
  return data_dir() + "/history-" + account_file_name(jid) + ".db";
}

std::int64_t parse_stamp_ms(const std::string& stamp) {
  std::tm tm{};
  int ms = 0;
  char frac[16] = {};
  if (std::sscanf(stamp.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
    return 0;
  if (stamp.size() > 20 && stamp[19] == '.' &&
      std::sscanf(stamp.c_str() + 20, "%3[0-9]", frac) == 1) {
    ms = std::atoi(frac);
    for (std::size_t n = std::char_traits<char>::length(frac); n < 3; ++n) ms *= 10;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  std::time_t t = ::timegm(&tm);
  if (t < 0) return 0;
  return static_cast<std::int64_t>(t) * 1000 + ms;
}

}  // namespace kabar::cli
