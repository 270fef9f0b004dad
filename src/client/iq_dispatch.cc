#include <algorithm>

#include "client/client_impl.h"
#include "xmpp/caps.h"
#include "xmpp/jingle.h"
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

bool Client::Impl::answers(std::string_view to, std::string_view from) {
  // Our server (and our account, which it serves) is trusted to answer for itself.
  if (to.empty() || to == jid.bare_str() || to == jid.domain()) return from_self_or_server(from);
  if (from.empty()) return false;
  auto t = xmpp::Jid::parse(to);
  auto f = xmpp::Jid::parse(from);
  return t && f && *t == *f;
}

void Client::Impl::handle_iq(xml::Element& el) {
  std::string type(el.attr("type"));
  if (type == "result" || type == "error") {
    auto it = pending.find(std::string(el.attr("id")));
    // RFC 6120 §8.1.2.1 and §10.3: only the addressee may answer; for a request to our own
    // account (no 'to', or our bare JID) or to our domain, that is our server, which may leave
    // 'from' out. A reply from anyone else with a guessed id is not a reply: ignore it.
    if (it == pending.end() || !answers(it->second->to, el.attr("from"))) return;
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
      // A request answered from another resource of ours no longer waits (RFC 6121 §3.1.5).
      if (removed || ri.subscription == "from" || ri.subscription == "both")
        requests.erase(std::remove(requests.begin(), requests.end(), ri.jid), requests.end());
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
  if (q && handlers.offer(StanzaKind::kIq, el)) return;
  if (type == "get" && q && q->is("query", ns::kDiscoInfo)) {
    // XEP-0115 §6.2: asked for node#ver of our caps, the same answer with that node; any other
    // node is not ours (XEP-0030 §3.2: item-not-found).
    std::string_view node = q->attr("node");
    xml::Element info = own_disco_info();
    if (!node.empty()) {
      if (node != std::string(Client::kCapsNode) + '#' + xmpp::caps_ver(info).value_or("")) {
        send(xmpp::make_error_reply(el, xmpp::ErrorType::kCancel, "item-not-found"));
        return;
      }
      info.set_attr("node", node);
    }
    xml::Element r = xmpp::make_iq_result(el);
    r.add_child(std::move(info));
    send(r);
    return;
  }
  answer_unclaimed(el);
}

void Client::Impl::answer_unclaimed(const xml::Element& iq) {
  const xml::Element* q = iq.first_child();
  // Jingle sessions belong to the handler of their application (file transfer, calls). When one
  // is registered the client speaks Jingle, so an IQ none of them claimed gets XEP-0166's answers
  // rather than "Jingle unsupported".
  if (q && iq.attr("type") == "set" && q->is("jingle", xmpp::jingle::kJingle) &&
      handlers.has(StanzaKind::kIq, xmpp::jingle::kJingle)) {
    if (q->attr("action") == "session-initiate" && xmpp::jingle::valid_sid(q->attr("sid")) &&
        !iq.attr("from").empty()) {
      // XEP-0166 §6.3.1: the offer is acknowledged; §6.7: no application type we support, so the
      // session ends with <unsupported-applications/>.
      send(xmpp::make_iq_result(iq));
      xmpp::jingle::Action end;
      end.action = "session-terminate";
      end.sid = std::string(q->attr("sid"));
      end.reason = "unsupported-applications";
      xml::Element t("iq", ns::kClient);
      t.set_attr("type", "set").set_attr("to", iq.attr("from")).set_attr("id", new_id());
      t.add_child(xmpp::jingle::build(end));
      send(t);
      return;
    }
    // XEP-0166 §6.7 and §10: an action for a session nobody here knows.
    xml::Element e = xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "item-not-found");
    if (xml::Element* er = e.child("error"))
      er->add_child("unknown-session", "urn:xmpp:jingle:errors:1");
    send(e);
    return;
  }
  // RFC 6120 §8.4: an IQ get/set nobody handles is answered with service-unavailable.
  send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
}

HandlerToken Client::add_iq_handler(const std::string& xmlns, StanzaHandler handler) {
  return impl_->handlers.add(StanzaKind::kIq, xmlns, std::move(handler));
}

HandlerToken Client::add_message_handler(const std::string& xmlns, StanzaHandler handler) {
  return impl_->handlers.add(StanzaKind::kMessage, xmlns, std::move(handler));
}

HandlerToken Client::add_presence_handler(const std::string& xmlns, StanzaHandler handler) {
  return impl_->handlers.add(StanzaKind::kPresence, xmlns, std::move(handler));
}

bool Client::remove_handler(HandlerToken token) { return impl_->handlers.remove(token); }

void Client::add_feature(const std::string& var) {
  auto& f = impl_->extra_features;
  if (std::find(f.begin(), f.end(), var) != f.end()) return;
  f.push_back(var);
  // XEP-0115 §4: our features changed, so does our ver: say so in a new presence, once for
  // features added together (FileTransfer adds eight).
  if (!impl_->is_connected || !impl_->own_presence || impl_->reannounce_posted) return;
  impl_->reannounce_posted = true;
  asio::post(impl_->io, [w = std::weak_ptr<Impl>(impl_)] {
    auto self = w.lock();
    if (!self) return;
    self->reannounce_posted = false;
    if (self->is_connected) self->announce_presence();
  });
}

}  // namespace kabar::client
