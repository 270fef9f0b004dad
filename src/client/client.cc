#include "client/client_impl.h"

namespace kabar::client {

Client::Client(asio::io_context& io, Options options)
    : impl_(std::make_shared<Impl>(*this, io, std::move(options))) {}

Client::~Client() {
  impl_->owner = nullptr;
  impl_->closing = true;
  impl_->close_socket();
}

awaitable<void> Client::disconnect() {
  auto self = impl_;
  if (!self->is_connected) co_return;
  self->closing = true;
  if (self->link_down) {  // reconnecting: nothing to close on the wire
    self->finish(Error{});
    co_return;
  }
  // XEP-0198 §4: tell the server what we handled before closing, so nothing comes again.
  if (self->sm.on()) self->send_raw(self->sm.ack());
  self->send_raw("</stream:stream>");
  // Wait for the server's closing tag (RFC 6120 §4.4), at most two seconds.
  asio::steady_timer t(self->io, std::chrono::seconds(2));
  t.async_wait([self](boost::system::error_code e) {
    if (!e) self->finish(Error{});
  });
  boost::system::error_code ec;
  co_await self->closed_signal.async_wait(asio::redirect_error(use_awaitable, ec));
  t.cancel();
  self->finish(Error{});
}

awaitable<Error> Client::wait_closed() {
  auto self = impl_;
  if (self->running) {
    boost::system::error_code ec;
    co_await self->closed_signal.async_wait(asio::redirect_error(use_awaitable, ec));
  }
  co_return self->close_reason;
}

bool Client::connected() const { return impl_->is_connected; }
bool Client::stream_managed() const { return impl_->sm.on(); }
bool Client::carbons_enabled() const { return impl_->carbons_on; }

awaitable<std::optional<xml::Element>> Client::send_iq(xml::Element iq) {
  auto self = impl_;
  co_return co_await self->iq(std::move(iq));
}

void Client::send_stanza(const xml::Element& el) { impl_->send(el); }

std::string Client::iq_condition(const std::optional<xml::Element>& reply) {
  if (!reply) return "timeout";
  if (reply->attr("type") == "result") return {};
  return error_condition(*reply);
}

asio::io_context& Client::io_context() { return impl_->io; }
const Options& Client::options() const { return impl_->opt; }
std::string Client::bound_jid() const { return impl_->bound; }
std::string Client::server_fingerprint() const { return impl_->fingerprint; }

awaitable<Error> with_backoff(asio::io_context& io, std::function<awaitable<Error>()> fn,
                              int attempts, std::chrono::seconds max) {
  std::chrono::seconds delay(1);
  Error e;
  for (int i = 0; i < attempts; ++i) {
    e = co_await fn();
    if (!e ||
        (e.code != Errc::kUnreachable && e.code != Errc::kTimeout && e.code != Errc::kDisconnected))
      co_return e;
    if (i + 1 == attempts) break;
    asio::steady_timer t(io, delay);
    boost::system::error_code ec;
    co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
    delay = std::min(delay * 2, max);
  }
  co_return e;
}

}  // namespace kabar::client
