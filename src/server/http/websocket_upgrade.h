// The HTTP side of XMPP over WebSocket: the opening handshake (RFC 6455 §4.2) of a request for
// /xmpp-websocket, with the `xmpp` subprotocol RFC 7395 §3.1 requires and the origins the
// configuration allows. Beast parses the request; this decides the answer.
#pragma once

#include <boost/beast/http.hpp>
#include <string>
#include <string_view>

#include "server/config.h"

namespace kabar::server {

inline constexpr std::string_view kWebSocketPath = "/xmpp-websocket";

struct WebSocketUpgrade {
  bool ok = false;
  // Refused: the status and a one-line reason for the body; 426 asks for version 13.
  boost::beast::http::status status = boost::beast::http::status::bad_request;
  std::string reason;
  std::string accept;  // accepted: the Sec-WebSocket-Accept value
};

WebSocketUpgrade check_websocket_upgrade(const boost::beast::http::request_header<>& req,
                                         const Config& cfg);

// RFC 6455 §4.2.2: base64(SHA-1(key + the protocol's GUID)).
std::string websocket_accept(std::string_view key);

// Whether a browser page from `origin` may open a WebSocket (Config::websocket_origins).
bool websocket_origin_allowed(std::string_view origin, const Config& cfg);

// The 101 answer to an accepted handshake, as bytes.
std::string websocket_switching_protocols(std::string_view accept);

// A refusal, as bytes (Connection: close).
std::string http_refusal(const WebSocketUpgrade& refused);

}  // namespace kabar::server
