#include <gtest/gtest.h>

#include "store/archive_index.h"

namespace kabar::store {
namespace {

IndexRun sample() {
  IndexRun run;
  run.add(10, 5000, "bob@example.com", "pc");
  run.add(11, 4990, "carol@example.com", "");  // stamped a little before the one before it
  run.add(300, 6000, "bob@example.com", "pc");
  run.add(1'800'000'000'000'000, 7000, "bob@example.com", "phone");
  return run;
}

TEST(ArchiveIndex, RunsRoundTripThroughTheirStoredForm) {
  const IndexRun run = sample();
  const IndexRun back = IndexRun::decode(run.encode_withs(), run.encode_entries());
  ASSERT_EQ(back.size(), 4u);
  EXPECT_EQ(back.first_seq(), 10);
  EXPECT_EQ(back.last_seq(), 1'800'000'000'000'000);
  EXPECT_EQ(back.min_stamp(), 4990);
  EXPECT_EQ(back.max_stamp(), 7000);
  ASSERT_EQ(back.withs().size(), 3u);
  EXPECT_EQ(back.withs()[0].count, 2u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(back.entries()[i].seq, run.entries()[i].seq);
    EXPECT_EQ(back.entries()[i].stamp_ms, run.entries()[i].stamp_ms);
    EXPECT_EQ(back.withs()[back.entries()[i].with].jid, run.withs()[run.entries()[i].with].jid);
  }
  const IndexRun head =
      IndexRun::decode_head(run.encode_withs(), 10, 1'800'000'000'000'000, 4, 4990, 7000);
  ArchiveFilter bob;
  bob.with = "bob@example.com";
  EXPECT_EQ(head.count(bob), 3u);
  bob.with_resource = "pc";
  EXPECT_EQ(head.count(bob), 2u);
}

TEST(ArchiveIndex, FiltersSkipAndCountRuns) {
  const IndexRun run = sample();
  ArchiveFilter f;
  EXPECT_TRUE(run.inside(f));
  EXPECT_EQ(run.count(f), 4u);
  f.after_seq = 10;
  EXPECT_FALSE(run.inside(f));
  EXPECT_EQ(run.count(f), 3u);
  f.before_seq = 301;
  EXPECT_EQ(run.count(f), 2u);
  ArchiveFilter late;
  late.start_ms = 7001;
  EXPECT_FALSE(run.can_match(late));
  ArchiveFilter nobody;
  nobody.with = "dave@example.com";
  EXPECT_FALSE(run.can_match(nobody));
  ArchiveFilter early;
  early.end_ms = 4995;
  EXPECT_EQ(run.count(early), 1u);
}

TEST(ArchiveIndex, TruncateAndDropPutARunBack) {
  IndexRun run = sample();
  run.truncate(2, 2);
  EXPECT_EQ(run.size(), 2u);
  EXPECT_EQ(run.last_seq(), 11);
  EXPECT_EQ(run.withs().size(), 2u);
  EXPECT_EQ(run.withs()[0].count, 1u);
  EXPECT_EQ(run.max_stamp(), 5000);
  run.add(12, 5100, "dave@example.com", "");
  EXPECT_EQ(run.withs().size(), 3u);
  run.drop_through(10);
  EXPECT_EQ(run.size(), 2u);
  EXPECT_EQ(run.first_seq(), 11);
  run.drop_through(100);
  EXPECT_TRUE(run.empty());
}

// A run finds each correspondent's number by a scan while it has few and through a map past
// that: the same numbers either way, across truncate() back under the limit and a decode.
TEST(ArchiveIndex, ManyCorrespondentsKeepTheirNumbers) {
  auto jid = [](int i) { return "c" + std::to_string(i) + "@example.com"; };
  IndexRun run;
  std::int64_t seq = 1;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 100; ++i) {
      run.add(seq, 1000 + seq, jid(i), i % 2 == 0 ? "" : "r");
      ++seq;
    }
  }
  ASSERT_EQ(run.withs().size(), 100u);
  for (std::size_t i = 0; i < run.entries().size(); ++i) {
    EXPECT_EQ(run.entries()[i].with, i % 100);
  }
  for (const Correspondent& c : run.withs()) EXPECT_EQ(c.count, 3u);
  // The same JID with another resource is another correspondent.
  run.add(seq++, 5000, jid(0), "r");
  EXPECT_EQ(run.entries().back().with, 100u);

  run.truncate(40, 40);  // back under the map's limit and over it again
  EXPECT_EQ(run.withs().size(), 40u);
  run.add(seq++, 5001, jid(39), "r");
  EXPECT_EQ(run.entries().back().with, 39u);
  run.add(seq++, 5002, jid(70), "");
  EXPECT_EQ(run.entries().back().with, 40u);
  run.truncate(10, 10);
  run.add(seq++, 5003, jid(70), "");
  EXPECT_EQ(run.entries().back().with, 10u);
  run.add(seq++, 5004, jid(4), "");
  EXPECT_EQ(run.entries().back().with, 4u);

  IndexRun back = IndexRun::decode(run.encode_withs(), run.encode_entries());
  for (int i = 0; i < 60; ++i) back.add(seq++, 6000, jid(i), i % 2 == 0 ? "" : "r");
  ASSERT_EQ(back.withs().size(), 61u);  // c0..c9, c70, then c10..c59
  EXPECT_EQ(back.entries().back().with, 60u);
  EXPECT_EQ(back.withs()[10].jid, jid(70));
  EXPECT_EQ(back.withs()[10].count, 1u);
  EXPECT_EQ(back.withs()[4].count, 2u + 1u);  // twice before the truncate's cut, once after
}

TEST(ArchiveIndex, MalformedBlobsAreStoreErrors) {
  const IndexRun run = sample();
  const std::string withs = run.encode_withs();
  const std::string entries = run.encode_entries();
  EXPECT_THROW(IndexRun::decode(withs.substr(0, withs.size() - 3), entries), StoreError);
  EXPECT_THROW(IndexRun::decode(withs, entries.substr(0, entries.size() - 1)), StoreError);
  EXPECT_THROW(IndexRun::decode(withs, std::string("\x02\x02\x09", 3)), StoreError);  // with 9
  EXPECT_THROW(IndexRun::decode(withs, std::string("\x02\x02\x00\x00\x00\x00", 6)),
               StoreError);  // a seq that does not grow
  EXPECT_THROW(IndexRun::decode(std::string(12, '\xff'), ""), StoreError);
}

TEST(ArchiveIndex, IdsNameTheirSeq) {
  const std::string id = archive_id(1'765'000'000'123'456, 0x0123456789ab);
  EXPECT_EQ(id.size(), 28u);
  EXPECT_EQ(id.substr(16), "0123456789ab");
  EXPECT_EQ(archive_id_seq(id), 1'765'000'000'123'456);
  EXPECT_EQ(archive_id_seq("id3"), 0);
  EXPECT_EQ(archive_id_seq(std::string(28, 'g')), 0);
  EXPECT_EQ(archive_id_seq("0000000000000000000000000000"), 0);
  EXPECT_EQ(archive_id_seq("ffffffffffffffff000000000000"), 0);  // past INT64_MAX
  EXPECT_EQ(archive_id_seq("0001000000000000ABCDEF000000"), 0);  // upper case is not ours
}

}  // namespace
}  // namespace kabar::store
