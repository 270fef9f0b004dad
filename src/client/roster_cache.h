// The local roster cache for roster versioning (XEP-0237): the version string and the items, in a
// small line format (one item per line, tab-separated, escaped), written atomically.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "kabar/client.h"

namespace kabar::client {

struct RosterCache {
  std::string ver;
  std::vector<RosterItem> items;
};

std::optional<RosterCache> load_roster_cache(const std::string& path);
bool save_roster_cache(const std::string& path, const RosterCache& cache);

// The text form, exposed for tests.
std::string format_roster_cache(const RosterCache& cache);
std::optional<RosterCache> parse_roster_cache(const std::string& text);

}  // namespace kabar::client
