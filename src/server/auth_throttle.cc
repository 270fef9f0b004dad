#include "server/auth_throttle.h"

namespace kabar::server {

namespace {
constexpr std::int64_t kWindowMs = 60'000;
constexpr std::size_t kMaxKeys = 100'000;  // bounds memory under a flood of distinct names
}  // namespace

bool AuthThrottle::over(std::unordered_map<std::string, std::deque<std::int64_t>>& m,
                        const std::string& key, int limit, std::int64_t now_ms) {
  auto it = m.find(key);
  if (it == m.end()) return false;
  auto& q = it->second;
  while (!q.empty() && q.front() <= now_ms - kWindowMs) q.pop_front();
  if (q.empty()) {
    m.erase(it);
    return false;
  }
  return static_cast<int>(q.size()) >= limit;
}

bool AuthThrottle::address_blocked(const std::string& addr, std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  return over(by_address_, addr, per_address_, now_ms);
}

bool AuthThrottle::account_blocked(const std::string& user, std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  return over(by_account_, user, per_account_, now_ms);
}

void AuthThrottle::record_failure(const std::string& addr, const std::string& user,
                                  std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  auto add = [&](std::unordered_map<std::string, std::deque<std::int64_t>>& m,
                 const std::string& key, int limit) {
    if (key.empty()) return;
    if (m.size() >= kMaxKeys && m.find(key) == m.end()) m.clear();
    auto& q = m[key];
    q.push_back(now_ms);
    // Only the last `limit` failures matter for the decision.
    while (static_cast<int>(q.size()) > limit) q.pop_front();
  };
  add(by_address_, addr, per_address_);
  add(by_account_, user, per_account_);
}

}  // namespace kabar::server
