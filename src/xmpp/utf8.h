// UTF-8 validation for protocol text (JID parts, SASL names and passwords).
#pragma once

#include <string_view>

namespace kabar::xmpp {

// True when `s` is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing past
// U+10FFFF) and has no NUL (stringprep works on NUL-terminated strings and SASL forbids it).
bool valid_utf8(std::string_view s);

}  // namespace kabar::xmpp
