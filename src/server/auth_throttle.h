// Slows down password guessing (RFC 6120 §13.9.4 and RFC 4422 §9 leave the policy to the
// server) without letting a guesser lock the real owner out.
//
// Failed logins are counted over a sliding window (a minute) by client address, and by the pair
// (account, address); never by account alone to refuse. Before a credential is looked up or
// hashed, an attempt is:
// - refused unchecked (<temporary-auth-failure/>) when its address has failed
//   `per_address` times in the window, or this account has failed `per_account_address` times
//   from this address: the 201st guess costs the server a table lookup, and it learns nothing;
// - otherwise held back for a delay that doubles with each failure of its address in the window
//   (`delay_ms`, 2 × `delay_ms`, ... up to `max_delay_ms`), so even a guesser with many parallel
//   connections from one address gets few verified guesses.
// A guess is answered only after its delay: hanging up early tells the guesser nothing.
//
// Why no refusal per account alone: it let anyone lock an account out for good, from every
// address, with five wrong passwords a minute (an attacker does not need to guess to do that).
// What remains per account is a safety net against guessing spread over many addresses that only
// slows: once an account has `slow_account_after` failures in the window from anywhere, each
// attempt on it waits `max_delay_ms` first. The owner still logs in, a few seconds later, from
// any address; the guessers' rate is bounded by the per-address limits times their addresses.
//
// Shared by every shard: its tables sit behind one mutex (taken only at authentication, never
// per stanza), and hold at most kMaxKeys keys each (a flood of distinct names or addresses clears
// them rather than growing them).
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace kabar::server {

struct AuthThrottleLimits {
  int per_address = 30;          // failures per window from one address
  int per_account_address = 5;   // failures per window on one account from one address
  int slow_account_after = 100;  // failures per window on one account from all addresses
  std::int64_t delay_ms = 250;   // the first delay after a failure; doubles with each one more
  std::int64_t max_delay_ms = 5'000;
  std::int64_t window_ms = 60'000;
};

class AuthThrottle {
 public:
  explicit AuthThrottle(AuthThrottleLimits limits) : limits_(limits) {}

  struct Decision {
    bool refuse = false;        // answer <temporary-auth-failure/> without checking anything
    std::int64_t delay_ms = 0;  // else: wait this long, then check the credential
  };
  // What to do with an attempt from `addr` on `user` (empty when the mechanism has not named
  // one yet). Addresses are compared by address_key().
  Decision check(std::string_view addr, std::string_view user, std::int64_t now_ms);
  void record_failure(std::string_view addr, std::string_view user, std::int64_t now_ms);

  static constexpr std::size_t kMaxKeys = 100'000;

 private:
  using Table = std::unordered_map<std::string, std::deque<std::int64_t>>;
  // Failures of `key` still in the window (expired ones dropped).
  int failures(Table& t, const std::string& key, std::int64_t now_ms);
  void add(Table& t, const std::string& key, int keep, std::int64_t now_ms);

  std::mutex mu_;
  const AuthThrottleLimits limits_;
  Table by_address_;
  Table by_pair_;     // account '\n' address
  Table by_account_;  // the slow-only safety net
};

// The part of a peer address that limits apply to: an IPv4 address as it is (also when it comes
// as an IPv4-mapped IPv6 address), an IPv6 address by its /64 (one subscriber's usual
// allocation: counting single IPv6 addresses would let one host use billions of them).
std::string address_key(std::string_view peer);

}  // namespace kabar::server
