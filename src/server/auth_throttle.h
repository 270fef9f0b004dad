// Slows down password guessing (RFC 6120 §13.9.4 leaves the policy to the server): failures are
// counted per client address and per account over a sliding minute; past the limit an attempt is
// refused before any credential is looked up or hashed, so the 201st wrong password costs the
// server no more than a table lookup. Shared by every shard: its tables sit behind one mutex
// (taken only at authentication, never per stanza).
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>

namespace kabar::server {

class AuthThrottle {
 public:
  AuthThrottle(int per_account, int per_address)
      : per_account_(per_account), per_address_(per_address) {}
  bool address_blocked(const std::string& addr, std::int64_t now_ms);
  bool account_blocked(const std::string& user, std::int64_t now_ms);
  void record_failure(const std::string& addr, const std::string& user, std::int64_t now_ms);

 private:
  static bool over(std::unordered_map<std::string, std::deque<std::int64_t>>& m,
                   const std::string& key, int limit, std::int64_t now_ms);
  std::mutex mu_;
  int per_account_;
  int per_address_;
  std::unordered_map<std::string, std::deque<std::int64_t>> by_account_;
  std::unordered_map<std::string, std::deque<std::int64_t>> by_address_;
};

}  // namespace kabar::server
