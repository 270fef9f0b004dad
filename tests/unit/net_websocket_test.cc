// RFC 6455 framing and RFC 7395 XML framing (net/websocket_codec.h): every input split at every
// byte gives the same messages; each failing frame gets its close code; the session's stream is
// cut into frames that parse alone.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "net/websocket_codec.h"

namespace ws = kabar::net::ws;

namespace {

std::string masked(std::uint8_t b0, std::string_view payload, bool mask = true) {
  std::string f;
  f.push_back(static_cast<char>(b0));
  const std::size_t n = payload.size();
  const char m = mask ? static_cast<char>(0x80) : 0;
  if (n < 126) {
    f.push_back(static_cast<char>(m | static_cast<char>(n)));
  } else if (n <= 0xffff) {
    f.push_back(static_cast<char>(m | 126));
    f.push_back(static_cast<char>(n >> 8));
    f.push_back(static_cast<char>(n & 0xff));
  } else {
    f.push_back(static_cast<char>(m | 127));
    for (int k = 7; k >= 0; --k) f.push_back(static_cast<char>((n >> (8 * k)) & 0xff));
  }
  if (!mask) return f + std::string(payload);
  const char key[4] = {'\x12', '\x34', '\x56', '\x78'};
  f.append(key, 4);
  for (std::size_t i = 0; i < n; ++i) f.push_back(static_cast<char>(payload[i] ^ key[i % 4]));
  return f;
}

struct Log final : ws::FrameSink {
  std::vector<std::string> events;
  bool on_text(std::string_view m) override {
    events.push_back("text:" + std::string(m));
    return true;
  }
  bool on_ping(std::string_view p) override {
    events.push_back("ping:" + std::string(p));
    return true;
  }
  bool on_pong(std::string_view p) override {
    events.push_back("pong:" + std::string(p));
    return true;
  }
  bool on_close(std::uint16_t code, std::string_view r) override {
    events.push_back("close:" + std::to_string(code) + ":" + std::string(r));
    return true;
  }
};

// Feeds `in` whole and split at every offset; all must agree. Returns the events and the error
// code (0: none).
std::pair<std::vector<std::string>, int> parse(const std::string& in, std::size_t max = 1024) {
  std::vector<std::string> first;
  int first_err = -1;
  for (std::size_t cut = 0; cut <= in.size(); ++cut) {
    ws::FrameParser p(max);
    Log log;
    auto st = p.feed(std::string_view(in).substr(0, cut), log);
    if (st == ws::FrameParser::Status::kOk) st = p.feed(std::string_view(in).substr(cut), log);
    const int err = st == ws::FrameParser::Status::kError ? p.error_code() : 0;
    if (first_err < 0) {
      first = log.events;
      first_err = err;
    } else {
      EXPECT_EQ(log.events, first) << "split at " << cut;
      EXPECT_EQ(err, first_err) << "split at " << cut;
    }
  }
  return {first, first_err};
}

}  // namespace

TEST(WebSocketFrames, TextPingCloseAndFragments) {
  const std::string in = masked(0x81, "<presence/>") + masked(0x89, "hi") +
                         masked(0x01, "<iq><ping") + masked(0x8A, "pong") +
                         masked(0x80, " xmlns='urn:xmpp:ping'/></iq>") +
                         masked(0x81, std::string(300, 'x')) +
                         masked(0x88,
                                "\x03\xe8"
                                "bye");
  auto [events, err] = parse(in);
  EXPECT_EQ(err, 0);
  ASSERT_EQ(events.size(), 6u);
  EXPECT_EQ(events[0], "text:<presence/>");
  EXPECT_EQ(events[1], "ping:hi");
  // A control frame between the fragments of a message (RFC 6455 §5.4): the pong comes first.
  EXPECT_EQ(events[2], "pong:pong");
  EXPECT_EQ(events[3], "text:<iq><ping xmlns='urn:xmpp:ping'/></iq>");
  EXPECT_EQ(events[4], "text:" + std::string(300, 'x'));
  EXPECT_EQ(events[5], "close:1000:bye");
}

TEST(WebSocketFrames, Failures) {
  EXPECT_EQ(parse(masked(0x82, "ab")).second, ws::kCloseUnsupportedData);
  EXPECT_EQ(parse(masked(0x81, "<a/>", false)).second, ws::kCloseProtocolError);
  EXPECT_EQ(parse(masked(0x83, "x")).second, ws::kCloseProtocolError);  // opcode 3
  EXPECT_EQ(parse(masked(0xC1, "x")).second, ws::kCloseProtocolError);  // RSV1
  EXPECT_EQ(parse(masked(0x80, "x")).second, ws::kCloseProtocolError);  // lone continuation
  EXPECT_EQ(parse(masked(0x09, "x")).second, ws::kCloseProtocolError);  // fragmented ping
  EXPECT_EQ(parse(masked(0x89, std::string(126, 'p'))).second, ws::kCloseProtocolError);
  EXPECT_EQ(parse(masked(0x01, "a") + masked(0x81, "b")).second, ws::kCloseProtocolError);
  EXPECT_EQ(parse(masked(0x81, std::string(2000, 'x'))).second, ws::kCloseTooBig);
  EXPECT_EQ(parse(masked(0x01, std::string(600, 'x')) + masked(0x80, std::string(600, 'x'))).second,
            ws::kCloseTooBig);
  EXPECT_EQ(parse(masked(0x81, "\xff")).second, ws::kCloseInvalidPayload);
  EXPECT_EQ(parse(masked(0x81, "\xed\xa0\x80")).second, ws::kCloseInvalidPayload);  // surrogate
  EXPECT_EQ(parse(masked(0x88, "\x03")).second, ws::kCloseProtocolError);
  EXPECT_EQ(parse(masked(0x88, "\x03\xed")).second, ws::kCloseProtocolError);  // 1005 on the wire
}

TEST(WebSocketFrames, Utf8) {
  EXPECT_TRUE(ws::valid_utf8("plain ascii and more than eight bytes"));
  EXPECT_TRUE(ws::valid_utf8("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
  EXPECT_FALSE(ws::valid_utf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(ws::valid_utf8("\xf4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(ws::valid_utf8("abc\xe2\x82"));       // cut short
}

TEST(WebSocketXml, ClientMessages) {
  std::string out;
  ASSERT_TRUE(ws::client_message_to_stream(
      "<open xmlns=\"urn:ietf:params:xml:ns:xmpp-framing\" to=\"localhost\" version=\"1.0\"/>",
      out));
  EXPECT_EQ(out,
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
            " to=\"localhost\" version=\"1.0\">");
  out.clear();
  ASSERT_TRUE(
      ws::client_message_to_stream(" <close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>\n", out));
  EXPECT_EQ(out, "</stream:stream>");
  out.clear();
  ASSERT_TRUE(ws::client_message_to_stream(
      "<message to='a@b'><body>x &lt; y <![CDATA[</message>]]></body><!-- </message> --></message>",
      out));
  out.clear();
  EXPECT_FALSE(ws::client_message_to_stream("hello", out));
  EXPECT_FALSE(ws::client_message_to_stream("<message><body>half", out));
  EXPECT_FALSE(ws::client_message_to_stream("<a/><b/>", out));
  EXPECT_FALSE(ws::client_message_to_stream("</a>", out));
  EXPECT_FALSE(ws::client_message_to_stream("<a title='>'", out));
  EXPECT_FALSE(ws::client_message_to_stream("<?xml version='1.0'?><a/>", out));
}

TEST(WebSocketXml, StreamIsFramedItemByItem) {
  const std::string stream =
      "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
      "xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='localhost' version='1.0' "
      "xml:lang='en'><stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
      "</stream:features> <message to='a@b' from='c@d/e'><body>1 &gt; 0</body></message>"
      "<a xmlns='urn:xmpp:sm:3' h='2'/><stream:error><conflict "
      "xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream><iq";
  std::string frames;
  std::vector<std::size_t> plain;
  const std::size_t took =
      ws::frame_stream(stream, frames, [&](std::size_t n, std::size_t) { plain.push_back(n); });
  EXPECT_EQ(took, stream.size() - 3);  // "<iq" waits for the rest
  // Unframe.
  std::vector<std::string> msgs;
  for (std::size_t i = 0; i < frames.size();) {
    ASSERT_EQ(static_cast<unsigned char>(frames[i]), 0x81u);
    std::size_t len = static_cast<unsigned char>(frames[i + 1]);
    i += 2;
    if (len == 126) {
      len =
          (static_cast<unsigned char>(frames[i]) << 8) | static_cast<unsigned char>(frames[i + 1]);
      i += 2;
    }
    msgs.push_back(frames.substr(i, len));
    i += len;
  }
  ASSERT_EQ(msgs.size(), 6u);
  EXPECT_EQ(msgs[0],
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='s1' from='localhost' "
            "version='1.0' xml:lang='en'/>");
  EXPECT_EQ(msgs[1],
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind "
            "xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>");
  EXPECT_EQ(msgs[2],
            "<message xmlns='jabber:client' to='a@b' from='c@d/e'><body>1 &gt; 0</body></message>");
  EXPECT_EQ(msgs[3], "<a xmlns='urn:xmpp:sm:3' h='2'/>");
  EXPECT_EQ(msgs[4],
            "<stream:error xmlns:stream='http://etherx.jabber.org/streams'><conflict "
            "xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>");
  EXPECT_EQ(msgs[5], "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>");
}
