#include "server/core/stanza_reader.h"

#include <string>
#include <utility>

#include "xmpp/namespaces.h"

namespace kabar::server {

StanzaReader::StanzaReader(std::size_t max_bytes)
    : parser_(*this, xml::StreamLimits{max_bytes + 4096, 64, 128, 0}) {
  std::string header = "<stream:stream xmlns='jabber:client' xmlns:stream='";
  header += xmpp::ns::kStream;
  header += "'>";
  ok_ = parser_.feed(header).status == xml::StreamParser::Status::kOk;
}

std::optional<xml::Element> StanzaReader::read(const OutQueue::Entry& e) {
  if (!ok_) return std::nullopt;
  got_.reset();
  for (const std::string* part : {e.head.get(), &e.own, e.tail.get()}) {
    if (part == nullptr || part->empty()) continue;
    if (parser_.feed(*part).status != xml::StreamParser::Status::kOk) {
      ok_ = false;
      return std::nullopt;
    }
  }
  return std::exchange(got_, std::nullopt);
}

}  // namespace kabar::server
