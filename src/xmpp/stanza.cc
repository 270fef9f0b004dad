#include "xmpp/stanza.h"

#include <ctime>

#include "xml/serializer.h"
#include "xmpp/namespaces.h"

namespace kabar::xmpp {

std::string_view error_type_name(ErrorType t) {
  switch (t) {
    case ErrorType::kAuth:
      return "auth";
    case ErrorType::kCancel:
      return "cancel";
    case ErrorType::kContinue:
      return "continue";
    case ErrorType::kModify:
      return "modify";
    case ErrorType::kWait:
      return "wait";
  }
  return "cancel";
}

xml::Element make_error_reply(const xml::Element& stanza, ErrorType type,
                              std::string_view condition, std::string_view text) {
  xml::Element reply(stanza.name(), stanza.xmlns());
  if (stanza.has_attr("id")) reply.set_attr("id", stanza.attr("id"));
  if (stanza.has_attr("from")) reply.set_attr("to", stanza.attr("from"));
  if (stanza.has_attr("to")) reply.set_attr("from", stanza.attr("to"));
  reply.set_attr("type", "error");
  if (stanza.name() == "iq") {
    // RFC 6120 §8.3.1: the original payload may be included; keep the first child for context.
    if (const xml::Element* payload = stanza.first_child(); payload != nullptr) {
      reply.add_child(*payload);
    }
  } else {
    for (const xml::Element* child : stanza.children()) {
      if (child->name() != "error") reply.add_child(*child);
    }
  }
  xml::Element& err = reply.add_child("error", stanza.xmlns());
  err.set_attr("type", error_type_name(type));
  err.add_child(std::string(condition), ns::kStanzas);
  if (!text.empty()) {
    err.add_child("text", ns::kStanzas).add_text(text);
  }
  return reply;
}

xml::Element make_iq_result(const xml::Element& iq) {
  xml::Element reply("iq", iq.xmlns());
  if (iq.has_attr("id")) reply.set_attr("id", iq.attr("id"));
  if (iq.has_attr("from")) reply.set_attr("to", iq.attr("from"));
  if (iq.has_attr("to")) reply.set_attr("from", iq.attr("to"));
  reply.set_attr("type", "result");
  return reply;
}

std::string stream_error_xml(std::string_view condition, std::string_view text) {
  std::string out = "<stream:error><";
  out += condition;
  out += " xmlns='";
  out += ns::kStreams;
  out += "'/>";
  if (!text.empty()) {
    out += "<text xmlns='";
    out += ns::kStreams;
    out += "'>";
    xml::escape_text(text, out);
    out += "</text>";
  }
  out += "</stream:error></stream:stream>";
  return out;
}

std::string format_datetime(std::int64_t unix_ms) {
  std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out(buf, n);
  char ms[8];
  std::snprintf(ms, sizeof ms, ".%03dZ", static_cast<int>(unix_ms % 1000));
  out += ms;
  return out;
}

void add_delay(xml::Element& stanza, std::string_view from, std::int64_t unix_ms,
               std::string_view reason) {
  xml::Element& d = stanza.add_child("delay", ns::kDelay);
  if (!from.empty()) d.set_attr("from", from);
  d.set_attr("stamp", format_datetime(unix_ms));
  if (!reason.empty()) d.add_text(reason);
}

StreamErrorInfo read_stream_error(const xml::Element& error) {
  StreamErrorInfo info{"undefined-condition", {}};
  for (const xml::Element* c : error.children()) {
    if (c->name() == "text") {
      info.text = c->text();
    } else if (c->xmlns() == ns::kStreams) {
      info.condition = c->name();
    }
  }
  return info;
}

}  // namespace kabar::xmpp
