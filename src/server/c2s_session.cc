#include "server/c2s_session.h"

#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <span>

#include "server/modules/register/register.h"
#include "xml/serializer.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

namespace kabar::server {

namespace ns = xmpp::ns;
namespace {

constexpr std::size_t kMaxQueuedBytes = 4 * 1024 * 1024;  // a reader this far behind is dropped
constexpr int kMaxSaslFailuresPerStream = 3;

std::atomic<std::uint64_t> g_serial{0};

// Buffers per write (one sendmsg).
constexpr std::size_t kMaxBuffers = 64;

xml::Element sasl_element(std::string_view name) {
  return xml::Element(std::string(name), ns::kSasl);
}

}  // namespace

C2sSession::C2sSession(Server& server, Shard& shard, std::unique_ptr<net::Transport> transport)
    : server_(server),
      shard_(shard),
      transport_(std::move(transport)),
      parser_(*this, xml::StreamLimits{server.config().max_stanza_bytes, 32, 64, kKeptBytes}) {
  serial_ = ++g_serial;
  peer_addr_ = transport_->peer_address();
  created_ms = last_read_ms = server.now_ms();
}

C2sSession::~C2sSession() = default;

void C2sSession::start() {
  shard_.sessions[this] = weak_from_this();
  transport_->start(*this);
}

bool C2sSession::bind_for_test(const xmpp::Jid& full) {
  username_ = full.local();
  jid_ = full;
  jid_str_ = jid_.str();
  std::string escaped;
  xml::escape_attr(jid_str_, escaped);
  jid_plain_ = escaped == jid_str_;
  if (server_.bind(shared_from_this())) return false;
  bound_ = true;
  phase_ = Phase::kBound;
  stream_open_ = true;
  return true;
}

awaitable<void> C2sSession::end() {
  if (ended_) co_return;
  ended_ = true;
  closing_ = true;
  if (closed_at_ms == 0) closed_at_ms = server_.now_ms();
  // A stream error queued as the read loop ended (bad XML, a size limit) must still reach the
  // peer before the close (RFC 6120 §4.9.1.1): let the writer finish. A peer that does not read
  // is cut off by the sweep (abort() after 5 s), which closes the connection and ends this wait.
  co_await wait_drained();
  shutdown_socket();
  co_await server_.session_closed(shared_from_this());
}

void C2sSession::spawn_end() {
  if (ended_) return;
  auto self = shared_from_this();
  asio::co_spawn(
      *shard_.io, [self]() -> awaitable<void> { co_await self->end(); }, asio::detached);
}

// Reading, driven by the transport. While idle there is no coroutine: bytes go from the read
// straight into the parser. A coroutine runs only while there are stanzas to process (they may
// wait for the store); reading pauses meanwhile.
bool C2sSession::on_bytes(std::string_view bytes) {
  last_read_ms = server_.now_ms();
  if ((!bytes.empty() && !feed(bytes)) || closing_) {
    spawn_end();
    return false;
  }
  return true;
}

bool C2sSession::on_read_done() {
  if (!inbox_.empty() || start_tls_) {
    auto self = shared_from_this();
    asio::co_spawn(
        *shard_.io, [self]() -> awaitable<void> { co_await self->process_batch(); },
        asio::detached);
    return false;
  }
  if (peer_closed_) {
    close();
    spawn_end();
    return false;
  }
  return true;
}

void C2sSession::on_peer_closed() { peer_closed_ = true; }

void C2sSession::on_transport_closed() {
  if (detached_) return;  // the old connection's last word
  if (resumable_ && bound_ && !closing_) {
    detach();
    return;
  }
  closing_ = true;
  inbox_.clear();
  spawn_end();
}

void C2sSession::set_resumable(bool on) {
  resumable_ = on;
  out_.keep_unacked(on);
}

void C2sSession::detach() {
  detached_ = true;
  spdlog::info("c2s #{}: {} detached from its connection", serial_, jid_str_);
  inbox_.clear();
  writing_ = false;
  // Operations of the old connection may still be queued with a pointer to it: it goes once
  // they have run (the loop runs handlers in order, and those were queued when it closed).
  transport_->abandon();
  asio::post(*shard_.io, [t = std::move(transport_)] {});
  notify_drained();
}

void C2sSession::attach(std::unique_ptr<net::Transport> transport) {
  transport_ = std::move(transport);
  detached_ = false;
  peer_addr_ = transport_->peer_address();
  last_read_ms = server_.now_ms();
  ping_sent_ms = 0;
  // The new connection's stream is open already: the parser starts inside one, and nothing of
  // the old stream's bytes is written again.
  parser_.reset();
  continuing_stream_ = true;
  std::string header = "<stream:stream xmlns='jabber:client' xmlns:stream='";
  header += ns::kStream;
  header += "'>";
  feed(header);
  continuing_stream_ = false;
  phase_ = Phase::kBound;
  stream_open_ = true;
  out_.rewind();
  spdlog::info("c2s #{} {}: {} attached; {} stanzas to write again", serial_, peer_addr_, jid_str_,
               out_.unacked());
  transport_->start(*this);
  if (out_.has_unwritten() && !flush_posted_) {
    flush_posted_ = true;
    shard_.defer(shared_from_this());
  }
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
  transport_->read();
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
  if (transport_closed()) throw boost::system::system_error(asio::error::connection_aborted);
  inbox_.clear();
  phase_ = Phase::kTlsHandshake;
  co_await transport_->start_tls();
  parser_.reset();
  phase_ = Phase::kWaitStream;
  stream_open_ = false;
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
  if (continuing_stream_) return;
  // RFC 6120 §4.7: answer with our own header, even when about to send a stream error.
  stream_id_ = xmpp::base64_encode(xmpp::random_bytes(12));
  std::string out = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='";
  out += ns::kStream;
  out += "' id='";
  out += stream_id_;
  out += "' from='";
  xml::escape_attr(server_.config().domain, out);
  out += "' version='1.0' xml:lang='en'>";
  send_stream_level(std::move(out));
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
  const bool secure = this->secure();
  const std::string& tls_unique = transport_->security().tls_unique;
  const Config& cfg = server_.config();
  xml::Element f("features", ns::kStream);
  if (!authenticated()) {
    if (!secure) {
      xml::Element& st = f.add_child("starttls", ns::kTls);
      if (!cfg.allow_plaintext) st.add_child("required", ns::kTls);
    }
    if (secure || cfg.allow_plaintext) {
      xml::Element& mechs = f.add_child("mechanisms", ns::kSasl);
      if (!tls_unique.empty()) {
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
  send_stream_level(std::move(out));
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
  if (el.is("starttls", ns::kTls)) {
    if (secure() || authenticated()) {
      stream_error("policy-violation", "TLS is already negotiated");
      co_return;
    }
    send_stream_level("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
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
  if (!secure() && !cfg.allow_plaintext) {
    send(xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "not-acceptable",
                                "registration requires TLS"));
    co_return;
  }
  xml::Element reply = co_await handle_register_preauth(server_, iq);
  send(reply);
}

awaitable<void> C2sSession::handle_auth(const xml::Element& el) {
  const Config& cfg = server_.config();
  if (!secure() && !cfg.allow_plaintext) {
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
  const std::string& tls_unique = transport_->security().tls_unique;
  if ((mech == "SCRAM-SHA-256" || mech == "SCRAM-SHA-1") && (!plus || !tls_unique.empty())) {
    scram_hash_ = mech == "SCRAM-SHA-1" ? xmpp::ScramHash::kSha1 : xmpp::ScramHash::kSha256;
    scram_ = std::make_unique<xmpp::ScramServer>(scram_hash_);
    scram_->set_channel_binding(!tls_unique.empty(), plus, "tls-unique", tls_unique);
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
    send_stream_level(c);
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
  std::string password = xmpp::saslprep(plain->password).value_or(std::string());
  if (!name.empty() && !password.empty()) {
    // The account from the store's thread; the PBKDF2 derivation (RFC 5802 §3, thousands of
    // HMAC rounds) on the CPU pool, off both the shard and the store's thread, which serves
    // roster and offline reads meanwhile.
    auto op = [name](store::Store& s) { return s.account(name); };
    auto account = co_await server_.db(std::move(op));
    if (account) {
      auto verify = [creds = account->sha256, password] {
        return xmpp::verify_password(xmpp::ScramHash::kSha256, creds, password);
      };
      ok = co_await server_.cpu().run(std::move(verify));
    }
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
  send_stream_level(f);
  if (condition == "not-authorized" && ++sasl_failures_ >= kMaxSaslFailuresPerStream) {
    // RFC 6120 §6.4.5: the server may close the stream after a configurable number of retries.
    stream_error("policy-violation", "too many failed authentication attempts");
  }
}

void C2sSession::sasl_success(std::string_view additional) {
  xml::Element s = sasl_element("success");
  if (!additional.empty()) s.add_text(xmpp::base64_encode(additional));
  send_stream_level(s);
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
  OutQueue::Entry e;
  e.own = std::move(data);
  e.on_written = std::move(on_written);
  if (!on_own_shard()) {
    // From another shard: serialized there, queued here (ARCHITECTURE.md: a post to the shard).
    asio::post(*shard_.io, [self = shared_from_this(), e = std::move(e)]() mutable {
      self->enqueue(std::move(e));
    });
    return;
  }
  enqueue(std::move(e));
}

void C2sSession::send_stream_level(std::string data) {
  OutQueue::Entry e;
  e.own = std::move(data);
  e.stanza = false;
  enqueue(std::move(e));
}

void C2sSession::send_stream_level(const xml::Element& el) {
  send_stream_level(xml::serialize(el, ns::kClient));
}

void C2sSession::send_shared(const std::shared_ptr<const std::string>& head, std::string own,
                             const std::shared_ptr<const std::string>& tail) {
  OutQueue::Entry e;
  e.head = head;
  e.own = std::move(own);
  e.tail = tail;
  if (!on_own_shard()) {
    asio::post(*shard_.io, [self = shared_from_this(), e = std::move(e)]() mutable {
      self->enqueue(std::move(e));
    });
    return;
  }
  enqueue(std::move(e));
}

void C2sSession::enqueue(OutQueue::Entry e) {
  // Stanzas routed here after the stream was closed (a broadcast from another session, posted
  // from another shard) are dropped: nothing may follow </stream:stream>. A detached session
  // keeps them for its next connection.
  if ((transport_closed() && !detached_) || stream_closed_) return;
  if (out_.unwritten_bytes() + e.size() > kMaxQueuedBytes) {
    spdlog::warn("c2s #{} {}: client is not reading; dropping the connection", serial_, peer_addr_);
    closing_ = true;
    clear_outq();
    shutdown_socket();
    return;
  }
  out_.push(std::move(e));
  if (!writing_ && !flush_posted_) {
    // Written once the current event is handled: stanzas queued meanwhile go out in one write.
    flush_posted_ = true;
    shard_.defer(shared_from_this());
  }
}

void C2sSession::clear_outq() {
  out_.clear();
  notify_drained();
}

bool C2sSession::hibernate() {
  if (closing_ || ended_) return false;
  // The TLS 1.3 cipher contexts go whenever the connection is idle, also when the parser slept
  // already (a write since then, such as a ping, made them again).
  const bool keys_slept = transport_ && transport_->hibernate();
  if (!parser_.hibernate()) return keys_slept;
  // The queues' spare capacity goes too: an idle connection keeps no buffer at all.
  if (drained()) out_.release_memory();
  if (inbox_.empty()) std::vector<xml::Element>().swap(inbox_);
  return true;
}

bool C2sSession::drained() const {
  return !writing_ && !flush_posted_ && !out_.has_unwritten() &&
         !(transport_ && transport_->holds_output());
}

awaitable<void> C2sSession::wait_drained() {
  // Woken by notify_drained(); the timeout only bounds a wait nobody would end.
  while (!transport_closed() && !drained()) {
    drain_wait_ = std::make_unique<asio::steady_timer>(*shard_.io, std::chrono::seconds(5));
    boost::system::error_code ec;
    co_await drain_wait_->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    drain_wait_.reset();
  }
}

void C2sSession::notify_drained() {
  if (drain_wait_ && (transport_closed() || drained())) drain_wait_->cancel();
}

void C2sSession::flush() {
  flush_posted_ = false;
  flush_now();
  notify_drained();
}

void C2sSession::flush_now() {
  if (writing_ || transport_closed()) return;
  while (out_.has_unwritten()) {
    // Everything queued (up to kMaxBuffers pieces) in one write: one sendmsg, or one TLS batch.
    std::array<std::string_view, kMaxBuffers> bufs;
    const std::size_t count = out_.gather(bufs);
    const auto r = transport_->write(std::span<const std::string_view>(bufs.data(), count));
    out_.taken(r.taken);
    if (r.status == net::Transport::WriteStatus::kFailed) {
      spdlog::debug("c2s #{}: write failed", serial_);
      clear_outq();
      closing_ = true;
      shutdown_socket();
      return;
    }
    if (r.status == net::Transport::WriteStatus::kBlocked) {
      // The rest (and the callbacks of what the transport holds) once it can go on.
      writing_ = true;
      return;
    }
    out_.run_written();        // may queue more: the loop writes it too
    if (r.taken == 0) return;  // nothing goes out before the TLS handshake is done
  }
  if (closing_) shutdown_socket();
}

void C2sSession::on_writable() {
  writing_ = false;
  if (transport_closed()) {
    notify_drained();
    return;
  }
  out_.run_written();
  flush();
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
    send_stream_level(std::move(out));
    stream_open_ = true;
  }
  send_stream_level(xmpp::stream_error_xml(condition, text));
  stream_closed_ = true;  // nothing may follow </stream:stream>
  closing_ = true;
  closed_at_ms = server_.now_ms();
  inbox_.clear();
  if (detached_) {
    spawn_end();
  } else if (!writing_ && !flush_posted_ && !out_.has_unwritten()) {
    shutdown_socket();
  }
}

void C2sSession::close() {
  if (closing_) return;
  if (!on_own_shard()) {
    asio::post(*shard_.io, [self = shared_from_this()] { self->close(); });
    return;
  }
  if (stream_open_) send_stream_level("</stream:stream>");
  stream_closed_ = true;
  closing_ = true;
  closed_at_ms = server_.now_ms();
  inbox_.clear();
  if (detached_) {
    spawn_end();
  } else if (!writing_ && !flush_posted_ && !out_.has_unwritten()) {
    shutdown_socket();
  }
}

void C2sSession::abort() {
  closing_ = true;
  clear_outq();
  shutdown_socket();
  if (detached_) spawn_end();
}

void C2sSession::shutdown_socket() {
  if (transport_closed()) return;
  transport_->close();
  notify_drained();
}

}  // namespace kabar::server
