// Shared by the roster and presence folders: the wire form of roster items and roster pushes.
#pragma once

#include <string>

#include "server/server.h"
#include "store/store.h"

namespace kabar::server {

xml::Element roster_item_element(const store::RosterItem& item, bool removed = false);
// Pushes one item to every interested resource of `user` (RFC 6121 §2.1.6).
void push_roster_item(Server& s, const std::string& user, const store::RosterItem& item,
                      std::int64_t version, bool removed = false);
std::string bare_of(Server& s, const std::string& user);

}  // namespace kabar::server
