#include "server/http/websocket_upgrade.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>
#include <boost/beast/http/rfc7230.hpp>
#include <cctype>

namespace kabar::server {

namespace http = boost::beast::http;

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view view_of(boost::beast::string_view s) { return {s.data(), s.size()}; }

bool has_token(boost::beast::string_view list, std::string_view token) {
  for (const auto& t : http::token_list(list)) {
    if (iequals(std::string_view(t.data(), t.size()), token)) return true;
  }
  return false;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool is_loopback_host(std::string_view host) {
  return host == "localhost" || host == "127.0.0.1" || host == "[::1]" ||
         host.ends_with(".localhost");
}

WebSocketUpgrade refuse(http::status status, std::string reason) {
  WebSocketUpgrade u;
  u.status = status;
  u.reason = std::move(reason);
  return u;
}

}  // namespace

std::string websocket_accept(std::string_view key) {
  constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  std::string in(key);
  in += kGuid;
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(in.data()), in.size(), digest);
  unsigned char out[4 * ((SHA_DIGEST_LENGTH + 2) / 3) + 1];
  const int n = EVP_EncodeBlock(out, digest, SHA_DIGEST_LENGTH);
  return std::string(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
}

bool websocket_origin_allowed(std::string_view origin, const Config& cfg) {
  const std::string o = lower(origin);
  if (!cfg.websocket_origins.empty()) {
    return std::any_of(
        cfg.websocket_origins.begin(), cfg.websocket_origins.end(),
        [&](const std::string& allowed) { return allowed == "*" || lower(allowed) == o; });
  }
  // The default: pages served from the domain itself or from this machine, any scheme and port.
  const std::size_t sep = o.find("://");
  if (sep == std::string::npos) return false;
  std::string_view host = std::string_view(o).substr(sep + 3);
  if (host.starts_with('[')) {
    const std::size_t close = host.find(']');
    if (close == std::string_view::npos) return false;
    host = host.substr(0, close + 1);
  } else {
    host = host.substr(0, host.find(':'));
  }
  return host == lower(cfg.domain) || is_loopback_host(host);
}

WebSocketUpgrade check_websocket_upgrade(const http::request_header<>& req, const Config& cfg) {
  // RFC 6455 §4.2.1: a GET of HTTP/1.1 or later, with Upgrade: websocket and Connection:
  // Upgrade, a 16-byte key in base64 and version 13.
  if (req.method() != http::verb::get) {
    return refuse(http::status::method_not_allowed, "a WebSocket handshake is a GET");
  }
  if (req.version() < 11) return refuse(http::status::bad_request, "HTTP/1.1 is required");
  if (req.find(http::field::host) == req.end()) {
    return refuse(http::status::bad_request, "no Host header");
  }
  if (!has_token(req[http::field::upgrade], "websocket") ||
      !has_token(req[http::field::connection], "upgrade")) {
    return refuse(http::status::upgrade_required, "this is a WebSocket endpoint (RFC 7395)");
  }
  if (req[http::field::sec_websocket_version] != "13") {
    return refuse(http::status::upgrade_required, "WebSocket version 13 is required");
  }
  const std::string_view key = view_of(req[http::field::sec_websocket_key]);
  {
    unsigned char raw[32];
    // 16 bytes are 24 characters of base64 ending in "==".
    if (key.size() != 24 || !key.ends_with("==") ||
        EVP_DecodeBlock(raw, reinterpret_cast<const unsigned char*>(key.data()), 24) != 18) {
      return refuse(http::status::bad_request, "bad Sec-WebSocket-Key");
    }
  }
  // RFC 7395 §3.1: the client offers the "xmpp" subprotocol, and the server echoes it.
  if (!has_token(req[http::field::sec_websocket_protocol], "xmpp")) {
    return refuse(http::status::bad_request,
                  "the xmpp subprotocol is required (Sec-WebSocket-Protocol: xmpp, RFC 7395)");
  }
  // RFC 6455 §4.2.2 and §10.2: a page from an origin not allowed gets 403.
  if (const auto it = req.find(http::field::origin); it != req.end()) {
    if (!websocket_origin_allowed(view_of(it->value()), cfg)) {
      return refuse(http::status::forbidden, "origin not allowed");
    }
  }
  WebSocketUpgrade u;
  u.ok = true;
  u.accept = websocket_accept(key);
  return u;
}

std::string websocket_switching_protocols(std::string_view accept) {
  std::string out =
      "HTTP/1.1 101 Switching Protocols\r\n"
      "Upgrade: websocket\r\n"
      "Connection: Upgrade\r\n"
      "Sec-WebSocket-Protocol: xmpp\r\n"
      "Sec-WebSocket-Accept: ";
  out += accept;
  out += "\r\n\r\n";
  return out;
}

std::string http_refusal(const WebSocketUpgrade& refused) {
  const std::string body = refused.reason + "\n";
  std::string out = "HTTP/1.1 ";
  out += std::to_string(static_cast<unsigned>(refused.status));
  out += ' ';
  out += std::string(http::obsolete_reason(refused.status));
  out += "\r\nServer: kabard\r\nContent-Type: text/plain; charset=utf-8\r\n";
  if (refused.status == http::status::upgrade_required) {
    out += "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n";
  }
  out += "Connection: close\r\nContent-Length: ";
  out += std::to_string(body.size());
  out += "\r\n\r\n";
  out += body;
  return out;
}

}  // namespace kabar::server
