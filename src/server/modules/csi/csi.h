// Client State Indication (XEP-0352): see csi.cc.
#pragma once

#include <memory>
#include <string_view>

#include "server/core/module.h"
#include "xml/element.h"

namespace kabar::server {

inline constexpr std::string_view kCsiNs = "urn:xmpp:csi:0";

// What an inactive client's hold does with a stanza for it.
enum class CsiWait {
  kNow,        // goes at once (after what is held from its sender)
  kPresence,   // an available or unavailable presence: held, the latest per full JID
  kChatState,  // a message with nothing but a chat state (XEP-0085): held, the latest per sender
};
// `own_jid`: the session's full JID (its own presence, reflected to it, goes at once).
CsiWait csi_wait(const xml::Element& stanza, std::string_view own_jid);

std::unique_ptr<Module> make_csi_module();

}  // namespace kabar::server
