#include "client/client_impl.h"
#include "xmpp/scram.h"

namespace kabar::client {

void Client::Impl::handle_message(xml::Element& el) {
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
  if (m.type == "error") {
    m.error = error_condition(el);
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

std::string Client::send_message(const std::string& to, const std::string& body) {
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
