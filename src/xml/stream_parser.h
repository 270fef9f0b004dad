// An incremental XMPP stream parser over expat (RFC 6120 §4, §11).
//
// Bytes go in as they arrive from the network, split anywhere; events come out: the stream
// header, each complete top-level element (a stanza or a stream-level element such as
// <starttls/>), and the stream close. The XML subset XMPP allows is enforced: no DTD, no entity
// declarations, no entity references beyond the five predefined ones (character references are
// fine), no processing instructions, no comments (RFC 6120 §11.1). Limits on stanza size, depth
// and attribute count come in through the constructor.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "xml/element.h"

namespace kabar::xml {

struct StreamLimits {
  std::size_t max_stanza_bytes = 256 * 1024;  // bytes of one top-level element, as received
  int max_depth = 32;                         // nesting below the stream root
  int max_attributes = 64;                    // attributes on one element
  // Top-level elements up to this many bytes keep their bytes as received, for
  // StreamParser::element_bytes(); 0 keeps none.
  std::size_t max_kept_bytes = 0;
};

// Which stream error a failure maps to (RFC 6120 §4.9.3).
enum class ParseError {
  kNone,
  kNotWellFormed,    // <not-well-formed/>: malformed XML, bad UTF-8, undefined entity, ...
  kRestrictedXml,    // <restricted-xml/>: DTD, entity declaration, PI, comment
  kPolicyViolation,  // <policy-violation/>: a limit exceeded (size, depth, attributes)
};

// A top-level element's start tag as a handler that may take the element as bytes sees it: its
// expanded name and its attributes (names as Attribute documents them), nothing below it.
class ElementHead {
 public:
  std::string_view name() const { return piece(0); }
  std::string_view xmlns() const { return piece(1); }
  std::size_t attribute_count() const { return ends_.size() < 2 ? 0 : ends_.size() / 2 - 1; }
  std::string_view attribute_name(std::size_t i) const { return piece(2 + 2 * i); }
  std::string_view attribute_value(std::size_t i) const { return piece(3 + 2 * i); }
  // The value, or an empty view when absent.
  std::string_view attr(std::string_view name) const;
  // Whether the element has a child (directly under it) with this name and namespace. A head
  // the parser offers to wants_bytes() has none yet; on_element_bytes() sees all of them.
  bool has_child(std::string_view name, std::string_view xmlns) const;

  // Filling one (the parser does, and tests). The storage is kept for the next element, so that
  // a parser taking element after element as bytes allocates nothing for their heads.
  void reset(std::string_view name, std::string_view xmlns);
  void add_attr(std::string_view name, std::string_view value);
  void add_child(std::string_view name, std::string_view xmlns);

 private:
  std::string_view piece(std::size_t i) const {
    const std::size_t start = i == 0 ? 0 : ends_[i - 1];
    return std::string_view(text_.data() + start, ends_[i] - start);
  }
  void add_piece(std::string_view s);

  std::string text_;               // name, namespace, then each attribute's name and value
  std::vector<std::size_t> ends_;  // where each of those ends in text_
  std::string children_;           // each child's namespace, '\x01', name, '\x02'
};

class StreamHandler {
 public:
  virtual ~StreamHandler() = default;
  // The stream root's start tag. `header` has the root's name and namespace (e.g. "stream" in
  // "http://etherx.jabber.org/streams"), its attributes (to, from, version, id, xml:lang), and no
  // children. `default_xmlns` is the default namespace declared on it ("jabber:client" or other;
  // empty if none), which is also the namespace stanzas without their own xmlns get.
  virtual void on_stream_open(const Element& header, std::string_view default_xmlns) = 0;
  // One complete top-level element (depth 1 under the root). Its namespace is resolved; children
  // in the same namespace keep it.
  virtual void on_element(Element&& element) = 0;
  // The root's end tag.
  virtual void on_stream_close() = 0;

  // Optional, to forward top-level elements without building them (needs
  // StreamLimits::max_kept_bytes): asked at a top-level element's start tag when its bytes can be
  // kept. When true, nothing of the element is built while it is parsed, and at its end
  // on_element_bytes() is offered it first. `head` is valid during the call only.
  virtual bool wants_bytes(const ElementHead& /*head*/) { return false; }
  // The same head (valid during the call only) and the element's bytes as
  // StreamParser::element_bytes() describes them (never empty here). True when the handler took
  // the element; otherwise the parser builds it whole from those bytes and calls on_element().
  // Not called when the bytes could not be kept (larger than max_kept_bytes, or relying on a
  // prefix of the root): on_element() gets it.
  virtual bool on_element_bytes(const ElementHead& /*head*/, std::string_view /*bytes*/) {
    return false;
  }
};

class StreamParser {
 public:
  enum class Status { kOk, kError };
  struct Result {
    Status status = Status::kOk;
    ParseError error = ParseError::kNone;
    std::string message;  // for logs
  };

  StreamParser(StreamHandler& handler, StreamLimits limits = {});
  ~StreamParser();
  StreamParser(const StreamParser&) = delete;
  StreamParser& operator=(const StreamParser&) = delete;

  // Parses the next bytes. After an error every later call returns that error again. Handlers
  // run synchronously from inside feed().
  Result feed(std::string_view bytes);

  // Discards the current stream and expects a new stream header (stream restart after STARTTLS
  // or SASL success, RFC 6120 §5.4.3.3, §6.4.6). May be called from inside a handler callback:
  // the bytes of the current feed() call that follow the element being handled are then parsed
  // as the start of the new stream.
  void reset();

  // Changes StreamLimits::max_stanza_bytes from the next element on (a server raises it once the
  // peer has authenticated). Not from inside a handler callback of the element being parsed.
  void set_max_stanza_bytes(std::size_t bytes);
  // The same for StreamLimits::max_kept_bytes.
  void set_max_kept_bytes(std::size_t bytes);

  // Inside StreamHandler::on_element: the element's bytes exactly as received (start tag to end
  // tag), valid until the callback returns, so that a stanza can be forwarded without being
  // serialized again. Empty when they were not kept: larger than max_kept_bytes, or using a
  // namespace prefix declared on the stream root (the bytes would not stand on their own; the
  // default namespace, which they do rely on, is the handler's to check).
  std::string_view element_bytes() const;

  // Bytes held for the top-level element being parsed (0 between stanzas): what an idle
  // connection costs.
  std::size_t pending_bytes() const;

  // Frees the expat parser of an open stream that sits between top-level elements with nothing
  // of the next one received (an idle connection); the next feed() makes a new one that carries
  // on with the same namespace declarations, invisibly to the handler. Returns false, changing
  // nothing, when the stream is anywhere else (mid-element, before its header, after an error,
  // inside feed()).
  bool hibernate();
  bool hibernating() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kabar::xml
