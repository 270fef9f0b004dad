// Push notifications (XEP-0357, urn:xmpp:push:0): a client enables publishing to a node of its
// app server's push service (§5), and while the device is away kabard publishes a
// `<notification/>` with the urn:xmpp:push:summary form there (§7). See push.h for when.
#include "server/modules/push/push.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "server/c2s_session.h"
#include "server/features.h"
#include "xml/serializer.h"
#include "xml/stream_parser.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

namespace kabar::server {

namespace push {  // a name of its own: the unity build puts several modules in one unit

namespace ns = xmpp::ns;

namespace {

constexpr std::string_view kPubsubNs = "http://jabber.org/protocol/pubsub";
constexpr std::string_view kPublishOptions = "http://jabber.org/protocol/pubsub#publish-options";
constexpr std::string_view kSummary = "urn:xmpp:push:summary";
// Ids of the publish requests kabard sends (their answers come back as IQs to the domain).
constexpr std::string_view kIdPrefix = "kabar-push-";
// Registrations one account keeps: enabling one more lets the oldest go (devices come and go,
// and an app reinstalled gets a new node; Prosody keeps 5).
constexpr std::size_t kMaxRegistrations = 10;
// A serialized publish-options form larger than this is refused (it goes out with every
// notification).
constexpr std::size_t kMaxOptionsBytes = 4096;
// A publish request unanswered this long is forgotten.
constexpr std::int64_t kPendingMs = 5 * 60 * 1000;

using Key = std::pair<std::string, std::string>;  // push service JID, node

// Per session: the registrations this resource enabled (a hibernating session's notifications
// go to these), and whether it is counted as hibernating. Moves with a resumed session.
struct PushSession {
  std::vector<Key> enabled;
  bool hibernating = false;
};

// Whether a message warrants waking the device (§7 leaves it to the server): one with a body,
// or encrypted content whose body the server cannot see, or a call proposal (XEP-0353); not
// groupchat, headlines or errors, nor chat states, receipts and markers alone.
bool push_worthy(const xml::Element& m) {
  const std::string_view type = m.attr("type");
  if (type == "groupchat" || type == "headline" || type == "error") return false;
  if (const xml::Element* body = m.child("body", ns::kClient); body && !body->text().empty()) {
    return true;
  }
  for (const xml::Element* c : m.children()) {
    const std::string& x = c->xmlns();
    if (x == "eu.siacs.conversations.axolotl" || x == "urn:xmpp:omemo:2" ||
        x == "jabber:x:encrypted" || x == "urn:xmpp:openpgp:0") {
      return true;
    }
    if (c->name() == "propose" && x == "urn:xmpp:jingle-message:0") return true;
  }
  return false;
}

// Parses a form kabard serialized (the stored publish-options) back into an element.
class FormReader final : public xml::StreamHandler {
 public:
  void on_stream_open(const xml::Element&, std::string_view) override {}
  void on_element(xml::Element&& e) override { got = std::move(e); }
  void on_stream_close() override {}
  std::optional<xml::Element> got;
};

// Parses one element kabard serialized (a stored publish-options form, a stanza it queued for a
// client) back; nothing when it does not parse.
std::optional<xml::Element> parse_one(std::string_view bytes) {
  FormReader reader;
  xml::StreamLimits limits;
  limits.max_stanza_bytes = std::size_t{1} << 30;  // whatever size was allowed when it came
  xml::StreamParser parser(reader, limits);
  if (parser.feed("<s xmlns='jabber:client'>").status != xml::StreamParser::Status::kOk ||
      parser.feed(bytes).status != xml::StreamParser::Status::kOk) {
    return std::nullopt;
  }
  return std::move(reader.got);
}

void add_field(xml::Element& form, std::string_view var, std::string_view value) {
  xml::Element& f = form.add_child("field", ns::kDataForms);
  f.set_attr("var", var);
  f.add_child("value", ns::kDataForms).add_text(value);
}

// The value of a form's FORM_TYPE field ("" if none).
std::string form_type(const xml::Element& form) {
  for (const xml::Element* f : form.children("field", ns::kDataForms)) {
    if (f->attr("var") == "FORM_TYPE") {
      if (const xml::Element* v = f->child("value", ns::kDataForms)) return v->text();
    }
  }
  return {};
}

xml::Element error(const xml::Element& iq, xmpp::ErrorType type, std::string_view condition,
                   std::string_view text = {}) {
  return xmpp::make_error_reply(iq, type, condition, text);
}

class PushModule final : public Module, public PushView {
 public:
  std::string_view name() const override { return "push"; }

  void setup(ModuleContext& ctx) override {
    s_ = &ctx.server();
    include_body_ = ctx.config().push_include_body;
    include_sender_ = ctx.config().push_include_sender;
    interval_ms_ = std::int64_t{ctx.config().push_min_interval_s} * 1000;
    ctx.provide<PushView>(*this);
    // §4: the user's server announces the feature on the account's bare JID.
    ctx.disco_feature(std::string(kPushNs), kToAccount);
    ctx.iq(
        std::string(kPushNs),
        [this](SessionPtr from, xml::Element iq) -> awaitable<void> {
          co_await handle_iq(std::move(from), std::move(iq));
        },
        kIqSet, kToServerOrAccount);
    // Offline: before the offline module stores the message (it stops the hooks then).
    ctx.hook(
        Hook::kMessageUndelivered,
        [this](SessionPtr, xml::Element& m) -> awaitable<HookResult> {
          co_await undelivered(m);
          co_return HookResult::kContinue;
        },
        -10);
    // Hibernating: after every other hook (blocking may refuse the message, the archive gives
    // it its id), just before the router queues it.
    ctx.hook(
        Hook::kMessageIn,
        [this](SessionPtr, xml::Element& m) -> awaitable<HookResult> {
          co_await incoming(m);
          co_return HookResult::kContinue;
        },
        1000);
    // The push services' answers to our publish requests (IQs to the domain).
    ctx.hook(
        Hook::kIqOut,
        [this](SessionPtr from, xml::Element& iq) -> awaitable<HookResult> {
          const std::string_view type = iq.attr("type");
          if ((type != "result" && type != "error") || !iq.attr("id").starts_with(kIdPrefix) ||
              (iq.has_attr("to") && iq.attr("to") != s_->config().domain)) {
            co_return HookResult::kContinue;
          }
          co_await answered(*from, iq);
          co_return HookResult::kStop;
        },
        40);
    ctx.on(SessionEvent::kDetached,
           [this](SessionPtr s) -> awaitable<void> { co_await detached(*s); });
    ctx.on(SessionEvent::kResumed, [this](SessionPtr s) -> awaitable<void> {
      back(*s);
      co_return;
    });
    ctx.on(SessionEvent::kAvailable, [this](SessionPtr s) -> awaitable<void> {
      back(*s);
      co_return;
    });
    ctx.on(SessionEvent::kClosed, [this](SessionPtr s) -> awaitable<void> {
      PushSession& ps = s->ext<PushSession>();
      if (ps.hibernating) {
        ps.hibernating = false;
        std::lock_guard lock(mu_);
        drop_hibernating(s->username(), s->jid_str());
      }
      co_return;
    });
  }

  // The registrations are loaded at start (before any client can have sent a stanza); a server
  // never started (unit tests) loads them on the first hook or request that needs them.
  void start(ModuleContext& ctx) override {
    asio::co_spawn(ctx.server().io(), load(), asio::detached);
  }

  // PushView: on the store's thread, in the operation that deleted the account.
  void forget(const std::string& user) override {
    std::lock_guard lock(mu_);
    regs_.erase(user);
    bursts_.erase(user);
  }

 private:
  struct Burst {
    std::int64_t last_sent_ms = 0;  // 0: nothing sent since the account was last back
    std::uint64_t count = 0;        // push-worthy messages since then
  };
  struct Hibernating {
    std::string full_jid;
    std::vector<Key> keys;
  };
  struct Pending {
    std::string user;
    Key key;
    std::int64_t sent_ms = 0;
  };
  struct Publish {
    xml::Element iq;
    store::PushRegistration reg;
  };

  awaitable<void> load() {
    if (loaded_.load(std::memory_order_acquire)) co_return;
    PushModule* self = this;
    auto op = [self](store::Store& st) {
      if (self->loaded_.load(std::memory_order_acquire)) return true;
      auto all = st.all_push_registrations();
      std::lock_guard lock(self->mu_);
      for (auto& [user, regs] : all) self->regs_[user] = std::move(regs);
      self->loaded_.store(true, std::memory_order_release);
      return true;
    };
    co_await s_->db(std::move(op));
  }

  // --- Enabling and disabling (§5, §6).

  awaitable<void> handle_iq(SessionPtr from, xml::Element iq) {
    const std::string own = from->jid().bare_str();
    if (iq.has_attr("to")) {
      // To the server or to the user's own bare JID (§5: the account's); not someone else's.
      auto to = xmpp::Jid::parse(iq.attr("to"));
      if (to && !to->is_domain() && to->bare_str() != own) {
        from->send(error(iq, xmpp::ErrorType::kAuth, "forbidden"));
        co_return;
      }
    }
    const xml::Element* req = iq.first_child();
    if (req == nullptr || (req->name() != "enable" && req->name() != "disable")) {
      from->send(error(iq, xmpp::ErrorType::kModify, "bad-request"));
      co_return;
    }
    const bool enable = req->name() == "enable";
    // §5, §6: 'jid' is required.
    if (req->attr("jid").empty()) {
      from->send(error(iq, xmpp::ErrorType::kModify, "bad-request", "'jid' is required"));
      co_return;
    }
    auto service = xmpp::Jid::parse(req->attr("jid"));
    if (!service) {
      from->send(error(iq, xmpp::ErrorType::kModify, "jid-malformed"));
      co_return;
    }
    std::string node(req->attr("node"));
    co_await load();
    if (!enable) {
      const bool every_node = !req->has_attr("node");
      co_await disable(std::move(from), iq, service->str(), std::move(node), every_node);
      co_return;
    }
    // The schema (§11) requires 'node', and a XEP-0060 publish needs one.
    if (node.empty()) {
      from->send(error(iq, xmpp::ErrorType::kModify, "bad-request", "'node' is required"));
      co_return;
    }
    if (service->bare_str() == own) {
      from->send(error(iq, xmpp::ErrorType::kModify, "bad-request",
                       "the push service cannot be the account itself"));
      co_return;
    }
    store::PushRegistration reg;
    reg.jid = service->str();
    reg.node = node;
    reg.created_ms = s_->now_ms();
    // §5: publish options come as a form of FORM_TYPE pubsub#publish-options.
    if (const xml::Element* x = req->child("x", ns::kDataForms)) {
      if (form_type(*x) != kPublishOptions ||
          (x->has_attr("type") && x->attr("type") != "submit")) {
        from->send(error(
            iq, xmpp::ErrorType::kModify, "bad-request",
            "publish options are a submitted form of FORM_TYPE " + std::string(kPublishOptions)));
        co_return;
      }
      reg.options = xml::serialize(*x, ns::kClient);
      if (reg.options.size() > kMaxOptionsBytes) {
        from->send(
            error(iq, xmpp::ErrorType::kModify, "not-acceptable", "publish options too large"));
        co_return;
      }
    }
    const std::string user = from->username();
    PushModule* self = this;
    auto op = [self, user, reg](store::Store& st) {
      st.put_push_registration(user, reg);
      auto regs = st.push_registrations(user);
      // The oldest go beyond the cap (never the one just enabled: it is the newest).
      while (regs.size() > kMaxRegistrations) {
        auto oldest = std::min_element(regs.begin(), regs.end(), [](const auto& a, const auto& b) {
          return a.created_ms < b.created_ms;
        });
        st.delete_push_registrations(user, oldest->jid, oldest->node);
        regs.erase(oldest);
      }
      std::lock_guard lock(self->mu_);
      self->regs_[user] = std::move(regs);
    };
    co_await s_->db(std::move(op));
    // Tied to this resource: its hibernation notifies this registration (mod_cloud_notify
    // does the same).
    auto& mine = from->ext<PushSession>().enabled;
    const Key key{reg.jid, reg.node};
    if (std::find(mine.begin(), mine.end(), key) == mine.end()) mine.push_back(key);
    spdlog::info("push: {} enabled notifications to {} node {}", from->jid_str(), reg.jid,
                 reg.node);
    from->send(xmpp::make_iq_result(iq));
  }

  // Strings and a flag as coroutine parameters, no std::optional<std::string>: with GCC 12 the
  // destruction of such a parameter freed a garbage pointer.
  awaitable<void> disable(SessionPtr from, const xml::Element& iq, std::string jid,
                          std::string node, bool every_node) {
    const std::string user = from->username();
    co_await remove(user, jid, node, every_node);
    // §6: without 'node', every registration of the service goes.
    std::erase_if(from->ext<PushSession>().enabled,
                  [&](const Key& k) { return k.first == jid && (every_node || k.second == node); });
    spdlog::info("push: {} disabled notifications to {}", from->jid_str(), jid);
    from->send(xmpp::make_iq_result(iq));
  }

  awaitable<void> remove(std::string user, std::string jid, std::string node, bool every_node) {
    PushModule* self = this;
    auto op = [self, user, jid, node, every_node](store::Store& st) {
      st.delete_push_registrations(
          user, jid, every_node ? std::nullopt : std::optional<std::string_view>(node));
      auto regs = st.push_registrations(user);
      std::lock_guard lock(self->mu_);
      if (regs.empty()) {
        self->regs_.erase(user);
      } else {
        self->regs_[user] = std::move(regs);
      }
      if (auto b = self->bursts_.find(user); b != self->bursts_.end()) {
        std::erase_if(b->second, [&](const auto& kv) {
          return kv.first.first == jid && (every_node || kv.first.second == node);
        });
      }
    };
    co_await s_->db(std::move(op));
  }

  // --- When a notification is due (§7).

  // A message no resource can take (the offline module stores it next): every registration of
  // the account, except those of a hibernating session (it is ending: these are its
  // unacknowledged messages routed again, and it was notified of them while it waited).
  awaitable<void> undelivered(const xml::Element& m) {
    if (!push_worthy(m)) co_return;
    auto to = xmpp::Jid::parse(m.attr("to"));
    if (!to || to->local().empty()) co_return;
    co_await load();
    std::vector<Publish> out;
    {
      std::lock_guard lock(mu_);
      auto it = regs_.find(to->local());
      if (it == regs_.end()) co_return;
      std::vector<Key> except;
      if (auto h = hibernating_.find(to->local()); h != hibernating_.end()) {
        for (const auto& e : h->second) except.insert(except.end(), e.keys.begin(), e.keys.end());
      }
      for (const auto& reg : it->second) {
        const Key key{reg.jid, reg.node};
        if (std::find(except.begin(), except.end(), key) != except.end()) continue;
        due(to->local(), reg, m, out);
      }
    }
    co_await publish(to->local(), std::move(out));
  }

  // A message to an account with a hibernating push session: the registrations of the
  // hibernating sessions it is routed to.
  awaitable<void> incoming(const xml::Element& m) {
    auto to = xmpp::Jid::parse(m.attr("to"));
    if (!to || to->local().empty() || !s_->is_local(*to)) co_return;
    if ((s_->account_flags(to->local()) & kPushHibernating) == 0) co_return;
    if (!push_worthy(m)) co_return;
    // Where the router will queue it (RFC 6121 §8.5): the bound resource it names, else the
    // account's available resources of the highest priority.
    std::vector<std::string> targets;
    if (!to->is_bare()) {
      if (auto s = s_->bound_session(*to)) targets.push_back(s->jid_str());
    }
    if (targets.empty()) {
      std::string_view type = m.attr("type");
      for (const auto& s : s_->message_targets(*to, type.empty() ? "normal" : type)) {
        targets.push_back(s->jid_str());
      }
    }
    std::vector<Publish> out;
    {
      std::lock_guard lock(mu_);
      auto h = hibernating_.find(to->local());
      auto r = regs_.find(to->local());
      if (h == hibernating_.end() || r == regs_.end()) co_return;
      std::vector<Key> keys;
      for (const auto& e : h->second) {
        if (std::find(targets.begin(), targets.end(), e.full_jid) == targets.end()) continue;
        keys.insert(keys.end(), e.keys.begin(), e.keys.end());
      }
      for (const auto& reg : r->second) {
        if (std::find(keys.begin(), keys.end(), Key{reg.jid, reg.node}) != keys.end()) {
          due(to->local(), reg, m, out);
        }
      }
    }
    co_await publish(to->local(), std::move(out));
  }

  // Counts the message for `reg` and, unless it was notified less than the interval ago while
  // the device stayed away, makes the notification (under mu_).
  void due(const std::string& user, const store::PushRegistration& reg, const xml::Element& m,
           std::vector<Publish>& out) {
    Burst& b = bursts_[user][Key{reg.jid, reg.node}];
    ++b.count;
    const std::int64_t now = s_->now_ms();
    if (b.last_sent_ms != 0 && now - b.last_sent_ms < interval_ms_) return;
    b.last_sent_ms = now;
    out.push_back({notification(reg, m, b.count), reg});
  }

  // §7: a publish of <notification/> with the summary form, and the registration's publish
  // options.
  xml::Element notification(const store::PushRegistration& reg, const xml::Element& m,
                            std::uint64_t count) {
    xml::Element iq("iq", ns::kClient);
    iq.set_attr("type", "set");
    iq.set_attr("from", s_->config().domain);  // §7 (0.3): the server's JID
    iq.set_attr("to", reg.jid);
    xml::Element& pubsub = iq.add_child("pubsub", std::string(kPubsubNs));
    xml::Element& publish = pubsub.add_child("publish", std::string(kPubsubNs));
    publish.set_attr("node", reg.node);
    xml::Element& item = publish.add_child("item", std::string(kPubsubNs));
    xml::Element& n = item.add_child("notification", std::string(kPushNs));
    xml::Element& form = n.add_child("x", ns::kDataForms);
    form.set_attr("type", "submit");
    add_field(form, "FORM_TYPE", kSummary);
    add_field(form, "message-count", std::to_string(count));
    if (include_sender_ && m.has_attr("from"))
      add_field(form, "last-message-sender", m.attr("from"));
    // §10: the body passes through third parties; only when the operator allows it.
    if (include_body_) {
      if (const xml::Element* body = m.child("body", ns::kClient); body && !body->text().empty()) {
        add_field(form, "last-message-body", body->text());
      }
    }
    if (!reg.options.empty()) {
      if (auto options = parse_one(reg.options)) {
        pubsub.add_child("publish-options", std::string(kPubsubNs)).add_child(std::move(*options));
      }
    }
    return iq;
  }

  // Sends the notifications. kabard has no server-to-server links: a push service on another
  // domain is not reached (its registration is kept for when it can be); one at a local full
  // JID gets the request in its session; any other local JID has no push service to answer,
  // which counts as the error it would return (§8: the registration goes).
  awaitable<void> publish(const std::string& user, std::vector<Publish> out) {
    for (auto& p : out) {
      auto to = xmpp::Jid::parse(p.reg.jid);
      if (!to) continue;
      if (!s_->is_local(*to)) {
        spdlog::debug("push: {} is remote and kabard has no s2s: not notified", p.reg.jid);
        continue;
      }
      SessionPtr target = to->is_bare() ? nullptr : s_->bound_session(*to);
      if (!target) {
        spdlog::info("push: {} node {} of {} unreachable: registration disabled", p.reg.jid,
                     p.reg.node, user);
        co_await remove(user, p.reg.jid, p.reg.node, false);
        continue;
      }
      {
        std::lock_guard lock(mu_);
        const std::int64_t now = s_->now_ms();
        if (pending_.size() > 1000) {
          std::erase_if(pending_,
                        [now](const auto& kv) { return now - kv.second.sent_ms > kPendingMs; });
        }
        std::string id = std::string(kIdPrefix) + std::to_string(++next_id_);
        p.iq.set_attr("id", id);
        pending_[id] = Pending{user, Key{p.reg.jid, p.reg.node}, now};
      }
      Server::send_to(target, p.iq);
    }
  }

  // §8: an error answer disables the registration, unless it is of type 'wait' (transient).
  awaitable<void> answered(const C2sSession& from, const xml::Element& iq) {
    Pending p;
    {
      std::lock_guard lock(mu_);
      auto it = pending_.find(std::string(iq.attr("id")));
      // Only the push service it went to answers it.
      if (it == pending_.end() || it->second.key.first != from.jid_str()) co_return;
      p = std::move(it->second);
      pending_.erase(it);
    }
    if (iq.attr("type") == "result") co_return;
    const xml::Element* err = iq.child("error", ns::kClient);
    if (err != nullptr && err->attr("type") == "wait") co_return;
    spdlog::info("push: {} node {} answered an error: notifications for {} disabled", p.key.first,
                 p.key.second, p.user);
    co_await remove(p.user, p.key.first, p.key.second, false);
  }

  // --- Hibernation (XEP-0198 detached sessions).

  // On the session's shard. What it had queued and the client never acknowledged counts as
  // arriving now: a connection that died unnoticed took messages the device may never have
  // seen, and the session only detaches once the server notices (mod_cloud_notify does the
  // same with the XEP-0198 queue at hibernation).
  awaitable<void> detached(C2sSession& s) {
    PushSession& ps = s.ext<PushSession>();
    if (ps.enabled.empty() || ps.hibernating) co_return;
    std::vector<xml::Element> unacked;
    s.out_queue().visit_unacked([&unacked](const OutQueue::Entry& e) {
      std::string bytes;
      bytes.reserve(e.size());
      if (e.head) bytes += *e.head;
      bytes += e.own;
      if (e.tail) bytes += *e.tail;
      if (!bytes.starts_with("<message")) return;
      if (auto m = parse_one(bytes); m && push_worthy(*m)) unacked.push_back(std::move(*m));
    });
    std::vector<Publish> out;
    {
      std::lock_guard lock(mu_);
      hibernating_[s.username()].push_back({s.jid_str(), ps.enabled});
      ps.hibernating = true;
      s_->set_account_flags(s.username(), kPushHibernating, true);
      auto r = regs_.find(s.username());
      if (r != regs_.end()) {
        for (const auto& reg : r->second) {
          if (std::find(ps.enabled.begin(), ps.enabled.end(), Key{reg.jid, reg.node}) ==
              ps.enabled.end()) {
            continue;
          }
          for (const auto& m : unacked) due(s.username(), reg, m, out);
        }
      }
    }
    co_await publish(s.username(), std::move(out));
  }

  // The account is back (a resource available, a session resumed): the next message away
  // notifies at once again.
  void back(C2sSession& s) {
    PushSession& ps = s.ext<PushSession>();
    std::lock_guard lock(mu_);
    if (ps.hibernating) {
      ps.hibernating = false;
      drop_hibernating(s.username(), s.jid_str());
    }
    bursts_.erase(s.username());
  }

  // Under mu_.
  void drop_hibernating(const std::string& user, const std::string& full_jid) {
    auto it = hibernating_.find(user);
    if (it == hibernating_.end()) return;
    std::erase_if(it->second, [&](const Hibernating& h) { return h.full_jid == full_jid; });
    if (it->second.empty()) {
      hibernating_.erase(it);
      s_->set_account_flags(user, kPushHibernating, false);
    }
  }

  Server* s_ = nullptr;
  bool include_body_ = false;
  bool include_sender_ = true;
  std::int64_t interval_ms_ = 0;
  std::atomic<bool> loaded_{false};
  // Shared by every shard (hooks run on the sender's); registrations change on the store's
  // thread, in the operation that changes the store.
  std::mutex mu_;
  std::unordered_map<std::string, std::vector<store::PushRegistration>> regs_;  // by username
  std::unordered_map<std::string, std::map<Key, Burst>> bursts_;                // by username
  std::unordered_map<std::string, std::vector<Hibernating>> hibernating_;       // by username
  std::unordered_map<std::string, Pending> pending_;                            // by IQ id
  std::uint64_t next_id_ = 0;
};

}  // namespace

}  // namespace push

std::unique_ptr<Module> make_push_module() { return std::make_unique<push::PushModule>(); }

}  // namespace kabar::server
