#include "server/core/undelivered.h"

#include <spdlog/spdlog.h>

#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "server/c2s_session.h"
#include "server/config.h"
#include "server/core/stanza_reader.h"
#include "server/server.h"

namespace kabar::server {

namespace {

// XEP-0198 §5 and RFC 6121 §8.5.3.2.1: a stanza that did not reach the resource is handled as
// if the resource had gone before it arrived.
awaitable<void> route_again(Server& server, const C2sSession& s, xml::Element stanza) {
  const std::string& kind = stanza.name();
  const std::string_view type = stanza.attr("type");
  if (kind == "message") {
    if (type == "error") co_return;  // never answered, never stored (RFC 6120 §8.3.1)
    if (!stanza.has_attr("to")) stanza.set_attr("to", s.jid_str());
    // To the full JID that has gone: normal and chat fall back to the bare JID (another
    // resource, else offline storage, else an error to the sender); the rest is dropped as the
    // router drops it.
    co_await server.redeliver(std::move(stanza));
  } else if (kind == "iq") {
    if (type == "get" || type == "set") server.bounce(stanza, "service-unavailable");
  }
  // Presence: dropped (RFC 6121 §4.3.3, §4.5: presence for an unavailable resource).
}

}  // namespace

awaitable<void> hand_on_undelivered(Server& server, const C2sSession& s,
                                    std::vector<OutQueue::Entry> entries) {
  if (entries.empty()) co_return;
  spdlog::info("c2s #{}: {} ended with {} stanzas undelivered", s.serial(), s.jid_str(),
               entries.size());
  StanzaReader reader(server.config().max_stanza_bytes);
  for (OutQueue::Entry& e : entries) {
    if ((e.on_written && !e.reroute) || !e.stanza) continue;
    std::optional<xml::Element> stanza = reader.read(e);
    if (!stanza) {
      spdlog::error("c2s #{}: an undelivered stanza of {} did not parse", s.serial(), s.jid_str());
      continue;
    }
    try {
      co_await route_again(server, s, std::move(*stanza));
      // Delivered elsewhere, stored or bounced: its record in flight goes.
      if (e.reroute && e.on_written) std::exchange(e.on_written, {})();
    } catch (const std::exception& ex) {
      spdlog::error("c2s #{}: handing on an undelivered stanza of {}: {}", s.serial(), s.jid_str(),
                    ex.what());
    }
  }
}

}  // namespace kabar::server
