#include <openssl/ssl.h>

#include <deque>
#include <optional>

#include "client/client_impl.h"
#include "xmpp/stream/negotiator.h"

namespace kabar::client {

awaitable<std::optional<Error>> Client::Impl::open_transport() {
  auto j = xmpp::Jid::parse(opt.jid);
  if (!j || j->local().empty())
    co_return err(Errc::kBadInput, "'" + opt.jid + "' is not a valid JID (user@domain)");
  jid = *j;
  // A fresh resource per process by default, so a one-shot command never replaces (RFC 6120
  // §7.7.2.2 conflict) a listener or chat of the same account.
  if (opt.resource.empty())
    opt.resource =
        jid.resource().empty() ? "kabar." + to_hex(xmpp::random_bytes(3)) : jid.resource();
  std::vector<std::pair<std::string, std::uint16_t>> targets;
  if (!opt.host.empty()) {
    targets.emplace_back(opt.host, opt.port ? opt.port : 5222);
  } else {
    targets = resolve_srv(jid.domain());
    if (opt.port) {
      for (auto& t : targets) t.second = opt.port;
    }
    targets.emplace_back(jid.domain(), opt.port ? opt.port : 5222);
  }
  make_ssl_context();
  std::string last_error;
  for (auto& [host, port] : targets) {
    stream = std::make_unique<asio::ssl::stream<tcp::socket>>(io, *ssl_ctx);
    tls = false;
    tcp::resolver resolver(io);
    boost::system::error_code ec;
    auto results = co_await resolver.async_resolve(host, std::to_string(port),
                                                   asio::redirect_error(use_awaitable, ec));
    if (ec) {
      last_error = "cannot resolve " + host + ": " + ec.message();
      continue;
    }
    asio::steady_timer watchdog(io, opt.timeout);
    watchdog.async_wait([this](boost::system::error_code e) {
      boost::system::error_code ig;
      if (!e) stream->next_layer().close(ig);
    });
    co_await asio::async_connect(stream->next_layer(), results,
                                 asio::redirect_error(use_awaitable, ec));
    watchdog.cancel();
    if (ec) {
      last_error = "cannot reach the server at " + host + ":" + std::to_string(port) + ": " +
                   (ec == asio::error::operation_aborted ? "timed out" : ec.message());
      continue;
    }
    // RFC 7590: direct TLS on 5223 (or when asked); STARTTLS otherwise, in negotiate().
    bool direct = opt.tls == TlsMode::kDirect || (opt.tls == TlsMode::kAuto && port == 5223);
    if (direct) {
      if (auto e = co_await tls_handshake()) co_return e;
    }
    co_return std::nullopt;
  }
  co_return err(Errc::kUnreachable, last_error);
}

namespace {

// RFC 5929 §3.1 tls-unique: the first Finished message of the handshake (ours for a full
// handshake, the server's for a resumed one). Defined for TLS 1.2 only (RFC 9266), so a TLS 1.3
// connection has none and no -PLUS mechanism is used on it.
std::string tls_unique(SSL* ssl) {
  if (SSL_version(ssl) != TLS1_2_VERSION) return {};
  unsigned char buf[EVP_MAX_MD_SIZE];
  const std::size_t n = SSL_session_reused(ssl) != 0 ? SSL_get_peer_finished(ssl, buf, sizeof buf)
                                                     : SSL_get_finished(ssl, buf, sizeof buf);
  if (n == 0 || n > sizeof buf) return {};
  return std::string(reinterpret_cast<const char*>(buf), n);
}

Errc errc_of(xmpp::stream::FailureKind kind) {
  switch (kind) {
    case xmpp::stream::FailureKind::kTls:
      return Errc::kTls;
    case xmpp::stream::FailureKind::kAuth:
      return Errc::kAuth;
    default:
      return Errc::kProtocol;
  }
}

}  // namespace

// Runs the stream negotiator (xmpp/stream/) over the connection open_transport() made: it says
// what to write, when to start TLS and restart the parser; this reads and does it.
awaitable<std::optional<Error>> Client::Impl::negotiate(bool authenticate) {
  xmpp::stream::ClientOptions o;
  o.jid = jid.bare_str();
  o.password = opt.password;
  o.resource = opt.resource;
  o.authenticate = authenticate;
  if (resuming && sm.resumable()) {
    o.resume_previd = sm.id();
    o.resume_h = sm.handled();
  }
  resume_answer.reset();
  bound_features.reset();
  xmpp::stream::ClientNegotiator negotiator(std::move(o));
  parser = std::make_unique<xml::StreamParser>(*this);
  inbox.clear();
  stream_closed = false;
  if (tls) {
    const std::string cb = tls_unique(stream->native_handle());
    negotiator.tls_established(cb.empty() ? "" : "tls-unique", cb);
  } else {
    negotiator.start();
  }
  std::deque<xml::Element> early;  // stanzas the server sent while we bound
  bool done = false;
  while (!done) {
    while (negotiator.has_events()) {
      for (xmpp::stream::Event& ev : negotiator.take_events()) {
        switch (ev.kind) {
          case xmpp::stream::Event::Kind::kSend:
            co_await write_raw(ev.data);
            break;
          case xmpp::stream::Event::Kind::kStartTls: {
            // RFC 6120 §5.3.3: nothing read in the clear after <proceed/> is kept.
            inbox.clear();
            if (auto e = co_await tls_handshake()) co_return e;
            const std::string cb = tls_unique(stream->native_handle());
            negotiator.tls_established(cb.empty() ? "" : "tls-unique", cb);
            break;
          }
          case xmpp::stream::Event::Kind::kRestartStream:
            parser = std::make_unique<xml::StreamParser>(*this);
            inbox.clear();
            stream_closed = false;
            break;
          case xmpp::stream::Event::Kind::kStanza:
            early.push_back(std::move(*ev.element));
            break;
          case xmpp::stream::Event::Kind::kBound:
            done = true;
            if (ev.element && ev.element->is("resumed", xmpp::stream::kSmNs)) {
              resume_answer = std::move(ev.element);  // XEP-0198 §5: the session goes on
              break;
            }
            bound = ev.jid;
            roster_ver_supported = ev.element && ev.element->child("ver", ns::kRosterVer);
            bound_features = std::move(ev.element);
            if (negotiator.resume_refused()) {
              // XEP-0198 §5: what the old session did not acknowledge goes out in the new one.
              std::optional<std::uint32_t> h;
              if (negotiator.resume_failure()) h = xmpp::stream::sm_h(*negotiator.resume_failure());
              std::vector<std::string> rest = sm.failed(h);
              resend_after_failure.insert(resend_after_failure.end(),
                                          std::make_move_iterator(rest.begin()),
                                          std::make_move_iterator(rest.end()));
            }
            break;
          case xmpp::stream::Event::Kind::kReady:
            done = true;
            break;
          case xmpp::stream::Event::Kind::kClosed:
            co_return err(errc_of(ev.failure), ev.message);
          default:
            break;
        }
      }
    }
    if (done) break;
    while (inbox.empty() && !stream_closed) co_await read_more();
    if (inbox.empty()) {
      negotiator.stream_closed();
      continue;
    }
    xml::Element el = std::move(inbox.front());
    inbox.pop_front();
    negotiator.element(std::move(el));
  }
  // What came while binding is handled first (and, being before <enable/>, not counted), then
  // what came behind the last negotiation answer.
  for (xml::Element& el : early) uncounted.push_back(std::move(el));
  co_return std::nullopt;
}

// Runs a negotiation step under the watchdog; maps exceptions to errors.
awaitable<Error> Client::Impl::guarded(std::function<awaitable<std::optional<Error>>()> step) {
  asio::steady_timer watchdog(io, opt.timeout);
  bool timed_out = false;
  watchdog.async_wait([this, &timed_out](boost::system::error_code e) {
    if (!e && stream) {
      timed_out = true;
      boost::system::error_code ig;
      stream->next_layer().close(ig);
    }
  });
  Error result;
  try {
    if (auto e = co_await step()) result = *e;
  } catch (const boost::system::system_error& e) {
    if (timed_out)
      result = err(Errc::kTimeout, "the server did not answer in time");
    else if (e.code() == asio::error::eof || e.code() == asio::ssl::error::stream_truncated)
      result = err(Errc::kDisconnected, "the server closed the connection");
    else
      result = err(Errc::kDisconnected, "connection failed: " + e.code().message());
  } catch (const std::exception& e) {
    result = err(Errc::kProtocol, e.what());
  }
  watchdog.cancel();
  if (result) close_socket();
  co_return result;
}

awaitable<Error> Client::Impl::establish() {
  uncounted.clear();
  co_return co_await guarded([this]() -> awaitable<std::optional<Error>> {
    if (auto e = co_await open_transport()) co_return e;
    if (auto e = co_await negotiate(true)) co_return e;
    if (resume_answer || !opt.stream_management || !bound_features ||
        !xmpp::stream::SmClient::offered(*bound_features))
      co_return std::nullopt;
    // XEP-0198 §4: enable (resumable) after binding, before any stanza of ours; the answer is
    // awaited here so the counts start where the server's do.
    co_await write_raw(sm.enable(true));
    while (true) {
      xml::Element el = co_await next_element();
      if (el.is("enabled", xmpp::stream::kSmNs) || el.is("failed", xmpp::stream::kSmNs)) {
        sm.inbound(el);
        break;
      }
      uncounted.push_back(std::move(el));
    }
    co_return std::nullopt;
  });
}

awaitable<Error> Client::Impl::connect() {
  closing = false;
  close_reason = {};
  resuming = false;
  sm = xmpp::stream::SmClient();
  resend_after_failure.clear();
  last_presence.clear();
  own_presence.reset();
  caps_of_jid.clear();
  if (Error e = co_await establish()) co_return e;
  is_connected = true;
  start_loops();
  // XEP-0280 §4: carbons are asked for once bound; waited for, so that once connect() returns
  // the copies of what the account's other clients send and receive come here too.
  co_await enable_carbons();
  co_return Error{};
}

awaitable<Error> Client::Impl::register_account() {
  co_return co_await guarded([this]() -> awaitable<std::optional<Error>> {
    if (auto e = co_await open_transport()) co_return e;
    // Up to the features of the secured stream, where XEP-0077 registration is offered.
    if (auto e = co_await negotiate(false)) co_return e;
    xml::Element iq("iq", ns::kClient);
    std::string id = new_id();
    iq.set_attr("type", "set").set_attr("id", id);
    xml::Element& q = iq.add_child("query", ns::kRegister);
    q.add_child("username", ns::kRegister).add_text(jid.local());
    q.add_child("password", ns::kRegister).add_text(opt.password);
    co_await write_raw(xml::serialize(iq));
    while (true) {
      xml::Element r = co_await next_element();
      if (r.name() != "iq" || r.attr("id") != id) continue;
      std::optional<Error> result;
      if (r.attr("type") != "result") {
        std::string cond = error_condition(r);
        std::string text = error_text(r);
        if (cond == "conflict")
          result = err(Errc::kConflict, "the account " + jid.bare_str() + " already exists");
        else if (cond == "not-acceptable")
          result = err(Errc::kNotAllowed, "the server did not accept the registration" +
                                              (text.empty() ? "" : ": " + text));
        else
          result = err(Errc::kNotAllowed, "the server refused the registration (" + cond + ")" +
                                              (text.empty() ? "" : ": " + text));
      }
      co_await write_raw("</stream:stream>");
      close_socket();
      co_return result;
    }
  });
}

awaitable<Error> Client::connect() { co_return co_await impl_->connect(); }
awaitable<Error> Client::register_account() { co_return co_await impl_->register_account(); }

awaitable<Error> Client::change_password(std::string new_password) {
  auto self = impl_;
  xml::Element iq("iq", ns::kClient);
  iq.set_attr("type", "set").set_attr("to", self->jid.domain());
  xml::Element& q = iq.add_child("query", ns::kRegister);
  q.add_child("username", ns::kRegister).add_text(self->jid.local());
  q.add_child("password", ns::kRegister).add_text(new_password);
  auto r = co_await self->iq(std::move(iq));
  Error e = self->iq_error(r, "changing the password");
  if (!e) self->opt.password = std::move(new_password);
  co_return e;
}

}  // namespace kabar::client
