#include "server/http/web_client.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <array>
#include <fstream>
#include <sstream>
#include <system_error>

#include "server/http/websocket_upgrade.h"
#include "xml/serializer.h"

namespace kabar::server {

namespace fs = std::filesystem;
namespace http = boost::beast::http;

namespace {

fs::path executable_dir() {
  std::array<char, 4096> buf{};
  const ssize_t n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n <= 0) return {};
  return fs::path(std::string(buf.data(), static_cast<std::size_t>(n))).parent_path();
}

fs::path find_web_root(const Config& cfg) {
  std::error_code ec;
  if (!cfg.web_root.empty()) return fs::canonical(cfg.web_root, ec);
  const fs::path exe = executable_dir();
  if (exe.empty()) return {};
  // Installed (PREFIX/bin/kabard and PREFIX/share/kabar/web), or in a checkout (build/bin/).
  for (const fs::path& p :
       {exe / "../share/kabar/web", exe / "../../web/node_modules/converse.js/dist"}) {
    if (fs::exists(p / "converse.min.js", ec)) return fs::canonical(p, ec);
  }
  return {};
}

// Quotes for a JavaScript string literal inside a <script> element.
std::string js_string(std::string_view s) {
  std::string out = "'";
  for (const char c : s) {
    if (c == '\'' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '<') {
      out += "\\x3c";  // no "</script>" can end the element early
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  out += '\'';
  return out;
}

// The host of a Host header, without its port.
std::string_view host_name(std::string_view host) {
  if (host.starts_with('[')) return host.substr(0, host.find(']') + 1);
  return host.substr(0, host.find(':'));
}

WebResponse not_found(std::string body) {
  WebResponse r;
  r.status = http::status::not_found;
  r.content_type = "text/plain; charset=utf-8";
  r.body = std::move(body);
  return r;
}

}  // namespace

std::string_view content_type_for(const fs::path& file) {
  const std::string ext = file.extension().string();
  if (ext == ".js" || ext == ".mjs") return "text/javascript; charset=utf-8";
  if (ext == ".css") return "text/css; charset=utf-8";
  if (ext == ".json" || ext == ".map") return "application/json";
  if (ext == ".html") return "text/html; charset=utf-8";
  if (ext == ".svg") return "image/svg+xml";
  if (ext == ".png") return "image/png";
  if (ext == ".jpg" || ext == ".jpeg") return "image/jpeg";
  if (ext == ".gif") return "image/gif";
  if (ext == ".ico") return "image/x-icon";
  if (ext == ".webp") return "image/webp";
  if (ext == ".woff2") return "font/woff2";
  if (ext == ".woff") return "font/woff";
  if (ext == ".ttf") return "font/ttf";
  if (ext == ".eot") return "application/vnd.ms-fontobject";
  if (ext == ".wasm") return "application/wasm";
  if (ext == ".mp3") return "audio/mpeg";
  if (ext == ".ogg") return "audio/ogg";
  if (ext == ".txt") return "text/plain; charset=utf-8";
  return "application/octet-stream";
}

WebClient::WebClient(const Config& cfg) : cfg_(cfg), root_(find_web_root(cfg)) {
  if (root_.empty()) {
    spdlog::warn(
        "web client: Converse.js not found (run `make deps`, or give --web-root / "
        "[http] web_root); / answers 404");
  } else {
    spdlog::info("web client: Converse.js from {}", root_.string());
  }
}

std::string WebClient::index_html() const {
  std::string domain;
  xml::escape_text(cfg_.domain, domain);
  std::string page = R"(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kabar: )" + domain +
                     R"(</title>
<link rel="stylesheet" type="text/css" href="/dist/converse.min.css">
</head>
<body class="converse-fullscreen">
<noscript>The web client needs JavaScript.</noscript>
<script type="module">
import converse from '/dist/converse.min.js';
// RFC 7395 on the scheme, host and port this page came from: wss:// under https://.
const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
converse.initialize({
  websocket_url: scheme + location.host + ')" +
                     std::string(kWebSocketPath) + R"(',
  discover_connection_methods: false,
  assets_path: '/dist/',
  authentication: 'login',
  auto_reconnect: true,
  default_domain: )" +
                     js_string(cfg_.domain) + R"(,
  domain_placeholder: )" +
                     js_string(cfg_.domain) + R"(,
  registration_domain: )" +
                     js_string(cfg_.domain) + R"(,
  allow_registration: )" +
                     (cfg_.allow_registration ? "true" : "false") + R"(,
  view_mode: 'fullscreen',
  i18n: 'en',
  play_sounds: false,
  show_client_info: false,
  theme: 'concord',
});
</script>
</body>
</html>
)";
  return page;
}

std::optional<WebResponse> WebClient::get(std::string_view target, std::string_view host,
                                          bool https, unsigned https_port) const {
  const std::string_view path = target.substr(0, target.find('?'));
  if (path == "/.well-known/host-meta" || path == "/.well-known/host-meta.json") {
    // XEP-0156 §3: the WebSocket endpoint (wss:// first where there is one).
    std::vector<std::string> urls;
    if (https) {
      urls.push_back("wss://" + std::string(host) + std::string(kWebSocketPath));
    } else {
      if (https_port != 0) {
        urls.push_back("wss://" + std::string(host_name(host)) + ":" + std::to_string(https_port) +
                       std::string(kWebSocketPath));
      }
      urls.push_back("ws://" + std::string(host) + std::string(kWebSocketPath));
    }
    WebResponse r;
    r.cors = true;
    if (path.ends_with(".json")) {
      r.content_type = "application/json";
      r.body = "{\"links\":[";
      for (std::size_t i = 0; i < urls.size(); ++i) {
        if (i > 0) r.body += ',';
        std::string href;
        for (const char c : urls[i]) {
          if (c == '"' || c == '\\') href += '\\';
          href += c;
        }
        r.body += "{\"rel\":\"urn:xmpp:alt-connections:websocket\",\"href\":\"" + href + "\"}";
      }
      r.body += "]}\n";
    } else {
      r.content_type = "application/xrd+xml; charset=utf-8";
      r.body =
          "<?xml version='1.0' encoding='utf-8'?>\n"
          "<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n";
      for (const auto& u : urls) {
        std::string href;
        xml::escape_attr(u, href);
        r.body += "  <Link rel='urn:xmpp:alt-connections:websocket' href='" + href + "'/>\n";
      }
      r.body += "</XRD>\n";
    }
    return r;
  }
  if (path == "/" || path == "/index.html") {
    if (root_.empty()) {
      return not_found(
          "the web client is not installed: run `make deps` (Converse.js into web/node_modules) "
          "or give kabard --web-root\n");
    }
    WebResponse r;
    r.content_type = "text/html; charset=utf-8";
    r.body = index_html();
    return r;
  }
  // Converse.js's OMEMO library (Emscripten) fetches its WebAssembly beside the page, not beside
  // itself: /curve25519_compiled.wasm. A .wasm name at the root is served from the root too.
  const bool root_wasm =
      path.size() > 6 && path.find('/', 1) == std::string_view::npos && path.ends_with(".wasm");
  if (!path.starts_with("/dist/") && !root_wasm) return std::nullopt;
  if (root_.empty()) return not_found("not found\n");
  const std::string_view rel = path.substr(root_wasm ? 1 : 6);
  // Only plain relative names under the root: no "..", no escapes, no hidden files.
  if (rel.empty() || rel.find("..") != std::string_view::npos ||
      rel.find('%') != std::string_view::npos || rel.find('\\') != std::string_view::npos ||
      rel.find("/.") != std::string_view::npos || rel.starts_with('.') ||
      rel.find('\0') != std::string_view::npos) {
    return not_found("not found\n");
  }
  const fs::path file = root_ / fs::path(std::string(rel));
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) return not_found("not found\n");
  std::ifstream in(file, std::ios::binary);
  std::ostringstream body;
  body << in.rdbuf();
  if (!in && !in.eof()) return not_found("not found\n");
  WebResponse r;
  r.content_type = std::string(content_type_for(file));
  r.body = std::move(body).str();
  r.cache_control = "max-age=3600";
  return r;
}

}  // namespace kabar::server
