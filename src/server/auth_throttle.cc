#include "server/auth_throttle.h"

#include <algorithm>
#include <boost/asio/ip/address.hpp>

namespace kabar::server {

int AuthThrottle::failures(Table& t, const std::string& key, std::int64_t now_ms) {
  auto it = t.find(key);
  if (it == t.end()) return 0;
  auto& q = it->second;
  while (!q.empty() && q.front() <= now_ms - limits_.window_ms) q.pop_front();
  if (q.empty()) {
    t.erase(it);
    return 0;
  }
  return static_cast<int>(q.size());
}

void AuthThrottle::add(Table& t, const std::string& key, int keep, std::int64_t now_ms) {
  if (t.size() >= kMaxKeys && t.find(key) == t.end()) t.clear();
  auto& q = t[key];
  q.push_back(now_ms);
  // Only the last `keep` failures matter for any decision.
  while (static_cast<int>(q.size()) > keep) q.pop_front();
}

AuthThrottle::Decision AuthThrottle::check(std::string_view addr, std::string_view user,
                                           std::int64_t now_ms) {
  const std::string a = address_key(addr);
  std::lock_guard lock(mu_);
  Decision d;
  const int from_address = failures(by_address_, a, now_ms);
  if (from_address >= limits_.per_address) {
    d.refuse = true;
    return d;
  }
  if (!user.empty()) {
    std::string pair(user);
    pair += '\n';
    pair += a;
    if (failures(by_pair_, pair, now_ms) >= limits_.per_account_address) {
      d.refuse = true;
      return d;
    }
  }
  if (from_address > 0) {
    // delay_ms << (n - 1), without overflowing for a large n.
    std::int64_t delay = limits_.delay_ms;
    for (int i = 1; i < from_address && delay < limits_.max_delay_ms; ++i) delay *= 2;
    d.delay_ms = std::min(delay, limits_.max_delay_ms);
  }
  if (!user.empty() &&
      failures(by_account_, std::string(user), now_ms) >= limits_.slow_account_after) {
    d.delay_ms = std::max(d.delay_ms, limits_.max_delay_ms);
  }
  return d;
}

void AuthThrottle::record_failure(std::string_view addr, std::string_view user,
                                  std::int64_t now_ms) {
  const std::string a = address_key(addr);
  std::lock_guard lock(mu_);
  add(by_address_, a, limits_.per_address, now_ms);
  if (!user.empty()) {
    std::string pair(user);
    pair += '\n';
    pair += a;
    add(by_pair_, pair, limits_.per_account_address, now_ms);
    add(by_account_, std::string(user), limits_.slow_account_after, now_ms);
  }
}

std::string address_key(std::string_view peer) {
  boost::system::error_code ec;
  const auto ip = boost::asio::ip::make_address(std::string(peer), ec);
  if (ec) return std::string(peer);
  if (ip.is_v4()) return ip.to_string();
  const auto v6 = ip.to_v6();
  if (v6.is_v4_mapped())
    return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, v6).to_string();
  auto bytes = v6.to_bytes();
  std::fill(bytes.begin() + 8, bytes.end(), 0);
  return boost::asio::ip::address_v6(bytes).to_string() + "/64";
}

}  // namespace kabar::server
