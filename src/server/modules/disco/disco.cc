// Service discovery (XEP-0030) for the server and for accounts.
#include "server/modules/disco/disco.h"

#include "server/c2s_session.h"
#include "server/features.h"
#include "server/modules/roster/roster_items.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

namespace kabar::server {

namespace ns = xmpp::ns;

namespace {

// Whether `requester` may learn about `target`'s account: itself, or a contact with a
// subscription to its presence (RFC 6121 §4.3-style presence authorization).
awaitable<bool> may_see(Server& s, const SessionPtr& requester, const std::string& target_user) {
  if (requester->username() == target_user) co_return true;
  std::string who = requester->jid().bare_str();
  auto op = [target_user, who](store::Store& st) { return st.roster_item(target_user, who); };
  auto item = co_await s.db(std::move(op));
  co_return item && (item->state.sub == xmpp::Subscription::kFrom ||
                     item->state.sub == xmpp::Subscription::kBoth);
}

awaitable<void> disco_info(Server& s, SessionPtr from, xml::Element iq) {
  if (iq.attr("type") != "get") {
    from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "not-allowed"));
    co_return;
  }
  const xml::Element* q = iq.first_child();
  std::string_view node = q->attr("node");
  auto to = iq.has_attr("to") ? xmpp::Jid::parse(iq.attr("to")) : std::optional<xmpp::Jid>();
  xml::Element reply = xmpp::make_iq_result(iq);
  PepService* pep = s.modules().service<PepService>();
  if (!node.empty()) {
    // A node of an account's PEP service (XEP-0060 §5.3); the server has no nodes.
    if (pep != nullptr && to && !to->is_domain() && to->is_bare()) {
      auto info = co_await pep->node_info(to->local(), std::string(node), from->jid().bare_str());
      if (info) {
        reply.add_child(std::move(*info));
        from->send(reply);
        co_return;
      }
    }
    from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "item-not-found"));
    co_return;
  }
  if (!to || to->is_domain()) {
    xml::Element q = disco_info_query(s.modules(), kToServer);
    if (!s.config().contact_addresses.empty()) {
      q.add_child(server_info_form(s.config().contact_addresses));
    }
    reply.add_child(std::move(q));
    from->send(reply);
    co_return;
  }
  // An account (XEP-0030 §3.1: the server answers for the bare JID).
  std::string user = to->local();
  auto op2 = [user](store::Store& st) { return st.account(user).has_value(); };
  bool exists = co_await s.db(std::move(op2));
  if (!exists || !co_await may_see(s, from, user)) {
    from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
    co_return;
  }
  reply.add_child(disco_info_query(s.modules(), kToAccount));
  from->send(reply);
}

awaitable<void> disco_items(Server& s, SessionPtr from, xml::Element iq) {
  if (iq.attr("type") != "get") {
    from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "not-allowed"));
    co_return;
  }
  const xml::Element* q = iq.first_child();
  if (!q->attr("node").empty()) {
    from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "item-not-found"));
    co_return;
  }
  auto to = iq.has_attr("to") ? xmpp::Jid::parse(iq.attr("to")) : std::optional<xmpp::Jid>();
  if (to && !to->is_domain()) {
    std::string user = to->local();
    auto op3 = [user](store::Store& st) { return st.account(user).has_value(); };
    bool exists = co_await s.db(std::move(op3));
    PepService* pep = s.modules().service<PepService>();
    if (!exists) {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
      co_return;
    }
    const bool contact = co_await may_see(s, from, user);
    // XEP-0163 §8.2: the account's PEP nodes the requester may see. Someone without a presence
    // subscription learns of the account only when it has nodes open to them.
    std::vector<std::string> nodes;
    if (pep != nullptr) nodes = co_await pep->visible_nodes(user, from->jid().bare_str());
    if (!contact && nodes.empty()) {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
      co_return;
    }
    xml::Element reply = xmpp::make_iq_result(iq);
    xml::Element& query = reply.add_child("query", ns::kDiscoItems);
    const std::string bare = to->bare_str();
    for (const auto& n : nodes) {
      xml::Element& item = query.add_child("item", ns::kDiscoItems);
      item.set_attr("jid", bare);
      item.set_attr("node", n);
    }
    from->send(reply);
    co_return;
  }
  xml::Element reply = xmpp::make_iq_result(iq);
  xml::Element& query = reply.add_child("query", ns::kDiscoItems);
  // The server's components (XEP-0030 §4): those the modules registered.
  if (!to || to->is_domain()) {
    for (const Component* c : s.modules().components()) {
      xml::Element& item = query.add_child("item", ns::kDiscoItems);
      item.set_attr("jid", c->jid());
      item.set_attr("name", c->disco_name());
    }
  }
  from->send(reply);
}

}  // namespace

xml::Element server_info_form(
    const std::vector<std::pair<std::string, std::vector<std::string>>>& addresses) {
  // XEP-0157 §2: the serverinfo form, one field per kind of address (XEP-0128 extended info).
  xml::Element x("x", ns::kDataForms);
  x.set_attr("type", "result");
  xml::Element& type = x.add_child("field", ns::kDataForms);
  type.set_attr("var", "FORM_TYPE");
  type.set_attr("type", "hidden");
  type.add_child("value", ns::kDataForms).add_text("http://jabber.org/network/serverinfo");
  for (const auto& [kind, uris] : addresses) {
    xml::Element& f = x.add_child("field", ns::kDataForms);
    f.set_attr("var", kind + "-addresses");
    f.set_attr("type", "list-multi");
    for (const auto& u : uris) f.add_child("value", ns::kDataForms).add_text(u);
  }
  return x;
}

xml::Element disco_info_query(const ModuleRegistry& registry, Target target) {
  xml::Element query("query", ns::kDiscoInfo);
  for (const DiscoIdentity& i : registry.disco_identities(target)) {
    xml::Element& id = query.add_child("identity", ns::kDiscoInfo);
    id.set_attr("category", i.category);
    id.set_attr("type", i.type);
    if (!i.name.empty()) id.set_attr("name", i.name);
  }
  for (const std::string& f : registry.disco_features(target)) {
    query.add_child("feature", ns::kDiscoInfo).set_attr("var", f);
  }
  return query;
}

namespace {

class DiscoModule final : public Module {
 public:
  std::string_view name() const override { return "disco"; }

  void setup(ModuleContext& ctx) override {
    Server& s = ctx.server();
    // XEP-0030 §3.1: the server is a server/im; §3.1 and RFC 6121: the server answers for an
    // account's bare JID, which is an account/registered.
    ctx.disco_identity({"server", "im", "kabar"}, kToServer);
    ctx.disco_identity({"account", "registered", ""}, kToAccount);
    ctx.disco_feature(ns::kDiscoInfo, kToServerOrAccount);
    ctx.disco_feature(ns::kDiscoItems, kToServerOrAccount);
    ctx.iq(ns::kDiscoInfo, [&s](SessionPtr from, xml::Element iq) {
      return disco_info(s, std::move(from), std::move(iq));
    });
    ctx.iq(ns::kDiscoItems, [&s](SessionPtr from, xml::Element iq) {
      return disco_items(s, std::move(from), std::move(iq));
    });
  }
};

}  // namespace

std::unique_ptr<Module> make_disco_module() { return std::make_unique<DiscoModule>(); }

}  // namespace kabar::server
