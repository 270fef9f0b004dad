#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>

#include "apps/kabar-bench/bench.h"
#include "xmpp/scram.h"

namespace kabar::bench {

bool Bench::on_piece(int slot, Piece kind, std::string_view el) {
  Conn& c = conns_[slot];
  if (kind == Piece::kStreamOpen) return true;
  if (kind == Piece::kStreamClose) {
    if (c.st != St::kClosing) error("stream closed by server");
    close_conn(slot);
    return false;
  }
  std::string_view name = local_name(el);
  if (c.sm_on && (name == "message" || name == "presence" || name == "iq")) ++c.sm_in;
  if (name == "message") {
    on_message(slot, el);
  } else if (name == "presence") {
    on_presence(slot, el);
  } else if (name == "iq") {
    on_iq(slot, el);
  } else if (name == "features") {
    on_features(slot, el);
  } else if (name == "proceed" && c.st == St::kStartTls) {
    c.ssl = SSL_new(ssl_ctx_);
    SSL_set_fd(c.ssl, c.fd);
    SSL_set_tlsext_host_name(c.ssl, o_.domain.c_str());
    c.st = St::kTlsHandshake;
    tls_handshake(slot);
  } else if (name == "challenge" && c.st == St::kAuth && c.scram) {
    // The challenge text is the element's own content.
    std::size_t gt = el.find('>');
    std::size_t lt = el.rfind('<');
    auto server_first = xmpp::base64_decode(el.substr(gt + 1, lt > gt ? lt - gt - 1 : 0));
    if (!server_first) {
      error("sasl: bad challenge");
      close_conn(slot);
      return false;
    }
    ScramState& s = *c.scram;
    std::string_view sf = *server_first;
    std::string r, salt_b64;
    int iterations = 0;
    for (std::size_t at = 0; at < sf.size();) {
      std::size_t comma = sf.find(',', at);
      std::string_view kv = sf.substr(at, comma == std::string_view::npos ? sf.npos : comma - at);
      if (kv.size() > 2 && kv[1] == '=') {
        if (kv[0] == 'r') r = kv.substr(2);
        if (kv[0] == 's') salt_b64 = kv.substr(2);
        if (kv[0] == 'i') iterations = std::atoi(std::string(kv.substr(2)).c_str());
      }
      if (comma == std::string_view::npos) break;
      at = comma + 1;
    }
    auto salt = xmpp::base64_decode(salt_b64);
    if (r.compare(0, s.nonce.size(), s.nonce) != 0 || !salt || iterations <= 0) {
      error("sasl: bad server-first");
      close_conn(slot);
      return false;
    }
    const ScramKeys& k = scram_cache_.keys(s.sha256, o_.password, *salt, iterations);
    std::string without_proof = "c=biws,r=" + r;
    std::string auth_msg = s.client_first_bare + "," + std::string(sf) + "," + without_proof;
    std::string sig = hmac(s.sha256, k.stored_key, auth_msg);
    std::string proof = k.client_key;
    for (std::size_t i = 0; i < proof.size(); ++i) proof[i] ^= sig[i];
    s.server_signature = hmac(s.sha256, k.server_key, auth_msg);
    std::string final_msg = without_proof + ",p=" + xmpp::base64_encode(proof);
    send(slot, "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" +
                   xmpp::base64_encode(final_msg) + "</response>");
  } else if (name == "success" && c.st == St::kAuth) {
    if (c.scram) {
      std::size_t gt = el.find('>');
      std::size_t lt = el.rfind('<');
      bool has_text = el[gt - 1] != '/' && lt > gt + 1;
      auto final_msg = has_text ? xmpp::base64_decode(el.substr(gt + 1, lt - gt - 1))
                                : std::optional<std::string>();
      if (!final_msg || *final_msg != "v=" + xmpp::base64_encode(c.scram->server_signature)) {
        error("sasl: server signature mismatch");
        close_conn(slot);
        return false;
      }
      c.scram.reset();
    }
    c.authed = true;
    start_stream(slot);  // RFC 6120 §6.4.6: restart; the scanner level is back to 0
  } else if (name == "r" && c.sm_on && c.st != St::kClosing) {
    // XEP-0198 §4: answered at once with the count of stanzas received.
    ++sm_requests_;
    send(slot, "<a xmlns='urn:xmpp:sm:3' h='" + std::to_string(c.sm_in) + "'/>");
  } else if (name == "a" && c.sm_on) {
    ++sm_acks_;
  } else if (name == "enabled") {
    c.sm_on = true;
  } else if (name == "failed") {
    error("sm: " + std::string(el.substr(0, 200)));
  } else if (name == "failure") {
    error("sasl failure: " + std::string(el.substr(0, 160)));
    close_conn(slot);
    return false;
  } else if (name == "error") {
    error("stream error: " + std::string(el.substr(0, 200)));
    close_conn(slot);
    return false;
  }
  return true;
}

void Bench::on_features(int slot, std::string_view el) {
  Conn& c = conns_[slot];
  if (c.st != St::kStream) return;
  if (!c.authed) {
    if (o_.tls == "starttls" && !c.tls_active) {
      c.st = St::kStartTls;
      send(slot, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
      return;
    }
    if (o_.mode == "register") {
      c.st = St::kRegister;
      send(slot, "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>" +
                     o_.prefix + std::to_string(o_.first + c.user) + "</username><password>" +
                     o_.password + "</password></query></iq>");
      return;
    }
    bool has256 = el.find(">SCRAM-SHA-256<") != std::string_view::npos;
    bool has1 = el.find(">SCRAM-SHA-1<") != std::string_view::npos;
    bool plain = el.find(">PLAIN<") != std::string_view::npos;
    std::string mech;
    if (o_.mech == "auto")
      mech = has256 ? "SCRAM-SHA-256" : has1 ? "SCRAM-SHA-1" : "PLAIN";
    else if (o_.mech == "plain")
      mech = "PLAIN";
    else if (o_.mech == "scram-sha-1")
      mech = "SCRAM-SHA-1";
    else
      mech = "SCRAM-SHA-256";
    if ((mech == "PLAIN" && !plain) || (mech == "SCRAM-SHA-1" && !has1) ||
        (mech == "SCRAM-SHA-256" && !has256)) {
      error("mechanism not offered: " + mech);
      close_conn(slot);
      return;
    }
    std::string user = o_.prefix + std::to_string(o_.first + c.user);
    std::string payload;
    if (mech == "PLAIN") {
      payload = std::string(1, '\0') + user + std::string(1, '\0') + o_.password;
    } else {
      c.scram = std::make_unique<ScramState>();
      c.scram->sha256 = mech == "SCRAM-SHA-256";
      c.scram->nonce = xmpp::base64_encode(xmpp::random_bytes(12));
      c.scram->client_first_bare = "n=" + user + ",r=" + c.scram->nonce;
      payload = "n,," + c.scram->client_first_bare;
    }
    c.st = St::kAuth;
    send(slot, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='" + mech + "'>" +
                   xmpp::base64_encode(payload) + "</auth>");
    return;
  }
  c.st = St::kBind;
  // A resource name never used before (run id and login count): a login never waits for the
  // server to retire an older session of the same resource (RFC 6120 §7.7.2.2).
  send(slot, "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r" +
                 std::to_string(c.resource) + "-" + std::to_string(run_id_) + "-" +
                 std::to_string(++bind_count_) + "</resource></bind></iq>");
  c.session_required = el.find("urn:ietf:params:xml:ns:xmpp-session") != std::string_view::npos &&
                       el.find("<optional") == std::string_view::npos;
}

void Bench::went_online(int slot) {
  Conn& c = conns_[slot];
  c.st = St::kOnline;
  c.counted_online = true;
  --in_flight_;
  ++online_;
  ++logins_done_;
  if (login_lat_on_) login_lat_.add((now_ns() - c.t_start) / 1000);
  if (online_by_user_.size() > c.user && online_by_user_[c.user] < 0)
    online_by_user_[c.user] = slot;
}

void Bench::on_iq(int slot, std::string_view el) {
  Conn& c = conns_[slot];
  std::string_view type = attribute(el, "type");
  std::string_view id = attribute(el, "id");
  if (type == "get" || type == "set") {
    // Roster pushes and pings: answer every request (RFC 6120 §8.2.3).
    std::string from(attribute(el, "from"));
    send(slot, "<iq type='result' id='" + std::string(id) + "'" +
                   (from.empty() ? std::string() : " to='" + from + "'") + "/>");
    return;
  }
  if (type == "error") {
    if (c.st == St::kRegister && el.find("conflict") != std::string_view::npos) {
      ++registered_;  // exists already: fine for a benchmark
      c.st = St::kClosing;
      --in_flight_;
      send(slot, "</stream:stream>");
      return;
    }
    error("iq error (" + std::string(id) + "): " + std::string(el.substr(0, 200)));
    close_conn(slot);
    return;
  }
  if (c.st == St::kRegister && id == "reg") {
    ++registered_;
    c.st = St::kClosing;
    --in_flight_;
    send(slot, "</stream:stream>");
  } else if (c.st == St::kBind && id == "b") {
    // XEP-0198 §3: after binding, with resumption, as mobile clients ask for it.
    if (o_.sm) send(slot, "<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    if (c.session_required) {
      c.st = St::kSession;
      send(slot,
           "<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
      return;
    }
    if (o_.mode == "logins") {
      went_online(slot);
      c.st = St::kClosing;
      send(slot, "</stream:stream>");
      return;
    }
    if (!o_.presence) {
      went_online(slot);
      return;
    }
    c.st = St::kRoster;
    send(slot, "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>");
  } else if (c.st == St::kSession && id == "s") {
    c.st = St::kRoster;
    send(slot, "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>");
  } else if (c.st == St::kRoster && id == "r") {
    send(slot, "<presence/>");
    went_online(slot);
  }
}

void Bench::on_message(int slot, std::string_view el) {
  if (attribute(el, "type") == "error") {
    error("message error: " + std::string(el.substr(0, 200)));
    return;
  }
  std::string_view body = child_text(el, "body");
  if (body.size() < 2 || body[0] != 't') {
    ++msgs_rx_unmatched_;
    return;
  }
  std::int64_t sent = 0;
  std::from_chars(body.data() + 1, body.data() + body.size(), sent);
  std::int64_t now = now_ns();
  ++msgs_rx_;
  for (Step& s : steps_) {
    if (sent >= s.t0 && sent < s.t1) {
      ++s.delivered;
      s.lat.add((now - sent) / 1000);
      break;
    }
  }
}

void Bench::on_presence(int slot, std::string_view el) {
  std::string_view type = attribute(el, "type");
  if (type.empty() || type == "unavailable") {
    ++presence_rx_;
  } else if (type == "subscribe") {
    std::string from(attribute(el, "from"));
    send(slot, "<presence type='subscribed' to='" + from + "'/>");
  } else if (type == "subscribed") {
    ++subscribed_;
  } else if (type == "error") {
    error("presence error: " + std::string(el.substr(0, 200)));
  }
}

}  // namespace kabar::bench
