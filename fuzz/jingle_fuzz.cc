// Feeds arbitrary bytes, as the top-level elements of a client stream, to the file-transfer
// payload parsers the kabar client runs on what peers send: Jingle actions (XEP-0166/0234/0260/
// 0261), stream-initiation offers and answers (XEP-0095/0096) and XEP-0065 streamhost lists.
// Checks their bounds, that what parses builds back into something that parses the same, and
// that an offered file name is always safe to create inside a directory (every promise
// safe_file_name makes, on the first 600 bytes of the input and on each name offered).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "xml/chars.h"
#include "xml/stream_parser.h"
#include "xmpp/jingle.h"

namespace {

namespace jingle = kabar::xmpp::jingle;
using kabar::xml::Element;

// Every promise safe_file_name makes (jingle.h), checked on what it returns.
void check_name(std::string_view offered) {
  const std::string n = jingle::safe_file_name(offered);
  if (n.empty() || n.size() > jingle::kMaxNameBytes || n == "." || n == "..") __builtin_trap();
  if (n.find_first_of("/\\:") != std::string::npos) __builtin_trap();
  if (n.front() == '.' || n.front() == ' ' || n.back() == '.' || n.back() == ' ') __builtin_trap();
  for (std::size_t i = 0; i < n.size();) {
    const kabar::xml::CodePoint c = kabar::xml::decode_utf8(n, i);
    if (!c.valid || kabar::xml::is_control(c.value) || kabar::xml::is_bidi_control(c.value))
      __builtin_trap();
    i += c.length;
  }
  // The name it made is one it keeps as it is.
  if (jingle::safe_file_name(n) != n) __builtin_trap();
}

void check(const Element& el) {
  std::string why;
  for (const Element* j : {&el, el.first_child()}) {
    if (!j) continue;
    if (auto a = jingle::parse(*j, why)) {
      if (!jingle::valid_sid(a->sid) || a->transport.candidates.size() > jingle::kMaxCandidates)
        __builtin_trap();
      if (a->file) check_name(a->file->name);
      std::string why2;
      auto again = jingle::parse(jingle::build(*a), why2);
      if (!again || again->sid != a->sid ||
          again->transport.candidates.size() != a->transport.candidates.size())
        __builtin_trap();
      if (a->file && (!again->file || again->file->size != a->file->size ||
                      again->file->sha256 != a->file->sha256))
        __builtin_trap();
    }
    if (auto o = jingle::parse_si_offer(*j, why)) {
      check_name(o->name);
      if (o->methods.size() > 8) __builtin_trap();
      std::string why2;
      auto again = jingle::parse_si_offer(jingle::build_si_offer(*o), why2);
      if (!again || again->size != o->size || again->methods != o->methods) __builtin_trap();
    }
    (void)jingle::parse_si_accept(*j);
    if (auto q = jingle::parse_bytestreams(*j, why)) {
      if (q->hosts.size() > jingle::kMaxCandidates) __builtin_trap();
      for (const auto& h : q->hosts)
        if (h.port == 0 || h.host.empty()) __builtin_trap();
    }
  }
}

struct Handler : kabar::xml::StreamHandler {
  void on_stream_open(const Element&, std::string_view) override {}
  void on_element(Element&& el) override { check(el); }
  void on_stream_close() override {}
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  check_name(input.substr(0, 600));
  Handler h;
  kabar::xml::StreamParser parser(h);
  std::string doc =
      "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>";
  doc.append(input);
  (void)parser.feed(doc);
  return 0;
}
