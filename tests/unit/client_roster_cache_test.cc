#include <gtest/gtest.h>

#include "client/roster_cache.h"

namespace kabar::client {
namespace {

TEST(RosterCache, RoundTripsItemsWithAwkwardText) {
  RosterCache c;
  c.ver = "v\t7";
  RosterItem a;
  a.jid = "bob@example.org";
  a.name = "Bob\\the\nbuilder";
  a.subscription = "both";
  a.groups = {"Friends", "Work\tmates"};
  RosterItem b;
  b.jid = "carol@example.org";
  b.subscription = "none";
  b.ask = true;
  c.items = {a, b};
  auto parsed = parse_roster_cache(format_roster_cache(c));
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->ver, "v\t7");
  ASSERT_EQ(parsed->items.size(), 2u);
  EXPECT_EQ(parsed->items[0].name, a.name);
  EXPECT_EQ(parsed->items[0].groups, a.groups);
  EXPECT_TRUE(parsed->items[1].ask);
  EXPECT_EQ(parsed->items[1].subscription, "none");
}

TEST(RosterCache, RejectsForeignOrDamagedFiles) {
  EXPECT_FALSE(parse_roster_cache(""));
  EXPECT_FALSE(parse_roster_cache("something else\nver\t1\n"));
  EXPECT_FALSE(parse_roster_cache("kabar-roster-cache 1\n"));  // no version line
  EXPECT_FALSE(parse_roster_cache("kabar-roster-cache 1\nver\t1\nitem\tx\n"));
}

}  // namespace
}  // namespace kabar::client
