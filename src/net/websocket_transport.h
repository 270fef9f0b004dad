// XMPP over WebSocket (RFC 7395) as one more Transport: it wraps the TCP (or TLS) transport the
// HTTP upgrade came in on, and the session above it reads and writes the same XML stream as on
// a client port. Inbound, each text message is one element: <open/> becomes a stream header,
// <close/> the stream's end tag, a stanza goes on as it came. Outbound, the session's stream is
// cut into its elements, each made parsable alone (namespace declarations added) and sent as one
// text frame. Ping is answered with pong; a close frame with a close frame. The server pings an
// idle connection itself (ping(), from the shard's sweep): the pong counts as the peer's answer.
//
// Failing frames close the connection with RFC 6455's codes: a binary frame 1003, an unmasked
// or malformed frame or an unknown opcode 1002, a message over the limit 1009, text that is not
// UTF-8 1007. A message that is not one complete XML element reaches the session as bytes no
// XML parser accepts, so it answers <not-well-formed/> as it does on TCP.
//
// Why not Beast's websocket::stream: it keeps read and write buffers per connection (several
// KiB each, for as long as the connection lives), which an idle session cannot afford, and over
// wss:// it would need Asio's SSL stream (a full OpenSSL SSL object per connection) instead of
// kabar's TLS 1.3 record layer. Here an idle WebSocket connection holds its TCP transport and a
// few dozen bytes of parser state; a frame that arrives whole is unmasked in a buffer shared by
// the thread's connections.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "net/transport.h"
#include "net/websocket_codec.h"

namespace kabar::net {

struct WebSocketOptions {
  std::size_t max_message = 256 * 1024;  // bytes per message (fragments joined); beyond: 1009
  // The connection counts as secure for authentication though it has no TLS of its own
  // (a loopback peer: the bytes never leave the machine).
  bool trusted_plain = false;
};

class WebSocketTransport final : public Transport, private TransportHandler, private ws::FrameSink {
 public:
  // `inner`: the connection the upgrade was answered on, started already (`started`: its reads
  // go to another handler until start() takes them) or not.
  WebSocketTransport(std::unique_ptr<Transport> inner, bool started, WebSocketOptions options);
  ~WebSocketTransport() override;

  void start(TransportHandler& handler) override;
  void read() override;
  WriteResult write(std::span<const std::string_view> bufs) override;
  bool holds_output() const override;
  // RFC 7395 §3.8 (TLS is the WebSocket connection's, wss://): never.
  boost::asio::awaitable<void> start_tls() override;
  // Sends a close frame (1000) after what is written, then closes the connection.
  void close() override;
  void abandon() override;
  bool is_closed() const override { return closed_ || inner_->is_closed(); }
  bool hibernate() override;
  // RFC 6455 §5.5.2: a ping frame; the pong comes to the handler as on_bytes("").
  bool ping() override;
  const std::string& peer_address() const override { return inner_->peer_address(); }
  const Security& security() const override { return security_; }

  void set_handler(TransportHandler& handler) override;

 private:
  // TransportHandler, for the inner transport.
  bool on_bytes(std::string_view bytes) override;
  bool on_read_done() override;
  void on_peer_closed() override;
  void on_transport_closed() override;
  void on_writable() override;
  bool hold_reading() const override;
  std::shared_ptr<void> keep_alive() override;
  // FrameSink.
  bool on_text(std::string_view message) override;
  bool on_ping(std::string_view payload) override;
  bool on_pong(std::string_view payload) override;
  bool on_close(std::uint16_t code, std::string_view reason) override;

  // Fails the WebSocket connection (RFC 6455 §7.1.7): a close frame with `code`, then the
  // connection closes and the session hears it is gone.
  void fail(std::uint16_t code, std::string_view reason);
  // Queues a control frame behind what is held and writes what it can.
  void send_control(ws::Opcode op, std::string_view payload);
  // Writes what out_ holds; the plaintext bytes of the session wholly written are added to
  // `taken`.
  WriteStatus write_held(std::size_t& taken);

  std::unique_ptr<Transport> inner_;
  bool inner_started_;
  WebSocketOptions options_;
  TransportHandler* handler_ = nullptr;
  Security security_;
  ws::FrameParser parser_;
  // Frames not yet taken by the inner transport, from out_off_ on, and for each framed item
  // of the session's bytes where its frame ends in out_ and how many session bytes it holds
  // (reported as taken once the frame is wholly written, as the TLS transport does).
  std::string out_;
  std::size_t out_off_ = 0;
  struct Held {
    std::size_t end = 0;
    std::size_t plain = 0;
  };
  std::vector<Held> held_;
  // Session bytes whose frames were written outside write() (on_writable(), a control frame
  // pushing them out): reported taken by the next write().
  std::size_t unreported_ = 0;
  bool closed_ = false;
  bool close_sent_ = false;
  bool stopped_ = false;  // the session stopped reading (on_bytes false) or the connection failed
  // The peer's close frame came: the session handles what came before it, then read() closes.
  bool peer_closing_ = false;
};

}  // namespace kabar::net
