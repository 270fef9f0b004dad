#include "xmpp/jingle.h"

#include <openssl/sha.h>

#include <algorithm>
#include <charconv>

#include "xml/chars.h"
#include "xmpp/hex.h"
#include "xmpp/scram.h"

namespace kabar::xmpp::jingle {
namespace {

template <typename T>
bool parse_uint(std::string_view s, T& out) {
  if (s.empty() || s.size() > 20) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

std::optional<File> parse_file(const xml::Element& desc, std::string& why) {
  const xml::Element* f = desc.child("file", kFileTransfer);
  if (!f) {
    why = "no <file/> in the description";
    return std::nullopt;
  }
  File out;
  out.name = f->child_text("name", kFileTransfer);
  if (out.name.size() > 4096) {
    why = "file name too long";
    return std::nullopt;
  }
  std::string size = f->child_text("size", kFileTransfer);
  if (!size.empty() && !parse_uint(size, out.size)) {
    why = "bad file size";
    return std::nullopt;
  }
  out.media_type = f->child_text("media-type", kFileTransfer);
  for (const xml::Element* h : f->children("hash", kHashes)) {
    if (h->attr("algo") != "sha-256") continue;
    auto raw = base64_decode(h->text());
    if (!raw || raw->size() != 32) {
      why = "bad sha-256 hash";
      return std::nullopt;
    }
    out.sha256 = *raw;
  }
  if (const xml::Element* r = f->child("range", kFileTransfer)) {
    std::uint64_t off = 0;
    std::string_view o = r->attr("offset");
    if (!o.empty() && !parse_uint(o, off)) {
      why = "bad range offset";
      return std::nullopt;
    }
    out.range_offset = off;
  }
  return out;
}

bool parse_transport(const xml::Element& t, Transport& out, std::string& why) {
  out.sid = std::string(t.attr("sid"));
  if (out.sid.size() > kMaxSidBytes) {
    why = "transport sid too long";
    return false;
  }
  if (t.xmlns() == kIbbTransport) {
    out.kind = Transport::Kind::kIbb;
    std::uint32_t bs = 4096;
    if (t.has_attr("block-size") && (!parse_uint(t.attr("block-size"), bs) || bs == 0)) {
      why = "bad block-size";
      return false;
    }
    out.block_size = std::min<std::uint32_t>(bs, 65535);
    return true;
  }
  out.kind = Transport::Kind::kS5b;
  out.dstaddr = std::string(t.attr("dstaddr"));
  for (const xml::Element* c : t.children("candidate", kS5b)) {
    if (out.candidates.size() == kMaxCandidates) break;
    Candidate cand;
    cand.cid = std::string(c->attr("cid"));
    cand.host = std::string(c->attr("host"));
    cand.jid = std::string(c->attr("jid"));
    cand.type = c->has_attr("type") ? std::string(c->attr("type")) : "direct";
    std::uint32_t port = 0;
    if (cand.cid.empty() || cand.cid.size() > kMaxSidBytes || cand.host.empty() ||
        cand.host.size() > 255 || !parse_uint(c->attr("port"), port) || port == 0 || port > 65535 ||
        !parse_uint(c->attr("priority"), cand.priority)) {
      why = "bad candidate";
      return false;
    }
    cand.port = static_cast<std::uint16_t>(port);
    out.candidates.push_back(std::move(cand));
  }
  if (const xml::Element* u = t.child("candidate-used", kS5b))
    out.candidate_used = std::string(u->attr("cid"));
  if (const xml::Element* a = t.child("activated", kS5b))
    out.activated = std::string(a->attr("cid"));
  out.candidate_error = t.child("candidate-error", kS5b) != nullptr;
  out.proxy_error = t.child("proxy-error", kS5b) != nullptr;
  return true;
}

}  // namespace

std::optional<Action> parse(const xml::Element& j, std::string& why) {
  if (!j.is("jingle", kJingle)) {
    why = "not a <jingle/> element";
    return std::nullopt;
  }
  Action a;
  a.action = std::string(j.attr("action"));
  a.sid = std::string(j.attr("sid"));
  a.initiator = std::string(j.attr("initiator"));
  a.responder = std::string(j.attr("responder"));
  if (a.action.empty() || !valid_sid(a.sid)) {
    why = "missing action or bad sid";
    return std::nullopt;
  }
  if (const xml::Element* r = j.child("reason", kJingle)) {
    for (const xml::Element* c : r->children()) {
      if (c->xmlns() == kJingle && c->name() != "text") {
        a.reason = c->name();
        break;
      }
    }
  }
  // One content is all a file transfer uses (XEP-0234 §5): the first one counts.
  if (const xml::Element* c = j.child("content", kJingle)) {
    a.content_name = std::string(c->attr("name"));
    if (c->has_attr("creator")) a.creator = std::string(c->attr("creator"));
    // XEP-0166 §7.3: name and creator are required (a missing creator we take as ours).
    if (a.content_name.empty() || a.content_name.size() > kMaxSidBytes ||
        (a.creator != "initiator" && a.creator != "responder")) {
      why = "content without a valid name or creator";
      return std::nullopt;
    }
    a.senders = std::string(c->attr("senders"));
    if (const xml::Element* d = c->child("description", kFileTransfer)) {
      a.file = parse_file(*d, why);
      if (!a.file) return std::nullopt;
    }
    const xml::Element* t = c->child("transport", kS5b);
    if (!t) t = c->child("transport", kIbbTransport);
    if (t && !parse_transport(*t, a.transport, why)) return std::nullopt;
  }
  return a;
}

xml::Element build(const Action& a) {
  xml::Element j("jingle", kJingle);
  j.set_attr("action", a.action).set_attr("sid", a.sid);
  if (!a.initiator.empty()) j.set_attr("initiator", a.initiator);
  if (!a.responder.empty()) j.set_attr("responder", a.responder);
  if (!a.content_name.empty()) {
    xml::Element& c = j.add_child("content", kJingle);
    c.set_attr("creator", a.creator).set_attr("name", a.content_name);
    if (!a.senders.empty()) c.set_attr("senders", a.senders);
    if (a.file) {
      xml::Element& f = c.add_child("description", kFileTransfer).add_child("file", kFileTransfer);
      if (!a.file->media_type.empty())
        f.add_child("media-type", kFileTransfer).add_text(a.file->media_type);
      if (!a.file->name.empty()) f.add_child("name", kFileTransfer).add_text(a.file->name);
      f.add_child("size", kFileTransfer).add_text(std::to_string(a.file->size));
      if (a.file->range_offset)
        f.add_child("range", kFileTransfer)
            .set_attr("offset", std::to_string(*a.file->range_offset));
      if (!a.file->sha256.empty())
        f.add_child("hash", kHashes)
            .set_attr("algo", "sha-256")
            .add_text(base64_encode(a.file->sha256));
    }
    const Transport& t = a.transport;
    if (t.kind == Transport::Kind::kS5b) {
      xml::Element& x = c.add_child("transport", kS5b);
      x.set_attr("sid", t.sid);
      if (!t.dstaddr.empty()) x.set_attr("dstaddr", t.dstaddr);
      if (a.action == "session-initiate" || a.action == "session-accept" ||
          a.action == "transport-replace" || a.action == "transport-accept")
        x.set_attr("mode", "tcp");
      for (const Candidate& cand : t.candidates) {
        x.add_child("candidate", kS5b)
            .set_attr("cid", cand.cid)
            .set_attr("host", cand.host)
            .set_attr("jid", cand.jid)
            .set_attr("port", std::to_string(cand.port))
            .set_attr("priority", std::to_string(cand.priority))
            .set_attr("type", cand.type);
      }
      if (!t.candidate_used.empty())
        x.add_child("candidate-used", kS5b).set_attr("cid", t.candidate_used);
      if (!t.activated.empty()) x.add_child("activated", kS5b).set_attr("cid", t.activated);
      if (t.candidate_error) x.add_child("candidate-error", kS5b);
      if (t.proxy_error) x.add_child("proxy-error", kS5b);
    } else if (t.kind == Transport::Kind::kIbb) {
      c.add_child("transport", kIbbTransport)
          .set_attr("sid", t.sid)
          .set_attr("block-size", std::to_string(t.block_size));
    }
  }
  if (!a.reason.empty()) j.add_child("reason", kJingle).add_child(a.reason, kJingle);
  return j;
}

std::string socks5_dst(std::string_view sid, std::string_view requester, std::string_view target) {
  std::string in;
  in.append(sid).append(requester).append(target);
  unsigned char md[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(in.data()), in.size(), md);
  return to_hex({reinterpret_cast<const char*>(md), sizeof md});
}

std::uint32_t candidate_priority(std::string_view type, std::uint16_t local_preference) {
  std::uint32_t pref = type == "direct"     ? 126
                       : type == "assisted" ? 120
                       : type == "tunnel"   ? 110
                                            : 10;
  return (pref << 16) + local_preference;
}

namespace {

bool trimmed_away(char c) { return c == '.' || c == ' '; }

void trim_dots_and_spaces(std::string& s) {
  std::size_t first = 0;
  while (first < s.size() && trimmed_away(s[first])) ++first;
  s.erase(0, first);
  while (!s.empty() && trimmed_away(s.back())) s.pop_back();
}

// The longest prefix of valid UTF-8 `s` of at most `max` bytes that ends on a code point.
std::size_t utf8_prefix(const std::string& s, std::size_t max) {
  if (s.size() <= max) return s.size();
  std::size_t keep = max;
  while (keep > 0 && (static_cast<unsigned char>(s[keep]) & 0xC0) == 0x80) --keep;
  return keep;
}

}  // namespace

std::string safe_file_name(std::string_view offered) {
  // Both separators count: a name made on another system must not climb out either. Neither
  // byte occurs inside a multi-byte UTF-8 sequence, so this cut is safe before decoding.
  auto slash = offered.find_last_of("/\\");
  if (slash != std::string_view::npos) offered.remove_prefix(slash + 1);
  std::string out;
  out.reserve(std::min(offered.size(), 4 * kMaxNameBytes));
  for (std::size_t i = 0; i < offered.size();) {
    const xml::CodePoint c = xml::decode_utf8(offered, i);
    i += c.length;
    if (!c.valid) {
      out += '_';  // an ill-formed sequence: the name stays valid UTF-8 and keeps its length
    } else if (xml::is_control(c.value) || xml::is_bidi_control(c.value) || c.value == ':') {
      continue;  // ':' is a stream separator on Windows and macOS's Finder shows '/' as ':'
    } else {
      xml::append_utf8(c.value, out);
    }
  }
  // A leading dot hides the file (and ".", ".." are the directories themselves); Windows drops a
  // trailing dot or space, so such a name is not the one we checked.
  trim_dots_and_spaces(out);
  if (out.size() > kMaxNameBytes) {
    // Keep a short extension, but only with something before it: cutting a long name down to
    // ".bashrc" alone would make a hidden file again.
    const auto dot = out.rfind('.');
    const std::size_t ext_len = dot == std::string::npos ? 0 : out.size() - dot;
    std::size_t stem = 0;
    if (ext_len > 0 && ext_len <= 16) stem = utf8_prefix(out, kMaxNameBytes - ext_len);
    if (stem > 0) {
      std::string ext = out.substr(dot);
      out.resize(stem);
      while (!out.empty() && trimmed_away(out.back())) out.pop_back();
      out += ext;
    } else {
      out.resize(utf8_prefix(out, kMaxNameBytes));
    }
    trim_dots_and_spaces(out);
  }
  if (out.empty()) out = "file";
  return out;
}

bool valid_sid(std::string_view sid) {
  if (sid.empty() || sid.size() > kMaxSidBytes) return false;
  for (char ch : sid) {
    auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c == 0x7f || ch == '/' || ch == '\\') return false;
  }
  return true;
}

std::optional<SiOffer> parse_si_offer(const xml::Element& si, std::string& why) {
  if (!si.is("si", kSi) || si.attr("profile") != kSiFileTransfer) {
    why = "not a file transfer offer";
    return std::nullopt;
  }
  SiOffer o;
  o.sid = std::string(si.attr("id"));
  o.mime_type = std::string(si.attr("mime-type"));
  if (!valid_sid(o.sid)) {
    why = "bad sid";
    return std::nullopt;
  }
  const xml::Element* f = si.child("file", kSiFileTransfer);
  if (!f || !parse_uint(f->attr("size"), o.size)) {
    why = "no file or no size";
    return std::nullopt;
  }
  o.name = std::string(f->attr("name"));
  o.md5 = std::string(f->attr("hash"));
  if (o.name.size() > 4096 || o.md5.size() > 64) {
    why = "file name or hash too long";
    return std::nullopt;
  }
  const xml::Element* x = si.child("feature", kFeatureNeg);
  x = x ? x->child("x", kDataForms) : nullptr;
  if (x) {
    for (const xml::Element* field : x->children("field", kDataForms)) {
      if (field->attr("var") != "stream-method") continue;
      for (const xml::Element* opt : field->children("option", kDataForms)) {
        if (o.methods.size() == 8) break;
        o.methods.push_back(opt->child_text("value", kDataForms));
      }
    }
  }
  return o;
}

xml::Element build_si_offer(const SiOffer& o) {
  xml::Element si("si", kSi);
  si.set_attr("id", o.sid).set_attr("profile", kSiFileTransfer);
  if (!o.mime_type.empty()) si.set_attr("mime-type", o.mime_type);
  xml::Element& f = si.add_child("file", kSiFileTransfer);
  f.set_attr("name", o.name).set_attr("size", std::to_string(o.size));
  if (!o.md5.empty()) f.set_attr("hash", o.md5);
  xml::Element& field = si.add_child("feature", kFeatureNeg)
                            .add_child("x", kDataForms)
                            .set_attr("type", "form")
                            .add_child("field", kDataForms);
  field.set_attr("var", "stream-method").set_attr("type", "list-single");
  for (const std::string& m : o.methods)
    field.add_child("option", kDataForms).add_child("value", kDataForms).add_text(m);
  return si;
}

xml::Element build_si_accept(std::string_view method) {
  xml::Element si("si", kSi);
  si.add_child("feature", kFeatureNeg)
      .add_child("x", kDataForms)
      .set_attr("type", "submit")
      .add_child("field", kDataForms)
      .set_attr("var", "stream-method")
      .add_child("value", kDataForms)
      .add_text(method);
  return si;
}

std::string parse_si_accept(const xml::Element& si) {
  const xml::Element* x = si.child("feature", kFeatureNeg);
  x = x ? x->child("x", kDataForms) : nullptr;
  if (!x) return {};
  for (const xml::Element* field : x->children("field", kDataForms))
    if (field->attr("var") == "stream-method") return field->child_text("value", kDataForms);
  return {};
}

std::optional<BytestreamQuery> parse_bytestreams(const xml::Element& q, std::string& why) {
  BytestreamQuery out;
  out.sid = std::string(q.attr("sid"));
  if (!valid_sid(out.sid)) {
    why = "bad sid";
    return std::nullopt;
  }
  for (const xml::Element* h : q.children("streamhost", kBytestreams)) {
    if (out.hosts.size() == kMaxCandidates) break;
    StreamHost sh;
    sh.jid = std::string(h->attr("jid"));
    sh.host = std::string(h->attr("host"));
    std::uint32_t port = 0;
    // A streamhost without host/port (XEP-0065 §5.3.1 zero-configuration) is skipped.
    if (sh.host.empty() || sh.host.size() > 255 || !parse_uint(h->attr("port"), port) ||
        port == 0 || port > 65535)
      continue;
    sh.port = static_cast<std::uint16_t>(port);
    out.hosts.push_back(std::move(sh));
  }
  if (const xml::Element* u = q.child("streamhost-used", kBytestreams))
    out.used = std::string(u->attr("jid"));
  return out;
}

xml::Element build_bytestreams(const BytestreamQuery& q) {
  xml::Element x("query", kBytestreams);
  x.set_attr("sid", q.sid);
  if (q.used.empty()) x.set_attr("mode", "tcp");
  for (const StreamHost& h : q.hosts)
    x.add_child("streamhost", kBytestreams)
        .set_attr("jid", h.jid)
        .set_attr("host", h.host)
        .set_attr("port", std::to_string(h.port));
  if (!q.used.empty()) x.add_child("streamhost-used", kBytestreams).set_attr("jid", q.used);
  return x;
}

}  // namespace kabar::xmpp::jingle
