#include "client/roster_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "kabar/private_file.h"

namespace kabar::client {

namespace {

constexpr const char* kMagic = "kabar-roster-cache 1";

// Tabs, newlines and backslashes are escaped so any name or group survives.
std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\t')
      out += "\\t";
    else if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else
      out += c;
  }
  return out;
}

std::string unescape(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      char n = s[++i];
      out += n == 't' ? '\t' : n == 'n' ? '\n' : n == 'r' ? '\r' : n;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> f;
  std::string cur;
  for (char c : line) {
    if (c == '\t') {
      f.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  f.push_back(cur);
  return f;
}

}  // namespace

std::string format_roster_cache(const RosterCache& cache) {
  std::string out = kMagic;
  out += "\nver\t" + escape(cache.ver) + "\n";
  for (const auto& i : cache.items) {
    out += "item\t" + escape(i.jid) + "\t" + escape(i.name) + "\t" + escape(i.subscription) + "\t" +
           (i.ask ? "ask" : "-");
    for (const auto& g : i.groups) out += "\t" + escape(g);
    out += "\n";
  }
  return out;
}

std::optional<RosterCache> parse_roster_cache(const std::string& text) {
  std::istringstream in(text);
  std::string line;
  if (!std::getline(in, line) || line != kMagic) return std::nullopt;
  RosterCache c;
  bool have_ver = false;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto f = split_tabs(line);
    if (f[0] == "ver" && f.size() == 2) {
      c.ver = unescape(f[1]);
      have_ver = true;
    } else if (f[0] == "item" && f.size() >= 5) {
      RosterItem i;
      i.jid = unescape(f[1]);
      i.name = unescape(f[2]);
      i.subscription = unescape(f[3]);
      i.ask = f[4] == "ask";
      for (std::size_t k = 5; k < f.size(); ++k) i.groups.push_back(unescape(f[k]));
      c.items.push_back(std::move(i));
    } else {
      return std::nullopt;
    }
  }
  if (!have_ver) return std::nullopt;
  return c;
}

std::optional<RosterCache> load_roster_cache(const std::string& path) {
  std::ifstream f(path);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_roster_cache(ss.str());
}

bool save_roster_cache(const std::string& path, const RosterCache& cache) {
  // Created 0600 (a roster names the user's contacts): never readable by others, not even until
  // a chmod.
  return write_private_file(path, format_roster_cache(cache));
}

}  // namespace kabar::client
