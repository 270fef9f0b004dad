// An account's archive index in runs (SqliteStore's XEP-0313 archive): what a query filters on
// (seq, stamp, correspondent) for a run of the account's messages, without their stanzas.
//
// The archive's messages are rows of one table in the order they were written, with no index
// of their own: an index entry per message on the account's pages cost a page write per active
// account and commit, the store thread's largest cost at 4,000 msg/s. Instead the newest
// entries of each account gather in memory (a tail) and go to the database as one row of a few
// hundred entries (a chunk), so a commit writes the messages' rows, sequentially, and a chunk now
// and then. A chunk lists its correspondents with a count each, and its seq and stamp bounds:
// a query skips a chunk that cannot match, and counts one that lies wholly inside its bounds
// without decoding its entries.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "store/store.h"

namespace kabar::store {

struct IndexEntry {
  std::int64_t seq = 0;
  std::int64_t stamp_ms = 0;
  std::uint32_t with = 0;  // its correspondent: an index into the run's `withs`
};

struct Correspondent {
  std::string jid;       // bare
  std::string resource;  // may be empty
  std::uint32_t count = 0;
};

// A run of one account's index entries, in increasing seq: a chunk as stored, or a tail.
class IndexRun {
 public:
  // Appends an entry; `seq` must be larger than the last one's.
  void add(std::int64_t seq, std::int64_t stamp_ms, std::string_view jid,
           std::string_view resource);
  // Appends every entry of `other` (whose seqs all follow this run's).
  void append(const IndexRun& other);
  // Back to its first `entries` entries and `withs` correspondents (what it had before adds).
  void truncate(std::size_t entries, std::size_t withs);
  // Keeps only the entries with seq > `seq`.
  void drop_through(std::int64_t seq);

  bool empty() const { return size_ == 0; }
  std::size_t size() const { return size_; }
  std::int64_t first_seq() const { return first_seq_; }
  std::int64_t last_seq() const { return last_seq_; }
  std::int64_t min_stamp() const { return min_stamp_; }
  std::int64_t max_stamp() const { return max_stamp_; }
  const std::vector<IndexEntry>& entries() const { return entries_; }
  const std::vector<Correspondent>& withs() const { return withs_; }

  // The stored form: the correspondents with their counts, and the entries (deltas of seq and
  // stamp, and the correspondent's number, as varints).
  std::string encode_withs() const;
  std::string encode_entries() const;
  // Throws StoreError when a blob is malformed.
  static IndexRun decode(std::string_view withs, std::string_view entries);
  // A chunk's bounds and correspondents (with their counts) without its entries: enough for
  // can_match(), inside() and count() of a run inside a filter's bounds. entries() is empty.
  static IndexRun decode_head(std::string_view withs, std::int64_t first_seq, std::int64_t last_seq,
                              std::size_t size, std::int64_t min_stamp, std::int64_t max_stamp);

  // What `f` selects of the run, seqs list aside. can_match(): false when nothing in it can
  // match (seq or stamp bounds, correspondent absent). inside(): every entry lies within the
  // filter's seq and stamp bounds, so count() needs no entry (the correspondents' counts).
  bool can_match(const ArchiveFilter& f) const;
  bool inside(const ArchiveFilter& f) const;
  bool matches(const ArchiveFilter& f, const IndexEntry& e) const;
  std::size_t count(const ArchiveFilter& f) const;

 private:
  bool with_matches(const ArchiveFilter& f, std::uint32_t with) const;
  std::vector<IndexEntry> entries_;
  std::vector<Correspondent> withs_;
  std::size_t size_ = 0;
  std::int64_t first_seq_ = 0;
  std::int64_t last_seq_ = 0;
  std::int64_t min_stamp_ = INT64_MAX;
  std::int64_t max_stamp_ = INT64_MIN;
  // Finding a correspondent's number as entries are added: the hash of each correspondent
  // (jid, resource), in the order of `withs_`, scanned while there are few (the usual run: an
  // account writes to a handful of contacts, and a scan of a few words beats a map's pointer
  // chase); past kScanMax also a map from hash to number. Built on first add (a decoded run has
  // neither until then).
  static std::uint64_t key_hash(std::string_view jid, std::string_view resource);
  std::uint32_t number_of(std::string_view jid, std::string_view resource);
  static constexpr std::size_t kScanMax = 32;
  std::vector<std::uint64_t> hashes_;
  std::unordered_map<std::uint64_t, std::uint32_t> by_hash_;  // its first number with each hash
};

// Archive UIDs that name their message's seq: 16 hex digits of the seq, then 12 of random
// (XEP-0313 §3: unique in the archive, since seqs are; unpredictable, from the random part). The
// store finds the message from the id alone, with no index of ids.
std::string archive_id(std::int64_t seq, std::uint64_t random48);
// The same into `out` (its buffer reused).
void archive_id(std::int64_t seq, std::uint64_t random48, std::string& out);
// The seq an id of archive_id()'s form names; 0 for any other string.
std::int64_t archive_id_seq(std::string_view id);
// The seq after `last`: the microseconds since the epoch now, or last + 1 when that is not
// larger (the message log's and the store's rule for new seqs).
std::int64_t next_archive_seq(std::int64_t last);

}  // namespace kabar::store
