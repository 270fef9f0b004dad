// One client-to-server connection (RFC 6120): stream negotiation (STARTTLS or direct TLS, SASL,
// resource binding), then stanzas handed to the server. Lives on one shard: its state is touched
// only on that shard's thread. The send functions, stream_error() and close() may be called from
// any shard; off the session's own shard they post to it.
#pragma once

#include <openssl/ssl.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>  // before Asio: Boost 1.74 awaitable.hpp uses std::exchange
#include <vector>

#include "server/core/session_ext.h"
#include "server/read_wait.h"
#include "server/server.h"
#include "tls/record13.h"
#include "xml/stream_parser.h"
#include "xmpp/jid.h"
#include "xmpp/scram.h"

namespace kabar::server {

class C2sSession : public std::enable_shared_from_this<C2sSession>, private xml::StreamHandler {
 public:
  C2sSession(Server& server, Shard& shard, asio::ip::tcp::socket sock, bool direct_tls);
  ~C2sSession() override;

  void start();

  // Stanzas up to this size are forwarded as received (Server::route_message_now()).
  static constexpr std::size_t kKeptBytes = 16 * 1024;

  // Queues bytes for the client; `on_written` runs once they have been handed to the kernel
  // (used to delete offline messages only after delivery).
  void send_raw(std::string data, std::function<void()> on_written = {});
  void send(const xml::Element& stanza, std::function<void()> on_written = {});
  // Queues a stanza made of bytes shared with other recipients around a part of its own (a
  // broadcast: one serialization, only the 'to' differs); written with the rest in one writev.
  void send_shared(const std::shared_ptr<const std::string>& head, std::string own,
                   const std::shared_ptr<const std::string>& tail);
  // Sends <stream:error/> and closes the stream (RFC 6120 §4.9.1.1).
  void stream_error(std::string_view condition, std::string_view text = {});
  // Closes the stream cleanly (</stream:stream>) and the connection.
  void close();
  // Drops the connection at once, without flushing (a peer that does not read).
  void abort();
  bool closed() const { return closing_; }  // any shard may ask
  Shard& shard() const { return shard_; }
  // Frees the XML parser of a stream idle between stanzas (it is made again when bytes come)
  // and the TLS 1.3 cipher contexts; true if it freed anything.
  bool hibernate();
  std::int64_t closed_at_ms = 0;

  // State the server reads and writes (on this session's shard; other shards read the copy that
  // Server::publish() puts into the directory).
  const xmpp::Jid& jid() const { return jid_; }            // set before bind(), fixed afterwards
  const std::string& jid_str() const { return jid_str_; }  // jid().str(), kept
  // jid_str() as an attribute value needs no character references (nearly always).
  bool jid_str_plain() const { return jid_plain_; }
  bool bound() const { return bound_; }
  bool authenticated() const { return !username_.empty(); }
  const std::string& username() const { return username_; }
  bool available = false;  // has sent initial presence and not gone unavailable
  int priority = 0;
  std::shared_ptr<const xml::Element> last_presence;  // for probes and new resources
  // A module's own state of this session (core/session_ext.h).
  template <typename T>
  T& ext() {
    return ext_.get<T>();
  }
  std::int64_t last_read_ms = 0;
  std::int64_t created_ms = 0;
  std::int64_t ping_sent_ms = 0;  // 0: no server ping outstanding
  const std::string& peer_address() const { return peer_addr_; }
  std::uint64_t serial() const { return serial_; }

 private:
  enum class Phase { kWaitStream, kNegotiating, kTlsHandshake, kBound };

  // xml::StreamHandler
  void on_stream_open(const xml::Element& header, std::string_view default_xmlns) override;
  void on_element(xml::Element&& element) override;
  void on_stream_close() override;
  bool wants_bytes(const xml::ElementHead& head) override;
  bool on_element_bytes(const xml::ElementHead& head, std::string_view bytes) override;
  bool routable_now(std::string_view name, std::string_view xmlns) const;

  awaitable<void> run();
  awaitable<void> tls_handshake();
  // Reads and feeds all the TLS connection has; false when the session ended or will resume
  // reading by itself.
  bool read_tls();
  void flush_tls();
  // TLS 1.3 after the handover from OpenSSL (tls/handover.h): our own record layer, rec_.
  bool read_rec(bool& drained);
  void flush_rec();
  // Reads without a coroutine while idle (see arm_read in the .cc). `drained`: the socket was
  // read dry in the current handler (read_wait.h).
  void arm_read(bool drained = false);
  void on_readable(const boost::system::error_code& ec);
  static void readable(void* self, const boost::system::error_code& ec);
  awaitable<void> process_batch();
  awaitable<void> process_inbox();
  awaitable<void> begin_tls();
  // The end of a session: flush, close the socket, tell the server. Runs once.
  awaitable<void> end();
  void spawn_end();
  void flush();
  void flush_now();
  // Marks the shard as handling a read event; at the end of the outermost one, flushes every
  // session that was given bytes meanwhile.
  class EventScope {
   public:
    explicit EventScope(Shard& shard);
    ~EventScope();
    EventScope(const EventScope&) = delete;
    EventScope& operator=(const EventScope&) = delete;

   private:
    Shard& shard_;
    bool outer_;
  };
  bool drained() const;  // nothing queued, posted or being written
  awaitable<void> wait_drained();
  void notify_drained();
  void written(std::size_t n);
  void clear_outq();
  // Parses received bytes; on a parse error sends the matching stream error and returns false.
  bool feed(std::string_view bytes);
  // Records the TLS channel-binding data once the handshake is done (SCRAM -PLUS).
  void capture_channel_binding();
  awaitable<void> write_loop();
  awaitable<void> process(xml::Element el);
  awaitable<void> handle_auth(const xml::Element& el);
  awaitable<void> handle_sasl_response(const xml::Element& el);
  awaitable<void> finish_plain(const std::string& payload);
  void sasl_failure(std::string_view condition, std::string_view text = {});
  void sasl_success(std::string_view additional);
  awaitable<void> handle_bind(const xml::Element& iq);
  awaitable<void> handle_preauth_iq(const xml::Element& iq);
  void send_features();
  void shutdown_socket();
  template <typename Buffers>
  awaitable<std::size_t> write_some(const Buffers& bufs);

  bool on_own_shard() const { return shard_.on_this_thread(); }

  Server& server_;
  Shard& shard_;
  Socket sock_;
  ReadWait read_wait_;
  struct SslFree {
    void operator()(SSL* s) const { SSL_free(s); }
  };
  std::unique_ptr<SSL, SslFree> ssl_;
  // Set instead of ssl_ once a TLS 1.3 handshake is done: an idle connection then holds a few
  // hundred bytes of keys instead of OpenSSL's ~14 KB SSL object.
  std::unique_ptr<tls::Record13> rec_;
  bool tls_ready_ = false;  // handshake done
  // With ssl_: plaintext being written as one record (kept on WANT_WRITE). With rec_: sealed
  // records not yet written, from tls_out_off_ on.
  std::string tls_out_;
  std::size_t tls_out_off_ = 0;
  std::vector<std::function<void()>> tls_out_done_;  // callbacks of what tls_out_ holds
  bool direct_tls_;
  xml::StreamParser parser_;
  bool route_tried_ = false;  // on_element_bytes() tried to route the element on_element() gets
  // Vectors, not deques: an empty std::deque still holds a 576-byte block.
  std::vector<xml::Element> inbox_;
  struct Out {
    std::string data;
    std::function<void()> on_written;
    std::size_t offset = 0;                     // bytes already written
    std::shared_ptr<const std::string> shared;  // when set, the bytes (shared by recipients)
    std::string_view bytes() const { return shared ? std::string_view(*shared) : data; }
  };
  void enqueue(Out out);
  std::vector<Out> outq_;
  std::size_t outq_head_ = 0;  // entries before it are written
  std::size_t queued_bytes_ = 0;
  bool writing_ = false;
  bool flush_posted_ = false;
  bool ended_ = false;
  std::unique_ptr<asio::steady_timer> drain_wait_;  // wait_drained() sleeps on it
  std::atomic<bool> closing_{false};                // read by other shards (closed())
  bool socket_closed_ = false;
  bool stream_open_ = false;    // we have sent our stream header
  bool stream_closed_ = false;  // we have queued </stream:stream>
  bool peer_closed_ = false;
  bool start_tls_ = false;  // STARTTLS accepted: handshake after <proceed/> is written
  Phase phase_ = Phase::kWaitStream;
  std::string stream_id_;
  std::string peer_addr_;
  std::uint64_t serial_ = 0;

  // SASL
  std::optional<xmpp::ScramServer> scram_;
  std::string tls_unique_;  // RFC 5929 tls-unique of this connection; empty: no -PLUS offered
  xmpp::ScramHash scram_hash_ = xmpp::ScramHash::kSha256;
  std::string sasl_user_;  // the username of the exchange under way
  int sasl_failures_ = 0;
  std::string username_;
  bool bound_ = false;
  bool jid_plain_ = false;  // jid_str_plain()
  xmpp::Jid jid_;
  std::string jid_str_;
  std::unique_ptr<asio::steady_timer> write_wait_;
  SessionExt ext_;
};

}  // namespace kabar::server
