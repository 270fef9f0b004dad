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
  auto self = shared_from_this();
  asio::co_spawn(
      io, [self]() -> awaitable<void> { co_await self->reader(); }, asio::detached);
  // Elements that arrived with the bind result.
  if (!inbox.empty()) {
    asio::post(io, [self] {
      while (!self->inbox.empty()) {
        xml::Element el = std::move(self->inbox.front());
        self->inbox.pop_front();
        self->dispatch(el);
      }
    });
  }
}

awaitable<void> Client::Impl::reader() {
  auto self = shared_from_this();
  Error why;
  try {
    while (!stream_closed) {
      co_await read_more();
      while (!inbox.empty()) {
        xml::Element el = std::move(inbox.front());
        inbox.pop_front();
        if (el.is("error", ns::kStream)) {
          std::string cond = "undefined-condition";
          for (const xml::Element* c : el.children())
            if (c->xmlns() == ns::kStreams && c->name() != "text") cond = c->name();
          if (cond == "conflict")
            why = err(Errc::kConflict,
                      "another client logged in with the same resource (" + opt.resource + ")");
          else
            why = err(Errc::kDisconnected, "the server ended the stream: " + cond);
          continue;
        }
        dispatch(el);
      }
    }
  } catch (const boost::system::system_error& e) {
    if (!closing) why = err(Errc::kDisconnected, "the connection was lost: " + e.code().message());
  } catch (const std::exception& e) {
    if (!closing) why = err(Errc::kDisconnected, e.what());
  }
  if (!why && !closing) why = err(Errc::kDisconnected, "the server closed the stream");
  finish(why);
}

void Client::Impl::finish(const Error& why) {
  if (!is_connected && !running) return;
  is_connected = false;
  running = false;
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

void Client::Impl::send_raw(std::string data) {
  if (!is_connected) return;
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
    while (!outq.empty() && stream) {
      std::string data = std::move(outq.front());
      outq.pop_front();
      co_await write_raw(data);
    }
  } catch (const std::exception&) {
    outq.clear();
  }
  writing = false;
}

awaitable<std::optional<xml::Element>> Client::Impl::iq(xml::Element iq) {
  if (!is_connected) co_return std::nullopt;
  std::string id = new_id();
  iq.set_attr("id", id);
  auto p = std::make_shared<PendingIq>(io);
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
