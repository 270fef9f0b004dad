// For the client session's unit tests: stanzas as the session would read them, and a session
// bound with no connection.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "client/client_impl.h"
#include "test_stanzas.h"
#include "xmpp/jid.h"

namespace kabar::client::testing {

using kabar::testing::parse_stanza;
using kabar::testing::parse_stanzas;

// Options for alice@example.org, nothing else set.
inline Options alice_options() {
  Options o;
  o.jid = "alice@example.org";
  return o;
}

// The stanza error condition (RFC 6120) of an error reply, or "" when it has none; unlike
// client::error_condition, no "undefined-condition" stands in for a missing one.
inline std::string reply_condition(const xml::Element& reply) {
  const xml::Element* e = reply.child("error");
  if (!e) return {};
  for (const xml::Element* c : e->children())
    if (c->xmlns() == "urn:ietf:params:xml:ns:xmpp-stanzas") return c->name();
  return {};
}

// A client session bound as `full`, with no transport: dispatch() runs the real handling, and
// every stanza the session sends stays in its write queue (no writer is started while
// `writing` is set). Nothing here runs the io_context: each test decides when it does.
struct OfflineSession {
  OfflineSession(asio::io_context& io, Options o,
                 const std::string& full = "alice@example.org/desk")
      : client(io, std::move(o)), impl(Client::Impl::of(client)) {
    auto j = xmpp::Jid::parse(full);
    impl.jid = *xmpp::Jid::parse(j ? j->bare_str() : full);
    impl.bound = full;
    impl.is_connected = true;
    impl.writing = true;
  }

  // One stanza, as if read from the server.
  void dispatch(const std::string& xml) {
    auto v = parse_stanzas(xml);
    ASSERT_EQ(v.size(), 1u) << xml;
    impl.dispatch(v.front());
  }

  // The stanzas in the write queue; take() also empties it.
  std::vector<xml::Element> queued() const {
    std::string all;
    for (const auto& s : impl.outq) all += s;
    return parse_stanzas(all);
  }
  std::vector<xml::Element> take() {
    auto out = queued();
    impl.outq.clear();
    return out;
  }

  Client client;
  Client::Impl& impl;
};

}  // namespace kabar::client::testing
