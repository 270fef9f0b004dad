// In-band registration (XEP-0077).
#pragma once

#include "server/server.h"

namespace kabar::server {

// Before authentication: the registration form (get) or account creation (set).
awaitable<xml::Element> handle_register_preauth(Server& s, const xml::Element& iq);

}  // namespace kabar::server
