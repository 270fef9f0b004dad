// The in-flight journal (store/inflight_journal.h): what is live comes back at the next open, a
// torn or damaged tail ends the file there, and compaction keeps exactly what is live.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "store/inflight_journal.h"
#include "store/store.h"

namespace kabar::store {
namespace {

namespace fs = std::filesystem;

class InFlightJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "kabar-journal-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    file_ = dir_ / "kabar.db-in-flight";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  // Messages `first`..`first + n - 1`, of bob unless told, each with a body naming it.
  static std::vector<std::string> stanzas(std::int64_t first, int n) {
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i) {
      out.push_back("<message><body>m" + std::to_string(first + i) + "</body></message>");
    }
    return out;
  }
  static void add(InFlightJournal& j, std::int64_t first, int n, std::string_view user = "bob") {
    const auto bodies = stanzas(first, n);
    std::vector<JournalEntry> entries;
    for (int i = 0; i < n; ++i) {
      entries.push_back(JournalEntry{first + i, 1000 + first + i, user, "alice@localhost",
                                     bodies[static_cast<std::size_t>(i)]});
    }
    j.append(entries, {});
  }
  std::string contents() const {
    std::ifstream in(file_, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  void overwrite(const std::string& bytes) const {
    std::ofstream out(file_, std::ios::binary | std::ios::trunc);
    out << bytes;
  }
  static std::vector<std::int64_t> ids(const std::vector<JournalRecord>& recs) {
    std::vector<std::int64_t> out;
    for (const auto& r : recs) out.push_back(r.id);
    return out;
  }

  fs::path dir_;
  fs::path file_;
};

TEST_F(InFlightJournalTest, WhatIsLiveComesBack) {
  std::ofstream(file_.string() + ".new") << "a compaction cut short";
  {
    InFlightJournal j(file_);
    EXPECT_FALSE(fs::exists(file_.string() + ".new"));
    EXPECT_EQ(j.live_count(), 0u);
    add(j, 1, 3);
    add(j, 4, 1, "carol");
    j.append({}, {2, 99});  // 99 was never written: no mark
    EXPECT_EQ(j.live_count(), 3u);
    EXPECT_TRUE(j.live(4, "carol"));
    EXPECT_FALSE(j.live(4, "bob"));  // another account's id
    EXPECT_FALSE(j.live(2, "bob"));
  }
  InFlightJournal j(file_);
  EXPECT_EQ(j.max_id(), 4);
  const auto live = j.live_records();
  EXPECT_EQ(ids(live), (std::vector<std::int64_t>{1, 3, 4}));
  EXPECT_EQ(live[1].username, "bob");
  EXPECT_EQ(live[1].sender, "alice@localhost");
  EXPECT_EQ(live[1].stamp_ms, 1003);
  EXPECT_EQ(live[1].stanza, "<message><body>m3</body></message>");
  EXPECT_EQ(j.ids_of("carol"), (std::vector<std::int64_t>{4}));
  j.clear();
  EXPECT_EQ(j.live_count(), 0u);
  EXPECT_EQ(j.file_bytes(), InFlightJournal::kMagic.size());
  EXPECT_EQ(contents(), std::string(InFlightJournal::kMagic));
}

// A crash in the middle of a write: the torn record is not read, and is written over.
TEST_F(InFlightJournalTest, ATornTailEndsTheFile) {
  std::size_t two = 0;
  {
    InFlightJournal j(file_);
    add(j, 1, 2);
    two = j.file_bytes();
    add(j, 3, 1);
  }
  for (std::size_t cut = two; cut < contents().size(); cut += 7) {
    const std::string whole = contents();
    overwrite(whole.substr(0, cut));
    {
      InFlightJournal j(file_);
      EXPECT_EQ(ids(j.live_records()), (std::vector<std::int64_t>{1, 2})) << "cut at " << cut;
      EXPECT_EQ(j.file_bytes(), two);
      add(j, 3, 1);
    }
    InFlightJournal j(file_);
    EXPECT_EQ(ids(j.live_records()), (std::vector<std::int64_t>{1, 2, 3}));
  }
}

// A damaged record ends the file too: what follows it is not read.
TEST_F(InFlightJournalTest, ADamagedRecordEndsTheFile) {
  std::size_t one = 0;
  {
    InFlightJournal j(file_);
    add(j, 1, 1);
    one = j.file_bytes();
    add(j, 2, 2);
  }
  std::string bytes = contents();
  bytes[one + 20] ^= 0x40;  // inside record 2's payload: its checksum no longer matches
  overwrite(bytes);
  InFlightJournal j(file_);
  EXPECT_EQ(ids(j.live_records()), (std::vector<std::int64_t>{1}));
  EXPECT_EQ(contents().size(), one);
}

// A crash as the file was first written left part of its header: an empty journal.
TEST_F(InFlightJournalTest, ATornHeaderIsAnEmptyJournal) {
  overwrite(std::string(InFlightJournal::kMagic.substr(0, 5)));
  {
    InFlightJournal j(file_);
    EXPECT_EQ(j.live_count(), 0u);
    add(j, 1, 1);
  }
  InFlightJournal j(file_);
  EXPECT_EQ(ids(j.live_records()), (std::vector<std::int64_t>{1}));
}

TEST_F(InFlightJournalTest, AnotherFileIsRefused) {
  overwrite("SQLite format 3");
  EXPECT_THROW(InFlightJournal j(file_), StoreError);
  EXPECT_EQ(contents(), "SQLite format 3");  // left as it was
}

// Compaction: once the file is large and mostly settled, the live records move to a new file,
// and come back from it.
TEST_F(InFlightJournalTest, CompactionKeepsWhatIsLive) {
  std::uint64_t largest = 0;
  {
    InFlightJournal j(file_, 4096);
    std::int64_t next = 1;
    for (int round = 0; round < 50; ++round) {
      add(j, next, 10);
      // All settle but the first two ever written, and the newest round's last.
      std::vector<std::int64_t> settled;
      for (std::int64_t id = std::max<std::int64_t>(next - 1, 3); id < next + 9; ++id) {
        settled.push_back(id);
      }
      j.append({}, settled);
      next += 10;
      largest = std::max(largest, j.file_bytes());
    }
    EXPECT_GT(j.compactions(), 0u);
    EXPECT_LT(largest, 4096u + 2048u);  // one round's records past the threshold at most
    EXPECT_EQ(j.live_count(), 3u);
    EXPECT_EQ(j.read(2).stanza, "<message><body>m2</body></message>");
  }
  EXPECT_FALSE(fs::exists(file_.string() + ".new"));
  InFlightJournal j(file_);
  const auto live = j.live_records();
  EXPECT_EQ(ids(live), (std::vector<std::int64_t>{1, 2, 500}));
  EXPECT_EQ(live[2].stanza, "<message><body>m500</body></message>");
  EXPECT_EQ(live[2].stamp_ms, 1500);
}

}  // namespace
}  // namespace kabar::store
