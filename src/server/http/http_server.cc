#include "server/http/http_server.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <limits>
#include <sstream>

#include "net/tcp_transport.h"
#include "server/auth_throttle.h"
#include "server/http/websocket_upgrade.h"
#include "server/listener.h"

namespace kabar::server {

using asio::ip::tcp;

namespace {
constexpr auto kIdle = std::chrono::seconds(30);
constexpr std::uint32_t kHeaderLimit = 8 * 1024;

std::string_view sv(beast::string_view s) { return {s.data(), s.size()}; }

bool is_websocket_target(std::string_view target) {
  return target.substr(0, target.find('?')) == kWebSocketPath;
}

// A whole response as bytes (HTTPS writes it through its transport).
std::string response_bytes(http::status status, unsigned version, bool keep_alive, bool head,
                           const WebResponse* web, std::string_view body,
                           std::string_view content_type) {
  http::response<http::string_body> res{status, version};
  res.set(http::field::server, "kabard");
  res.set(http::field::content_type,
          std::string(web != nullptr ? std::string_view(web->content_type) : content_type));
  if (web != nullptr) {
    res.set(http::field::cache_control, web->cache_control);
    if (web->cors) res.set(http::field::access_control_allow_origin, "*");
  }
  res.keep_alive(keep_alive);
  res.body() = std::string(web != nullptr ? std::string_view(web->body) : body);
  res.prepare_payload();
  std::ostringstream out;
  if (head) {
    out << res.base();
  } else {
    out << res;
  }
  return std::move(out).str();
}

}  // namespace

// --- HTTPS: a connection over the client port's TLS transport (net::TcpTransport), parsed with
// Beast's request parser fed from the transport's reads.
class HttpsConnection final : public net::TransportHandler,
                              public std::enable_shared_from_this<HttpsConnection> {
 public:
  HttpsConnection(HttpServer& http, Shard& shard, std::unique_ptr<net::Transport> transport,
                  HttpSlot slot)
      : http_(http),
        shard_(shard),
        transport_(std::move(transport)),
        timer_(*shard.io),
        slot_(std::move(slot)) {}

  void start() {
    http_.track(shard_, this, true);
    touch();
    transport_->start(*this);
  }

  // HttpServer::stop(), on this shard.
  void stop() {
    if (transport_) transport_->close();
    finish();
  }

 private:
  bool on_bytes(std::string_view bytes) override {
    if (done_ || upgrading_) return false;
    in_.append(bytes);
    touch();
    process();
    return !done_ && !upgrading_;
  }
  bool on_read_done() override { return !done_ && !upgrading_; }
  void on_peer_closed() override {
    if (transport_) transport_->close();
    finish();
  }
  void on_transport_closed() override { finish(); }
  void on_writable() override { flush(); }
  std::shared_ptr<void> keep_alive() override { return shared_from_this(); }

  void touch() {
    timer_.expires_after(kIdle);
    timer_.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
      if (ec) return;
      if (auto self = weak.lock()) self->stop();
    });
  }

  void finish() {
    if (done_) return;
    done_ = true;
    timer_.cancel();
    slot_.release();  // ended, or a WebSocket session's from now on
    http_.track(shard_, this, false);
  }

  // Requests one at a time: the next is read once the answer to this one is written.
  void process() {
    while (!done_ && !upgrading_ && out_.empty()) {
      const std::size_t end = in_.find("\r\n\r\n");
      if (end == std::string::npos) {
        if (in_.size() > kHeaderLimit)
          answer_and_close(http::status::request_header_fields_too_large);
        return;
      }
      http::request_parser<http::empty_body> parser;
      parser.header_limit(kHeaderLimit);
      boost::system::error_code ec;
      parser.put(asio::buffer(in_.data(), end + 4), ec);
      if (ec || !parser.is_header_done()) {
        answer_and_close(http::status::bad_request);
        return;
      }
      const auto& req = parser.get();
      if (parser.content_length().value_or(0) > 0 || parser.chunked()) {
        // Nothing here takes a body (upload is on the HTTP listener).
        answer_and_close(http::status::payload_too_large);
        return;
      }
      in_.erase(0, end + 4);
      const std::string target(req.target());
      if (is_websocket_target(target)) {
        const WebSocketUpgrade u = check_websocket_upgrade(req, http_.server().config());
        if (!u.ok) {
          spdlog::debug("wss {}: refused: {}", transport_->peer_address(), u.reason);
          out_ = http_refusal(u);
          close_after_ = true;
        } else if (!in_.empty()) {
          // RFC 6455 §4.1: the client waits for the handshake's answer before sending data.
          answer_and_close(http::status::bad_request);
          return;
        } else {
          out_ = websocket_switching_protocols(u.accept);
          upgrade_after_ = true;
        }
        flush();
        return;
      }
      const bool head = req.method() == http::verb::head;
      if (req.method() != http::verb::get && !head) {
        answer(http::status::method_not_allowed, req.version(), false, head);
        return;
      }
      const auto web =
          http_.web().get(target, sv(req[http::field::host]), true, http_.https_port());
      const bool keep = req.keep_alive();
      if (web) {
        out_ = response_bytes(web->status, req.version(), keep, head, &*web, {}, {});
      } else {
        out_ = response_bytes(http::status::not_found, req.version(), keep, head, nullptr,
                              "not found\n", "text/plain; charset=utf-8");
      }
      close_after_ = !keep;
      flush();
    }
  }

  void answer(http::status status, unsigned version, bool keep, bool head) {
    out_ = response_bytes(status, version, keep, head, nullptr,
                          std::string(http::obsolete_reason(status)) + "\n",
                          "text/plain; charset=utf-8");
    close_after_ = !keep;
    flush();
  }
  void answer_and_close(http::status status) { answer(status, 11, false, false); }

  void flush() {
    while (!done_ && off_ < out_.size()) {
      const std::string_view rest = std::string_view(out_).substr(off_);
      const auto r = transport_->write(std::span<const std::string_view>(&rest, 1));
      off_ += r.taken;
      if (r.status == net::Transport::WriteStatus::kFailed) {
        transport_->close();
        finish();
        return;
      }
      if (r.status == net::Transport::WriteStatus::kBlocked) return;  // on_writable() goes on
      if (r.taken == 0) return;
    }
    if (done_) return;
    std::string().swap(out_);
    off_ = 0;
    if (close_after_) {
      transport_->close();
      finish();
    } else if (upgrade_after_) {
      // The session takes the connection once this read event is over (the transport must not
      // be handed on from inside its own read).
      upgrading_ = true;
      asio::post(*shard_.io, [self = shared_from_this()] { self->upgrade(); });
    } else {
      process();  // a request that came while this one was answered
    }
  }

  void upgrade() {
    finish();
    http_.server().adopt_websocket(shard_, std::move(transport_), true);
  }

  HttpServer& http_;
  Shard& shard_;
  std::unique_ptr<net::Transport> transport_;
  asio::steady_timer timer_;
  HttpSlot slot_;
  std::string in_;
  std::string out_;
  std::size_t off_ = 0;
  bool close_after_ = false;
  bool upgrade_after_ = false;
  bool upgrading_ = false;
  bool done_ = false;
};

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

HttpServer::HttpServer(Server& server)
    : server_(server),
      web_(server.config()),
      open_(server.shard_count()),
      counts_(std::make_shared<HttpConnectionCounts>(
          static_cast<std::size_t>(server.config().http_per_address))) {}

bool HttpConnectionCounts::take(const std::string& key) {
  std::lock_guard lock(mu_);
  std::size_t& n = open_[key];
  if (n >= per_address_) {
    if (n == 0) open_.erase(key);
    return false;
  }
  ++n;
  return true;
}

void HttpConnectionCounts::give(const std::string& key) {
  std::lock_guard lock(mu_);
  auto it = open_.find(key);
  if (it == open_.end()) return;
  if (--it->second == 0) open_.erase(it);
}

std::size_t HttpConnectionCounts::count(const std::string& key) const {
  std::lock_guard lock(mu_);
  auto it = open_.find(key);
  return it == open_.end() ? 0 : it->second;
}

std::optional<HttpSlot> HttpServer::admit(const tcp::socket& sock, std::string_view what) {
  boost::system::error_code ec;
  const auto remote = sock.remote_endpoint(ec);
  if (ec) return std::nullopt;  // gone already
  std::string key = address_key(remote.address().to_string());
  if (!counts_->take(key)) {
    spdlog::debug("{} {}: over {} open connections from that address: closed", what, key,
                  server_.config().http_per_address);
    return std::nullopt;
  }
  return HttpSlot(counts_, std::move(key));
}

HttpServer::~HttpServer() = default;

void HttpServer::route(std::string prefix, HttpHandler handler) {
  routes_.emplace_back(std::move(prefix), std::move(handler));
}

void HttpServer::track(Shard& shard, HttpsConnection* c, bool on) {
  auto& set = open_[shard.index].https;
  if (on) {
    set[c] = c->weak_from_this();
  } else {
    set.erase(c);
  }
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
    spdlog::info("HTTP on {}:{} (public URL {}): WebSocket at {}, web client at /",
                 bound.address().to_string(), bound.port(), base_url_, kWebSocketPath);
    asio::co_spawn(server_.io(),
                   net::accept_loop(*acc, stopping_, server_.shard_ring(),
                                    [this](net::Shard& sh, tcp::socket sock) {
                                      adopt_http(static_cast<Shard&>(sh), std::move(sock));
                                    }),
                   asio::detached);
    acceptors_.push_back(std::move(acc));
  }
  for (const auto& ep : cfg.https) {
    auto acc = open_listener(server_.io(), ep, "https");
    auto bound = acc->local_endpoint();
    if (https_port_ == 0) https_port_ = bound.port();
    spdlog::info("HTTPS on {}:{}: WebSocket (wss://) at {}, web client at /",
                 bound.address().to_string(), bound.port(), kWebSocketPath);
    asio::co_spawn(server_.io(),
                   net::accept_loop(*acc, stopping_, server_.shard_ring(),
                                    [this](net::Shard& sh, tcp::socket sock) {
                                      adopt_https(static_cast<Shard&>(sh), std::move(sock));
                                    }),
                   asio::detached);
    acceptors_.push_back(std::move(acc));
  }
}

void HttpServer::adopt_http(Shard& shard, tcp::socket sock) {
  if (stopping_) return;
  std::optional<HttpSlot> slot = admit(sock, "http");
  if (!slot) return;  // the socket closes as it goes
  asio::co_spawn(
      *shard.io,
      connection(std::move(sock), shard, beast::flat_buffer(), nullptr, std::move(*slot)),
      asio::detached);
}

void HttpServer::adopt_https(Shard& shard, tcp::socket sock) {
  if (stopping_) return;
  std::optional<HttpSlot> slot = admit(sock, "https");
  if (!slot) return;
  auto transport = std::make_unique<net::TcpTransport>(shard, std::move(sock),
                                                       server_.tls().native_handle(), true);
  std::make_shared<HttpsConnection>(*this, shard, std::move(transport), std::move(*slot))->start();
}

void HttpServer::stop() {
  stopping_ = true;
  for (auto& acc : acceptors_) {
    boost::system::error_code ec;
    acc->close(ec);
  }
  // Idle keep-alive connections would otherwise hold the loops until their timeout.
  for (std::size_t i = 0; i < server_.shard_count(); ++i) {
    Shard& sh = server_.shard(i);
    asio::post(*sh.io, [this, &sh] { stop_shard(sh); });
  }
}

void HttpServer::stop_shard(Shard& shard) {
  Open& open = open_[shard.index];
  for (tcp::socket* s : open.http) {
    boost::system::error_code ec;
    s->shutdown(tcp::socket::shutdown_both, ec);
    s->close(ec);
  }
  std::vector<std::shared_ptr<HttpsConnection>> live;
  for (auto& [raw, weak] : open.https) {
    if (auto c = weak.lock()) live.push_back(std::move(c));
  }
  for (auto& c : live) c->stop();
}

awaitable<bool> HttpServer::websocket(HttpExchange& ex, Shard& shard, tcp::socket& sock) {
  const WebSocketUpgrade u = check_websocket_upgrade(ex.header().base(), server_.config());
  boost::system::error_code ec;
  if (!u.ok) {
    spdlog::debug("ws: refused: {}", u.reason);
    co_await ex.discard_body();
    const std::string out = http_refusal(u);
    co_await asio::async_write(sock, asio::buffer(out),
                               asio::redirect_error(asio::use_awaitable, ec));
    co_return false;
  }
  if (!ex.parser.is_done() || ex.buffer.size() > 0) {
    // A body, or bytes before our answer (RFC 6455 §4.1: the client waits for it).
    co_await ex.respond(http::status::bad_request, "no data before the handshake's answer\n");
    co_return false;
  }
  const std::string out = websocket_switching_protocols(u.accept);
  co_await asio::async_write(sock, asio::buffer(out),
                             asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return false;
  auto transport = std::make_unique<net::TcpTransport>(shard, std::move(sock),
                                                       server_.tls().native_handle(), false);
  server_.adopt_websocket(shard, std::move(transport), false);
  co_return false;
}

awaitable<bool> HttpServer::web(HttpExchange& ex) {
  const auto& req = ex.header();
  const bool head = req.method() == http::verb::head;
  if (req.method() != http::verb::get && !head) {
    co_await ex.discard_body();
    co_return co_await ex.respond(http::status::method_not_allowed, "GET or HEAD\n");
  }
  auto web = web_.get(sv(req.target()), sv(req[http::field::host]), false, https_port_);
  if (!web) co_return co_await ex.respond(http::status::not_found, "not found\n");
  const std::string out = response_bytes(
      web->status, req.version(), req.keep_alive() && ex.parser.is_done(), head, &*web, {}, {});
  boost::system::error_code ec;
  co_await asio::async_write(ex.sock, asio::buffer(out),
                             asio::redirect_error(asio::use_awaitable, ec));
  co_return !ec && req.keep_alive() && ex.parser.is_done();
}

awaitable<void> HttpServer::connection(tcp::socket sock, Shard& shard, beast::flat_buffer buffer,
                                       std::unique_ptr<RequestParser> first, HttpSlot slot) {
  auto timer = std::make_shared<asio::steady_timer>(*shard.io);
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
  auto& open = open_[shard.index].http;
  open.insert(&sock);
  bool moved = false;
  for (bool keep = true; keep && !stopping_;) {
    touch();
    std::unique_ptr<RequestParser> parser = std::move(first);
    if (!parser) {
      parser = std::make_unique<RequestParser>();
      parser->header_limit(kHeaderLimit);
      // Handlers decide how much they take (Beast 1.74 has no "none" here).
      parser->body_limit(std::numeric_limits<std::uint64_t>::max());
      boost::system::error_code ec;
      co_await http::async_read_header(sock, buffer, *parser,
                                       asio::redirect_error(asio::use_awaitable, ec));
      // With a buffer_body, body bytes that came with the header end the read with need_buffer.
      if (ec == http::error::need_buffer && parser->is_header_done()) ec = {};
      if (ec) break;  // closed, timed out or not HTTP
    }
    HttpExchange ex{sock, buffer, *parser, touch};
    const std::string target(parser->get().target());
    if (is_websocket_target(target)) {
      keep = co_await websocket(ex, shard, sock);
      moved = !sock.is_open();
      if (moved) slot.release();  // a WebSocket session's now
      continue;
    }
    const HttpHandler* handler = nullptr;
    for (const auto& [prefix, h] : routes_) {
      if (target.compare(0, prefix.size(), prefix) == 0) {
        handler = &h;
        break;
      }
    }
    if (handler == nullptr) {
      keep = co_await web(ex);
      if (!parser->is_done()) keep = false;  // an unread body: no second request on it
      continue;
    }
    if (shard.index != 0) {
      // A module's route: its state is shard 0's. The connection moves there, with what it has
      // read, and goes on there.
      boost::system::error_code ec;
      const auto protocol = sock.local_endpoint(ec).protocol();
      if (ec) break;
      const int fd = sock.release(ec);
      if (ec) break;
      Shard& zero = server_.shard(0);
      asio::post(*zero.io, [this, fd, protocol, &zero, buffer = std::move(buffer),
                            parser = std::move(parser), slot = std::move(slot)]() mutable {
        tcp::socket s(*zero.io);
        boost::system::error_code aec;
        s.assign(protocol, fd, aec);
        if (aec) {
          ::close(fd);
          return;
        }
        asio::co_spawn(
            *zero.io,
            connection(std::move(s), zero, std::move(buffer), std::move(parser), std::move(slot)),
            asio::detached);
      });
      moved = true;
      break;
    }
    try {
      keep = co_await (*handler)(ex);
    } catch (const std::exception& e) {
      spdlog::warn("http {}: {}", target, e.what());
      keep = false;
    }
  }
  *alive = false;
  open.erase(&sock);
  timer->cancel();
  if (!moved) {
    boost::system::error_code ec;
    sock.shutdown(tcp::socket::shutdown_both, ec);
    sock.close(ec);
  }
}

}  // namespace kabar::server
