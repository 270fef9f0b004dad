// The connection a session talks to: bytes in (to a TransportHandler), gathered writes out,
// close, the peer's address and the connection's security. A session sees no socket, no OpenSSL
// and no record layer, so a new kind of connection (WebSocket, RFC 7395) or an in-memory one for
// tests is a new Transport and nothing else.
//
// Threading: a transport lives on one shard; every call is made on that shard's thread, and it
// calls its handler there.
#pragma once

#include <boost/asio.hpp>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>  // before Asio: Boost 1.74 awaitable.hpp uses std::exchange

namespace kabar::net {

// What the connection's security is (RFC 6120 §5: STARTTLS or direct TLS).
struct Security {
  bool tls = false;     // a TLS handshake is done
  int tls_version = 0;  // OpenSSL's constant (TLS1_2_VERSION, TLS1_3_VERSION); 0 without TLS
  // RFC 5929 §3.1 tls-unique of the connection, for SCRAM -PLUS; empty when there is none to
  // offer (no TLS, or TLS 1.3 where tls-unique is not defined, RFC 9266).
  std::string tls_unique;
  // STARTTLS may be offered on this connection: not over WebSocket, whose TLS is the
  // connection's own (RFC 7395 §3.8). There `tls` also holds for a loopback peer on plain ws://
  // (the bytes never leave the machine).
  bool starttls = true;
};

// The session side of a transport.
class TransportHandler {
 public:
  // Bytes received (plaintext; possibly empty when only TLS records without data came). False
  // stops the read event: the session is ending.
  virtual bool on_bytes(std::string_view bytes) = 0;
  // The end of a read event in which on_bytes() returned true. True: go on reading. False:
  // reading pauses until Transport::read() (or ends: the session is closing).
  virtual bool on_read_done() = 0;
  // The peer ended its side cleanly (TLS close_notify): what it sent before is still handled.
  virtual void on_peer_closed() = 0;
  // The connection is gone (EOF, an error, a TLS alert, a failed handshake): the session ends.
  virtual void on_transport_closed() = 0;
  // After a write() that came back kBlocked: the transport can take more.
  virtual void on_writable() = 0;
  // Asked between the reads of one read event: true ends the event early (on_read_done()
  // follows), leaving the rest in the socket until read() (back-pressure: the handler's
  // recipients are not keeping up).
  virtual bool hold_reading() const { return false; }
  // What pending operations on the transport hold alive: the handler itself (its
  // shared_from_this()), which owns the transport.
  virtual std::shared_ptr<void> keep_alive() = 0;

 protected:
  ~TransportHandler() = default;
};

class Transport {
 public:
  virtual ~Transport() = default;

  enum class WriteStatus {
    kDone,     // everything taken is with the kernel; more may be written at once
    kBlocked,  // the connection takes no more now; on_writable() follows
    kFailed,   // the connection is broken: the session closes it
  };
  struct WriteResult {
    std::size_t taken = 0;  // bytes of `bufs`, from the front, the transport has taken
    WriteStatus status = WriteStatus::kDone;
  };

  // Starts delivering to `handler` (direct TLS: after the handshake; a failed one ends in
  // on_transport_closed()).
  virtual void start(TransportHandler& handler) = 0;
  // Delivers to `handler` from now on: for a connection started with another handler (the HTTP
  // server's, before a WebSocket upgrade) whose reading has stopped; read() goes on.
  virtual void set_handler(TransportHandler& handler) = 0;
  // Resumes reading after on_read_done() returned false.
  virtual void read() = 0;
  // Writes the front of `bufs` (the stanzas of the session's queue in order) in one system call
  // (one sendmsg; with TLS one record batch): a flush of many stanzas is one write.
  virtual WriteResult write(std::span<const std::string_view> bufs) = 0;
  // Bytes taken by write() but not handed to the kernel yet (sealed records behind a full
  // socket).
  virtual bool holds_output() const = 0;
  // RFC 6120 §5.4.3.3: TLS on this connection, after <proceed/> is on the wire. Throws
  // boost::system::system_error when the handshake fails.
  virtual boost::asio::awaitable<void> start_tls() = 0;
  // Ends the connection: TLS close_notify (RFC 8446 §6.1) after what is already sealed, best
  // effort and without waiting, then the socket closes. No handler call follows but the
  // completion of operations already under way.
  virtual void close() = 0;
  // close(), and the handler hears nothing more from this transport, not even of operations
  // under way: its session goes on without it (or on another connection).
  virtual void abandon() = 0;
  virtual bool is_closed() const = 0;
  // Frees what an idle connection need not hold (the TLS 1.3 cipher contexts); true if it
  // freed anything.
  virtual bool hibernate() = 0;
  // Sends a keepalive of the connection's own (a WebSocket ping, RFC 6455 §5.5.2), whose answer
  // reaches the handler as on_bytes() with no bytes; false when the connection has none (the
  // session then pings in XMPP, XEP-0199).
  virtual bool ping() { return false; }
  virtual const std::string& peer_address() const = 0;
  virtual const Security& security() const = 0;
};

}  // namespace kabar::net
