#include <gtest/gtest.h>

#include <string>

#include "server/auth_throttle.h"

namespace kabar::server {
namespace {

AuthThrottleLimits limits(int per_account_address, int per_address) {
  AuthThrottleLimits l;
  l.per_account_address = per_account_address;
  l.per_address = per_address;
  l.delay_ms = 100;
  l.max_delay_ms = 1000;
  l.slow_account_after = 1000;
  return l;
}

TEST(AuthThrottle, BlocksPastTheLimitWithinAMinute) {
  AuthThrottle t(limits(3, 5));
  const std::int64_t t0 = 1'000'000;
  EXPECT_FALSE(t.check("10.0.0.1", "alice", t0).refuse);
  for (int i = 0; i < 3; ++i) t.record_failure("10.0.0.1", "alice", t0 + i);
  // Refused for this account from this address only.
  EXPECT_TRUE(t.check("10.0.0.1", "alice", t0 + 10).refuse);
  EXPECT_FALSE(t.check("10.0.0.1", "bob", t0 + 10).refuse);
  EXPECT_FALSE(t.check("10.0.0.2", "alice", t0 + 10).refuse);
  EXPECT_FALSE(t.check("10.0.0.1", "", t0 + 10).refuse) << "the address itself is under its limit";
  // The window slides: a minute later the account may try again.
  EXPECT_FALSE(t.check("10.0.0.1", "alice", t0 + 61'000).refuse);
}

TEST(AuthThrottle, CountsPerAddressAcrossAccounts) {
  AuthThrottle t(limits(100, 5));
  const std::int64_t t0 = 5'000'000;
  for (int i = 0; i < 5; ++i) t.record_failure("192.0.2.7", "user" + std::to_string(i), t0);
  EXPECT_TRUE(t.check("192.0.2.7", "", t0 + 1).refuse);
  EXPECT_TRUE(t.check("192.0.2.7", "someone", t0 + 1).refuse);
  EXPECT_FALSE(t.check("192.0.2.8", "", t0 + 1).refuse);
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE(t.check("192.0.2.8", "user" + std::to_string(i), t0 + 1).refuse);
  }
}

TEST(AuthThrottle, TheOwnerIsNeverLockedOutFromAnotherAddress) {
  AuthThrottle t(limits(5, 30));
  const std::int64_t t0 = 9'000'000;
  // 200 wrong passwords for alice from one address, spread over the minute and more.
  for (int i = 0; i < 200; ++i) {
    const std::int64_t now = t0 + i * 500;
    if (!t.check("198.51.100.9", "alice", now).refuse)
      t.record_failure("198.51.100.9", "alice", now);
  }
  const std::int64_t end = t0 + 200 * 500;
  EXPECT_TRUE(t.check("198.51.100.9", "alice", end).refuse);
  const AuthThrottle::Decision owner = t.check("203.0.113.4", "alice", end);
  EXPECT_FALSE(owner.refuse);
  EXPECT_EQ(owner.delay_ms, 0) << "no delay for an address that has not failed";
}

TEST(AuthThrottle, DelayDoublesPerFailureOfTheAddressUpToTheMaximum) {
  AuthThrottle t(limits(1000, 1000));
  const std::int64_t t0 = 2'000'000;
  EXPECT_EQ(t.check("10.1.1.1", "", t0).delay_ms, 0);
  const std::int64_t expected[] = {100, 200, 400, 800, 1000, 1000};
  for (int i = 0; i < 6; ++i) {
    t.record_failure("10.1.1.1", "u" + std::to_string(i), t0);
    EXPECT_EQ(t.check("10.1.1.1", "x", t0).delay_ms, expected[i]) << "after " << i + 1;
  }
  EXPECT_EQ(t.check("10.1.1.2", "x", t0).delay_ms, 0);
  EXPECT_EQ(t.check("10.1.1.1", "x", t0 + 60'001).delay_ms, 0) << "the window slid past them";
}

TEST(AuthThrottle, ManyAddressesOnOneAccountSlowItButNeverRefuse) {
  AuthThrottleLimits l = limits(5, 30);
  l.slow_account_after = 50;
  AuthThrottle t(l);
  const std::int64_t t0 = 3'000'000;
  for (int i = 0; i < 49; ++i) t.record_failure("10.2.0." + std::to_string(i), "carol", t0);
  EXPECT_EQ(t.check("10.3.0.1", "carol", t0).delay_ms, 0);
  t.record_failure("10.2.1.0", "carol", t0);
  const AuthThrottle::Decision d = t.check("10.3.0.1", "carol", t0);
  EXPECT_FALSE(d.refuse);
  EXPECT_EQ(d.delay_ms, 1000);
  EXPECT_EQ(t.check("10.3.0.1", "dave", t0).delay_ms, 0);
}

TEST(AuthThrottle, MemoryPerKeyIsBounded) {
  AuthThrottle t(limits(3, 3));
  for (int i = 0; i < 1000; ++i) t.record_failure("a", "b", 7'000'000 + i);
  EXPECT_TRUE(t.check("a", "b", 7'001'000).refuse);
  // Distinct keys beyond the bound clear the tables instead of growing them.
  for (std::size_t i = 0; i <= AuthThrottle::kMaxKeys; ++i) {
    t.record_failure("10.9." + std::to_string(i / 256) + "." + std::to_string(i % 256), "",
                     8'000'000);
  }
  EXPECT_FALSE(t.check("a", "", 8'000'001).refuse);
}

TEST(AddressKey, IPv4AsItIsIPv6ByItsSlash64) {
  EXPECT_EQ(address_key("192.0.2.1"), "192.0.2.1");
  EXPECT_EQ(address_key("::ffff:192.0.2.1"), "192.0.2.1");
  EXPECT_EQ(address_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::/64");
  EXPECT_EQ(address_key("2001:db8:1:2::1"), address_key("2001:db8:1:2:ffff::9"));
  EXPECT_NE(address_key("2001:db8:1:2::1"), address_key("2001:db8:1:3::1"));
  EXPECT_EQ(address_key("?"), "?");
}

}  // namespace
}  // namespace kabar::server
