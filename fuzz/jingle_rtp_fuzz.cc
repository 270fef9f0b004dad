// Feeds arbitrary bytes, as the top-level elements of a client stream, to the Jingle RTP and
// Jingle Message Initiation parsers the kabar client runs on what peers send (XEP-0166/0167/
// 0176/0293/0320/0338/0339/0353). Checks their bounds, and that what parses builds back into
// something that parses the same.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "xml/stream_parser.h"
#include "xmpp/jingle_rtp.h"

namespace {

namespace rtp = kabar::xmpp::jingle_rtp;
using kabar::xml::Element;

void check_action(const rtp::Action& a) {
  if (a.contents.size() > rtp::kMaxContents || a.bundle.size() > rtp::kMaxContents)
    __builtin_trap();
  for (const rtp::Content& c : a.contents) {
    if (c.description && (c.description->payload_types.size() > rtp::kMaxPayloadTypes ||
                          c.description->ssrcs.size() > rtp::kMaxSources))
      __builtin_trap();
    if (c.transport) {
      if (c.transport->candidates.size() > rtp::kMaxCandidates) __builtin_trap();
      for (const rtp::Candidate& cand : c.transport->candidates)
        if (cand.protocol != "udp" || cand.port == 0 || cand.ip.empty()) __builtin_trap();
    }
  }
}

void check(const Element& el) {
  std::string why;
  for (const Element* j : {&el, el.first_child()}) {
    if (!j) continue;
    (void)rtp::is_rtp_initiate(*j);
    if (auto a = rtp::parse(*j, why)) {
      check_action(*a);
      std::string why2;
      auto again = rtp::parse(rtp::build(*a), why2);
      if (!again || again->sid != a->sid || again->contents.size() != a->contents.size() ||
          again->bundle != a->bundle)
        __builtin_trap();
      for (std::size_t i = 0; i < a->contents.size(); ++i) {
        const auto& x = a->contents[i];
        const auto& y = again->contents[i];
        if (x.name != y.name || x.description.has_value() != y.description.has_value() ||
            x.transport.has_value() != y.transport.has_value())
          __builtin_trap();
        if (x.transport && x.transport->candidates.size() != y.transport->candidates.size())
          __builtin_trap();
        if (x.description &&
            x.description->payload_types.size() != y.description->payload_types.size())
          __builtin_trap();
      }
    }
  }
  if (auto m = rtp::parse_jmi(el, why)) {
    if (m->media.size() > rtp::kMaxContents) __builtin_trap();
    std::string why2;
    auto again = rtp::parse_jmi(rtp::build_jmi(*m, "a@b", "id"), why2);
    if (!again || again->kind != m->kind || again->id != m->id || again->media != m->media)
      __builtin_trap();
  }
}

struct Handler : kabar::xml::StreamHandler {
  void on_stream_open(const Element&, std::string_view) override {}
  void on_element(Element&& el) override { check(el); }
  void on_stream_close() override {}
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Handler h;
  kabar::xml::StreamParser parser(h);
  std::string doc =
      "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>";
  doc.append(reinterpret_cast<const char*>(data), size);
  (void)parser.feed(doc);
  return 0;
}
