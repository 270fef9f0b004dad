// Caps on connections that have not authenticated (RFC 6120 §13.12 asks servers to limit what
// unauthenticated peers can consume): a total, and a count per address (address_key()).
//
// Past the per-address cap a new connection is refused (the caller sends <policy-violation/>,
// RFC 6120 §4.9.3.17: a local policy, and closes it before making a session). Past the total a
// new connection is still taken and the oldest unauthenticated one is closed instead with
// <resource-constraint/> (§4.9.3.18: the server lacks the resources to serve that stream).
// Refusing newcomers at the total would let a flood from many addresses keep every new login
// out for as long as it lasts; closing the oldest lets a real client in, which needs only the few
// round trips of its login before the flood has opened `total` connections more. Authenticated
// sessions are never counted, so neither cap touches them.
//
// Shared by every shard: one mutex, taken when a connection is accepted, authenticates or ends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace kabar::server {

class C2sSession;

class UnauthenticatedConnections {
 public:
  UnauthenticatedConnections(std::size_t total, std::size_t per_address)
      : total_(total), per_address_(per_address) {}

  struct Admission {
    bool admitted = false;  // false: the address is at its cap; nothing was counted
    std::uint64_t ticket = 0;
    // The oldest unauthenticated connection, which no longer counts and is to be closed with
    // <resource-constraint/> (empty when under the total, or when it has no session yet).
    std::weak_ptr<C2sSession> evicted;
  };
  // A new connection from `address_key` (auth_throttle.h).
  Admission admit(const std::string& address_key);
  // Gives the admitted connection's session; false if it was evicted meanwhile (close it).
  bool attach(std::uint64_t ticket, std::weak_ptr<C2sSession> session);
  // The connection authenticated or ended; any number of times.
  void release(std::uint64_t ticket);

  std::size_t count() const;
  std::size_t count(const std::string& address_key) const;

 private:
  struct Entry {
    std::string address;
    std::weak_ptr<C2sSession> session;
  };
  void drop(std::map<std::uint64_t, Entry>::iterator it);

  const std::size_t total_;
  const std::size_t per_address_;
  mutable std::mutex mu_;
  std::uint64_t next_ticket_ = 1;
  std::map<std::uint64_t, Entry> by_age_;  // tickets grow: the first is the oldest
  std::unordered_map<std::string, std::size_t> per_address_count_;
};

}  // namespace kabar::server
