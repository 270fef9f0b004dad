// Feeds arbitrary bytes to the XMPP stream parser in a few chunks (split points taken from the
// first byte) and checks that every element it yields serializes to XML that parses back to the
// same serialization, and that its bytes as received, when the parser kept them, parse to it too;
// that hibernating and taking elements as bytes (StreamHandler::wants_bytes()) change nothing.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "xml/serializer.h"
#include "xml/stream_parser.h"

namespace {

using kabar::xml::Element;
using kabar::xml::StreamLimits;
using kabar::xml::StreamParser;

constexpr std::string_view kStreamsNs = "http://etherx.jabber.org/streams";

// Wraps one serialized element in a stream header declaring `default_xmlns`.
std::string wrap(std::string_view default_xmlns, std::string_view element) {
  std::string doc = "<stream:stream xmlns:stream='";
  doc += kStreamsNs;
  doc += "' xmlns='";
  kabar::xml::escape_attr(default_xmlns, doc);
  doc += "'>";
  doc += element;
  return doc;
}

// Limits no reparse of what the parser under test accepted can reach.
StreamLimits loose_limits() {
  StreamLimits loose;
  loose.max_stanza_bytes = 64 * 1024 * 1024;
  loose.max_depth = 1 << 20;
  loose.max_attributes = 1 << 20;
  return loose;
}

struct Checker : kabar::xml::StreamHandler {
  StreamParser* parser = nullptr;
  std::string default_xmlns;
  void on_stream_open(const Element&, std::string_view dx) override { default_xmlns.assign(dx); }
  void on_element(Element&& el) override {
    const std::string received(parser->element_bytes());
    // Restart from inside the callback as STARTTLS and SASL success do.
    if (el.name() == "starttls" || el.name() == "success") parser->reset();
    const std::string out = kabar::xml::serialize(el, std::string_view(default_xmlns));
    // Round trip: parse the serialization again; it must parse and serialize identically.
    check(out, out);
    // Forwarding as received: the kept bytes, alone in a stream with the same default namespace,
    // must be the same element.
    if (!received.empty()) check(received, out);
  }
  void check(const std::string& doc, const std::string& out) {
    struct Again : kabar::xml::StreamHandler {
      std::string default_xmlns;
      std::string out;
      int count = 0;
      void on_stream_open(const Element&, std::string_view dx) override {
        default_xmlns.assign(dx);
      }
      void on_element(Element&& e) override {
        ++count;
        out = kabar::xml::serialize(e, std::string_view(default_xmlns));
      }
      void on_stream_close() override {}
    } again;
    StreamParser reparser(again, loose_limits());
    const StreamParser::Result r = reparser.feed(wrap(default_xmlns, doc));
    if (r.status != StreamParser::Status::kOk || again.count != 1 || again.out != out) {
      __builtin_trap();
    }
  }
  void on_stream_close() override {}
};

// Records what a parser reports, to compare a hibernating parser with one that never sleeps.
struct Recorder : kabar::xml::StreamHandler {
  std::string log;
  // Elements whose name starts with 'm' are asked for as bytes; those of an even length are
  // taken so and logged as what their bytes parse to, which must be what a plain parse builds.
  bool bytes_only = false;
  std::string default_xmlns;
  bool wants_bytes(const kabar::xml::ElementHead& head) override {
    return bytes_only && !head.name().empty() && head.name()[0] == 'm';
  }
  bool on_element_bytes(const kabar::xml::ElementHead& head, std::string_view bytes) override {
    if (head.name().empty() || head.name()[0] != 'm' || bytes.empty()) __builtin_trap();
    if (bytes.size() % 2 != 0) return false;
    struct One : kabar::xml::StreamHandler {
      std::string out;
      int count = 0;
      void on_stream_open(const Element&, std::string_view) override {}
      void on_element(Element&& e) override {
        ++count;
        out = kabar::xml::serialize(e, std::string_view{});
      }
      void on_stream_close() override {}
    } one;
    StreamParser reparser(one, loose_limits());
    if (reparser.feed(wrap(default_xmlns, bytes)).status != StreamParser::Status::kOk ||
        one.count != 1) {
      __builtin_trap();
    }
    log += one.out;
    log += '\n';
    return true;
  }
  void on_stream_open(const Element& h, std::string_view dx) override {
    default_xmlns.assign(dx);
    log += "open ";
    log += kabar::xml::serialize(h, dx);
    log += '\n';
  }
  void on_element(Element&& el) override {
    log += kabar::xml::serialize(el, std::string_view{});
    log += '\n';
  }
  void on_stream_close() override { log += "close\n"; }
};

// Feeds `chunks`; with `hibernate` the parser is told to hibernate after each one.
std::string replay(const std::string_view (&chunks)[3], const StreamLimits& limits, bool hibernate,
                   bool bytes_only = false) {
  Recorder rec;
  rec.bytes_only = bytes_only;
  StreamParser parser(rec, limits);
  for (std::string_view chunk : chunks) {
    const StreamParser::Result r = parser.feed(chunk);
    if (r.status != StreamParser::Status::kOk) {
      rec.log += "error " + std::to_string(static_cast<int>(r.error));
      break;
    }
    if (hibernate) parser.hibernate();
  }
  return rec.log;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t control = data[0];
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);

  StreamLimits limits;
  limits.max_stanza_bytes = 4096;
  limits.max_depth = 16;
  limits.max_attributes = 16;
  limits.max_kept_bytes = 2048;
  Checker checker;
  StreamParser parser(checker, limits);
  checker.parser = &parser;

  // Up to three chunks: low nibble picks the first cut, high nibble the second.
  const std::size_t cut1 = input.size() * (control & 0x0f) / 16;
  const std::size_t cut2 = cut1 + (input.size() - cut1) * (control >> 4) / 16;
  StreamParser::Result first;
  for (std::string_view chunk :
       {input.substr(0, cut1), input.substr(cut1, cut2 - cut1), input.substr(cut2)}) {
    const StreamParser::Result r = parser.feed(chunk);
    if (r.status != StreamParser::Status::kOk && first.status == StreamParser::Status::kOk) {
      first = r;
    } else if (first.status != StreamParser::Status::kOk &&
               (r.status != first.status || r.error != first.error)) {
      __builtin_trap();  // errors must be sticky
    }
  }
  // Odd control bytes restart the stream and feed the input once more.
  if (control & 1) {
    parser.reset();
    (void)parser.feed(input);
  }
  (void)parser.pending_bytes();

  // Hibernating between chunks (an idle connection) must not change a single event.
  const std::string_view chunks[3] = {input.substr(0, cut1), input.substr(cut1, cut2 - cut1),
                                      input.substr(cut2)};
  const std::string plain = replay(chunks, limits, false);
  if (replay(chunks, limits, true) != plain) __builtin_trap();
  // Taking elements as bytes must not change a single event either.
  if (replay(chunks, limits, control & 2, true) != plain) __builtin_trap();
  return 0;
}
