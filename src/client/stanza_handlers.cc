#include "client/stanza_handlers.h"

#include <algorithm>
#include <utility>

namespace kabar::client {

HandlerToken StanzaHandlers::add(StanzaKind kind, std::string xmlns, StanzaHandler handler) {
  HandlerToken token{++last_id_};
  entries_.push_back(
      Entry{token.id, kind, std::move(xmlns), std::make_shared<StanzaHandler>(std::move(handler))});
  return token;
}

bool StanzaHandlers::remove(HandlerToken token) {
  auto it = std::find_if(entries_.begin(), entries_.end(),
                         [&](const Entry& e) { return e.id == token.id; });
  if (it == entries_.end()) return false;
  entries_.erase(it);
  return true;
}

bool StanzaHandlers::has(StanzaKind kind, std::string_view xmlns) const {
  return std::any_of(entries_.begin(), entries_.end(),
                     [&](const Entry& e) { return e.kind == kind && e.xmlns == xmlns; });
}

bool StanzaHandlers::registered(std::uint64_t id) const {
  return std::any_of(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.id == id; });
}

bool StanzaHandlers::matches(const Entry& e, StanzaKind kind, const xml::Element& stanza) {
  if (e.kind != kind) return false;
  if (e.xmlns.empty()) return true;
  if (kind == StanzaKind::kIq) {
    const xml::Element* payload = stanza.first_child();
    return payload && payload->xmlns() == e.xmlns;
  }
  for (const xml::Element* c : stanza.children())
    if (c->xmlns() == e.xmlns) return true;
  return false;
}

bool StanzaHandlers::offer(StanzaKind kind, const xml::Element& stanza) {
  // A snapshot, so handlers can change the registrations while the stanza is offered; the
  // shared_ptr keeps a handler alive while it runs even if it removes itself.
  std::vector<std::pair<std::uint64_t, std::shared_ptr<StanzaHandler>>> turn;
  for (const Entry& e : entries_)
    if (matches(e, kind, stanza)) turn.emplace_back(e.id, e.handler);
  for (auto& [id, handler] : turn) {
    if (!registered(id)) continue;
    if ((*handler)(stanza)) return true;
  }
  return false;
}

}  // namespace kabar::client
