#include <algorithm>

#include "client/client_impl.h"
#include "xmpp/stanza.h"

namespace kabar::client {

void Client::Impl::dispatch(xml::Element& el) {
  if (el.name() == "iq")
    handle_iq(el);
  else if (el.name() == "message")
    handle_message(el);
  else if (el.name() == "presence")
    handle_presence(el);
}

bool Client::Impl::from_self_or_server(std::string_view from) {
  return from.empty() || from == jid.bare_str() || from == jid.domain() || from == bound;
}

void Client::Impl::handle_iq(xml::Element& el) {
  std::string type(el.attr("type"));
  if (type == "result" || type == "error") {
    auto it = pending.find(std::string(el.attr("id")));
    if (it == pending.end()) return;
    // RFC 6120 §10.3: only the addressee (or our own server for bare/none) may answer.
    it->second->done = true;
    it->second->reply = std::move(el);
    it->second->timer.cancel();
    return;
  }
  if (type != "get" && type != "set") return;
  const xml::Element* q = el.first_child();
  if (type == "set" && q && q->is("query", ns::kRoster)) {
    // RFC 6121 §2.1.6: a push is accepted only from our own account.
    if (!from_self_or_server(el.attr("from"))) {
      send(xmpp::make_error_reply(el, xmpp::ErrorType::kCancel, "service-unavailable"));
      return;
    }
    if (q->has_attr("ver")) roster_ver = std::string(q->attr("ver"));
    for (const xml::Element* item : q->children("item", ns::kRoster)) {
      RosterItem ri = parse_item(*item);
      bool removed = item->attr("subscription") == "remove";
      auto it = std::find_if(roster.begin(), roster.end(),
                             [&](const RosterItem& x) { return x.jid == ri.jid; });
      if (removed) {
        if (it != roster.end()) roster.erase(it);
      } else if (it != roster.end()) {
        *it = ri;
      } else {
        roster.push_back(ri);
      }
      if (owner && owner->on_roster_push) owner->on_roster_push(ri, removed);
    }
    save_roster();
    send(xmpp::make_iq_result(el));
    return;
  }
  if (type == "get" && q && q->is("ping", ns::kPing)) {
    send(xmpp::make_iq_result(el));
    return;
  }
  if (q) {
    if (auto h = iq_handlers.find(q->xmlns()); h != iq_handlers.end()) {
      auto handler = h->second;  // a copy: the handler may add or remove handlers
      handler(el);
      return;
    }
  }
  if (type == "get" && q && q->is("query", ns::kDiscoInfo)) {
    xml::Element r = xmpp::make_iq_result(el);
    xml::Element& info = r.add_child("query", ns::kDiscoInfo);
    info.add_child("identity", ns::kDiscoInfo)
        .set_attr("category", "client")
        .set_attr("type", "console")
        .set_attr("name", "kabar");
    for (const char* f : {ns::kDiscoInfo, ns::kPing, kReceipts, kChatStates})
      info.add_child("feature", ns::kDiscoInfo).set_attr("var", f);
    for (const auto& f : extra_features)
      info.add_child("feature", ns::kDiscoInfo).set_attr("var", f);
    send(r);
    return;
  }
  send(xmpp::make_error_reply(el, xmpp::ErrorType::kCancel, "service-unavailable"));
}

void Client::add_iq_handler(const std::string& xmlns,
                            std::function<void(const xml::Element&)> handler) {
  impl_->iq_handlers[xmlns] = std::move(handler);
}

void Client::add_feature(const std::string& var) {
  auto& f = impl_->extra_features;
  if (std::find(f.begin(), f.end(), var) == f.end()) f.push_back(var);
}

}  // namespace kabar::client
