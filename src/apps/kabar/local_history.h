// `kabar chat`'s local history: one SQLite file per account under the XDG data directory
// ($XDG_DATA_HOME/kabar/history-ACCOUNT.db, else ~/.local/share/kabar/), mode 0600, holding the
// messages sent and received in chat, per contact. Opening a conversation shows its tail.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

struct sqlite3;

namespace kabar::cli {

struct HistoryEntry {
  std::int64_t stamp_ms = 0;  // Unix milliseconds (UTC): when sent, or the XEP-0203 stamp
  bool outgoing = false;
  std::string body;
  std::string msg_id;  // the stanza id (ours, for receipts and errors)
  bool delivered = false;
  std::string archive_id;  // its id in the server's archive (XEP-0313/0359), when known
};

class History {
 public:
  History() = default;
  ~History();
  History(const History&) = delete;
  History& operator=(const History&) = delete;

  // Opens (creating with mode 0600) the file at `path`; on failure returns false with a one-line
  // reason in `error`, and the chat runs without history.
  bool open(const std::string& path, std::string& error);
  bool is_open() const { return db_ != nullptr; }

  void append(const std::string& peer, const HistoryEntry& e);
  void mark_delivered(const std::string& peer, const std::string& msg_id);
  // The last `limit` entries with `peer` (a bare JID), oldest first.
  std::vector<HistoryEntry> tail(const std::string& peer, int limit) const;
  // The newest stamp kept for `peer` (0: none): where a server archive (XEP-0313) query for the
  // messages missed since would start.
  std::int64_t newest_stamp(const std::string& peer) const;
  // Whether a message from the server's archive is kept already: one with its archive id, or
  // (what this client sent, or got without a stanza-id) one with its message id, direction and
  // body.
  bool knows(const std::string& peer, const std::string& archive_id, const std::string& msg_id,
             bool outgoing, const std::string& body) const;

 private:
  sqlite3* db_ = nullptr;
};

// The history file for an account: $XDG_DATA_HOME/kabar/history-ACCOUNT.db (folder created 0700).
std::string history_path(const std::string& jid);

// XEP-0082 "2024-05-01T10:20:30Z" or "...30.123Z" as Unix milliseconds; 0 when not a stamp.
std::int64_t parse_stamp_ms(const std::string& stamp);

}  // namespace kabar::cli
