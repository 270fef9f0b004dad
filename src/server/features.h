// The feature folders' entry points, registered in one place (Server::Server).
#pragma once

#include "server/server.h"

namespace kabar::server {

// roster/: jabber:iq:roster (RFC 6121 §2), roster versioning (XEP-0237), subscriptions (§3).
void register_roster(Server& s);
// Handles presence a bound session sends: broadcast, directed, subscriptions, probes.
awaitable<void> handle_presence(Server& s, SessionPtr from, xml::Element presence);
// Presence addressed to a local account arriving from anywhere (another local user): §4.
awaitable<void> deliver_presence(Server& s, xml::Element presence);
// A session went away (or sent unavailable): broadcast its unavailable presence (§4.5.2).
awaitable<void> broadcast_unavailable(Server& s, SessionPtr who, xml::Element presence);

// offline/: XEP-0160. Stores a message for an account with no available resource; false when the
// queue is full.
awaitable<bool> store_offline(Server& s, const std::string& user, const xml::Element& message);
// Sends stored messages to a session that has just sent initial presence, deleting each once
// written to the connection.
awaitable<void> deliver_offline(Server& s, SessionPtr to);

// disco/: XEP-0030; basics/: XEP-0092 version, XEP-0199 ping, XEP-0012 last activity;
// vcard/: XEP-0054; register/: XEP-0077 for authenticated users.
void register_disco(Server& s);
void register_basics(Server& s);
void register_vcard(Server& s);
void register_register(Server& s);
// extdisco/: XEP-0215, STUN/TURN servers (with time-limited TURN credentials) and the proxy.
void register_extdisco(Server& s);

}  // namespace kabar::server
