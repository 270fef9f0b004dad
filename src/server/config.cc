#include "server/config.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <charconv>
#include <set>
#include <stdexcept>

namespace kabar::server {

Endpoint parse_endpoint(const std::string& text) {
  std::size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    throw std::invalid_argument(fmt::format("'{}' is not HOST:PORT", text));
  }
  Endpoint ep;
  ep.host = text.substr(0, colon);
  if (ep.host.size() > 2 && ep.host.front() == '[' && ep.host.back() == ']') {
    ep.host = ep.host.substr(1, ep.host.size() - 2);
  }
  unsigned port = 0;
  const char* first = text.data() + colon + 1;
  const char* last = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(first, last, port);
  if (ec != std::errc() || ptr != last || port > 65535) {
    throw std::invalid_argument(fmt::format("'{}' has no valid port", text));
  }
  ep.port = static_cast<std::uint16_t>(port);
  return ep;
}

namespace {

std::vector<Endpoint> endpoints(const toml::node& node, const std::string& key) {
  std::vector<Endpoint> out;
  if (const auto* s = node.as_string()) {
    out.push_back(parse_endpoint(s->get()));
  } else if (const auto* arr = node.as_array()) {
    for (const auto& el : *arr) {
      const auto* s2 = el.as_string();
      if (s2 == nullptr) throw std::runtime_error(key + ": expected strings \"HOST:PORT\"");
      out.push_back(parse_endpoint(s2->get()));
    }
  } else {
    throw std::runtime_error(key + ": expected \"HOST:PORT\" or a list of them");
  }
  return out;
}

// A string or a list of strings.
std::vector<std::string> strings(const toml::node& node, const std::string& key) {
  std::vector<std::string> out;
  if (const auto* s = node.as_string()) {
    out.push_back(s->get());
  } else if (const auto* arr = node.as_array()) {
    for (const auto& el : *arr) {
      const auto* s2 = el.as_string();
      if (s2 == nullptr) throw std::runtime_error(key + ": expected strings");
      out.push_back(s2->get());
    }
  } else {
    throw std::runtime_error(key + ": expected a string or a list of them");
  }
  return out;
}

template <typename T>
T get(const toml::node& node, const std::string& key) {
  auto v = node.value<T>();
  if (!v) throw std::runtime_error(key + ": wrong type");
  return *v;
}

int get_positive(const toml::node& node, const std::string& key) {
  auto v = get<std::int64_t>(node, key);
  if (v <= 0 || v > 1'000'000'000) throw std::runtime_error(key + ": must be a positive number");
  return static_cast<int>(v);
}

}  // namespace

ExternalService parse_external_service(const std::string& uri) {
  ExternalService svc;
  const auto colon = uri.find(':');
  if (colon == std::string::npos)
    throw std::invalid_argument("'" + uri + "': expected TYPE:HOST:PORT");
  svc.type = uri.substr(0, colon);
  if (svc.type != "stun" && svc.type != "turn" && svc.type != "turns") {
    throw std::invalid_argument("'" + uri + "': the type must be stun, turn or turns");
  }
  std::string rest = uri.substr(colon + 1);
  if (const auto q = rest.find('?'); q != std::string::npos) {
    const std::string query = rest.substr(q + 1);
    rest.resize(q);
    if (query == "transport=udp" || query == "transport=tcp") {
      svc.transport = query.substr(10);
    } else {
      throw std::invalid_argument("'" + uri + "': only ?transport=udp or ?transport=tcp");
    }
  }
  const Endpoint ep = parse_endpoint(rest);
  svc.host = ep.host;
  svc.port = ep.port;
  if (svc.transport.empty()) svc.transport = svc.type == "turns" ? "tcp" : "udp";
  return svc;
}

void load_config_file(const std::filesystem::path& file, Config& cfg) {
  toml::table tbl;
  try {
    tbl = toml::parse_file(file.string());
  } catch (const toml::parse_error& e) {
    throw std::runtime_error(
        fmt::format("{}:{}: {}", file.string(), e.source().begin.line, e.description()));
  }
  auto bad = [&](const std::string& key, const std::string& why) {
    return std::runtime_error(fmt::format("{}: {}: {}", file.string(), key, why));
  };
  for (auto&& [k, node] : tbl) {
    std::string key(k.str());
    try {
      if (key == "domain") {
        cfg.domain = get<std::string>(node, key);
      } else if (key == "data_dir") {
        cfg.data_dir = get<std::string>(node, key);
      } else if (key == "allow_registration") {
        cfg.allow_registration = get<bool>(node, key);
      } else if (key == "allow_plaintext") {
        cfg.allow_plaintext = get<bool>(node, key);
      } else if (key == "log_level") {
        cfg.log_level = get<std::string>(node, key);
      } else if (key == "threads") {
        cfg.threads = get_positive(node, key);
      } else if (key == "listen") {
        const auto* t = node.as_table();
        if (t == nullptr) throw std::runtime_error(key + ": expected a table");
        for (auto&& [k2, n2] : *t) {
          std::string sub(k2.str());
          if (sub == "c2s") {
            cfg.c2s = endpoints(n2, "listen.c2s");
          } else if (sub == "c2s_tls") {
            cfg.c2s_tls = endpoints(n2, "listen.c2s_tls");
          } else if (sub == "proxy65") {
            cfg.proxy65 = endpoints(n2, "listen.proxy65");
          } else if (sub == "http") {
            cfg.http = endpoints(n2, "listen.http");
          } else if (sub == "https") {
            cfg.https = endpoints(n2, "listen.https");
          } else {
            throw std::runtime_error("listen." + sub + ": unknown key");
          }
        }
      } else if (key == "http") {
        const auto* t = node.as_table();
        if (t == nullptr) throw std::runtime_error(key + ": expected a table");
        for (auto&& [k2, n2] : *t) {
          std::string sub(k2.str());
          if (sub == "base_url") {
            cfg.http_base_url = get<std::string>(n2, "http.base_url");
          } else if (sub == "websocket_origins") {
            cfg.websocket_origins = strings(n2, "http.websocket_origins");
          } else if (sub == "web_root") {
            cfg.web_root = get<std::string>(n2, "http.web_root");
          } else {
            throw std::runtime_error("http." + sub + ": unknown key");
          }
        }
      } else if (key == "upload") {
        const auto* t = node.as_table();
        if (t == nullptr) throw std::runtime_error(key + ": expected a table");
        for (auto&& [k2, n2] : *t) {
          std::string sub(k2.str());
          std::string full = "upload." + sub;
          if (sub == "max_file_size") {
            cfg.upload_max_file_size = static_cast<std::uint64_t>(get_positive(n2, full));
          } else if (sub == "quota") {
            cfg.upload_quota = static_cast<std::uint64_t>(get_positive(n2, full));
          } else if (sub == "expire_after") {
            cfg.upload_expire_after_s = get_positive(n2, full);
          } else {
            throw std::runtime_error(full + ": unknown key");
          }
        }
      } else if (key == "extdisco") {
        const auto* t = node.as_table();
        if (t == nullptr) throw std::runtime_error(key + ": expected a table");
        for (auto&& [k2, n2] : *t) {
          std::string sub(k2.str());
          std::string full = "extdisco." + sub;
          if (sub == "services") {
            cfg.external_services.clear();
            for (const auto& uri : strings(n2, full)) {
              cfg.external_services.push_back(parse_external_service(uri));
            }
          } else if (sub == "turn_secret") {
            cfg.turn_secret = get<std::string>(n2, full);
          } else if (sub == "credential_ttl") {
            cfg.turn_credential_ttl_s = get_positive(n2, full);
          } else {
            throw std::runtime_error(full + ": unknown key");
          }
        }
      } else if (key == "contact") {
        // XEP-0157 §2: the kinds of address the serverinfo form knows; each a list of URIs.
        static constexpr const char* kKinds[] = {"abuse",    "admin",  "feedback", "sales",
                                                 "security", "status", "support"};
        const auto* t = node.as_table();
        if (t == nullptr) throw std::runtime_error(key + ": expected a table");
        for (auto&& [k2, n2] : *t) {
          std::string sub(k2.str());
          std::string full = "contact." + sub;
          if (std::find(std::begin(kKinds), std::end(kKinds), sub) == std::end(kKinds)) {
            throw std::runtime_error(full + ": unknown key");
          }
          std::vector<std::string> uris = strings(n2, full);
          for (const auto& u : uris) {
            if (u.find(':') == std::string::npos ||
                u.find_first_of(" \t\r\n") != std::string::npos) {
              throw std::runtime_error(full +
                                       ": not a URI (mailto:..., xmpp:..., https://...): " + u);
            }
          }
          cfg.contact_addresses.emplace_back(sub, std::move(uris));
        }
        std::sort(cfg.contact_addresses.begin(), cfg.contact_addresses.end(),
                  [](const auto& a, const auto& b) {
                    auto rank = [](const std::string& k) {
                      return std::find(std::begin(kKinds), std::end(kKinds), k) -
                             std::begin(kKinds);
                    };
                    return rank(a.first) < rank(b.first);
                  });
      } else if (key == "archive") {
        const auto* t = node.as_table();
        if (t == nullptr) throw std::runtime_error(key + ": expected a table");
        for (auto&& [k2, n2] : *t) {
          std::string sub(k2.str());
          std::string full = "archive." + sub;
          if (sub == "enabled") {
            cfg.archive_enabled = get<bool>(n2, full);
          } else if (sub == "default") {
            cfg.archive_default = get<std::string>(n2, full);
            if (cfg.archive_default != "always" && cfg.archive_default != "roster" &&
                cfg.archive_default != "never") {
              throw std::runtime_error(full + ": \"always\", \"roster\" or \"never\"");
            }
          } else if (sub == "retention_days") {
            const auto days = get<std::int64_t>(n2, full);
            if (days < 0 || days > 100'000) {
              throw std::runtime_error(full + ": a number of days, 0 (for ever) to 100000");
            }
            cfg.archive_retention_days = static_cast<int>(days);
          } else {
            throw std::runtime_error(full + ": unknown key");
          }
        }
      } else if (key == "push") {
        const auto* t = node.as_table();
        if (t == nullptr) throw std::runtime_error(key + ": expected a table");
        for (auto&& [k2, n2] : *t) {
          std::string sub(k2.str());
          std::string full = "push." + sub;
          if (sub == "include_body") {
            cfg.push_include_body = get<bool>(n2, full);
          } else if (sub == "include_sender") {
            cfg.push_include_sender = get<bool>(n2, full);
          } else if (sub == "min_interval") {
            const auto s = get<std::int64_t>(n2, full);
            if (s < 0 || s > 86'400) {
              throw std::runtime_error(full + ": seconds, 0 (every message) to 86400");
            }
            cfg.push_min_interval_s = static_cast<int>(s);
          } else {
            throw std::runtime_error(full + ": unknown key");
          }
        }
      } else if (key == "sm") {
        const auto* t = node.as_table();
        if (t == nullptr) throw std::runtime_error(key + ": expected a table");
        for (auto&& [k2, n2] : *t) {
          std::string sub(k2.str());
          std::string full = "sm." + sub;
          if (sub == "resume_timeout") {
            cfg.sm_resume_timeout_s = get_positive(n2, full);
          } else if (sub == "max_unacked") {
            cfg.sm_max_unacked = static_cast<std::size_t>(get_positive(n2, full));
          } else {
            throw std::runtime_error(full + ": unknown key");
          }
        }
      } else if (key == "csi") {
        const auto* t = node.as_table();
        if (t == nullptr) throw std::runtime_error(key + ": expected a table");
        for (auto&& [k2, n2] : *t) {
          std::string sub(k2.str());
          std::string full = "csi." + sub;
          if (sub == "enabled") {
            cfg.csi_enabled = get<bool>(n2, full);
          } else if (sub == "max_held") {
            cfg.csi_max_held = static_cast<std::size_t>(get_positive(n2, full));
          } else {
            throw std::runtime_error(full + ": unknown key");
          }
        }
      } else if (key == "proxy65") {
        const auto* t = node.as_table();
        if (t == nullptr) throw std::runtime_error(key + ": expected a table");
        for (auto&& [k2, n2] : *t) {
          std::string sub(k2.str());
          std::string full = "proxy65." + sub;
          if (sub == "host") {
            cfg.proxy65_host = get<std::string>(n2, full);
          } else if (sub == "streams_per_account") {
            cfg.proxy65_streams_per_account = get_positive(n2, full);
          } else if (sub == "bytes_per_second") {
            cfg.proxy65_bytes_per_second = get_positive(n2, full);
          } else if (sub == "idle_timeout") {
            cfg.proxy65_idle_timeout_s = get_positive(n2, full);
          } else {
            throw std::runtime_error(full + ": unknown key");
          }
        }
      } else if (key == "tls") {
        const auto* t = node.as_table();
        if (t == nullptr) throw std::runtime_error(key + ": expected a table");
        for (auto&& [k2, n2] : *t) {
          std::string sub(k2.str());
          if (sub == "cert") {
            cfg.tls_cert = get<std::string>(n2, "tls.cert");
          } else if (sub == "key") {
            cfg.tls_key = get<std::string>(n2, "tls.key");
          } else {
            throw std::runtime_error("tls." + sub + ": unknown key");
          }
        }
      } else if (key == "limits") {
        const auto* t = node.as_table();
        if (t == nullptr) throw std::runtime_error(key + ": expected a table");
        for (auto&& [k2, n2] : *t) {
          std::string sub(k2.str());
          std::string full = "limits." + sub;
          if (sub == "max_stanza_bytes") {
            cfg.max_stanza_bytes = static_cast<std::size_t>(get_positive(n2, full));
          } else if (sub == "preauth_stanza_bytes") {
            cfg.preauth_stanza_bytes = static_cast<std::size_t>(get_positive(n2, full));
          } else if (sub == "offline_messages") {
            cfg.offline_limit = static_cast<std::size_t>(get_positive(n2, full));
          } else if (sub == "offline_bytes") {
            cfg.offline_limit_bytes = static_cast<std::size_t>(get_positive(n2, full));
          } else if (sub == "offline_per_sender") {
            cfg.offline_limit_per_sender = static_cast<std::size_t>(get_positive(n2, full));
          } else if (sub == "auth_timeout") {
            cfg.auth_timeout_s = get_positive(n2, full);
          } else if (sub == "idle_timeout") {
            cfg.idle_timeout_s = get_positive(n2, full);
          } else if (sub == "ping_timeout") {
            cfg.ping_timeout_s = get_positive(n2, full);
          } else if (sub == "write_stall_timeout") {
            cfg.write_stall_timeout_s = get_positive(n2, full);
          } else if (sub == "auth_failures_per_account") {
            cfg.auth_failures_per_account = get_positive(n2, full);
          } else if (sub == "auth_failures_per_address") {
            cfg.auth_failures_per_address = get_positive(n2, full);
          } else if (sub == "auth_failure_delay_ms") {
            cfg.auth_failure_delay_ms = get_positive(n2, full);
          } else if (sub == "auth_failure_max_delay_ms") {
            cfg.auth_failure_max_delay_ms = get_positive(n2, full);
          } else if (sub == "auth_failures_slow_account") {
            cfg.auth_failures_slow_account = get_positive(n2, full);
          } else if (sub == "unauthenticated_connections") {
            cfg.unauthenticated_connections = get_positive(n2, full);
          } else if (sub == "unauthenticated_per_address") {
            cfg.unauthenticated_per_address = get_positive(n2, full);
          } else if (sub == "http_per_address") {
            cfg.http_per_address = get_positive(n2, full);
          } else if (sub == "registrations_per_address") {
            cfg.registrations_per_address = get_positive(n2, full);
          } else if (sub == "scram_iterations") {
            cfg.scram_iterations = get_positive(n2, full);
            if (cfg.scram_iterations < 4096) {
              throw std::runtime_error(full + ": at least 4096 (RFC 7677)");
            }
          } else {
            throw std::runtime_error(full + ": unknown key");
          }
        }
      } else {
        throw std::runtime_error(key + ": unknown key");
      }
    } catch (const std::invalid_argument& e) {
      throw bad(key, e.what());
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(fmt::format("{}: {}", file.string(), e.what()));
    }
  }
}

}  // namespace kabar::server
