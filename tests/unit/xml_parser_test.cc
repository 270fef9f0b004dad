// Stream parser tests. Every input is parsed whole, split in two at every byte offset, and fed
// byte by byte; all three must produce the same events and the same outcome.
#include <gtest/gtest.h>

#include <algorithm>
#include <initializer_list>
#include <string>
#include <vector>

#include "xml/serializer.h"
#include "xml/stream_parser.h"

namespace kabar::xml {
namespace {

constexpr std::string_view kHeader =
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' "
    "xml:lang='en'>";
constexpr const char kOpenEvent[] =
    "open {http://etherx.jabber.org/streams}stream[to=example.com version=1.0 xml:lang=en] "
    "default=jabber:client";

// A serializer-independent dump of a tree: {ns}name[attrs](children), text quoted.
std::string dump(const Element& el) {
  std::string out = "{" + el.xmlns() + "}" + el.name();
  if (!el.attributes().empty()) {
    out += "[";
    for (std::size_t i = 0; i < el.attributes().size(); ++i) {
      if (i > 0) out += " ";
      out += el.attributes()[i].name + "=" + el.attributes()[i].value;
    }
    out += "]";
  }
  if (!el.nodes().empty()) {
    out += "(";
    for (const Element::Node& node : el.nodes()) {
      if (const auto* c = std::get_if<std::unique_ptr<Element>>(&node)) {
        out += dump(**c);
      } else {
        out += "\"" + std::get<std::string>(node) + "\"";
      }
    }
    out += ")";
  }
  return out;
}

std::string dump(const ElementHead& head) {
  std::string out = "{" + std::string(head.xmlns()) + "}" + std::string(head.name());
  if (head.attribute_count() > 0) {
    out += "[";
    for (std::size_t i = 0; i < head.attribute_count(); ++i) {
      if (i > 0) out += " ";
      out += std::string(head.attribute_name(i)) + "=" + std::string(head.attribute_value(i));
    }
    out += "]";
  }
  return out;
}

std::string error_name(ParseError e) {
  switch (e) {
    case ParseError::kNone:
      return "ok";
    case ParseError::kNotWellFormed:
      return "not-well-formed";
    case ParseError::kRestrictedXml:
      return "restricted-xml";
    case ParseError::kPolicyViolation:
      return "policy-violation";
  }
  return "?";
}

struct Recorder : StreamHandler {
  StreamParser* parser = nullptr;
  std::vector<std::string> events;
  std::vector<Element> elements;
  // Element names on which the handler restarts the stream, as STARTTLS / SASL success do.
  std::vector<std::string> reset_on;
  bool record_bytes = false;  // also record element_bytes() (StreamLimits::max_kept_bytes)
  // <message/>s are asked for as bytes (wants_bytes()); those with take='1' are taken so.
  bool bytes_only = false;

  bool wants_bytes(const ElementHead& head) override {
    if (bytes_only && head.name() == "message") wanted = dump(head);
    return bytes_only && head.name() == "message";
  }
  std::string wanted;  // the head wants_bytes() was last asked about
  bool on_element_bytes(const ElementHead& head, std::string_view bytes) override {
    EXPECT_EQ(dump(head), wanted);  // the same head at the end, however the bytes were fed
    EXPECT_EQ(bytes, parser->element_bytes());
    if (head.attr("take") != "1") return false;
    events.push_back("taken " + dump(head) + " " + std::string(bytes));
    if (head.attr("probe") == "1") {
      // Which children the head names (what a message tap reads), one digit each.
      std::string found;
      for (const auto& [name, xmlns] :
           std::initializer_list<std::pair<const char*, const char*>>{{"body", "jabber:client"},
                                                                      {"x", "urn:x"},
                                                                      {"y", "urn:y"},
                                                                      {"store", "urn:xmpp:hints"},
                                                                      {"z", "jabber:client"},
                                                                      {"body", "urn:x"}}) {
        found += head.has_child(name, xmlns) ? '1' : '0';
      }
      events.push_back("children " + found);
    }
    return true;
  }

  void on_stream_open(const Element& header, std::string_view default_xmlns) override {
    std::string s = "open " + dump(header) + " default=" + std::string(default_xmlns);
    events.push_back(s);
  }
  void on_element(Element&& el) override {
    events.push_back("elem " + dump(el));
    if (record_bytes) events.push_back("bytes " + std::string(parser->element_bytes()));
    const bool restart = std::find(reset_on.begin(), reset_on.end(), el.name()) != reset_on.end();
    elements.push_back(std::move(el));
    if (restart) parser->reset();
  }
  void on_stream_close() override { events.push_back("close"); }
};

struct Outcome {
  std::vector<std::string> events;
  std::string result;  // "ok" or the error class of the first failing feed
  bool operator==(const Outcome&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Outcome& o) {
  os << "result=" << o.result << " events:";
  for (const auto& e : o.events) os << "\n  " << e;
  return os;
}

// With `hibernate`, the parser is asked to hibernate after every chunk (an idle connection's
// memory saving), which must never change what it reports.
Outcome run(const std::vector<std::string_view>& chunks, StreamLimits limits,
            const std::vector<std::string>& reset_on, bool hibernate = false,
            bool bytes_only = false) {
  Recorder rec;
  rec.reset_on = reset_on;
  rec.bytes_only = bytes_only;
  rec.record_bytes = limits.max_kept_bytes > 0 && !bytes_only;
  StreamParser parser(rec, limits);
  rec.parser = &parser;
  Outcome out{{}, "ok"};
  for (std::string_view chunk : chunks) {
    StreamParser::Result r = parser.feed(chunk);
    if (r.status != StreamParser::Status::kOk) {
      out.result = error_name(r.error);
      EXPECT_NE(r.error, ParseError::kNone);
      EXPECT_FALSE(r.message.empty());
      break;
    }
    if (hibernate) parser.hibernate();
  }
  out.events = std::move(rec.events);
  return out;
}

// Parses `input` whole, at every split point, and byte by byte; expects identical outcomes and
// returns the whole-input one.
Outcome parse_all_ways(std::string_view input, StreamLimits limits = {},
                       const std::vector<std::string>& reset_on = {}, bool bytes_only = false) {
  const Outcome whole = run({input}, limits, reset_on, false, bytes_only);
  for (std::size_t i = 0; i <= input.size(); ++i) {
    const Outcome split =
        run({input.substr(0, i), input.substr(i)}, limits, reset_on, false, bytes_only);
    EXPECT_EQ(split, whole) << "split at " << i;
    if (split != whole) break;
  }
  std::vector<std::string_view> bytes;
  for (std::size_t i = 0; i < input.size(); ++i) bytes.push_back(input.substr(i, 1));
  EXPECT_EQ(run(bytes, limits, reset_on, false, bytes_only), whole) << "byte by byte";
  EXPECT_EQ(run(bytes, limits, reset_on, true, bytes_only), whole) << "byte by byte, hibernating";
  return whole;
}

std::string with_header(std::string_view body) { return std::string(kHeader) + std::string(body); }

using Events = std::vector<std::string>;

TEST(XmlStreamParser, StreamHeaderAttributesAndDefaultNamespace) {
  const Outcome o = parse_all_ways(kHeader);
  EXPECT_EQ(o.result, "ok");
  EXPECT_EQ(o.events, Events{kOpenEvent});
}

TEST(XmlStreamParser, HeaderWithoutDeclarationOrDefaultNamespace) {
  const Outcome o = parse_all_ways(
      "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' id='a&amp;b'>"
      "<message/>");
  EXPECT_EQ(o.result, "ok");
  EXPECT_EQ(o.events, (Events{"open {http://etherx.jabber.org/streams}stream[id=a&b] default=",
                              "elem {}message"}));
}

TEST(XmlStreamParser, ServerNamespaceStanzas) {
  const Outcome o = parse_all_ways(
      "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>"
      "<presence/>");
  EXPECT_EQ(o.events, (Events{"open {http://etherx.jabber.org/streams}stream default=jabber:server",
                              "elem {jabber:server}presence"}));
}

TEST(XmlStreamParser, StanzaWithChildrenInheritsNamespace) {
  const Outcome o = parse_all_ways(
      with_header("<message to='juliet@example.com' type='chat' xml:lang='fr'><body>Hi there</body>"
                  "<thread>t1</thread></message>"));
  EXPECT_EQ(o.result, "ok");
  EXPECT_EQ(o.events,
            (Events{kOpenEvent,
                    "elem {jabber:client}message[to=juliet@example.com type=chat xml:lang=fr]("
                    "{jabber:client}body(\"Hi there\"){jabber:client}thread(\"t1\"))"}));
}

TEST(XmlStreamParser, NestedNamespaces) {
  const Outcome o = parse_all_ways(
      with_header("<iq type='result' id='r1'><query xmlns='jabber:iq:roster' ver='v1'>"
                  "<item jid='a@b'><group>G</group></item></query><x xmlns=''/></iq>"));
  EXPECT_EQ(o.events,
            (Events{kOpenEvent,
                    "elem {jabber:client}iq[type=result id=r1]({jabber:iq:roster}query[ver=v1]("
                    "{jabber:iq:roster}item[jid=a@b]({jabber:iq:roster}group(\"G\"))){}x)"}));
}

TEST(XmlStreamParser, StreamPrefixedTopLevelElements) {
  const Outcome o = parse_all_ways(
      with_header("<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>"
                  "</starttls></stream:features>"));
  EXPECT_EQ(o.events, (Events{kOpenEvent,
                              "elem {http://etherx.jabber.org/streams}features("
                              "{urn:ietf:params:xml:ns:xmpp-tls}starttls("
                              "{urn:ietf:params:xml:ns:xmpp-tls}required))"}));
}

TEST(XmlStreamParser, OtherPrefixesAndNamespacedAttributes) {
  const Outcome o = parse_all_ways(
      with_header("<foo:bar xmlns:foo='urn:x' foo:attr='1' plain='2' xml:space='preserve'>"
                  "<foo:baz/><qux/></foo:bar>"));
  EXPECT_EQ(o.events, (Events{kOpenEvent,
                              "elem {urn:x}bar[{urn:x}attr=1 plain=2 "
                              "{http://www.w3.org/XML/1998/namespace}space=preserve]({urn:x}baz"
                              "{jabber:client}qux)"}));
}

TEST(XmlStreamParser, CharacterReferencesAndPredefinedEntities) {
  const Outcome o = parse_all_ways(with_header(
      "<message id='&lt;&gt;&amp;&apos;&quot;&#65;&#x42;'><body>&lt;&gt;&amp;&apos;&quot;"
      "&#65;&#x42;&#xE9;&#x1F600;</body></message>"));
  EXPECT_EQ(o.result, "ok");
  EXPECT_EQ(o.events, (Events{kOpenEvent,
                              "elem {jabber:client}message[id=<>&'\"AB]({jabber:client}body("
                              "\"<>&'\"AB\xC3\xA9\xF0\x9F\x98\x80\"))"}));
}

TEST(XmlStreamParser, Utf8TextPassesThrough) {
  const Outcome o =
      parse_all_ways(with_header("<body>\xD0\x9F\xD1\x80\xD0\xB8 \xE2\x82\xAC</body>"));
  EXPECT_EQ(
      o.events,
      (Events{kOpenEvent, "elem {jabber:client}body(\"\xD0\x9F\xD1\x80\xD0\xB8 \xE2\x82\xAC\")"}));
}

TEST(XmlStreamParser, CdataIsText) {
  const Outcome o = parse_all_ways(with_header("<body>a<![CDATA[<hi> &amp; ]]]]>b</body>"));
  EXPECT_EQ(o.result, "ok");
  EXPECT_EQ(o.events, (Events{kOpenEvent, "elem {jabber:client}body(\"a<hi> &amp; ]]b\")"}));
}

TEST(XmlStreamParser, WhitespaceBetweenStanzasIgnoredAndStreamClose) {
  const Outcome o = parse_all_ways(with_header(
      " \n\t<presence/>\r\n \n<message><body> x </body></message>  </stream:stream>\n"));
  EXPECT_EQ(o.result, "ok");
  EXPECT_EQ(o.events,
            (Events{kOpenEvent, "elem {jabber:client}presence",
                    "elem {jabber:client}message({jabber:client}body(\" x \"))", "close"}));
}

TEST(XmlStreamParser, TextInsideStanzaKeepsLineBreaksNormalized) {
  const Outcome o = parse_all_ways(with_header("<body>a\r\nb\rc&#13;</body>"));
  EXPECT_EQ(o.events, (Events{kOpenEvent, "elem {jabber:client}body(\"a\nb\nc\r\")"}));
}

TEST(XmlStreamParser, RestartFromInsideOnElementParsesTrailingBytes) {
  const std::string input = with_header(
      "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
      "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
      "xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' "
      "xml:lang='en'><auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGE=</auth>"
      "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
      "<iq type='set'/>");
  const Outcome o = parse_all_ways(input, {}, {"starttls", "auth"});
  EXPECT_EQ(o.result, "ok");
  EXPECT_EQ(o.events,
            (Events{kOpenEvent, "elem {urn:ietf:params:xml:ns:xmpp-tls}starttls", kOpenEvent,
                    "elem {urn:ietf:params:xml:ns:xmpp-sasl}auth[mechanism=PLAIN](\"AGE=\")",
                    "open {http://etherx.jabber.org/streams}stream default=jabber:client",
                    "elem {jabber:client}iq[type=set]"}));
}

TEST(XmlStreamParser, RestartDiscardsPartialInputOfOldStream) {
  Recorder rec;
  StreamParser parser(rec);
  rec.parser = &parser;
  ASSERT_EQ(parser.feed(with_header("<message><bo")).status, StreamParser::Status::kOk);
  EXPECT_GT(parser.pending_bytes(), 0u);
  parser.reset();
  EXPECT_EQ(parser.pending_bytes(), 0u);
  ASSERT_EQ(parser.feed(with_header("<presence/>")).status, StreamParser::Status::kOk);
  EXPECT_EQ(rec.events, (Events{kOpenEvent, kOpenEvent, "elem {jabber:client}presence"}));
}

TEST(XmlStreamParser, ResetClearsStickyError) {
  Recorder rec;
  StreamParser parser(rec);
  EXPECT_EQ(parser.feed("<a></b>").error, ParseError::kNotWellFormed);
  parser.reset();
  EXPECT_EQ(parser.feed(with_header("<presence/>")).status, StreamParser::Status::kOk);
  EXPECT_EQ(rec.events.back(), "elem {jabber:client}presence");
}

TEST(XmlStreamParser, PendingBytesZeroBetweenStanzas) {
  Recorder rec;
  StreamParser parser(rec);
  EXPECT_EQ(parser.pending_bytes(), 0u);
  ASSERT_EQ(parser.feed(with_header("")).status, StreamParser::Status::kOk);
  EXPECT_EQ(parser.pending_bytes(), 0u);
  ASSERT_EQ(parser.feed("<message><body>hello").status, StreamParser::Status::kOk);
  EXPECT_EQ(parser.pending_bytes(), std::string_view("<message><body>hello").size());
  ASSERT_EQ(parser.feed("</body></message>").status, StreamParser::Status::kOk);
  EXPECT_EQ(parser.pending_bytes(), 0u);
  ASSERT_EQ(parser.feed("  \n").status, StreamParser::Status::kOk);
  EXPECT_EQ(parser.pending_bytes(), 0u);
  EXPECT_EQ(rec.events.size(), 2u);
}

TEST(XmlStreamParser, HibernatesOnlyBetweenStanzasAndResumesTransparently) {
  Recorder rec;
  StreamParser parser(rec);
  EXPECT_FALSE(parser.hibernate());  // no stream yet
  ASSERT_EQ(parser
                .feed("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                      "xmlns:stream='http://etherx.jabber.org/streams' xmlns:x='urn:x' "
                      "to='example.com' version='1.0'>")
                .status,
            StreamParser::Status::kOk);
  EXPECT_TRUE(parser.hibernate());
  EXPECT_TRUE(parser.hibernating());
  EXPECT_EQ(parser.pending_bytes(), 0u);
  ASSERT_EQ(parser.feed("<message to='a@b'><x:y/><body>hi</body>").status,
            StreamParser::Status::kOk);
  EXPECT_FALSE(parser.hibernating());
  EXPECT_FALSE(parser.hibernate());  // mid-stanza
  ASSERT_EQ(parser.feed("</message>").status, StreamParser::Status::kOk);
  EXPECT_TRUE(parser.hibernate());
  // A prefix declared on the root still resolves, and the end tag must still match the root.
  ASSERT_EQ(parser.feed("<x:ping/></stream:stream>").status, StreamParser::Status::kOk);
  EXPECT_EQ(rec.events,
            (Events{"open {http://etherx.jabber.org/streams}stream[to=example.com version=1.0] "
                    "default=jabber:client",
                    "elem {jabber:client}message[to=a@b]({urn:x}y{jabber:client}body(\"hi\"))",
                    "elem {urn:x}ping", "close"}));
  EXPECT_FALSE(parser.hibernate());  // closed
}

TEST(XmlStreamParser, NoHibernationInsideACdataSectionAtStreamLevel) {
  // Found by fuzz_xml_stream: expat reports CDATA text as it comes, so the byte counts alone
  // looked like a stanza boundary.
  Recorder rec;
  StreamParser parser(rec);
  ASSERT_EQ(parser.feed(with_header("<![CDATA[<ra")).status, StreamParser::Status::kOk);
  EXPECT_FALSE(parser.hibernate());
  ASSERT_EQ(parser.feed("w>]]>").status, StreamParser::Status::kOk);
  EXPECT_TRUE(parser.hibernate());
}

TEST(XmlStreamParser, HibernatedStreamStillRejectsAWrongEndTag) {
  Recorder rec;
  StreamParser parser(rec);
  ASSERT_EQ(parser.feed(with_header("<presence/>")).status, StreamParser::Status::kOk);
  ASSERT_TRUE(parser.hibernate());
  auto r = parser.feed("</stream:other>");
  EXPECT_EQ(r.status, StreamParser::Status::kError);
  EXPECT_EQ(r.error, ParseError::kNotWellFormed);
}

// --- errors ---

TEST(XmlStreamParser, MalformedIsNotWellFormed) {
  for (std::string_view bad :
       {"<message></presence>", "<message a='1' a='2'/>", "<message a=1/>", "<x:message/>",
        "<message>\x01</message>", "<message>\xC3\x28</message>", "<message>&#0;</message>",
        "<m\xFF/>"}) {
    SCOPED_TRACE(bad);
    const Outcome o = parse_all_ways(with_header(bad));
    EXPECT_EQ(o.result, "not-well-formed");
    EXPECT_EQ(o.events, Events{kOpenEvent});
  }
}

TEST(XmlStreamParser, JunkAfterStreamCloseIsNotWellFormed) {
  const Outcome o = parse_all_ways(with_header("</stream:stream><x/>"));
  EXPECT_EQ(o.result, "not-well-formed");
  EXPECT_EQ(o.events, (Events{kOpenEvent, "close"}));
}

TEST(XmlStreamParser, DoctypeIsRestricted) {
  const Outcome o = parse_all_ways(
      "<?xml version='1.0'?><!DOCTYPE stream:stream SYSTEM 'http://example.com/x.dtd'>"
      "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>");
  EXPECT_EQ(o.result, "restricted-xml");
  EXPECT_TRUE(o.events.empty());
}

TEST(XmlStreamParser, BillionLaughsIsRestrictedAndNeverExpanded) {
  std::string doc = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>";
  for (int i = 1; i <= 9; ++i) {
    doc += "<!ENTITY lol" + std::to_string(i) + " '";
    for (int j = 0; j < 10; ++j)
      doc += "&lol" + (i == 1 ? std::string() : std::to_string(i - 1)) + ";";
    doc += "'>";
  }
  doc +=
      "]><stream:stream xmlns:stream='http://etherx.jabber.org/streams'><message>&lol9;</message>";
  const Outcome o = parse_all_ways(doc);
  EXPECT_EQ(o.result, "restricted-xml");
  EXPECT_TRUE(o.events.empty());
}

TEST(XmlStreamParser, UndefinedEntityIsNotWellFormed) {
  for (std::string_view bad : {"<body>&foo;</body>", "<body a='&foo;'/>", "<body>&lol9;</body>"}) {
    SCOPED_TRACE(bad);
    const Outcome o = parse_all_ways(with_header(bad));
    EXPECT_EQ(o.result, "not-well-formed");
    EXPECT_EQ(o.events, Events{kOpenEvent});
  }
}

TEST(XmlStreamParser, ProcessingInstructionIsRestricted) {
  EXPECT_EQ(parse_all_ways(with_header("<message><?php echo 1; ?></message>")).result,
            "restricted-xml");
  EXPECT_EQ(parse_all_ways(with_header("<?foo bar?>")).result, "restricted-xml");
  EXPECT_EQ(parse_all_ways("<?xml version='1.0'?><?xml-stylesheet href='a'?>").result,
            "restricted-xml");
}

TEST(XmlStreamParser, CommentIsRestricted) {
  const Outcome o = parse_all_ways(with_header("<presence/><message><!-- hi --></message>"));
  EXPECT_EQ(o.result, "restricted-xml");
  EXPECT_EQ(o.events, (Events{kOpenEvent, "elem {jabber:client}presence"}));
  EXPECT_EQ(parse_all_ways(with_header("<!-- between -->")).result, "restricted-xml");
  EXPECT_EQ(parse_all_ways("<!-- before --><stream:stream/>").result, "restricted-xml");
}

TEST(XmlStreamParser, NonUtf8EncodingRejected) {
  EXPECT_EQ(parse_all_ways("<?xml version='1.0' encoding='ISO-8859-1'?><stream/>").result,
            "not-well-formed");
  EXPECT_EQ(parse_all_ways("<?xml version='1.0' encoding='utf-8'?><stream/>").result, "ok");
  Recorder rec;
  StreamParser parser(rec);
  const StreamParser::Result r = parser.feed("<?xml version='1.0' encoding='UTF-16'?><stream/>");
  EXPECT_EQ(r.error, ParseError::kNotWellFormed);
  EXPECT_NE(r.message.find("encoding"), std::string::npos) << r.message;
}

TEST(XmlStreamParser, StanzaAtSizeLimitAcceptedOneMoreRejected) {
  // Longer than the stream header, which is held to the same limit.
  const std::string stanza = "<message><body>" + std::string(300, 'z') + "</body></message>";
  StreamLimits limits;
  limits.max_stanza_bytes = stanza.size();
  Outcome o = parse_all_ways(with_header(stanza + " " + stanza), limits);
  EXPECT_EQ(o.result, "ok");
  EXPECT_EQ(o.events.size(), 3u);

  limits.max_stanza_bytes = stanza.size() - 1;
  o = parse_all_ways(with_header(stanza), limits);
  EXPECT_EQ(o.result, "policy-violation");
  EXPECT_EQ(o.events, Events{kOpenEvent});
}

TEST(XmlStreamParser, RaisedStanzaLimitAppliesFromTheNextElement) {
  // A server starts a stream with a small limit and raises it after authentication.
  const std::string big = "<message><body>" + std::string(500, 'z') + "</body></message>";
  StreamLimits limits;
  limits.max_stanza_bytes = 200;
  {
    Recorder rec;
    StreamParser parser(rec, limits);
    ASSERT_EQ(parser.feed(with_header("<auth/>")).status, StreamParser::Status::kOk);
    parser.set_max_stanza_bytes(1000);
    EXPECT_EQ(parser.feed(big).status, StreamParser::Status::kOk);
    EXPECT_EQ(rec.events.size(), 3u);
  }
  {
    Recorder rec;
    StreamParser parser(rec, limits);
    ASSERT_EQ(parser.feed(with_header("<auth/>")).status, StreamParser::Status::kOk);
    const StreamParser::Result r = parser.feed(big);
    EXPECT_EQ(r.error, ParseError::kPolicyViolation);
  }
}

TEST(XmlStreamParser, UnfinishedStartTagHeldNoLongerThanTheLimit) {
  // A start tag that never ends is buffered by expat without any callback: the limit must still
  // stop it within the limit, however the bytes are split.
  StreamLimits limits;
  limits.max_stanza_bytes = 1000;
  for (const std::size_t chunk : {std::size_t{1}, std::size_t{999}, std::size_t{100'000}}) {
    Recorder rec;
    StreamParser parser(rec, limits);
    ASSERT_EQ(parser.feed(with_header("")).status, StreamParser::Status::kOk);
    const std::string tag = "<message to='" + std::string(200'000, 'a');
    std::size_t fed = 0;
    StreamParser::Result r;
    while (fed < tag.size() && r.status == StreamParser::Status::kOk) {
      r = parser.feed(std::string_view(tag).substr(fed, chunk));
      fed += std::min(chunk, tag.size() - fed);
      if (r.status == StreamParser::Status::kOk) {
        EXPECT_LE(parser.pending_bytes(), limits.max_stanza_bytes) << "chunk " << chunk;
      }
    }
    EXPECT_EQ(r.error, ParseError::kPolicyViolation) << "chunk " << chunk;
  }
}

TEST(XmlStreamParser, OversizeStartTagRejected) {
  StreamLimits limits;
  limits.max_stanza_bytes = 300;
  const Outcome o = parse_all_ways(
      with_header("<presence/><message to='" + std::string(300, 'a') + "'/>"), limits);
  EXPECT_EQ(o.result, "policy-violation");
  EXPECT_EQ(o.events, (Events{kOpenEvent, "elem {jabber:client}presence"}));
}

TEST(XmlStreamParser, OversizeStreamHeaderRejected) {
  StreamLimits limits;
  limits.max_stanza_bytes = 100;
  EXPECT_EQ(parse_all_ways(kHeader, limits).result, "policy-violation");
  EXPECT_EQ(parse_all_ways("<stream xmlns='jabber:client'>", limits).result, "ok");
}

TEST(XmlStreamParser, OversizeStanzaStreamedInChunksFailsAsSoonAsLimitPassed) {
  StreamLimits limits;
  limits.max_stanza_bytes = 64 * 1024;
  Recorder rec;
  StreamParser parser(rec, limits);
  ASSERT_EQ(parser.feed(with_header("")).status, StreamParser::Status::kOk);
  const std::string open_tag = "<message><body>";
  ASSERT_EQ(parser.feed(open_tag).status, StreamParser::Status::kOk);
  std::size_t stanza_bytes = open_tag.size();
  const std::string chunk(4096, 'x');
  StreamParser::Result r;
  std::size_t chunks = 0;
  // Up to 10 MiB; it must stop within the chunk that crosses the limit.
  while (chunks < 10 * 256) {
    r = parser.feed(chunk);
    ++chunks;
    stanza_bytes += chunk.size();
    if (r.status != StreamParser::Status::kOk) break;
    EXPECT_LE(parser.pending_bytes(), limits.max_stanza_bytes);
  }
  EXPECT_EQ(r.error, ParseError::kPolicyViolation);
  EXPECT_GT(stanza_bytes, limits.max_stanza_bytes);
  EXPECT_LE(stanza_bytes - chunk.size(), limits.max_stanza_bytes);
  EXPECT_EQ(parser.pending_bytes(), 0u);
  EXPECT_EQ(rec.events, Events{kOpenEvent});
}

TEST(XmlStreamParser, OversizeStanzaInOneFeed) {
  StreamLimits limits;
  limits.max_stanza_bytes = 100 * 1024;
  Recorder rec;
  StreamParser parser(rec, limits);
  const std::string input = with_header("<message><body>" + std::string(1 << 20, 'x'));
  EXPECT_EQ(parser.feed(input).error, ParseError::kPolicyViolation);
  // A big start tag, which expat holds without any callback.
  StreamParser parser2(rec, limits);
  EXPECT_EQ(parser2.feed(with_header("<message a='" + std::string(1 << 20, 'x'))).error,
            ParseError::kPolicyViolation);
}

TEST(XmlStreamParser, DepthLimit) {
  StreamLimits limits;
  limits.max_depth = 3;
  Outcome o = parse_all_ways(with_header("<a><b><c>t</c></b></a>"), limits);
  EXPECT_EQ(o.result, "ok");
  EXPECT_EQ(o.events.size(), 2u);
  o = parse_all_ways(with_header("<a><b><c><d/></c></b></a>"), limits);
  EXPECT_EQ(o.result, "policy-violation");
  EXPECT_EQ(o.events, Events{kOpenEvent});
}

TEST(XmlStreamParser, DeepNestingWithDefaultLimits) {
  std::string deep;
  for (int i = 0; i < 1000; ++i) deep += "<a>";
  Recorder rec;
  StreamParser parser(rec);
  EXPECT_EQ(parser.feed(with_header(deep)).error, ParseError::kPolicyViolation);
}

TEST(XmlStreamParser, AttributeLimit) {
  StreamLimits limits;
  limits.max_attributes = 3;
  // The header has 6 attributes and namespace declarations; give it room with its own test.
  const std::string header =
      "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>";
  EXPECT_EQ(parse_all_ways(header + "<m a='1' b='2' c='3'/>", limits).result, "ok");
  Outcome o = parse_all_ways(header + "<m a='1' b='2' c='3' d='4'/>", limits);
  EXPECT_EQ(o.result, "policy-violation");
  EXPECT_EQ(o.events.size(), 1u);
  // Namespace declarations count too.
  EXPECT_EQ(
      parse_all_ways(header + "<m xmlns:a='urn:a' xmlns:b='urn:b' c='3' d='4'/>", limits).result,
      "policy-violation");
  EXPECT_EQ(parse_all_ways(header + "<m><n a='1' b='2' c='3' d='4'/></m>", limits).result,
            "policy-violation");
}

TEST(XmlStreamParser, ErrorsAreSticky) {
  Recorder rec;
  StreamParser parser(rec);
  ASSERT_EQ(parser.feed(with_header("<presence/>")).status, StreamParser::Status::kOk);
  const StreamParser::Result first = parser.feed("<!-- x -->");
  EXPECT_EQ(first.error, ParseError::kRestrictedXml);
  for (std::string_view more : {"<presence/>", "", "</stream:stream>"}) {
    const StreamParser::Result again = parser.feed(more);
    EXPECT_EQ(again.status, StreamParser::Status::kError);
    EXPECT_EQ(again.error, first.error);
    EXPECT_EQ(again.message, first.message);
  }
  EXPECT_EQ(rec.events.size(), 2u);
  EXPECT_EQ(parser.pending_bytes(), 0u);
}

TEST(XmlStreamParser, SerializerRoundTripOfParsedStanzas) {
  const std::string body =
      "<message to='a@b/c' xml:lang='en' type='chat'><body>1 &lt; 2 &amp;&amp; 3 &gt; 2 "
      "&quot;q&quot; &apos;a&apos; &#13;</body><x xmlns='jabber:x:data' type='submit'>"
      "<field var='v&apos;&#9;&#10;'><value>x</value></field></x>"
      "<foo:bar xmlns:foo='urn:x' foo:attr='1' xmlns:b='urn:y' b:q='2'/><e xmlns=''/></message>"
      "<iq type='get'><query xmlns='jabber:iq:roster'/></iq>";
  Recorder first;
  StreamParser p1(first);
  ASSERT_EQ(p1.feed(with_header(body)).status, StreamParser::Status::kOk);
  ASSERT_EQ(first.elements.size(), 2u);

  std::string reserialized;
  for (const Element& el : first.elements) reserialized += serialize(el);
  Recorder second;
  StreamParser p2(second);
  ASSERT_EQ(p2.feed(with_header(reserialized)).status, StreamParser::Status::kOk);
  EXPECT_EQ(second.events, first.events);
  EXPECT_EQ(serialize(second.elements[0]), serialize(first.elements[0]));
}

}  // namespace

// Kept bytes (element_bytes()): exactly the element's bytes as received, however they were split.
TEST(StreamParserKeptBytes, ElementBytesAreTheBytesAsReceived) {
  StreamLimits limits;
  limits.max_kept_bytes = 1024;
  const std::string message =
      "<message to='a@example.com' type=\"chat\"><body>x &amp; &#233; <![CDATA[<y>]]>\r\n"
      "</body><x:e xmlns:x='urn:e' x:a='1'/></message>";
  const std::string presence = "<presence/>";
  const Outcome out = parse_all_ways(with_header(message + " \n" + presence + "<iq\n/>"), limits);
  ASSERT_EQ(out.result, "ok");
  ASSERT_EQ(out.events.size(), 7u);
  EXPECT_EQ(out.events[2], "bytes " + message);
  EXPECT_EQ(out.events[4], "bytes " + presence);
  EXPECT_EQ(out.events[6], "bytes <iq\n/>");
}

TEST(StreamParserKeptBytes, NotKeptWhenTheyNeedAPrefixOfTheRoot) {
  StreamLimits limits;
  limits.max_kept_bytes = 1024;
  const std::string header =
      "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
      "xmlns:foo='urn:foo'>";
  const Outcome out = parse_all_ways(
      header +
          "<message><foo:x/></message><message><y foo:a='1'/></message>"
          "<message><stream:error/></message><message><z xmlns:foo='urn:other'/></message>",
      limits);
  ASSERT_EQ(out.result, "ok");
  ASSERT_EQ(out.events.size(), 9u);
  EXPECT_EQ(out.events[2], "bytes ");
  EXPECT_EQ(out.events[4], "bytes ");
  EXPECT_EQ(out.events[6], "bytes ");
  EXPECT_EQ(out.events[8], "bytes <message><z xmlns:foo='urn:other'/></message>");
}

TEST(StreamParserKeptBytes, NotKeptOverTheLimitNorByDefault) {
  StreamLimits limits;
  limits.max_kept_bytes = 16;
  Outcome out =
      parse_all_ways(with_header("<message><body>too long</body></message><iq/>"), limits);
  ASSERT_EQ(out.result, "ok");
  ASSERT_EQ(out.events.size(), 5u);
  EXPECT_EQ(out.events[2], "bytes ");
  EXPECT_EQ(out.events[4], "bytes <iq/>");

  Recorder rec;
  StreamParser parser(rec, StreamLimits{});
  rec.parser = &parser;
  rec.record_bytes = true;
  ASSERT_EQ(parser.feed(with_header("<iq/>")).status, StreamParser::Status::kOk);
  ASSERT_EQ(rec.events.size(), 3u);
  EXPECT_EQ(rec.events[2], "bytes ");
  EXPECT_TRUE(parser.element_bytes().empty());  // outside on_element
}

TEST(StreamParserKeptBytes, KeptAfterARestart) {
  StreamLimits limits;
  limits.max_kept_bytes = 1024;
  const Outcome out = parse_all_ways(
      with_header("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>") + std::string(kHeader) +
          "<message to='b@example.com'><body>hi</body></message>",
      limits, {"success"});
  ASSERT_EQ(out.result, "ok");
  ASSERT_EQ(out.events.size(), 6u);
  EXPECT_EQ(out.events[2], "bytes <success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
  EXPECT_EQ(out.events[5], "bytes <message to='b@example.com'><body>hi</body></message>");
}

// Elements taken as bytes only (wants_bytes()): the head and the bytes when taken; when declined
// or not offered, the same element a plain parse builds.
TEST(StreamParserBytesOnly, TakenOrBuiltTheSameAsAPlainParse) {
  StreamLimits limits;
  limits.max_kept_bytes = 200;
  const std::string taken =
      "<message take='1' to='b@x'><body>a &amp; <![CDATA[b]]></body></message>";
  const std::string header =
      "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
      "xmlns:foo='urn:foo'>";
  const std::string declined = "<message to='c@x'><body>x</body><e xmlns='urn:e' a='1'/></message>";
  const std::string prefixed = "<message take='1'><foo:x foo:a='2'>t</foo:x></message>";
  const std::string large =
      "<message take='1'><body>" + std::string(300, 'z') + "</body></message>";
  const std::string other = "<iq type='get'><q xmlns='urn:q'/></iq>";
  const std::string input = header + taken + declined + prefixed + large + other;
  Outcome plain = parse_all_ways(input, limits);
  std::erase_if(plain.events, [](const std::string& e) { return e.starts_with("bytes "); });
  const Outcome bytes = parse_all_ways(input, limits, {}, true);
  ASSERT_EQ(plain.result, "ok");
  ASSERT_EQ(bytes.result, "ok");
  ASSERT_EQ(plain.events.size(), 6u);
  ASSERT_EQ(bytes.events.size(), 6u);
  EXPECT_EQ(bytes.events[1], "taken {jabber:client}message[take=1 to=b@x] " + taken);
  for (std::size_t i = 2; i < 6; ++i) EXPECT_EQ(bytes.events[i], plain.events[i]) << i;
  EXPECT_EQ(bytes.events[3],
            "elem {jabber:client}message[take=1]({urn:foo}x[{urn:foo}a=2](\"t\"))");
}

// A head taken as bytes names its children (not their children), however the bytes were split:
// a message tap reads them instead of a built element.
TEST(StreamParserBytesOnly, TheHeadNamesItsChildren) {
  StreamLimits limits;
  limits.max_kept_bytes = 500;
  const std::string first =
      "<message take='1' probe='1' to='b@x'><body>hi</body><x xmlns='urn:x'><body>deep</body>"
      "<y xmlns='urn:y'/></x><store xmlns='urn:xmpp:hints'/></message>";
  const std::string second = "<message take='1' probe='1'><z/></message>";
  const Outcome o = parse_all_ways(with_header(first + second), limits, {}, true);
  ASSERT_EQ(o.result, "ok");
  ASSERT_EQ(o.events.size(), 5u);
  EXPECT_EQ(o.events[2], "children 110100");
  EXPECT_EQ(o.events[4], "children 000010");
}

TEST(StreamParserBytesOnly, LimitsStillApplyBelowTheHead) {
  StreamLimits limits;
  limits.max_kept_bytes = 4096;
  limits.max_depth = 3;
  limits.max_attributes = 2;
  limits.max_stanza_bytes = 1024;
  auto with_header = [](const std::string& body) {
    return "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>" +
           body;
  };
  EXPECT_EQ(parse_all_ways(with_header("<message take='1'><a><b/></a></message>"), limits, {}, true)
                .result,
            "ok");
  EXPECT_EQ(parse_all_ways(with_header("<message take='1'><a><b><c/></b></a></message>"), limits,
                           {}, true)
                .result,
            "policy-violation");
  EXPECT_EQ(parse_all_ways(with_header("<message take='1'><a x='1' y='2' z='3'/></message>"),
                           limits, {}, true)
                .result,
            "policy-violation");
  EXPECT_EQ(parse_all_ways(with_header("<message take='1'><body>" + std::string(1100, 'y') +
                                       "</body></message>"),
                           limits, {}, true)
                .result,
            "policy-violation");
  EXPECT_EQ(
      parse_all_ways(with_header("<message take='1'><a></b></message>"), limits, {}, true).result,
      "not-well-formed");
}

// The head of an element taken as bytes is kept per thread while one feed() runs; an element
// spread over feed() calls, with another parser on the same thread taking elements in between,
// still gets its own head at its end.
TEST(StreamParserBytesOnly, HeadsOfInterleavedParsersStayApart) {
  StreamLimits limits;
  limits.max_kept_bytes = 200;
  const std::string header =
      "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
  Recorder a;
  Recorder b;
  a.bytes_only = b.bytes_only = true;
  StreamParser pa(a, limits);
  StreamParser pb(b, limits);
  a.parser = &pa;
  b.parser = &pb;
  const std::string ma = "<message take='1' to='a@x'><body>from a</body></message>";
  const std::string mb = "<message take='1' to='b@x' id='2'><body>from b</body></message>";
  ASSERT_EQ(pa.feed(header + ma.substr(0, 30)).status, StreamParser::Status::kOk);
  ASSERT_EQ(pb.feed(header + mb).status, StreamParser::Status::kOk);
  ASSERT_EQ(pa.feed(ma.substr(30)).status, StreamParser::Status::kOk);
  ASSERT_EQ(a.events.size(), 2u);
  ASSERT_EQ(b.events.size(), 2u);
  EXPECT_EQ(a.events[1], "taken {jabber:client}message[take=1 to=a@x] " + ma);
  EXPECT_EQ(b.events[1], "taken {jabber:client}message[take=1 to=b@x id=2] " + mb);
}

}  // namespace kabar::xml
