#include "server/core/clock.h"

#include <algorithm>
#include <array>
#include <cstring>

namespace kabar::server {

std::string SystemRandom::bytes(std::size_t n) {
  constexpr std::size_t kBlock = 4096;
  // Larger requests (keys, salts) come straight from the generator.
  if (n > 64) return xmpp::random_bytes(n);
  struct Pool {
    std::array<char, kBlock> block{};
    std::size_t used = kBlock;  // nothing drawn yet
  };
  thread_local Pool pool;
  std::string out(n, '\0');
  std::size_t have = 0;
  while (have < n) {
    if (pool.used == kBlock) {
      const std::string fresh = xmpp::random_bytes(kBlock);
      std::memcpy(pool.block.data(), fresh.data(), kBlock);
      pool.used = 0;
    }
    const std::size_t take = std::min(n - have, kBlock - pool.used);
    std::memcpy(out.data() + have, pool.block.data() + pool.used, take);
    // What was handed out is not kept.
    std::memset(pool.block.data() + pool.used, 0, take);
    pool.used += take;
    have += take;
  }
  return out;
}

}  // namespace kabar::server
