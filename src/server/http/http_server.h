// kabard's HTTP listener (Boost.Beast): routes each request by path prefix to a handler that
// reads the body itself (so an upload streams to disk) and writes the response. Keep-alive, an
// 8 KiB header limit, and a 30 s inactivity timeout per connection.
#pragma once

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <functional>
#include <memory>
#include <string>
#include <unordered_set>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange
#include <vector>

#include "server/server.h"

namespace kabar::server {

namespace beast = boost::beast;
namespace http = boost::beast::http;

// One request whose header has been read.
struct HttpExchange {
  asio::ip::tcp::socket& sock;
  beast::flat_buffer& buffer;
  http::request_parser<http::buffer_body>& parser;
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

class HttpServer {
 public:
  explicit HttpServer(Server& server);
  ~HttpServer();

  void route(std::string prefix, HttpHandler handler);
  // Binds every configured listener; throws std::runtime_error.
  void start();
  void stop();
  // "http://HOST:PORT" of the first listener, or the configured public URL.
  const std::string& base_url() const { return base_url_; }

 private:
  awaitable<void> accept_loop(asio::ip::tcp::acceptor& acc);
  awaitable<void> connection(asio::ip::tcp::socket sock);

  Server& server_;
  std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> acceptors_;
  std::vector<std::pair<std::string, HttpHandler>> routes_;
  std::string base_url_;
  std::unordered_set<asio::ip::tcp::socket*> open_;  // connections being served (stop() ends them)
  bool stopping_ = false;
};

}  // namespace kabar::server
