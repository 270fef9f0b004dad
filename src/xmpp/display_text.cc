#include "xmpp/display_text.h"

#include <cstdio>

#include "xml/chars.h"

namespace kabar::xmpp {

namespace {

void append_hex(std::string& out, const char* format, unsigned value) {
  char buf[12];
  std::snprintf(buf, sizeof buf, format, value);
  out += buf;
}

// What a terminal or a JSON reader must not see raw, beyond the C0 controls.
bool shown_escaped(char32_t c) {
  return xml::is_control(c) || xml::is_bidi_control(c) || c == 0x2028 || c == 0x2029;
}

}  // namespace

std::string terminal_text(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b >= 0x20 && b < 0x7F) {
      out += static_cast<char>(b);
      ++i;
      continue;
    }
    const xml::CodePoint c = xml::decode_utf8(s, i);
    if (!c.valid) {
      for (std::size_t k = 0; k < c.length; ++k)
        append_hex(out, "\\x%02x", static_cast<unsigned char>(s[i + k]));
    } else if (c.value == '\n') {
      out += "\\n";
    } else if (c.value == '\t') {
      out += "\\t";
    } else if (c.value == '\r') {
      out += "\\r";
    } else if (c.value < 0x80) {
      append_hex(out, "\\x%02x", static_cast<unsigned>(c.value));
    } else if (shown_escaped(c.value)) {
      append_hex(out, "\\u%04x", static_cast<unsigned>(c.value));
    } else {
      out.append(s.substr(i, c.length));
    }
    i += c.length;
  }
  return out;
}

std::string json_quoted(std::string_view s) {
  std::string out = "\"";
  out.reserve(s.size() + 2);
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b >= 0x20 && b < 0x7F && b != '"' && b != '\\') {
      out += static_cast<char>(b);
      ++i;
      continue;
    }
    const xml::CodePoint c = xml::decode_utf8(s, i);
    if (!c.valid) {
      out += "\\ufffd";
    } else if (c.value == '"') {
      out += "\\\"";
    } else if (c.value == '\\') {
      out += "\\\\";
    } else if (c.value == '\n') {
      out += "\\n";
    } else if (c.value == '\t') {
      out += "\\t";
    } else if (c.value == '\r') {
      out += "\\r";
    } else if (shown_escaped(c.value)) {
      append_hex(out, "\\u%04x", static_cast<unsigned>(c.value));
    } else {
      out.append(s.substr(i, c.length));
    }
    i += c.length;
  }
  out += '"';
  return out;
}

}  // namespace kabar::xmpp
