#include "net/test_transport.h"

#include <algorithm>

namespace kabar::net {

TestTransport::TestTransport(Shard& shard, std::string peer_address)
    : shard_(shard), peer_addr_(std::move(peer_address)) {}

void TestTransport::start(TransportHandler& handler) {
  handler_ = &handler;
  reading_ = true;
}

void TestTransport::push(std::string_view bytes) {
  pending_.append(bytes);
  if (reading_) deliver();
}

void TestTransport::push_peer_close() {
  pending_close_ = true;
  if (reading_) deliver();
}

void TestTransport::deliver() {
  if (handler_ == nullptr || closed_) return;
  // As TcpTransport::on_readable(): one read event, flushed at its end.
  EventScope scope(shard_);
  std::string bytes = std::exchange(pending_, {});
  const bool peer_close = std::exchange(pending_close_, false);
  reading_ = false;
  if (!bytes.empty() && !handler_->on_bytes(bytes)) return;
  if (peer_close) handler_->on_peer_closed();
  reading_ = handler_->on_read_done();
}

void TestTransport::read() {
  if (closed_) {
    handler_->on_transport_closed();
    return;
  }
  reading_ = true;
  if (!pending_.empty() || pending_close_) deliver();
}

void TestTransport::close() {
  if (closed_) return;
  closed_ = true;
  *ended_ = true;
  // As a closed socket cancels the read under way: the handler hears of it from the loop.
  if (std::exchange(reading_, false) && handler_ != nullptr) {
    boost::asio::post(*shard_.io, [keep = handler_->keep_alive(), this] {
      if (handler_ != nullptr) handler_->on_transport_closed();
    });
  }
}

void TestTransport::abandon() {
  close();
  handler_ = nullptr;
}

void TestTransport::drop() {
  if (closed_) return;
  closed_ = true;
  *ended_ = true;
  reading_ = false;
  if (handler_ != nullptr) {
    EventScope scope(shard_);
    handler_->on_transport_closed();
  }
}

Transport::WriteResult TestTransport::write(std::span<const std::string_view> bufs) {
  if (closed_) return {0, WriteStatus::kFailed};
  if (stalled_) {
    blocked_ = true;
    return {0, WriteStatus::kBlocked};
  }
  std::size_t total = 0;
  for (const auto b : bufs) total += b.size();
  std::size_t take = write_limit_ != 0 ? std::min(total, write_limit_) : total;
  const std::size_t taken = take;
  for (const auto b : bufs) {
    if (take == 0) break;
    const std::size_t n = std::min(take, b.size());
    written_.append(b.substr(0, n));
    take -= n;
  }
  if (taken > 0) ++write_calls_;
  if (taken < total) {
    blocked_ = true;
    return {taken, WriteStatus::kBlocked};
  }
  return {taken, WriteStatus::kDone};
}

void TestTransport::unblock() {
  stalled_ = false;
  if (!std::exchange(blocked_, false) || handler_ == nullptr || closed_) return;
  EventScope scope(shard_);
  handler_->on_writable();
}

boost::asio::awaitable<void> TestTransport::start_tls() {
  if (closed_) throw boost::system::system_error(boost::asio::error::connection_aborted);
  security_.tls = true;
  security_.tls_version = 0x0304;  // TLS 1.3
  co_return;
}

}  // namespace kabar::net
