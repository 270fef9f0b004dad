// Characters: decoding UTF-8 (RFC 3629) one code point at a time, and the XML 1.0 Char
// production. Shared by the serializer (which must never write a character XML forbids) and by
// every sanitizer of text that came from the network (file names, text shown on a terminal).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kabar::xml {

// One step of UTF-8 decoding. `length` is at least 1: for an ill-formed sequence (a lone
// continuation byte, a truncated or overlong sequence, a surrogate, anything past U+10FFFF) it
// is the length of the maximal subpart (Unicode §3.9, "U+FFFD substitution of maximal subparts"),
// and `valid` is false.
struct CodePoint {
  char32_t value = 0;
  std::size_t length = 1;
  bool valid = false;
};
CodePoint decode_utf8(std::string_view s, std::size_t at);

// Appends `c` (a scalar value) as UTF-8.
void append_utf8(char32_t c, std::string& out);

inline constexpr char32_t kReplacementCharacter = 0xFFFD;

// XML 1.0 §2.2: Char ::= #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF].
constexpr bool is_xml_char(char32_t c) {
  return c == 0x9 || c == 0xA || c == 0xD || (c >= 0x20 && c <= 0xD7FF) ||
         (c >= 0xE000 && c <= 0xFFFD) || (c >= 0x10000 && c <= 0x10FFFF);
}

// Unicode's bidirectional embeddings, overrides and isolates (UAX #9 §2.1-2.2: U+202A-202E,
// U+2066-2069): shown or stored raw, they can reorder what follows, so that "gpj.exe" preceded
// by U+202E displays as "exe.jpg".
constexpr bool is_bidi_control(char32_t c) {
  return (c >= 0x202A && c <= 0x202E) || (c >= 0x2066 && c <= 0x2069);
}

// C0 controls, DEL and C1 controls (U+0080-009F; U+009B is a CSI to many terminals).
constexpr bool is_control(char32_t c) { return c < 0x20 || (c >= 0x7F && c <= 0x9F); }

// True when `s` is well-formed UTF-8 made only of XML 1.0 Chars: text an element can carry.
bool valid_xml_text(std::string_view s);

}  // namespace kabar::xml
