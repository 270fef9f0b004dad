// Shared by the store tests: accounts and roster items to store.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "store/store.h"

namespace kabar::store::testing {

using xmpp::ScramCredentials;
using xmpp::Subscription;
using xmpp::SubState;

inline ScramCredentials creds(char fill, int iterations) {
  // Raw bytes, including NUL and high bytes, must survive the BLOB round trip.
  std::string bytes = std::string("\0\xff", 2) + std::string(14, fill);
  return ScramCredentials{bytes, iterations, bytes + "stored", bytes + "server"};
}

inline Account make_account(const std::string& name, char fill = 'a',
                            std::int64_t created = 1700000000) {
  return Account{name, creds(fill, 4096), creds(static_cast<char>(fill + 1), 8192), created};
}

inline void expect_same(const ScramCredentials& a, const ScramCredentials& b) {
  EXPECT_EQ(a.salt, b.salt);
  EXPECT_EQ(a.iterations, b.iterations);
  EXPECT_EQ(a.stored_key, b.stored_key);
  EXPECT_EQ(a.server_key, b.server_key);
}

inline RosterItem item(const std::string& jid, std::vector<std::string> groups = {},
                       SubState state = {}) {
  RosterItem it;
  it.jid = jid;
  it.name = "Name of " + jid;
  it.state = state;
  it.groups = std::move(groups);
  return it;
}

}  // namespace kabar::store::testing
