// In-band registration (XEP-0077).
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>  // before Asio: Boost 1.74 awaitable.hpp uses std::exchange

#include "server/server.h"

namespace kabar::server {

// Accounts made by in-band registration per client address (address_key()) in a sliding hour.
// Shared by every shard (one mutex, taken per registration request).
class RegistrationLimit {
 public:
  explicit RegistrationLimit(int per_hour) : per_hour_(per_hour) {}
  // Takes a slot for one account from `address` at `now_ms`; false when the address has made
  // its number of accounts within the hour (slots taken and not given back count).
  bool take(std::string_view address, std::int64_t now_ms);
  // The slot taken at `taken_ms` made no account (a conflict, a store error).
  void give_back(std::string_view address, std::int64_t taken_ms);

  static constexpr std::int64_t kWindowMs = 3'600'000;
  static constexpr std::size_t kMaxKeys = 100'000;

 private:
  std::mutex mu_;
  const int per_hour_;
  std::unordered_map<std::string, std::deque<std::int64_t>> by_address_;
};

// Before authentication: the registration form (get) or account creation (set), for a client
// at `peer_address`.
awaitable<xml::Element> handle_register_preauth(Server& s, const xml::Element& iq,
                                                std::string_view peer_address);

}  // namespace kabar::server
