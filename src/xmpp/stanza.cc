#include "xmpp/stanza.h"

#include <ctime>

#include "xml/serializer.h"
#include "xml/stream_parser.h"
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

std::optional<xml::Element> parse_stanza(std::string_view bytes) {
  struct One : xml::StreamHandler {
    void on_stream_open(const xml::Element&, std::string_view) override {}
    void on_element(xml::Element&& e) override { got.push_back(std::move(e)); }
    void on_stream_close() override {}
    std::vector<xml::Element> got;
  } one;
  xml::StreamParser parser(one);
  parser.feed("<stream:stream xmlns='jabber:client' xmlns:stream='" + std::string(ns::kStreams) +
              "'>");
  if (parser.feed(bytes).status != xml::StreamParser::Status::kOk || one.got.size() != 1) {
    return std::nullopt;
  }
  return std::move(one.got.front());
}

std::optional<std::int64_t> parse_datetime(std::string_view t) {
  // Digits at [at, at + n) as a number; -1 if any is not a digit.
  auto num = [&t](std::size_t at, std::size_t n) -> int {
    if (at + n > t.size()) return -1;
    int v = 0;
    for (std::size_t i = at; i < at + n; ++i) {
      if (t[i] < '0' || t[i] > '9') return -1;
      v = v * 10 + (t[i] - '0');
    }
    return v;
  };
  if (t.size() < 20 || t[4] != '-' || t[7] != '-' || t[10] != 'T' || t[13] != ':' || t[16] != ':') {
    return std::nullopt;
  }
  const int year = num(0, 4), month = num(5, 2), day = num(8, 2);
  const int hour = num(11, 2), minute = num(14, 2), second = num(17, 2);
  if (year < 0 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 || minute < 0 ||
      minute > 59 || second < 0 || second > 60) {
    return std::nullopt;
  }
  static constexpr int kDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  if (day > kDays[month - 1] || (month == 2 && day == 29 && !leap)) return std::nullopt;
  std::size_t at = 19;
  std::int64_t ms = 0;
  if (t[at] == '.') {
    std::size_t digits = 0;
    for (++at; at < t.size() && t[at] >= '0' && t[at] <= '9'; ++at, ++digits) {
      if (digits < 3) ms = ms * 10 + (t[at] - '0');
    }
    if (digits == 0) return std::nullopt;
    for (; digits < 3; ++digits) ms *= 10;
  }
  std::int64_t offset_s = 0;
  if (at < t.size() && t[at] == 'Z' && at + 1 == t.size()) {
  } else if (at + 6 == t.size() && (t[at] == '+' || t[at] == '-') && t[at + 3] == ':') {
    const int oh = num(at + 1, 2), om = num(at + 4, 2);
    if (oh < 0 || oh > 23 || om < 0 || om > 59) return std::nullopt;
    offset_s = (oh * 3600 + om * 60) * (t[at] == '+' ? 1 : -1);
  } else {
    return std::nullopt;
  }
  // Days from the civil date (H. Hinnant's algorithm), no time zone involved.
  const int y = month <= 2 ? year - 1 : year;
  const int era = (y >= 0 ? y : y - 399) / 400;
  const int yoe = y - era * 400;
  const int mp = (month + 9) % 12;
  const int doy = (153 * mp + 2) / 5 + day - 1;
  const int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  const std::int64_t days = static_cast<std::int64_t>(era) * 146097 + doe - 719468;
  const std::int64_t secs = days * 86400 + hour * 3600 + minute * 60 + second - offset_s;
  return secs * 1000 + ms;
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
