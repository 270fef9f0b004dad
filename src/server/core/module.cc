#include "server/core/module.h"

#include <algorithm>

#include "server/c2s_session.h"
#include "server/server.h"
#include "xmpp/stanza.h"

namespace kabar::server {

const IqHandler* ModuleRegistry::iq_handler(std::string_view xmlns, std::string_view type,
                                            Target target) const {
  const unsigned kind = type == "get" ? 1u * kIqGet : type == "set" ? 1u * kIqSet : 0u;
  for (const auto& e : iqs_) {
    if (e.xmlns == xmlns && (e.kinds & kind) != 0 && (e.targets & target) != 0) return &e.handler;
  }
  return nullptr;
}

std::vector<std::string> ModuleRegistry::disco_features(Target target) const {
  std::vector<std::string> out;
  for (const auto& f : features_) {
    if ((f.targets & target) != 0 && std::find(out.begin(), out.end(), f.var) == out.end()) {
      out.push_back(f.var);
    }
  }
  return out;
}

std::vector<DiscoIdentity> ModuleRegistry::disco_identities(Target target) const {
  std::vector<DiscoIdentity> out;
  for (const auto& i : identities_) {
    if ((i.targets & target) != 0) out.push_back(i.id);
  }
  return out;
}

Component* ModuleRegistry::component(std::string_view domain) const {
  for (Component* c : components_) {
    if (c->jid() == domain) return c;
  }
  return nullptr;
}

const Config& ModuleContext::config() const { return server_.config(); }
const Clock& ModuleContext::clock() const { return server_.clock(); }
Random& ModuleContext::random() const { return server_.random(); }

void ModuleContext::iq(std::string xmlns, IqHandler handler, unsigned kinds, unsigned targets) {
  reg_.iqs_.push_back({std::move(xmlns), kinds, targets, std::move(handler)});
}

void ModuleContext::disco_feature(std::string var, unsigned targets) {
  reg_.features_.push_back({std::move(var), targets});
}

void ModuleContext::disco_identity(DiscoIdentity id, unsigned targets) {
  reg_.identities_.push_back({std::move(id), targets});
}

void ModuleContext::stream_feature(xml::Element feature) {
  reg_.stream_features_.push_back(std::move(feature));
}

void ModuleContext::nonza(std::string xmlns, NonzaHandler handler) {
  reg_.nonzas_.emplace_back(std::move(xmlns), std::move(handler));
}

const NonzaHandler* ModuleRegistry::nonza_handler(std::string_view xmlns) const {
  for (const auto& [x, h] : nonzas_) {
    if (x == xmlns) return &h;
  }
  return nullptr;
}

void ModuleContext::hook(Hook point, StanzaHook hook, int order) {
  const auto i = static_cast<std::size_t>(point);
  auto& ordered = reg_.ordered_[i];
  ordered.push_back({order, std::move(hook)});
  std::stable_sort(ordered.begin(), ordered.end(),
                   [](const auto& a, const auto& b) { return a.order < b.order; });
  reg_.hooks_[i].clear();
  for (const auto& h : ordered) reg_.hooks_[i].push_back(h.hook);
}

void ModuleContext::on(SessionEvent event, SessionHandler handler) {
  reg_.events_[static_cast<std::size_t>(event)].push_back(std::move(handler));
}

void ModuleContext::component(Component& c) { reg_.components_.push_back(&c); }

awaitable<void> serve_iq_only(Server& server, SessionPtr from, xml::Element stanza,
                              const IqHandler& iq) {
  const std::string_view type = stanza.attr("type");
  if (stanza.name() == "iq") {
    auto to = xmpp::Jid::parse(stanza.attr("to"));
    if (to && to->is_domain()) {
      co_await iq(std::move(from), std::move(stanza));
    } else if (type == "get" || type == "set") {
      from->send(xmpp::make_error_reply(stanza, xmpp::ErrorType::kCancel, "service-unavailable"));
    }
  } else if (stanza.name() == "message" && type != "error" && type != "headline") {
    server.bounce(stanza, "service-unavailable");
  }
}

}  // namespace kabar::server
