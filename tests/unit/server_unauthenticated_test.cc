#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "server/c2s_session.h"
#include "server/unauthenticated.h"

namespace kabar::server {
namespace {

TEST(UnauthenticatedConnections, PerAddressCapRefusesWithoutCounting) {
  UnauthenticatedConnections u(100, 3);
  std::vector<std::uint64_t> tickets;
  for (int i = 0; i < 3; ++i) {
    auto a = u.admit("192.0.2.1");
    ASSERT_TRUE(a.admitted);
    tickets.push_back(a.ticket);
  }
  EXPECT_FALSE(u.admit("192.0.2.1").admitted);
  EXPECT_EQ(u.count("192.0.2.1"), 3u);
  EXPECT_TRUE(u.admit("192.0.2.2").admitted) << "other addresses are not affected";
  u.release(tickets[0]);
  u.release(tickets[0]);  // releasing twice changes nothing
  EXPECT_EQ(u.count("192.0.2.1"), 2u);
  EXPECT_TRUE(u.admit("192.0.2.1").admitted);
  EXPECT_EQ(u.count(), 4u);
}

TEST(UnauthenticatedConnections, PastTheTotalTheOldestGoes) {
  UnauthenticatedConnections u(3, 10);
  // Sessions stand in as plain shared pointers: only their identity matters here.
  std::vector<std::shared_ptr<C2sSession>> owners;
  std::vector<std::uint64_t> tickets;
  for (int i = 0; i < 3; ++i) {
    auto a = u.admit("10.0.0." + std::to_string(i));
    ASSERT_TRUE(a.admitted);
    EXPECT_TRUE(a.evicted.expired());
    // An aliasing pointer with no object: enough to tell sessions apart.
    owners.push_back(std::shared_ptr<C2sSession>(std::make_shared<int>(i), nullptr));
    EXPECT_TRUE(u.attach(a.ticket, owners.back()));
    tickets.push_back(a.ticket);
  }
  auto fourth = u.admit("10.0.0.9");
  ASSERT_TRUE(fourth.admitted);
  EXPECT_FALSE(fourth.evicted.owner_before(owners[0]) || owners[0].owner_before(fourth.evicted))
      << "the oldest is evicted";
  EXPECT_EQ(u.count(), 3u);
  EXPECT_EQ(u.count("10.0.0.0"), 0u);
  // The second-oldest authenticates (released): the next newcomer evicts the third.
  u.release(tickets[1]);
  auto fifth = u.admit("10.0.0.9");
  EXPECT_TRUE(fifth.evicted.expired());
  auto sixth = u.admit("10.0.0.9");
  EXPECT_FALSE(sixth.evicted.owner_before(owners[2]) || owners[2].owner_before(sixth.evicted));
  // A connection evicted before its session was attached is told so.
  UnauthenticatedConnections v(1, 10);
  auto first = v.admit("a");
  auto second = v.admit("b");
  EXPECT_FALSE(v.attach(first.ticket, owners[0]));
  EXPECT_TRUE(v.attach(second.ticket, owners[1]));
}

}  // namespace
}  // namespace kabar::server
