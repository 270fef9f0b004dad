#include <algorithm>

#include "client/client_impl.h"
#include "client/roster_cache.h"

namespace kabar::client {

RosterItem Client::Impl::parse_item(const xml::Element& item) {
  RosterItem ri;
  ri.jid = bare_of(item.attr("jid"));
  ri.name = std::string(item.attr("name"));
  ri.subscription = item.has_attr("subscription") ? std::string(item.attr("subscription")) : "none";
  ri.ask = item.attr("ask") == "subscribe";
  for (const xml::Element* g : item.children("group")) ri.groups.push_back(g->text());
  return ri;
}

void Client::Impl::load_roster() {
  if (opt.roster_cache.empty()) return;
  if (auto c = load_roster_cache(opt.roster_cache)) {
    roster_ver = c->ver;
    roster = std::move(c->items);
  }
}

void Client::Impl::save_roster() {
  if (opt.roster_cache.empty() || !roster_ver_supported) return;
  save_roster_cache(opt.roster_cache, RosterCache{roster_ver, roster});
}

awaitable<Error> Client::fetch_roster() {
  auto self = impl_;
  self->load_roster();
  xml::Element iq("iq", ns::kClient);
  iq.set_attr("type", "get");
  xml::Element& q = iq.add_child("query", ns::kRoster);
  bool sent_ver = self->roster_ver_supported && !self->opt.roster_cache.empty();
  if (sent_ver) q.set_attr("ver", self->roster_ver);
  auto r = co_await self->iq(std::move(iq));
  if (Error e = self->iq_error(r, "fetching the roster")) co_return e;
  const xml::Element* rq = r->child("query", ns::kRoster);
  if (!rq) {
    // XEP-0237 §2.3: an empty result means the cached roster is current (pushes may follow).
    if (!sent_ver) self->roster.clear();
    co_return Error{};
  }
  self->roster.clear();
  for (const xml::Element* item : rq->children("item", ns::kRoster))
    self->roster.push_back(Impl::parse_item(*item));
  self->roster_ver = std::string(rq->attr("ver"));
  self->save_roster();
  co_return Error{};
}

const std::vector<RosterItem>& Client::roster() const { return impl_->roster; }

const RosterItem* Client::roster_item(const std::string& bare_jid) const {
  for (const auto& i : impl_->roster)
    if (i.jid == bare_jid) return &i;
  return nullptr;
}

awaitable<Error> Client::roster_set(const std::string& jid, const std::string& name) {
  auto self = impl_;
  auto j = xmpp::Jid::parse(jid);
  if (!j) co_return err(Errc::kBadInput, "'" + jid + "' is not a valid JID");
  xml::Element iq("iq", ns::kClient);
  iq.set_attr("type", "set");
  xml::Element& item = iq.add_child("query", ns::kRoster).add_child("item", ns::kRoster);
  item.set_attr("jid", j->bare_str());
  if (!name.empty()) item.set_attr("name", name);
  auto r = co_await self->iq(std::move(iq));
  co_return self->iq_error(r, "adding " + j->bare_str() + " to the roster");
}

awaitable<Error> Client::roster_remove(const std::string& jid) {
  auto self = impl_;
  auto j = xmpp::Jid::parse(jid);
  if (!j) co_return err(Errc::kBadInput, "'" + jid + "' is not a valid JID");
  xml::Element iq("iq", ns::kClient);
  iq.set_attr("type", "set");
  iq.add_child("query", ns::kRoster)
      .add_child("item", ns::kRoster)
      .set_attr("jid", j->bare_str())
      .set_attr("subscription", "remove");
  auto r = co_await self->iq(std::move(iq));
  Error e = self->iq_error(r, "removing " + j->bare_str());
  if (e.code == Errc::kNotFound) e.message = j->bare_str() + " is not in your roster";
  co_return e;
}

}  // namespace kabar::client
