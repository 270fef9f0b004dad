#include "server/modules/register/register.h"

#include <gtest/gtest.h>

namespace kabar::server {
namespace {

TEST(RegistrationLimit, PerAddressPerHour) {
  RegistrationLimit limit(3);
  const std::int64_t t0 = 10'000'000;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limit.take("192.0.2.1", t0 + i));
  EXPECT_FALSE(limit.take("192.0.2.1", t0 + 10));
  EXPECT_TRUE(limit.take("192.0.2.2", t0 + 10)) << "another address is not affected";
  // An IPv6 /64 is one address.
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limit.take("2001:db8::" + std::to_string(i + 1), t0));
  EXPECT_FALSE(limit.take("2001:db8::ffff", t0));
  // A slot that made no account comes back.
  limit.give_back("192.0.2.1", t0 + 1);
  EXPECT_TRUE(limit.take("192.0.2.1", t0 + 20));
  EXPECT_FALSE(limit.take("192.0.2.1", t0 + 21));
  // An hour after the first ones, room again.
  EXPECT_TRUE(limit.take("192.0.2.1", t0 + RegistrationLimit::kWindowMs + 1));
}

}  // namespace
}  // namespace kabar::server
