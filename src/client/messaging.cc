#include "client/client_impl.h"
#include "xmpp/scram.h"

namespace kabar::client {

Message Client::Impl::parse_message(const xml::Element& el) const {
  Message m;
  m.from = std::string(el.attr("from"));
  m.to = std::string(el.attr("to"));
  m.id = std::string(el.attr("id"));
  m.type = el.has_attr("type") ? std::string(el.attr("type")) : "normal";
  m.body = el.child_text("body");
  m.thread = el.child_text("thread");
  if (const xml::Element* d = el.child("delay", ns::kDelay))
    m.delay = std::string(d->attr("stamp"));
  for (const xml::Element* c : el.children()) {
    if (c->xmlns() == kChatStates) m.chat_state = c->name();
  }
  if (const xml::Element* r = el.child("received", kReceipts))
    m.receipt_for = std::string(r->attr("id"));
  m.receipt_requested = el.child("request", kReceipts) != nullptr;
  if (const xml::Element* x = el.child("x", "jabber:x:oob"))
    m.oob_url = x->child_text("url", "jabber:x:oob");
  if (m.type == "error") m.error = error_condition(el);
  // XEP-0359 §4: a stanza-id is trusted only from the archive that names itself in `by`, here
  // the account's own (a contact can put any stanza-id into what it sends).
  const std::string own = jid.bare_str();
  for (const xml::Element* sid : el.children("stanza-id", kStanzaId)) {
    if (sid->attr("by") == own) m.stanza_id = std::string(sid->attr("id"));
  }
  return m;
}

void Client::Impl::handle_message(xml::Element& el) {
  if (handlers.offer(StanzaKind::kMessage, el)) return;
  // XEP-0280 §7, §8: a copy of what another client of this account received or sent, wrapped
  // as <received/> or <sent/> around <forwarded><message/></forwarded>.
  const xml::Element* wrapper = el.child("received", kCarbons);
  const bool sent = wrapper == nullptr;
  if (sent) wrapper = el.child("sent", kCarbons);
  if (wrapper != nullptr) {
    // §11: only the account's own bare JID sends carbons; anything else claiming to be one
    // (a forgery from a contact, which would put words in our or another's mouth) is ignored,
    // as is every copy when carbons are off.
    auto from = xmpp::Jid::parse(el.attr("from"));
    if (!opt.carbons || !from || !from->is_bare() || from->bare_str() != jid.bare_str()) return;
    const xml::Element* fwd = wrapper->child("forwarded", kForward);
    const xml::Element* inner = fwd ? fwd->child("message") : nullptr;
    if (inner == nullptr) return;
    Message m = parse_message(*inner);
    m.carbon = true;
    m.outgoing = sent;
    // The copy's own stamp, when the forward carries one (XEP-0297), and the inner has none.
    if (m.delay.empty())
      if (const xml::Element* d = fwd->child("delay", ns::kDelay))
        m.delay = std::string(d->attr("stamp"));
    // Not answered (no receipt), and an error copy is not a bounce of one of ours.
    if (owner && owner->on_message) owner->on_message(m);
    return;
  }
  Message m = parse_message(el);
  if (m.type == "error") {
    bounced[m.id] = m;
  } else if (m.receipt_requested && !m.id.empty() && !m.from.empty()) {
    // XEP-0184 §5.1: acknowledge what we received.
    xml::Element ack("message", ns::kClient);
    ack.set_attr("to", m.from).set_attr("id", new_id());
    ack.add_child("received", kReceipts).set_attr("id", m.id);
    send(ack);
  }
  if (owner && owner->on_message) owner->on_message(m);
}

awaitable<void> Client::Impl::enable_carbons() {
  auto self = shared_from_this();
  carbons_on = false;
  if (!opt.carbons) co_return;
  xml::Element req("iq", ns::kClient);
  req.set_attr("type", "set");
  req.add_child("enable", kCarbons);
  // §4: a result enables them; an error (a server without carbons answers service-unavailable,
  // RFC 6120 §8.4) or no answer leaves the session without, which is no failure of the login.
  auto r = co_await iq(std::move(req));
  carbons_on = r && r->attr("type") == "result";
}

std::string Client::send_message(const std::string& to, const std::string& body) {
  if (check_text("the message", body)) return {};
  xml::Element m("message", ns::kClient);
  std::string id = impl_->new_id();
  m.set_attr("to", to).set_attr("type", "chat").set_attr("id", id);
  m.add_child("body", ns::kClient).add_text(body);
  m.add_child("request", kReceipts);
  m.add_child("active", kChatStates);
  impl_->send(m);
  return id;
}

void Client::send_chat_state(const std::string& to, const std::string& state) {
  xml::Element m("message", ns::kClient);
  m.set_attr("to", to).set_attr("type", "chat");
  m.add_child(state, kChatStates);
  impl_->send(m);
}

awaitable<Error> Client::ping() {
  auto self = impl_;
  xml::Element iq("iq", ns::kClient);
  iq.set_attr("type", "get").set_attr("to", self->jid.domain());
  iq.add_child("ping", ns::kPing);
  auto r = co_await self->iq(std::move(iq));
  if (!r) co_return self->iq_error(r, "ping");
  co_return Error{};  // an error reply still proves the server is alive
}

awaitable<Error> Client::send_message_checked(const std::string& to, const std::string& body) {
  auto self = impl_;
  auto j = xmpp::Jid::parse(to);
  if (!j) co_return err(Errc::kBadInput, "'" + to + "' is not a valid JID");
  if (Error e = check_text("the message", body)) co_return e;
  std::string id = send_message(j->str(), body);
  if (Error e = co_await ping()) co_return e;
  // A bounce from a remote router may trail the ping result a little.
  asio::steady_timer t(self->io, std::chrono::milliseconds(300));
  boost::system::error_code ec;
  co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
  auto it = self->bounced.find(id);
  if (it != self->bounced.end()) {
    const std::string& c = it->second.error;
    if (c == "service-unavailable" || c == "item-not-found" || c == "recipient-unavailable" ||
        c == "remote-server-not-found")
      co_return err(Errc::kNotFound, j->bare_str() + " is unknown to the server (" + c + ")");
    co_return err(Errc::kNotAllowed,
                  "the message to " + j->bare_str() + " was refused (" + c + ")");
  }
  co_return Error{};
}

}  // namespace kabar::client
