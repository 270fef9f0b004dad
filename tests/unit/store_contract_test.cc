// The contract every Store backend keeps, run against SQLite and the in-memory fake: a module
// unit-tested against the fake sees what kabard's SQLite store would do.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>

#include "store/store.h"
#include "store_test_util.h"

namespace kabar::store {
namespace {

namespace fs = std::filesystem;
using namespace kabar::store::testing;

enum class Backend { kSqlite, kMemory };

class StoreContractTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (GetParam() == Backend::kSqlite) {
      std::string tmpl = (fs::temp_directory_path() / "kabar-store-contract-XXXXXX").string();
      ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
      root_ = tmpl;
    }
    open();
  }
  void TearDown() override {
    store_.reset();
    if (!root_.empty()) {
      std::error_code ec;
      fs::remove_all(root_, ec);
    }
  }
  void open() {
    store_ =
        GetParam() == Backend::kSqlite ? open_sqlite_store(root_ / "data") : make_memory_store();
  }
  // SQLite: closes and opens the file again (what persists must). The fake keeps its one copy.
  void reopen() {
    if (GetParam() == Backend::kSqlite) {
      store_.reset();
      open();
    }
  }

  fs::path root_;
  std::unique_ptr<Store> store_;
};

// Accounts.

TEST_P(StoreContractTest, AccountCreateGet) {
  Account a = make_account("alice");
  ASSERT_TRUE(store_->create_account(a));
  auto got = store_->account("alice");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->username, "alice");
  expect_same(got->sha1, a.sha1);
  expect_same(got->sha256, a.sha256);
  EXPECT_EQ(got->created_unix, 1700000000);
  EXPECT_FALSE(store_->account("bob"));
  EXPECT_FALSE(store_->account("Alice"));  // the store compares exactly; callers nodeprep
}

TEST_P(StoreContractTest, AccountEmptyBlobsRoundTrip) {
  Account a{"empty", {}, {}, 0};
  ASSERT_TRUE(store_->create_account(a));
  auto got = store_->account("empty");
  ASSERT_TRUE(got);
  expect_same(got->sha1, ScramCredentials{});
  expect_same(got->sha256, ScramCredentials{});
}

TEST_P(StoreContractTest, AccountCreateConflictKeepsTheOriginal) {
  ASSERT_TRUE(store_->create_account(make_account("alice", 'a')));
  EXPECT_FALSE(store_->create_account(make_account("alice", 'z', 5)));
  auto got = store_->account("alice");
  ASSERT_TRUE(got);
  expect_same(got->sha1, creds('a', 4096));
  EXPECT_EQ(got->created_unix, 1700000000);
}

TEST_P(StoreContractTest, AccountSetCredentials) {
  ASSERT_TRUE(store_->create_account(make_account("alice", 'a')));
  Account changed = make_account("alice", 'q', 99);
  ASSERT_TRUE(store_->set_credentials(changed));
  auto got = store_->account("alice");
  ASSERT_TRUE(got);
  expect_same(got->sha1, changed.sha1);
  expect_same(got->sha256, changed.sha256);
  EXPECT_EQ(got->created_unix, 1700000000);  // creation time is not a credential
  EXPECT_FALSE(store_->set_credentials(make_account("nobody")));
  EXPECT_FALSE(store_->account("nobody"));
}

TEST_P(StoreContractTest, AccountDeleteAndList) {
  EXPECT_TRUE(store_->list_accounts().empty());
  for (const char* n : {"zed", "alice", "mallory", "bob"}) {
    ASSERT_TRUE(store_->create_account(make_account(n)));
  }
  EXPECT_EQ(store_->list_accounts(), (std::vector<std::string>{"alice", "bob", "mallory", "zed"}));
  EXPECT_TRUE(store_->delete_account("mallory"));
  EXPECT_FALSE(store_->delete_account("mallory"));
  EXPECT_FALSE(store_->account("mallory"));
  EXPECT_EQ(store_->list_accounts(), (std::vector<std::string>{"alice", "bob", "zed"}));
  // The name is free again.
  EXPECT_TRUE(store_->create_account(make_account("mallory")));
}

TEST_P(StoreContractTest, DeleteAccountCascades) {
  ASSERT_TRUE(store_->create_account(make_account("alice")));
  ASSERT_TRUE(store_->create_account(make_account("bob")));
  for (const char* user : {"alice", "bob"}) {
    store_->put_roster_item(user, item("x@example.com", {"G1", "G2"}));
    store_->put_roster_item(user, item("y@example.com"));
    ASSERT_TRUE(store_->push_offline(user, "<message/>", 1, 10));
    store_->set_vcard(user, "<vCard/>");
    store_->set_last_activity(user, {5, "bye"});
  }
  ASSERT_TRUE(store_->delete_account("alice"));
  EXPECT_FALSE(store_->account("alice"));
  EXPECT_TRUE(store_->roster("alice").empty());
  EXPECT_FALSE(store_->roster_item("alice", "x@example.com"));
  EXPECT_EQ(store_->roster_version("alice"), 0);
  EXPECT_EQ(store_->offline_count("alice"), 0u);
  EXPECT_TRUE(store_->offline_messages("alice").empty());
  EXPECT_FALSE(store_->vcard("alice"));
  EXPECT_FALSE(store_->last_activity("alice"));

  // bob is untouched.
  EXPECT_TRUE(store_->account("bob"));
  ASSERT_EQ(store_->roster("bob").size(), 2u);
  EXPECT_EQ(store_->roster("bob")[0].groups, (std::vector<std::string>{"G1", "G2"}));
  EXPECT_EQ(store_->offline_count("bob"), 1u);
  EXPECT_TRUE(store_->vcard("bob"));
  EXPECT_TRUE(store_->last_activity("bob"));

  // A re-registered alice starts empty.
  ASSERT_TRUE(store_->create_account(make_account("alice")));
  EXPECT_TRUE(store_->roster("alice").empty());
  EXPECT_EQ(store_->offline_count("alice"), 0u);
}

// Rosters.

TEST_P(StoreContractTest, RosterPutGetRemoveWithVersions) {
  EXPECT_EQ(store_->roster_version("alice"), 0);
  EXPECT_TRUE(store_->roster("alice").empty());

  std::int64_t v1 = store_->put_roster_item("alice", item("bob@example.com"));
  EXPECT_GT(v1, 0);
  EXPECT_EQ(store_->roster_version("alice"), v1);
  std::int64_t v2 = store_->put_roster_item("alice", item("carol@example.com"));
  EXPECT_GT(v2, v1);
  EXPECT_EQ(store_->roster_version("alice"), v2);

  // Replacing an item is a change too.
  RosterItem renamed = item("bob@example.com");
  renamed.name = "Bobby";
  std::int64_t v3 = store_->put_roster_item("alice", renamed);
  EXPECT_GT(v3, v2);
  auto got = store_->roster_item("alice", "bob@example.com");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->name, "Bobby");
  EXPECT_EQ(store_->roster("alice").size(), 2u);

  auto v4 = store_->remove_roster_item("alice", "bob@example.com");
  ASSERT_TRUE(v4);
  EXPECT_GT(*v4, v3);
  EXPECT_EQ(store_->roster_version("alice"), *v4);
  EXPECT_FALSE(store_->roster_item("alice", "bob@example.com"));

  // Removing a missing item changes nothing.
  EXPECT_FALSE(store_->remove_roster_item("alice", "bob@example.com"));
  EXPECT_FALSE(store_->remove_roster_item("nobody", "bob@example.com"));
  EXPECT_EQ(store_->roster_version("alice"), *v4);
  EXPECT_EQ(store_->roster_version("nobody"), 0);

  ASSERT_EQ(store_->roster("alice").size(), 1u);
  EXPECT_EQ(store_->roster("alice")[0].jid, "carol@example.com");
}

TEST_P(StoreContractTest, RosterIsPerUserAndSortedByContact) {
  store_->put_roster_item("alice", item("zoe@example.com"));
  store_->put_roster_item("alice", item("adam@example.com"));
  store_->put_roster_item("bob", item("mike@example.com"));
  auto r = store_->roster("alice");
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].jid, "adam@example.com");
  EXPECT_EQ(r[1].jid, "zoe@example.com");
  EXPECT_EQ(store_->roster("bob").size(), 1u);
  EXPECT_FALSE(store_->roster_item("bob", "adam@example.com"));
}

TEST_P(StoreContractTest, RosterGroupsRoundTrip) {
  store_->put_roster_item("alice", item("bob@example.com", {"Work", "Friends", "Ünïcode, \"q\""}));
  store_->put_roster_item("alice", item("carol@example.com", {}));
  store_->put_roster_item("alice", item("dave@example.com", {"B", "A", "B"}));

  auto bob = store_->roster_item("alice", "bob@example.com");
  ASSERT_TRUE(bob);
  EXPECT_EQ(bob->groups, (std::vector<std::string>{"Work", "Friends", "Ünïcode, \"q\""}));
  EXPECT_TRUE(store_->roster_item("alice", "carol@example.com")->groups.empty());
  // Duplicates collapse (RFC 6121 §2.1.2.2), order kept.
  EXPECT_EQ(store_->roster_item("alice", "dave@example.com")->groups,
            (std::vector<std::string>{"B", "A"}));

  auto all = store_->roster("alice");
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].groups, bob->groups);
  EXPECT_TRUE(all[1].groups.empty());
  EXPECT_EQ(all[2].groups, (std::vector<std::string>{"B", "A"}));

  // Replacing the item replaces its groups.
  store_->put_roster_item("alice", item("bob@example.com", {"Family"}));
  EXPECT_EQ(store_->roster_item("alice", "bob@example.com")->groups,
            std::vector<std::string>{"Family"});
  store_->put_roster_item("alice", item("bob@example.com"));
  EXPECT_TRUE(store_->roster_item("alice", "bob@example.com")->groups.empty());
}

TEST_P(StoreContractTest, RosterSubStateRoundTrip) {
  int n = 0;
  for (Subscription sub :
       {Subscription::kNone, Subscription::kTo, Subscription::kFrom, Subscription::kBoth}) {
    for (int flags = 0; flags < 8; ++flags) {
      SubState s{sub, (flags & 1) != 0, (flags & 2) != 0, (flags & 4) != 0};
      std::string jid = "c" + std::to_string(n++) + "@example.com";
      RosterItem it = item(jid, {}, s);
      it.pending_in_stanza = s.pending_in ? "<presence type='subscribe' from='" + jid + "'/>" : "";
      store_->put_roster_item("alice", it);
      auto got = store_->roster_item("alice", jid);
      ASSERT_TRUE(got);
      EXPECT_EQ(got->state, s) << jid;
      EXPECT_EQ(got->name, it.name);
      EXPECT_EQ(got->pending_in_stanza, it.pending_in_stanza);
    }
  }
  reopen();
  EXPECT_EQ(store_->roster("alice").size(), 32u);
}

TEST_P(StoreContractTest, RosterKeepsEntriesOutsideTheVisibleRoster) {
  // A pending inbound request without a roster item (RFC 6121 §3.1.3) is stored, flagged.
  RosterItem pending = item("eve@example.com", {}, SubState{Subscription::kNone, false, true});
  pending.in_roster = false;
  pending.pending_in_stanza = "<presence type='subscribe'/>";
  store_->put_roster_item("alice", pending);
  store_->put_roster_item("alice", item("bob@example.com"));
  auto got = store_->roster_item("alice", "eve@example.com");
  ASSERT_TRUE(got);
  EXPECT_FALSE(got->in_roster);
  EXPECT_TRUE(store_->roster_item("alice", "bob@example.com")->in_roster);
  auto all = store_->roster("alice");
  ASSERT_EQ(all.size(), 2u);
  EXPECT_TRUE(all[0].in_roster);   // bob
  EXPECT_FALSE(all[1].in_roster);  // eve
  pending.in_roster = true;
  store_->put_roster_item("alice", pending);
  EXPECT_TRUE(store_->roster_item("alice", "eve@example.com")->in_roster);
}

TEST_P(StoreContractTest, RosterVersionNeverReusedAfterAccountDeletion) {
  // A client may still cache the deleted account's roster under its last version.
  ASSERT_TRUE(store_->create_account(make_account("alice")));
  store_->put_roster_item("alice", item("bob@example.com"));
  std::int64_t old_version = store_->put_roster_item("alice", item("carol@example.com"));
  ASSERT_TRUE(store_->delete_account("alice"));
  ASSERT_TRUE(store_->create_account(make_account("alice")));
  EXPECT_GT(store_->put_roster_item("alice", item("dave@example.com")), old_version);
  reopen();
  EXPECT_GT(store_->put_roster_item("alice", item("erin@example.com")), old_version + 1);
}

// Offline messages.

TEST_P(StoreContractTest, OfflineKeepsArrivalOrder) {
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 5; ++i) {
    auto id = store_->push_offline("alice", "<message id='" + std::to_string(i) + "'/>",
                                   1000 - i,  // stamps out of order: order is by arrival
                                   100);
    ASSERT_TRUE(id);
    if (!ids.empty()) {
      EXPECT_GT(*id, ids.back());
    }
    ids.push_back(*id);
  }
  ASSERT_TRUE(store_->push_offline("bob", "<message id='bob'/>", 7, 100));
  auto msgs = store_->offline_messages("alice");
  ASSERT_EQ(msgs.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(msgs[i].id, ids[i]);
    EXPECT_EQ(msgs[i].stanza, "<message id='" + std::to_string(i) + "'/>");
    EXPECT_EQ(msgs[i].stamp_ms, 1000 - i);
  }
  EXPECT_EQ(store_->offline_count("alice"), 5u);
  EXPECT_EQ(store_->offline_count("bob"), 1u);
  EXPECT_EQ(store_->offline_count("carol"), 0u);
}

TEST_P(StoreContractTest, OfflineLimit) {
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(store_->push_offline("alice", "<m/>", i, 3));
  EXPECT_FALSE(store_->push_offline("alice", "<m/>", 4, 3));
  EXPECT_EQ(store_->offline_count("alice"), 3u);
  // The limit is per user.
  EXPECT_TRUE(store_->push_offline("bob", "<m/>", 4, 3));
  // A larger limit lets more in; zero lets nothing in.
  EXPECT_TRUE(store_->push_offline("alice", "<m/>", 5, 4));
  EXPECT_FALSE(store_->push_offline("carol", "<m/>", 5, 0));
  EXPECT_EQ(store_->offline_count("carol"), 0u);
  EXPECT_TRUE(store_->push_offline("carol", "<m/>", 5, static_cast<std::size_t>(-1)));
}

TEST_P(StoreContractTest, OfflineDelete) {
  std::vector<std::int64_t> ids;
  ids.reserve(4);
  for (int i = 0; i < 4; ++i) ids.push_back(*store_->push_offline("alice", "<m/>", i, 4));
  auto bob_id = *store_->push_offline("bob", "<m/>", 0, 4);

  store_->delete_offline("alice", {ids[0], ids[2]});
  auto left = store_->offline_messages("alice");
  ASSERT_EQ(left.size(), 2u);
  EXPECT_EQ(left[0].id, ids[1]);
  EXPECT_EQ(left[1].id, ids[3]);

  // Unknown ids, and another user's ids, are ignored.
  store_->delete_offline("alice", {bob_id, 999999});
  store_->delete_offline("alice", {});
  EXPECT_EQ(store_->offline_count("alice"), 2u);
  EXPECT_EQ(store_->offline_count("bob"), 1u);

  // Room again below the limit; ids are never reused.
  auto fresh = store_->push_offline("alice", "<m/>", 9, 4);
  ASSERT_TRUE(fresh);
  EXPECT_GT(*fresh, bob_id);
  store_->delete_offline("alice", {ids[1], ids[3], *fresh});
  EXPECT_EQ(store_->offline_count("alice"), 0u);
  auto after = store_->push_offline("alice", "<m/>", 10, 4);
  ASSERT_TRUE(after);
  EXPECT_GT(*after, *fresh);
}

TEST_P(StoreContractTest, OfflineLimitsOfBytesAndPerSender) {
  OfflineLimits limits;
  limits.messages = 10;
  limits.bytes = 20;
  limits.per_sender = 2;
  const std::string ten(10, 'x');
  auto r = store_->push_offline_from("alice", "bob@example.com", ten, 1, limits);
  ASSERT_TRUE(r.id);
  EXPECT_EQ(r.full, OfflinePush::Full::kNone);
  // 10 + 11 > 20 bytes.
  r = store_->push_offline_from("alice", "carol@example.com", ten + "x", 2, limits);
  EXPECT_FALSE(r.id);
  EXPECT_EQ(r.full, OfflinePush::Full::kBytes);
  // Exactly 20 fits.
  r = store_->push_offline_from("alice", "bob@example.com", ten, 3, limits);
  ASSERT_TRUE(r.id);
  EXPECT_EQ(store_->offline_count("alice"), 2u);
  // One stanza larger than the whole limit never fits.
  EXPECT_EQ(
      store_->push_offline_from("erin", "bob@example.com", std::string(21, 'y'), 1, limits).full,
      OfflinePush::Full::kBytes);

  limits.bytes = 1000;
  // bob has 2 stored for alice: his third is refused, carol's first is not.
  r = store_->push_offline_from("alice", "bob@example.com", "<m/>", 4, limits);
  EXPECT_FALSE(r.id);
  EXPECT_EQ(r.full, OfflinePush::Full::kSender);
  EXPECT_TRUE(store_->push_offline_from("alice", "carol@example.com", "<m/>", 5, limits).id);
  // The sender limit is per recipient.
  EXPECT_TRUE(store_->push_offline_from("dave", "bob@example.com", "<m/>", 6, limits).id);
  // The count limit is checked first.
  limits.messages = 3;
  EXPECT_EQ(store_->push_offline_from("alice", "bob@example.com", "<m/>", 7, limits).full,
            OfflinePush::Full::kMessages);
  auto msgs = store_->offline_messages("alice");
  ASSERT_EQ(msgs.size(), 3u);
  EXPECT_EQ(msgs[0].sender, "bob@example.com");
  EXPECT_EQ(msgs[2].sender, "carol@example.com");
  // Room again once delivered messages are deleted.
  store_->delete_offline("alice", {msgs[0].id});
  EXPECT_TRUE(store_->push_offline_from("alice", "bob@example.com", "<m/>", 8, limits).id);
}

TEST_P(StoreContractTest, OfflinePages) {
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 7; ++i) {
    ids.push_back(
        *store_->push_offline("alice", std::string(10, static_cast<char>('a' + i)), i, 100));
  }
  ASSERT_TRUE(store_->push_offline("bob", "<m/>", 0, 100));
  // By count.
  auto page = store_->offline_page("alice", 0, 3, SIZE_MAX);
  ASSERT_EQ(page.size(), 3u);
  EXPECT_EQ(page[0].id, ids[0]);
  EXPECT_EQ(page[2].id, ids[2]);
  EXPECT_EQ(page[1].stanza, std::string(10, 'b'));
  EXPECT_EQ(page[1].stamp_ms, 1);
  // After an id; by bytes: reading stops once 25 bytes are reached (the third message passes).
  page = store_->offline_page("alice", ids[2], 100, 25);
  ASSERT_EQ(page.size(), 3u);
  EXPECT_EQ(page[0].id, ids[3]);
  EXPECT_EQ(page[2].id, ids[5]);
  page = store_->offline_page("alice", ids[2], 100, 20);
  ASSERT_EQ(page.size(), 2u);
  // At least one message, however small the byte bound.
  page = store_->offline_page("alice", ids[5], 100, 1);
  ASSERT_EQ(page.size(), 1u);
  EXPECT_EQ(page[0].id, ids[6]);
  EXPECT_TRUE(store_->offline_page("alice", ids[6], 100, 100).empty());
  EXPECT_TRUE(store_->offline_page("carol", 0, 100, 100).empty());
}

TEST_P(StoreContractTest, OfflineSummaryAndClear) {
  OfflineSummary empty = store_->offline_summary("alice");
  EXPECT_EQ(empty.count, 0u);
  EXPECT_EQ(empty.bytes, 0u);
  EXPECT_EQ(empty.oldest_ms, 0);
  EXPECT_TRUE(empty.senders.empty());

  OfflineLimits limits;
  ASSERT_TRUE(store_->push_offline_from("alice", "carol@example.com", "<a/>", 500, limits).id);
  ASSERT_TRUE(store_->push_offline_from("alice", "bob@example.com", "<bb/>", 300, limits).id);
  ASSERT_TRUE(store_->push_offline_from("alice", "bob@example.com", "<c/>", 900, limits).id);
  ASSERT_TRUE(store_->push_offline_from("alice", "dave@example.com", "<d/>", 600, limits).id);
  ASSERT_TRUE(store_->push_offline_from("bob", "alice@example.com", "<e/>", 1, limits).id);
  OfflineSummary sum = store_->offline_summary("alice");
  EXPECT_EQ(sum.count, 4u);
  EXPECT_EQ(sum.bytes, 4u + 5u + 4u + 4u);
  EXPECT_EQ(sum.oldest_ms, 300);
  EXPECT_EQ(sum.newest_ms, 900);
  using Senders = std::vector<std::pair<std::string, std::size_t>>;
  EXPECT_EQ(sum.senders,
            (Senders{{"bob@example.com", 2}, {"carol@example.com", 1}, {"dave@example.com", 1}}));

  EXPECT_EQ(store_->clear_offline("alice"), 4u);
  EXPECT_EQ(store_->offline_count("alice"), 0u);
  EXPECT_EQ(store_->offline_summary("alice").count, 0u);
  EXPECT_EQ(store_->clear_offline("alice"), 0u);
  EXPECT_EQ(store_->offline_count("bob"), 1u);
}

// vcard-temp and last activity.

TEST_P(StoreContractTest, Vcard) {
  EXPECT_FALSE(store_->vcard("alice"));
  store_->set_vcard("alice", "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>");
  EXPECT_EQ(store_->vcard("alice"), "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>");
  store_->set_vcard("alice", "<vCard xmlns='vcard-temp'/>");
  EXPECT_EQ(store_->vcard("alice"), "<vCard xmlns='vcard-temp'/>");
  EXPECT_FALSE(store_->vcard("bob"));
}

TEST_P(StoreContractTest, LastActivity) {
  EXPECT_FALSE(store_->last_activity("alice"));
  store_->set_last_activity("alice", {1700000000, "Going to bed"});
  auto got = store_->last_activity("alice");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->logout_unix, 1700000000);
  EXPECT_EQ(got->status, "Going to bed");
  store_->set_last_activity("alice", {1700000100, ""});
  got = store_->last_activity("alice");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->logout_unix, 1700000100);
  EXPECT_EQ(got->status, "");
  EXPECT_FALSE(store_->last_activity("bob"));
}

// Blocklists (XEP-0191).

TEST_P(StoreContractTest, BlocklistBlockUnblockPersist) {
  using V = std::vector<std::string>;
  ASSERT_TRUE(store_->create_account(make_account("alice")));
  EXPECT_EQ(store_->blocklist("alice"), V{});
  EXPECT_EQ(store_->block("alice", {"z@example.com", "a@example.com", "z@example.com"}),
            (V{"a@example.com", "z@example.com"}));
  // Already there: nothing new.
  EXPECT_EQ(store_->block("alice", {"a@example.com", "example.org"}), V{"example.org"});
  reopen();
  EXPECT_EQ(store_->blocklist("alice"), (V{"a@example.com", "example.org", "z@example.com"}));
  EXPECT_EQ(store_->blocklist("bob"), V{});
  EXPECT_EQ(store_->unblock("alice", {"a@example.com", "nobody@example.com"}), V{"a@example.com"});
  store_->block("bob", {"x@example.com"});
  const auto all = store_->all_blocklists();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].first, "alice");
  EXPECT_EQ(all[0].second, (V{"example.org", "z@example.com"}));
  EXPECT_EQ(all[1].first, "bob");
  EXPECT_EQ(store_->unblock_all("alice"), (V{"example.org", "z@example.com"}));
  EXPECT_EQ(store_->blocklist("alice"), V{});
  EXPECT_EQ(store_->unblock_all("alice"), V{});
  EXPECT_EQ(store_->all_blocklists().size(), 1u);
}

TEST_P(StoreContractTest, BlocklistGoesWithTheAccount) {
  ASSERT_TRUE(store_->create_account(make_account("alice")));
  store_->block("alice", {"x@example.com"});
  ASSERT_TRUE(store_->delete_account("alice"));
  EXPECT_TRUE(store_->blocklist("alice").empty());
  EXPECT_TRUE(store_->all_blocklists().empty());
}

// Push registrations (XEP-0357).

TEST_P(StoreContractTest, PushRegistrationsPersistReplaceAndDelete) {
  ASSERT_TRUE(store_->create_account(make_account("alice")));
  EXPECT_TRUE(store_->push_registrations("alice").empty());
  store_->put_push_registration("alice", {"push.example.org", "n2", "", 5});
  store_->put_push_registration("alice", {"push.example.org", "n1", "<x/>", 6});
  store_->put_push_registration("alice", {"app.example.net", "n1", "", 7});
  // The same service and node again: the last request's options win.
  store_->put_push_registration("alice", {"push.example.org", "n2", "<x type='submit'/>", 8});
  store_->put_push_registration("bob", {"push.example.org", "b", "", 9});
  reopen();
  auto got = store_->push_registrations("alice");
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].jid, "app.example.net");
  EXPECT_EQ(got[1].node, "n1");
  EXPECT_EQ(got[1].options, "<x/>");
  EXPECT_EQ(got[2].node, "n2");
  EXPECT_EQ(got[2].options, "<x type='submit'/>");
  EXPECT_EQ(got[2].created_ms, 8);
  auto all = store_->all_push_registrations();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].first, "alice");
  EXPECT_EQ(all[0].second.size(), 3u);
  EXPECT_EQ(all[1].first, "bob");
  // One node of a service, then all of a service.
  EXPECT_EQ(store_->delete_push_registrations("alice", "push.example.org", "n1"), 1u);
  EXPECT_EQ(store_->delete_push_registrations("alice", "push.example.org", "nope"), 0u);
  store_->put_push_registration("alice", {"push.example.org", "n3", "", 10});
  EXPECT_EQ(store_->delete_push_registrations("alice", "push.example.org", std::nullopt), 2u);
  got = store_->push_registrations("alice");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].jid, "app.example.net");
}

TEST_P(StoreContractTest, PushRegistrationsGoWithTheAccount) {
  ASSERT_TRUE(store_->create_account(make_account("alice")));
  store_->put_push_registration("alice", {"push.example.org", "n", "", 1});
  ASSERT_TRUE(store_->delete_account("alice"));
  EXPECT_TRUE(store_->push_registrations("alice").empty());
  EXPECT_TRUE(store_->all_push_registrations().empty());
}

// Personal eventing and private XML storage.

TEST_P(StoreContractTest, PepNodesAndItems) {
  using V = std::vector<std::string>;
  EXPECT_TRUE(store_->pep_nodes("alice").empty());
  EXPECT_FALSE(store_->pep_node("alice", "n"));
  PepNode n;
  n.name = "n";
  n.config.access_model = "whitelist";
  n.config.max_items = 2;
  n.config.title = "Tune";
  n.affiliations = {{"bob@example.com", "member"}, {"eve@example.com", "outcast"}};
  n.subscribers = {"carol@example.com/phone", "bob@example.com"};
  store_->put_pep_node("alice", n);
  auto got = store_->pep_node("alice", "n");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->config.access_model, "whitelist");
  EXPECT_EQ(got->config.max_items, 2u);
  EXPECT_EQ(got->config.title, "Tune");
  EXPECT_TRUE(got->config.persist_items);
  EXPECT_EQ(got->config.send_last_published_item, "on_sub_and_presence");
  EXPECT_EQ(got->affiliations, n.affiliations);
  EXPECT_EQ(got->subscribers, (V{"bob@example.com", "carol@example.com/phone"}));  // sorted
  EXPECT_TRUE(
      store_->publish_pep_item("alice", "n", {"1", "<a/>", "alice@example.com/r", 10}, 2).empty());
  EXPECT_TRUE(
      store_->publish_pep_item("alice", "n", {"2", "<b/>", "alice@example.com/r", 11}, 2).empty());
  // Republishing an id makes it the newest; a third item pushes out the oldest.
  EXPECT_TRUE(
      store_->publish_pep_item("alice", "n", {"1", "<c/>", "alice@example.com/r", 12}, 2).empty());
  EXPECT_EQ(store_->publish_pep_item("alice", "n", {"3", "<d/>", "alice@example.com/r", 13}, 2),
            V{"2"});
  auto items = store_->pep_items("alice", "n");
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].id, "3");
  EXPECT_EQ(items[1].id, "1");
  EXPECT_EQ(items[1].payload, "<c/>");
  EXPECT_EQ(items[1].stamp_ms, 12);
  // A smaller max_items in a new configuration trims at once.
  n.config.max_items = 1;
  store_->put_pep_node("alice", n);
  EXPECT_EQ(store_->pep_items("alice", "n").size(), 1u);
  EXPECT_FALSE(store_->retract_pep_item("alice", "n", "1"));
  EXPECT_TRUE(store_->retract_pep_item("alice", "n", "3"));
  EXPECT_TRUE(store_->pep_items("alice", "n").empty());
  EXPECT_TRUE(store_->pep_nodes("bob").empty());
  ASSERT_EQ(store_->pep_nodes("alice").size(), 1u);
  EXPECT_TRUE(store_->delete_pep_node("alice", "n"));
  EXPECT_FALSE(store_->delete_pep_node("alice", "n"));
  EXPECT_TRUE(store_->pep_nodes("alice").empty());
}

TEST_P(StoreContractTest, PepItemsSurviveReopening) {
  store_->put_pep_node("alice", PepNode{"n", {}, {}, {"bob@example.com"}});
  store_->publish_pep_item("alice", "n", {"1", "<a xmlns='urn:a'>\u00e9</a>", "alice@x/r", 5}, 1);
  store_->set_private_xml("alice", "x", "urn:x", "<x xmlns='urn:x'/>");
  reopen();
  auto n = store_->pep_node("alice", "n");
  ASSERT_TRUE(n);
  EXPECT_EQ(n->subscribers, std::vector<std::string>{"bob@example.com"});
  auto items = store_->pep_items("alice", "n");
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].payload, "<a xmlns='urn:a'>\u00e9</a>");
  EXPECT_EQ(items[0].publisher, "alice@x/r");
  EXPECT_TRUE(store_->private_xml("alice", "x", "urn:x"));
}

TEST_P(StoreContractTest, PrivateXml) {
  EXPECT_FALSE(store_->private_xml("alice", "prefs", "urn:a"));
  store_->set_private_xml("alice", "prefs", "urn:a", "<prefs xmlns='urn:a'>1</prefs>");
  store_->set_private_xml("alice", "prefs", "urn:b", "<prefs xmlns='urn:b'>2</prefs>");
  EXPECT_EQ(store_->private_xml("alice", "prefs", "urn:a"), "<prefs xmlns='urn:a'>1</prefs>");
  EXPECT_EQ(store_->private_xml("alice", "prefs", "urn:b"), "<prefs xmlns='urn:b'>2</prefs>");
  store_->set_private_xml("alice", "prefs", "urn:a", "<prefs xmlns='urn:a'>3</prefs>");
  EXPECT_EQ(store_->private_xml("alice", "prefs", "urn:a"), "<prefs xmlns='urn:a'>3</prefs>");
  EXPECT_FALSE(store_->private_xml("bob", "prefs", "urn:a"));
}

TEST_P(StoreContractTest, PepAndPrivateGoWithTheAccount) {
  ASSERT_TRUE(store_->create_account(make_account("alice")));
  store_->put_pep_node("alice", PepNode{"n", {}, {}, {}});
  store_->publish_pep_item("alice", "n", {"1", "<a/>", "", 1}, 1);
  store_->set_private_xml("alice", "x", "urn:x", "<x xmlns='urn:x'/>");
  ASSERT_TRUE(store_->delete_account("alice"));
  EXPECT_TRUE(store_->pep_nodes("alice").empty());
  EXPECT_TRUE(store_->pep_items("alice", "n").empty());
  EXPECT_FALSE(store_->private_xml("alice", "x", "urn:x"));
}

// Message archives (XEP-0313).

std::vector<ArchivedMessage> archive_batch(const std::string& user, int from, int n,
                                           std::int64_t stamp0) {
  std::vector<ArchivedMessage> batch;
  for (int i = from; i < from + n; ++i) {
    ArchivedMessage m;
    m.username = user;
    m.id = "id" + std::to_string(i);
    m.with = i % 3 == 0 ? "carol@example.com" : "bob@example.com";
    m.with_resource = i % 2 == 0 ? "phone" : "pc";
    m.stamp_ms = stamp0 + i * 1000;
    m.stanza = "<message xmlns='jabber:client'><body>" + std::to_string(i) + "</body></message>";
    batch.push_back(std::move(m));
  }
  return batch;
}

TEST_P(StoreContractTest, ArchiveAppendQueryAndFilters) {
  auto batch = archive_batch("alice", 0, 10, 1'000'000);
  store_->archive_append(batch);
  for (std::size_t i = 1; i < batch.size(); ++i) EXPECT_GT(batch[i].seq, batch[i - 1].seq);
  reopen();
  EXPECT_EQ(store_->archive_count("alice", {}), 10u);
  EXPECT_EQ(store_->archive_count("bob", {}), 0u);
  EXPECT_EQ(store_->archive_seq("alice", "id3"), batch[3].seq);
  EXPECT_FALSE(store_->archive_seq("bob", "id3").has_value());
  auto ids = [](const std::vector<ArchivedMessage>& ms) {
    std::vector<std::string> out;
    for (const auto& m : ms) out.push_back(m.id);
    return out;
  };
  EXPECT_EQ(ids(store_->archive_query("alice", {}, 3, false)),
            (std::vector<std::string>{"id0", "id1", "id2"}));
  EXPECT_EQ(ids(store_->archive_query("alice", {}, 3, true)),
            (std::vector<std::string>{"id7", "id8", "id9"}));
  ArchiveFilter with;
  with.with = "carol@example.com";
  EXPECT_EQ(ids(store_->archive_query("alice", with, 10, false)),
            (std::vector<std::string>{"id0", "id3", "id6", "id9"}));
  with.with_resource = "phone";
  EXPECT_EQ(ids(store_->archive_query("alice", with, 10, false)),
            (std::vector<std::string>{"id0", "id6"}));
  EXPECT_EQ(store_->archive_count("alice", with), 2u);
  ArchiveFilter time;
  time.start_ms = 1'002'000;
  time.end_ms = 1'004'000;
  EXPECT_EQ(ids(store_->archive_query("alice", time, 10, false)),
            (std::vector<std::string>{"id2", "id3", "id4"}));
  ArchiveFilter picked;
  picked.seqs = {batch[8].seq, batch[1].seq};
  EXPECT_EQ(ids(store_->archive_query("alice", picked, 10, false)),
            (std::vector<std::string>{"id1", "id8"}));
  const auto got = store_->archive_query("alice", picked, 1, false);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].stanza, batch[1].stanza);
  EXPECT_EQ(got[0].with_resource, "pc");
  EXPECT_EQ(got[0].stamp_ms, 1'001'000);
}

// An archive of 100,000 messages: pages of 50 forward and backward return each exactly once.
TEST_P(StoreContractTest, ArchivePagingOverAHundredThousand) {
  constexpr int kN = 100'000;
  for (int at = 0; at < kN; at += 10'000) {
    auto batch = archive_batch("alice", at, 10'000, 0);
    store_->archive_append(batch);
  }
  auto other = archive_batch("bob", 0, 100, 0);
  store_->archive_append(other);
  std::vector<char> seen(kN, 0);
  ArchiveFilter f;
  for (;;) {
    auto page = store_->archive_query("alice", f, 50, false);
    if (page.empty()) break;
    for (const auto& m : page) ++seen[static_cast<std::size_t>(std::stoi(m.id.substr(2)))];
    f.after_seq = page.back().seq;
  }
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), kN);
  std::vector<char> back(kN, 0);
  ArchiveFilter b;
  std::int64_t last = INT64_MAX;
  for (;;) {
    auto page = store_->archive_query("alice", b, 50, true);
    if (page.empty()) break;
    for (const auto& m : page) {
      EXPECT_LT(m.seq, last);
      ++back[static_cast<std::size_t>(std::stoi(m.id.substr(2)))];
    }
    last = page.front().seq;
    b.before_seq = page.front().seq;
  }
  EXPECT_EQ(std::count(back.begin(), back.end(), 1), kN);
}

// Counts of a range (the RSM count and index) agree with the messages a query returns, with
// and without a correspondent, across accounts written in turn, after expiry and after a clear.
TEST_P(StoreContractTest, ArchiveCountsAgreeWithQueries) {
  for (int round = 0; round < 4; ++round) {
    auto a = archive_batch("alice", round * 5, 5, 1'000'000);
    auto b = archive_batch("bob", round * 5, 5, 1'000'000);
    store_->archive_append(a);
    store_->archive_append(b);
  }
  auto check = [&](const std::string& what) {
    auto all = store_->archive_query("alice", {}, 1000, false);
    for (std::size_t i = 0; i < all.size(); i += 3) {
      for (std::size_t j = i; j < all.size(); j += 4) {
        for (const char* with : {"", "carol@example.com", "bob@example.com"}) {
          ArchiveFilter f;
          f.with = with;
          f.after_seq = all[i].seq;
          f.before_seq = all[j].seq;
          EXPECT_EQ(store_->archive_count("alice", f),
                    store_->archive_query("alice", f, 1000, false).size())
              << what << " after " << i << " before " << j << " with '" << with << "'";
        }
      }
    }
    EXPECT_EQ(store_->archive_count("alice", {}), all.size()) << what;
  };
  check("written");
  reopen();
  check("reopened");
  store_->archive_expire(1'006'500, 1000);  // the oldest part of both archives
  check("expired");
  const std::size_t left = store_->archive_count("alice", {});
  EXPECT_EQ(store_->archive_clear("alice"), left);
  auto again = archive_batch("alice", 100, 7, 2'000'000);
  store_->archive_append(again);
  check("cleared and written again");
  EXPECT_EQ(store_->archive_count("alice", {}), 7u);
}

TEST_P(StoreContractTest, ArchiveExpiryLeavesNoHolesAndSeqsAreNotReused) {
  auto batch = archive_batch("alice", 0, 5, 0);
  batch[3].stamp_ms = 0;  // out of order: everything up to it goes
  store_->archive_append(batch);
  auto bob = archive_batch("bob", 0, 2, 10'000'000);
  store_->archive_append(bob);
  EXPECT_EQ(store_->archive_expire(2'500, 3), 3u);  // in bites: the oldest first
  EXPECT_EQ(store_->archive_query("alice", {}, 10, false).front().id, "id3");
  EXPECT_EQ(store_->archive_expire(2'500, 3), 1u);
  auto left = store_->archive_query("alice", {}, 10, false);
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].id, "id4");
  EXPECT_EQ(store_->archive_count("bob", {}), 2u);
  EXPECT_EQ(store_->archive_clear("alice"), 1u);
  reopen();
  auto again = archive_batch("alice", 10, 1, 0);
  store_->archive_append(again);
  EXPECT_GT(again[0].seq, bob.back().seq);
}

TEST_P(StoreContractTest, ArchivePrefsAndDeletionWithTheAccount) {
  ASSERT_TRUE(store_->create_account(make_account("alice")));
  EXPECT_FALSE(store_->archive_prefs("alice").has_value());
  ArchivePrefs p;
  p.default_mode = "roster";
  p.always = {"bob@example.com", "carol@example.com"};
  p.never = {"spam@example.com"};
  store_->set_archive_prefs("alice", p);
  reopen();
  auto got = store_->archive_prefs("alice");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->default_mode, "roster");
  EXPECT_EQ(got->always, p.always);
  EXPECT_EQ(got->never, p.never);
  auto batch = archive_batch("alice", 0, 3, 0);
  store_->archive_append(batch);
  EXPECT_TRUE(store_->delete_account("alice"));
  EXPECT_EQ(store_->archive_count("alice", {}), 0u);
  EXPECT_FALSE(store_->archive_prefs("alice").has_value());
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreContractTest,
                         ::testing::Values(Backend::kSqlite, Backend::kMemory),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param == Backend::kSqlite ? "Sqlite" : "Memory";
                         });

}  // namespace
}  // namespace kabar::store
