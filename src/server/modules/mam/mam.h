// Message Archive Management (XEP-0313): which messages are archived, for the module and its
// tests.
#pragma once

#include <string_view>

#include "xml/element.h"

namespace kabar::server {

inline constexpr std::string_view kMamNs = "urn:xmpp:mam:2";
inline constexpr std::string_view kMamExtendedNs = "urn:xmpp:mam:2#extended";
inline constexpr std::string_view kStanzaIdNs = "urn:xmpp:sid:0";  // XEP-0359

// Whether `m` goes into an archive (XEP-0313 §6.1.1): a chat or normal message with a body, or
// one with the XEP-0334 <store/> hint; never one with <no-store/> or <no-permanent-store/>, an
// error, a headline or a groupchat message, nor a carbon or an archive result (which the server
// makes itself: a client's is a forgery).
bool mam_archivable(const xml::Element& m);

// XEP-0359 §3: removes every <stanza-id/> (and <origin-id/> is left) whose 'by' is `archive`, the
// JID of an archive this server keeps: nobody else may speak for it.
void strip_stanza_ids(xml::Element& m, std::string_view archive);

}  // namespace kabar::server
