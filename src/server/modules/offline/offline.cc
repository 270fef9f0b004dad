// Offline messages (XEP-0160): stored in arrival order with a XEP-0203 delay stamp, delivered on
// the next available presence with non-negative priority, and deleted only once written to the
// connection (a connection that breaks first keeps them).
#include <spdlog/spdlog.h>

#include "server/c2s_session.h"
#include "server/features.h"
#include "xml/serializer.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

namespace kabar::server {

namespace ns = xmpp::ns;

namespace {

constexpr std::string_view kHints = "urn:xmpp:hints";  // XEP-0334

// Payloads that only say something about the moment they were sent: a chat state (XEP-0085), a
// delivery receipt (XEP-0184), a displayed marker (XEP-0333), and what travels with them (the
// thread, stanza ids, processing hints). Delivered a day later they would be wrong ("is typing").
bool is_momentary(const xml::Element& child) {
  const std::string& x = child.xmlns();
  return x == "http://jabber.org/protocol/chatstates" || x == "urn:xmpp:receipts" ||
         x == "urn:xmpp:chat-markers:0" || x == "urn:xmpp:sid:0" || x == kHints ||
         child.is("thread", ns::kClient);
}

// Whether a message for an account with no available resource goes into its offline queue.
bool worth_storing(const xml::Element& message) {
  // XEP-0334 §4: <no-store/> asks that the message not be stored at all; <no-permanent-store/>
  // is handled the same way for offline storage, as Prosody does for its archive.
  if (message.child("no-store", kHints) != nullptr ||
      message.child("no-permanent-store", kHints) != nullptr) {
    return false;
  }
  // XEP-0334 §4: <store/> asks for storage whatever the payload.
  if (message.child("store", kHints) != nullptr) return true;
  // XEP-0160 §3: chat messages are stored "with the exception of messages that contain only
  // XEP-0085 content"; XEP-0085 §8: servers SHOULD NOT store standalone notifications offline.
  // Receipts and markers alone are notifications of the same kind. Anything else (a body, a
  // subject, encrypted content, an invitation) is stored.
  for (const xml::Element* child : message.children()) {
    if (!is_momentary(*child)) return true;
  }
  return false;
}

}  // namespace

// True when the message was taken care of: stored, or dropped on purpose without an error (RFC
// 6121 §8.5.2.2.1 lets the server silently ignore a message it does not store; a sender is not
// told that its "is typing" went nowhere). False when the account does not exist or its queue is
// full: the caller bounces the message.
awaitable<bool> store_offline(Server& s, const std::string& user, const xml::Element& message) {
  const bool keep = worth_storing(message);
  std::int64_t now = s.now_ms();
  std::string bytes;
  if (keep) {
    xml::Element copy = message;
    xmpp::add_delay(copy, s.config().domain, now, "Offline Storage");
    bytes = xml::serialize(copy, ns::kClient);
  }
  std::size_t limit = s.config().offline_limit;
  auto op = [user, bytes, now, limit, keep](store::Store& st) -> std::optional<std::int64_t> {
    if (!st.account(user)) return std::nullopt;
    if (!keep) return 0;
    return st.push_offline(user, bytes, now, limit);
  };
  auto id = co_await s.db(std::move(op));
  co_return id.has_value();
}

awaitable<void> deliver_offline(Server& s, SessionPtr to) {
  const std::string user = to->username();
  auto op2 = [user](store::Store& st) { return st.offline_messages(user); };
  auto messages = co_await s.db(std::move(op2));
  if (messages.empty() || to->closed()) co_return;
  struct Pending {
    std::vector<std::int64_t> written;
    std::size_t total = 0;
  };
  auto pending = std::make_shared<Pending>();
  pending->total = messages.size();
  Server* server = &s;
  asio::io_context* io = to->shard().io;  // the callbacks run on the session's shard
  for (auto& m : messages) {
    std::int64_t id = m.id;
    to->send_raw(std::move(m.stanza), [server, io, pending, id, user]() {
      pending->written.push_back(id);
      if (pending->written.size() != pending->total) return;
      asio::co_spawn(
          *io,
          [server, pending, user]() -> awaitable<void> {
            auto ids = pending->written;
            auto op3 = [user, ids](store::Store& st) { st.delete_offline(user, ids); };
            co_await server->db(std::move(op3));
          },
          [](std::exception_ptr e) {
            if (e) spdlog::error("deleting delivered offline messages failed");
          });
    });
  }
  spdlog::info("offline: delivering {} stored messages to {}", messages.size(), to->jid().str());
}

namespace {

class OfflineModule final : public Module {
 public:
  std::string_view name() const override { return "offline"; }

  void setup(ModuleContext& ctx) override {
    Server& s = ctx.server();
    ctx.disco_feature(ns::kOffline);
    // A message no resource can take now is stored if the account exists and has room; if not,
    // the router bounces it (service-unavailable).
    ctx.hook(Hook::kMessageUndelivered,
             [&s](SessionPtr, xml::Element& message) -> awaitable<HookResult> {
               auto to = xmpp::Jid::parse(message.attr("to"));
               if (!to || to->local().empty()) co_return HookResult::kContinue;
               const bool stored = co_await store_offline(s, to->local(), message);
               co_return stored ? HookResult::kStop : HookResult::kContinue;
             });
    // XEP-0160: stored messages go to the first resource with non-negative priority.
    ctx.on(SessionEvent::kAvailable, [&s](SessionPtr to) -> awaitable<void> {
      if (to->priority >= 0) co_await deliver_offline(s, std::move(to));
    });
  }
};

}  // namespace

std::unique_ptr<Module> make_offline_module() { return std::make_unique<OfflineModule>(); }

}  // namespace kabar::server
