// For unit tests of any layer: stanzas as a session would read them.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "xml/element.h"
#include "xml/stream_parser.h"

namespace kabar::testing {

// Top-level elements of `xml`, parsed as stanzas of a jabber:client stream.
inline std::vector<xml::Element> parse_stanzas(const std::string& xml) {
  struct Collect : xml::StreamHandler {
    std::vector<xml::Element> out;
    void on_stream_open(const xml::Element&, std::string_view) override {}
    void on_element(xml::Element&& el) override { out.push_back(std::move(el)); }
    void on_stream_close() override {}
  } collect;
  xml::StreamParser parser(collect);
  auto r = parser.feed(
      "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>" +
      xml);
  EXPECT_EQ(r.status, xml::StreamParser::Status::kOk) << r.message;
  return std::move(collect.out);
}

// The one element `xml` holds (a failure, and an empty element, if it holds another number).
inline xml::Element parse_stanza(const std::string& xml) {
  auto v = parse_stanzas(xml);
  EXPECT_EQ(v.size(), 1u) << xml;
  return v.empty() ? xml::Element() : std::move(v.front());
}

}  // namespace kabar::testing
