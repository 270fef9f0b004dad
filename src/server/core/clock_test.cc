#include "server/core/clock.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

namespace kabar::server {
namespace {

// Draws of odd sizes cross the 512-byte blocks: every draw is the size asked for, no draw
// repeats another (7 bytes: a repeat by chance has odds of 2^-56), and the bytes look like the
// generator's (not the zeros a block boundary mistake would leave).
TEST(SystemRandom, DrawsAcrossBlocksAreFreshAndFull) {
  SystemRandom r;
  std::set<std::string> seen;
  std::size_t zeros = 0, total = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string b = r.bytes(7);
    ASSERT_EQ(b.size(), 7u);
    for (char c : b) zeros += c == '\0';
    total += b.size();
    EXPECT_TRUE(seen.insert(std::move(b)).second);
  }
  // 14,000 bytes: about 55 zeros expected; a block handed out twice or left zeroed shows here.
  EXPECT_LT(zeros, 150u);
  EXPECT_EQ(r.bytes(0).size(), 0u);
  EXPECT_EQ(r.bytes(64).size(), 64u);
  EXPECT_EQ(r.bytes(4096).size(), 4096u);  // large requests come straight from OpenSSL
}

// Each thread has its own pool: two threads never hand out the same bytes.
TEST(SystemRandom, ThreadsDrawDifferentBytes) {
  SystemRandom r;
  std::vector<std::string> a, b;
  std::thread t1([&] {
    for (int i = 0; i < 500; ++i) a.push_back(r.bytes(8));
  });
  std::thread t2([&] {
    for (int i = 0; i < 500; ++i) b.push_back(r.bytes(8));
  });
  t1.join();
  t2.join();
  std::set<std::string> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  EXPECT_EQ(all.size(), 1000u);
}

}  // namespace
}  // namespace kabar::server
