// The check of a person's text before it goes into a stanza (declared in kabar/client.h).
#include <cstdio>

#include "kabar/client.h"
#include "xml/chars.h"

namespace kabar::client {

Error check_text(std::string_view what, std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    const xml::CodePoint c = xml::decode_utf8(text, i);
    if (!c.valid) {
      char byte[8];
      std::snprintf(byte, sizeof byte, "0x%02X", static_cast<unsigned char>(text[i]));
      return Error{Errc::kBadInput, std::string(what) + " is not valid UTF-8 (byte " + byte +
                                        " at offset " + std::to_string(i) + ")"};
    }
    // XML 1.0 §2.2: a stanza cannot carry it, not even as a character reference.
    if (!xml::is_xml_char(c.value)) {
      char cp[16];
      std::snprintf(cp, sizeof cp, "U+%04X", static_cast<unsigned>(c.value));
      return Error{Errc::kBadInput,
                   std::string(what) + " contains " + cp +
                       (c.value == 0x1B  ? " (ESC)"
                        : c.value < 0x20 ? " (a control character)"
                                         : "") +
                       ", which XMPP cannot carry (XML 1.0 allows no such character)"};
    }
    i += c.length;
  }
  return Error{};
}

}  // namespace kabar::client
