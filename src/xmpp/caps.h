// Entity capabilities (XEP-0115): the verification string of a disco#info answer and its hash,
// which a presence's <c ver='...'/> must match before the features may be cached under it.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "xml/element.h"

namespace kabar::xmpp {

inline constexpr const char* kCaps = "http://jabber.org/protocol/caps";

// The <c xmlns='http://jabber.org/protocol/caps'/> of a presence, if it has one.
struct CapsInfo {
  std::string hash;  // "sha-1", ...; empty: the legacy format (no hash)
  std::string node;
  std::string ver;
};
std::optional<CapsInfo> caps_of(const xml::Element& presence);

// XEP-0115 §5.1: the verification string of a disco#info <query/>; nullopt when §5.4 says the
// answer must not be trusted (duplicate identities or features, duplicate FORM_TYPEs, a
// FORM_TYPE that is not hidden).
std::optional<std::string> caps_verification_string(const xml::Element& query);
// base64 of the hash named `algo` ("sha-1", "sha-256", ...: IANA names) of `s`; nullopt for an
// algorithm kabar does not know.
std::optional<std::string> caps_hash(std::string_view algo, std::string_view s);

// §5.4: whether the disco#info <query/> is what `ver` stands for under the hash `algo` (a
// trustworthy answer whose verification string hashes to `ver`). Only then may its features be
// cached under `ver` for every entity that announces it.
bool caps_verify(std::string_view algo, std::string_view ver, const xml::Element& query);
// §4: the sha-1 `ver` an entity announces for its own disco#info <query/>; nullopt when the
// query is one §5.4 says not to trust (duplicates).
std::optional<std::string> caps_ver(const xml::Element& query);
// §4: <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node=... ver=.../>.
xml::Element caps_element(std::string_view node, std::string_view ver);

}  // namespace kabar::xmpp
