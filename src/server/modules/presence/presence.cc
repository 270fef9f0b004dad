// Presence (RFC 6121 §4) and subscriptions (§3): broadcast, probes, directed presence, and the
// subscription state machine of xmpp/subscription.h applied to both sides' rosters.
#include <spdlog/spdlog.h>

#include <charconv>
#include <set>

#include "server/c2s_session.h"
#include "server/core/paced_send.h"
#include "server/features.h"
#include "server/modules/roster/roster_items.h"
#include "xml/serializer.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"
#include "xmpp/subscription.h"

namespace kabar::server {

namespace ns = xmpp::ns;
using xmpp::Subscription;
using xmpp::SubscriptionType;

namespace {

// What the presence module keeps per session (session->ext<PresenceState>()).
struct PresenceState {
  std::set<std::string> directed_to;  // full/bare JIDs given directed presence (RFC 6121 §4.6)
};

bool has_from(const xmpp::SubState& st) {
  return st.sub == Subscription::kFrom || st.sub == Subscription::kBoth;
}
bool has_to(const xmpp::SubState& st) {
  return st.sub == Subscription::kTo || st.sub == Subscription::kBoth;
}

// The available resources of a local account, as the directory knows them (any shard).
std::vector<ResourceView> available_sessions(Server& s, const std::string& bare) {
  std::vector<ResourceView> out = s.resources_of(bare);
  std::erase_if(out, [](const ResourceView& r) { return !r.available || r.session->closed(); });
  return out;
}

// A presence serialized once for a broadcast: every recipient's copy shares the bytes before
// and after the end of the start tag, where its own to='...' goes (ARCHITECTURE.md: a broadcast
// shares one buffer).
class SharedPresence {
 public:
  explicit SharedPresence(const xml::Element& p) {
    xml::Element q = p;
    q.remove_attr("to");
    std::string bytes = xml::serialize(q, ns::kClient);
    // Attribute values are escaped ('>' included), so the first '>' ends the start tag.
    std::size_t cut = bytes.find('>');
    if (cut != std::string::npos && cut > 0 && bytes[cut - 1] == '/') --cut;
    head_ = std::make_shared<const std::string>(bytes.substr(0, cut));
    tail_ = std::make_shared<const std::string>(bytes.substr(cut));
  }

  void send(const SessionPtr& target, std::string_view to) const {
    std::string own = " to='";
    xml::escape_attr(to, own);
    own += '\'';
    target->send_shared(head_, std::move(own), tail_);
  }

  // To every available resource of the local account `bare`, with to='bare'.
  void send_to_account(Server& s, const std::string& bare) const {
    for (auto& t : available_sessions(s, bare)) send(t.session, bare);
  }

 private:
  std::shared_ptr<const std::string> head_, tail_;
};

// Sends `p` (from set) to every available resource of the local account `bare`, with to='bare'.
void send_to_account(Server& s, const std::string& bare, xml::Element p) {
  auto targets = available_sessions(s, bare);
  if (targets.empty()) return;
  p.set_attr("to", bare);
  std::string bytes = xml::serialize(p, ns::kClient);
  for (auto& t : targets) t.session->send_raw(bytes);
}

// The presence of one resource as seen by `to`.
xml::Element presence_of(const ResourceView& who, const std::string& to) {
  xml::Element p = who.presence ? *who.presence : xml::Element("presence", ns::kClient);
  p.set_attr("from", who.session->jid().str());
  p.set_attr("to", to);
  return p;
}

// Sends the current presence of every available resource of `user` to the local account `to`.
void send_current_presence(Server& s, const std::string& user_bare, const std::string& to_bare) {
  for (auto& who : available_sessions(s, user_bare)) {
    send_to_account(s, to_bare, presence_of(who, to_bare));
  }
}

void send_unavailable_from_all(Server& s, const std::string& user_bare,
                               const std::string& to_bare) {
  for (auto& who : available_sessions(s, user_bare)) {
    xml::Element p("presence", ns::kClient);
    p.set_attr("type", "unavailable");
    p.set_attr("from", who.session->jid().str());
    send_to_account(s, to_bare, std::move(p));
  }
}

awaitable<void> inbound_subscription(Server& s, xml::Element p, SubscriptionType type);

// RFC 6121 §3.x.2: the user's server processes an outbound subscription stanza.
awaitable<void> outbound_subscription(Server& s, SessionPtr from, xml::Element p,
                                      SubscriptionType type) {
  auto to = xmpp::Jid::parse(p.attr("to"));
  if (!to) co_return;
  const std::string contact = to->bare_str();
  const std::string user = from->username();
  const std::string user_bare = from->jid().bare_str();
  if (contact == user_bare) co_return;  // one's own account is always "both"
  // §3.1.2: stamp the bare JID; the 'to' is the contact's bare JID.
  p.set_attr("from", user_bare);
  p.set_attr("to", contact);
  struct Out {
    xmpp::SubDecision d;
    store::RosterItem item;
    std::int64_t version = 0;
  };
  auto op = [user, contact, type](store::Store& st) {
    Out o;
    auto existing = st.roster_item(user, contact);
    o.item = existing ? *existing : store::RosterItem{};
    o.item.jid = contact;
    if (!existing) o.item.in_roster = false;
    o.d = xmpp::apply_outbound(o.item.state, type);
    if (o.d.state_changed) {
      o.item.state = o.d.next;
      if (!o.item.state.pending_in) o.item.pending_in_stanza.clear();
      // §3.1.2 and §3.1.5: subscribing or approving creates the roster item.
      if (type == SubscriptionType::kSubscribe || type == SubscriptionType::kSubscribed) {
        o.item.in_roster = true;
      }
      o.version = st.put_roster_item(user, o.item);
    }
    return o;
  };
  Out out = co_await s.db(std::move(op));
  if (out.d.state_changed) push_roster_item(s, user, out.item, out.version);
  if (!out.d.route) co_return;
  if (!s.is_local(*to)) co_return;  // no server-to-server links yet: dropped (§3.1.2)
  // XEP-0191 §3.5: a contact who blocks the user gets none of its presence, and says nothing.
  if (const auto* blocking = s.modules().service<BlockingView>();
      blocking != nullptr && blocking->blocked_either_way(from->jid(), *to)) {
    co_return;
  }
  co_await inbound_subscription(s, p, type);
  if (type == SubscriptionType::kSubscribed) {
    // §3.1.5: after approving, the user's current presence goes to the contact.
    send_current_presence(s, user_bare, contact);
  } else if (type == SubscriptionType::kUnsubscribed) {
    // §3.2.2: after cancelling, the contact learns the user is unavailable to them.
    send_unavailable_from_all(s, user_bare, contact);
  }
}

// RFC 6121 §3.x.3: a local contact's server processes an inbound subscription stanza.
awaitable<void> inbound_subscription(Server& s, xml::Element p, SubscriptionType type) {
  auto to = xmpp::Jid::parse(p.attr("to"));
  auto from = xmpp::Jid::parse(p.attr("from"));
  if (!to || !from || to->local().empty()) co_return;
  const std::string contact_user = to->local();
  const std::string contact_bare = to->bare_str();
  const std::string sender = from->bare_str();
  std::string serialized =
      type == SubscriptionType::kSubscribe ? xml::serialize(p, ns::kClient) : std::string();
  struct In {
    bool exists = false;
    xmpp::SubDecision d;
    store::RosterItem item;
    std::int64_t version = 0;
    bool removed = false;
  };
  auto op2 = [contact_user, sender, type, serialized](store::Store& st) {
    In r;
    if (!st.account(contact_user)) return r;
    r.exists = true;
    auto existing = st.roster_item(contact_user, sender);
    r.item = existing ? *existing : store::RosterItem{};
    r.item.jid = sender;
    if (!existing) r.item.in_roster = false;
    r.d = xmpp::apply_inbound(r.item.state, type);
    if (r.d.state_changed) {
      r.item.state = r.d.next;
      r.item.pending_in_stanza = r.item.state.pending_in ? serialized : std::string();
      const auto& ns2 = r.item.state;
      if (!r.item.in_roster && ns2.sub == Subscription::kNone && !ns2.pending_in &&
          !ns2.pending_out && !ns2.preapproved) {
        // Nothing left to remember for a contact who is not in the roster.
        if (existing) st.remove_roster_item(contact_user, sender);
        r.removed = true;
      } else {
        r.version = st.put_roster_item(contact_user, r.item);
      }
    }
    return r;
  };
  In in = co_await s.db(std::move(op2));
  if (!in.exists) {
    // §3.1.3: a subscription request to an account that does not exist is answered
    // 'unsubscribed' on its behalf.
    if (type == SubscriptionType::kSubscribe) {
      xml::Element reply("presence", ns::kClient);
      reply.set_attr("type", "unsubscribed");
      reply.set_attr("from", contact_bare);
      reply.set_attr("to", sender);
      if (s.is_local(*from))
        co_await inbound_subscription(s, reply, SubscriptionType::kUnsubscribed);
    }
    co_return;
  }
  if (in.d.state_changed && !in.removed) push_roster_item(s, contact_user, in.item, in.version);
  if (in.d.route) {
    xml::Element copy = p;
    copy.set_attr("from", sender);
    send_to_account(s, contact_bare, std::move(copy));
  }
  if (in.d.auto_reply_subscribed) {
    xml::Element reply("presence", ns::kClient);
    reply.set_attr("type", "subscribed");
    reply.set_attr("from", contact_bare);
    reply.set_attr("to", sender);
    if (s.is_local(*from)) {
      co_await inbound_subscription(s, reply, SubscriptionType::kSubscribed);
      send_current_presence(s, contact_bare, sender);
    }
  }
  if (type == SubscriptionType::kUnsubscribe && in.d.state_changed && s.is_local(*from)) {
    // §3.3.3: the contact's available resources go unavailable for the former subscriber.
    send_unavailable_from_all(s, contact_bare, sender);
  }
}

awaitable<std::vector<store::RosterItem>> roster_of(Server& s, const std::string& user) {
  auto op3 = [user](store::Store& st) { return st.roster(user); };
  co_return co_await s.db(std::move(op3));
}

// §4.2.2, §4.4.2: broadcast to contacts with a 'from' subscription and to all of the user's
// available resources, "including the resource that generated the presence notification in the
// first place" (clients wait for their own presence to come back). §4.5.2: unavailable presence
// goes to the user's other available resources; a resource that sent it explicitly and is still
// connected gets it back too, as Prosody reflects it (one that went away cannot).
awaitable<void> broadcast(Server& s, const SessionPtr& who, const xml::Element& p,
                          bool include_directed) {
  auto items = co_await roster_of(s, who->username());
  const std::string self_bare = who->jid().bare_str();
  const SharedPresence shared(p);
  const BlockingView* blocking = s.modules().service<BlockingView>();
  for (const auto& item : items) {
    if (!has_from(item.state)) continue;
    auto jid = xmpp::Jid::parse(item.jid);
    if (!jid || !s.is_local(*jid)) continue;
    // XEP-0191 §3.3, §3.5: no presence between a user and a JID either of them blocks.
    if (blocking != nullptr && blocking->blocked_either_way(who->jid(), *jid)) continue;
    shared.send_to_account(s, jid->bare_str());
  }
  bool sender_got_it = false;
  for (auto& own : available_sessions(s, self_bare)) {
    sender_got_it = sender_got_it || own.session.get() == who.get();
    shared.send(own.session, own.session->jid().str());
  }
  if (!sender_got_it && !who->closed()) shared.send(who, who->jid().str());
  if (include_directed) {
    auto& directed_to = who->ext<PresenceState>().directed_to;
    for (const auto& target : directed_to) {
      auto jid = xmpp::Jid::parse(target);
      if (!jid) continue;
      xml::Element copy = p;
      copy.set_attr("to", target);
      co_await s.deliver(std::move(copy));
    }
    directed_to.clear();
  }
}

// A resource that is not available for broadcast but sent directed presence (§4.6: a bot, a
// transfer's short-lived resource) goes unavailable for those it sent it to, and only them.
awaitable<void> directed_unavailable(Server& s, const SessionPtr& who, const xml::Element& p) {
  std::set<std::string> targets;
  targets.swap(who->ext<PresenceState>().directed_to);
  for (const auto& target : targets) {
    xml::Element copy = p;
    copy.set_attr("to", target);
    co_await s.deliver(std::move(copy));
  }
}

// §4.2.2/§4.3: on initial presence the server probes the contacts the user subscribes to and
// hands the user their current presence, and that of the user's other resources.
awaitable<void> initial_presence(Server& s, const SessionPtr& who) {
  auto items = co_await roster_of(s, who->username());
  const std::string me = who->jid().str();
  std::vector<std::string> requests;
  const BlockingView* blocking = s.modules().service<BlockingView>();
  for (auto& item : items) {
    if (has_to(item.state)) {
      auto jid = xmpp::Jid::parse(item.jid);
      if (jid && s.is_local(*jid) &&
          (blocking == nullptr || !blocking->blocked_either_way(who->jid(), *jid))) {
        for (auto& contact : available_sessions(s, jid->bare_str())) {
          who->send(presence_of(contact, me));
        }
      }
    }
    // §3.1.3: subscription requests that arrived while the user was away.
    if (item.state.pending_in && !item.pending_in_stanza.empty()) {
      requests.push_back(std::move(item.pending_in_stanza));
    }
  }
  // Each request may be as large as a stanza may be, and every contact may have sent one: paced,
  // so that a login is never cut off by its own output cap.
  send_paced(who, std::move(requests));
  for (auto& other : available_sessions(s, who->jid().bare_str())) {
    if (other.session.get() != who.get()) who->send(presence_of(other, me));
  }
}

}  // namespace

awaitable<void> handle_presence(Server& s, SessionPtr from, xml::Element p) {
  std::string type(p.attr("type"));
  if (auto sub = xmpp::parse_subscription_type(type)) {
    co_await outbound_subscription(s, from, std::move(p), *sub);
    co_return;
  }
  if (type == "probe") co_return;  // clients do not probe (§4.3)
  if (!type.empty() && type != "unavailable" && type != "error") {
    from->send(xmpp::make_error_reply(p, xmpp::ErrorType::kModify, "bad-request"));
    co_return;
  }
  if (p.has_attr("to")) {
    // Directed presence (§4.6).
    auto to = xmpp::Jid::parse(p.attr("to"));
    if (!to || !s.is_local(*to)) co_return;
    if (type.empty()) {
      from->ext<PresenceState>().directed_to.insert(to->str());
    } else if (type == "unavailable") {
      from->ext<PresenceState>().directed_to.erase(to->str());
    }
    co_await s.deliver(std::move(p));
    co_return;
  }
  if (type == "error") co_return;
  if (type == "unavailable") {
    if (!from->available) {
      // Directed presence only (never available for broadcast): those who got it learn.
      co_await directed_unavailable(s, from, p);
      co_return;
    }
    from->available = false;
    from->last_presence.reset();
    s.publish(*from);
    co_await broadcast(s, from, p, true);
    co_return;
  }
  // Available presence: §4.2 (initial) or §4.4 (subsequent).
  int priority = 0;
  if (const xml::Element* pr = p.child("priority", ns::kClient)) {
    std::string text = pr->text();
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), priority);
    if (ec != std::errc() || ptr != text.data() + text.size() || priority < -128 ||
        priority > 127) {
      from->send(xmpp::make_error_reply(p, xmpp::ErrorType::kModify, "bad-request"));
      co_return;
    }
  }
  const bool initial = !from->available;
  from->available = true;
  from->priority = priority;
  auto stored = std::make_shared<xml::Element>(p);
  stored->remove_attr("to");
  from->last_presence = std::move(stored);
  s.publish(*from);
  co_await broadcast(s, from, p, false);
  if (initial) {
    co_await initial_presence(s, from);
    // The offline module delivers stored messages here (XEP-0160).
    co_await s.fire(SessionEvent::kAvailable, from);
  }
}

awaitable<void> deliver_presence(Server& s, xml::Element p) {
  auto to = xmpp::Jid::parse(p.attr("to"));
  if (!to || to->local().empty()) co_return;
  std::string type(p.attr("type"));
  if (auto sub = xmpp::parse_subscription_type(type)) {
    co_await inbound_subscription(s, std::move(p), *sub);
    co_return;
  }
  if (!to->is_bare()) {
    // §4.6.3: to a full JID, only that resource.
    if (auto target = s.bound_session(*to)) target->send(p);
    co_return;
  }
  send_to_account(s, to->bare_str(), std::move(p));
}

awaitable<void> broadcast_unavailable(Server& s, SessionPtr who, xml::Element presence) {
  who->available = false;
  s.publish(*who);
  co_await broadcast(s, who, presence, true);
}

namespace {

// After every other hook: presence processing ends a presence stanza's way.
constexpr int kLast = 1000;

class PresenceModule final : public Module {
 public:
  std::string_view name() const override { return "presence"; }

  void setup(ModuleContext& ctx) override {
    Server& s = ctx.server();
    // RFC 6121 §3.4: subscription pre-approval is announced as a stream feature.
    ctx.stream_feature(xml::Element("sub", ns::kPreApproval));
    ctx.hook(
        Hook::kPresenceOut,
        [&s](SessionPtr from, xml::Element& p) -> awaitable<HookResult> {
          co_await handle_presence(s, std::move(from), std::move(p));
          co_return HookResult::kStop;
        },
        kLast);
    ctx.hook(
        Hook::kPresenceIn,
        [&s](SessionPtr, xml::Element& p) -> awaitable<HookResult> {
          co_await deliver_presence(s, std::move(p));
          co_return HookResult::kStop;
        },
        kLast);
    // §4.5.2: a session that ends while available goes unavailable for everyone who saw it; one
    // that only sent directed presence, for those it sent it to (§4.6, as Prosody does).
    ctx.on(SessionEvent::kClosed, [&s](SessionPtr who) -> awaitable<void> {
      xml::Element unavailable("presence", ns::kClient);
      unavailable.set_attr("type", "unavailable");
      unavailable.set_attr("from", who->jid().str());
      if (who->available)
        co_await broadcast_unavailable(s, who, std::move(unavailable));
      else
        co_await directed_unavailable(s, who, unavailable);
    });
  }
};

}  // namespace

std::unique_ptr<Module> make_presence_module() { return std::make_unique<PresenceModule>(); }

}  // namespace kabar::server
