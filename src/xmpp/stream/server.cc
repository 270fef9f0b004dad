// The receiving entity's side of stream negotiation (RFC 6120 §4-§7).
#include <utility>

#include "xml/serializer.h"
#include "xmpp/jid.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"
#include "xmpp/stream/negotiator.h"

namespace kabar::xmpp::stream {

namespace {

constexpr std::string_view kTooMany = "too many failed attempts; try again later";

std::string sasl_element(std::string_view name, std::string_view base64 = {}) {
  std::string out = "<";
  out += name;
  out += " xmlns='";
  out += ns::kSasl;
  if (base64.empty()) {
    out += "'/>";
    return out;
  }
  out += "'>";
  out += base64;
  out += "</";
  out += name;
  out += ">";
  return out;
}

}  // namespace

ServerNegotiator::ServerNegotiator(ServerOptions options) : opt_(std::move(options)) {}

std::string ServerNegotiator::random(std::size_t n) const {
  return opt_.random ? opt_.random(n) : random_bytes(n);
}

void ServerNegotiator::send_header() {
  // RFC 6120 §4.7.3: a fresh id for every stream, unpredictable.
  stream_id_ = base64_encode(random(12));
  std::string out = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='";
  out += ns::kStream;
  out += "' id='";
  out += stream_id_;
  out += "' from='";
  xml::escape_attr(opt_.domain, out);
  out += "' version='1.0' xml:lang='en'>";
  send(std::move(out));
  stream_open_ = true;
}

void ServerNegotiator::stream_error(std::string_view condition, std::string_view text) {
  if (state_ == State::kClosed) return;
  if (!stream_open_) {
    // RFC 6120 §4.9.1.1: an error before our header still opens the stream first.
    std::string out = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='";
    out += ns::kStream;
    out += "' version='1.0' from='";
    xml::escape_attr(opt_.domain, out);
    out += "'>";
    send(std::move(out));
    stream_open_ = true;
  }
  send(stream_error_xml(condition, text));
  state_ = State::kClosed;
  closed_ = true;
  awaiting_tls_ = false;
  backlog_.clear();
  scram_.reset();
  Event ev{Event::Kind::kClosed};
  ev.condition = std::string(condition);
  ev.text = std::string(text);
  emit(std::move(ev));
}

void ServerNegotiator::stream_opened(const xml::Element& header, std::string_view default_xmlns) {
  if (state_ != State::kWaitHeader) return;
  // RFC 6120 §4.7: answer with our own header, even when about to send a stream error.
  send_header();
  if (header.name() != "stream" || header.xmlns() != ns::kStream) {
    stream_error("invalid-namespace");  // RFC 6120 §4.9.3.10
    return;
  }
  if (default_xmlns != ns::kClient) {
    stream_error("invalid-namespace", "only jabber:client streams are served here");
    return;
  }
  // RFC 6120 §4.7.2: 'to' names the service; §4.9.3.6 host-unknown otherwise.
  auto to_jid = Jid::parse(header.attr("to"));
  if (!to_jid || to_jid->domain() != opt_.domain || !to_jid->is_domain()) {
    stream_error("host-unknown");
    return;
  }
  // RFC 6120 §4.7.5: no version, or a major version below 1, is not this protocol.
  std::string_view version = header.attr("version");
  if (version.empty() || version[0] < '1') {
    stream_error("unsupported-version");
    return;
  }
  state_ = State::kNegotiating;
  send_features();
}

void ServerNegotiator::send_features() {
  xml::Element f("features", ns::kStream);
  if (!authenticated()) {
    if (!secure_ && opt_.tls_available) {
      // RFC 6120 §5.3.1: mandatory-to-negotiate unless the clear is allowed.
      xml::Element& st = f.add_child("starttls", ns::kTls);
      if (!opt_.allow_plaintext) st.add_child("required", ns::kTls);
    }
    if (secure_ || opt_.allow_plaintext) {
      xml::Element& mechs = f.add_child("mechanisms", ns::kSasl);
      // RFC 6120 §6.3.3: ordered by preference, strongest first; -PLUS only when this
      // connection has channel-binding data (RFC 5802 §6).
      if (!cb_data_.empty()) {
        mechs.add_child("mechanism", ns::kSasl).add_text("SCRAM-SHA-256-PLUS");
        mechs.add_child("mechanism", ns::kSasl).add_text("SCRAM-SHA-1-PLUS");
        // XEP-0440: which channel-binding type the -PLUS mechanisms use here.
        f.add_child("sasl-channel-binding", ns::kSaslCb)
            .add_child("channel-binding", ns::kSaslCb)
            .set_attr("type", cb_type_);
      }
      mechs.add_child("mechanism", ns::kSasl).add_text("SCRAM-SHA-256");
      mechs.add_child("mechanism", ns::kSasl).add_text("SCRAM-SHA-1");
      mechs.add_child("mechanism", ns::kSasl).add_text("PLAIN");
      if (opt_.allow_registration) f.add_child("register", ns::kRegisterFeature);
    }
  } else {
    f.add_child("bind", ns::kBind);
    for (const xml::Element& extra : opt_.bound_features) f.add_child(extra);
  }
  // The features element is in the stream namespace: written with the "stream:" prefix.
  std::string body = xml::serialize(f, ns::kStream);
  std::string out = "<stream:features>";
  const std::size_t start = body.find('>');
  if (body[start - 1] != '/') {
    constexpr std::string_view kEnd = "</features>";
    out.append(body, start + 1, body.size() - (start + 1) - kEnd.size());
  }
  out += "</stream:features>";
  send(std::move(out));
}

void ServerNegotiator::element(xml::Element&& el) {
  switch (state_) {
    case State::kWaitHeader:  // left over from the stream before a restart
    case State::kStartTls:    // RFC 6120 §5.3.3: nothing read in the clear after <starttls/>
    case State::kClosed:
      return;
    case State::kWaitScram:
    case State::kWaitPlain:
    case State::kWaitBind:
      backlog_.push_back(std::move(el));
      return;
    case State::kBound: {
      Event ev{Event::Kind::kStanza};
      ev.element = std::move(el);
      emit(std::move(ev));
      return;
    }
    case State::kNegotiating:
      process(std::move(el));
      return;
  }
}

void ServerNegotiator::drain_backlog() {
  while (!backlog_.empty() && state_ == State::kNegotiating) {
    xml::Element el = std::move(backlog_.front());
    backlog_.pop_front();
    process(std::move(el));
  }
  if (state_ == State::kBound) {
    // Stanzas sent right behind the bind request are the caller's now, in order.
    while (!backlog_.empty()) {
      Event ev{Event::Kind::kStanza};
      ev.element = std::move(backlog_.front());
      backlog_.pop_front();
      emit(std::move(ev));
    }
  }
  if (state_ == State::kWaitHeader || state_ == State::kStartTls || state_ == State::kClosed) {
    backlog_.clear();
  }
}

void ServerNegotiator::process(xml::Element&& el) {
  if (el.is("starttls", ns::kTls)) {
    if (secure_ || authenticated()) {
      stream_error("policy-violation", "TLS is already negotiated");
      return;
    }
    if (!opt_.tls_available) {
      stream_error("policy-violation", "STARTTLS is not offered here");
      return;
    }
    send("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    state_ = State::kStartTls;
    awaiting_tls_ = true;
    backlog_.clear();
    emit(Event{Event::Kind::kStartTls});
    return;
  }
  if (el.xmlns() == ns::kSasl) {
    if (authenticated()) {
      stream_error("policy-violation", "already authenticated");
    } else if (el.name() == "auth") {
      handle_auth(el);
    } else if (el.name() == "response") {
      handle_response(el);
    } else if (el.name() == "abort") {
      // RFC 6120 §6.4.4
      scram_.reset();
      sasl_failure("aborted");
    } else {
      stream_error("unsupported-stanza-type");
    }
    return;
  }
  if (el.is("iq", ns::kClient)) {
    if (authenticated()) {
      if (el.child("bind", ns::kBind) != nullptr && el.attr("type") == "set") {
        handle_bind(el);
        return;
      }
    } else if (el.child("query", ns::kRegister) != nullptr) {
      Event ev{Event::Kind::kStanza};
      ev.element = std::move(el);
      emit(std::move(ev));
      return;
    }
  }
  // RFC 6120 §6.4.1/§7.1: nothing but negotiation before authentication and binding.
  stream_error("not-authorized");
}

void ServerNegotiator::handle_auth(const xml::Element& el) {
  // RFC 6120 §6.4.1 (and §5.3.1): SASL in the clear only where the clear is allowed.
  if (!secure_ && !opt_.allow_plaintext) {
    sasl_failure("encryption-required");
    return;
  }
  scram_.reset();
  std::string_view mech = el.attr("mechanism");
  std::string payload;
  std::string text = el.text();
  // RFC 6120 §6.4.2: "=" is an empty initial response.
  if (!text.empty() && text != "=") {
    auto decoded = base64_decode(text);
    if (!decoded) {
      sasl_failure("incorrect-encoding");  // RFC 6120 §6.5.2
      return;
    }
    payload = std::move(*decoded);
  }
  if (mech == "PLAIN") {
    handle_plain(payload);
    return;
  }
  const bool plus = mech.ends_with("-PLUS");
  if (plus) mech.remove_suffix(5);
  if ((mech != "SCRAM-SHA-256" && mech != "SCRAM-SHA-1") || (plus && cb_data_.empty())) {
    sasl_failure("invalid-mechanism");  // RFC 6120 §6.5.5: not one we offered
    return;
  }
  const ScramHash hash = mech == "SCRAM-SHA-1" ? ScramHash::kSha1 : ScramHash::kSha256;
  scram_.emplace(hash);
  // Injected randomness reaches the server nonce too (RFC 5802 §5.1: fresh per exchange).
  if (opt_.random) scram_->set_server_nonce_for_test(base64_encode(opt_.random(18)));
  scram_->set_channel_binding(!cb_data_.empty(), plus, cb_type_, cb_data_);
  SaslFailure failure = SaslFailure::kNone;
  auto user = scram_->client_first(payload, failure);
  if (!user) {
    scram_.reset();
    sasl_failure(failure == SaslFailure::kNone ? "malformed-request" : failure_name(failure));
    return;
  }
  auto prepared = nodeprep(*user);
  sasl_user_ = prepared ? *prepared : std::string();
  if (!scram_->authzid().empty()) {
    // RFC 6120 §6.3.8: an authzid other than the account's own bare JID is not allowed here.
    auto az = Jid::parse(scram_->authzid());
    if (!az || az->bare_str() != sasl_user_ + "@" + opt_.domain) {
      scram_.reset();
      sasl_failure("invalid-authzid");
      return;
    }
  }
  state_ = State::kWaitScram;
  Event ev{Event::Kind::kNeedScramCredentials};
  ev.user = sasl_user_;
  ev.hash = hash;
  emit(std::move(ev));
}

void ServerNegotiator::scram_credentials(std::optional<ScramCredentials> creds) {
  if (state_ != State::kWaitScram) return;
  state_ = State::kNegotiating;
  if (sasl_user_.empty()) creds.reset();
  std::string challenge = scram_->server_first(creds);
  send(sasl_element("challenge", base64_encode(challenge)));
  drain_backlog();
}

void ServerNegotiator::handle_response(const xml::Element& el) {
  if (!scram_) {
    sasl_failure("malformed-request");
    return;
  }
  auto decoded = base64_decode(el.text());
  if (!decoded) {
    scram_.reset();
    sasl_failure("incorrect-encoding");
    return;
  }
  SaslFailure failure = SaslFailure::kNone;
  auto final_msg = scram_->client_final(*decoded, failure);
  scram_.reset();
  if (!final_msg || sasl_user_.empty()) {
    std::string_view condition =
        failure == SaslFailure::kNone ? "not-authorized" : failure_name(failure);
    Event ev{Event::Kind::kAuthFailed};
    ev.user = sasl_user_;
    ev.condition = std::string(condition);
    emit(std::move(ev));
    sasl_failure(condition);
    return;
  }
  user_ = sasl_user_;
  sasl_success(*final_msg);
}

void ServerNegotiator::handle_plain(const std::string& payload) {
  auto plain = parse_plain(payload);
  if (!plain) {
    sasl_failure("malformed-request");
    return;
  }
  auto user = nodeprep(plain->authcid);
  sasl_user_ = user ? *user : std::string();
  if (!plain->authzid.empty()) {
    auto az = Jid::parse(plain->authzid);
    if (!az || az->bare_str() != sasl_user_ + "@" + opt_.domain) {
      sasl_failure("invalid-authzid");
      return;
    }
  }
  state_ = State::kWaitPlain;
  Event ev{Event::Kind::kVerifyPlain};
  ev.user = sasl_user_;
  // RFC 4616 §2 and RFC 5802 §2.2: the password is compared as SASLprep prepares it.
  ev.password = saslprep(plain->password).value_or(std::string());
  emit(std::move(ev));
}

void ServerNegotiator::plain_result(bool ok) {
  if (state_ != State::kWaitPlain) return;
  state_ = State::kNegotiating;
  if (!ok || sasl_user_.empty()) {
    Event ev{Event::Kind::kAuthFailed};
    ev.user = sasl_user_;
    ev.condition = "not-authorized";
    emit(std::move(ev));
    sasl_failure("not-authorized");
  } else {
    user_ = sasl_user_;
    sasl_success({});
  }
  drain_backlog();
}

void ServerNegotiator::refuse_auth(std::string_view condition, std::string_view text) {
  if (state_ != State::kWaitScram && state_ != State::kWaitPlain) return;
  state_ = State::kNegotiating;
  scram_.reset();
  sasl_failure(condition, text.empty() && condition == "temporary-auth-failure" ? kTooMany : text);
  drain_backlog();
}

void ServerNegotiator::sasl_failure(std::string_view condition, std::string_view text) {
  std::string out = "<failure xmlns='";
  out += ns::kSasl;
  out += "'><";
  out += condition;
  out += "/>";
  if (!text.empty()) {
    out += "<text>";
    xml::escape_text(text, out);
    out += "</text>";
  }
  out += "</failure>";
  send(std::move(out));
  // RFC 6120 §6.4.5: the server may close the stream after a configurable number of retries.
  if (condition == "not-authorized" && ++auth_failures_ >= opt_.max_auth_failures) {
    stream_error("policy-violation", "too many failed authentication attempts");
  }
}

void ServerNegotiator::sasl_success(std::string_view additional) {
  // RFC 6120 §6.4.6: additional data with success is sent as the element's content.
  send(sasl_element("success", additional.empty() ? std::string() : base64_encode(additional)));
  Event ev{Event::Kind::kAuthenticated};
  ev.user = user_;
  emit(std::move(ev));
  // RFC 6120 §6.4.6: a new stream follows, without closing this one. Until its header is
  // answered, a stream error needs a header of its own (§4.9.1.1).
  state_ = State::kWaitHeader;
  stream_open_ = false;
  backlog_.clear();
  emit(Event{Event::Kind::kRestartStream});
}

void ServerNegotiator::handle_bind(const xml::Element& iq) {
  const xml::Element* bind = iq.child("bind", ns::kBind);
  std::string requested = bind->child_text("resource", ns::kBind);
  std::string resource;
  if (!requested.empty()) {
    auto prepped = resourceprep(requested);
    if (!prepped) {
      // RFC 6120 §7.7.2.1
      send(xml::serialize(make_error_reply(iq, ErrorType::kModify, "bad-request")));
      return;
    }
    resource = *prepped;
  } else {
    // RFC 6120 §7.6: the server generates a resource, unique and not guessable.
    resource = "kabar-" + base64_encode(random(6));
    for (char& c : resource) {
      if (c == '/' || c == '+') c = 'x';
    }
  }
  auto jid = Jid::from_parts(user_, opt_.domain, resource);
  if (!jid) {
    send(xml::serialize(make_error_reply(iq, ErrorType::kModify, "bad-request")));
    return;
  }
  bind_jid_ = jid->str();
  bind_iq_ = iq;
  state_ = State::kWaitBind;
  Event ev{Event::Kind::kBindRequest};
  ev.jid = bind_jid_;
  emit(std::move(ev));
}

void ServerNegotiator::bind_accepted() {
  if (state_ != State::kWaitBind) return;
  xml::Element reply = make_iq_result(*bind_iq_);
  reply.remove_attr("from");
  reply.remove_attr("to");
  reply.add_child("bind", ns::kBind).add_child("jid", ns::kBind).add_text(bind_jid_);
  send(xml::serialize(reply));
  bind_iq_.reset();
  state_ = State::kBound;
  bound_ = true;
  Event ev{Event::Kind::kBound};
  ev.jid = bind_jid_;
  emit(std::move(ev));
  drain_backlog();
}

void ServerNegotiator::bind_refused(std::string_view condition, std::string_view text) {
  if (state_ != State::kWaitBind) return;
  // RFC 6120 §7.6.2, §7.7.2.2: the client may retry (another resource, or the server's).
  send(xml::serialize(make_error_reply(*bind_iq_, ErrorType::kCancel, condition, text)));
  bind_iq_.reset();
  state_ = State::kNegotiating;
  drain_backlog();
}

void ServerNegotiator::stream_closed() {
  if (state_ == State::kClosed) return;
  // RFC 6120 §4.4: answer the close with our own.
  if (stream_open_) send("</stream:stream>");
  state_ = State::kClosed;
  closed_ = true;
  awaiting_tls_ = false;
  backlog_.clear();
  emit(Event{Event::Kind::kClosed});
}

void ServerNegotiator::parse_error(xml::ParseError error, std::string_view message) {
  switch (error) {
    case xml::ParseError::kRestrictedXml:
      stream_error("restricted-xml");
      break;
    case xml::ParseError::kPolicyViolation:
      stream_error("policy-violation", message);
      break;
    default:
      stream_error("not-well-formed");
  }
}

void ServerNegotiator::tls_established(std::string_view cb_type, std::string_view cb_data) {
  // Direct TLS before the stream starts, or the handshake kStartTls asked for.
  if (state_ == State::kStartTls) {
    state_ = State::kWaitHeader;
    stream_open_ = false;
    emit(Event{Event::Kind::kRestartStream});
  } else if (state_ != State::kWaitHeader || stream_open_ || secure_ || authenticated()) {
    return;
  }
  secure_ = true;
  awaiting_tls_ = false;
  cb_type_ = std::string(cb_type);
  cb_data_ = cb_type_.empty() ? std::string() : std::string(cb_data);
}

}  // namespace kabar::xmpp::stream
