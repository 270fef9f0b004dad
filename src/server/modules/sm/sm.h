// Stream management (XEP-0198, urn:xmpp:sm:3) for client streams.
//
// What an <a h/> from kabard means: the stanzas it counts have been handled and their effects
// are durable. A message to an offline user counts once the offline store has committed it; a
// message to an online recipient once it is queued there when neither side uses stream
// management, else once the message log (store/message_log.h) has committed it as a message in
// flight (group commit: one transaction per turn of the store's thread). The record goes when
// the recipient acknowledges the message (or has it written, without stream management); after
// a crash it is an offline message. Anything else counts once the router's work for it has
// returned (a bounce: the error is queued).
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
