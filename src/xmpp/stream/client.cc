// The initiating entity's side of stream negotiation (RFC 6120 §4-§7).
#include <algorithm>
#include <utility>

#include "xml/serializer.h"
#include "xmpp/jid.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"
#include "xmpp/stream/negotiator.h"
#include "xmpp/stream/sm_client.h"

namespace kabar::xmpp::stream {

namespace {

std::string stanza_condition(const xml::Element& el) {
  const xml::Element* e = el.child("error");
  if (e == nullptr) return "undefined-condition";
  for (const xml::Element* c : e->children()) {
    if (c->xmlns() == ns::kStanzas && c->name() != "text") return c->name();
  }
  return "undefined-condition";
}

}  // namespace

ClientNegotiator::ClientNegotiator(ClientOptions options) : opt_(std::move(options)) {
  if (auto j = Jid::parse(opt_.jid)) {
    local_ = j->local();
    domain_ = j->domain();
  }
}

std::string ClientNegotiator::random(std::size_t n) const {
  return opt_.random ? opt_.random(n) : random_bytes(n);
}

void ClientNegotiator::send_header() {
  std::string header =
      "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
      "xmlns:stream='http://etherx.jabber.org/streams' to='";
  xml::escape_attr(domain_, header);
  header += "' version='1.0' xml:lang='en'>";
  send(std::move(header));
  state_ = State::kWaitFeatures;
}

void ClientNegotiator::start() {
  if (state_ != State::kIdle || direct_) return;
  send_header();
}

void ClientNegotiator::fail(FailureKind kind, std::string message, std::string condition,
                            std::string text) {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  closed_ = true;
  awaiting_tls_ = false;
  failure_ = kind;
  scram_.reset();
  Event ev{Event::Kind::kClosed};
  ev.failure = kind;
  ev.message = std::move(message);
  ev.condition = std::move(condition);
  ev.text = std::move(text);
  emit(std::move(ev));
}

void ClientNegotiator::stream_opened(const xml::Element& header, std::string_view) {
  if (state_ != State::kWaitFeatures) return;
  if (header.name() != "stream" || header.xmlns() != ns::kStream) {
    fail(FailureKind::kProtocol, "the server did not open an XMPP stream");
  }
}

void ClientNegotiator::element(xml::Element&& el) {
  if (state_ == State::kClosed || state_ == State::kStartTls || state_ == State::kIdle) return;
  if (el.is("error", ns::kStream)) {
    // RFC 6120 §4.9: the stream is over; say which condition and the text, if any.
    const auto [cond, text] = read_stream_error(el);
    fail(FailureKind::kStreamError,
         "stream error from the server: " + cond + (text.empty() ? "" : " (" + text + ")"), cond,
         text);
    return;
  }
  switch (state_) {
    case State::kWaitFeatures:
      if (!el.is("features", ns::kStream)) {
        fail(FailureKind::kProtocol, "expected stream features, got <" + el.name() + "/>");
        return;
      }
      on_features(std::move(el));
      return;
    case State::kWaitProceed:
      // RFC 6120 §5.4.2.2: <failure/> (or anything else) and the server closes the stream.
      if (!el.is("proceed", ns::kTls)) {
        fail(FailureKind::kTls, "the server refused STARTTLS");
        return;
      }
      state_ = State::kStartTls;
      awaiting_tls_ = true;
      emit(Event{Event::Kind::kStartTls});
      return;
    case State::kWaitSasl:
      on_sasl(el);
      return;
    case State::kWaitBind:
    case State::kWaitSession:
      on_bind_result(std::move(el));
      return;
    case State::kWaitResume:
      on_resume_answer(std::move(el));
      return;
    case State::kDone: {
      Event ev{Event::Kind::kStanza};
      ev.element = std::move(el);
      emit(std::move(ev));
      return;
    }
    default:
      return;
  }
}

void ClientNegotiator::on_features(xml::Element&& features) {
  if (!secure_) {
    if (features.child("starttls", ns::kTls) != nullptr) {
      // RFC 6120 §5.4.2.1
      send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
      state_ = State::kWaitProceed;
      return;
    }
    if (!opt_.allow_plaintext) {
      // RFC 6120 §13.8: TLS is mandatory to use unless the user said otherwise.
      fail(FailureKind::kTls,
           "the server does not offer STARTTLS; refusing to continue in the clear");
      return;
    }
  }
  if (!opt_.authenticate) {
    state_ = State::kDone;
    Event ev{Event::Kind::kReady};
    ev.element = std::move(features);
    emit(std::move(ev));
    return;
  }
  if (!authenticated_) {
    choose_mechanism(features);
    return;
  }
  if (!opt_.resume_previd.empty()) {
    // XEP-0198 §5: resume the former session (with the count of stanzas we handled on it)
    // instead of binding; the features are kept for binding if the server refuses.
    if (features.child("sm", kSmNs) != nullptr) {
      std::string r =
          "<resume xmlns='urn:xmpp:sm:3' h='" + std::to_string(opt_.resume_h) + "' previd='";
      xml::escape_attr(opt_.resume_previd, r);
      send(r + "'/>");
      features_ = std::move(features);
      state_ = State::kWaitResume;
      return;
    }
    resume_refused_ = true;
  }
  request_bind(std::move(features));
}

void ClientNegotiator::on_resume_answer(xml::Element&& el) {
  if (el.is("resumed", kSmNs)) {
    state_ = State::kDone;
    bound_ = true;
    features_.reset();
    Event ev{Event::Kind::kBound};
    ev.element = std::move(el);
    emit(std::move(ev));
    return;
  }
  if (el.is("failed", kSmNs)) {
    // §5: the server SHOULD then let the client bind a resource without negotiating again.
    resume_refused_ = true;
    resume_failure_ = std::move(el);
    xml::Element features = std::move(*features_);
    features_.reset();
    request_bind(std::move(features));
    return;
  }
  fail(FailureKind::kProtocol, "expected <resumed/> or <failed/>, got <" + el.name() + "/>");
}

void ClientNegotiator::request_bind(xml::Element&& features) {
  if (features.child("bind", ns::kBind) == nullptr) {
    fail(FailureKind::kProtocol, "the server offers no resource binding");
    return;
  }
  // RFC 6120 §7.5: a request with the resource we would like, or none to get one made up.
  bind_id_ = "bind-" + base64_encode(random(6));
  xml::Element iq("iq", ns::kClient);
  iq.set_attr("type", "set").set_attr("id", bind_id_);
  xml::Element& b = iq.add_child("bind", ns::kBind);
  if (!opt_.resource.empty()) b.add_child("resource", ns::kBind).add_text(opt_.resource);
  send(xml::serialize(iq));
  features_ = std::move(features);
  state_ = State::kWaitBind;
}

void ClientNegotiator::choose_mechanism(const xml::Element& features) {
  const xml::Element* mechs = features.child("mechanisms", ns::kSasl);
  std::vector<std::string> offered;
  if (mechs != nullptr) {
    for (const xml::Element* m : mechs->children("mechanism", ns::kSasl)) {
      offered.push_back(m->text());
    }
  }
  auto has = [&](std::string_view m) {
    return std::find(offered.begin(), offered.end(), m) != offered.end();
  };
  // XEP-0440: when the server lists its channel-binding types, ours must be among them.
  bool cb_usable = !cb_data_.empty();
  if (cb_usable) {
    if (const xml::Element* cbs = features.child("sasl-channel-binding", ns::kSaslCb)) {
      cb_usable = false;
      for (const xml::Element* t : cbs->children("channel-binding", ns::kSaslCb)) {
        if (t->attr("type") == cb_type_) cb_usable = true;
      }
    }
  }
  // RFC 6120 §6.3.3/§6.3.4: the client picks the strongest mechanism it supports among those
  // offered: channel binding first, then SHA-256, SHA-1, and PLAIN last.
  std::string initial;
  bool plus = false;
  std::optional<ScramHash> hash;
  if (cb_usable && has("SCRAM-SHA-256-PLUS")) {
    hash = ScramHash::kSha256;
    plus = true;
  } else if (cb_usable && has("SCRAM-SHA-1-PLUS")) {
    hash = ScramHash::kSha1;
    plus = true;
  } else if (has("SCRAM-SHA-256")) {
    hash = ScramHash::kSha256;
  } else if (has("SCRAM-SHA-1")) {
    hash = ScramHash::kSha1;
  }
  if (hash) {
    mechanism_ = std::string(mechanism_name(*hash)) + (plus ? "-PLUS" : "");
    std::string nonce = base64_encode(random(18));
    scram_.emplace(*hash, local_, opt_.password, std::move(nonce));
    if (plus) {
      scram_->set_channel_binding(cb_type_, cb_data_);
    } else if (!cb_data_.empty() && !has("SCRAM-SHA-256-PLUS") && !has("SCRAM-SHA-1-PLUS")) {
      // RFC 5802 §6: "y": we could bind, the server seems not to; a server that did offer
      // -PLUS (stripped by an attacker) then fails the exchange.
      scram_->set_channel_binding({}, {});
    }
    initial = scram_->client_first();
  } else if (has("PLAIN") && (secure_ || opt_.allow_plaintext)) {
    // RFC 4616; RFC 6120 §13.8.3: only inside TLS unless the clear was allowed.
    mechanism_ = "PLAIN";
    std::string pw = saslprep(opt_.password).value_or(opt_.password);
    initial = std::string("\0", 1) + local_ + std::string("\0", 1) + pw;
  } else {
    fail(FailureKind::kProtocol, "the server offers no SASL mechanism kabar supports");
    return;
  }
  scram_final_sent_ = false;
  send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='" + mechanism_ + "'>" +
       base64_encode(initial) + "</auth>");
  state_ = State::kWaitSasl;
}

void ClientNegotiator::on_sasl(const xml::Element& el) {
  if (el.is("challenge", ns::kSasl)) {
    if (!scram_ || scram_final_sent_) {
      fail(FailureKind::kProtocol, "unexpected SASL challenge");
      return;
    }
    auto decoded = base64_decode(el.text());
    std::optional<std::string> final_msg;
    if (decoded) final_msg = scram_->client_final(*decoded);
    if (!final_msg) {
      fail(FailureKind::kProtocol, "malformed SCRAM challenge from the server");
      return;
    }
    scram_final_sent_ = true;
    send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64_encode(*final_msg) +
         "</response>");
    return;
  }
  if (el.is("success", ns::kSasl)) {
    if (scram_) {
      // RFC 5802 §5: the server proves it knows the password; success without it is not one.
      auto decoded = base64_decode(el.text());
      if (!scram_final_sent_ || !decoded || !scram_->verify_server_final(*decoded)) {
        fail(FailureKind::kAuth,
             "the server could not prove it knows the password (SCRAM server signature wrong)");
        return;
      }
    }
    scram_.reset();
    authenticated_ = true;
    Event ev{Event::Kind::kAuthenticated};
    ev.user = local_;
    emit(std::move(ev));
    // RFC 6120 §6.4.6: both sides restart the stream, with no closing tag.
    emit(Event{Event::Kind::kRestartStream});
    send_header();
    return;
  }
  if (el.is("failure", ns::kSasl)) {
    std::string cond = "not-authorized";
    std::string text;
    for (const xml::Element* c : el.children()) {
      if (c->name() == "text")
        text = c->text();
      else
        cond = c->name();
    }
    if (cond == "not-authorized") {
      fail(FailureKind::kAuth, "wrong password or unknown account " + local_ + "@" + domain_, cond,
           text);
    } else {
      fail(FailureKind::kAuth, "login refused: " + cond + (text.empty() ? "" : " (" + text + ")"),
           cond, text);
    }
    return;
  }
  fail(FailureKind::kProtocol, "unexpected <" + el.name() + "/> during authentication");
}

void ClientNegotiator::on_bind_result(xml::Element&& el) {
  const std::string& want = state_ == State::kWaitBind ? bind_id_ : session_id_;
  if (el.name() != "iq" || el.attr("id") != want ||
      (el.attr("type") != "result" && el.attr("type") != "error")) {
    Event ev{Event::Kind::kStanza};
    ev.element = std::move(el);
    emit(std::move(ev));
    return;
  }
  if (state_ == State::kWaitSession) {
    finish();
    return;
  }
  if (el.attr("type") != "result") {
    // RFC 6120 §7.6.2: conflict, not-allowed, bad-request, resource-constraint.
    std::string cond = stanza_condition(el);
    fail(FailureKind::kProtocol, "resource binding failed: " + cond, cond);
    return;
  }
  const xml::Element* b = el.child("bind", ns::kBind);
  std::string jid = b != nullptr ? b->child_text("jid", ns::kBind) : std::string();
  auto parsed = Jid::parse(jid);
  if (!parsed || parsed->is_bare() || parsed->bare_str() != local_ + "@" + domain_) {
    if (!jid.empty() || opt_.resource.empty()) {
      fail(FailureKind::kProtocol, "the server bound an unusable JID '" + jid + "'");
      return;
    }
    jid = local_ + "@" + domain_ + "/" + opt_.resource;
  }
  bound_jid_ = jid;
  // RFC 3921 §3: the legacy session IQ, only when the server says it is required.
  const xml::Element* sess = features_->child("session", ns::kSession);
  if (sess != nullptr && sess->child("optional") == nullptr) {
    session_id_ = "sess-" + base64_encode(random(6));
    xml::Element s("iq", ns::kClient);
    s.set_attr("type", "set").set_attr("id", session_id_);
    s.add_child("session", ns::kSession);
    send(xml::serialize(s));
    state_ = State::kWaitSession;
    return;
  }
  finish();
}

void ClientNegotiator::finish() {
  state_ = State::kDone;
  bound_ = true;
  Event ev{Event::Kind::kBound};
  ev.jid = bound_jid_;
  ev.element = std::move(features_);
  features_.reset();
  emit(std::move(ev));
}

void ClientNegotiator::stream_closed() {
  if (state_ == State::kClosed) return;
  if (state_ == State::kDone) {
    state_ = State::kClosed;
    closed_ = true;
    emit(Event{Event::Kind::kClosed});
    return;
  }
  fail(FailureKind::kClosed, "the server closed the stream");
}

void ClientNegotiator::parse_error(xml::ParseError, std::string_view) {
  fail(FailureKind::kClosed, "the server sent malformed XML");
}

void ClientNegotiator::tls_established(std::string_view cb_type, std::string_view cb_data) {
  if (state_ == State::kIdle && !secure_) {
    direct_ = true;  // RFC 7590 direct TLS: the stream starts inside it
  } else if (state_ != State::kStartTls) {
    return;
  } else {
    emit(Event{Event::Kind::kRestartStream});
  }
  secure_ = true;
  awaiting_tls_ = false;
  cb_type_ = std::string(cb_type);
  cb_data_ = cb_type_.empty() ? std::string() : std::string(cb_data);
  send_header();
}

}  // namespace kabar::xmpp::stream
