// Stream management (XEP-0198, urn:xmpp:sm:3) for client streams.
//
// What an <a h/> from kabard means today: the stanzas it counts have been handled, each once
// its processing finished: a message to an online recipient once it is queued to that
// recipient's connection (the byte fast path), anything else once the router's work for it has
// returned (for a message to an offline user: the offline store has committed it; a bounce: the
// error is queued). A message queued to an online recipient is not yet durable: if kabard dies
// before that recipient acknowledges it, it is lost. Durable acks for online recipients (a
// message log committed before the ack) are a later step.
//
// Outbound, every stanza written after <enabled/> stays queued until the client acknowledges
// it; the server asks for acks itself (<r/> after a few stanzas or a few seconds). A resumable
// session whose connection dies is detached and kept for `[sm] resume_timeout` seconds; a
// <resume/> on a new authenticated stream of the same account continues it, writing every
// unacknowledged stanza again in order. A session that ends with stanzas unacknowledged (the
// window passed, a clean close, a replaced resource, a client too far behind, shutdown)
// handles them as undelivered, never dropped: a message goes to the account's other resources
// or offline storage (RFC 6121 §8.5 rules), an IQ request gets an error back, presence is
// dropped. An entry with a delivery callback (an offline message) is left to its owner: it is
// still in the store, deleted only once an ack covers it.
#pragma once

#include <memory>
#include <string_view>

#include "server/core/module.h"

namespace kabar::server {

inline constexpr std::string_view kSmNs = "urn:xmpp:sm:3";

std::unique_ptr<Module> make_sm_module();

}  // namespace kabar::server
