#include "net/tcp_transport.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <stdexcept>
#include <vector>

#include "tls/handover.h"

namespace kabar::net {

namespace asio = boost::asio;
using asio::awaitable;
using asio::ip::tcp;

namespace {

// Reads land here and go straight to the handler (plain TCP) or the record layer: an idle
// connection holds no read buffer. One per shard thread.
thread_local std::array<char, 16384> g_scratch;
// Plaintext opened by our TLS 1.3 record layer, and plaintext gathered for sealing: shared by
// the connections of a shard thread, so an idle one holds neither.
thread_local std::string g_plain;
thread_local std::string g_gather;
// Plaintext sealed per write: up to four full records in one send.
constexpr std::size_t kTlsBatch = TcpTransport::kSealedMax * tls::kMaxPlaintext;
// Plaintext per SSL_write (OpenSSL, TLS 1.2): one record.
constexpr std::size_t kSslRecord = 16384;
// Buffers per sendmsg.
constexpr std::size_t kMaxBuffers = 64;

// A lingering close (as nginx's lingering_close): closing a socket while the peer's bytes are
// still unread, or still arriving, makes the kernel answer with a RST, and a peer that gets it
// may throw away what it has not read yet: the stream error written just before (RFC 6120
// §4.9.1.1: the error element is sent, then the stream and the connection closed). So our side of
// the connection is shut (a FIN after the last bytes) and what the peer still sends is read and
// dropped until it closes too, kLingerMs pass, or an error; only then is the socket closed. At
// most kMaxLingering sockets per shard wait so; past that a socket closes at once.
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr std::size_t kMaxLingering = 1024;
class Linger;
thread_local std::vector<Linger*> g_lingering;  // this shard's
thread_local bool g_no_linger = false;          // set by stop_lingering()

class Linger : public std::enable_shared_from_this<Linger> {
 public:
  Linger(asio::io_context& io, int fd) : sock_(io), timer_(io) {
    boost::system::error_code ec;
    // The protocol is not looked at for a read or a close.
    sock_.assign(tcp::v6(), fd, ec);
    if (ec) ::close(fd);
  }

  void start() {
    if (!sock_.is_open()) return;
    g_lingering.push_back(this);
    boost::system::error_code ec;
    sock_.non_blocking(true, ec);
    timer_.expires_after(kLingerTime);
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (!ec) self->finish();
    });
    wait();
  }

  void finish() {  // on the shard's thread; closes the socket, and the pending waits end
    if (done_) return;
    done_ = true;
    std::erase(g_lingering, this);
    boost::system::error_code ec;
    timer_.cancel();
    sock_.close(ec);
  }

 private:
  void wait() {
    sock_.async_wait(tcp::socket::wait_read,
                     [self = shared_from_this()](const boost::system::error_code& ec) {
                       if (ec) return self->finish();
                       self->drain();
                     });
  }

  void drain() {
    // A bounded turn (1 MiB at most), then the wait again: other connections of the shard go on.
    for (int i = 0; i < 64; ++i) {
      boost::system::error_code ec;
      sock_.read_some(asio::buffer(g_scratch), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) break;
      if (ec) return finish();  // EOF (the peer closed too) or an error
    }
    wait();
  }

  tcp::socket sock_;
  asio::steady_timer timer_;
  bool done_ = false;
};

}  // namespace

void stop_lingering() {
  g_no_linger = true;
  // finish() takes each out of the list; their pending handlers then release them.
  while (!g_lingering.empty()) g_lingering.back()->finish();
}

TcpTransport::TcpTransport(Shard& shard, tcp::socket sock, SSL_CTX* tls, bool direct_tls)
    : shard_(shard), sock_(std::move(sock)), tls_ctx_(tls), direct_tls_(direct_tls) {
  boost::system::error_code ec;
  auto ep = sock_.remote_endpoint(ec);
  peer_addr_ = ec ? std::string("?") : ep.address().to_string();
}

TcpTransport::~TcpTransport() = default;

void TcpTransport::start(TransportHandler& handler) {
  handler_ = &handler;
  boost::system::error_code ec;
  sock_.non_blocking(true, ec);  // writes are tried at once, reads after readiness
  if (direct_tls_) {
    // The coroutine's frame holds the handler (and so this transport) alive.
    asio::co_spawn(
        *shard_.io,
        [keep = handler.keep_alive(), this]() -> awaitable<void> { co_await run_direct_tls(); },
        asio::detached);
  } else {
    arm_read(false);
  }
}

awaitable<void> TcpTransport::run_direct_tls() {
  bool ok = true;
  try {
    co_await tls_handshake();
  } catch (const boost::system::system_error& e) {
    spdlog::debug("c2s {}: TLS handshake failed: {}", peer_addr_, e.what());
    ok = false;
  } catch (const std::exception& e) {
    spdlog::error("c2s {}: {}", peer_addr_, e.what());
    ok = false;
  }
  if (handler_ == nullptr) co_return;  // abandoned
  if (!ok) {
    handler_->on_transport_closed();
    co_return;
  }
  arm_read(false);
}

void TcpTransport::read() { arm_read(false); }

void TcpTransport::arm_read(bool drained) {
  if (closed_) {
    handler_->on_transport_closed();
    return;
  }
  read_wait_.start(sock_, *shard_.io, handler_->keep_alive(), this, &TcpTransport::readable,
                   drained);
}

void TcpTransport::readable(void* self, const boost::system::error_code& ec) {
  static_cast<TcpTransport*>(self)->on_readable(ec);
}

void TcpTransport::on_readable(const boost::system::error_code& wait_ec) {
  if (handler_ == nullptr) return;  // abandoned
  EventScope scope(shard_);
  if (wait_ec || closed_) {
    if (wait_ec && wait_ec != asio::error::operation_aborted) {
      spdlog::debug("c2s {}: connection ended: {}", peer_addr_, wait_ec.message());
      peer_done_ = true;
    }
    handler_->on_transport_closed();
    return;
  }
  // Read dry: a short read or EAGAIN. Then the wait for the next bytes needs no epoll re-arm.
  bool drained = false;
  if (rec_) {
    if (!read_rec(drained)) return;
  } else if (ssl_) {
    if (!read_tls()) return;
  } else {
    boost::system::error_code ec;
    std::size_t n = sock_.read_some(asio::buffer(g_scratch), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      arm_read(true);
      return;
    }
    drained = n < g_scratch.size();
    if (ec) {
      spdlog::debug("c2s {}: connection ended: {}", peer_addr_, ec.message());
      peer_done_ = true;
      handler_->on_transport_closed();
      return;
    }
    if (!handler_->on_bytes(std::string_view(g_scratch.data(), n))) return;
  }
  if (handler_->on_read_done()) arm_read(drained);
}

// TLS straight on the socket (SSL_set_fd), as nginx does: no BIO pair and no stream buffers of
// our own, so an idle TLS connection holds only OpenSSL's state, whose record buffers are
// released between records (SSL_MODE_RELEASE_BUFFERS). Reads and writes are nonblocking; a
// WANT_READ/WANT_WRITE waits for readiness and retries.
awaitable<void> TcpTransport::tls_handshake() {
  ssl_.reset(SSL_new(tls_ctx_));
  if (!ssl_ || SSL_set_fd(ssl_.get(), sock_.native_handle()) != 1) {
    throw std::runtime_error("cannot set up TLS for the connection");
  }
  SSL_set_accept_state(ssl_.get());
  tls::arm_handover(ssl_.get());
  for (;;) {
    ERR_clear_error();
    const int r = SSL_do_handshake(ssl_.get());
    if (r == 1) break;
    const int err = SSL_get_error(ssl_.get(), r);
    if (err == SSL_ERROR_WANT_READ) {
      co_await sock_.async_wait(tcp::socket::wait_read, asio::use_awaitable);
    } else if (err == SSL_ERROR_WANT_WRITE) {
      co_await sock_.async_wait(tcp::socket::wait_write, asio::use_awaitable);
    } else {
      char reason[256] = "connection closed";
      if (unsigned long e = ERR_peek_last_error(); e != 0) {
        ERR_error_string_n(e, reason, sizeof reason);
      }
      ERR_clear_error();
      throw boost::system::system_error(asio::error::connection_aborted, reason);
    }
  }
  security_.tls = true;
  security_.tls_version = SSL_version(ssl_.get());
  capture_channel_binding();
  // TLS 1.3: from here on our own record layer carries the connection and OpenSSL's object goes
  // (freed without SSL_shutdown: it must write nothing more). Anything else stays on OpenSSL.
  if (auto rec = tls::take_over(ssl_.get())) {
    rec_ = std::move(rec);
    ssl_.reset();
    spdlog::debug("c2s {}: TLS 1.3 handed over to kabar's record layer", peer_addr_);
  }
}

awaitable<void> TcpTransport::start_tls() {
  if (closed_) throw boost::system::system_error(asio::error::connection_aborted);
  co_await tls_handshake();
}

void TcpTransport::capture_channel_binding() {
  // RFC 5929 §3.1 tls-unique: the first Finished message of the handshake, the client's for a
  // full handshake and ours for a resumed one. It is defined for TLS 1.2 only (RFC 9266); on
  // TLS 1.3 the binding would be tls-exporter, which Debian's slixmpp cannot do (it sends
  // tls-unique to any -PLUS), so -PLUS is offered on TLS 1.2 connections only.
  SSL* ssl = ssl_.get();
  if (SSL_version(ssl) != TLS1_2_VERSION) return;
  unsigned char buf[EVP_MAX_MD_SIZE];
  std::size_t n = SSL_session_reused(ssl) != 0 ? SSL_get_finished(ssl, buf, sizeof buf)
                                               : SSL_get_peer_finished(ssl, buf, sizeof buf);
  if (n > 0 && n <= sizeof buf) security_.tls_unique.assign(reinterpret_cast<const char*>(buf), n);
}

bool TcpTransport::read_rec(bool& drained) {
  // Everything the socket has, until a short read (bytes arriving later make a new epoll edge);
  // a record split across reads waits in rec_ for the rest.
  for (;;) {
    boost::system::error_code ec;
    const std::size_t n = sock_.read_some(asio::buffer(g_scratch), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      drained = true;
      return true;
    }
    if (ec) {
      spdlog::debug("c2s {}: connection ended: {}", peer_addr_, ec.message());
      peer_done_ = true;
      handler_->on_transport_closed();
      return false;
    }
    g_plain.clear();
    const auto status = rec_->open(std::string_view(g_scratch.data(), n), g_plain, tls_out_);
    if (status == tls::Record13::Status::kError) {
      // The alert (if the peer did not send one) is in tls_out_: it goes out, then the socket
      // closes. Nothing more is sealed.
      spdlog::debug("c2s {}: TLS alert {} ({}), closing", peer_addr_,
                    static_cast<int>(rec_->alert()), rec_->peer_alerted() ? "received" : "sent");
      failed_ = true;
      if (!write_waiting_) write_held_rec();
      handler_->on_transport_closed();
      return false;
    }
    if (!handler_->on_bytes(g_plain)) return false;
    // A KeyUpdate answer to send.
    if (tls_out_off_ < tls_out_.size() && !write_waiting_) write_held_rec();
    if (status == tls::Record13::Status::kClosed) {
      peer_done_ = true;
      handler_->on_peer_closed();
      return true;
    }
    if (n < g_scratch.size()) {
      drained = true;
      return true;
    }
    // The rest stays in the socket (a partial record in rec_) until read().
    if (handler_->hold_reading()) [[unlikely]]
      return true;
  }
}

bool TcpTransport::read_tls() {
  // Everything the socket has, record by record: bytes OpenSSL holds decrypted would never wake
  // epoll again.
  for (;;) {
    ERR_clear_error();
    const int n = SSL_read(ssl_.get(), g_scratch.data(), static_cast<int>(g_scratch.size()));
    if (n > 0) {
      if (!handler_->on_bytes(std::string_view(g_scratch.data(), static_cast<std::size_t>(n)))) {
        return false;
      }
      // Stops only with nothing decrypted left in OpenSSL (it would never wake epoll again).
      if (handler_->hold_reading() && SSL_pending(ssl_.get()) == 0) [[unlikely]]
        return true;
      continue;
    }
    const int err = SSL_get_error(ssl_.get(), n);
    if (err == SSL_ERROR_WANT_READ) return true;
    if (err == SSL_ERROR_WANT_WRITE) {
      // A TLS 1.3 key update to answer while the socket is full: read again once writable.
      sock_.async_wait(tcp::socket::wait_write,
                       [keep = handler_->keep_alive(), this](const boost::system::error_code& ec) {
                         on_readable(ec);
                       });
      return false;
    }
    ERR_clear_error();
    if (err == SSL_ERROR_ZERO_RETURN) {
      // close_notify: the client is done; what it sent before is still handled, then the
      // stream is closed from our side too.
      peer_done_ = true;
      handler_->on_peer_closed();
      return true;
    }
    spdlog::debug("c2s {}: TLS connection ended (error {})", peer_addr_, err);
    peer_done_ = true;
    handler_->on_transport_closed();
    return false;
  }
}

Transport::WriteResult TcpTransport::write(std::span<const std::string_view> bufs) {
  if (closed_ || failed_) return {0, WriteStatus::kFailed};
  if (rec_) return write_rec(bufs);
  // Nothing goes out before a TLS handshake is done (nothing taken: the handler writes again
  // later).
  if (ssl_) return security_.tls ? write_ssl(bufs) : WriteResult{0, WriteStatus::kDone};
  if (direct_tls_) return {0, WriteStatus::kDone};
  return write_plain(bufs);
}

Transport::WriteResult TcpTransport::write_plain(std::span<const std::string_view> bufs) {
  // One nonblocking sendmsg with everything given; the kernel takes it all unless the peer
  // stopped reading.
  boost::system::error_code ec;
  std::size_t n = 0;
  std::size_t total = 0;
  if (bufs.size() == 1) {
    // The usual case at low rates: one message (no array of buffers to set up).
    total = bufs[0].size();
    n = sock_.write_some(asio::buffer(bufs[0].data(), bufs[0].size()), ec);
  } else {
    std::array<asio::const_buffer, kMaxBuffers> arr;
    const std::size_t count = std::min(bufs.size(), arr.size());
    for (std::size_t i = 0; i < count; ++i) {
      arr[i] = asio::buffer(bufs[i].data(), bufs[i].size());
      total += bufs[i].size();
    }
    n = sock_.write_some(std::span<const asio::const_buffer>(arr.data(), count), ec);
  }
  if (ec == asio::error::would_block || ec == asio::error::try_again) {
    wait_writable();
    return {0, WriteStatus::kBlocked};
  }
  if (ec) {
    spdlog::debug("c2s {}: write failed: {}", peer_addr_, ec.message());
    failed_ = true;
    return {0, WriteStatus::kFailed};
  }
  if (n < total) {
    // The rest waits for the socket to become writable.
    wait_writable();
    return {n, WriteStatus::kBlocked};
  }
  return {n, WriteStatus::kDone};
}

// Bytes count as taken only once they are with the kernel (OpenSSL has written their records):
// what is held here when the connection is cut was never sent, and the session still has it as
// unwritten (a stalled reader's messages are handed on, not lost). Held bytes are the front of
// what the session offers next, so they are not taken twice. held_plain_ is what was given to
// OpenSSL and not reported taken yet; tls_out_ the part of it SSL_write has not accepted.
Transport::WriteResult TcpTransport::write_ssl(std::span<const std::string_view> bufs) {
  if (held_plain_ == 0) {
    // What is given, up to one record's worth, in one SSL_write: one record, one write.
    std::size_t i = 0;
    while (i < bufs.size() &&
           (tls_out_.empty() || tls_out_.size() + bufs[i].size() <= kSslRecord)) {
      tls_out_.append(bufs[i++]);
    }
    held_plain_ = tls_out_.size();
  }
  // (Kept from a write that wanted the socket: SSL_write must be given the same bytes again.)
  const WriteStatus st = tls_out_.empty() ? WriteStatus::kDone : write_held_ssl();
  if (st == WriteStatus::kFailed) return {0, st};
  const std::size_t done = held_plain_ - tls_out_.size();
  held_plain_ = tls_out_.size();
  return {done, st};
}

Transport::WriteStatus TcpTransport::write_held_ssl() {
  while (!tls_out_.empty()) {
    ERR_clear_error();
    const int n = SSL_write(ssl_.get(), tls_out_.data(), static_cast<int>(tls_out_.size()));
    if (n > 0) {
      tls_out_.erase(0, static_cast<std::size_t>(n));
      continue;
    }
    const int err = SSL_get_error(ssl_.get(), n);
    if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
      // The peer is not reading (or a renegotiation needs its bytes): retry when it can go on.
      wait_writable(err == SSL_ERROR_WANT_READ);
      return WriteStatus::kBlocked;
    }
    ERR_clear_error();
    spdlog::debug("c2s {}: TLS write failed (error {})", peer_addr_, err);
    failed_ = true;
    return WriteStatus::kFailed;
  }
  std::string().swap(tls_out_);
  return WriteStatus::kDone;
}

Transport::WriteResult TcpTransport::write_rec(std::span<const std::string_view> bufs) {
  if (held_plain_ > 0 || tls_out_off_ < tls_out_.size()) {
    // Records sealed before (their plaintext is the front of `bufs`, not taken yet) go first.
    const WriteStatus st = tls_out_off_ < tls_out_.size() ? write_held_rec() : WriteStatus::kDone;
    if (st == WriteStatus::kFailed) return {0, st};
    const std::size_t n = take_written_plain();
    if (st == WriteStatus::kBlocked || n > 0) return {n, st};
  }
  // Seal what is given, up to kTlsBatch: small stanzas share a record. One record per seal(), so
  // what reached the kernel is known record by record.
  g_gather.clear();
  for (const std::string_view b : bufs) {
    const std::size_t take = std::min(b.size(), kTlsBatch - g_gather.size());
    g_gather.append(b.substr(0, take));
    if (g_gather.size() == kTlsBatch) break;
  }
  sealed_count_ = 0;
  for (std::size_t off = 0; off < g_gather.size(); off += tls::kMaxPlaintext) {
    const std::string_view chunk =
        std::string_view(g_gather).substr(off, std::min(tls::kMaxPlaintext, g_gather.size() - off));
    if (!rec_->seal(chunk, tls_out_)) {
      // After an alert of ours (or a crypto failure): nothing more is written.
      failed_ = true;
      return {0, WriteStatus::kFailed};
    }
    sealed_[sealed_count_++] = {tls_out_.size(), chunk.size()};
  }
  held_plain_ = g_gather.size();
  const WriteStatus st = write_held_rec();
  if (st == WriteStatus::kFailed) return {0, st};
  return {take_written_plain(), st};
}

std::size_t TcpTransport::take_written_plain() {
  if (tls_out_off_ >= tls_out_.size()) {  // all written (tls_out_ emptied)
    sealed_count_ = 0;
    return std::exchange(held_plain_, 0);
  }
  std::size_t n = 0;
  std::size_t k = 0;
  while (k < sealed_count_ && sealed_[k].end <= tls_out_off_) n += sealed_[k++].plain;
  std::copy(sealed_.begin() + k, sealed_.begin() + sealed_count_, sealed_.begin());
  sealed_count_ -= k;
  held_plain_ -= n;
  return n;
}

Transport::WriteStatus TcpTransport::write_held_rec() {
  while (tls_out_off_ < tls_out_.size()) {
    boost::system::error_code ec;
    const std::size_t n = sock_.write_some(
        asio::buffer(tls_out_.data() + tls_out_off_, tls_out_.size() - tls_out_off_), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      // The peer is not reading: go on once the socket is writable.
      wait_writable();
      return WriteStatus::kBlocked;
    }
    if (ec) {
      spdlog::debug("c2s {}: TLS write failed: {}", peer_addr_, ec.message());
      failed_ = true;
      return WriteStatus::kFailed;
    }
    tls_out_off_ += n;
  }
  if (!tls_out_.empty()) std::string().swap(tls_out_);
  tls_out_off_ = 0;
  return WriteStatus::kDone;
}

void TcpTransport::wait_writable(bool for_read) {
  if (write_waiting_) return;
  write_waiting_ = true;
  sock_.async_wait(for_read ? tcp::socket::wait_read : tcp::socket::wait_write,
                   [keep = handler_->keep_alive(), this](const boost::system::error_code& ec) {
                     write_waiting_ = false;
                     if (handler_ == nullptr) return;  // abandoned
                     if (!ec && !closed_) {
                       // What we hold goes first (after a failure too: our alert, sealed
                       // already); the handler hears once it is out.
                       const WriteStatus st = rec_               ? write_held_rec()
                                              : ssl_ && !failed_ ? write_held_ssl()
                                                                 : WriteStatus::kDone;
                       if (st == WriteStatus::kBlocked) return;
                     }
                     handler_->on_writable();
                   });
}

bool TcpTransport::holds_output() const {
  return rec_ ? tls_out_off_ < tls_out_.size() : !tls_out_.empty();
}

bool TcpTransport::hibernate() { return rec_ && rec_->hibernate(); }

void TcpTransport::abandon() {
  close();
  handler_ = nullptr;
}

void TcpTransport::close() {
  if (closed_) return;
  closed_ = true;
  if (ssl_ && security_.tls) {
    // close_notify (RFC 8446 §6.1), best effort: the socket is nonblocking and closes next.
    ERR_clear_error();
    SSL_shutdown(ssl_.get());
    ERR_clear_error();
  } else if (rec_ && held_plain_ > 0 && tls_out_off_ < tls_out_.size()) {
    // Records of the session's bytes that the peer did not take (a stalled reader cut off): they
    // were never reported taken, so the session hands them on; none of them may reach the peer
    // now (it would get them twice), nor can an alert follow a record cut short.
  } else if (rec_) {
    // The same with our record layer: after whatever is still unwritten, so the alert starts on
    // a record boundary; one nonblocking write, no waiting.
    std::string last = tls_out_.substr(tls_out_off_);
    if (rec_->seal_close_notify(last)) {
      boost::system::error_code ec;
      sock_.write_some(asio::buffer(last), ec);
    }
    tls_out_.clear();
    tls_out_off_ = 0;
  }
  boost::system::error_code ec;
  if (!peer_done_ && !failed_ && !g_no_linger && g_lingering.size() < kMaxLingering &&
      sock_.is_open()) {
    // Our side ends after what is written; a second descriptor keeps the connection open to read
    // what the peer still sends (the first one closes below, with every wait on it).
    sock_.shutdown(tcp::socket::shutdown_send, ec);
    if (const int fd = ::dup(sock_.native_handle()); !ec && fd >= 0) {
      std::make_shared<Linger>(*shard_.io, fd)->start();
    } else if (fd >= 0) {
      ::close(fd);
    }
  } else {
    sock_.shutdown(tcp::socket::shutdown_both, ec);
  }
  sock_.close(ec);
}

}  // namespace kabar::net
