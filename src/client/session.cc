#include <stdexcept>

#include "client/client_impl.h"
#include "xmpp/scram.h"

namespace kabar::client {

std::string Client::Impl::new_id() {
  return "k" + std::to_string(++next_id) + xmpp::base64_encode(xmpp::random_bytes(3));
}

void Client::Impl::start_loops() {
  running = true;
  closed_signal.expires_at(asio::steady_timer::time_point::max());
  start_link();
}

void Client::Impl::start_link() {
  link_down = false;
  const std::uint64_t gen = ++link_gen;
  last_rx = Clock::now();
  auto self = shared_from_this();
  asio::co_spawn(
      io, [self, gen]() -> awaitable<void> { co_await self->reader(gen); }, asio::detached);
  if (sm.on()) {
    asio::co_spawn(
        io, [self, gen]() -> awaitable<void> { co_await self->ticker(gen); }, asio::detached);
  }
}

bool Client::Impl::take(xml::Element& el, Error& why) {
  if (el.is("error", ns::kStream)) {
    std::string cond = "undefined-condition";
    for (const xml::Element* c : el.children())
      if (c->xmlns() == ns::kStreams && c->name() != "text") cond = c->name();
    if (cond == "conflict")
      why = err(Errc::kConflict,
                "another client logged in with the same resource (" + opt.resource + ")");
    else
      why = err(Errc::kDisconnected, "the server ended the stream: " + cond);
    return true;
  }
  if (sm.state() == xmpp::stream::SmClient::State::kOff) {
    dispatch(el);
    return true;
  }
  switch (sm.inbound(el)) {
    case xmpp::stream::SmClient::Input::kStanza:
      dispatch(el);
      break;
    case xmpp::stream::SmClient::Input::kRequest:
      // XEP-0198 §4: an <r/> MUST be answered, and not withheld.
      send_raw(sm.ack());
      break;
    case xmpp::stream::SmClient::Input::kTooHigh:
      // XEP-0198 §6: the server acknowledged more than we sent.
      send_raw(
          "<stream:error><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
          "<handled-count-too-high xmlns='urn:xmpp:sm:3' h='" +
          std::string(el.attr("h")) + "' send-count='" + std::to_string(sm.sent()) +
          "'/></stream:error></stream:stream>");
      why = err(Errc::kProtocol, "the server acknowledged stanzas we never sent");
      return false;
    default:
      break;
  }
  return true;
}

awaitable<void> Client::Impl::reader(std::uint64_t gen) {
  auto self = shared_from_this();
  Error why;
  bool lost = false;  // the connection failed under a live stream: resumable
  try {
    while (!uncounted.empty()) {
      xml::Element el = std::move(uncounted.front());
      uncounted.pop_front();
      dispatch(el);
    }
    bool more = true;
    while (more) {
      while (more && !inbox.empty() && gen == link_gen) {
        xml::Element el = std::move(inbox.front());
        inbox.pop_front();
        more = take(el, why);
      }
      if (gen != link_gen) co_return;
      if (!more || stream_closed || why) break;
      // Acknowledge a long run at once (XEP-0198 §4 allows an <a/> at any time); a short one
      // is acknowledged by the ticker when the server goes quiet.
      if (sm.on() && sm.unacked_inbound() >= 20) send_raw(sm.ack());
      co_await read_more();
      if (gen != link_gen) co_return;
      last_rx = Clock::now();
    }
  } catch (const boost::system::system_error& e) {
    if (gen != link_gen) co_return;
    if (!closing) {
      why = err(Errc::kDisconnected, "the connection was lost: " + e.code().message());
      lost = !parse_failed;
    }
  } catch (const std::exception& e) {
    if (gen != link_gen) co_return;
    if (!closing) why = err(Errc::kDisconnected, e.what());
  }
  if (!why && !closing) why = err(Errc::kDisconnected, "the server closed the stream");
  // XEP-0198 §5: a connection that failed (no </stream:stream>, no stream error) is resumed.
  if (lost && !closing && is_connected && sm.resumable()) {
    asio::co_spawn(
        io, [self, why]() -> awaitable<void> { co_await self->relink(why); }, asio::detached);
    co_return;
  }
  finish(why);
}

// While stream management is on: requests an ack for what is unacknowledged, acknowledges what
// came in once the server goes quiet, and declares the connection dead when an ack request
// stays unanswered (XEP-0198 §4 is silent on timing; these are the client's choices).
awaitable<void> Client::Impl::ticker(std::uint64_t gen) {
  auto self = shared_from_this();
  const auto tick = std::chrono::milliseconds(200);
  asio::steady_timer t(io);
  std::uint64_t acks_seen = sm.acks_received();
  Clock::time_point waiting_since = Clock::now();
  while (gen == link_gen && !link_down) {
    t.expires_after(tick);
    boost::system::error_code ec;
    co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
    if (gen != link_gen || link_down || !sm.on()) co_return;
    const auto now = Clock::now();
    if (sm.unacked() > 0 && !sm.request_outstanding() && now - last_tx >= tick)
      send_raw(sm.request());
    if (sm.unacked_inbound() > 0 && now - last_rx >= tick) send_raw(sm.ack());
    if (opt.keepalive.count() > 0 && !sm.request_outstanding() && now - last_rx >= opt.keepalive)
      send_raw(sm.request());
    if (!sm.request_outstanding() || sm.acks_received() != acks_seen) {
      acks_seen = sm.acks_received();
      waiting_since = now;
    }
    const auto limit = opt.keepalive.count() > 0 ? opt.keepalive : opt.timeout;
    if (sm.request_outstanding() && now - waiting_since >= limit && now - last_rx >= limit) {
      // No answer: the reader sees the socket closed and resumes.
      close_socket();
      co_return;
    }
  }
}

awaitable<void> Client::Impl::relink(Error why) {
  auto self = shared_from_this();
  link_down = true;
  ++link_gen;
  outq.clear();
  close_socket();
  if (owner && owner->on_connection)
    owner->on_connection({ConnectionEvent::Kind::kLost, why.message + "; reconnecting", 0});
  std::chrono::milliseconds delay(500);
  asio::steady_timer t(io);
  Error e;
  for (int attempt = 0;; ++attempt) {
    // The writer lets go of the old connection first (its write fails on the closed socket).
    while (writing) {
      t.expires_after(std::chrono::milliseconds(10));
      boost::system::error_code ec;
      co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
    }
    if (closing || !is_connected) co_return;
    resuming = true;
    e = co_await establish();
    resuming = false;
    if (closing || !is_connected) {
      close_socket();
      co_return;
    }
    if (!e) break;
    if ((e.code != Errc::kUnreachable && e.code != Errc::kTimeout &&
         e.code != Errc::kDisconnected) ||
        attempt >= 1000) {
      finish(e);
      co_return;
    }
    t.expires_after(delay);
    boost::system::error_code ec;
    co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
    if (closing || !is_connected) co_return;
    delay = std::min(delay * 2, std::chrono::milliseconds(30000));
  }
  if (resume_answer) {
    std::optional<std::string> again;
    if (auto h = xmpp::stream::sm_h(*resume_answer)) again = sm.resumed(*h);
    if (!again) {
      // XEP-0198 §6 (or no usable 'h' at all): the stream cannot go on.
      co_await write_raw(
          "<stream:error><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
          "</stream:error></stream:stream>");
      finish(err(Errc::kProtocol, "the server resumed with a count of stanzas we never sent"));
      co_return;
    }
    const std::size_t n = sm.unacked();
    start_link();
    last_tx = Clock::now();
    if (!again->empty()) send_raw(std::move(*again));
    if (owner && owner->on_connection)
      owner->on_connection({ConnectionEvent::Kind::kResumed, "reconnected; session resumed", n});
    co_return;
  }
  // A new session: announce our presence again (the server ended the old one's), then send
  // what the old session did not acknowledge. Messages to us while the session was gone went
  // where the server sends them for an unavailable resource (offline storage or a bounce).
  std::vector<std::string> again = std::move(resend_after_failure);
  resend_after_failure.clear();
  start_link();
  // A resumed session kept its carbons (XEP-0198 §5 resumes the session's state); a new one
  // asks for them again (XEP-0280 §4).
  asio::co_spawn(
      io, [self]() -> awaitable<void> { co_await self->enable_carbons(); }, asio::detached);
  if (!last_presence.empty()) send_stanza_bytes(last_presence);
  for (std::string& s : again) send_stanza_bytes(std::move(s));
  if (owner && owner->on_connection)
    owner->on_connection({ConnectionEvent::Kind::kResumeFailed,
                          "reconnected, but the server had ended the session: a new one is "
                          "bound as " +
                              bound + (again.empty() ? "" : "; unacknowledged messages sent again"),
                          again.size()});
}

void Client::Impl::finish(const Error& why) {
  if (!is_connected && !running) return;
  is_connected = false;
  running = false;
  ++link_gen;
  close_reason = why;
  close_socket();
  for (auto& [id, p] : pending) p->timer.cancel();
  closed_signal.cancel();
  if (owner && owner->on_disconnect && why) owner->on_disconnect(why);
}

void Client::Impl::close_socket() {
  if (stream) {
    boost::system::error_code ig;
    stream->next_layer().shutdown(tcp::socket::shutdown_both, ig);
    stream->next_layer().close(ig);
  }
}

void Client::Impl::send_stanza_bytes(std::string data) {
  if (!is_connected) return;
  if (link_down && !sm.on()) {
    // Reconnecting after a failed resumption (the old queue is handed back, the new session
    // not yet enabled): it goes out in the new session, after the old session's leftovers.
    resend_after_failure.push_back(std::move(data));
    return;
  }
  if (sm.state() == xmpp::stream::SmClient::State::kOff) {
    send_raw(std::move(data));
    return;
  }
  // Kept until acknowledged, also while the connection is down: resent once it is back.
  std::string bytes = sm.outbound(std::move(data));
  last_tx = Clock::now();
  send_raw(std::move(bytes));
}

void Client::Impl::send_raw(std::string data) {
  if (!is_connected || link_down) return;
  outq.push_back(std::move(data));
  if (writing) return;
  writing = true;
  auto self = shared_from_this();
  asio::co_spawn(
      io, [self]() -> awaitable<void> { co_await self->writer(); }, asio::detached);
}

awaitable<void> Client::Impl::writer() {
  auto self = shared_from_this();
  try {
    while (!outq.empty() && stream && !link_down) {
      std::string data = std::move(outq.front());
      outq.pop_front();
      co_await write_raw(data);
    }
  } catch (const std::exception&) {
    outq.clear();
    // A failed write is a failed connection: the reader sees it closed (and resumes).
    if (sm.resumable() && !link_down) close_socket();
  }
  writing = false;
}

awaitable<std::optional<xml::Element>> Client::Impl::iq(xml::Element iq) {
  if (!is_connected) co_return std::nullopt;
  std::string id = new_id();
  iq.set_attr("id", id);
  auto p = std::make_shared<PendingIq>(io);
  p->to = std::string(iq.attr("to"));
  p->timer.expires_after(opt.timeout);
  pending[id] = p;
  send(iq);
  boost::system::error_code ec;
  co_await p->timer.async_wait(asio::redirect_error(use_awaitable, ec));
  pending.erase(id);
  if (!p->done) co_return std::nullopt;
  co_return std::move(p->reply);
}

Error Client::Impl::iq_error(const std::optional<xml::Element>& r, std::string_view what) {
  if (!r) {
    if (!is_connected)
      return close_reason ? close_reason : err(Errc::kDisconnected, "not connected");
    return err(Errc::kTimeout, std::string(what) + ": the server did not answer");
  }
  if (r->attr("type") == "result") return {};
  std::string cond = error_condition(*r);
  Errc c = cond == "item-not-found" || cond == "service-unavailable" ? Errc::kNotFound
           : cond == "conflict"                                      ? Errc::kConflict
                                                                     : Errc::kNotAllowed;
  std::string text = error_text(*r);
  return err(c, std::string(what) + " failed: " + cond + (text.empty() ? "" : " (" + text + ")"));
}

}  // namespace kabar::client
