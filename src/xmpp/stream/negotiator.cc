#include "xmpp/stream/negotiator.h"

#include <utility>

namespace kabar::xmpp::stream {

std::vector<Event> Negotiator::take_events() {
  std::vector<Event> out;
  out.swap(events_);
  return out;
}

void Negotiator::send(std::string bytes) {
  Event ev{Event::Kind::kSend};
  ev.data = std::move(bytes);
  events_.push_back(std::move(ev));
}

ParsedInput::ParsedInput(Negotiator& negotiator, xml::StreamLimits limits)
    : negotiator_(negotiator), parser_(*this, limits) {}

bool ParsedInput::feed(std::string_view bytes) {
  if (failed_) return false;
  xml::StreamParser::Result r = parser_.feed(bytes);
  if (r.status == xml::StreamParser::Status::kOk) return true;
  failed_ = true;
  negotiator_.parse_error(r.error, r.message);
  return false;
}

void ParsedInput::on_stream_open(const xml::Element& header, std::string_view default_xmlns) {
  negotiator_.stream_opened(header, default_xmlns);
}

void ParsedInput::on_element(xml::Element&& element) { negotiator_.element(std::move(element)); }

void ParsedInput::on_stream_close() { negotiator_.stream_closed(); }

}  // namespace kabar::xmpp::stream
