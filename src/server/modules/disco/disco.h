// Service discovery (XEP-0030): disco#info answers are built from what the modules registered.
#pragma once

#include "server/core/module.h"
#include "xml/element.h"

namespace kabar::server {

// The <query xmlns='http://jabber.org/protocol/disco#info'/> for the server (kToServer) or for
// an account's bare JID (kToAccount): the identities and features registered for it.
xml::Element disco_info_query(const ModuleRegistry& registry, Target target);

}  // namespace kabar::server
