#include "server/c2s_session.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <span>

#include "server/modules/register/register.h"
#include "tls/handover.h"
#include "xml/serializer.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

namespace kabar::server {

namespace ns = xmpp::ns;
using asio::ip::tcp;

namespace {

constexpr std::size_t kMaxQueuedBytes = 4 * 1024 * 1024;  // a reader this far behind is dropped
constexpr int kMaxSaslFailuresPerStream = 3;

std::atomic<std::uint64_t> g_serial{0};

// Reads of plain connections land here and go straight into the parser: an idle connection
// holds no read buffer. One per shard thread.
thread_local std::array<char, 16384> g_scratch;
// Plaintext opened by our TLS 1.3 record layer, and plaintext gathered for sealing: shared by
// the connections of a shard thread, so an idle one holds neither.
thread_local std::string g_plain;
thread_local std::string g_gather;
// Queued plaintext sealed per write: up to four full records in one send.
constexpr std::size_t kTlsBatch = 4 * tls::kMaxPlaintext;

xml::Element sasl_element(std::string_view name) {
  return xml::Element(std::string(name), ns::kSasl);
}

}  // namespace

C2sSession::C2sSession(Server& server, Shard& shard, tcp::socket sock, bool direct_tls)
    : server_(server),
      shard_(shard),
      sock_(std::move(sock)),
      direct_tls_(direct_tls),
      parser_(*this, xml::StreamLimits{server.config().max_stanza_bytes, 32, 64, kKeptBytes}) {
  serial_ = ++g_serial;
  boost::system::error_code ec;
  auto ep = sock_.remote_endpoint(ec);
  peer_addr_ = ec ? std::string("?") : ep.address().to_string();
  created_ms = last_read_ms = server.now_ms();
}

C2sSession::~C2sSession() = default;

void C2sSession::start() {
  boost::system::error_code ec;
  sock_.non_blocking(true, ec);  // writes are tried at once, reads after readiness
  auto self = shared_from_this();
  if (direct_tls_) {
    asio::co_spawn(
        *shard_.io, [self]() -> awaitable<void> { co_await self->run(); }, asio::detached);
  } else {
    arm_read();
  }
}

awaitable<void> C2sSession::run() {
  bool ok = true;
  try {
    co_await tls_handshake();
  } catch (const boost::system::system_error& e) {
    spdlog::debug("c2s #{} {}: TLS handshake failed: {}", serial_, peer_addr_, e.what());
    ok = false;
  } catch (const std::exception& e) {
    spdlog::error("c2s #{} {}: {}", serial_, peer_addr_, e.what());
    ok = false;
  }
  if (!ok) {
    co_await end();
    co_return;
  }
  arm_read();
}

awaitable<void> C2sSession::end() {
  if (ended_) co_return;
  ended_ = true;
  closing_ = true;
  if (closed_at_ms == 0) closed_at_ms = server_.now_ms();
  // A stream error queued as the read loop ended (bad XML, a size limit) must still reach the
  // peer before the close (RFC 6120 §4.9.1.1): let the writer finish. A peer that does not read
  // is cut off by the sweep (abort() after 5 s), which closes the socket and ends this wait.
  co_await wait_drained();
  shutdown_socket();
  co_await server_.session_closed(shared_from_this());
}

// Plain TCP: an idle connection waits for readiness with no buffer and no coroutine frame; the
// bytes land in the shared scratch buffer and go straight into the parser. A coroutine runs only
// while there are stanzas to process (they may wait for the store).
void C2sSession::arm_read(bool drained) {
  if (socket_closed_) {
    spawn_end();
    return;
  }
  read_wait_.start(sock_, *shard_.io, shared_from_this(), this, &C2sSession::readable, drained);
}

void C2sSession::readable(void* self, const boost::system::error_code& ec) {
  static_cast<C2sSession*>(self)->on_readable(ec);
}

void C2sSession::spawn_end() {
  if (ended_) return;
  auto self = shared_from_this();
  asio::co_spawn(
      *shard_.io, [self]() -> awaitable<void> { co_await self->end(); }, asio::detached);
}

C2sSession::EventScope::EventScope(Shard& shard) : shard_(shard), outer_(!shard.in_event) {
  shard_.in_event = true;
}

C2sSession::EventScope::~EventScope() {
  if (!outer_) return;
  // A flush may append more (a callback run once bytes are written): the loop reaches those too.
  auto& list = shard_.to_flush;
  for (std::size_t i = 0; i < list.size(); ++i) list[i]->flush();
  list.clear();
  shard_.in_event = false;
}

void C2sSession::on_readable(const boost::system::error_code& wait_ec) {
  EventScope scope(shard_);
  if (wait_ec || closing_ || socket_closed_) {
    if (wait_ec && wait_ec != asio::error::operation_aborted) {
      spdlog::debug("c2s #{} {}: connection ended: {}", serial_, peer_addr_, wait_ec.message());
    }
    spawn_end();
    return;
  }
  // Read dry: a short read or EAGAIN. Then the wait for the next bytes needs no epoll re-arm.
  bool drained = false;
  if (rec_) {
    if (!read_rec(drained)) return;
  } else if (ssl_) {
    if (!read_tls()) return;
  } else {
    boost::system::error_code ec;
    std::size_t n = sock_.read_some(asio::buffer(g_scratch), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      arm_read(true);
      return;
    }
    drained = n < g_scratch.size();
    if (ec) {
      spdlog::debug("c2s #{} {}: connection ended: {}", serial_, peer_addr_, ec.message());
      spawn_end();
      return;
    }
    last_read_ms = server_.now_ms();
    if (!feed(std::string_view(g_scratch.data(), n))) {
      spawn_end();
      return;
    }
  }
  if (!inbox_.empty() || start_tls_) {
    auto self = shared_from_this();
    asio::co_spawn(
        *shard_.io, [self]() -> awaitable<void> { co_await self->process_batch(); },
        asio::detached);
    return;
  }
  if (peer_closed_) {
    close();
    spawn_end();
    return;
  }
  arm_read(drained);
}

awaitable<void> C2sSession::process_batch() {
  bool failed = false;
  try {
    co_await process_inbox();
    if (peer_closed_) close();
    if (!closing_ && start_tls_) co_await begin_tls();
  } catch (const boost::system::system_error& e) {
    spdlog::debug("c2s #{} {}: connection ended: {}", serial_, peer_addr_, e.code().message());
    failed = true;
  } catch (const std::exception& e) {
    spdlog::error("c2s #{} {}: {}", serial_, peer_addr_, e.what());
    failed = true;
  }
  if (failed || closing_) {
    co_await end();
    co_return;
  }
  arm_read();
}

awaitable<void> C2sSession::process_inbox() {
  // After <starttls/> nothing more is read in the clear: what followed it in the same read is
  // dropped (RFC 6120 §5.3.3; the STARTTLS command-injection attack).
  while (!inbox_.empty() && !closing_ && !start_tls_) {
    std::vector<xml::Element> batch;
    batch.swap(inbox_);
    for (auto& el : batch) {
      if (closing_ || start_tls_) break;
      co_await process(std::move(el));
    }
  }
  inbox_.clear();
}

awaitable<void> C2sSession::begin_tls() {
  start_tls_ = false;
  // RFC 6120 §5.4.3.3: after <proceed/> both sides drop the stream and start TLS.
  // Wait until <proceed/> is on the wire, then handshake.
  co_await wait_drained();
  if (socket_closed_) throw boost::system::system_error(asio::error::connection_aborted);
  inbox_.clear();
  phase_ = Phase::kTlsHandshake;
  co_await tls_handshake();
  parser_.reset();
  phase_ = Phase::kWaitStream;
  stream_open_ = false;
}

// TLS straight on the socket (SSL_set_fd), as nginx does: no BIO pair and no stream buffers of
// our own, so an idle TLS connection holds only OpenSSL's state, whose record buffers are
// released between records (SSL_MODE_RELEASE_BUFFERS). Reads and writes are nonblocking; a
// WANT_READ/WANT_WRITE waits for readiness and retries.
awaitable<void> C2sSession::tls_handshake() {
  ssl_.reset(SSL_new(server_.tls().native_handle()));
  if (!ssl_ || SSL_set_fd(ssl_.get(), sock_.native_handle()) != 1) {
    throw std::runtime_error("cannot set up TLS for the connection");
  }
  SSL_set_accept_state(ssl_.get());
  tls::arm_handover(ssl_.get());
  for (;;) {
    ERR_clear_error();
    const int r = SSL_do_handshake(ssl_.get());
    if (r == 1) break;
    const int err = SSL_get_error(ssl_.get(), r);
    if (err == SSL_ERROR_WANT_READ) {
      co_await sock_.async_wait(tcp::socket::wait_read, asio::use_awaitable);
    } else if (err == SSL_ERROR_WANT_WRITE) {
      co_await sock_.async_wait(tcp::socket::wait_write, asio::use_awaitable);
    } else {
      char reason[256] = "connection closed";
      if (unsigned long e = ERR_peek_last_error(); e != 0) {
        ERR_error_string_n(e, reason, sizeof reason);
      }
      ERR_clear_error();
      throw boost::system::system_error(asio::error::connection_aborted, reason);
    }
  }
  tls_ready_ = true;
  capture_channel_binding();
  // TLS 1.3: from here on our own record layer carries the connection and OpenSSL's object goes
  // (freed without SSL_shutdown: it must write nothing more). Anything else stays on OpenSSL.
  if (auto rec = tls::take_over(ssl_.get())) {
    rec_ = std::move(rec);
    ssl_.reset();
    spdlog::debug("c2s #{} {}: TLS 1.3 handed over to kabar's record layer", serial_, peer_addr_);
  }
}

bool C2sSession::read_rec(bool& drained) {
  // Everything the socket has, until a short read (bytes arriving later make a new epoll edge);
  // a record split across reads waits in rec_ for the rest.
  for (;;) {
    boost::system::error_code ec;
    const std::size_t n = sock_.read_some(asio::buffer(g_scratch), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      drained = true;
      return true;
    }
    if (ec) {
      spdlog::debug("c2s #{} {}: connection ended: {}", serial_, peer_addr_, ec.message());
      spawn_end();
      return false;
    }
    last_read_ms = server_.now_ms();
    g_plain.clear();
    const auto status = rec_->open(std::string_view(g_scratch.data(), n), g_plain, tls_out_);
    if (status == tls::Record13::Status::kError) {
      // The alert (if the peer did not send one) is in tls_out_; it goes out, then the socket
      // closes. Nothing queued is sealed any more.
      spdlog::debug("c2s #{} {}: TLS alert {} ({}), closing", serial_, peer_addr_,
                    static_cast<int>(rec_->alert()), rec_->peer_alerted() ? "received" : "sent");
      closing_ = true;
      inbox_.clear();
      if (!writing_) flush_now();
      spawn_end();
      return false;
    }
    if (!g_plain.empty() && !feed(g_plain)) {
      spawn_end();
      return false;
    }
    // A KeyUpdate answer to send.
    if (tls_out_off_ < tls_out_.size() && !writing_) flush_now();
    if (status == tls::Record13::Status::kClosed) {
      peer_closed_ = true;  // close_notify, as read_tls() handles it
      return true;
    }
    if (closing_) return true;
    if (n < g_scratch.size()) {
      drained = true;
      return true;
    }
  }
}

bool C2sSession::read_tls() {
  // Everything the socket has, record by record: bytes OpenSSL holds decrypted would never wake
  // epoll again.
  for (;;) {
    ERR_clear_error();
    const int n = SSL_read(ssl_.get(), g_scratch.data(), static_cast<int>(g_scratch.size()));
    if (n > 0) {
      last_read_ms = server_.now_ms();
      if (!feed(std::string_view(g_scratch.data(), static_cast<std::size_t>(n)))) {
        spawn_end();
        return false;
      }
      if (closing_) break;
      continue;
    }
    const int err = SSL_get_error(ssl_.get(), n);
    if (err == SSL_ERROR_WANT_READ) return true;
    if (err == SSL_ERROR_WANT_WRITE) {
      // A TLS 1.3 key update to answer while the socket is full: read again once writable.
      sock_.async_wait(tcp::socket::wait_write,
                       [self = shared_from_this()](const boost::system::error_code& ec) {
                         self->on_readable(ec);
                       });
      return false;
    }
    ERR_clear_error();
    if (err == SSL_ERROR_ZERO_RETURN) {
      // close_notify: the client is done; what it sent before is still handled, then the
      // stream is closed from our side too.
      peer_closed_ = true;
      return true;
    }
    spdlog::debug("c2s #{} {}: TLS connection ended (error {})", serial_, peer_addr_, err);
    spawn_end();
    return false;
  }
  return true;
}

void C2sSession::capture_channel_binding() {
  // RFC 5929 §3.1 tls-unique: the first Finished message of the handshake, the client's for a
  // full handshake and ours for a resumed one. It is defined for TLS 1.2 only (RFC 9266); on
  // TLS 1.3 the binding would be tls-exporter, which Debian's slixmpp cannot do (it sends
  // tls-unique to any -PLUS), so -PLUS is offered on TLS 1.2 connections only.
  SSL* ssl = ssl_.get();
  if (SSL_version(ssl) != TLS1_2_VERSION) return;
  unsigned char buf[EVP_MAX_MD_SIZE];
  std::size_t n = SSL_session_reused(ssl) != 0 ? SSL_get_finished(ssl, buf, sizeof buf)
                                               : SSL_get_peer_finished(ssl, buf, sizeof buf);
  if (n > 0 && n <= sizeof buf) tls_unique_.assign(reinterpret_cast<const char*>(buf), n);
}

bool C2sSession::feed(std::string_view bytes) {
  auto r = parser_.feed(bytes);
  if (r.status == xml::StreamParser::Status::kOk) return true;
  inbox_.clear();
  switch (r.error) {
    case xml::ParseError::kRestrictedXml:
      stream_error("restricted-xml");
      break;
    case xml::ParseError::kPolicyViolation:
      stream_error("policy-violation", r.message);
      break;
    default:
      stream_error("not-well-formed");
  }
  return false;
}

void C2sSession::on_stream_open(const xml::Element& header, std::string_view default_xmlns) {
  // RFC 6120 §4.7: answer with our own header, even when about to send a stream error.
  stream_id_ = xmpp::base64_encode(xmpp::random_bytes(12));
  std::string out = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='";
  out += ns::kStream;
  out += "' id='";
  out += stream_id_;
  out += "' from='";
  xml::escape_attr(server_.config().domain, out);
  out += "' version='1.0' xml:lang='en'>";
  send_raw(std::move(out));
  stream_open_ = true;

  if (header.name() != "stream" || header.xmlns() != ns::kStream) {
    stream_error("invalid-namespace");
    return;
  }
  if (default_xmlns != ns::kClient) {
    stream_error("invalid-namespace", "only jabber:client streams are served here");
    return;
  }
  std::string_view to = header.attr("to");
  auto to_jid = xmpp::Jid::parse(to);
  if (!to_jid || to_jid->domain() != server_.config().domain || !to_jid->is_domain()) {
    stream_error("host-unknown");
    return;
  }
  std::string_view version = header.attr("version");
  if (version.empty() || version[0] < '1') {
    stream_error("unsupported-version");
    return;
  }
  phase_ = bound_ ? Phase::kBound : Phase::kNegotiating;
  send_features();
}

void C2sSession::send_features() {
  bool secure = tls_ready_;
  const Config& cfg = server_.config();
  xml::Element f("features", ns::kStream);
  if (!authenticated()) {
    if (!secure) {
      xml::Element& st = f.add_child("starttls", ns::kTls);
      if (!cfg.allow_plaintext) st.add_child("required", ns::kTls);
    }
    if (secure || cfg.allow_plaintext) {
      xml::Element& mechs = f.add_child("mechanisms", ns::kSasl);
      if (!tls_unique_.empty()) {
        mechs.add_child("mechanism", ns::kSasl).add_text("SCRAM-SHA-256-PLUS");
        mechs.add_child("mechanism", ns::kSasl).add_text("SCRAM-SHA-1-PLUS");
        // XEP-0440: which channel-binding type the -PLUS mechanisms use here.
        f.add_child("sasl-channel-binding", "urn:xmpp:sasl-cb:0")
            .add_child("channel-binding", "urn:xmpp:sasl-cb:0")
            .set_attr("type", "tls-unique");
      }
      mechs.add_child("mechanism", ns::kSasl).add_text("SCRAM-SHA-256");
      mechs.add_child("mechanism", ns::kSasl).add_text("SCRAM-SHA-1");
      mechs.add_child("mechanism", ns::kSasl).add_text("PLAIN");
      if (cfg.allow_registration) f.add_child("register", ns::kRegisterFeature);
    }
  } else {
    f.add_child("bind", ns::kBind);
    for (const xml::Element& feature : server_.modules().stream_features()) f.add_child(feature);
  }
  // The features element lives in the stream namespace: serialize with "stream:" prefix.
  std::string body = xml::serialize(f, ns::kStream);
  // serialize() writes <features xmlns=...>; rewrite the outer tag with the stream prefix.
  std::string out = "<stream:features>";
  std::size_t start = body.find('>');
  if (body.size() >= 2 && body[start - 1] == '/') {
    out += "</stream:features>";
  } else {
    out += body.substr(start + 1, body.size() - (start + 1) - std::string("</features>").size());
    out += "</stream:features>";
  }
  send_raw(std::move(out));
}

// A message that can be delivered now goes from the parser's callback, as the bytes it was
// received in, without a coroutine: a chat to a contact who is online. Anything else, and
// everything after it (to keep the order), goes to process_batch().
bool C2sSession::routable_now(std::string_view name, std::string_view xmlns) const {
  return inbox_.empty() && phase_ == Phase::kBound && !closing_ && name == "message" &&
         xmlns == ns::kClient;
}

bool C2sSession::wants_bytes(const xml::ElementHead& head) {
  return routable_now(head.name(), head.xmlns());
}

bool C2sSession::on_element_bytes(const xml::ElementHead& head, std::string_view bytes) {
  if (!routable_now(head.name(), head.xmlns())) return false;
  std::string_view to;
  std::string_view type;
  for (std::size_t i = 0; i < head.attribute_count(); ++i) {
    const std::string_view name = head.attribute_name(i);
    if (name == "to") {
      to = head.attribute_value(i);
    } else if (name == "type") {
      type = head.attribute_value(i);
    } else if (name == "from") {
      return false;  // a 'from' of the client's own is replaced: that takes on_element()
    }
  }
  route_tried_ = true;
  if (!server_.forward_message_now(*this, to, type, bytes)) return false;
  route_tried_ = false;
  return true;
}

void C2sSession::on_element(xml::Element&& element) {
  const bool tried = std::exchange(route_tried_, false);
  if (!tried && routable_now(element.name(), element.xmlns()) &&
      server_.route_message_now(*this, element, parser_.element_bytes())) {
    return;
  }
  inbox_.push_back(std::move(element));
}

void C2sSession::on_stream_close() { peer_closed_ = true; }

awaitable<void> C2sSession::process(xml::Element el) {
  if (phase_ == Phase::kBound) {
    if (el.xmlns() != ns::kClient ||
        (el.name() != "message" && el.name() != "presence" && el.name() != "iq")) {
      stream_error("unsupported-stanza-type");
      co_return;
    }
    // RFC 6120 §8.1.2.1: the server stamps the full JID of the sender.
    el.set_attr("from", jid_.str());
    co_await server_.handle_stanza(shared_from_this(), std::move(el));
    co_return;
  }
  if (phase_ != Phase::kNegotiating) {
    stream_error("not-authorized");
    co_return;
  }
  const bool secure = tls_ready_;
  if (el.is("starttls", ns::kTls)) {
    if (secure || authenticated()) {
      stream_error("policy-violation", "TLS is already negotiated");
      co_return;
    }
    send_raw("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    start_tls_ = true;
    co_return;
  }
  if (el.xmlns() == ns::kSasl) {
    if (authenticated()) {
      stream_error("policy-violation", "already authenticated");
    } else if (el.name() == "auth") {
      co_await handle_auth(el);
    } else if (el.name() == "response") {
      co_await handle_sasl_response(el);
    } else if (el.name() == "abort") {
      scram_.reset();
      sasl_failure("aborted");
    } else {
      stream_error("unsupported-stanza-type");
    }
    co_return;
  }
  if (el.is("iq", ns::kClient)) {
    if (authenticated()) {
      const xml::Element* bind = el.child("bind", ns::kBind);
      if (bind != nullptr && el.attr("type") == "set") {
        co_await handle_bind(el);
        co_return;
      }
    } else if (el.child("query", ns::kRegister) != nullptr) {
      co_await handle_preauth_iq(el);
      co_return;
    }
  }
  // RFC 6120 §6.4.1/§7.1: nothing but negotiation before authentication and binding.
  stream_error("not-authorized");
}

awaitable<void> C2sSession::handle_preauth_iq(const xml::Element& iq) {
  const Config& cfg = server_.config();
  if (!cfg.allow_registration) {
    send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
    co_return;
  }
  if (!tls_ready_ && !cfg.allow_plaintext) {
    send(xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "not-acceptable",
                                "registration requires TLS"));
    co_return;
  }
  xml::Element reply = co_await handle_register_preauth(server_, iq);
  send(reply);
}

awaitable<void> C2sSession::handle_auth(const xml::Element& el) {
  const Config& cfg = server_.config();
  if (!tls_ready_ && !cfg.allow_plaintext) {
    sasl_failure("encryption-required");
    co_return;
  }
  std::string_view mech = el.attr("mechanism");
  std::string payload;
  std::string text = el.text();
  if (!text.empty() && text != "=") {
    auto decoded = xmpp::base64_decode(text);
    if (!decoded) {
      sasl_failure("incorrect-encoding");
      co_return;
    }
    payload = std::move(*decoded);
  }
  if (server_.throttle().address_blocked(peer_addr_, server_.now_ms())) {
    sasl_failure("temporary-auth-failure", "too many failed attempts; try again later");
    co_return;
  }
  if (mech == "PLAIN") {
    co_await finish_plain(payload);
    co_return;
  }
  const bool plus = mech.ends_with("-PLUS");
  if (plus) mech.remove_suffix(5);
  if ((mech == "SCRAM-SHA-256" || mech == "SCRAM-SHA-1") && (!plus || !tls_unique_.empty())) {
    scram_hash_ = mech == "SCRAM-SHA-1" ? xmpp::ScramHash::kSha1 : xmpp::ScramHash::kSha256;
    scram_.emplace(scram_hash_);
    scram_->set_channel_binding(!tls_unique_.empty(), plus, "tls-unique", tls_unique_);
    xmpp::SaslFailure failure = xmpp::SaslFailure::kNone;
    auto user = scram_->client_first(payload, failure);
    if (!user) {
      scram_.reset();
      sasl_failure(failure == xmpp::SaslFailure::kNone ? "malformed-request"
                                                       : xmpp::failure_name(failure));
      co_return;
    }
    auto prepared = xmpp::nodeprep(*user);
    sasl_user_ = prepared ? *prepared : std::string();
    if (!scram_->authzid().empty()) {
      auto az = xmpp::Jid::parse(scram_->authzid());
      if (!az || az->bare_str() != sasl_user_ + "@" + server_.config().domain) {
        scram_.reset();
        sasl_failure("invalid-authzid");
        co_return;
      }
    }
    if (!sasl_user_.empty() && server_.throttle().account_blocked(sasl_user_, server_.now_ms())) {
      scram_.reset();
      sasl_failure("temporary-auth-failure", "too many failed attempts; try again later");
      co_return;
    }
    std::optional<xmpp::ScramCredentials> creds;
    if (!sasl_user_.empty()) {
      auto hash = scram_hash_;
      auto name = sasl_user_;
      auto op = [name](store::Store& s) { return s.account(name); };
      auto account = co_await server_.db(std::move(op));
      if (account) creds = hash == xmpp::ScramHash::kSha1 ? account->sha1 : account->sha256;
    }
    if (closing_) co_return;
    std::string challenge = scram_->server_first(creds);
    xml::Element c = sasl_element("challenge");
    c.add_text(xmpp::base64_encode(challenge));
    send(c);
    co_return;
  }
  sasl_failure("invalid-mechanism");
}

awaitable<void> C2sSession::handle_sasl_response(const xml::Element& el) {
  if (!scram_) {
    sasl_failure("malformed-request");
    co_return;
  }
  auto decoded = xmpp::base64_decode(el.text());
  if (!decoded) {
    scram_.reset();
    sasl_failure("incorrect-encoding");
    co_return;
  }
  xmpp::SaslFailure failure = xmpp::SaslFailure::kNone;
  auto final_msg = scram_->client_final(*decoded, failure);
  scram_.reset();
  if (!final_msg || sasl_user_.empty()) {
    server_.throttle().record_failure(peer_addr_, sasl_user_, server_.now_ms());
    sasl_failure(failure == xmpp::SaslFailure::kNone ? "not-authorized"
                                                     : xmpp::failure_name(failure));
    co_return;
  }
  username_ = sasl_user_;
  sasl_success(*final_msg);
}

awaitable<void> C2sSession::finish_plain(const std::string& payload) {
  auto plain = xmpp::parse_plain(payload);
  if (!plain) {
    sasl_failure("malformed-request");
    co_return;
  }
  auto user = xmpp::nodeprep(plain->authcid);
  std::string name = user ? *user : std::string();
  if (!plain->authzid.empty()) {
    auto az = xmpp::Jid::parse(plain->authzid);
    if (!az || az->bare_str() != name + "@" + server_.config().domain) {
      sasl_failure("invalid-authzid");
      co_return;
    }
  }
  if (!name.empty() && server_.throttle().account_blocked(name, server_.now_ms())) {
    sasl_failure("temporary-auth-failure", "too many failed attempts; try again later");
    co_return;
  }
  bool ok = false;
  if (!name.empty()) {
    // The PBKDF2 derivation runs on the storage thread, off the I/O thread.
    std::string password = xmpp::saslprep(plain->password).value_or(std::string());
    auto op2 = [name, password](store::Store& s) {
      auto account = s.account(name);
      return account.has_value() &&
             xmpp::verify_password(xmpp::ScramHash::kSha256, account->sha256, password);
    };
    if (!password.empty()) ok = co_await server_.db(std::move(op2));
  }
  if (closing_) co_return;
  if (!ok) {
    server_.throttle().record_failure(peer_addr_, name, server_.now_ms());
    sasl_failure("not-authorized");
    co_return;
  }
  username_ = name;
  sasl_success({});
}

void C2sSession::sasl_failure(std::string_view condition, std::string_view text) {
  xml::Element f = sasl_element("failure");
  f.add_child(std::string(condition), ns::kSasl);
  if (!text.empty()) f.add_child("text", ns::kSasl).add_text(text);
  send(f);
  if (condition == "not-authorized" && ++sasl_failures_ >= kMaxSaslFailuresPerStream) {
    // RFC 6120 §6.4.5: the server may close the stream after a configurable number of retries.
    stream_error("policy-violation", "too many failed authentication attempts");
  }
}

void C2sSession::sasl_success(std::string_view additional) {
  xml::Element s = sasl_element("success");
  if (!additional.empty()) s.add_text(xmpp::base64_encode(additional));
  send(s);
  spdlog::info("c2s #{} {}: authenticated as {}@{}", serial_, peer_addr_, username_,
               server_.config().domain);
  // RFC 6120 §6.4.6: a new stream follows. Until its header is answered, a stream error needs
  // a header of its own (§4.9.1.1).
  parser_.reset();
  inbox_.clear();
  phase_ = Phase::kWaitStream;
  stream_open_ = false;
}

awaitable<void> C2sSession::handle_bind(const xml::Element& iq) {
  if (bound_) {
    send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "not-allowed"));
    co_return;
  }
  const xml::Element* bind = iq.child("bind", ns::kBind);
  std::string requested = bind->child_text("resource", ns::kBind);
  std::string resource;
  if (!requested.empty()) {
    auto prepped = xmpp::resourceprep(requested);
    if (!prepped) {
      send(xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request"));
      co_return;
    }
    resource = *prepped;
  } else {
    resource = "kabar-" + xmpp::base64_encode(xmpp::random_bytes(6));
    for (char& c : resource) {
      if (c == '/' || c == '+') c = 'x';
    }
  }
  auto jid = xmpp::Jid::from_parts(username_, server_.config().domain, resource);
  if (!jid) {
    send(xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request"));
    co_return;
  }
  // RFC 6120 §7.7.2.2: the new session wins; the old one gets <conflict/>. It is ended on its
  // own shard, and its unavailable presence goes out before this one binds.
  jid_ = *jid;
  jid_str_ = jid_.str();
  {
    std::string escaped;
    xml::escape_attr(jid_str_, escaped);
    jid_plain_ = escaped == jid_str_;
  }
  while (auto old = server_.bind(shared_from_this())) {
    co_await server_.replace_session(old);
    if (closing_) co_return;
  }
  bound_ = true;
  phase_ = Phase::kBound;
  xml::Element reply = xmpp::make_iq_result(iq);
  reply.remove_attr("from");
  reply.remove_attr("to");
  reply.add_child("bind", ns::kBind).add_child("jid", ns::kBind).add_text(jid_.str());
  send(reply);
  spdlog::info("c2s #{}: bound {} (shard {})", serial_, jid_.str(), shard_.index);
}

void C2sSession::send(const xml::Element& stanza, std::function<void()> on_written) {
  send_raw(xml::serialize(stanza, ns::kClient), std::move(on_written));
}

void C2sSession::send_raw(std::string data, std::function<void()> on_written) {
  if (!on_own_shard()) {
    // From another shard: serialized there, queued here (ARCHITECTURE.md: a post to the shard).
    asio::post(*shard_.io, [self = shared_from_this(), data = std::move(data),
                            cb = std::move(on_written)]() mutable {
      self->enqueue(Out{std::move(data), std::move(cb), 0, nullptr});
    });
    return;
  }
  enqueue(Out{std::move(data), std::move(on_written), 0, nullptr});
}

void C2sSession::send_shared(const std::shared_ptr<const std::string>& head, std::string own,
                             const std::shared_ptr<const std::string>& tail) {
  if (!on_own_shard()) {
    asio::post(*shard_.io, [self = shared_from_this(), head, own = std::move(own), tail]() mutable {
      self->send_shared(head, std::move(own), tail);
    });
    return;
  }
  enqueue(Out{{}, {}, 0, head});
  enqueue(Out{std::move(own), {}, 0, nullptr});
  enqueue(Out{{}, {}, 0, tail});
}

void C2sSession::enqueue(Out out) {
  // Stanzas routed here after the stream was closed (a broadcast from another session, posted
  // from another shard) are dropped: nothing may follow </stream:stream>.
  if (socket_closed_ || stream_closed_) return;
  const std::size_t size = out.bytes().size();
  if (queued_bytes_ + size > kMaxQueuedBytes) {
    spdlog::warn("c2s #{} {}: client is not reading; dropping the connection", serial_, peer_addr_);
    closing_ = true;
    clear_outq();
    shutdown_socket();
    return;
  }
  queued_bytes_ += size;
  outq_.push_back(std::move(out));
  if (!writing_ && !flush_posted_) {
    // Written once the current event is handled: stanzas queued meanwhile go out in one writev.
    flush_posted_ = true;
    if (shard_.in_event) {
      shard_.to_flush.push_back(shared_from_this());
    } else {
      asio::post(*shard_.io, [self = shared_from_this()] { self->flush(); });
    }
  }
}

void C2sSession::clear_outq() {
  outq_.clear();
  outq_head_ = 0;
  queued_bytes_ = 0;
  tls_out_.clear();
  tls_out_off_ = 0;
  tls_out_done_.clear();
  notify_drained();
}

void C2sSession::written(std::size_t n) {
  // Drops `n` written bytes from the front of the queue; runs the callbacks of whole entries.
  while (n > 0 && outq_head_ < outq_.size()) {
    Out& o = outq_[outq_head_];
    std::size_t left = o.bytes().size() - o.offset;
    if (n < left) {
      o.offset += n;
      queued_bytes_ -= n;
      return;
    }
    n -= left;
    queued_bytes_ -= left;
    auto cb = std::move(o.on_written);
    ++outq_head_;
    if (cb) cb();  // may queue more (send_raw appends; indices stay valid)
  }
  if (outq_head_ == outq_.size()) {
    outq_.clear();
    outq_head_ = 0;
    if (outq_.capacity() > 8) std::vector<Out>().swap(outq_);  // an idle connection keeps none
  }
}

bool C2sSession::hibernate() {
  if (closing_ || ended_) return false;
  // The TLS 1.3 cipher contexts go whenever the connection is idle, also when the parser slept
  // already (a write since then, such as a ping, made them again).
  const bool keys_slept = rec_ && rec_->hibernate();
  if (!parser_.hibernate()) return keys_slept;
  // The queues' spare capacity goes too: an idle connection keeps no buffer at all.
  if (drained()) {
    std::vector<Out>().swap(outq_);
    outq_head_ = 0;
  }
  if (inbox_.empty()) std::vector<xml::Element>().swap(inbox_);
  return true;
}

bool C2sSession::drained() const {
  return !writing_ && !flush_posted_ && outq_head_ == outq_.size() && tls_out_.empty();
}

awaitable<void> C2sSession::wait_drained() {
  // Woken by notify_drained(); the timeout only bounds a wait nobody would end.
  while (!socket_closed_ && !drained()) {
    drain_wait_ = std::make_unique<asio::steady_timer>(*shard_.io, std::chrono::seconds(5));
    boost::system::error_code ec;
    co_await drain_wait_->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    drain_wait_.reset();
  }
}

void C2sSession::notify_drained() {
  if (drain_wait_ && (socket_closed_ || drained())) drain_wait_->cancel();
}

void C2sSession::flush() {
  flush_posted_ = false;
  flush_now();
  notify_drained();
}

void C2sSession::flush_now() {
  if (writing_ || socket_closed_) return;
  if (rec_) {
    flush_rec();
    return;
  }
  if (ssl_) {
    flush_tls();
    return;
  }
  if (outq_head_ < outq_.size()) {
    // Plain TCP: one nonblocking sendmsg with everything queued; the kernel takes it all unless
    // the peer stopped reading.
    boost::system::error_code ec;
    std::size_t n = 0;
    if (outq_.size() - outq_head_ == 1) {
      // The usual case at low rates: one message (no array of 64 buffers to set up).
      const std::string_view b = outq_[outq_head_].bytes().substr(outq_[outq_head_].offset);
      n = sock_.write_some(asio::buffer(b.data(), b.size()), ec);
    } else {
      std::array<asio::const_buffer, 64> bufs;
      std::size_t count = 0;
      for (std::size_t i = outq_head_; i < outq_.size() && count < bufs.size(); ++i) {
        const std::string_view b = outq_[i].bytes().substr(outq_[i].offset);
        bufs[count++] = asio::buffer(b.data(), b.size());
      }
      n = sock_.write_some(std::span<const asio::const_buffer>(bufs.data(), count), ec);
    }
    if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
      spdlog::debug("c2s #{}: write failed: {}", serial_, ec.message());
      clear_outq();
      closing_ = true;
      shutdown_socket();
      return;
    }
    if (!ec) written(n);
  }
  if (outq_head_ < outq_.size()) {
    // The rest waits for the socket to become writable (or goes through TLS).
    writing_ = true;
    auto self = shared_from_this();
    asio::co_spawn(
        *shard_.io, [self]() -> awaitable<void> { co_await self->write_loop(); }, asio::detached);
    return;
  }
  if (closing_) shutdown_socket();
}

void C2sSession::flush_tls() {
  if (!tls_ready_) return;  // nothing goes out before the handshake is done
  for (;;) {
    if (tls_out_.empty()) {
      if (outq_head_ == outq_.size()) break;
      // Everything queued, up to one record's worth, in one SSL_write: one record, one write.
      while (outq_head_ < outq_.size() &&
             (tls_out_.empty() || tls_out_.size() + outq_[outq_head_].bytes().size() <= 16384)) {
        Out& o = outq_[outq_head_++];
        const std::string_view b = o.bytes().substr(o.offset);
        tls_out_.append(b);
        queued_bytes_ -= b.size();
        if (o.on_written) tls_out_done_.push_back(std::move(o.on_written));
      }
      if (outq_head_ == outq_.size()) {
        outq_.clear();
        outq_head_ = 0;
        if (outq_.capacity() > 8) std::vector<Out>().swap(outq_);
      }
    }
    ERR_clear_error();
    const int n = SSL_write(ssl_.get(), tls_out_.data(), static_cast<int>(tls_out_.size()));
    if (n > 0) {
      tls_out_.erase(0, static_cast<std::size_t>(n));
      if (tls_out_.empty()) {
        std::string().swap(tls_out_);
        auto done = std::move(tls_out_done_);
        tls_out_done_.clear();
        for (auto& cb : done) cb();
      }
      continue;
    }
    const int err = SSL_get_error(ssl_.get(), n);
    if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
      // The peer is not reading (or a renegotiation needs its bytes): retry when it can go on.
      writing_ = true;
      sock_.async_wait(
          err == SSL_ERROR_WANT_WRITE ? tcp::socket::wait_write : tcp::socket::wait_read,
          [self = shared_from_this()](const boost::system::error_code& ec) {
            self->writing_ = false;
            if (ec) return;
            self->flush();
          });
      return;
    }
    ERR_clear_error();
    spdlog::debug("c2s #{}: TLS write failed (error {})", serial_, err);
    clear_outq();
    closing_ = true;
    shutdown_socket();
    return;
  }
  if (closing_) shutdown_socket();
}

void C2sSession::flush_rec() {
  for (;;) {
    if (tls_out_off_ == tls_out_.size()) {
      if (!tls_out_.empty()) std::string().swap(tls_out_);
      tls_out_off_ = 0;
      if (!tls_out_done_.empty()) {
        auto done = std::move(tls_out_done_);
        tls_out_done_.clear();
        for (auto& cb : done) cb();  // may queue more
      }
      if (outq_head_ == outq_.size()) break;
      // Seal what is queued, up to kTlsBatch: small stanzas share a record.
      g_gather.clear();
      while (outq_head_ < outq_.size() && g_gather.size() < kTlsBatch) {
        Out& o = outq_[outq_head_];
        const std::string_view b = o.bytes().substr(o.offset);
        const std::size_t take = std::min(b.size(), kTlsBatch - g_gather.size());
        g_gather.append(b.substr(0, take));
        o.offset += take;
        queued_bytes_ -= take;
        if (o.offset == o.bytes().size()) {
          if (o.on_written) tls_out_done_.push_back(std::move(o.on_written));
          ++outq_head_;
        }
      }
      if (outq_head_ == outq_.size()) {
        outq_.clear();
        outq_head_ = 0;
        if (outq_.capacity() > 8) std::vector<Out>().swap(outq_);
      }
      if (!rec_->seal(g_gather, tls_out_)) {
        // After an alert of ours (or a crypto failure): nothing more is written in the clear or
        // otherwise; what was sealed before still goes.
        outq_.clear();
        outq_head_ = 0;
        queued_bytes_ = 0;
        tls_out_done_.clear();
        closing_ = true;
        if (tls_out_off_ == tls_out_.size()) break;
      }
    }
    boost::system::error_code ec;
    const std::size_t n = sock_.write_some(
        asio::buffer(tls_out_.data() + tls_out_off_, tls_out_.size() - tls_out_off_), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      // The peer is not reading: go on once the socket is writable.
      writing_ = true;
      sock_.async_wait(tcp::socket::wait_write,
                       [self = shared_from_this()](const boost::system::error_code& wec) {
                         self->writing_ = false;
                         if (wec) return;
                         self->flush();
                       });
      return;
    }
    if (ec) {
      spdlog::debug("c2s #{}: TLS write failed: {}", serial_, ec.message());
      clear_outq();
      closing_ = true;
      shutdown_socket();
      return;
    }
    tls_out_off_ += n;
  }
  if (closing_) shutdown_socket();
}

template <typename Buffers>
awaitable<std::size_t> C2sSession::write_some(const Buffers& bufs) {
  co_return co_await asio::async_write(sock_, bufs, asio::use_awaitable);
}

awaitable<void> C2sSession::write_loop() {
  try {
    while (outq_head_ < outq_.size() && !socket_closed_) {
      // The batch moves out of the queue first: send_raw() may grow the queue while the write
      // waits, and the buffers must not move under it.
      std::vector<Out> batch;
      for (std::size_t i = outq_head_; i < outq_.size() && batch.size() < 64; ++i) {
        batch.push_back(std::move(outq_[i]));
      }
      outq_head_ += batch.size();
      std::vector<asio::const_buffer> bufs;
      bufs.reserve(batch.size());
      std::size_t total = 0;
      for (const Out& o : batch) {
        const std::string_view b = o.bytes().substr(o.offset);
        bufs.push_back(asio::buffer(b.data(), b.size()));
        total += b.size();
      }
      co_await write_some(bufs);
      queued_bytes_ -= std::min(queued_bytes_, total);
      for (auto& o : batch) {
        if (o.on_written) o.on_written();
      }
      if (outq_head_ == outq_.size()) {
        outq_.clear();
        outq_head_ = 0;
      }
    }
  } catch (const boost::system::system_error& e) {
    spdlog::debug("c2s #{}: write failed: {}", serial_, e.code().message());
    clear_outq();
    closing_ = true;
    shutdown_socket();
  }
  writing_ = false;
  if (closing_ && outq_head_ == outq_.size()) shutdown_socket();
  notify_drained();
}

void C2sSession::stream_error(std::string_view condition, std::string_view text) {
  if (closing_) return;
  if (!on_own_shard()) {
    asio::post(*shard_.io, [self = shared_from_this(), c = std::string(condition),
                            t = std::string(text)] { self->stream_error(c, t); });
    return;
  }
  spdlog::info("c2s #{} {}: stream error {}{}{}", serial_, peer_addr_, condition,
               text.empty() ? "" : ": ", text);
  if (!stream_open_) {
    std::string out = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='";
    out += ns::kStream;
    out += "' version='1.0' from='";
    xml::escape_attr(server_.config().domain, out);
    out += "'>";
    send_raw(std::move(out));
    stream_open_ = true;
  }
  send_raw(xmpp::stream_error_xml(condition, text));
  stream_closed_ = true;  // nothing may follow </stream:stream>
  closing_ = true;
  closed_at_ms = server_.now_ms();
  inbox_.clear();
  if (!writing_ && !flush_posted_ && outq_head_ == outq_.size()) shutdown_socket();
}

void C2sSession::close() {
  if (closing_) return;
  if (!on_own_shard()) {
    asio::post(*shard_.io, [self = shared_from_this()] { self->close(); });
    return;
  }
  if (stream_open_) send_raw("</stream:stream>");
  stream_closed_ = true;
  closing_ = true;
  closed_at_ms = server_.now_ms();
  inbox_.clear();
  if (!writing_ && !flush_posted_ && outq_head_ == outq_.size()) shutdown_socket();
}

void C2sSession::abort() {
  closing_ = true;
  clear_outq();
  shutdown_socket();
}

void C2sSession::shutdown_socket() {
  if (socket_closed_) return;
  socket_closed_ = true;
  if (ssl_ && tls_ready_) {
    // close_notify (RFC 8446 §6.1), best effort: the socket is nonblocking and closes next.
    ERR_clear_error();
    SSL_shutdown(ssl_.get());
    ERR_clear_error();
  } else if (rec_) {
    // The same with our record layer: after whatever is still unwritten, so the alert starts on
    // a record boundary; one nonblocking write, no waiting.
    std::string last = tls_out_.substr(tls_out_off_);
    if (rec_->seal_close_notify(last)) {
      boost::system::error_code ec;
      sock_.write_some(asio::buffer(last), ec);
    }
    tls_out_.clear();
    tls_out_off_ = 0;
  }
  boost::system::error_code ec;
  sock_.shutdown(tcp::socket::shutdown_both, ec);
  sock_.close(ec);
  notify_drained();
}

}  // namespace kabar::server
