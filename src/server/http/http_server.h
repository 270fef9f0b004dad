// kabard's HTTP and HTTPS listeners. Connections are spread over the shards as client
// connections are (accepted on shard 0, handed round robin) and stay on theirs.
//
// HTTP (Boost.Beast, a coroutine per connection): routes each request by path prefix to a
// handler that reads the body itself (so an upload streams to disk) and writes the response;
// the routes modules register run on shard 0, where their state lives (a request for one
// moves its connection there). Keep-alive, an 8 KiB header limit, a 30 s inactivity timeout.
//
// HTTPS: the client port's TLS (OpenSSL for the handshake, then kabar's TLS 1.3 record layer),
// so that a wss:// connection costs what a TLS client connection does. It serves the web
// client, host-meta and the WebSocket upgrade (no request bodies, so no upload).
//
// On both, a GET of /xmpp-websocket with an acceptable handshake (websocket_upgrade.h) turns
// the connection into a client session (net::WebSocketTransport).
#pragma once

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange
#include <vector>

#include "server/http/web_client.h"
#include "server/server.h"

namespace kabar::server {

namespace beast = boost::beast;
namespace http = boost::beast::http;

using RequestParser = http::request_parser<http::buffer_body>;

// One request whose header has been read.
struct HttpExchange {
  asio::ip::tcp::socket& sock;
  beast::flat_buffer& buffer;
  RequestParser& parser;
  std::function<void()> touch;  // resets the inactivity timeout (call while streaming a body)

  const http::request<http::buffer_body>& header() const { return parser.get(); }
  // Reads and drops a request body of at most `limit` bytes, so that an error response is not
  // lost to a reset when the connection closes with unread bytes; false if it is larger.
  awaitable<bool> discard_body(std::uint64_t limit = 64 * 1024);
  // Writes a small response and says whether the connection may stay open.
  awaitable<bool> respond(http::status status, std::string body = {},
                          std::string_view content_type = "text/plain; charset=utf-8");
};

// Returns whether the connection may carry another request.
using HttpHandler = std::function<awaitable<bool>(HttpExchange&)>;

class HttpsConnection;

// Open HTTP and HTTPS connections per address (address_key()), shared by the shards: past
// [limits] http_per_address a new connection from that address is closed before anything is read
// from it. A connection counts until it ends or becomes a WebSocket session (which the
// unauthenticated caps count from then on, unauthenticated.h).
class HttpConnectionCounts {
 public:
  explicit HttpConnectionCounts(std::size_t per_address) : per_address_(per_address) {}
  // Counts a connection from `key`; false (nothing counted) when the address is at its cap.
  bool take(const std::string& key);
  void give(const std::string& key);
  std::size_t count(const std::string& key) const;

 private:
  const std::size_t per_address_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::size_t> open_;
};

// One counted connection: given back when destroyed (or moved from).
class HttpSlot {
 public:
  HttpSlot() = default;
  HttpSlot(std::shared_ptr<HttpConnectionCounts> counts, std::string key)
      : counts_(std::move(counts)), key_(std::move(key)) {}
  HttpSlot(HttpSlot&& o) noexcept : counts_(std::move(o.counts_)), key_(std::move(o.key_)) {}
  HttpSlot& operator=(HttpSlot&& o) noexcept {
    if (this != &o) {
      release();
      counts_ = std::move(o.counts_);
      key_ = std::move(o.key_);
    }
    return *this;
  }
  HttpSlot(const HttpSlot&) = delete;
  HttpSlot& operator=(const HttpSlot&) = delete;
  ~HttpSlot() { release(); }
  void release() {
    if (counts_) std::exchange(counts_, nullptr)->give(key_);
  }

 private:
  std::shared_ptr<HttpConnectionCounts> counts_;
  std::string key_;
};

class HttpServer {
 public:
  explicit HttpServer(Server& server);
  ~HttpServer();

  // A route of a module's (HTTP only); its handler runs on shard 0.
  void route(std::string prefix, HttpHandler handler);
  // Binds every configured listener; throws std::runtime_error.
  void start();
  void stop();
  // "http://HOST:PORT" of the first HTTP listener, or the configured public URL.
  const std::string& base_url() const { return base_url_; }
  const WebClient& web() const { return web_; }
  // The port of the first HTTPS listener (0: none), for host-meta's wss:// link.
  unsigned https_port() const { return https_port_; }
  Server& server() { return server_; }

  // HTTPS connections of a shard, so that stop() can end them (on that shard's thread).
  void track(Shard& shard, HttpsConnection* c, bool on);

 private:
  void adopt_http(Shard& shard, asio::ip::tcp::socket sock);
  void adopt_https(Shard& shard, asio::ip::tcp::socket sock);
  // `first`: a request whose header was read on another shard (its connection moved here).
  awaitable<void> connection(asio::ip::tcp::socket sock, Shard& shard, beast::flat_buffer buffer,
                             std::unique_ptr<RequestParser> first, HttpSlot slot);
  // Counts a new connection from `sock`'s address; an empty optional when it is at its cap.
  std::optional<HttpSlot> admit(const asio::ip::tcp::socket& sock, std::string_view what);
  // A GET of /xmpp-websocket: the handshake, then the connection is a client session's.
  awaitable<bool> websocket(HttpExchange& ex, Shard& shard, asio::ip::tcp::socket& sock);
  awaitable<bool> web(HttpExchange& ex);
  void stop_shard(Shard& shard);

  Server& server_;
  WebClient web_;
  std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> acceptors_;
  std::vector<std::pair<std::string, HttpHandler>> routes_;
  std::string base_url_;
  unsigned https_port_ = 0;
  // Per shard, touched on its thread only: connections being served (stop() ends them).
  struct Open {
    std::unordered_set<asio::ip::tcp::socket*> http;
    std::unordered_map<HttpsConnection*, std::weak_ptr<HttpsConnection>> https;
  };
  std::vector<Open> open_;
  std::shared_ptr<HttpConnectionCounts> counts_;
  std::atomic<bool> stopping_{false};
};

}  // namespace kabar::server
