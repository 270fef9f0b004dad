#include <gtest/gtest.h>

#include <set>
#include <string>
#include <thread>

#include "server/core/clock.h"

namespace kabar::server {
namespace {

// SystemRandom hands out each thread's block of OpenSSL output in order, never a byte twice:
// draws of every size, across many blocks, come back as asked and do not repeat.
TEST(SystemRandom, DrawsAcrossBlocksNeverRepeat) {
  SystemRandom random;
  EXPECT_EQ(random.bytes(0).size(), 0u);
  std::set<std::string> seen;
  for (int i = 0; i < 20000; ++i) {  // about 30 blocks of 6-byte draws
    std::string b = random.bytes(6);
    ASSERT_EQ(b.size(), 6u);
    EXPECT_TRUE(seen.insert(std::move(b)).second);
  }
  for (const std::size_t n : {1u, 63u, 64u, 65u, 4096u, 5000u}) {
    const std::string b = random.bytes(n);
    ASSERT_EQ(b.size(), n);
    if (n >= 16) {
      EXPECT_NE(b.find_first_not_of('\0'), std::string::npos);  // not the zeroed pool
    }
  }
  // Another thread draws from its own block.
  std::string other;
  std::thread t([&] { other = random.bytes(6); });
  t.join();
  EXPECT_EQ(other.size(), 6u);
  EXPECT_FALSE(seen.contains(other));
}

}  // namespace
}  // namespace kabar::server
