// Stanza bytes a session had queued for its client, parsed back into elements: they were
// written in the jabber:client default namespace with no prefix of the stream's own (a message
// forwarded as received bytes relies on no prefix of its sender's stream either). Used for what
// a session hands on undelivered (core/undelivered.h) and by modules that look at what is about
// to be written (modules/csi). One parser serves stanza after stanza; a stanza that does not
// parse ends it (read() returns nothing from then on).
#pragma once

#include <cstddef>
#include <optional>

#include "server/core/out_queue.h"
#include "xml/element.h"
#include "xml/stream_parser.h"

namespace kabar::server {

class StanzaReader final : private xml::StreamHandler {
 public:
  // Stanzas up to `max_bytes` (the configured stanza limit).
  explicit StanzaReader(std::size_t max_bytes);
  // The stanza in `e`, or nothing when its bytes do not parse (then no more parsing).
  std::optional<xml::Element> read(const OutQueue::Entry& e);
  // False once a stanza did not parse.
  bool ok() const { return ok_; }

 private:
  void on_stream_open(const xml::Element&, std::string_view) override {}
  void on_element(xml::Element&& e) override { got_ = std::move(e); }
  void on_stream_close() override {}

  xml::StreamParser parser_;
  std::optional<xml::Element> got_;
  bool ok_ = false;
};

}  // namespace kabar::server
