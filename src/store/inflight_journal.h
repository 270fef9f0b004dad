// The messages in flight of SqliteStore's owner (OfflineStore::log_in_flight()): an append-only
// file beside the database, instead of rows of a table.
//
// With stream management on, nearly every message is logged in flight until its recipient
// acknowledges it, a second or so later: a row inserted and deleted again, in a SQLite commit
// every few milliseconds. Those commits (WAL frames written page by page, locks taken with
// fcntl) were most of the store thread's time. Here a batch is one write() at the end of the
// file: its new messages, and a mark for each one settled. A write() that returned is in the
// kernel's page cache, so a SIGKILL loses nothing written (SQLite's synchronous = NORMAL
// promises the same, and no more, against a power cut).
//
// The file: a header (kMagic), then records. A record is its payload's length and checksum
// (FNV-1a, 32 bits) as two little-endian u32, then the payload: 'A' (a message: id, stamp,
// username, sender, stanza) or 'D' (an id settled). A record cut short, or whose checksum is
// wrong, ends the file (a crash in the middle of a write): what follows is not read.
//
// The live messages (written, not yet settled) are known in memory with their place in the
// file. Once the file has grown past `compact_at` bytes and four times what is live, the live
// records are copied to a new file, which replaces it (synced first, since a rename is only as
// safe as the data under it).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kabar::store {

// What append() writes of a message (the strings are not copied).
struct JournalEntry {
  std::int64_t id = 0;
  std::int64_t stamp_ms = 0;
  std::string_view username;
  std::string_view sender;
  std::string_view stanza;
};

struct JournalRecord {
  std::int64_t id = 0;
  std::int64_t stamp_ms = 0;
  std::string username;
  std::string sender;
  std::string stanza;
};

// Reads the records in `bytes` (a journal file, header included): calls `added` or `settled`
// for each. Returns the length of the part that is whole (the rest is a torn tail), or nullopt
// when the header is not a journal's.
std::optional<std::size_t> decode_journal(
    std::string_view bytes,
    const std::function<void(JournalRecord rec, std::uint64_t offset, std::uint32_t length)>& added,
    const std::function<void(std::int64_t id)>& settled);

class InFlightJournal {
 public:
  static constexpr std::string_view kMagic = "kabar-in-flight 1\n";
  static constexpr std::uint64_t kCompactAt = 64ull << 20;

  // Opens the file (created when missing) and reads what is live in it. Throws StoreError.
  explicit InFlightJournal(std::filesystem::path path, std::uint64_t compact_at = kCompactAt);
  ~InFlightJournal();
  InFlightJournal(const InFlightJournal&) = delete;
  InFlightJournal& operator=(const InFlightJournal&) = delete;

  // One write: each of `added` as a live message, then a mark for each of `settled` (ids that
  // were live before the call; others are ignored). Throws StoreError; the file is then as it was.
  void append(const std::vector<JournalEntry>& added, const std::vector<std::int64_t>& settled);

  // Whether `id` is live here, for `username`.
  bool live(std::int64_t id, std::string_view username) const;
  // A live message, read back from the file.
  JournalRecord read(std::int64_t id) const;
  // Every live message, in id order.
  std::vector<JournalRecord> live_records() const;
  // The live messages of `username`.
  std::vector<std::int64_t> ids_of(std::string_view username) const;
  // Nothing is live any more: the file is cut back to its header.
  void clear();

  std::size_t live_count() const { return live_.size(); }
  std::int64_t max_id() const { return max_id_; }
  std::uint64_t file_bytes() const { return size_; }
  std::uint64_t compactions() const { return compactions_; }

 private:
  struct Live {
    std::uint64_t offset = 0;  // of its record
    std::uint32_t length = 0;  // of its record, header included
    std::string username;
  };
  // What is live, as a record is read or written: `id` at `offset`, or settled.
  void note_live(std::int64_t id, std::uint64_t offset, std::uint32_t length, std::string username);
  void note_settled(std::int64_t id);
  void maybe_compact();

  std::filesystem::path path_;
  std::uint64_t compact_at_;
  int fd_ = -1;
  std::uint64_t size_ = 0;        // the file's whole part: the next record goes here
  std::uint64_t live_bytes_ = 0;  // the live records' lengths
  std::int64_t max_id_ = 0;
  std::uint64_t compactions_ = 0;
  std::unordered_map<std::int64_t, Live> live_;
};

}  // namespace kabar::store
