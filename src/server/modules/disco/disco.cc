// Service discovery (XEP-0030) for the server and for accounts.
#include "server/c2s_session.h"
#include "server/features.h"
#include "server/modules/proxy65/proxy65.h"
#include "server/modules/roster/roster_items.h"
#include "server/modules/upload/upload.h"
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
  if (!node.empty()) {
    from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "item-not-found"));
    co_return;
  }
  xml::Element& query = reply.add_child("query", ns::kDiscoInfo);
  if (!to || to->is_domain()) {
    xml::Element& id = query.add_child("identity", ns::kDiscoInfo);
    id.set_attr("category", "server");
    id.set_attr("type", "im");
    id.set_attr("name", "kabar");
    for (const char* f : {ns::kDiscoInfo, ns::kDiscoItems, ns::kVersion, ns::kPing, ns::kLast,
                          ns::kVcard, ns::kOffline, ns::kRoster, ns::kRosterVer}) {
      query.add_child("feature", ns::kDiscoInfo).set_attr("var", f);
    }
    if (s.config().allow_registration) {
      query.add_child("feature", ns::kDiscoInfo).set_attr("var", ns::kRegister);
    }
    query.add_child("feature", ns::kDiscoInfo).set_attr("var", "urn:xmpp:extdisco:2");
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
  xml::Element& id = query.add_child("identity", ns::kDiscoInfo);
  id.set_attr("category", "account");
  id.set_attr("type", "registered");
  for (const char* f : {ns::kDiscoInfo, ns::kDiscoItems, ns::kVcard, ns::kLast}) {
    query.add_child("feature", ns::kDiscoInfo).set_attr("var", f);
  }
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
    if (!exists || !co_await may_see(s, from, user)) {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
      co_return;
    }
  }
  xml::Element reply = xmpp::make_iq_result(iq);
  xml::Element& query = reply.add_child("query", ns::kDiscoItems);
  // The server's components (XEP-0030 §4): the file-transfer proxy, when there is one.
  if ((!to || to->is_domain()) && s.upload() != nullptr) {
    xml::Element& item = query.add_child("item", ns::kDiscoItems);
    item.set_attr("jid", s.upload()->jid());
    item.set_attr("name", "HTTP File Upload");
  }
  if ((!to || to->is_domain()) && s.proxy65() != nullptr) {
    xml::Element& item = query.add_child("item", ns::kDiscoItems);
    item.set_attr("jid", s.proxy65()->jid());
    item.set_attr("name", "SOCKS5 Bytestreams Service");
  }
  from->send(reply);
}

}  // namespace

void register_disco(Server& s) {
  s.register_iq(ns::kDiscoInfo, [&s](SessionPtr from, xml::Element iq) {
    return disco_info(s, std::move(from), std::move(iq));
  });
  s.register_iq(ns::kDiscoItems, [&s](SessionPtr from, xml::Element iq) {
    return disco_items(s, std::move(from), std::move(iq));
  });
}

}  // namespace kabar::server
