// Offline messages (XEP-0160): stored in arrival order with a XEP-0203 delay stamp, delivered on
// the next available presence with non-negative priority, and deleted only once written to the
// connection (a connection that breaks first keeps them).
//
// Delivery is paced by what the connection drains: one batch of about kBatchBytes is queued, and
// the next is read from the store only once the session has written the last stanza of the one
// before (its on_written callback). A queue of any size thus arrives without ever holding more
// than a batch in the session's output, whose cap (c2s_session.cc) drops a client that does not
// read. Each message is deleted once its delivery is certain (written, or acknowledged with
// XEP-0198), through the message log's group commit (store/message_log.h), so that an answered
// <r/> after the client's <a/> means the deletions are committed; a session that ends
// mid-delivery keeps the rest.
//
// Limits per recipient (messages and bytes) and per sender keep one sender from filling someone's
// queue; a message past them is bounced to its sender with <resource-constraint/>.
#include <spdlog/spdlog.h>

#include <memory>
#include <utility>
#include <vector>

#include "server/c2s_session.h"
#include "server/features.h"
#include "xml/serializer.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

namespace kabar::server {

namespace ns = xmpp::ns;

namespace {

constexpr std::string_view kHints = "urn:xmpp:hints";  // XEP-0334

// One delivery batch: this many bytes of stanzas (the last one may pass it), at most this many
// messages. Well under the session's 4 MiB output cap, even with a maximal stanza past it.
constexpr std::size_t kBatchBytes = 256 * 1024;
constexpr std::size_t kBatchMessages = 256;

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

store::OfflineLimits offline_limits(const Config& cfg) {
  store::OfflineLimits limits;
  limits.messages = cfg.offline_limit;
  limits.bytes = cfg.offline_limit_bytes;
  limits.per_sender = cfg.offline_limit_per_sender;
  return limits;
}

// What store_message() did with a message.
enum class Stored {
  kYes,        // stored, or dropped on purpose without an error
  kNoAccount,  // no such account: the caller bounces it (service-unavailable)
  kFull,       // a limit of the recipient's queue: bounced with resource-constraint
  kSenderFull  // the sender's share of the recipient's queue is used up: the same
};

// RFC 6121 §8.5.2.2.1 lets the server silently ignore a message it does not store; a sender is
// not told that its "is typing" went nowhere.
awaitable<Stored> store_message(Server& s, const std::string& user, const xml::Element& message) {
  const bool keep = worth_storing(message);
  std::int64_t now = s.now_ms();
  std::string bytes;
  std::string sender;
  if (keep) {
    xml::Element copy = message;
    xmpp::add_delay(copy, s.config().domain, now, "Offline Storage");
    bytes = xml::serialize(copy, ns::kClient);
    if (auto from = xmpp::Jid::parse(message.attr("from"))) sender = from->bare_str();
  }
  const store::OfflineLimits limits = offline_limits(s.config());
  auto op = [user, bytes, sender, now, limits, keep](store::Store& st) -> Stored {
    if (!st.account(user)) return Stored::kNoAccount;
    if (!keep) return Stored::kYes;
    switch (st.push_offline_from(user, sender, bytes, now, limits).full) {
      case store::OfflinePush::Full::kNone:
        return Stored::kYes;
      case store::OfflinePush::Full::kSender:
        return Stored::kSenderFull;
      case store::OfflinePush::Full::kMessages:
      case store::OfflinePush::Full::kBytes:
        break;
    }
    return Stored::kFull;
  };
  co_return co_await s.db(std::move(op));
}

}  // namespace

// True when the message was taken care of: stored, or dropped on purpose without an error.
// False when the account does not exist or a limit of its queue refused it.
awaitable<bool> store_offline(Server& s, const std::string& user, const xml::Element& message) {
  co_return co_await store_message(s, user, message) == Stored::kYes;
}

namespace {

// One delivery of an account's offline queue to one session, batch by batch. Owned by the
// on_written callbacks of the batch in the session's output (and by the coroutine reading the
// next batch): when the session drops them (its connection ended), the delivery ends with them.
struct OfflineDelivery {
  OfflineDelivery(Server& s, const SessionPtr& session)
      : server(s), to(session), user(session->username()), io(session->shard().io) {}
  OfflineDelivery(const OfflineDelivery&) = delete;
  OfflineDelivery& operator=(const OfflineDelivery&) = delete;
  Server& server;
  std::weak_ptr<C2sSession> to;  // not kept alive by its own callbacks
  std::string user;
  asio::io_context* io;    // the session's shard: callbacks and batches run there
  std::int64_t after = 0;  // the last id queued
  std::size_t delivered = 0;
};

// Per session: the delivery under way, so that a second initial presence (after an unavailable
// one) does not start another beside it.
struct OfflineState {
  std::weak_ptr<OfflineDelivery> delivery;
};

awaitable<void> next_batch(std::shared_ptr<OfflineDelivery> d);

void spawn_next_batch(const std::shared_ptr<OfflineDelivery>& d) {
  asio::co_spawn(*d->io, next_batch(d), [](std::exception_ptr e) {
    if (e) spdlog::error("offline: delivering stored messages failed");
  });
}

awaitable<void> next_batch(std::shared_ptr<OfflineDelivery> d) {
  const std::string user = d->user;
  SessionPtr to = d->to.lock();
  if (!to || to->closed()) co_return;  // the rest stays stored
  to.reset();
  const std::int64_t after = d->after;
  auto read = [user, after](store::Store& st) {
    return st.offline_page(user, after, kBatchMessages, kBatchBytes);
  };
  auto page = co_await d->server.db(std::move(read));
  to = d->to.lock();
  if (!to || to->closed()) co_return;
  if (page.empty()) {
    if (d->delivered > 0) {
      spdlog::info("offline: delivered {} stored messages to {}", d->delivered, to->jid().str());
    }
    co_return;
  }
  d->after = page.back().id;
  for (std::size_t i = 0; i < page.size(); ++i) {
    const bool last = i + 1 == page.size();
    // Written in order: when the last one's callback runs, the whole batch is out. The next
    // batch is read then, not from inside the session's flush.
    to->send_raw(std::move(page[i].stanza), [d, id = page[i].id, last] {
      d->server.delete_delivered_offline(d->user, id);
      ++d->delivered;
      if (last) spawn_next_batch(d);
    });
  }
  // With stream management the callbacks wait for the client's ack: asked for at once, so the
  // next batch does not wait for the periodic request.
  to->ask_for_ack();
}

}  // namespace

awaitable<void> deliver_offline(Server& s, SessionPtr to) {
  auto& state = to->ext<OfflineState>();
  if (state.delivery.lock()) co_return;  // already under way on this session
  auto d = std::make_shared<OfflineDelivery>(s, to);
  state.delivery = d;
  co_await next_batch(std::move(d));
}

namespace {

class OfflineModule final : public Module {
 public:
  std::string_view name() const override { return "offline"; }

  void setup(ModuleContext& ctx) override {
    Server& s = ctx.server();
    ctx.disco_feature(ns::kOffline);
    // A message no resource can take now is stored if the account exists and has room. No
    // account: the router bounces it (service-unavailable). No room: bounced here.
    ctx.hook(Hook::kMessageUndelivered,
             [&s](SessionPtr, xml::Element& message) -> awaitable<HookResult> {
               auto to = xmpp::Jid::parse(message.attr("to"));
               if (!to || to->local().empty()) co_return HookResult::kContinue;
               const Stored stored = co_await store_message(s, to->local(), message);
               if (stored == Stored::kYes) co_return HookResult::kStop;
               if (stored == Stored::kNoAccount) co_return HookResult::kContinue;
               // RFC 6120 §8.3.3.18: the server lacks the resources to store it, for now: type
               // 'wait' (the recipient's next login empties the queue). Never an error to an
               // error (§8.3.1); the router stores no errors, but a hook may see one.
               if (message.attr("type") == "error") co_return HookResult::kStop;
               xml::Element error = xmpp::make_error_reply(
                   message, xmpp::ErrorType::kWait, "resource-constraint",
                   stored == Stored::kSenderFull
                       ? "too many of your messages are waiting for this recipient"
                       : "the recipient's offline storage is full");
               co_await s.deliver(std::move(error));
               co_return HookResult::kStop;
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
