// Message Carbons (XEP-0280, urn:xmpp:carbons:2): a resource that enables carbons gets a copy of
// every instant message its account sends from another resource (<sent/>) and of every one the
// account receives on another resource (<received/>), wrapped in a XEP-0297 <forwarded/>.
//
// Where the state lives: a session's own switch in session->ext<CarbonsState>() (its shard),
// mirrored into the directory as ResourceFlag kCarbonsEnabled so that a message handled on any
// shard sees which resources want copies. While any resource of an account has carbons on, the
// account carries AccountFlag kCarbonsUser: its messages take the full path with the hooks
// (Server::instant_targets()), and everyone else keeps the byte fast path.
#include "server/modules/carbons/carbons.h"

#include <mutex>

#include "server/c2s_session.h"
#include "server/features.h"
#include "xml/serializer.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

namespace kabar::server {

namespace ns = xmpp::ns;

namespace {

constexpr std::string_view kHints = "urn:xmpp:hints";  // XEP-0334
constexpr std::string_view kMucUser = "http://jabber.org/protocol/muc#user";
constexpr std::string_view kConference = "jabber:x:conference";  // XEP-0249

// What the carbons module keeps per session (its own shard only).
struct CarbonsState {
  bool enabled = false;
};

// IM payloads that make a message eligible whatever its type (§6.1): receipts (XEP-0184), chat
// states (XEP-0085), markers (XEP-0333).
bool has_im_payload(const xml::Element& m) {
  for (const xml::Element* c : m.children()) {
    const std::string& x = c->xmlns();
    if (x == "urn:xmpp:receipts" || x == "http://jabber.org/protocol/chatstates" ||
        x == "urn:xmpp:chat-markers:0") {
      return true;
    }
  }
  return false;
}

}  // namespace

bool carbons_eligible(const xml::Element& m, CarbonDirection direction) {
  if (m.name() != "message") return false;
  // §7: <private/> (with the XEP-0334 <no-copy/> hint beside it) keeps a message from being
  // copied; XEP-0334 §4.3: <no-copy/> alone asks the same of the server.
  if (m.child("private", kCarbonsNs) != nullptr || m.child("no-copy", kHints) != nullptr) {
    return false;
  }
  // A carbon is never copied again: a message carrying <sent/> or <received/> is either one we
  // made or a forgery from someone else (§11: clients ignore carbons not from their bare JID; we
  // must not dress one up as a real copy from the bare JID).
  if (m.child("sent", kCarbonsNs) != nullptr || m.child("received", kCarbonsNs) != nullptr) {
    return false;
  }
  std::string_view type = m.attr("type");
  if (type.empty()) type = "normal";
  // §6.1.1: groupchat messages are not copied (the room sends them to every joined client).
  if (type == "groupchat") return false;
  // §6.1: an error is eligible only "in response to a message that was eligible"; the server
  // keeps no record of what an error answers and must not judge by the error's content (§9), so
  // errors are not copied.
  if (type == "error") return false;
  const xml::Element* muc = m.child("x", kMucUser);
  if (direction == CarbonDirection::kReceived && muc != nullptr &&
      muc->child("invite") == nullptr) {
    // §6.1.1: a private message from a room occupant is already sent to every joined client.
    if (auto from = xmpp::Jid::parse(m.attr("from")); from && !from->is_bare()) return false;
  }
  if (type == "chat") return true;
  if (type == "normal" && m.child("body", ns::kClient) != nullptr) return true;
  if (has_im_payload(m)) return true;
  // §6.1.1: direct (XEP-0249) and mediated (XEP-0045) invitations are copied.
  if (m.child("x", kConference) != nullptr) return true;
  if (muc != nullptr && muc->child("invite") != nullptr) return true;
  return false;
}

xml::Element make_carbon(const xml::Element& m, CarbonDirection direction,
                         const std::string& account_bare, const std::string& to_full) {
  // §5.1/§5.2: same type, from the account's bare JID, to the copy's recipient, the original
  // inside <received/> or <sent/> and XEP-0297 <forwarded/>.
  xml::Element wrap("message", ns::kClient);
  wrap.set_attr("from", account_bare);
  wrap.set_attr("to", to_full);
  if (m.has_attr("type")) wrap.set_attr("type", m.attr("type"));
  xml::Element& flag = wrap.add_child(direction == CarbonDirection::kSent ? "sent" : "received",
                                      std::string(kCarbonsNs));
  xml::Element& fwd = flag.add_child("forwarded", std::string(kForwardNs));
  xml::Element inner = m;
  inner.set_xmlns(ns::kClient);
  fwd.add_child(std::move(inner));
  return wrap;
}

namespace {

class CarbonsModule final : public Module {
 public:
  std::string_view name() const override { return "carbons"; }

  void setup(ModuleContext& ctx) override {
    Server& s = ctx.server();
    ctx.disco_feature(std::string(kCarbonsNs), kToServer);
    ctx.iq(
        std::string(kCarbonsNs),
        [this, &s](SessionPtr from, xml::Element iq) -> awaitable<void> {
          co_await handle_iq(s, std::move(from), std::move(iq));
        },
        kIqSet, kToServerOrAccount);
    // §5.2: a message a resource sends is copied to the account's other enabled resources.
    ctx.hook(Hook::kMessageOut, [&s](SessionPtr from, xml::Element& m) -> awaitable<HookResult> {
      copy_sent(s, from, m);
      co_return HookResult::kContinue;
    });
    // §5.1: one the account receives is copied to the enabled resources that do not get it. Late,
    // after modules that may stop the message (blocking).
    ctx.hook(
        Hook::kMessageIn,
        [&s](SessionPtr, xml::Element& m) -> awaitable<HookResult> {
          copy_received(s, m);
          co_return HookResult::kContinue;
        },
        100);
    // A session that ends (or is replaced) no longer wants copies; the account's flag goes with
    // the last enabled resource.
    ctx.on(SessionEvent::kClosed, [this, &s](SessionPtr who) -> awaitable<void> {
      who->ext<CarbonsState>().enabled = false;
      // It has left the directory: the flag is recomputed from the resources still bound.
      if ((s.account_flags(who->username()) & kCarbonsUser) != 0) {
        update_account(s, who->username(), who->jid().bare_str());
      }
      co_return;
    });
  }

 private:
  awaitable<void> handle_iq(Server& s, SessionPtr from, xml::Element iq) {
    if (auto to = xmpp::Jid::parse(iq.attr("to"));
        to && !to->is_domain() && to->bare_str() != from->jid().bare_str()) {
      // §3.1/§3.2: not-allowed when the request concerns another account.
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "not-allowed"));
      co_return;
    }
    const xml::Element* payload = iq.first_child();
    bool enable;
    if (payload != nullptr && payload->is("enable", kCarbonsNs)) {
      enable = true;
    } else if (payload != nullptr && payload->is("disable", kCarbonsNs)) {
      enable = false;
    } else {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request"));
      co_return;
    }
    // §8: enabling or disabling again is no error, just a result. The directory is written
    // every time: it, not this session's record, is what the copies and the account flag follow.
    from->ext<CarbonsState>().enabled = enable;
    s.set_resource_flags(*from, kCarbonsEnabled, enable);
    update_account(s, from->username(), from->jid().bare_str());
    // The result is sent once the flags are set: a message the client sends after reading it
    // already takes the full path.
    from->send(xmpp::make_iq_result(iq));
  }

  // Sets or clears the account's AccountFlag from what the directory says now. The mutex makes
  // reading the resources and writing the flag one step, so two resources switching at once
  // (on two shards) cannot leave the flag off while one has carbons on.
  void update_account(Server& s, const std::string& user, const std::string& bare) {
    std::lock_guard lock(mu_);
    bool any = false;
    for (const auto& r : s.resources_of(bare)) any = any || (r.flags & kCarbonsEnabled) != 0;
    s.set_account_flags(user, kCarbonsUser, any);
  }

  // The enabled resources of `bare`, but `except` those given and the one bound to `except_jid`.
  static std::vector<SessionPtr> enabled_resources(Server& s, const std::string& bare,
                                                   const std::vector<const C2sSession*>& except,
                                                   std::string_view except_jid = {}) {
    std::vector<SessionPtr> out;
    for (auto& r : s.resources_of(bare)) {
      if ((r.flags & kCarbonsEnabled) == 0 || r.session->closed()) continue;
      bool skip = r.session->jid_str() == except_jid;
      for (const C2sSession* e : except) skip = skip || e == r.session.get();
      if (!skip) out.push_back(std::move(r.session));
    }
    return out;
  }

  static void copy_sent(Server& s, const SessionPtr& from, const xml::Element& m) {
    if (from == nullptr) return;
    if ((s.account_flags(from->username()) & kCarbonsUser) == 0) return;
    if (!carbons_eligible(m, CarbonDirection::kSent)) return;
    const std::string bare = from->jid().bare_str();
    // A message to the account itself reaches its other resources as itself or as a <received/>
    // copy (copy_received): a <sent/> copy besides would be a duplicate.
    if (auto to = xmpp::Jid::parse(m.attr("to")); to && to->bare_str() == bare) return;
    // §5.2: not to the sending resource itself.
    for (const auto& r : enabled_resources(s, bare, {from.get()})) {
      r->send(make_carbon(m, CarbonDirection::kSent, bare, r->jid_str()));
    }
  }

  static void copy_received(Server& s, const xml::Element& m) {
    auto to = xmpp::Jid::parse(m.attr("to"));
    if (!to || to->local().empty() || !s.is_local(*to)) return;
    if ((s.account_flags(to->local()) & kCarbonsUser) == 0) return;
    if (!carbons_eligible(m, CarbonDirection::kReceived)) return;
    // Who gets the original, as Server::deliver() decides it (RFC 6121 §8.5.2, §8.5.3).
    std::string type(m.attr("type"));
    if (type.empty()) type = "normal";
    std::vector<SessionPtr> targets;
    if (!to->is_bare()) {
      if (auto t = s.bound_session(*to)) targets.push_back(std::move(t));
    }
    if (targets.empty()) {
      if (!to->is_bare() && type != "normal" && type != "chat") return;
      targets = s.message_targets(*to, type);
    }
    // Nobody gets it now: it is stored offline (or dropped); the resources see it from the
    // offline queue, not as a copy.
    if (targets.empty()) return;
    // §5.1: "The receiving server MUST NOT send a forwarded copy to the client(s) the original
    // message stanza was addressed to"; nor to the sending resource when the account writes to
    // itself.
    std::vector<const C2sSession*> except;
    for (const auto& t : targets) except.push_back(t.get());
    const std::string bare = to->bare_str();
    for (const auto& r : enabled_resources(s, bare, except, m.attr("from"))) {
      r->send(make_carbon(m, CarbonDirection::kReceived, bare, r->jid_str()));
    }
  }

  std::mutex mu_;
};

}  // namespace

std::unique_ptr<Module> make_carbons_module() { return std::make_unique<CarbonsModule>(); }

}  // namespace kabar::server
