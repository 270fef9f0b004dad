// Stanza helpers shared by client and server: stanza errors (RFC 6120 §8.3), stream errors
// (RFC 6120 §4.9), XEP-0082 date-times and XEP-0203 delay stamps.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "xml/element.h"

namespace kabar::xmpp {

// RFC 6120 §8.3.2 error types.
enum class ErrorType { kAuth, kCancel, kContinue, kModify, kWait };
std::string_view error_type_name(ErrorType t);

// Builds the error reply to `stanza` (RFC 6120 §8.3.1): same name and id, to/from swapped,
// type='error', the original payload kept (for iq: its first child), plus <error/> with the
// defined condition (e.g. "service-unavailable") and an optional text.
xml::Element make_error_reply(const xml::Element& stanza, ErrorType type,
                              std::string_view condition, std::string_view text = {});

// A result IQ for `iq` (to/from swapped, same id), with no payload.
xml::Element make_iq_result(const xml::Element& iq);

// <stream:error><condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>[<text/>]</stream:error>
// serialized, followed by </stream:stream>, for a stream whose "stream" prefix is declared.
std::string stream_error_xml(std::string_view condition, std::string_view text = {});

// What a received <stream:error/> says (RFC 6120 §4.9.2): its defined condition
// ("undefined-condition" when it names none) and its text, if any.
struct StreamErrorInfo {
  std::string condition;
  std::string text;
};
StreamErrorInfo read_stream_error(const xml::Element& error);

// XEP-0082 date-time in UTC with milliseconds: 2002-09-10T23:08:25.123Z
std::string format_datetime(std::int64_t unix_ms);

// One element written as a child of a jabber:client stream (its default namespace, no prefix
// of the stream's), parsed; nullopt unless `bytes` are exactly one well-formed element. For
// stanzas kept as bytes (the archive) and for tests.
std::optional<xml::Element> parse_stanza(std::string_view bytes);

// A XEP-0082 date-time ("CCYY-MM-DDThh:mm:ss[.sss]TZD", TZD "Z" or "+hh:mm"/"-hh:mm") as Unix
// milliseconds (fractions past the millisecond are dropped); nullopt when `text` is not one.
std::optional<std::int64_t> parse_datetime(std::string_view text);

// Adds <delay xmlns='urn:xmpp:delay' from=... stamp=...>reason</delay> (XEP-0203).
void add_delay(xml::Element& stanza, std::string_view from, std::int64_t unix_ms,
               std::string_view reason = {});

}  // namespace kabar::xmpp
