// TCP, with TLS by STARTTLS or direct TLS: OpenSSL for the handshake (and for TLS 1.2), then
// kabar's own TLS 1.3 record layer (tls/handover.h).
//
// An idle connection holds almost nothing: no read buffer (reads land in the shard thread's
// scratch buffer and go straight to the handler), no coroutine frame (it waits for readiness
// with ReadWait), OpenSSL with released buffers or, after a TLS 1.3 handover, a few hundred
// bytes of keys whose cipher contexts hibernate() frees.
#pragma once

#include <openssl/ssl.h>

#include <array>
#include <boost/asio.hpp>
#include <memory>
#include <string>
#include <utility>  // before Asio: Boost 1.74 awaitable.hpp uses std::exchange

#include "net/read_wait.h"
#include "net/shard.h"
#include "net/transport.h"
#include "tls/record13.h"

namespace kabar::net {

// Closes the sockets of this thread's shard that are waiting in a lingering close (see close()),
// and closes at once from then on: called when the shard stops.
void stop_lingering();

class TcpTransport final : public Transport {
 public:
  // Records per sealed batch at most (kTlsBatch in tcp_transport.cc).
  static constexpr std::size_t kSealedMax = 4;

  // `tls`: the context for STARTTLS and direct TLS. `sock` is already on `shard`'s io_context.
  TcpTransport(Shard& shard, boost::asio::ip::tcp::socket sock, SSL_CTX* tls, bool direct_tls);
  ~TcpTransport() override;

  void start(TransportHandler& handler) override;
  void set_handler(TransportHandler& handler) override { handler_ = &handler; }
  void read() override;
  WriteResult write(std::span<const std::string_view> bufs) override;
  bool holds_output() const override;
  boost::asio::awaitable<void> start_tls() override;
  // Shuts our side (after TLS close_notify) and, unless the peer has already closed or broken
  // the connection, keeps reading and dropping what it still sends for a short while before the
  // socket closes (a lingering close: no RST that could make the peer lose our last bytes).
  void close() override;
  void abandon() override;
  bool is_closed() const override { return closed_; }
  bool hibernate() override;
  const std::string& peer_address() const override { return peer_addr_; }
  const Security& security() const override { return security_; }

 private:
  boost::asio::awaitable<void> run_direct_tls();
  boost::asio::awaitable<void> tls_handshake();
  // Reads without a coroutine while idle. `drained`: the socket was read dry in the current
  // handler (read_wait.h).
  void arm_read(bool drained);
  static void readable(void* self, const boost::system::error_code& ec);
  void on_readable(const boost::system::error_code& ec);
  // Reads and delivers all the TLS connection has; false when the read event is over (the
  // handler stopped it, the connection ended, or reading resumes by itself).
  bool read_tls();
  // The same with the TLS 1.3 record layer, rec_.
  bool read_rec(bool& drained);
  WriteResult write_plain(std::span<const std::string_view> bufs);
  WriteResult write_ssl(std::span<const std::string_view> bufs);
  WriteResult write_rec(std::span<const std::string_view> bufs);
  // Writes what tls_out_ holds.
  WriteStatus write_held_ssl();
  WriteStatus write_held_rec();
  // Plaintext of held records now wholly with the kernel: reported taken, no longer held.
  std::size_t take_written_plain();
  // Calls on_writable() once the socket is writable (or readable, for OpenSSL's WANT_READ).
  void wait_writable(bool for_read = false);
  void capture_channel_binding();

  Shard& shard_;
  Socket sock_;
  ReadWait read_wait_;
  TransportHandler* handler_ = nullptr;
  SSL_CTX* tls_ctx_;
  struct SslFree {
    void operator()(SSL* s) const { SSL_free(s); }
  };
  std::unique_ptr<SSL, SslFree> ssl_;
  // Set instead of ssl_ once a TLS 1.3 handshake is done: an idle connection then holds a few
  // hundred bytes of keys instead of OpenSSL's ~14 KB SSL object.
  std::unique_ptr<tls::Record13> rec_;
  // With ssl_: plaintext being written as one record (kept on WANT_WRITE). With rec_: sealed
  // records not yet written, from tls_out_off_ on.
  std::string tls_out_;
  std::size_t tls_out_off_ = 0;
  // The session's plaintext held (sealed in tls_out_, or given to OpenSSL) and not reported as
  // taken yet: bytes count as taken once their records are with the kernel.
  std::size_t held_plain_ = 0;
  // With rec_: the records sealed from held plaintext, in order: where each ends in tls_out_ and
  // how much plaintext it carries (a batch is at most four records).
  struct Sealed {
    std::size_t end = 0;
    std::size_t plain = 0;
  };
  std::array<Sealed, kSealedMax> sealed_{};
  std::size_t sealed_count_ = 0;
  bool direct_tls_;
  bool closed_ = false;
  bool failed_ = false;         // a write failed or our record layer sent an alert
  bool peer_done_ = false;      // the peer closed or broke the connection: no lingering close
  bool write_waiting_ = false;  // wait_writable() is under way
  std::string peer_addr_;
  Security security_;
};

}  // namespace kabar::net
