#include "server/server.h"

#include <malloc.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include "server/c2s_session.h"
#include "server/features.h"
#include "server/http/http_server.h"
#include "server/listener.h"
#include "server/proxy65/proxy65.h"
#include "server/tls/certificate.h"
#include "server/upload/upload.h"
#include "tls/handover.h"
#include "xml/serializer.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

namespace kabar::server {

namespace ns = xmpp::ns;
using asio::ip::tcp;

Server::Server(asio::io_context& io, Config cfg)
    : io_(io),
      cfg_(std::move(cfg)),
      tls_(asio::ssl::context::tls_server),
      throttle_(cfg_.auth_failures_per_account, cfg_.auth_failures_per_address) {
  register_roster(*this);
  register_disco(*this);
  register_basics(*this);
  register_vcard(*this);
  register_extdisco(*this);
  register_register(*this);
}

Server::~Server() { store_pool_.join(); }

std::int64_t Server::now_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void Server::setup_tls() {
  std::filesystem::path cert = cfg_.tls_cert;
  std::filesystem::path key = cfg_.tls_key;
  if (cert.empty()) {
    cert = cfg_.data_dir / "cert.pem";
    key = cfg_.data_dir / "key.pem";
    if (!std::filesystem::exists(cert) || !std::filesystem::exists(key)) {
      generate_self_signed(cfg_.domain, cert, key);
      spdlog::warn("no TLS certificate configured: generated a self-signed one for {} in {}",
                   cfg_.domain, cert.string());
    }
  } else if (key.empty()) {
    key = cert;
  }
  SSL_CTX* ctx = tls_.native_handle();
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  // Idle connections give their TLS buffers back (memory per idle connection).
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  // TLS 1.3 connections move to our own record layer after the handshake (tls/handover.h); this
  // also turns TLS 1.3 session tickets off.
  tls::enable_handover(ctx);
  tls_.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                   asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
  boost::system::error_code ec;
  tls_.use_certificate_chain_file(cert.string(), ec);
  if (ec)
    throw std::runtime_error("cannot load TLS certificate " + cert.string() + ": " + ec.message());
  tls_.use_private_key_file(key.string(), asio::ssl::context::pem, ec);
  if (ec) throw std::runtime_error("cannot load TLS key " + key.string() + ": " + ec.message());
  spdlog::info("TLS certificate {}", cert.string());
}

void Server::start() {
  started_ms_ = now_ms();
  std::error_code fec;
  std::filesystem::create_directories(cfg_.data_dir, fec);
  if (fec) {
    throw std::runtime_error("cannot create data directory " + cfg_.data_dir.string() + ": " +
                             fec.message());
  }
  ::chmod(cfg_.data_dir.c_str(), 0700);
  try {
    store_ = store::open_sqlite_store(cfg_.data_dir);
  } catch (const store::StoreError& e) {
    throw std::runtime_error(std::string("cannot open the store: ") + e.what());
  }
  spdlog::info("store: SQLite in {} (schema version {})", cfg_.data_dir.string(),
               store_->schema_version());
  setup_tls();
  if (cfg_.c2s.empty() && cfg_.c2s_tls.empty()) {
    throw std::runtime_error("no listener configured (use --c2s HOST:PORT)");
  }
  for (const auto& ep : cfg_.c2s) listen(ep, false);
  for (const auto& ep : cfg_.c2s_tls) listen(ep, true);
  if (!cfg_.proxy65.empty()) {
    proxy65_ = std::make_unique<Proxy65>(*this);
    proxy65_->start();
  }
  if (!cfg_.http.empty()) {
    http_ = std::make_unique<HttpServer>(*this);
    http_->start();
    upload_ = std::make_unique<Upload>(*this, *http_);
  }
  asio::co_spawn(io_, sweep_loop(), asio::detached);
  spdlog::info("serving {}{}{}", cfg_.domain,
               cfg_.allow_registration ? ", in-band registration on" : "",
               cfg_.allow_plaintext ? ", authentication without TLS allowed (testing only)" : "");
}

void Server::listen(const Endpoint& ep, bool direct_tls) {
  auto acc = open_listener(io_, ep, "client");
  auto bound = acc->local_endpoint();
  spdlog::info("listening for clients ({}) on {}:{}", direct_tls ? "direct TLS" : "STARTTLS",
               bound.address().to_string(), bound.port());
  asio::co_spawn(io_, accept_loop(*acc, direct_tls), asio::detached);
  acceptors_.push_back(std::move(acc));
}

awaitable<void> Server::accept_loop(tcp::acceptor& acc, bool direct_tls) {
  while (!stopping_) {
    boost::system::error_code ec;
    tcp::socket sock = co_await acc.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_) co_return;
    if (ec) {
      if (ec == asio::error::operation_aborted) co_return;
      // Out of descriptors and the like: log, back off briefly, keep serving.
      spdlog::warn("accept: {}", ec.message());
      asio::steady_timer t(io_, std::chrono::milliseconds(100));
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    sock.set_option(tcp::no_delay(true), ec);
    sock.non_blocking(true, ec);
    auto session = std::make_shared<C2sSession>(*this, std::move(sock), direct_tls);
    add_session(session);
    session->start();
  }
}

awaitable<void> Server::sweep_loop() {
  sweep_timer_ = std::make_unique<asio::steady_timer>(io_);
  while (!stopping_) {
    sweep_timer_->expires_after(std::chrono::seconds(1));
    boost::system::error_code ec;
    co_await sweep_timer_->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_) co_return;
    std::int64_t now = now_ms();
    std::vector<SessionPtr> live;
    live.reserve(all_sessions_.size());
    for (auto& [raw, weak] : all_sessions_) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
    std::size_t hibernated = 0;
    for (auto& s : live) {
      if (s->closed()) {
        if (s->closed_at_ms != 0 && now - s->closed_at_ms > 5000) s->abort();
        continue;
      }
      if (now - s->last_read_ms >= kHibernateAfterMs && s->hibernate()) ++hibernated;
      if (!s->bound()) {
        if (now - s->created_ms > std::int64_t{cfg_.auth_timeout_s} * 1000) {
          s->stream_error("connection-timeout", "no authentication in time");
        }
        continue;
      }
      if (s->ping_sent_ms != 0 && s->last_read_ms >= s->ping_sent_ms) s->ping_sent_ms = 0;
      if (s->ping_sent_ms != 0) {
        if (now - s->ping_sent_ms > std::int64_t{cfg_.ping_timeout_s} * 1000) {
          s->stream_error("connection-timeout", "no answer to ping");
        }
      } else if (now - s->last_read_ms > std::int64_t{cfg_.idle_timeout_s} * 1000) {
        // XEP-0199 §4.2: server-to-client ping to find dead connections.
        xml::Element ping("iq", ns::kClient);
        ping.set_attr("from", cfg_.domain);
        ping.set_attr("to", s->jid().str());
        ping.set_attr("type", "get");
        ping.set_attr("id", "kabar-ping-" + std::to_string(now));
        ping.add_child("ping", ns::kPing);
        send_to(s, ping);
        s->ping_sent_ms = now;
      }
    }
    if (upload_ && now - last_upload_sweep_ms_ > 60'000) {
      upload_->sweep(now);
      last_upload_sweep_ms_ = now;
    }
    // What idle connections gave back goes back to the system too, not just to malloc's free
    // lists: a burst of logins that then sit idle would otherwise keep their peak RSS.
    if (hibernated >= 16 || (hibernated > 0 && now - last_trim_ms_ > 10'000)) {
      malloc_trim(0);
      last_trim_ms_ = now;
    }
  }
}

void Server::stop() {
  if (stopping_) return;
  stopping_ = true;
  spdlog::info("stopping: closing {} connections", all_sessions_.size());
  for (auto& acc : acceptors_) {
    boost::system::error_code ec;
    acc->close(ec);
  }
  if (sweep_timer_) sweep_timer_->cancel();
  if (proxy65_) proxy65_->stop();
  if (http_) http_->stop();
  std::vector<SessionPtr> live;
  for (auto& [raw, weak] : all_sessions_) {
    if (auto s = weak.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live) s->stream_error("system-shutdown");
  // Peers that do not read are cut off after a grace period.
  auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::seconds(2));
  timer->async_wait([this, timer](const boost::system::error_code&) {
    for (auto& [raw, weak] : all_sessions_) {
      if (auto s = weak.lock()) s->abort();
    }
  });
}

void Server::add_session(const SessionPtr& s) { all_sessions_[s.get()] = s; }

void Server::remove_session(C2sSession* s) { all_sessions_.erase(s); }

SessionPtr Server::bound_session(const xmpp::Jid& full) const {
  auto it = bound_.find(full.bare_str());
  if (it == bound_.end()) return nullptr;
  for (const auto& s : it->second) {
    if (s->jid() == full) return s;
  }
  return nullptr;
}

void Server::bind(const SessionPtr& s) { bound_[s->jid().bare_str()].push_back(s); }

void Server::unbind(C2sSession* s) {
  auto it = bound_.find(s->jid().bare_str());
  if (it == bound_.end()) return;
  auto& v = it->second;
  std::erase_if(v, [s](const SessionPtr& p) { return p.get() == s; });
  if (v.empty()) bound_.erase(it);
}

std::vector<SessionPtr> Server::sessions_of(const std::string& bare) const {
  auto it = bound_.find(bare);
  if (it == bound_.end()) return {};
  return it->second;
}

void Server::send_to(const SessionPtr& s, const xml::Element& stanza) { s->send(stanza); }

void Server::bounce(const xml::Element& stanza, std::string_view condition) {
  // RFC 6120 §8.3.1: never answer an error with an error.
  if (stanza.attr("type") == "error") return;
  auto sender = xmpp::Jid::parse(stanza.attr("from"));
  if (!sender) return;
  if (auto s = bound_session(*sender)) {
    send_to(s, xmpp::make_error_reply(stanza, xmpp::ErrorType::kCancel, condition));
  }
}

awaitable<void> Server::session_closed(SessionPtr s) {
  if (all_sessions_.erase(s.get()) == 0) co_return;  // already done
  if (!s->bound()) co_return;
  bool was_available = s->available;
  unbind(s.get());
  if (was_available) {
    xml::Element unavailable("presence", ns::kClient);
    unavailable.set_attr("type", "unavailable");
    unavailable.set_attr("from", s->jid().str());
    try {
      co_await broadcast_unavailable(*this, s, std::move(unavailable));
    } catch (const std::exception& e) {
      spdlog::error("unavailable broadcast for {}: {}", s->jid().str(), e.what());
    }
  }
  if (sessions_of(s->jid().bare_str()).empty()) {
    std::string user = s->username();
    store::LastActivity last{now_ms() / 1000, {}};
    try {
      auto op = [user, last](store::Store& st) { st.set_last_activity(user, last); };
      co_await db(std::move(op));
    } catch (const std::exception& e) {
      spdlog::error("last activity for {}: {}", user, e.what());
    }
  }
  spdlog::info("c2s #{}: {} offline", s->serial(), s->jid().str());
}

awaitable<void> Server::handle_stanza(SessionPtr from, xml::Element stanza) {
  std::string_view to = stanza.attr("to");
  if (!to.empty() && !xmpp::Jid::parse(to)) {
    if (stanza.attr("type") != "error") {
      send_to(from, xmpp::make_error_reply(stanza, xmpp::ErrorType::kModify, "jid-malformed"));
    }
    co_return;
  }
  try {
    if (stanza.name() == "message") {
      if (to.empty()) stanza.set_attr("to", from->jid().bare_str());
      co_await route_message(std::move(stanza));
    } else if (stanza.name() == "presence") {
      co_await handle_presence(*this, from, std::move(stanza));
    } else {
      co_await route_iq(from, std::move(stanza));
    }
  } catch (const store::StoreError& e) {
    spdlog::error("store: {}", e.what());
  }
}

awaitable<void> Server::route_message(xml::Element stanza) {
  auto to = xmpp::Jid::parse(stanza.attr("to"));
  std::string_view type = stanza.attr("type");
  auto bounce = [&](std::string_view condition) { this->bounce(stanza, condition); };
  if (!is_local(*to)) {
    // No server-to-server links yet (RFC 6120 §10.4.3).
    bounce("remote-server-not-found");
    co_return;
  }
  if (to->local().empty()) {
    if (type != "error" && type != "headline") bounce("service-unavailable");
    co_return;
  }
  if (!to->is_bare()) {
    if (auto s = bound_session(*to)) {
      send_to(s, stanza);
      co_return;
    }
  }
  co_await deliver(std::move(stanza));
}

awaitable<void> Server::deliver(xml::Element stanza) {
  if (stanza.name() == "presence") {
    co_await deliver_presence(*this, std::move(stanza));
    co_return;
  }
  auto to = xmpp::Jid::parse(stanza.attr("to"));
  if (!to) co_return;
  std::string type(stanza.attr("type"));
  if (type.empty()) type = "normal";
  auto bounce = [&](std::string_view condition) { this->bounce(stanza, condition); };
  if (stanza.name() != "message") co_return;
  const bool to_full = !to->is_bare();
  // RFC 6121 §8.5.3.2.1: to an unbound full JID, only normal and chat fall back to the bare JID.
  if (to_full && type != "normal" && type != "chat") {
    if (type == "groupchat") bounce("service-unavailable");
    co_return;
  }
  if (type == "groupchat") {
    bounce("service-unavailable");
    co_return;
  }
  std::vector<SessionPtr> targets = message_targets(*to, type);
  if (!targets.empty()) {
    std::string bytes = xml::serialize(stanza, ns::kClient);
    for (auto& s : targets) s->send_raw(bytes);
    co_return;
  }
  if (type == "error" || type == "headline") co_return;
  // No available resource: offline storage (XEP-0160) if the account exists.
  std::string user = to->local();
  bool stored = co_await store_offline(*this, user, stanza);
  if (!stored) bounce("service-unavailable");
}

std::vector<SessionPtr> Server::message_targets(const xmpp::Jid& to, std::string_view type) {
  // RFC 6121 §8.5.2.1.1: to the available resources with the highest non-negative priority
  // (headline: to all with non-negative priority; an error: to one).
  std::vector<SessionPtr> targets;
  int best = -1;
  const auto it = bound_.find(to.bare_str());
  if (it == bound_.end()) return targets;
  for (const auto& s : it->second) {
    if (!s->available || s->priority < 0 || s->closed()) continue;
    if (type == "headline") {
      targets.push_back(s);
    } else if (s->priority > best) {
      best = s->priority;
      targets.clear();
      targets.push_back(s);
    } else if (s->priority == best) {
      targets.push_back(s);
    }
  }
  if (type == "error" && targets.size() > 1) targets.resize(1);
  return targets;
}

bool Server::route_message_now(const C2sSession& from, xml::Element& stanza) {
  // The common case needs neither the store nor a coroutine: a chat to a contact who is online
  // (RFC 6121 §8.5.2.1.1, §8.5.3.1). Anything else takes handle_stanza().
  std::string_view to_attr = stanza.attr("to");
  if (to_attr.empty()) return false;
  auto to = xmpp::Jid::parse(to_attr);
  if (!to || !is_local(*to) || to->local().empty()) return false;
  std::string_view type = stanza.attr("type");
  if (type == "groupchat") return false;
  std::vector<SessionPtr> targets;
  if (!to->is_bare()) {
    if (auto s = bound_session(*to)) targets.push_back(std::move(s));
  }
  if (targets.empty()) {
    if (!to->is_bare() && !type.empty() && type != "normal" && type != "chat") return false;
    targets = message_targets(*to, type.empty() ? std::string_view("normal") : type);
  }
  if (targets.empty()) return false;
  stanza.set_attr("from", from.jid().str());
  std::string bytes = xml::serialize(stanza, ns::kClient);
  for (auto& s : targets) s->send_raw(bytes);
  return true;
}

awaitable<void> Server::route_iq(SessionPtr from, xml::Element iq) {
  std::string_view type = iq.attr("type");
  auto to = iq.has_attr("to") ? xmpp::Jid::parse(iq.attr("to")) : std::optional<xmpp::Jid>();
  const bool is_request = type == "get" || type == "set";
  if (!is_request && type != "result" && type != "error") {
    send_to(from, xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request"));
    co_return;
  }
  if (to && upload_ && to->is_domain() && to->domain() == upload_->jid()) {
    co_await upload_->handle_iq(from, std::move(iq));
    co_return;
  }
  if (to && proxy65_ && to->is_domain() && to->domain() == proxy65_->jid()) {
    co_await proxy65_->handle_iq(from, std::move(iq));
    co_return;
  }
  if (to && !is_local(*to)) {
    if (is_request) {
      send_to(from,
              xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "remote-server-not-found"));
    }
    co_return;
  }
  if (to && !to->is_bare()) {
    // To a full JID: the resource answers (RFC 6120 §10.5.4).
    if (auto s = bound_session(*to)) {
      send_to(s, iq);
    } else if (is_request) {
      send_to(from, xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
    }
    co_return;
  }
  if (!is_request) {
    // Responses to the server (our pings): the read already proved the connection alive.
    co_return;
  }
  // RFC 6120 §8.2.3: a get or set has exactly one payload child.
  auto payloads = iq.children();
  if (payloads.size() != 1 || iq.attr("id").empty()) {
    send_to(from, xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request"));
    co_return;
  }
  auto it = iq_handlers_.find(payloads[0]->xmlns());
  if (it == iq_handlers_.end()) {
    send_to(from, xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
    co_return;
  }
  co_await it->second(from, std::move(iq));
}

}  // namespace kabar::server
