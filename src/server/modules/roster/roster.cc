// jabber:iq:roster: get, set and remove (RFC 6121 §2), with versioning (XEP-0237).
#include <spdlog/spdlog.h>

#include <set>

#include "server/c2s_session.h"
#include "server/features.h"
#include "server/modules/roster/roster_items.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

namespace kabar::server {

namespace ns = xmpp::ns;

std::string bare_of(Server& s, const std::string& user) { return user + "@" + s.config().domain; }

xml::Element roster_item_element(const store::RosterItem& item, bool removed) {
  xml::Element el("item", ns::kRoster);
  el.set_attr("jid", item.jid);
  if (removed) {
    el.set_attr("subscription", "remove");
    return el;
  }
  if (!item.name.empty()) el.set_attr("name", item.name);
  el.set_attr("subscription", xmpp::subscription_name(item.state.sub));
  if (item.state.pending_out) el.set_attr("ask", "subscribe");
  if (item.state.preapproved) el.set_attr("approved", "true");
  for (const auto& g : item.groups) el.add_child("group", ns::kRoster).add_text(g);
  return el;
}

void push_roster_item(Server& s, const std::string& user, const store::RosterItem& item,
                      std::int64_t version, bool removed) {
  if (!item.in_roster && !removed) return;
  for (auto& r : s.resources_of(bare_of(s, user))) {
    if ((r.flags & kRosterInterested) == 0) continue;
    const SessionPtr& session = r.session;
    xml::Element iq("iq", ns::kClient);
    iq.set_attr("type", "set");
    iq.set_attr("to", session->jid().str());
    iq.set_attr("id", "push" + std::to_string(version));
    xml::Element& q = iq.add_child("query", ns::kRoster);
    q.set_attr("ver", std::to_string(version));
    q.add_child(roster_item_element(item, removed));
    session->send(iq);
  }
}

// Sends a subscription stanza on the user's behalf as if the user had sent it (used by remove).
awaitable<void> send_subscription(Server& s, SessionPtr from, const std::string& contact,
                                  std::string_view type) {
  xml::Element p("presence", ns::kClient);
  p.set_attr("type", type);
  p.set_attr("to", contact);
  p.set_attr("from", from->jid().str());
  co_await handle_presence(s, from, std::move(p));
}

namespace {

awaitable<void> roster_get(Server& s, SessionPtr from, xml::Element iq) {
  const std::string user = from->username();
  s.set_resource_flags(*from, kRosterInterested, true);
  const xml::Element* q = iq.child("query", ns::kRoster);
  std::string client_ver(q->attr("ver"));
  bool has_ver = q->has_attr("ver");
  auto op = [user](store::Store& st) {
    return std::make_pair(st.roster_version(user), st.roster(user));
  };
  auto [version, items] = co_await s.db(std::move(op));
  xml::Element reply = xmpp::make_iq_result(iq);
  reply.remove_attr("from");
  // XEP-0237 §3.3 / RFC 6121 §2.6.3: an unchanged roster is answered with an empty result.
  if (has_ver && client_ver == std::to_string(version)) {
    from->send(reply);
    co_return;
  }
  xml::Element& query = reply.add_child("query", ns::kRoster);
  query.set_attr("ver", std::to_string(version));
  for (const auto& item : items) {
    if (item.in_roster) query.add_child(roster_item_element(item));
  }
  from->send(reply);
}

awaitable<void> roster_set(Server& s, SessionPtr from, xml::Element iq) {
  const std::string user = from->username();
  const xml::Element* q = iq.child("query", ns::kRoster);
  auto items = q->children("item", ns::kRoster);
  // RFC 6121 §2.3.3: exactly one item.
  if (items.size() != 1) {
    from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request"));
    co_return;
  }
  const xml::Element& it = *items[0];
  auto jid = xmpp::Jid::parse(it.attr("jid"));
  if (!jid) {
    from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "jid-malformed"));
    co_return;
  }
  std::string contact = jid->str();  // roster items may be full JIDs; usually bare
  std::string_view sub = it.attr("subscription");
  if (sub == "remove") {
    auto op2 = [user, contact](store::Store& st) { return st.roster_item(user, contact); };
    auto existing = co_await s.db(std::move(op2));
    if (!existing || !existing->in_roster) {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "item-not-found"));
      co_return;
    }
    // RFC 6121 §2.5.2: cancel both directions on the user's behalf before removing.
    const auto& st = existing->state;
    if (st.sub == xmpp::Subscription::kTo || st.sub == xmpp::Subscription::kBoth ||
        st.pending_out) {
      co_await send_subscription(s, from, contact, "unsubscribe");
    }
    if (st.sub == xmpp::Subscription::kFrom || st.sub == xmpp::Subscription::kBoth ||
        st.pending_in) {
      co_await send_subscription(s, from, contact, "unsubscribed");
    }
    auto op3 = [user, contact](store::Store& st2) {
      st2.remove_roster_item(user, contact);
      return st2.roster_version(user);
    };
    auto version = co_await s.db(std::move(op3));
    xml::Element reply = xmpp::make_iq_result(iq);
    reply.remove_attr("from");
    from->send(reply);
    store::RosterItem gone;
    gone.jid = contact;
    push_roster_item(s, user, gone, version, true);
    co_return;
  }
  if (!sub.empty() && sub != "none" && sub != "to" && sub != "from" && sub != "both") {
    from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request"));
    co_return;
  }
  std::vector<std::string> groups;
  std::set<std::string> seen;
  for (const xml::Element* g : it.children("group", ns::kRoster)) {
    std::string name = g->text();
    // RFC 6121 §2.3.3: empty or duplicate group names are refused.
    if (name.empty() || !seen.insert(name).second || name.size() > 1024) {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request"));
      co_return;
    }
    groups.push_back(std::move(name));
  }
  std::string name(it.attr("name"));
  // The client cannot set subscription state or 'ask' (RFC 6121 §2.1.2.5); they are kept.
  auto op4 = [user, contact, name, groups](store::Store& st) {
    auto existing = st.roster_item(user, contact);
    store::RosterItem item = existing ? *existing : store::RosterItem{};
    item.jid = contact;
    item.name = name;
    item.groups = groups;
    item.in_roster = true;
    std::int64_t v = st.put_roster_item(user, item);
    return std::make_pair(item, v);
  };
  auto [item, version] = co_await s.db(std::move(op4));
  xml::Element reply = xmpp::make_iq_result(iq);
  reply.remove_attr("from");
  from->send(reply);
  push_roster_item(s, user, item, version);
}

class RosterModule final : public Module {
 public:
  std::string_view name() const override { return "roster"; }
  void setup(ModuleContext& ctx) override;
};

void RosterModule::setup(ModuleContext& ctx) {
  Server& s = ctx.server();
  ctx.disco_feature(ns::kRoster);
  ctx.disco_feature(ns::kRosterVer);
  // XEP-0237 §2: roster versioning is announced as a stream feature.
  ctx.stream_feature(xml::Element("ver", ns::kRosterVer));
  ctx.iq(ns::kRoster, [&s](SessionPtr from, xml::Element iq) -> awaitable<void> {
    // RFC 6121 §2.1.5: only the user's own roster, addressed to no one or to the bare JID.
    std::string_view to = iq.attr("to");
    if (!to.empty() && to != from->jid().bare_str()) {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kAuth, "forbidden"));
      co_return;
    }
    if (iq.attr("type") == "get") {
      co_await roster_get(s, from, std::move(iq));
    } else {
      co_await roster_set(s, from, std::move(iq));
    }
  });
}

}  // namespace

std::unique_ptr<Module> make_roster_module() { return std::make_unique<RosterModule>(); }

}  // namespace kabar::server
