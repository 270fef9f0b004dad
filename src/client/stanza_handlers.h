// The handlers protocol extensions register on a client session, by stanza kind and payload
// namespace. Several may share a namespace (calls and file transfer both speak Jingle): a stanza
// is offered to them in registration order until one claims it. No I/O: the session decides what
// an unclaimed stanza gets.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kabar/client.h"
#include "xml/element.h"

namespace kabar::client {

enum class StanzaKind { kIq, kMessage, kPresence };

class StanzaHandlers {
 public:
  // `xmlns` empty: every stanza of that kind. Otherwise an IQ matches by the namespace of its
  // payload (its one child, RFC 6120 §8.2.3), a message or presence when any child element is in
  // that namespace.
  HandlerToken add(StanzaKind kind, std::string xmlns, StanzaHandler handler);
  // False when the token names no registered handler (already removed, or never issued).
  bool remove(HandlerToken token);
  // Whether any handler is registered for exactly this kind and namespace.
  bool has(StanzaKind kind, std::string_view xmlns) const;
  // Offers `stanza` to the matching handlers in registration order; true as soon as one claims
  // it. A handler may add or remove handlers while it runs: one added is not offered this
  // stanza, one removed before its turn is skipped.
  bool offer(StanzaKind kind, const xml::Element& stanza);

 private:
  struct Entry {
    std::uint64_t id;
    StanzaKind kind;
    std::string xmlns;
    std::shared_ptr<StanzaHandler> handler;
  };
  static bool matches(const Entry& e, StanzaKind kind, const xml::Element& stanza);
  bool registered(std::uint64_t id) const;

  std::vector<Entry> entries_;
  std::uint64_t last_id_ = 0;
};

}  // namespace kabar::client
