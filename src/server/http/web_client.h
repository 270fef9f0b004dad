// What kabard serves over HTTP and HTTPS besides upload and WebSocket: the web client
// (Converse.js, from npm, at / with its files under /dist/) and XEP-0156's host-meta, which
// names the WebSocket endpoint.
#pragma once

#include <boost/beast/http.hpp>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "server/config.h"

namespace kabar::server {

struct WebResponse {
  boost::beast::http::status status = boost::beast::http::status::ok;
  std::string content_type;
  std::string body;
  bool cors = false;  // Access-Control-Allow-Origin: * (XEP-0156 §3: host-meta is fetched by
                      // pages of other origins)
  std::string cache_control = "no-cache";
};

class WebClient {
 public:
  // `web_root`: Converse.js's dist/ directory (empty: Config::web_root, else looked for next to
  // the binary).
  explicit WebClient(const Config& cfg);

  // The answer to a GET or HEAD of `target` (path and query); nullopt when the path is none of
  // ours. `host`: the request's Host header; `https`: it came over HTTPS; `https_port`: where
  // wss:// is offered (0: nowhere).
  std::optional<WebResponse> get(std::string_view target, std::string_view host, bool https,
                                 unsigned https_port) const;

  const std::filesystem::path& root() const { return root_; }

 private:
  std::string index_html() const;

  const Config& cfg_;
  std::filesystem::path root_;  // empty: the files are not installed
};

// The Content-Type for a file served by its extension.
std::string_view content_type_for(const std::filesystem::path& file);

}  // namespace kabar::server
