// Lower-case hexadecimal, as XMPP writes bytes in text: generated ids (XEP-0198 resumption ids,
// XEP-0060 item ids, upload secrets) and digests (XEP-0065 DST.ADDR, certificate fingerprints).
#pragma once

#include <string>
#include <string_view>

namespace kabar::xmpp {

inline std::string to_hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

}  // namespace kabar::xmpp
