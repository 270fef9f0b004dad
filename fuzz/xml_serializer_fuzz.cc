// Puts arbitrary bytes, as an application would put a person's text, into an attribute value and
// the text of an element, serializes it and parses the result again: it must always be
// well-formed XML (XML 1.0 §2.2: only Chars, valid UTF-8), giving back the text unchanged when
// xml::valid_xml_text() accepts it, else the text with each forbidden character or ill-formed
// UTF-8 subpart replaced by U+FFFD (serializer.h).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "xml/chars.h"
#include "xml/serializer.h"
#include "xml/stream_parser.h"

namespace {

namespace xml = kabar::xml;

// What the serializer promises to write for `s`, computed independently of it.
std::string expected(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    const xml::CodePoint c = xml::decode_utf8(s, i);
    if (c.valid && xml::is_xml_char(c.value))
      out.append(s.substr(i, c.length));
    else
      xml::append_utf8(xml::kReplacementCharacter, out);
    i += c.length;
  }
  return out;
}

struct Collector : xml::StreamHandler {
  int count = 0;
  std::string attr, text;
  void on_stream_open(const xml::Element&, std::string_view) override {}
  void on_element(xml::Element&& el) override {
    ++count;
    attr = std::string(el.attr("to"));
    text = el.child_text("body");
  }
  void on_stream_close() override {}
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  // The first byte picks where the input splits into the attribute value and the text.
  const std::size_t cut = in.empty() ? 0 : static_cast<unsigned char>(in[0]) % (in.size());
  const std::string_view value = in.substr(in.empty() ? 0 : 1, cut);
  const std::string_view text = in.substr(std::min(in.size(), cut + 1));

  xml::Element m("message", "jabber:client");
  m.set_attr("to", value);
  m.add_child("body", "jabber:client").add_text(text);
  const std::string out = xml::serialize(m);
  if (!xml::valid_xml_text(out)) __builtin_trap();

  Collector c;
  xml::StreamLimits loose;
  loose.max_stanza_bytes = 64 * 1024 * 1024;
  xml::StreamParser parser(c, loose);
  const auto r = parser.feed(
      "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>" +
      out);
  if (r.status != xml::StreamParser::Status::kOk || c.count != 1) __builtin_trap();
  if (c.attr != expected(value) || c.text != expected(text)) __builtin_trap();
  if (xml::valid_xml_text(value) && c.attr != value) __builtin_trap();
  if (xml::valid_xml_text(text) && c.text != text) __builtin_trap();
  return 0;
}
