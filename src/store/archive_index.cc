#include "store/archive_index.h"

#include <algorithm>
#include <chrono>

namespace kabar::store {

namespace {

void put_varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

std::uint64_t zigzag(std::int64_t v) {
  return (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63);
}

std::int64_t unzigzag(std::uint64_t v) {
  return static_cast<std::int64_t>(v >> 1) ^ -static_cast<std::int64_t>(v & 1);
}

// a - b and a + b without signed overflow (a damaged blob may hold any delta): modulo 2^64, as
// encode and decode both count.
std::int64_t minus(std::int64_t a, std::int64_t b) {
  return static_cast<std::int64_t>(static_cast<std::uint64_t>(a) - static_cast<std::uint64_t>(b));
}
std::int64_t plus(std::int64_t a, std::int64_t b) {
  return static_cast<std::int64_t>(static_cast<std::uint64_t>(a) + static_cast<std::uint64_t>(b));
}

void put_string(std::string& out, std::string_view s) {
  put_varint(out, s.size());
  out += s;
}

// Reads a blob written by put_varint()/put_string(); throws on a short or malformed one.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool done() const { return pos_ == in_.size(); }
  std::uint64_t varint() {
    std::uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ == in_.size()) bad();
      const auto b = static_cast<unsigned char>(in_[pos_++]);
      v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return v;
    }
    bad();
  }
  std::string_view string() {
    const std::uint64_t n = varint();
    if (n > in_.size() - pos_) bad();
    std::string_view s = in_.substr(pos_, n);
    pos_ += n;
    return s;
  }

 private:
  [[noreturn]] static void bad() { throw StoreError("archive index: a malformed chunk"); }
  std::string_view in_;
  std::size_t pos_ = 0;
};

}  // namespace

std::uint64_t IndexRun::key_hash(std::string_view jid, std::string_view resource) {
  const std::uint64_t h = std::hash<std::string_view>{}(jid);
  const std::uint64_t r = std::hash<std::string_view>{}(resource);
  return h ^ (r + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2));
}

std::uint32_t IndexRun::number_of(std::string_view jid, std::string_view resource) {
  while (hashes_.size() < withs_.size()) {  // a decoded run: its hashes on first use
    const Correspondent& c = withs_[hashes_.size()];
    hashes_.push_back(key_hash(c.jid, c.resource));
    if (withs_.size() > kScanMax) by_hash_.try_emplace(hashes_.back(), hashes_.size() - 1);
  }
  const std::uint64_t h = key_hash(jid, resource);
  auto is = [&](std::size_t i) { return withs_[i].jid == jid && withs_[i].resource == resource; };
  if (withs_.size() <= kScanMax) {
    for (std::size_t i = 0; i < hashes_.size(); ++i) {
      if (hashes_[i] == h && is(i)) return static_cast<std::uint32_t>(i);
    }
  } else if (auto it = by_hash_.find(h); it != by_hash_.end()) {
    if (is(it->second)) return it->second;
    // Two correspondents with one hash: the rare case, found by a scan.
    for (std::size_t i = it->second + 1; i < hashes_.size(); ++i) {
      if (hashes_[i] == h && is(i)) return static_cast<std::uint32_t>(i);
    }
  }
  const auto n = static_cast<std::uint32_t>(withs_.size());
  withs_.push_back(Correspondent{std::string(jid), std::string(resource), 0});
  hashes_.push_back(h);
  if (withs_.size() == kScanMax + 1) {  // from now on through the map
    for (std::uint32_t i = 0; i < hashes_.size(); ++i) by_hash_.try_emplace(hashes_[i], i);
  } else if (withs_.size() > kScanMax + 1) {
    by_hash_.try_emplace(h, n);
  }
  return n;
}

void IndexRun::add(std::int64_t seq, std::int64_t stamp_ms, std::string_view jid,
                   std::string_view resource) {
  const std::uint32_t with = number_of(jid, resource);
  ++withs_[with].count;
  entries_.push_back(IndexEntry{seq, stamp_ms, with});
  if (size_++ == 0) first_seq_ = seq;
  last_seq_ = seq;
  min_stamp_ = std::min(min_stamp_, stamp_ms);
  max_stamp_ = std::max(max_stamp_, stamp_ms);
}

void IndexRun::append(const IndexRun& other) {
  for (const IndexEntry& e : other.entries_) {
    const Correspondent& c = other.withs_[e.with];
    add(e.seq, e.stamp_ms, c.jid, c.resource);
  }
}

void IndexRun::truncate(std::size_t entries, std::size_t withs) {
  while (entries_.size() > entries) {
    --withs_[entries_.back().with].count;
    entries_.pop_back();
  }
  if (withs_.size() > withs) {
    withs_.resize(withs);
    hashes_.resize(std::min(hashes_.size(), withs));
    if (withs <= kScanMax) {
      by_hash_.clear();
    } else {
      std::erase_if(by_hash_, [&](const auto& kv) { return kv.second >= withs; });
    }
  }
  size_ = entries_.size();
  min_stamp_ = INT64_MAX;
  max_stamp_ = INT64_MIN;
  for (const IndexEntry& e : entries_) {
    min_stamp_ = std::min(min_stamp_, e.stamp_ms);
    max_stamp_ = std::max(max_stamp_, e.stamp_ms);
  }
  if (size_ > 0) {
    first_seq_ = entries_.front().seq;
    last_seq_ = entries_.back().seq;
  }
}

void IndexRun::drop_through(std::int64_t seq) {
  if (entries_.empty() || entries_.front().seq > seq) return;
  IndexRun kept;
  for (const IndexEntry& e : entries_) {
    if (e.seq <= seq) continue;
    const Correspondent& c = withs_[e.with];
    kept.add(e.seq, e.stamp_ms, c.jid, c.resource);
  }
  *this = std::move(kept);
}

std::string IndexRun::encode_withs() const {
  std::string out;
  put_varint(out, withs_.size());
  for (const Correspondent& c : withs_) {
    put_string(out, c.jid);
    put_string(out, c.resource);
    put_varint(out, c.count);
  }
  return out;
}

std::string IndexRun::encode_entries() const {
  std::string out;
  out.reserve(entries_.size() * 6);
  std::int64_t seq = 0;
  std::int64_t stamp = 0;
  for (const IndexEntry& e : entries_) {
    put_varint(out, zigzag(minus(e.seq, seq)));
    put_varint(out, zigzag(minus(e.stamp_ms, stamp)));
    put_varint(out, e.with);
    seq = e.seq;
    stamp = e.stamp_ms;
  }
  return out;
}

namespace {

std::vector<Correspondent> decode_withs(std::string_view withs, bool counts) {
  std::vector<Correspondent> out;
  Reader w(withs);
  const std::uint64_t n = w.varint();
  if (n > withs.size()) throw StoreError("archive index: a malformed chunk");
  out.reserve(n);
  for (std::uint64_t i = 0; i < n; ++i) {
    Correspondent c;
    c.jid = std::string(w.string());
    c.resource = std::string(w.string());
    const std::uint64_t count = w.varint();
    if (counts) c.count = static_cast<std::uint32_t>(count);
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace

IndexRun IndexRun::decode_head(std::string_view withs, std::int64_t first_seq,
                               std::int64_t last_seq, std::size_t size, std::int64_t min_stamp,
                               std::int64_t max_stamp) {
  IndexRun run;
  run.withs_ = decode_withs(withs, true);
  run.size_ = size;
  run.first_seq_ = first_seq;
  run.last_seq_ = last_seq;
  run.min_stamp_ = min_stamp;
  run.max_stamp_ = max_stamp;
  return run;
}

IndexRun IndexRun::decode(std::string_view withs, std::string_view entries) {
  IndexRun run;
  run.withs_ = decode_withs(withs, false);  // counted again from the entries below
  Reader r(entries);
  std::int64_t seq = 0;
  std::int64_t stamp = 0;
  while (!r.done()) {
    seq = plus(seq, unzigzag(r.varint()));
    stamp = plus(stamp, unzigzag(r.varint()));
    const std::uint64_t with = r.varint();
    // Seqs are positive and grow.
    if (with >= run.withs_.size() || seq <= 0 ||
        (!run.entries_.empty() && seq <= run.entries_.back().seq)) {
      throw StoreError("archive index: a malformed chunk");
    }
    run.entries_.push_back(IndexEntry{seq, stamp, static_cast<std::uint32_t>(with)});
    if (run.size_++ == 0) run.first_seq_ = seq;
    run.last_seq_ = seq;
    ++run.withs_[with].count;
    run.min_stamp_ = std::min(run.min_stamp_, stamp);
    run.max_stamp_ = std::max(run.max_stamp_, stamp);
  }
  return run;
}

bool IndexRun::with_matches(const ArchiveFilter& f, std::uint32_t with) const {
  if (f.with.empty()) return true;
  const Correspondent& c = withs_[with];
  return c.jid == f.with && (f.with_resource.empty() || c.resource == f.with_resource);
}

bool IndexRun::can_match(const ArchiveFilter& f) const {
  if (size_ == 0) return false;
  if (last_seq() <= f.after_seq || first_seq() >= f.before_seq) return false;
  if (f.start_ms && max_stamp_ < *f.start_ms) return false;
  if (f.end_ms && min_stamp_ > *f.end_ms) return false;
  if (f.with.empty()) return true;
  for (std::uint32_t i = 0; i < withs_.size(); ++i) {
    if (with_matches(f, i)) return true;
  }
  return false;
}

bool IndexRun::inside(const ArchiveFilter& f) const {
  return size_ != 0 && first_seq() > f.after_seq && last_seq() < f.before_seq &&
         (!f.start_ms || min_stamp_ >= *f.start_ms) && (!f.end_ms || max_stamp_ <= *f.end_ms);
}

bool IndexRun::matches(const ArchiveFilter& f, const IndexEntry& e) const {
  if (e.seq <= f.after_seq || e.seq >= f.before_seq) return false;
  if (f.start_ms && e.stamp_ms < *f.start_ms) return false;
  if (f.end_ms && e.stamp_ms > *f.end_ms) return false;
  return with_matches(f, e.with);
}

std::size_t IndexRun::count(const ArchiveFilter& f) const {
  if (!can_match(f)) return 0;
  if (inside(f)) {
    if (f.with.empty()) return size_;
    std::size_t n = 0;
    for (std::uint32_t i = 0; i < withs_.size(); ++i) {
      if (with_matches(f, i)) n += withs_[i].count;
    }
    return n;
  }
  return static_cast<std::size_t>(std::count_if(
      entries_.begin(), entries_.end(), [&](const IndexEntry& e) { return matches(f, e); }));
}

std::string archive_id(std::int64_t seq, std::uint64_t random48) {
  std::string id;
  archive_id(seq, random48, id);
  return id;
}

void archive_id(std::int64_t seq, std::uint64_t random48, std::string& out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.assign(28, '0');
  auto s = static_cast<std::uint64_t>(seq);
  for (int i = 15; i >= 0; --i, s >>= 4) out[static_cast<std::size_t>(i)] = kHex[s & 0xf];
  for (int i = 27; i >= 16; --i, random48 >>= 4) {
    out[static_cast<std::size_t>(i)] = kHex[random48 & 0xf];
  }
}

std::int64_t next_archive_seq(std::int64_t last) {
  const std::int64_t now = std::chrono::duration_cast<std::chrono::microseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  return std::max(last + 1, now);
}

std::int64_t archive_id_seq(std::string_view id) {
  if (id.size() != 28) return 0;
  std::uint64_t seq = 0;
  for (std::size_t i = 0; i < 28; ++i) {
    const char c = id[i];
    int v = 0;
    if (c >= '0' && c <= '9') {
      v = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      v = c - 'a' + 10;
    } else {
      return 0;
    }
    if (i < 16) seq = (seq << 4) | static_cast<std::uint64_t>(v);
  }
  return seq > static_cast<std::uint64_t>(INT64_MAX) ? 0 : static_cast<std::int64_t>(seq);
}

}  // namespace kabar::store
