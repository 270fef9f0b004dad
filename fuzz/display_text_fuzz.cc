// Feeds arbitrary bytes to the functions that make network text safe to show
// (xmpp/display_text.h) and checks their promises: terminal_text() writes valid UTF-8 with no
// control, C1 or bidi character, keeps safe text unchanged and is idempotent; json_quoted() writes
// a JSON string (RFC 8259 §7) with the same guarantees that decodes back to the input whenever
// the input is valid UTF-8.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "xml/chars.h"
#include "xmpp/display_text.h"

namespace {

namespace xml = kabar::xml;

bool unsafe(char32_t c) {
  return xml::is_control(c) || xml::is_bidi_control(c) || c == 0x2028 || c == 0x2029;
}

// True when `s` is valid UTF-8 without a single character a terminal could act on.
bool safe(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const xml::CodePoint c = xml::decode_utf8(s, i);
    if (!c.valid || unsafe(c.value)) return false;
    i += c.length;
  }
  return true;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes a JSON string (quotes included) by RFC 8259 §7; traps on anything it does not allow.
std::string json_decode(std::string_view q) {
  if (q.size() < 2 || q.front() != '"' || q.back() != '"') __builtin_trap();
  std::string out;
  for (std::size_t i = 1; i + 1 < q.size(); ++i) {
    const auto b = static_cast<unsigned char>(q[i]);
    if (b < 0x20 || b == '"') __builtin_trap();
    if (b != '\\') {
      out += q[i];
      continue;
    }
    if (i + 2 >= q.size()) __builtin_trap();
    switch (q[++i]) {
      case '"':
      case '\\':
      case '/':
        out += q[i];
        break;
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'r':
        out += '\r';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'u': {
        if (i + 5 >= q.size()) __builtin_trap();
        char32_t v = 0;
        for (int k = 1; k <= 4; ++k) {
          const int d = hex_digit(q[i + k]);
          if (d < 0) __builtin_trap();
          v = v * 16 + static_cast<char32_t>(d);
        }
        // json_quoted() escapes BMP characters only; a lone surrogate would be a bug.
        if (v >= 0xD800 && v <= 0xDFFF) __builtin_trap();
        xml::append_utf8(v, out);
        i += 4;
        break;
      }
      default:
        __builtin_trap();
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const std::string shown = kabar::xmpp::terminal_text(in);
  if (!safe(shown)) __builtin_trap();
  if (safe(in) && shown != in) __builtin_trap();
  if (kabar::xmpp::terminal_text(shown) != shown) __builtin_trap();

  const std::string quoted = kabar::xmpp::json_quoted(in);
  if (!safe(quoted)) __builtin_trap();
  const std::string decoded = json_decode(quoted);
  bool valid_utf8 = true;
  for (std::size_t i = 0; i < in.size() && valid_utf8;) {
    const xml::CodePoint c = xml::decode_utf8(in, i);
    valid_utf8 = c.valid;
    i += c.length;
  }
  if (valid_utf8 && decoded != in) __builtin_trap();
  return 0;
}
