#include "client/filetransfer_impl.h"
#include "xmpp/stanza.h"

namespace kabar::client {

// Claims a Jingle IQ that belongs to a file transfer: a session-initiate offering a file
// (an XEP-0234 description), or an action on one of our sessions from its peer. Anything else
// is left to the session's other Jingle handlers (calls), or to its unknown-session answer.
bool FileTransfer::Impl::on_jingle_iq(const xml::Element& iq) {
  const xml::Element* j = iq.first_child();
  bool ours = false;
  if (j->attr("action") == "session-initiate") {
    const xml::Element* c = j->child("content", jingle::kJingle);
    ours = c && c->child("description", jingle::kFileTransfer);
  } else {
    auto known = sessions.find(std::string(j->attr("sid")));
    ours = known != sessions.end() && !known->second->si && known->second->peer == iq.attr("from");
  }
  if (!ours) return false;
  handle_jingle_iq(iq);
  return true;
}

void FileTransfer::Impl::handle_jingle_iq(const xml::Element& iq) {
  if (iq.attr("type") != "set") {
    client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "bad-request"));
    return;
  }
  std::string why;
  auto a = jingle::parse(*iq.first_child(), why);
  if (!a) {
    client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request", why));
    return;
  }
  std::string from(iq.attr("from"));
  auto it = sessions.find(a->sid);
  if (a->action == "session-initiate") {
    if (it != sessions.end()) {
      client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "conflict"));
      return;
    }
    client->send_stanza(xmpp::make_iq_result(iq));
    start_receiving(from, std::move(*a));
    return;
  }
  if (it == sessions.end() || it->second->peer != from) {
    // XEP-0166 §7.2.1 (unknown-session)
    xml::Element e = xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "item-not-found");
    if (xml::Element* er = e.child("error"))
      er->add_child("unknown-session", "urn:xmpp:jingle:errors:1");
    client->send_stanza(e);
    return;
  }
  client->send_stanza(xmpp::make_iq_result(iq));
  if (a->action == "session-terminate" && it->second->reading) {
    // The sender gave up on this stream: stop waiting for its bytes.
    error_code ig;
    it->second->reading->close(ig);
  }
  it->second->actions.push_back(std::move(*a));
  it->second->notify();
}

void FileTransfer::Impl::on_ibb_iq(const xml::Element& iq) {
  const xml::Element* q = iq.first_child();
  std::string sid(q->attr("sid"));
  std::string from(iq.attr("from"));
  for (auto& [id, s] : sessions) {
    if (!s->sending && s->ibb_sid == sid && s->peer == from && iq.attr("type") == "set") {
      if (s->iqs.size() > 64) break;  // a sender ignoring our acks
      s->iqs.push_back(iq);
      s->notify();
      return;
    }
  }
  client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "item-not-found"));
}

// Waits until the session has something queued or `until` passes; false on timeout.
awaitable<bool> FileTransfer::Impl::wait(Session& s, std::chrono::steady_clock::time_point until) {
  while (s.actions.empty() && s.iqs.empty() && !s.closed && !s.decision) {
    if (std::chrono::steady_clock::now() >= until) co_return false;
    s.signal.expires_at(until);
    error_code ec;
    co_await s.signal.async_wait(asio::redirect_error(use_awaitable, ec));
    if (!client->connected()) co_return false;
  }
  co_return true;
}

// The next Jingle action, or nullopt on timeout.
awaitable<std::optional<jingle::Action>> FileTransfer::Impl::next_action(
    Session& s, std::chrono::seconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (!s.actions.empty()) {
      jingle::Action a = std::move(s.actions.front());
      s.actions.pop_front();
      co_return a;
    }
    if (!s.iqs.empty()) {
      // IBB before the transport was replaced: refuse it.
      client->send_stanza(
          xmpp::make_error_reply(s.iqs.front(), xmpp::ErrorType::kCancel, "not-acceptable"));
      s.iqs.pop_front();
      continue;
    }
    if (!co_await wait(s, until)) co_return std::nullopt;
  }
}

awaitable<std::optional<xml::Element>> FileTransfer::Impl::send_jingle(const Session& s,
                                                                       const jingle::Action& a) {
  xml::Element iq("iq", "jabber:client");
  iq.set_attr("type", "set").set_attr("to", s.peer);
  iq.add_child(jingle::build(a));
  co_return co_await client->send_iq(std::move(iq));
}

jingle::Action FileTransfer::Impl::action(const Session& s, std::string name) {
  jingle::Action a;
  a.action = std::move(name);
  a.sid = s.sid;
  a.content_name = s.content_name;
  a.creator = "initiator";
  return a;
}

void FileTransfer::Impl::terminate(Session& s, const std::string& reason) {
  jingle::Action a;
  a.action = "session-terminate";
  a.sid = s.sid;
  a.reason = reason;
  xml::Element iq("iq", "jabber:client");
  iq.set_attr("type", "set").set_attr("to", s.peer).set_attr("id", "t" + random_id());
  iq.add_child(jingle::build(a));
  client->send_stanza(iq);
}

void FileTransfer::Impl::end(const SessionPtr& s) {
  s->closed = true;
  error_code ig;
  if (s->acceptor) s->acceptor->close(ig);
  if (s->direct) s->direct->close(ig);
  s->reading = nullptr;
  sessions.erase(s->sid);
}

}  // namespace kabar::client
