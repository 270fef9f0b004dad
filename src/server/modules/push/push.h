// Push notifications (XEP-0357, urn:xmpp:push:0).
//
// Registrations: `<enable jid node/>` (with an optional publish-options form, kept and sent with
// every notification) and `<disable jid [node]/>` in an IQ set to the account; one per (account,
// push service, node), stored (the store's PushStore, deleted with the account) and kept in
// memory. The resource that enabled a registration is remembered for its session.
//
// When a notification is published, to the push service, from the server's JID (§7):
// - a push-worthy message (a body, encrypted content, a call proposal) goes to offline storage
//   because the account has no available resource: every registration of the account;
// - such a message is queued for a session that waits for XEP-0198 resumption (its connection
//   died): the registrations that session enabled. While such a session waits, its account
//   carries AccountFlag kPushHibernating, so its messages take the hooks' path.
// Coalescing: per registration, the first such message after the account was last back (a
// resource sent available presence, or a session resumed) notifies at once; more while it stays
// away only count (`message-count`), and notify again once `[push] min_interval` seconds have
// passed since the last notification. The summary form has the count, the last sender
// (`[push] include_sender`) and, only with `[push] include_body`, the last body.
//
// Delivery: kabard has no server-to-server links, so only a push service at a local full JID (a
// client acting as app server) is reached; a remote one is skipped and its registration kept.
// An error answer (other than type 'wait') disables the registration (§8).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "server/core/module.h"

namespace kabar::server {

inline constexpr std::string_view kPushNs = "urn:xmpp:push:0";

std::unique_ptr<Module> make_push_module();

}  // namespace kabar::server
