#include "xmpp/jingle_rtp.h"

#include <array>
#include <charconv>

#include "xmpp/jingle.h"
#include "xmpp/namespaces.h"

namespace kabar::xmpp::jingle_rtp {
namespace {

template <typename T>
bool parse_uint(std::string_view s, T& out) {
  if (s.empty() || s.size() > 20) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

// An attribute within kMaxAttrBytes, copied out; false when longer.
bool bounded(const xml::Element& e, std::string_view name, std::string& out) {
  std::string_view v = e.attr(name);
  if (v.size() > kMaxAttrBytes) return false;
  out = std::string(v);
  return true;
}

constexpr std::array<std::string_view, 17> kReasons = {"alternative-session",
                                                       "busy",
                                                       "cancel",
                                                       "connectivity-error",
                                                       "decline",
                                                       "expired",
                                                       "failed-application",
                                                       "failed-transport",
                                                       "general-error",
                                                       "gone",
                                                       "incompatible-parameters",
                                                       "media-error",
                                                       "security-error",
                                                       "success",
                                                       "timeout",
                                                       "unsupported-applications",
                                                       "unsupported-transports"};

void parse_reason(const xml::Element& parent, std::string& condition, std::string& text) {
  const xml::Element* r = parent.child("reason", kJingle);
  if (!r) return;
  for (const xml::Element* c : r->children()) {
    if (c->xmlns() != kJingle) continue;
    if (c->name() == "text") {
      text = c->text().substr(0, 1024);
    } else if (condition.empty() && known_reason(c->name())) {
      condition = c->name();
    }
  }
  if (condition.empty()) condition = "general-error";
}

void add_reason(xml::Element& parent, const std::string& condition, const std::string& text) {
  if (condition.empty()) return;
  xml::Element& r = parent.add_child("reason", kJingle);
  r.add_child(known_reason(condition) ? condition : "general-error", kJingle);
  if (!text.empty()) r.add_child("text", kJingle).add_text(text);
}

bool parse_feedback(const xml::Element& parent,
                    std::vector<std::pair<std::string, std::string>>& out) {
  for (const xml::Element* fb : parent.children("rtcp-fb", kRtcpFb)) {
    if (out.size() == kMaxFeedback) break;
    std::string type, subtype;
    if (!bounded(*fb, "type", type) || !bounded(*fb, "subtype", subtype) || type.empty())
      return false;
    out.emplace_back(std::move(type), std::move(subtype));
  }
  return true;
}

void add_feedback(xml::Element& parent,
                  const std::vector<std::pair<std::string, std::string>>& fbs) {
  for (const auto& [type, subtype] : fbs) {
    xml::Element& fb = parent.add_child("rtcp-fb", kRtcpFb);
    fb.set_attr("type", type);
    if (!subtype.empty()) fb.set_attr("subtype", subtype);
  }
}

std::optional<Description> parse_description(const xml::Element& d, std::string& why) {
  Description out;
  if (!bounded(d, "media", out.media) || out.media.empty()) {
    why = "RTP description without a media type";
    return std::nullopt;
  }
  for (const xml::Element* p : d.children("payload-type", kRtp)) {
    if (out.payload_types.size() == kMaxPayloadTypes) break;
    PayloadType pt;
    unsigned id = 0;
    if (!parse_uint(p->attr("id"), id) || id > 127) {
      why = "payload-type with a bad id";
      return std::nullopt;
    }
    pt.id = static_cast<int>(id);
    if (!bounded(*p, "name", pt.name) ||
        (p->has_attr("clockrate") && !parse_uint(p->attr("clockrate"), pt.clockrate))) {
      why = "payload-type with a bad name or clockrate";
      return std::nullopt;
    }
    unsigned channels = 1;
    if (p->has_attr("channels") &&
        (!parse_uint(p->attr("channels"), channels) || channels == 0 || channels > 8)) {
      why = "payload-type with bad channels";
      return std::nullopt;
    }
    pt.channels = static_cast<int>(channels);
    for (const xml::Element* par : p->children("parameter", kRtp)) {
      if (pt.parameters.size() == kMaxParameters) break;
      std::string name, value;
      if (!bounded(*par, "name", name) || !bounded(*par, "value", value) || name.empty()) {
        why = "bad payload-type parameter";
        return std::nullopt;
      }
      pt.parameters.emplace_back(std::move(name), std::move(value));
    }
    if (!parse_feedback(*p, pt.rtcp_fb)) {
      why = "bad rtcp-fb";
      return std::nullopt;
    }
    out.payload_types.push_back(std::move(pt));
  }
  if (!parse_feedback(d, out.rtcp_fb)) {
    why = "bad rtcp-fb";
    return std::nullopt;
  }
  for (const xml::Element* s : d.children("source", kSsma)) {
    if (out.ssrcs.size() == kMaxSources) break;
    std::uint32_t ssrc = 0;
    if (!parse_uint(s->attr("ssrc"), ssrc)) {
      why = "source with a bad ssrc";
      return std::nullopt;
    }
    out.ssrcs.push_back(ssrc);
  }
  out.rtcp_mux = d.child("rtcp-mux", kRtp) != nullptr;
  return out;
}

// A UDP candidate with every attribute XEP-0176 §5 requires (id, generation and network may be
// missing: browsers leave them out); nullopt for TCP and malformed ones.
std::optional<Candidate> parse_candidate(const xml::Element& c) {
  Candidate out;
  if (!bounded(c, "protocol", out.protocol) || out.protocol != "udp") return std::nullopt;
  unsigned component = 0, port = 0, rel_port = 0;
  if (!bounded(c, "foundation", out.foundation) || !bounded(c, "ip", out.ip) ||
      !bounded(c, "type", out.type) || !bounded(c, "rel-addr", out.rel_addr) ||
      !bounded(c, "id", out.id) || out.foundation.empty() || out.ip.empty() || out.type.empty() ||
      !parse_uint(c.attr("component"), component) || component == 0 || component > 256 ||
      !parse_uint(c.attr("port"), port) || port == 0 || port > 65535 ||
      !parse_uint(c.attr("priority"), out.priority)) {
    return std::nullopt;
  }
  // RFC 8445 §5.1.1: the four candidate types; anything else is no candidate we can pair.
  if (out.type != "host" && out.type != "srflx" && out.type != "prflx" && out.type != "relay")
    return std::nullopt;
  out.component = static_cast<int>(component);
  out.port = static_cast<std::uint16_t>(port);
  if (c.has_attr("rel-port")) {
    if (!parse_uint(c.attr("rel-port"), rel_port) || rel_port > 65535) return std::nullopt;
    out.rel_port = static_cast<std::uint16_t>(rel_port);
  }
  unsigned generation = 0, network = 0;
  if (c.has_attr("generation") && parse_uint(c.attr("generation"), generation) &&
      generation < 65536)
    out.generation = static_cast<int>(generation);
  if (c.has_attr("network") && parse_uint(c.attr("network"), network) && network < 65536)
    out.network = static_cast<int>(network);
  return out;
}

bool valid_fingerprint_value(std::string_view v) {
  // Hex pairs separated by ':' (RFC 8122 §5), at least one.
  if (v.empty() || v.size() > kMaxFingerprintBytes || v.size() % 3 != 2) return false;
  for (std::size_t i = 0; i < v.size(); ++i) {
    char c = v[i];
    if (i % 3 == 2) {
      if (c != ':') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
      return false;
    }
  }
  return true;
}

std::optional<Transport> parse_transport(const xml::Element& t, std::string& why) {
  Transport out;
  if (!bounded(t, "ufrag", out.ufrag) || !bounded(t, "pwd", out.pwd)) {
    why = "ICE credentials too long";
    return std::nullopt;
  }
  for (const xml::Element* c : t.children("candidate", kIceUdp)) {
    if (out.candidates.size() == kMaxCandidates) break;
    if (auto cand = parse_candidate(*c)) {
      out.candidates.push_back(std::move(*cand));
    } else {
      ++out.ignored_candidates;
    }
  }
  if (const xml::Element* f = t.child("fingerprint", kDtls)) {
    Fingerprint fp;
    std::string value = f->text();
    // Whitespace around the text is layout, not content.
    auto first = value.find_first_not_of(" \t\r\n");
    auto last = value.find_last_not_of(" \t\r\n");
    value = first == std::string::npos ? std::string() : value.substr(first, last - first + 1);
    if (!bounded(*f, "hash", fp.hash) || !bounded(*f, "setup", fp.setup) || fp.hash.empty() ||
        !valid_fingerprint_value(value) ||
        (!fp.setup.empty() && fp.setup != "actpass" && fp.setup != "active" &&
         fp.setup != "passive" && fp.setup != "holdconn")) {
      why = "bad DTLS fingerprint";
      return std::nullopt;
    }
    fp.value = std::move(value);
    out.fingerprint = std::move(fp);
  }
  return out;
}

void build_description(xml::Element& c, const Description& d) {
  xml::Element& x = c.add_child("description", kRtp);
  x.set_attr("media", d.media);
  for (const PayloadType& pt : d.payload_types) {
    xml::Element& p = x.add_child("payload-type", kRtp);
    p.set_attr("id", std::to_string(pt.id)).set_attr("name", pt.name);
    if (pt.clockrate) p.set_attr("clockrate", std::to_string(pt.clockrate));
    if (pt.channels != 1) p.set_attr("channels", std::to_string(pt.channels));
    for (const auto& [name, value] : pt.parameters)
      p.add_child("parameter", kRtp).set_attr("name", name).set_attr("value", value);
    add_feedback(p, pt.rtcp_fb);
  }
  add_feedback(x, d.rtcp_fb);
  for (std::uint32_t ssrc : d.ssrcs)
    x.add_child("source", kSsma).set_attr("ssrc", std::to_string(ssrc));
  if (d.rtcp_mux) x.add_child("rtcp-mux", kRtp);
}

void build_transport(xml::Element& c, const Transport& t) {
  xml::Element& x = c.add_child("transport", kIceUdp);
  if (!t.ufrag.empty()) x.set_attr("ufrag", t.ufrag);
  if (!t.pwd.empty()) x.set_attr("pwd", t.pwd);
  if (t.fingerprint) {
    xml::Element& f = x.add_child("fingerprint", kDtls);
    f.set_attr("hash", t.fingerprint->hash);
    if (!t.fingerprint->setup.empty()) f.set_attr("setup", t.fingerprint->setup);
    f.add_text(t.fingerprint->value);
  }
  for (const Candidate& cand : t.candidates) {
    xml::Element& e = x.add_child("candidate", kIceUdp);
    e.set_attr("component", std::to_string(cand.component))
        .set_attr("foundation", cand.foundation)
        .set_attr("generation", std::to_string(cand.generation))
        .set_attr("id", cand.id)
        .set_attr("ip", cand.ip)
        .set_attr("network", std::to_string(cand.network))
        .set_attr("port", std::to_string(cand.port))
        .set_attr("priority", std::to_string(cand.priority))
        .set_attr("protocol", cand.protocol)
        .set_attr("type", cand.type);
    if (!cand.rel_addr.empty()) {
      e.set_attr("rel-addr", cand.rel_addr).set_attr("rel-port", std::to_string(cand.rel_port));
    }
  }
}

}  // namespace

bool known_reason(std::string_view condition) {
  for (std::string_view r : kReasons)
    if (r == condition) return true;
  return false;
}

bool is_rtp_initiate(const xml::Element& j) {
  if (!j.is("jingle", kJingle) || j.attr("action") != "session-initiate") return false;
  const xml::Element* c = j.child("content", kJingle);
  return c && c->child("description", kRtp);
}

std::optional<Action> parse(const xml::Element& j, std::string& why) {
  if (!j.is("jingle", kJingle)) {
    why = "not a <jingle/> element";
    return std::nullopt;
  }
  Action a;
  if (!bounded(j, "action", a.action) || a.action.empty() || !jingle::valid_sid(j.attr("sid")) ||
      !bounded(j, "initiator", a.initiator) || !bounded(j, "responder", a.responder)) {
    why = "missing action or bad sid";
    return std::nullopt;
  }
  a.sid = std::string(j.attr("sid"));
  parse_reason(j, a.reason, a.reason_text);
  for (const xml::Element* c : j.children("content", kJingle)) {
    if (a.contents.size() == kMaxContents) break;
    Content content;
    if (c->has_attr("creator")) content.creator = std::string(c->attr("creator"));
    // XEP-0166 §7.3: name and creator are required (a missing creator we take as the
    // initiator's).
    if (!bounded(*c, "name", content.name) || content.name.empty() ||
        (content.creator != "initiator" && content.creator != "responder") ||
        !bounded(*c, "senders", content.senders)) {
      why = "content without a valid name or creator";
      return std::nullopt;
    }
    if (const xml::Element* d = c->child("description", kRtp)) {
      content.description = parse_description(*d, why);
      if (!content.description) return std::nullopt;
    }
    if (const xml::Element* t = c->child("transport", kIceUdp)) {
      content.transport = parse_transport(*t, why);
      if (!content.transport) return std::nullopt;
    }
    a.contents.push_back(std::move(content));
  }
  for (const xml::Element* g : j.children("group", kGrouping)) {
    if (g->attr("semantics") != "BUNDLE") continue;
    for (const xml::Element* c : g->children("content", kGrouping)) {
      if (a.bundle.size() == kMaxContents) break;
      std::string name;
      if (!bounded(*c, "name", name) || name.empty()) {
        why = "bad BUNDLE group";
        return std::nullopt;
      }
      a.bundle.push_back(std::move(name));
    }
    break;
  }
  return a;
}

xml::Element build(const Action& a) {
  xml::Element j("jingle", kJingle);
  j.set_attr("action", a.action).set_attr("sid", a.sid);
  if (!a.initiator.empty()) j.set_attr("initiator", a.initiator);
  if (!a.responder.empty()) j.set_attr("responder", a.responder);
  for (const Content& content : a.contents) {
    xml::Element& c = j.add_child("content", kJingle);
    c.set_attr("creator", content.creator).set_attr("name", content.name);
    if (!content.senders.empty()) c.set_attr("senders", content.senders);
    if (content.description) build_description(c, *content.description);
    if (content.transport) build_transport(c, *content.transport);
  }
  if (!a.bundle.empty()) {
    xml::Element& g = j.add_child("group", kGrouping);
    g.set_attr("semantics", "BUNDLE");
    for (const std::string& name : a.bundle)
      g.add_child("content", kGrouping).set_attr("name", name);
  }
  add_reason(j, a.reason, a.reason_text);
  return j;
}

std::optional<JingleMessage> parse_jmi(const xml::Element& message, std::string& why) {
  why.clear();
  for (const xml::Element* e : message.children()) {
    if (e->xmlns() != kJmi) continue;
    JingleMessage m;
    m.kind = e->name();
    if (m.kind != "propose" && m.kind != "ringing" && m.kind != "proceed" && m.kind != "reject" &&
        m.kind != "retract" && m.kind != "finish") {
      continue;
    }
    if (!jingle::valid_sid(e->attr("id"))) {
      why = "JMI element with a bad id";
      return std::nullopt;
    }
    m.id = std::string(e->attr("id"));
    for (const xml::Element* d : e->children("description", kRtp)) {
      if (m.media.size() == kMaxContents) break;
      std::string media;
      if (!bounded(*d, "media", media) || media.empty()) {
        why = "propose with a description without media";
        return std::nullopt;
      }
      m.media.push_back(std::move(media));
    }
    parse_reason(*e, m.reason, m.reason_text);
    m.tie_break = e->child("tie-break", kJmi) != nullptr;
    return m;
  }
  return std::nullopt;
}

xml::Element build_jmi(const JingleMessage& m, std::string_view to, std::string_view stanza_id) {
  xml::Element msg("message", ns::kClient);
  msg.set_attr("to", to).set_attr("type", "chat");
  if (!stanza_id.empty()) msg.set_attr("id", stanza_id);
  xml::Element& e = msg.add_child(m.kind, kJmi);
  e.set_attr("id", m.id);
  for (const std::string& media : m.media)
    e.add_child("description", kRtp).set_attr("media", media);
  add_reason(e, m.reason, m.reason_text);
  if (m.tie_break) e.add_child("tie-break", kJmi);
  msg.add_child("store", kHints);
  return msg;
}

}  // namespace kabar::xmpp::jingle_rtp
