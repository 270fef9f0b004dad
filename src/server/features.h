// The modules' factories (listed once, in modules/modules.cc) and the few functions one module
// calls in another.
#pragma once

#include <memory>

#include "server/core/module.h"
#include "server/server.h"

namespace kabar::server {

// roster/: jabber:iq:roster (RFC 6121 §2), roster versioning (XEP-0237).
std::unique_ptr<Module> make_roster_module();
// presence/: presence a bound session sends (broadcast, directed, probes) and presence to local
// accounts (RFC 6121 §4), subscriptions (§3).
std::unique_ptr<Module> make_presence_module();
// Handles presence a bound session sends (roster removal sends unsubscribe/unsubscribed with it).
awaitable<void> handle_presence(Server& s, SessionPtr from, xml::Element presence);
// A session goes unavailable (an explicit end, an account deleted): its unavailable presence
// goes to its contacts, its other resources and those it sent directed presence (§4.5.2).
awaitable<void> broadcast_unavailable(Server& s, SessionPtr who, xml::Element presence);

// offline/: XEP-0160.
std::unique_ptr<Module> make_offline_module();
// Stores a message for an account with no available resource; false when the queue is full or
// the account does not exist.
awaitable<bool> store_offline(Server& s, const std::string& user, const xml::Element& message);
// Sends stored messages to a session that has just sent initial presence, a batch at a time (the
// next once the one before is written), deleting each batch once written to the connection.
awaitable<void> deliver_offline(Server& s, SessionPtr to);

// carbons/: XEP-0280 message carbons.
std::unique_ptr<Module> make_carbons_module();

// csi/: XEP-0352 client state indication.
std::unique_ptr<Module> make_csi_module();

// blocking/: XEP-0191 blocking command.
std::unique_ptr<Module> make_blocking_module();
// What the blocking module offers others (registry service<BlockingView>(); nullptr without it):
// the presence module hides presence between a user and a JID either of them blocks.
class BlockingView {
 public:
  virtual ~BlockingView() = default;
  // Whether the local account of `user` blocks `other`, or `other` (a local account) blocks
  // `user`; never between one account's own resources (XEP-0191 §5).
  virtual bool blocked_either_way(const xmpp::Jid& user, const xmpp::Jid& other) const = 0;
  // The account `user` was deleted from the store (its blocklist with it): forgets the list it
  // keeps in memory. Called on the store's thread, in the deleting operation.
  virtual void forget(const std::string& user) = 0;
};

// pep/: XEP-0163 personal eventing (the part of XEP-0060 it needs), with XEP-0115 caps.
std::unique_ptr<Module> make_pep_module();
// What the PEP module offers others (registry service<PepService>(); nullptr without it).
class PepService {
 public:
  virtual ~PepService() = default;
  // The nodes of the account `owner` (a username) that `requester` (a bare JID) may see, for
  // the account's disco#items (XEP-0163 §8.2).
  virtual awaitable<std::vector<std::string>> visible_nodes(std::string owner,
                                                            std::string requester) = 0;
  // disco#info of one node (XEP-0060 §5.3); nullopt when there is no such node or `requester`
  // may not see it.
  virtual awaitable<std::optional<xml::Element>> node_info(std::string owner, std::string node,
                                                           std::string requester) = 0;
  // Items of `owner`'s `node` that someone else (the private module, XEP-0411) published or
  // retracted in the store: notifies as a publish and a retract would.
  virtual awaitable<void> notify(std::string owner, std::string node,
                                 std::vector<store::PepItem> published,
                                 std::vector<std::string> retracted) = 0;
};

// private/: XEP-0049 private XML storage, with storage:bookmarks kept in step with the XEP-0402
// PEP node (XEP-0402 §5.3, the "#compat" of XEP-0411).
std::unique_ptr<Module> make_private_module();

// mam/: XEP-0313 message archives (with XEP-0359 stanza ids and XEP-0441 preferences).
std::unique_ptr<Module> make_mam_module();
// What the archive module offers others (registry service<ArchiveView>(); nullptr when
// archiving is off).
class ArchiveView {
 public:
  virtual ~ArchiveView() = default;
  // The account `user` was deleted (its archive and preferences with it): forgets what it
  // keeps in memory.
  virtual void forget(const std::string& user) = 0;
};

// push/: XEP-0357 push notifications (modules/push/push.h, make_push_module()). What it offers
// others (registry service<PushView>(); nullptr without it):
class PushView {
 public:
  virtual ~PushView() = default;
  // The account `user` was deleted (its push registrations with it): forgets what it keeps in
  // memory. Called on the store's thread, in the deleting operation.
  virtual void forget(const std::string& user) = 0;
};

// disco/: XEP-0030, answers built from the registry; basics/: XEP-0092 version, XEP-0199 ping,
// XEP-0012 last activity, RFC 3921 session; vcard/: XEP-0054; register/: XEP-0077 for
// authenticated users; extdisco/: XEP-0215; proxy65/: XEP-0065 proxy component; upload/:
// XEP-0363 component; time/: XEP-0202.
std::unique_ptr<Module> make_disco_module();
std::unique_ptr<Module> make_basics_module();
std::unique_ptr<Module> make_vcard_module();
std::unique_ptr<Module> make_register_module();
std::unique_ptr<Module> make_extdisco_module();
std::unique_ptr<Module> make_proxy65_module();
std::unique_ptr<Module> make_upload_module();

}  // namespace kabar::server
