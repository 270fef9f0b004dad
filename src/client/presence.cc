#include <algorithm>
#include <cstdlib>

#include "client/client_impl.h"

namespace kabar::client {

void Client::Impl::handle_presence(xml::Element& el) {
  if (handlers.offer(StanzaKind::kPresence, el)) return;
  Presence p;
  p.from = std::string(el.attr("from"));
  p.type = std::string(el.attr("type"));
  p.show = el.child_text("show");
  p.status = el.child_text("status");
  std::string prio = el.child_text("priority");
  p.priority = prio.empty() ? 0 : std::atoi(prio.c_str());
  if (const xml::Element* d = el.child("delay", ns::kDelay))
    p.delay = std::string(d->attr("stamp"));
  if (p.type == "error") p.error = error_condition(el);
  std::string bare = bare_of(p.from);
  if (p.type.empty()) {
    presences[bare][resource_of(p.from)] = p;
    note_caps(p.from, el);
  } else if (p.type == "unavailable") {
    caps_of_jid.erase(p.from);
    auto it = presences.find(bare);
    if (it != presences.end()) {
      it->second.erase(resource_of(p.from));
      if (it->second.empty()) presences.erase(it);
    }
  } else if (p.type == "subscribe") {
    if (std::find(requests.begin(), requests.end(), bare) == requests.end())
      requests.push_back(bare);
  } else if (p.type == "unsubscribe") {
    // RFC 6121 §3.3: a contact that withdraws its pending request cancels it.
    requests.erase(std::remove(requests.begin(), requests.end(), bare), requests.end());
  }
  if (owner && owner->on_presence) owner->on_presence(p);
}

static void presence_to(Client::Impl& impl, const std::string& jid, const char* type) {
  auto j = xmpp::Jid::parse(jid);
  if (!j) return;
  xml::Element p("presence", ns::kClient);
  p.set_attr("to", j->bare_str()).set_attr("type", type);
  impl.send(p);
  if (std::string_view(type) == "subscribed" || std::string_view(type) == "unsubscribed") {
    auto& r = impl.requests;
    r.erase(std::remove(r.begin(), r.end(), j->bare_str()), r.end());
  }
}

void Client::subscribe(const std::string& jid) { presence_to(*impl_, jid, "subscribe"); }
void Client::approve(const std::string& jid) { presence_to(*impl_, jid, "subscribed"); }
void Client::deny(const std::string& jid) { presence_to(*impl_, jid, "unsubscribed"); }
void Client::unsubscribe(const std::string& jid) { presence_to(*impl_, jid, "unsubscribe"); }
const std::vector<std::string>& Client::pending_requests() const { return impl_->requests; }

void Client::send_presence(const std::string& show, const std::string& status, int priority) {
  xml::Element p("presence", ns::kClient);
  if (!show.empty() && show != "online") p.add_child("show", ns::kClient).add_text(show);
  if (!status.empty()) p.add_child("status", ns::kClient).add_text(status);
  if (priority != 0) p.add_child("priority", ns::kClient).add_text(std::to_string(priority));
  // XEP-0115 §4: every broadcast presence carries our caps.
  impl_->own_presence = std::move(p);
  impl_->announce_presence();
}

const std::map<std::string, std::map<std::string, Presence>>& Client::presences() const {
  return impl_->presences;
}

}  // namespace kabar::client
