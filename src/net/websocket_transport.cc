#include "net/websocket_transport.h"

#include <spdlog/spdlog.h>

#include <stdexcept>
#include <utility>

namespace kabar::net {

namespace asio = boost::asio;

namespace {

// The session's output is framed in batches of about this much (an item is never cut).
constexpr std::size_t kBatch = 64 * 1024;

// Shared by the connections of a shard thread, so that an idle one holds none of them: the
// session's bytes gathered for framing, the frames, where each item's frame ends, and a
// message turned into stream bytes.
thread_local std::string g_ws_gather;
thread_local std::string g_frames;
struct Item {
  std::size_t end = 0;
  std::size_t plain = 0;
};
thread_local std::vector<Item> g_items;
thread_local std::string g_in;

// What the session's parser is fed for a message that is not one complete element: no XML
// parser accepts it in any state, so the session answers as it does to bad XML on TCP
// (RFC 6120 §4.9.3.13 <not-well-formed/>).
constexpr std::string_view kNotWellFormed = "</>";

}  // namespace

WebSocketTransport::WebSocketTransport(std::unique_ptr<Transport> inner, bool started,
                                       WebSocketOptions options)
    : inner_(std::move(inner)),
      inner_started_(started),
      options_(options),
      parser_(options.max_message) {
  security_ = inner_->security();
  // RFC 7395 §3.8: TLS is the WebSocket connection's (wss://); STARTTLS is never offered.
  security_.starttls = false;
  if (!security_.tls && options_.trusted_plain) security_.tls = true;
}

WebSocketTransport::~WebSocketTransport() = default;

void WebSocketTransport::start(TransportHandler& handler) {
  handler_ = &handler;
  if (inner_started_) {
    inner_->set_handler(*this);
    inner_->read();
  } else {
    inner_->start(*this);
  }
}

void WebSocketTransport::set_handler(TransportHandler& handler) { handler_ = &handler; }

void WebSocketTransport::read() {
  if (stopped_) {
    // After the peer's close frame: what it sent before is handled, now the connection goes.
    if (peer_closing_ && !closed_) {
      closed_ = true;
      inner_->close();
    }
    if (handler_ != nullptr) handler_->on_transport_closed();
    return;
  }
  inner_->read();
}

asio::awaitable<void> WebSocketTransport::start_tls() {
  throw boost::system::system_error(asio::error::operation_not_supported);
  co_return;
}

// --- Reading.

bool WebSocketTransport::on_bytes(std::string_view bytes) {
  // Nothing follows a close frame (RFC 6455 §5.5.1): bytes after it are ignored, and the read
  // goes on to on_read_done(), where what came before it is handled.
  if (peer_closing_) return true;
  if (handler_ == nullptr || stopped_) return false;
  switch (parser_.feed(bytes, *this)) {
    case ws::FrameParser::Status::kOk:
      return true;
    case ws::FrameParser::Status::kStopped:
      return peer_closing_;
    case ws::FrameParser::Status::kError:
      spdlog::debug("ws {}: {}: closing with {}", inner_->peer_address(), parser_.error_text(),
                    parser_.error_code());
      fail(parser_.error_code(), parser_.error_text());
      return false;
  }
  return false;
}

bool WebSocketTransport::on_text(std::string_view message) {
  g_in.clear();
  if (!ws::client_message_to_stream(message, g_in)) {
    spdlog::debug("ws {}: a message that is not one complete element", inner_->peer_address());
    g_in.assign(kNotWellFormed);
  }
  if (!handler_->on_bytes(g_in)) {
    stopped_ = true;
    return false;
  }
  return true;
}

bool WebSocketTransport::on_ping(std::string_view payload) {
  send_control(ws::Opcode::kPong, payload);  // RFC 6455 §5.5.3: the same application data
  return !closed_;
}

bool WebSocketTransport::on_pong(std::string_view /*payload*/) {
  // The answer to our keepalive: the session hears that the peer is there (no bytes).
  if (!handler_->on_bytes({})) {
    stopped_ = true;
    return false;
  }
  return true;
}

bool WebSocketTransport::ping() {
  if (closed_ || close_sent_) return false;
  send_control(ws::Opcode::kPing, "kabar");
  return true;
}

bool WebSocketTransport::on_close(std::uint16_t code, std::string_view /*reason*/) {
  // RFC 6455 §5.5.1: answered with a close frame (echoing the code), then the server closes the
  // TCP connection (§7.1.1). Without <close/> first (RFC 7395 §3.6) this is the connection
  // breaking: a resumable session waits for its client to come back. But first the session
  // handles what arrived before the close frame, often in the same read (a message sent as its
  // page closed), as it would the bytes before a TCP connection's end: on_read_done() lets it,
  // and its read() then closes the connection. Its answers meanwhile go nowhere (write()).
  if (!close_sent_) {
    close_sent_ = true;
    send_control(ws::Opcode::kClose, code == 1005 ? std::string() : ws::close_payload(code));
  }
  stopped_ = true;
  peer_closing_ = true;
  return false;
}

void WebSocketTransport::fail(std::uint16_t code, std::string_view reason) {
  stopped_ = true;
  if (!close_sent_) {
    close_sent_ = true;
    send_control(ws::Opcode::kClose, ws::close_payload(code, reason));
  }
  closed_ = true;
  inner_->close();
  if (handler_ != nullptr) handler_->on_transport_closed();
}

bool WebSocketTransport::on_read_done() {
  if (handler_ == nullptr) return false;
  if (peer_closing_) {
    // The session handles what came before the close frame and then calls read(); with
    // nothing to handle it goes on at once, and read() ends the connection.
    if (handler_->on_read_done()) read();
    return false;
  }
  if (stopped_) return false;
  return handler_->on_read_done();
}

void WebSocketTransport::on_peer_closed() {
  if (handler_ != nullptr) handler_->on_peer_closed();
}

void WebSocketTransport::on_transport_closed() {
  if (handler_ != nullptr) handler_->on_transport_closed();
}

bool WebSocketTransport::hold_reading() const {
  return handler_ != nullptr && handler_->hold_reading();
}

std::shared_ptr<void> WebSocketTransport::keep_alive() {
  return handler_ != nullptr ? handler_->keep_alive() : nullptr;
}

// --- Writing.

Transport::WriteStatus WebSocketTransport::write_held(std::size_t& taken) {
  while (out_off_ < out_.size()) {
    const std::string_view rest = std::string_view(out_).substr(out_off_);
    const auto r = inner_->write(std::span<const std::string_view>(&rest, 1));
    out_off_ += r.taken;
    std::size_t k = 0;
    while (k < held_.size() && held_[k].end <= out_off_) taken += held_[k++].plain;
    held_.erase(held_.begin(), held_.begin() + static_cast<std::ptrdiff_t>(k));
    if (r.status != WriteStatus::kDone) return r.status;
    if (r.taken == 0) return WriteStatus::kDone;  // nothing goes before TLS is up (not here)
  }
  std::string().swap(out_);
  out_off_ = 0;
  std::vector<Held>().swap(held_);
  return WriteStatus::kDone;
}

Transport::WriteResult WebSocketTransport::write(std::span<const std::string_view> bufs) {
  if (closed_) return {0, WriteStatus::kFailed};
  if (close_sent_) {
    // After our close frame no data frame may follow (RFC 6455 §5.5.1): the answers to what the
    // peer sent before its close go nowhere, as they would to a vanished peer (with stream
    // management they stay unacknowledged, to be sent again on a resumption).
    std::size_t all = 0;
    for (const std::string_view b : bufs) all += b.size();
    return {all, WriteStatus::kDone};
  }
  // Frames made before: their bytes are the front of `bufs`, reported as they reach the inner
  // transport (some may have gone in on_writable()).
  std::size_t taken = std::exchange(unreported_, 0);
  if (out_off_ < out_.size()) {
    const WriteStatus st = write_held(taken);
    if (st != WriteStatus::kDone || taken > 0 || out_off_ < out_.size()) return {taken, st};
  } else if (taken > 0) {
    return {taken, WriteStatus::kDone};
  }
  // Gather a batch; an item cut at its end waits for the next call.
  g_ws_gather.clear();
  std::size_t used = 0;
  while (used < bufs.size() && g_ws_gather.size() < kBatch) g_ws_gather.append(bufs[used++]);
  g_frames.clear();
  g_items.clear();
  auto note = [](std::size_t plain, std::size_t end) { g_items.push_back(Item{end, plain}); };
  std::size_t consumed = ws::frame_stream(g_ws_gather, g_frames, note);
  while (consumed == 0 && used < bufs.size()) {
    // One item bigger than the batch: gather until it is whole.
    g_ws_gather.append(bufs[used++]);
    consumed = ws::frame_stream(g_ws_gather, g_frames, note);
  }
  if (g_frames.empty()) return {consumed, WriteStatus::kDone};  // only declarations or spaces
  std::string_view frames = g_frames;
  std::size_t written = 0;
  WriteStatus st = WriteStatus::kDone;
  while (written < frames.size()) {
    const std::string_view rest = frames.substr(written);
    const auto r = inner_->write(std::span<const std::string_view>(&rest, 1));
    written += r.taken;
    st = r.status;
    if (st != WriteStatus::kDone || r.taken == 0) break;
  }
  if (st == WriteStatus::kFailed) return {0, st};
  std::size_t k = 0;
  while (k < g_items.size() && g_items[k].end <= written) taken += g_items[k++].plain;
  if (written < frames.size()) {
    // The rest waits here: its session bytes are reported taken once written.
    out_.assign(frames.substr(written));
    out_off_ = 0;
    for (; k < g_items.size(); ++k)
      held_.push_back(Held{g_items[k].end - written, g_items[k].plain});
  }
  return {taken, st};
}

void WebSocketTransport::send_control(ws::Opcode op, std::string_view payload) {
  if (closed_ || (close_sent_ && op != ws::Opcode::kClose)) return;
  if (out_off_ > 0) {
    out_.erase(0, out_off_);
    for (auto& h : held_) h.end -= out_off_;
    out_off_ = 0;
  }
  ws::append_frame(out_, op, payload);
  held_.push_back(Held{out_.size(), 0});
  std::size_t taken = 0;
  const WriteStatus st = write_held(taken);
  unreported_ += taken;
  if (st == WriteStatus::kFailed) stopped_ = true;
}

void WebSocketTransport::on_writable() {
  if (out_off_ < out_.size()) {
    std::size_t taken = 0;
    const WriteStatus st = write_held(taken);
    unreported_ += taken;
    if (st == WriteStatus::kBlocked) return;  // the inner transport calls again
  }
  if (handler_ != nullptr) handler_->on_writable();
}

bool WebSocketTransport::holds_output() const {
  return out_off_ < out_.size() || inner_->holds_output();
}

bool WebSocketTransport::hibernate() {
  parser_.release_memory();
  return inner_->hibernate();
}

void WebSocketTransport::close() {
  if (closed_) return;
  // RFC 6455 §7.1.2: a close frame, then the server closes the TCP connection (§7.1.1).
  if (!close_sent_) {
    close_sent_ = true;
    send_control(ws::Opcode::kClose, ws::close_payload(ws::kCloseNormal));
  }
  closed_ = true;
  inner_->close();
}

void WebSocketTransport::abandon() {
  handler_ = nullptr;
  closed_ = true;
  inner_->abandon();
}

}  // namespace kabar::net
