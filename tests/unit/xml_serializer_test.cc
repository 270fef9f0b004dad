#include <gtest/gtest.h>

#include "xml/serializer.h"
#include "xml/stream_parser.h"

namespace kabar::xml {
namespace {

TEST(XmlSerializer, EscapesTextSpecialCharacters) {
  std::string out;
  escape_text("a&b<c>d'e\"f\rg\th\ni]]>", out);
  EXPECT_EQ(out, "a&amp;b&lt;c&gt;d'e\"f&#13;g\th\ni]]&gt;");
}

TEST(XmlSerializer, EscapesAttributeSpecialCharacters) {
  std::string out = "prefix:";
  escape_attr("a&b<c>d'e\"f\rg\th\ni", out);
  EXPECT_EQ(out, "prefix:a&amp;b&lt;c&gt;d&apos;e&quot;f&#13;g&#9;h&#10;i");
}

// Every byte value, alone, in runs and next to each other, against the per-character rule.
TEST(XmlSerializer, EscapesEveryByteAsTheRuleSays) {
  auto rule = [](char c, bool attribute) -> std::string {
    switch (c) {
      case '&':
        return "&amp;";
      case '<':
        return "&lt;";
      case '>':
        return "&gt;";
      case '\r':
        return "&#13;";
      case '\'':
        return attribute ? "&apos;" : "'";
      case '"':
        return attribute ? "&quot;" : "\"";
      case '\t':
        return attribute ? "&#9;" : "\t";
      case '\n':
        return attribute ? "&#10;" : "\n";
      default:
        // XML 1.0 §2.2: the other C0 controls are not Chars; in this input every byte from 0x80
        // up is a maximal ill-formed subpart of its own (no lead byte is followed by a
        // continuation byte it accepts). Each becomes U+FFFD.
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x80)
          return "\xEF\xBF\xBD";
        return std::string(1, c);
    }
  };
  std::string in;
  for (int i = 0; i < 256; ++i) in += std::string(static_cast<std::size_t>(i % 3 + 1), char(i));
  in += "&&plain text<<";
  std::string want_text, want_attr;
  for (char c : in) {
    want_text += rule(c, false);
    want_attr += rule(c, true);
  }
  std::string text = "x";
  escape_text(in, text);
  EXPECT_EQ(text, "x" + want_text);
  std::string attr;
  escape_attr(in, attr);
  EXPECT_EQ(attr, want_attr);
}

TEST(XmlSerializer, LeavesUtf8Alone) {
  std::string out;
  escape_text("\xC3\xA9\xF0\x9F\x98\x80", out);
  EXPECT_EQ(out, "\xC3\xA9\xF0\x9F\x98\x80");
}

constexpr std::string_view kFffd = "\xEF\xBF\xBD";

std::string text_of(std::string_view in) {
  std::string out;
  escape_text(in, out);
  return out;
}

TEST(XmlSerializer, NeverWritesWhatXmlForbids) {
  const std::string r(kFffd);
  EXPECT_EQ(text_of("a\x1b[31mb"), "a" + r + "[31mb");  // ESC
  EXPECT_EQ(text_of(std::string("a\0b", 3)), "a" + r + "b");
  EXPECT_EQ(text_of("\x01\x08\x0b\x0c\x1f"), r + r + r + r + r);
  EXPECT_EQ(text_of("\t\n"), "\t\n");                                  // the C0 controls XML allows
  EXPECT_EQ(text_of("\x7f\xc2\x85\xc2\x9b"), "\x7f\xc2\x85\xc2\x9b");  // DEL, C1: Chars
  EXPECT_EQ(text_of("\xef\xbf\xbe|\xef\xbf\xbf"), r + "|" + r);        // U+FFFE, U+FFFF
  EXPECT_EQ(text_of("\xef\xbf\xbd"), r);                               // U+FFFD itself
  EXPECT_EQ(text_of("\xf4\x8f\xbf\xbf"), "\xf4\x8f\xbf\xbf");          // U+10FFFF
  // Ill-formed UTF-8, one U+FFFD per maximal subpart (Unicode §3.9).
  EXPECT_EQ(text_of("\xed\xa0\x80"), r + r + r);          // a surrogate
  EXPECT_EQ(text_of("\xc0\xaf"), r + r);                  // an overlong '/'
  EXPECT_EQ(text_of("\xf4\x90\x80\x80"), r + r + r + r);  // past U+10FFFF
  EXPECT_EQ(text_of("a\xe2\x82"), "a" + r);               // truncated at the end
  EXPECT_EQ(text_of("\xe2\x82<"), r + "&lt;");            // truncated before a special character
  EXPECT_EQ(text_of("\xaf\xaf"), r + r);
  std::string attr;
  escape_attr("x\x1b'\xff", attr);
  EXPECT_EQ(attr, "x" + r + "&apos;" + r);
}

TEST(XmlSerializer, ValidXmlText) {
  EXPECT_TRUE(valid_xml_text(""));
  EXPECT_TRUE(valid_xml_text("plain \t\r\n text, caf\xc3\xa9 \xf0\x9f\x98\x80 \xc2\x9b"));
  EXPECT_FALSE(valid_xml_text("esc \x1b"));
  EXPECT_FALSE(valid_xml_text(std::string("nul \0", 5)));
  EXPECT_FALSE(valid_xml_text("\xef\xbf\xbf"));
  EXPECT_FALSE(valid_xml_text("\xed\xb0\x80"));
  EXPECT_FALSE(valid_xml_text("\xe2\x82"));
  EXPECT_FALSE(valid_xml_text("\x80"));
  EXPECT_FALSE(valid_xml_text("\xf8\x88\x80\x80\x80"));
}

TEST(XmlSerializer, DecodesUtf8) {
  auto c = decode_utf8("\xf0\x9f\x98\x80", 0);
  EXPECT_TRUE(c.valid);
  EXPECT_EQ(c.value, U'\U0001F600');
  EXPECT_EQ(c.length, 4u);
  c = decode_utf8("a\xc3\xa9", 1);
  EXPECT_TRUE(c.valid);
  EXPECT_EQ(c.value, U'\u00e9');
  EXPECT_EQ(c.length, 2u);
  c = decode_utf8("\xe0\x80\x80", 0);  // overlong: E0 takes A0..BF next
  EXPECT_FALSE(c.valid);
  EXPECT_EQ(c.length, 1u);
  c = decode_utf8("\xf0\x9f\x98", 0);  // truncated after a valid prefix of three
  EXPECT_FALSE(c.valid);
  EXPECT_EQ(c.length, 3u);
  std::string out;
  for (char32_t v : {U'a', U'\u00e9', U'\u20ac', U'\U0010FFFF'}) append_utf8(v, out);
  EXPECT_EQ(out, "a\xc3\xa9\xe2\x82\xac\xf4\x8f\xbf\xbf");
  EXPECT_TRUE(is_bidi_control(0x202E));
  EXPECT_TRUE(is_bidi_control(0x2066));
  EXPECT_FALSE(is_bidi_control(0x200F));
  EXPECT_TRUE(is_control(0x9B));
  EXPECT_FALSE(is_control(0xA0));
}

TEST(XmlSerializer, SelfClosesEmptyElementsAndOmitsNamespaceInScope) {
  Element presence("presence", "jabber:client");
  EXPECT_EQ(serialize(presence), "<presence/>");
  presence.set_attr("to", "a@b").set_attr("type", "unavailable");
  EXPECT_EQ(serialize(presence), "<presence to='a@b' type='unavailable'/>");
}

TEST(XmlSerializer, EmitsNamespaceWhereItChanges) {
  Element iq("iq", "jabber:client");
  iq.set_attr("type", "result");
  Element& query = iq.add_child("query", "jabber:iq:roster");
  query.add_child("item", "jabber:iq:roster").set_attr("jid", "a@b");
  EXPECT_EQ(serialize(iq),
            "<iq type='result'><query xmlns='jabber:iq:roster'><item jid='a@b'/></query></iq>");
  EXPECT_EQ(serialize(iq, "jabber:server"),
            "<iq xmlns='jabber:client' type='result'><query xmlns='jabber:iq:roster'>"
            "<item jid='a@b'/></query></iq>");
}

TEST(XmlSerializer, StreamLevelElements) {
  Element features("features", "http://etherx.jabber.org/streams");
  features.add_child("starttls", "urn:ietf:params:xml:ns:xmpp-tls")
      .add_child("required", "urn:ietf:params:xml:ns:xmpp-tls");
  EXPECT_EQ(serialize(features, "http://etherx.jabber.org/streams"),
            "<features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
            "</features>");
}

TEST(XmlSerializer, EmptyNamespaceUndeclaresDefault) {
  Element m("message", "jabber:client");
  m.add_child("x", "");
  EXPECT_EQ(serialize(m), "<message><x xmlns=''/></message>");
  EXPECT_EQ(serialize(Element("x")), "<x xmlns=''/>");
  EXPECT_EQ(serialize(Element("x"), ""), "<x/>");
}

TEST(XmlSerializer, TextAndMixedContent) {
  Element body("body", "jabber:client");
  body.add_text("1 < 2 & 3 > 2 'q' \"d\"\r\n");
  EXPECT_EQ(serialize(body), "<body>1 &lt; 2 &amp; 3 &gt; 2 'q' \"d\"&#13;\n</body>");
  Element p("p", "urn:x");
  p.add_text("a");
  p.add_child("b", "urn:x").add_text("bold");
  p.add_text("c");
  EXPECT_EQ(serialize(p, "urn:x"), "<p>a<b>bold</b>c</p>");
}

TEST(XmlSerializer, AttributeValuesEscaped) {
  Element m("message", "jabber:client");
  m.set_attr("id", "a'b\"c<d>e&f\tg\nh\ri");
  EXPECT_EQ(serialize(m), "<message id='a&apos;b&quot;c&lt;d&gt;e&amp;f&#9;g&#10;h&#13;i'/>");
}

TEST(XmlSerializer, NamespacedAttributes) {
  Element m("message", "jabber:client");
  m.set_attr("xml:lang", "en");
  m.set_attr("{urn:x}a", "1");
  m.set_attr("{urn:y}b", "2");
  m.set_attr("{urn:x}c", "3");
  m.set_attr("{http://www.w3.org/XML/1998/namespace}space", "preserve");
  EXPECT_EQ(serialize(m),
            "<message xml:lang='en' xmlns:ns0='urn:x' ns0:a='1' xmlns:ns1='urn:y' ns1:b='2' "
            "ns0:c='3' xml:space='preserve'/>");
}

TEST(XmlSerializer, XmlnsAttributesAreNotWritten) {
  Element m("message", "jabber:client");
  m.set_attr("xmlns", "urn:evil");
  m.set_attr("xmlns:foo", "urn:evil");
  EXPECT_EQ(serialize(m), "<message/>");
}

TEST(XmlSerializer, AppendsToExistingBuffer) {
  std::string out = "<stream>";
  serialize(Element("presence", "jabber:client"), out);
  EXPECT_EQ(out, "<stream><presence/>");
}

// Parses stanzas out of a stream (test helper).
struct Collector : StreamHandler {
  std::vector<Element> elements;
  void on_stream_open(const Element&, std::string_view) override {}
  void on_element(Element&& el) override { elements.push_back(std::move(el)); }
  void on_stream_close() override {}
};

std::vector<Element> parse_stanzas(std::string_view body) {
  Collector c;
  StreamParser p(c);
  const std::string doc =
      "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>" +
      std::string(body);
  EXPECT_EQ(p.feed(doc).status, StreamParser::Status::kOk) << doc;
  return std::move(c.elements);
}

TEST(XmlSerializer, RoundTripIsStable) {
  Element m("message", "jabber:client");
  m.set_attr("to", "romeo@example.net").set_attr("xml:lang", "en").set_attr("{urn:x}q", "'\"\t");
  m.add_child("body", "jabber:client").add_text("<&>'\"\r\n\t]]>");
  Element& x = m.add_child("x", "jabber:x:data");
  x.add_child("field", "jabber:x:data").set_attr("var", "a\nb");
  x.add_child("raw", "");
  const std::string once = serialize(m);
  const std::vector<Element> parsed = parse_stanzas(once);
  ASSERT_EQ(parsed.size(), 1u);
  EXPECT_EQ(serialize(parsed[0]), once);
  EXPECT_EQ(parsed[0].child_text("body"), "<&>'\"\r\n\t]]>");
  EXPECT_EQ(parsed[0].attr("{urn:x}q"), "'\"\t");
  EXPECT_EQ(parsed[0].child("x", "jabber:x:data")->child("field")->attr("var"), "a\nb");
  EXPECT_NE(parsed[0].child("x")->child("raw", ""), nullptr);
  EXPECT_EQ(parsed[0].child("x")->child("raw")->xmlns(), "");
}

// What a peer's parser gets is well-formed whatever the element held: an ESC in a body used to
// go out raw and end the sender's stream with not-well-formed.
TEST(XmlSerializer, ForbiddenCharactersStillParse) {
  Element m("message", "jabber:client");
  m.set_attr("to", "a\x1b@b\xff");
  m.add_child("body", "jabber:client").add_text(std::string("x\x1b[2J\0\xed\xa0\x80y", 10));
  const std::vector<Element> parsed = parse_stanzas(serialize(m));
  ASSERT_EQ(parsed.size(), 1u);
  const std::string r(kFffd);
  EXPECT_EQ(parsed[0].attr("to"), "a" + r + "@b" + r);
  EXPECT_EQ(parsed[0].child_text("body"), "x" + r + "[2J" + r + r + r + r + "y");
}

TEST(XmlSerializer, ParsedStanzaSerializesCompactly) {
  const std::vector<Element> parsed =
      parse_stanzas("<iq type=\"get\" id=\"1\"><query xmlns=\"jabber:iq:roster\"></query></iq>");
  ASSERT_EQ(parsed.size(), 1u);
  EXPECT_EQ(serialize(parsed[0]), "<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>");
}

}  // namespace
}  // namespace kabar::xml

namespace kabar::xml {
namespace {

// Found by fuzz_xml_stream: a namespace URI may contain '}', which must not end the Clark form.
TEST(XmlSerializer, NamespacedAttributeWithBraceInUriRoundTrips) {
  const std::vector<Element> parsed = parse_stanzas("<foo:bar xmlns:foo='urn:a}b' foo:attr='1'/>");
  ASSERT_EQ(parsed.size(), 1u);
  EXPECT_EQ(parsed[0].attr("{urn:a}b}attr"), "1");
  const std::string once = serialize(parsed[0]);
  const std::vector<Element> again = parse_stanzas(once);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].attr("{urn:a}b}attr"), "1");
  EXPECT_EQ(serialize(again[0]), once);
}

}  // namespace
}  // namespace kabar::xml

namespace kabar::xml {
namespace {

// Found by fuzz_xml_stream: an element in the XML namespace cannot be written with a default
// xmlns declaration of that namespace; it keeps the xml: prefix.
TEST(XmlSerializer, ElementInXmlNamespaceKeepsItsPrefix) {
  const std::vector<Element> parsed = parse_stanzas("<xml:foo><body>x</body></xml:foo>");
  ASSERT_EQ(parsed.size(), 1u);
  EXPECT_EQ(parsed[0].xmlns(), "http://www.w3.org/XML/1998/namespace");
  const std::string once = serialize(parsed[0]);
  EXPECT_EQ(once, "<xml:foo><body>x</body></xml:foo>");
  const std::vector<Element> again = parse_stanzas(once);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(serialize(again[0]), once);
  EXPECT_EQ(again[0].child_text("body", "jabber:client"), "x");
}

}  // namespace
}  // namespace kabar::xml
