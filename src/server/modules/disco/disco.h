// Service discovery (XEP-0030): disco#info answers are built from what the modules registered.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "server/core/module.h"
#include "xml/element.h"

namespace kabar::server {

// The <query xmlns='http://jabber.org/protocol/disco#info'/> for the server (kToServer) or for
// an account's bare JID (kToAccount): the identities and features registered for it.
xml::Element disco_info_query(const ModuleRegistry& registry, Target target);

// XEP-0157: the server's contact addresses as the serverinfo form, by kind ("abuse", "admin",
// ...: each becomes the field KIND-addresses), in the given order.
xml::Element server_info_form(
    const std::vector<std::pair<std::string, std::vector<std::string>>>& addresses);

}  // namespace kabar::server
