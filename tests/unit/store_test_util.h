// Shared by the store tests: accounts and roster items to store, and a crash in a child.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <type_traits>
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

// Runs `work` in a child process that then dies without closing anything (as a killed kabard
// would: no destructor runs), and returns what `work` returned (a trivially copyable value).
template <class Work>
auto in_a_dying_child(Work work) -> decltype(work()) {
  using T = decltype(work());
  static_assert(std::is_trivially_copyable_v<T>);
  T out{};
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  const pid_t child = ::fork();
  EXPECT_GE(child, 0);
  if (child == 0) {
    ::close(fds[0]);
    const T got = work();
    if (::write(fds[1], &got, sizeof got) != static_cast<ssize_t>(sizeof got)) ::_exit(2);
    ::_exit(0);
  }
  ::close(fds[1]);
  EXPECT_EQ(::read(fds[0], &out, sizeof out), static_cast<ssize_t>(sizeof out));
  ::close(fds[0]);
  int status = 0;
  EXPECT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  return out;
}

}  // namespace kabar::store::testing
