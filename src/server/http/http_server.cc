#include "server/http/http_server.h"

#include <spdlog/spdlog.h>

#include <array>
#include <chrono>
#include <limits>

#include "server/listener.h"

namespace kabar::server {

using asio::ip::tcp;

namespace {
constexpr auto kIdle = std::chrono::seconds(30);
constexpr std::uint32_t kHeaderLimit = 8 * 1024;
}  // namespace

awaitable<bool> HttpExchange::respond(http::status status, std::string body,
                                      std::string_view content_type) {
  http::response<http::string_body> res{status, header().version()};
  res.set(http::field::server, "kabard");
  res.set(http::field::content_type, std::string(content_type));
  res.keep_alive(header().keep_alive() && parser.is_done());
  res.body() = std::move(body);
  res.prepare_payload();
  boost::system::error_code ec;
  co_await http::async_write(sock, res, asio::redirect_error(asio::use_awaitable, ec));
  co_return !ec && res.keep_alive();
}

awaitable<bool> HttpExchange::discard_body(std::uint64_t limit) {
  const auto length = parser.content_length();
  if (parser.is_done()) co_return true;
  if (!length || *length > limit) co_return false;
  std::array<char, 8192> buf;
  auto& body = parser.get().body();
  while (!parser.is_done()) {
    body.data = buf.data();
    body.size = buf.size();
    boost::system::error_code ec;
    co_await http::async_read(sock, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == http::error::need_buffer) ec = {};
    if (ec) co_return false;
  }
  co_return true;
}

HttpServer::HttpServer(Server& server) : server_(server) {}

HttpServer::~HttpServer() = default;

void HttpServer::route(std::string prefix, HttpHandler handler) {
  routes_.emplace_back(std::move(prefix), std::move(handler));
}

void HttpServer::start() {
  const Config& cfg = server_.config();
  for (const auto& ep : cfg.http) {
    auto acc = open_listener(server_.io(), ep, "http");
    auto bound = acc->local_endpoint();
    if (base_url_.empty()) {
      if (!cfg.http_base_url.empty()) {
        base_url_ = cfg.http_base_url;
        while (!base_url_.empty() && base_url_.back() == '/') base_url_.pop_back();
      } else {
        const std::string host = bound.address().is_v6() ? "[" + bound.address().to_string() + "]"
                                                         : bound.address().to_string();
        base_url_ = "http://" + host + ":" + std::to_string(bound.port());
      }
    }
    spdlog::info("HTTP on {}:{} (public URL {})", bound.address().to_string(), bound.port(),
                 base_url_);
    asio::co_spawn(server_.io(), accept_loop(*acc), asio::detached);
    acceptors_.push_back(std::move(acc));
  }
}

void HttpServer::stop() {
  stopping_ = true;
  for (auto& acc : acceptors_) {
    boost::system::error_code ec;
    acc->close(ec);
  }
  // Idle keep-alive connections would otherwise hold the loop until their timeout.
  for (tcp::socket* s : open_) {
    boost::system::error_code ec;
    s->shutdown(tcp::socket::shutdown_both, ec);
    s->close(ec);
  }
}

awaitable<void> HttpServer::accept_loop(tcp::acceptor& acc) {
  while (!stopping_) {
    boost::system::error_code ec;
    tcp::socket sock = co_await acc.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_ || ec == asio::error::operation_aborted) co_return;
    if (ec) {
      spdlog::warn("http accept: {}", ec.message());
      asio::steady_timer t(server_.io(), std::chrono::milliseconds(100));
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    asio::co_spawn(server_.io(), connection(std::move(sock)), asio::detached);
  }
}

awaitable<void> HttpServer::connection(tcp::socket sock) {
  auto timer = std::make_shared<asio::steady_timer>(server_.io());
  auto alive = std::make_shared<bool>(true);  // the socket lives in this frame
  auto* raw = &sock;
  auto touch = [timer, raw, alive] {
    timer->expires_after(kIdle);
    timer->async_wait([raw, alive](const boost::system::error_code& ec) {
      if (ec || !*alive) return;  // re-armed, cancelled, or the connection is gone
      boost::system::error_code ignored;
      raw->shutdown(tcp::socket::shutdown_both, ignored);
      raw->close(ignored);
    });
  };
  open_.insert(&sock);
  beast::flat_buffer buffer;
  for (bool keep = true; keep && !stopping_;) {
    touch();
    http::request_parser<http::buffer_body> parser;
    parser.header_limit(kHeaderLimit);
    // Handlers decide how much they take (Beast 1.74 has no "none" here).
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    boost::system::error_code ec;
    co_await http::async_read_header(sock, buffer, parser,
                                     asio::redirect_error(asio::use_awaitable, ec));
    // With a buffer_body, body bytes that came with the header end the read with need_buffer.
    if (ec == http::error::need_buffer && parser.is_header_done()) ec = {};
    if (ec) break;  // closed, timed out or not HTTP
    HttpExchange ex{sock, buffer, parser, touch};
    const std::string target(parser.get().target());
    const HttpHandler* handler = nullptr;
    for (const auto& [prefix, h] : routes_) {
      if (target.compare(0, prefix.size(), prefix) == 0) {
        handler = &h;
        break;
      }
    }
    if (handler == nullptr) {
      keep = co_await ex.respond(http::status::not_found, "not found\n");
      if (!parser.is_done()) keep = false;  // an unread body: no second request on it
      continue;
    }
    try {
      keep = co_await (*handler)(ex);
    } catch (const std::exception& e) {
      spdlog::warn("http {}: {}", target, e.what());
      keep = false;
    }
  }
  *alive = false;
  open_.erase(&sock);
  timer->cancel();
  boost::system::error_code ec;
  sock.shutdown(tcp::socket::shutdown_both, ec);
  sock.close(ec);
}

}  // namespace kabar::server
