#include "store/inflight_journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "store/store.h"

namespace kabar::store {

namespace {

constexpr std::size_t kRecordHead = 8;            // length and checksum
constexpr std::uint32_t kMaxPayload = 64u << 20;  // far above any stanza kabard takes
constexpr char kAdded = 'A';
constexpr char kSettled = 'D';

std::uint32_t fnv1a(std::string_view bytes) {
  std::uint32_t h = 2166136261u;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 16777619u;
  }
  return h;
}

void put_u32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void put_i64(std::string& out, std::int64_t v) {
  const auto u = static_cast<std::uint64_t>(v);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((u >> (8 * i)) & 0xff));
}

void put_str(std::string& out, std::string_view s) {
  put_u32(out, static_cast<std::uint32_t>(s.size()));
  out.append(s);
}

// Reads from the front of `in`, which it shortens; false when too little is left.
bool get_u32(std::string_view& in, std::uint32_t& v) {
  if (in.size() < 4) return false;
  v = 0;
  for (int i = 0; i < 4; ++i)
    v |= static_cast<std::uint32_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  in.remove_prefix(4);
  return true;
}

bool get_i64(std::string_view& in, std::int64_t& v) {
  if (in.size() < 8) return false;
  std::uint64_t u = 0;
  for (int i = 0; i < 8; ++i)
    u |= static_cast<std::uint64_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  v = static_cast<std::int64_t>(u);
  in.remove_prefix(8);
  return true;
}

bool get_str(std::string_view& in, std::string& s) {
  std::uint32_t n = 0;
  if (!get_u32(in, n) || in.size() < n) return false;
  s.assign(in.substr(0, n));
  in.remove_prefix(n);
  return true;
}

// Starts a record of `kind` at the end of `out` (its head is filled in by seal()); returns where
// it starts.
std::size_t open_record(std::string& out, char kind) {
  const std::size_t head = out.size();
  out.append(kRecordHead, '\0');
  out.push_back(kind);
  return head;
}

// Fills in the head (length, checksum) of the record that starts at `head_at` in `out`.
void seal(std::string& out, std::size_t head_at) {
  const std::string_view payload = std::string_view(out).substr(head_at + kRecordHead);
  const auto length = static_cast<std::uint32_t>(payload.size());
  const std::uint32_t sum = fnv1a(payload);
  for (int i = 0; i < 4; ++i) {
    out[head_at + i] = static_cast<char>((length >> (8 * i)) & 0xff);
    out[head_at + 4 + i] = static_cast<char>((sum >> (8 * i)) & 0xff);
  }
}

// An 'A' payload's message; false when it is malformed.
bool parse_added(std::string_view payload, JournalRecord& rec) {
  if (payload.empty() || payload.front() != kAdded) return false;
  payload.remove_prefix(1);
  return get_i64(payload, rec.id) && get_i64(payload, rec.stamp_ms) &&
         get_str(payload, rec.username) && get_str(payload, rec.sender) &&
         get_str(payload, rec.stanza) && payload.empty() && rec.id > 0;
}

[[noreturn]] void fail(const std::filesystem::path& path, const char* what) {
  throw StoreError("in-flight journal " + path.string() + ": " + what + ": " +
                   std::strerror(errno));
}

// Reads `length` bytes at `offset` into `out`; false when the file ends first or a read fails.
bool read_at(int fd, std::uint64_t offset, char* out, std::size_t length) {
  std::size_t got = 0;
  while (got < length) {
    const ssize_t n = ::pread(fd, out + got, length - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    got += static_cast<std::size_t>(n);
  }
  return true;
}

// Writes `bytes` at `offset`; false when a write fails.
bool write_at(int fd, std::uint64_t offset, std::string_view bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n =
        ::pwrite(fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

std::optional<std::size_t> decode_journal(
    std::string_view bytes,
    const std::function<void(JournalRecord rec, std::uint64_t offset, std::uint32_t length)>& added,
    const std::function<void(std::int64_t id)>& settled) {
  const std::string_view magic = InFlightJournal::kMagic;
  if (bytes.substr(0, magic.size()) != magic) return std::nullopt;
  std::size_t pos = magic.size();
  while (bytes.size() - pos >= kRecordHead) {
    std::string_view head = bytes.substr(pos, kRecordHead);
    std::uint32_t length = 0;
    std::uint32_t sum = 0;
    get_u32(head, length);
    get_u32(head, sum);
    if (length == 0 || length > kMaxPayload || bytes.size() - pos - kRecordHead < length) break;
    const std::string_view payload = bytes.substr(pos + kRecordHead, length);
    if (fnv1a(payload) != sum) break;
    if (payload.front() == kAdded) {
      JournalRecord rec;
      if (!parse_added(payload, rec)) break;
      added(std::move(rec), pos, static_cast<std::uint32_t>(kRecordHead + length));
    } else if (payload.front() == kSettled && payload.size() == 9) {
      std::string_view p = payload.substr(1);
      std::int64_t id = 0;
      get_i64(p, id);
      settled(id);
    } else {
      break;
    }
    pos += kRecordHead + length;
  }
  return pos;
}

InFlightJournal::InFlightJournal(std::filesystem::path path, std::uint64_t compact_at)
    : path_(std::move(path)), compact_at_(compact_at) {
  // A compaction cut short by a crash left its new file, which never took the journal's name.
  ::unlink((path_.string() + ".new").c_str());
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) fail(path_, "cannot open");
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    ::close(fd_);
    fail(path_, "cannot stat");
  }
  std::string bytes(static_cast<std::size_t>(st.st_size), '\0');
  if (!read_at(fd_, 0, bytes.data(), bytes.size())) {
    ::close(fd_);
    fail(path_, "cannot read");
  }
  // New, or its header torn by a crash as it was first written: nothing was ever in it.
  if (bytes.size() < kMagic.size() && kMagic.starts_with(bytes)) {
    if (!write_at(fd_, 0, kMagic)) {
      ::close(fd_);
      fail(path_, "cannot write");
    }
    size_ = kMagic.size();
    return;
  }
  const auto whole = decode_journal(
      bytes,
      [this](JournalRecord rec, std::uint64_t offset, std::uint32_t length) {
        note_live(rec.id, offset, length, std::move(rec.username));
      },
      [this](std::int64_t id) { note_settled(id); });
  if (!whole) {
    ::close(fd_);
    fd_ = -1;
    throw StoreError("in-flight journal " + path_.string() + ": not a journal of kabard's");
  }
  size_ = *whole;
  // A crash in the middle of a write left a torn record: it was never acknowledged to anyone
  // (its batch had not returned), and the next write goes where it began.
  if (size_ < bytes.size() && ::ftruncate(fd_, static_cast<off_t>(size_)) != 0) {
    ::close(fd_);
    fail(path_, "cannot cut a torn record");
  }
}

InFlightJournal::~InFlightJournal() {
  if (fd_ >= 0) ::close(fd_);
}

void InFlightJournal::note_live(std::int64_t id, std::uint64_t offset, std::uint32_t length,
                                std::string username) {
  max_id_ = std::max(max_id_, id);
  auto [it, fresh] = live_.try_emplace(id);
  if (!fresh) live_bytes_ -= it->second.length;
  it->second = Live{offset, length, std::move(username)};
  live_bytes_ += length;
}

void InFlightJournal::note_settled(std::int64_t id) {
  if (auto it = live_.find(id); it != live_.end()) {
    live_bytes_ -= it->second.length;
    live_.erase(it);
  }
}

void InFlightJournal::append(const std::vector<JournalEntry>& added,
                             const std::vector<std::int64_t>& settled) {
  std::string out;
  std::size_t want = 0;
  for (const JournalEntry& e : added) {
    want += kRecordHead + 1 + 16 + 12 + e.username.size() + e.sender.size() + e.stanza.size();
  }
  out.reserve(want + settled.size() * (kRecordHead + 9));
  std::vector<std::uint32_t> lengths;
  lengths.reserve(added.size());
  for (const JournalEntry& e : added) {
    const std::size_t head = open_record(out, kAdded);
    put_i64(out, e.id);
    put_i64(out, e.stamp_ms);
    put_str(out, e.username);
    put_str(out, e.sender);
    put_str(out, e.stanza);
    seal(out, head);
    lengths.push_back(static_cast<std::uint32_t>(out.size() - head));
  }
  std::size_t marks = 0;
  for (std::int64_t id : settled) {
    if (!live_.contains(id)) continue;
    const std::size_t head = open_record(out, kSettled);
    put_i64(out, id);
    seal(out, head);
    ++marks;
  }
  if (out.empty()) return;
  // A failed write leaves at most a torn record past size_, which the next write overwrites
  // (and a reader would stop at).
  if (!write_at(fd_, size_, out)) fail(path_, "cannot write");
  std::uint64_t at = size_;
  for (std::size_t i = 0; i < added.size(); ++i) {
    note_live(added[i].id, at, lengths[i], std::string(added[i].username));
    at += lengths[i];
  }
  if (marks > 0) {
    for (std::int64_t id : settled) note_settled(id);
  }
  size_ += out.size();
  maybe_compact();
}

bool InFlightJournal::live(std::int64_t id, std::string_view username) const {
  auto it = live_.find(id);
  return it != live_.end() && it->second.username == username;
}

JournalRecord InFlightJournal::read(std::int64_t id) const {
  auto it = live_.find(id);
  if (it == live_.end()) throw StoreError("in-flight journal: no message " + std::to_string(id));
  std::string bytes(it->second.length, '\0');
  if (!read_at(fd_, it->second.offset, bytes.data(), bytes.size())) fail(path_, "cannot read");
  JournalRecord rec;
  if (!parse_added(std::string_view(bytes).substr(kRecordHead), rec) || rec.id != id) {
    throw StoreError("in-flight journal " + path_.string() + ": message " + std::to_string(id) +
                     " is not where it was written");
  }
  return rec;
}

std::vector<JournalRecord> InFlightJournal::live_records() const {
  std::vector<std::int64_t> ids;
  ids.reserve(live_.size());
  for (const auto& [id, l] : live_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  std::vector<JournalRecord> out;
  out.reserve(ids.size());
  for (std::int64_t id : ids) out.push_back(read(id));
  return out;
}

std::vector<std::int64_t> InFlightJournal::ids_of(std::string_view username) const {
  std::vector<std::int64_t> ids;
  for (const auto& [id, l] : live_) {
    if (l.username == username) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

void InFlightJournal::clear() {
  if (::ftruncate(fd_, static_cast<off_t>(kMagic.size())) != 0) fail(path_, "cannot truncate");
  size_ = kMagic.size();
  live_.clear();
  live_bytes_ = 0;
}

void InFlightJournal::maybe_compact() {
  if (size_ <= compact_at_ || size_ <= 4 * live_bytes_ + kMagic.size()) return;
  // The live records, in the order written, into a new file that then takes this one's name.
  std::vector<std::pair<std::uint64_t, std::int64_t>> order;  // offset, id
  order.reserve(live_.size());
  for (const auto& [id, l] : live_) order.emplace_back(l.offset, id);
  std::sort(order.begin(), order.end());
  std::string out(kMagic);
  out.reserve(kMagic.size() + live_bytes_);
  std::vector<std::uint64_t> offsets;
  offsets.reserve(order.size());
  const std::filesystem::path tmp = path_.string() + ".new";
  int fd = -1;
  try {
    for (const auto& [offset, id] : order) {
      const Live& l = live_.at(id);
      const std::size_t at = out.size();
      out.resize(at + l.length);
      if (!read_at(fd_, offset, out.data() + at, l.length)) fail(path_, "cannot read");
      offsets.push_back(at);
    }
    fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) fail(tmp, "cannot create");
    if (!write_at(fd, 0, out)) fail(tmp, "cannot write");
    if (::fdatasync(fd) != 0) fail(tmp, "cannot sync");
    if (::rename(tmp.c_str(), path_.c_str()) != 0) fail(tmp, "cannot rename");
  } catch (const StoreError&) {
    // The old file still holds everything: compaction is tried again after the next write.
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    return;
  }
  if (const int dir = ::open(path_.parent_path().empty() ? "." : path_.parent_path().c_str(),
                             O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  ::close(fd_);
  fd_ = fd;
  size_ = out.size();
  for (std::size_t i = 0; i < order.size(); ++i) live_.at(order[i].second).offset = offsets[i];
  ++compactions_;
}

}  // namespace kabar::store
