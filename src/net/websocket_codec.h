// RFC 6455 framing and the RFC 7395 XML framing, with no I/O: bytes in, messages and bytes out.
// The WebSocket transport (websocket_transport.h) drives them; the fuzz target feeds them
// directly. Nothing here allocates while a connection is idle: a frame split over reads is
// kept only until it is complete.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kabar::net::ws {

enum class Opcode : std::uint8_t {
  kContinuation = 0x0,
  kText = 0x1,
  kBinary = 0x2,
  kClose = 0x8,
  kPing = 0x9,
  kPong = 0xA,
};

// RFC 6455 §7.4.1.
enum CloseCode : std::uint16_t {
  kCloseNormal = 1000,
  kCloseGoingAway = 1001,
  kCloseProtocolError = 1002,
  kCloseUnsupportedData = 1003,
  kCloseInvalidPayload = 1007,
  kClosePolicy = 1008,
  kCloseTooBig = 1009,
  kCloseInternal = 1011,
};

// What the parser hands on, in order.
class FrameSink {
 public:
  // A complete text message (its fragments joined, unmasked, valid UTF-8). False stops feed().
  virtual bool on_text(std::string_view message) = 0;
  // RFC 6455 §5.5.2: to be answered with a pong carrying the same payload.
  virtual bool on_ping(std::string_view payload) = 0;
  // §5.5.3: a pong, the answer to a ping of ours (or unsolicited, which counts the same: the
  // peer is there).
  virtual bool on_pong(std::string_view /*payload*/) { return true; }
  // A close frame (§5.5.1): `code` 1005 when it carried none.
  virtual bool on_close(std::uint16_t code, std::string_view reason) = 0;

 protected:
  ~FrameSink() = default;
};

// Frames sent by a client (RFC 6455 §5.2, §5.3: every client frame is masked).
class FrameParser {
 public:
  // `max_message`: the largest text message taken (its fragments together); beyond it the
  // connection fails with 1009.
  explicit FrameParser(std::size_t max_message) : max_message_(max_message) {}

  enum class Status { kOk, kStopped, kError };
  // Feeds received bytes. kError: the connection must fail with error_code() (RFC 6455 §7.1.7);
  // nothing more may be fed. kStopped: the sink returned false.
  Status feed(std::string_view bytes, FrameSink& sink);
  std::uint16_t error_code() const { return error_; }
  const char* error_text() const { return error_text_; }
  // Bytes kept for a frame or message not yet complete.
  std::size_t buffered() const { return message_.size() + header_len_; }
  // Gives back the memory of an empty buffer.
  void release_memory();

 private:
  Status fail(std::uint16_t code, const char* text);
  // The header in header_ is complete: checks it and prepares for the payload.
  Status begin_frame();
  // The payload of the current frame is complete (in payload).
  Status end_frame(std::string_view payload, FrameSink& sink);

  std::size_t max_message_;
  std::array<unsigned char, 14> header_{};
  std::size_t header_len_ = 0;
  std::size_t header_need_ = 2;
  bool in_payload_ = false;
  // The current frame.
  Opcode opcode_ = Opcode::kText;
  bool fin_ = false;
  std::array<unsigned char, 4> mask_{};
  std::uint64_t remaining_ = 0;  // payload bytes still to come
  std::uint64_t unmasked_ = 0;   // payload bytes of this frame unmasked so far (the mask's phase)
  // A text message in fragments (or a frame split over reads): its unmasked bytes.
  std::string message_;
  bool in_message_ = false;  // a fragmented text message is under way
  std::array<char, 125> control_{};
  std::size_t control_len_ = 0;
  std::uint16_t error_ = 0;
  const char* error_text_ = "";
};

// Appends one unmasked server frame (FIN set) with `payload`.
void append_frame(std::string& out, Opcode op, std::string_view payload);
// Appends a frame header for a FIN frame of `len` payload bytes.
void append_frame_header(std::string& out, Opcode op, std::size_t len);
// A close frame's payload: the code and a reason (RFC 6455 §5.5.1).
std::string close_payload(std::uint16_t code, std::string_view reason = {});

// RFC 3629 UTF-8, as RFC 6455 §8.1 requires of text messages.
bool valid_utf8(std::string_view s);

// RFC 7395 §3.3.3: every message is exactly one XML element, parsable alone.
struct ElementShape {
  bool complete = false;   // one element, whole, and nothing but whitespace around it
  std::string_view name;   // its qualified name
  std::string_view attrs;  // the start tag's text between the name and '>' or '/>'
  bool empty = false;      // <name .../>
  std::size_t begin = 0;   // offset of '<' in the message
};
// A light scan of tags, quotes, comments, CDATA and processing instructions: enough to find
// where one element ends, not a parser (the session's expat parser checks the rest).
ElementShape element_shape(std::string_view message);

// The value of attribute `name` in a start tag's attribute text (as ElementShape::attrs); false
// when it is not there.
bool find_attribute(std::string_view attrs, std::string_view name, std::string_view& value);

inline constexpr std::string_view kFramingNs = "urn:ietf:params:xml:ns:xmpp-framing";

// Turns a client's messages into the XML stream the session reads (RFC 7395 §3.3, §3.6):
// <open/> becomes a stream header, <close/> the stream's end tag, and every other element goes
// on as it came. Returns false when the message is not one complete element (the caller makes
// that a not-well-formed stream).
bool client_message_to_stream(std::string_view message, std::string& out);

// Splits the session's XML stream output into the items RFC 7395 sends one per message and
// appends each as a text frame (§3.3.3): the stream header becomes <open/>, its end tag
// <close/>, and an element gets the namespace declarations it relied on from the stream header
// (xmlns='jabber:client', or xmlns:stream on <stream:features/> and <stream:error/>), so that
// every frame parses alone. The XML declaration and whitespace between elements are dropped.
// Frames only whole items from the front of `in` and returns how many bytes they took;
// `on_item(bytes_of_in, out_size_after)` is called after each.
template <typename F>
std::size_t frame_stream(std::string_view in, std::string& out, F&& on_item);

// Where the stream-level item starting at `pos` ends (an element, the stream header's start tag
// or the stream's end tag, a declaration, or the text up to the next tag); npos when it is not
// complete in `in`.
std::size_t item_end(std::string_view in, std::size_t pos);
// Appends the frame for one item (nothing for text and declarations).
void frame_item(std::string_view item, std::string& out);

template <typename F>
std::size_t frame_stream(std::string_view in, std::string& out, F&& on_item) {
  std::size_t pos = 0;
  while (pos < in.size()) {
    const std::size_t end = item_end(in, pos);
    if (end == std::string_view::npos) break;
    frame_item(in.substr(pos, end - pos), out);
    on_item(end - pos, out.size());
    pos = end;
  }
  return pos;
}

}  // namespace kabar::net::ws
