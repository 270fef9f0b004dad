#include "net/websocket_codec.h"

#include <algorithm>
#include <cstring>

namespace kabar::net::ws {

namespace {

constexpr std::string_view kStreamNs = "http://etherx.jabber.org/streams";

// Unmasked payload of a frame that arrived whole: shared by the connections of a thread.
thread_local std::string g_unmasked;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

bool known_opcode(unsigned op) {
  return op == 0x0 || op == 0x1 || op == 0x2 || op == 0x8 || op == 0x9 || op == 0xA;
}

bool is_control(Opcode op) { return (static_cast<unsigned>(op) & 0x8) != 0; }

// A close frame's code may be sent on the wire (RFC 6455 §7.4.1, §7.4.2).
bool valid_close_code(std::uint16_t c) {
  if (c >= 3000 && c <= 4999) return true;
  return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1011);
}

// The end of the tag or markup that starts with '<' at `i`, one past its '>'; npos when it is
// not complete. Sets `kind`: 's' start tag, 'e' empty-element tag, '/' end tag, '!' comment,
// CDATA or declaration, '?' processing instruction.
std::size_t markup_end(std::string_view in, std::size_t i, char& kind) {
  const std::size_t n = in.size();
  if (i + 1 >= n) return std::string_view::npos;
  const char c = in[i + 1];
  auto find_after = [&](std::string_view what, std::size_t from) {
    const std::size_t f = in.find(what, from);
    return f == std::string_view::npos ? f : f + what.size();
  };
  if (c == '?') {
    kind = '?';
    return find_after("?>", i + 2);
  }
  if (c == '!') {
    kind = '!';
    if (in.substr(i, 4) == "<!--") return find_after("-->", i + 4);
    if (in.substr(i, 9) == "<![CDATA[") return find_after("]]>", i + 9);
    if (n - i < 9 && std::string_view("<![CDATA[").starts_with(in.substr(i))) {
      return std::string_view::npos;
    }
    if (n - i < 4 && std::string_view("<!--").starts_with(in.substr(i))) {
      return std::string_view::npos;
    }
    return find_after(">", i + 2);
  }
  kind = c == '/' ? '/' : 's';
  char quote = 0;
  for (std::size_t j = i + 1; j < n; ++j) {
    const char d = in[j];
    if (quote != 0) {
      if (d == quote) quote = 0;
    } else if (d == '"' || d == '\'') {
      quote = d;
    } else if (d == '>') {
      if (kind == 's' && in[j - 1] == '/') kind = 'e';
      return j + 1;
    }
  }
  return std::string_view::npos;
}

// A start tag's name and attribute text (between the name and '>' or '/>').
void split_start_tag(std::string_view tag, bool empty, std::string_view& name,
                     std::string_view& attrs) {
  std::size_t i = 1;
  while (i < tag.size() && !is_space(tag[i]) && tag[i] != '/' && tag[i] != '>') ++i;
  name = tag.substr(1, i - 1);
  const std::size_t stop = tag.size() - (empty ? 2 : 1);
  attrs = i < stop ? tag.substr(i, stop - i) : std::string_view();
}

// Iterates over attributes: `raw` is `name='value'` as written.
struct Attr {
  std::string_view name, value, raw;
};
bool next_attribute(std::string_view attrs, std::size_t& pos, Attr& a) {
  const std::size_t n = attrs.size();
  while (pos < n && is_space(attrs[pos])) ++pos;
  if (pos >= n) return false;
  const std::size_t start = pos;
  while (pos < n && !is_space(attrs[pos]) && attrs[pos] != '=') ++pos;
  a.name = attrs.substr(start, pos - start);
  while (pos < n && is_space(attrs[pos])) ++pos;
  if (pos >= n || attrs[pos] != '=') return false;
  ++pos;
  while (pos < n && is_space(attrs[pos])) ++pos;
  if (pos >= n || (attrs[pos] != '"' && attrs[pos] != '\'')) return false;
  const char q = attrs[pos++];
  const std::size_t vstart = pos;
  while (pos < n && attrs[pos] != q) ++pos;
  if (pos >= n) return false;
  a.value = attrs.substr(vstart, pos - vstart);
  ++pos;
  a.raw = attrs.substr(start, pos - start);
  return !a.name.empty();
}

// The end of the element whose start tag begins at `i`; npos when incomplete. `header_item`:
// a <stream:stream> start tag ends an item by itself (the stream header). Sets the start tag's
// end and whether it is an empty-element tag.
std::size_t element_end(std::string_view in, std::size_t i, bool header_item, std::size_t& tag_end,
                        bool& empty) {
  char kind = 0;
  tag_end = markup_end(in, i, kind);
  if (tag_end == std::string_view::npos) return tag_end;
  empty = kind == 'e';
  if (kind == 'e') return tag_end;
  if (kind != 's') return std::string_view::npos;
  if (header_item && in.substr(i, 14) == "<stream:stream" && i + 14 < in.size() &&
      (is_space(in[i + 14]) || in[i + 14] == '>')) {
    return tag_end;
  }
  std::size_t depth = 1;
  std::size_t j = tag_end;
  while (j < in.size()) {
    const std::size_t lt = in.find('<', j);
    if (lt == std::string_view::npos) return lt;
    const std::size_t end = markup_end(in, lt, kind);
    if (end == std::string_view::npos) return end;
    if (kind == 's') {
      ++depth;
    } else if (kind == '/') {
      if (--depth == 0) return end;
    }
    j = end;
  }
  return std::string_view::npos;
}

void append_be(std::string& out, std::uint64_t v, int bytes) {
  for (int k = bytes - 1; k >= 0; --k) out.push_back(static_cast<char>((v >> (8 * k)) & 0xff));
}

}  // namespace

// --- RFC 6455 framing.

FrameParser::Status FrameParser::fail(std::uint16_t code, const char* text) {
  error_ = code;
  error_text_ = text;
  return Status::kError;
}

void FrameParser::release_memory() {
  if (message_.empty()) std::string().swap(message_);
}

FrameParser::Status FrameParser::begin_frame() {
  const unsigned b0 = header_[0];
  const unsigned b1 = header_[1];
  // §5.2: no extension was negotiated, so the RSV bits must be clear.
  if ((b0 & 0x70) != 0) return fail(kCloseProtocolError, "reserved bits set");
  const unsigned op = b0 & 0x0f;
  if (!known_opcode(op)) return fail(kCloseProtocolError, "unknown opcode");
  opcode_ = static_cast<Opcode>(op);
  fin_ = (b0 & 0x80) != 0;
  // §5.1: a server closes the connection on an unmasked frame from a client.
  if ((b1 & 0x80) == 0) return fail(kCloseProtocolError, "unmasked frame from a client");
  std::uint64_t len = b1 & 0x7f;
  std::size_t at = 2;
  if (len == 126) {
    len = (std::uint64_t{header_[2]} << 8) | header_[3];
    if (len < 126) return fail(kCloseProtocolError, "length not in its shortest form");
    at = 4;
  } else if (len == 127) {
    len = 0;
    for (int k = 0; k < 8; ++k) len = (len << 8) | header_[2 + k];
    if ((len >> 63) != 0) return fail(kCloseProtocolError, "length with its top bit set");
    if (len <= 0xffff) return fail(kCloseProtocolError, "length not in its shortest form");
    at = 10;
  }
  std::memcpy(mask_.data(), header_.data() + at, 4);
  if (is_control(opcode_)) {
    // §5.5: control frames are never fragmented and carry at most 125 bytes.
    if (!fin_ || len > 125) return fail(kCloseProtocolError, "bad control frame");
    control_len_ = 0;
  } else if (opcode_ == Opcode::kBinary) {
    // RFC 7395 §3.2: XMPP goes in text frames only.
    return fail(kCloseUnsupportedData, "binary frame");
  } else if (opcode_ == Opcode::kContinuation) {
    if (!in_message_) return fail(kCloseProtocolError, "continuation without a message");
  } else if (in_message_) {
    return fail(kCloseProtocolError, "a new message inside a fragmented one");
  }
  if (!is_control(opcode_)) {
    if (len > max_message_ || message_.size() + len > max_message_) {
      return fail(kCloseTooBig, "message too big");
    }
  }
  remaining_ = len;
  unmasked_ = 0;
  in_payload_ = true;
  return Status::kOk;
}

FrameParser::Status FrameParser::end_frame(std::string_view payload, FrameSink& sink) {
  in_payload_ = false;
  header_len_ = 0;
  header_need_ = 2;
  switch (opcode_) {
    case Opcode::kPing:
      return sink.on_ping(payload) ? Status::kOk : Status::kStopped;
    case Opcode::kPong:
      // Unsolicited pongs are allowed too (§5.5.3): either way the peer is there.
      return sink.on_pong(payload) ? Status::kOk : Status::kStopped;
    case Opcode::kClose: {
      if (payload.size() == 1) return fail(kCloseProtocolError, "close frame of one byte");
      std::uint16_t code = 1005;  // §7.1.5: no status code was present
      std::string_view reason;
      if (payload.size() >= 2) {
        code = static_cast<std::uint16_t>((static_cast<unsigned char>(payload[0]) << 8) |
                                          static_cast<unsigned char>(payload[1]));
        if (!valid_close_code(code)) return fail(kCloseProtocolError, "bad close code");
        reason = payload.substr(2);
        if (!valid_utf8(reason)) return fail(kCloseInvalidPayload, "close reason not UTF-8");
      }
      return sink.on_close(code, reason) ? Status::kOk : Status::kStopped;
    }
    default:
      break;
  }
  if (!fin_) {
    in_message_ = true;
    return Status::kOk;
  }
  in_message_ = false;
  if (!valid_utf8(payload)) return fail(kCloseInvalidPayload, "text not UTF-8");
  const bool ok = sink.on_text(payload);
  message_.clear();
  return ok ? Status::kOk : Status::kStopped;
}

FrameParser::Status FrameParser::feed(std::string_view in, FrameSink& sink) {
  if (error_ != 0) return Status::kError;
  std::size_t pos = 0;
  while (pos < in.size() || (in_payload_ && remaining_ == 0)) {
    if (!in_payload_) {
      // The header: 2 bytes, then the extended length and the mask key they announce.
      while (header_len_ < header_need_ && pos < in.size()) {
        header_[header_len_++] = static_cast<unsigned char>(in[pos++]);
        if (header_len_ == 2) {
          const unsigned len7 = header_[1] & 0x7f;
          header_need_ = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
        }
      }
      if (header_len_ < header_need_) return Status::kOk;
      if (const Status s = begin_frame(); s != Status::kOk) return s;
    }
    const std::size_t avail = in.size() - pos;
    const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, avail));
    const bool control = is_control(opcode_);
    // A whole unfragmented text frame within these bytes is unmasked into the thread's buffer:
    // a connection keeps a buffer of its own only for a frame split over reads or a fragmented
    // message.
    char* dst = nullptr;
    const bool whole = !control && fin_ && !in_message_ && message_.empty() && take == remaining_;
    if (control) {
      dst = control_.data() + control_len_;
      control_len_ += take;
    } else if (whole) {
      g_unmasked.resize(take);
      dst = g_unmasked.data();
    } else {
      const std::size_t old = message_.size();
      message_.resize(old + take);
      dst = message_.data() + old;
    }
    for (std::size_t k = 0; k < take; ++k) {
      dst[k] =
          static_cast<char>(static_cast<unsigned char>(in[pos + k]) ^ mask_[(unmasked_ + k) & 3]);
    }
    unmasked_ += take;
    remaining_ -= take;
    pos += take;
    if (remaining_ > 0) return Status::kOk;
    const std::string_view payload = control ? std::string_view(control_.data(), control_len_)
                                     : whole ? std::string_view(g_unmasked)
                                             : std::string_view(message_);
    if (const Status s = end_frame(payload, sink); s != Status::kOk) return s;
  }
  return Status::kOk;
}

void append_frame_header(std::string& out, Opcode op, std::size_t len) {
  out.push_back(static_cast<char>(0x80 | static_cast<unsigned>(op)));
  if (len < 126) {
    out.push_back(static_cast<char>(len));
  } else if (len <= 0xffff) {
    out.push_back(static_cast<char>(126));
    append_be(out, len, 2);
  } else {
    out.push_back(static_cast<char>(127));
    append_be(out, len, 8);
  }
}

void append_frame(std::string& out, Opcode op, std::string_view payload) {
  append_frame_header(out, op, payload.size());
  out.append(payload);
}

std::string close_payload(std::uint16_t code, std::string_view reason) {
  std::string p;
  append_be(p, code, 2);
  p.append(reason.substr(0, 123));
  return p;
}

bool valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    // ASCII eight bytes at a time.
    while (i + 8 <= n) {
      std::uint64_t w;
      std::memcpy(&w, p + i, 8);
      if ((w & 0x8080808080808080ull) != 0) break;
      i += 8;
    }
    if (i >= n) break;
    const unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    unsigned lo = 0x80, hi = 0xbf;  // the range of the second byte
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      if (c == 0xe0) lo = 0xa0;
      if (c == 0xed) hi = 0x9f;  // no surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      if (c == 0xf0) lo = 0x90;
      if (c == 0xf4) hi = 0x8f;
    } else {
      return false;
    }
    if (i + len > n) return false;
    if (p[i + 1] < lo || p[i + 1] > hi) return false;
    for (std::size_t k = 2; k < len; ++k) {
      if (p[i + k] < 0x80 || p[i + k] > 0xbf) return false;
    }
    i += len;
  }
  return true;
}

// --- RFC 7395 XML framing.

bool find_attribute(std::string_view attrs, std::string_view name, std::string_view& value) {
  std::size_t pos = 0;
  Attr a;
  while (next_attribute(attrs, pos, a)) {
    if (a.name == name) {
      value = a.value;
      return true;
    }
  }
  return false;
}

ElementShape element_shape(std::string_view m) {
  ElementShape s;
  std::size_t i = 0;
  while (i < m.size() && is_space(m[i])) ++i;
  // §3.3.3: a message is one element; it starts with '<' and a name.
  if (i + 1 >= m.size() || m[i] != '<') return s;
  const char c = m[i + 1];
  if (c == '/' || c == '!' || c == '?' || is_space(c)) return s;
  std::size_t tag_end = 0;
  bool empty = false;
  const std::size_t end = element_end(m, i, false, tag_end, empty);
  if (end == std::string_view::npos) return s;
  for (std::size_t j = end; j < m.size(); ++j) {
    if (!is_space(m[j])) return s;
  }
  split_start_tag(m.substr(i, tag_end - i), empty, s.name, s.attrs);
  s.empty = empty;
  s.begin = i;
  s.complete = !s.name.empty();
  return s;
}

bool client_message_to_stream(std::string_view message, std::string& out) {
  const ElementShape s = element_shape(message);
  if (!s.complete) return false;
  std::string_view xmlns;
  const bool framing = find_attribute(s.attrs, "xmlns", xmlns) && xmlns == kFramingNs;
  if (framing && s.name == "open") {
    // §3.3.2 / §3.7: an <open/> starts a stream (again, after SASL); the session reads it as
    // the header RFC 6120 §4.7 describes, with the attributes the client gave.
    out += "<stream:stream xmlns='jabber:client' xmlns:stream='";
    out += kStreamNs;
    out += '\'';
    std::size_t pos = 0;
    Attr a;
    while (next_attribute(s.attrs, pos, a)) {
      if (a.name == "xmlns" || a.name.starts_with("xmlns:")) continue;
      out += ' ';
      out += a.raw;
    }
    out += '>';
    return true;
  }
  if (framing && s.name == "close") {
    out += "</stream:stream>";  // §3.6
    return true;
  }
  out.append(message.substr(s.begin));
  while (!out.empty() && is_space(out.back())) out.pop_back();
  return true;
}

std::size_t item_end(std::string_view in, std::size_t pos) {
  if (in[pos] != '<') {
    const std::size_t lt = in.find('<', pos);
    return lt == std::string_view::npos ? in.size() : lt;
  }
  if (pos + 1 >= in.size()) return std::string_view::npos;
  const char c = in[pos + 1];
  if (c == '?' || c == '!' || c == '/') {
    char kind = 0;
    return markup_end(in, pos, kind);
  }
  std::size_t tag_end = 0;
  bool empty = false;
  return element_end(in, pos, true, tag_end, empty);
}

void frame_item(std::string_view item, std::string& out) {
  if (item.size() < 2 || item[0] != '<' || item[1] == '?' || item[1] == '!') return;
  if (item[1] == '/') {
    constexpr std::string_view kClose = "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>";
    append_frame(out, Opcode::kText, kClose);
    return;
  }
  char kind = 0;
  const std::size_t tag_end = markup_end(item, 0, kind);
  std::string_view name, attrs;
  split_start_tag(item.substr(0, tag_end), kind == 'e', name, attrs);
  if (name == "stream:stream" && tag_end == item.size() && kind == 's') {
    // RFC 7395 §3.3.2: the header's attributes on an <open/>, without RFC 6120's namespaces.
    std::string open = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'";
    std::size_t pos = 0;
    Attr a;
    while (next_attribute(attrs, pos, a)) {
      if (a.name == "xmlns" || a.name.starts_with("xmlns:")) continue;
      open += ' ';
      open += a.raw;
    }
    open += "/>";
    append_frame(out, Opcode::kText, open);
    return;
  }
  // §3.3.3: each frame parses alone, so what the stream header declared goes on the element.
  std::string_view decl;
  std::string_view value;
  if (name.starts_with("stream:")) {
    if (!find_attribute(attrs, "xmlns:stream", value)) {
      decl = " xmlns:stream='http://etherx.jabber.org/streams'";
    }
  } else if (name.find(':') == std::string_view::npos && !find_attribute(attrs, "xmlns", value)) {
    decl = " xmlns='jabber:client'";
  }
  append_frame_header(out, Opcode::kText, item.size() + decl.size());
  const std::size_t after_name = 1 + name.size();
  out.append(item.substr(0, after_name));
  out.append(decl);
  out.append(item.substr(after_name));
}

}  // namespace kabar::net::ws
