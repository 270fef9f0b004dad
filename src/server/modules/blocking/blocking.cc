// Blocking Command (XEP-0191, urn:xmpp:blocking): an account's blocklist, kept in the store and,
// for the checks on every stanza, in memory (all accounts' lists, loaded once). Stanzas from a
// blocked JID do not reach the user (§3.5: presence dropped silently, messages and IQ requests
// answered service-unavailable); the user's own stanzas to it are refused with not-acceptable and
// <blocked/> (§3.3); presence is hidden both ways while the block lasts (unavailable on block,
// the current presence on unblock).
//
// The hot path: an account with a non-empty blocklist carries AccountFlag kBlocksJids, so its
// messages, sent and received, take the full path through the hooks below; every other account
// keeps the byte fast path and costs nothing here (one relaxed load of the count of blocking
// accounts when a hook runs).
//
// Threads: the cache is read on every shard under a mutex; it is changed only on the store's
// thread (Server::db(), one thread), in the same step as the store, so a load and a change can
// never interleave wrongly.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "server/c2s_session.h"
#include "server/features.h"
#include "xml/serializer.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"
#include "xmpp/subscription.h"

namespace kabar::server {

namespace ns = xmpp::ns;

namespace {

constexpr std::string_view kBlockingNs = "urn:xmpp:blocking";
constexpr std::string_view kBlockingErrorsNs = "urn:xmpp:blocking:errors";
// Items one account may block: a client cannot grow the server's memory without bound.
constexpr std::size_t kMaxBlocklist = 1000;

struct Blocklists final : BlockingView {
  mutable std::mutex mu;
  std::unordered_map<std::string, std::unordered_set<std::string>> lists;  // by username
  std::atomic<std::size_t> blocking_accounts{0};
  std::atomic<bool> loaded{false};
  Server* server = nullptr;

  // XEP-0191 §7 (the XEP-0016 order): user@domain/resource, user@domain, domain/resource,
  // domain.
  static bool matches(const std::unordered_set<std::string>& list, const xmpp::Jid& j) {
    if (list.contains(j.bare_str())) return true;
    if (!j.is_bare() && list.contains(j.str())) return true;
    if (!j.is_bare() && list.contains(j.domain() + "/" + j.resource())) return true;
    return !j.local().empty() && list.contains(j.domain());
  }

  bool blocks(const std::string& user, const xmpp::Jid& j) const {
    if (blocking_accounts.load(std::memory_order_relaxed) == 0) return false;
    std::lock_guard lock(mu);
    auto it = lists.find(user);
    return it != lists.end() && matches(it->second, j);
  }

  bool blocked_either_way(const xmpp::Jid& user, const xmpp::Jid& other) const override {
    if (blocking_accounts.load(std::memory_order_relaxed) == 0) return false;
    // §5: never between one user's own resources.
    if (user.bare_str() == other.bare_str()) return false;
    if (blocks(user.local(), other)) return true;
    return !other.local().empty() && other.domain() == user.domain() && blocks(other.local(), user);
  }

  void forget(const std::string& user) override { install(*server, user, {}); }

  std::vector<std::string> list_of(const std::string& user) const {
    std::lock_guard lock(mu);
    auto it = lists.find(user);
    if (it == lists.end()) return {};
    std::vector<std::string> out(it->second.begin(), it->second.end());
    std::sort(out.begin(), out.end());
    return out;
  }

  // On the store's thread only: the account's list becomes `now` (empty: none).
  void install(Server& s, const std::string& user, const std::vector<std::string>& now) {
    std::lock_guard lock(mu);
    auto it = lists.find(user);
    if (now.empty()) {
      if (it != lists.end()) {
        lists.erase(it);
        blocking_accounts.fetch_sub(1, std::memory_order_relaxed);
      }
    } else {
      if (it == lists.end()) {
        it = lists.emplace(user, std::unordered_set<std::string>()).first;
        blocking_accounts.fetch_add(1, std::memory_order_relaxed);
      }
      it->second = std::unordered_set<std::string>(now.begin(), now.end());
    }
    s.set_account_flags(user, kBlocksJids, !now.empty());
  }
};

// An error reply for `stanza` with a condition (and, for <blocked/>, the application condition).
xml::Element error_reply(const xml::Element& stanza, std::string_view condition, bool blocked) {
  xml::Element e = xmpp::make_error_reply(stanza, xmpp::ErrorType::kCancel, condition);
  if (blocked) {
    if (xml::Element* err = e.child("error", ns::kClient)) {
      err->add_child("blocked", std::string(kBlockingErrorsNs));
    }
  }
  return e;
}

class BlockingModule final : public Module {
 public:
  std::string_view name() const override { return "blocking"; }

  void setup(ModuleContext& ctx) override {
    Server& s = ctx.server();
    server_ = &s;
    lists_.server = &s;
    ctx.provide<BlockingView>(lists_);
    ctx.disco_feature(std::string(kBlockingNs), kToServer);
    ctx.iq(
        std::string(kBlockingNs),
        [this](SessionPtr from, xml::Element iq) -> awaitable<void> {
          co_await handle_iq(std::move(from), std::move(iq));
        },
        kIqGetOrSet, kToServer);
    // Before every other hook: carbons must not copy what is refused here.
    ctx.hook(
        Hook::kMessageOut,
        [this](SessionPtr from, xml::Element& m) -> awaitable<HookResult> {
          co_return co_await outbound(from, m);
        },
        -100);
    ctx.hook(
        Hook::kPresenceOut,
        [this](SessionPtr from, xml::Element& p) -> awaitable<HookResult> {
          // Broadcasts (no 'to') are filtered by the presence module through BlockingView; the
          // lists must be in memory for that.
          if (!p.has_attr("to")) {
            co_await load();
            co_return HookResult::kContinue;
          }
          co_return co_await outbound(from, p);
        },
        -100);
    ctx.hook(
        Hook::kIqOut,
        [this](SessionPtr from, xml::Element& iq) -> awaitable<HookResult> {
          // An IQ to the server (no 'to', or the domain) is the server's to answer.
          if (!iq.has_attr("to")) co_return HookResult::kContinue;
          if (auto to = xmpp::Jid::parse(iq.attr("to"));
              to && to->is_domain() && to->domain() == server_->config().domain) {
            co_return HookResult::kContinue;
          }
          if (co_await outbound(from, iq) == HookResult::kStop) co_return HookResult::kStop;
          co_return co_await inbound(iq);
        },
        -100);
    ctx.hook(
        Hook::kMessageIn,
        [this](SessionPtr, xml::Element& m) -> awaitable<HookResult> {
          co_return co_await inbound(m);
        },
        -100);
    ctx.hook(
        Hook::kPresenceIn,
        [this](SessionPtr, xml::Element& p) -> awaitable<HookResult> {
          co_return co_await inbound(p);
        },
        -100);
  }

  // The lists are loaded at start (Server::start(), before any client can have logged in and
  // sent a stanza); a server that was never started (unit tests) loads them on the first stanza a
  // hook sees. load() after that is one atomic load.
  void start(ModuleContext& ctx) override {
    asio::co_spawn(ctx.server().io(), load(), asio::detached);
  }

 private:
  awaitable<void> load() {
    if (lists_.loaded.load(std::memory_order_acquire)) co_return;
    Server* s = server_;
    Blocklists* lists = &lists_;
    auto op = [s, lists](store::Store& st) {
      if (lists->loaded.load(std::memory_order_acquire)) return true;
      for (const auto& [user, jids] : st.all_blocklists()) lists->install(*s, user, jids);
      lists->loaded.store(true, std::memory_order_release);
      return true;
    };
    co_await s->db(std::move(op));
  }

  // §3.3: the user's own stanza to a JID it blocks is not routed; a request or a message is
  // answered not-acceptable with <blocked/>.
  awaitable<HookResult> outbound(const SessionPtr& from, xml::Element& st) {
    if (lists_.blocking_accounts.load(std::memory_order_relaxed) == 0 && lists_.loaded) {
      co_return HookResult::kContinue;
    }
    co_await load();
    auto to = xmpp::Jid::parse(st.attr("to"));
    if (!to || to->bare_str() == from->jid().bare_str()) co_return HookResult::kContinue;
    if (!lists_.blocks(from->username(), *to)) co_return HookResult::kContinue;
    const std::string_view type = st.attr("type");
    if (type != "error" && type != "result") from->send(error_reply(st, "not-acceptable", true));
    co_return HookResult::kStop;
  }

  // §3.5: a stanza from a JID the (local) recipient blocks.
  awaitable<HookResult> inbound(xml::Element& st) {
    if (lists_.blocking_accounts.load(std::memory_order_relaxed) == 0 && lists_.loaded) {
      co_return HookResult::kContinue;
    }
    co_await load();
    auto to = xmpp::Jid::parse(st.attr("to"));
    auto from = xmpp::Jid::parse(st.attr("from"));
    if (!to || !from || to->local().empty() || !server_->is_local(*to)) {
      co_return HookResult::kContinue;
    }
    if (to->bare_str() == from->bare_str()) co_return HookResult::kContinue;  // §5
    if (!lists_.blocks(to->local(), *from)) co_return HookResult::kContinue;
    const std::string_view type = st.attr("type");
    if (st.name() == "presence") {
      // "the server MUST NOT respond and MUST NOT return an error".
    } else if (st.name() == "message") {
      // "the server SHOULD return an error, which SHOULD be <service-unavailable/>".
      server_->bounce(st, "service-unavailable");
    } else if (type == "get" || type == "set") {
      // "MUST return an error, which SHOULD be <service-unavailable/>"; other types dropped.
      server_->bounce(st, "service-unavailable");
    }
    co_return HookResult::kStop;
  }

  awaitable<void> handle_iq(SessionPtr from, xml::Element iq) {
    co_await load();
    const xml::Element* payload = iq.first_child();
    const std::string type(iq.attr("type"));
    if (type == "get" && payload != nullptr && payload->is("blocklist", kBlockingNs)) {
      // §3.2: the list, and from now on this resource gets the pushes.
      server_->set_resource_flags(*from, kBlocklistWanted, true);
      xml::Element reply = xmpp::make_iq_result(iq);
      xml::Element& list = reply.add_child("blocklist", std::string(kBlockingNs));
      for (const auto& j : lists_.list_of(from->username())) {
        list.add_child("item", std::string(kBlockingNs)).set_attr("jid", j);
      }
      from->send(reply);
      co_return;
    }
    const bool block = payload != nullptr && payload->is("block", kBlockingNs);
    const bool unblock = payload != nullptr && payload->is("unblock", kBlockingNs);
    if (type != "set" || (!block && !unblock)) {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request"));
      co_return;
    }
    std::vector<std::string> jids;
    for (const xml::Element* item : payload->children("item", kBlockingNs)) {
      auto j = xmpp::Jid::parse(item->attr("jid"));
      if (!j) {
        from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "jid-malformed"));
        co_return;
      }
      jids.push_back(j->str());
    }
    // §3.3: a block without an item is a bad request (an empty unblock unblocks everyone, §3.4).
    if (block && jids.empty()) {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request"));
      co_return;
    }
    const std::string user = from->username();
    Server* s = server_;
    Blocklists* lists = &lists_;
    struct Change {
      bool too_many = false;
      std::vector<std::string> changed;  // added or removed
    };
    auto op = [s, lists, user, jids, block](store::Store& st) {
      Change c;
      if (block) {
        std::unordered_set<std::string> all(jids.begin(), jids.end());
        for (auto& j : st.blocklist(user)) all.insert(std::move(j));
        if (all.size() > kMaxBlocklist) {
          c.too_many = true;
          return c;
        }
        c.changed = st.block(user, jids);
      } else if (jids.empty()) {
        c.changed = st.unblock_all(user);
      } else {
        c.changed = st.unblock(user, jids);
      }
      lists->install(*s, user, st.blocklist(user));
      return c;
    };
    Change c = co_await s->db(std::move(op));
    if (c.too_many) {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kWait, "resource-constraint",
                                        "the blocklist is full"));
      co_return;
    }
    from->send(xmpp::make_iq_result(iq));
    push(from, block, jids);
    co_await presence_change(from, block, c.changed);
  }

  // §3.3/§3.4: the change goes to every resource that asked for the blocklist.
  void push(const SessionPtr& from, bool block, const std::vector<std::string>& jids) {
    xml::Element iq("iq", ns::kClient);
    iq.set_attr("type", "set");
    xml::Element& op = iq.add_child(block ? "block" : "unblock", std::string(kBlockingNs));
    for (const auto& j : jids) op.add_child("item", std::string(kBlockingNs)).set_attr("jid", j);
    for (const auto& r : server_->resources_of(from->jid().bare_str())) {
      if ((r.flags & kBlocklistWanted) == 0 || r.session->closed()) continue;
      iq.set_attr("to", r.session->jid_str());
      iq.set_attr("id", "block-push-" + std::to_string(++push_id_));
      r.session->send(iq);
    }
  }

  // §3.3: on block, the blocked contacts that may see the user's presence get unavailable from
  // each of its resources, and the user's resources get unavailable from theirs (they are
  // hidden both ways); §3.4: on unblock, the current presence, where nothing else still blocks.
  awaitable<void> presence_change(const SessionPtr& from, bool block,
                                  const std::vector<std::string>& changed) {
    if (changed.empty()) co_return;
    const std::string user = from->username();
    auto op = [user](store::Store& st) { return st.roster(user); };
    auto roster = co_await server_->db(std::move(op));
    const std::unordered_set<std::string> changed_set(changed.begin(), changed.end());
    const std::string self_bare = from->jid().bare_str();
    const auto me = xmpp::Jid::parse(self_bare);
    for (const auto& item : roster) {
      auto contact = xmpp::Jid::parse(item.jid);
      if (!contact || !server_->is_local(*contact) || contact->local().empty()) continue;
      if (!Blocklists::matches(changed_set, *contact)) continue;
      if (!block && lists_.blocked_either_way(*me, *contact)) continue;
      const std::string contact_bare = contact->bare_str();
      const bool they_see_me = item.state.sub == xmpp::Subscription::kFrom ||
                               item.state.sub == xmpp::Subscription::kBoth;
      const bool i_see_them =
          item.state.sub == xmpp::Subscription::kTo || item.state.sub == xmpp::Subscription::kBoth;
      if (they_see_me) exchange(self_bare, contact_bare, block);
      if (i_see_them) exchange(contact_bare, self_bare, block);
    }
  }

  // The presence of each available resource of `who` to each available resource of `to`:
  // unavailable (`hide`) or the current one.
  void exchange(const std::string& who, const std::string& to, bool hide) {
    std::vector<SessionPtr> targets;
    for (auto& r : server_->resources_of(to)) {
      if (r.available && !r.session->closed()) targets.push_back(r.session);
    }
    if (targets.empty()) return;
    for (const auto& r : server_->resources_of(who)) {
      if (!r.available) continue;
      xml::Element p = !hide && r.presence ? *r.presence : xml::Element("presence", ns::kClient);
      if (hide) p.set_attr("type", "unavailable");
      p.set_attr("from", r.session->jid_str());
      p.set_attr("to", to);
      const std::string bytes = xml::serialize(p, ns::kClient);
      for (const auto& t : targets) t->send_raw(bytes);
    }
  }

  Server* server_ = nullptr;
  Blocklists lists_;
  std::atomic<std::uint64_t> push_id_{0};
};

}  // namespace

std::unique_ptr<Module> make_blocking_module() { return std::make_unique<BlockingModule>(); }

}  // namespace kabar::server
