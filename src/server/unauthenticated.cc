#include "server/unauthenticated.h"

namespace kabar::server {

UnauthenticatedConnections::Admission UnauthenticatedConnections::admit(
    const std::string& address_key) {
  std::lock_guard lock(mu_);
  Admission a;
  auto count = per_address_count_.find(address_key);
  if (count != per_address_count_.end() && count->second >= per_address_) return a;
  if (by_age_.size() >= total_ && !by_age_.empty()) {
    auto oldest = by_age_.begin();
    a.evicted = oldest->second.session;
    drop(oldest);
  }
  a.admitted = true;
  a.ticket = next_ticket_++;
  by_age_.emplace(a.ticket, Entry{address_key, {}});
  ++per_address_count_[address_key];
  return a;
}

bool UnauthenticatedConnections::attach(std::uint64_t ticket, std::weak_ptr<C2sSession> session) {
  std::lock_guard lock(mu_);
  auto it = by_age_.find(ticket);
  if (it == by_age_.end()) return false;
  it->second.session = std::move(session);
  return true;
}

void UnauthenticatedConnections::release(std::uint64_t ticket) {
  std::lock_guard lock(mu_);
  auto it = by_age_.find(ticket);
  if (it != by_age_.end()) drop(it);
}

void UnauthenticatedConnections::drop(std::map<std::uint64_t, Entry>::iterator it) {
  auto count = per_address_count_.find(it->second.address);
  if (count != per_address_count_.end() && --count->second == 0) per_address_count_.erase(count);
  by_age_.erase(it);
}

std::size_t UnauthenticatedConnections::count() const {
  std::lock_guard lock(mu_);
  return by_age_.size();
}

std::size_t UnauthenticatedConnections::count(const std::string& address_key) const {
  std::lock_guard lock(mu_);
  auto it = per_address_count_.find(address_key);
  return it == per_address_count_.end() ? 0 : it->second;
}

}  // namespace kabar::server
