// The server: listeners, the session directory (router), storage threads, and the registry of
// the modules (modules/<feature>/, core/module.h) whose handlers and hooks the router runs.
//
// Threading (ARCHITECTURE.md): N shards, each an event loop on its own thread. A connection is
// handed to one shard when it is accepted and lives there for good; only that shard's thread
// touches its state. Sending to a session from another shard posts to its loop (C2sSession's
// send functions do it). What other shards need to read about a bound resource (available,
// priority, its presence, whether it asked for the roster) is published into the session
// directory, which sits behind one mutex held only for a lookup or a copy. The store runs on
// its own thread and resumes the caller on its own shard. The listeners accept on shard 0,
// whose loop is the one main() runs, and hand connections (client, HTTP, HTTPS) round robin to
// the shards; the proxy and the upload module live on shard 0.
#pragma once

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange
#include <vector>

#include "net/listener.h"
#include "net/shard.h"
#include "net/transport.h"
#include "server/auth_throttle.h"
#include "server/config.h"
#include "server/core/clock.h"
#include "server/core/cpu_pool.h"
#include "server/core/module.h"
#include "server/core/string_hash.h"
#include "server/unauthenticated.h"
#include "store/message_log.h"
#include "store/store.h"
#include "xml/element.h"
#include "xml/stream_parser.h"
#include "xmpp/jid.h"
#include "xmpp/scram.h"

namespace kabar::server {

namespace asio = boost::asio;
using asio::awaitable;

class C2sSession;
class HttpServer;

// A shard (net/shard.h) with the c2s sessions living on it.
struct Shard : net::Shard {
  // Touched only on this shard's thread:
  std::unordered_map<C2sSession*, std::weak_ptr<C2sSession>> sessions;
  std::size_t closed_since_trim = 0;  // sessions ended since the last malloc_trim()
};

// What the directory holds about a bound resource, copied out for readers on any shard.
struct ResourceView {
  SessionPtr session;
  bool available = false;  // has sent initial presence and not gone unavailable
  int priority = 0;
  std::uint32_t flags = 0;                       // ResourceFlag bits modules set
  std::shared_ptr<const xml::Element> presence;  // its last available presence, 'to' removed
};

// Flags modules keep in the session directory, where every shard can read them.
// Of one bound resource:
enum ResourceFlag : std::uint32_t {
  kRosterInterested = 1u << 0,  // asked for the roster: an "interested resource" (RFC 6121 §2.1.6)
  kCarbonsEnabled = 1u << 1,    // wants message carbons (XEP-0280, modules/carbons/)
  kBlocklistWanted = 1u << 2,   // asked for the blocklist: gets its pushes (XEP-0191 §3.3)
};
// Of a local account, by username (kept while any module wants them, online or not):
enum AccountFlag : std::uint32_t {
  // A module must see this account's messages, sent and received (carbons, the archive): they
  // take the full path with its hooks instead of the byte fast path. See instant_targets().
  kSeesMessages = 1u << 0,
  // The same, for one reason each, so that modules set and clear them independently: a resource
  // has message carbons on (modules/carbons/), the account blocks someone (modules/blocking/).
  kCarbonsUser = 1u << 1,
  kBlocksJids = 1u << 2,
  // A session of the account that enabled push notifications is detached (XEP-0198
  // hibernation): messages to it may need a notification (modules/push/).
  kPushHibernating = 1u << 3,
};
// Any of these sends an account's messages down the full path (instant_targets()).
inline constexpr std::uint32_t kFullMessagePath =
    kSeesMessages | kCarbonsUser | kBlocksJids | kPushHibernating;

// What a message tap reads of a message: its name, attributes and which children it has, from
// the parsed element or, on the byte path, from the parser's head of it.
class MessageView {
 public:
  explicit MessageView(const xml::Element& e) : element_(&e) {}
  explicit MessageView(const xml::ElementHead& h) : head_(&h) {}
  std::string_view name() const { return element_ ? element_->name() : head_->name(); }
  std::string_view attr(std::string_view name) const {
    return element_ ? element_->attr(name) : head_->attr(name);
  }
  bool has_child(std::string_view name, std::string_view xmlns) const {
    return element_ ? element_->child(name, xmlns) != nullptr : head_->has_child(name, xmlns);
  }

 private:
  const xml::Element* element_ = nullptr;
  const xml::ElementHead* head_ = nullptr;
};

class Server {
 public:
  Server(asio::io_context& io, Config cfg);
  ~Server();

  // Opens the store, prepares TLS and binds every listener; throws std::runtime_error with a
  // clear message on failure (port in use, bad certificate, unusable data directory).
  void start();
  // Stops accepting, closes every session (contacts get unavailable presence), flushes the store.
  void stop();

  const Config& config() const { return cfg_; }
  // Shard 0's loop: the listeners, HTTP, the proxy and process-wide timers run there.
  asio::io_context& io() { return io_; }
  std::size_t shard_count() const { return shards_.size(); }
  asio::ssl::context& tls() { return tls_; }
  AuthThrottle& throttle() { return throttle_; }
  // Connections not yet authenticated, capped in total and per address (unauthenticated.h).
  UnauthenticatedConnections& unauthenticated() { return unauth_; }
  // SCRAM-SHA-256 credentials of no account, derived like real ones at start: PLAIN checks an
  // unknown user's password against them, to take as long as a wrong password.
  const xmpp::ScramCredentials& unknown_user_credentials() const { return unknown_user_; }
  // Time and randomness for the server and its modules; tests put fixed ones in before start().
  const Clock& clock() const { return *clock_; }
  Random& random() { return *random_; }
  void set_clock(std::unique_ptr<Clock> c) { clock_ = std::move(c); }
  void set_random(std::unique_ptr<Random> r) { random_ = std::move(r); }
  std::int64_t now_ms() const { return clock_->now_ms(); }
  std::int64_t started_ms() const { return started_ms_; }
  // What the modules registered (read-only once start() has run).
  const ModuleRegistry& modules() const { return registry_; }
  // Unit tests: this store instead of the SQLite one start() opens (and no start() needed for
  // db() then).
  void use_store(std::unique_ptr<store::Store> st) { store_ = std::move(st); }
  // Store calls posted and not yet handed back to their loop (unit tests wait for 0).
  int db_pending() const { return db_pending_.load(std::memory_order_acquire); }

  // Runs `f(store)` on the storage thread and resumes on the I/O thread with its result.
  // Exceptions thrown by `f` (store::StoreError) are rethrown in the caller.
  // Callers pass a named closure (`auto op = [...](store::Store& st) {...};` then
  // `co_await s.db(std::move(op))`), never a lambda written inside the co_await expression:
  // GCC 12 miscompiles a closure temporary passed to a coroutine there (its captures are
  // relocated bytewise and a phantom copy is destroyed too), which freed garbage pointers and
  // crashed kabard at the first registration.
  template <typename F>
  auto db(F f) -> awaitable<decltype(f(std::declval<store::Store&>()))>;

  // CPU-heavy work (PBKDF2), off the shards and the store's thread.
  CpuPool& cpu() { return cpu_; }
  // For unit tests of server code: the store db() uses, without start().
  void use_store_for_test(std::unique_ptr<store::Store> store) { store_ = std::move(store); }

  // Waits for the shards' threads after stop() (main() calls it once io() has run out).
  void join();

  // Session directory. Every function here may be called from any shard.
  // The session bound to a full JID, if any.
  SessionPtr bound_session(const xmpp::Jid& full) const;
  // The same by prepared JID strings (`full` = `bare` + '/' + resource).
  SessionPtr bound_session(std::string_view bare, std::string_view full) const;
  // Binds s->jid(); when another session holds that full JID, binds nothing and returns it (the
  // caller replaces it and tries again: the check and the bind are one step under the lock).
  SessionPtr bind(const SessionPtr& s);
  void unbind(C2sSession* s);
  // XEP-0198 §5: the resource `old` holds is `now`'s from here on (its presence state and flags
  // stay); `now` has old's full JID already.
  void rebind(const C2sSession& old, const SessionPtr& now);
  // Copies a session's presence state (available, priority, last_presence) into the
  // directory; the session calls it on its own shard after changing any of them.
  void publish(const C2sSession& s);
  // Sets (`on`) or clears ResourceFlag `bits` of a bound session.
  void set_resource_flags(const C2sSession& s, std::uint32_t bits, bool on);
  // Sets or clears AccountFlag `bits` of the local account `user`.
  void set_account_flags(std::string_view user, std::uint32_t bits, bool on);
  std::uint32_t account_flags(std::string_view user) const;
  // A module that must see every message but can do its part on the fast path (the archive:
  // it records the message and adds its stanza-id to the bytes). route_message_now() calls it
  // with the parsed message, the resources it goes to and the bytes about to be forwarded
  // ('from' in), which it may change; false sends the message down the full path instead, and
  // then it must have changed nothing. forward_message_now() calls it too, with the head of a
  // message the parser did not build (its attributes and its children's names). Set in a
  // module's setup().
  using MessageTap =
      std::function<bool(C2sSession& from, const MessageView& message,
                         const std::vector<SessionPtr>& targets, std::string& bytes)>;
  void set_message_tap(MessageTap tap) { tap_ = std::move(tap); }
  // Bound sessions of an account (empty if none).
  std::vector<SessionPtr> sessions_of(const std::string& bare) const;
  // The same with what the directory knows of each.
  std::vector<ResourceView> resources_of(const std::string& bare) const;
  bool is_local(const xmpp::Jid& j) const { return j.domain() == cfg_.domain; }

  // Stanza entry point for a bound session: 'from' already stamped.
  awaitable<void> handle_stanza(SessionPtr from, xml::Element stanza);
  // Delivers a message from a bound session at once when that needs no store access (the
  // recipient is online); stamps 'from'. False, changing nothing else, when the message has to
  // take handle_stanza() instead. `received`, when not empty, is the stanza's bytes as the
  // parser received them (StreamParser::element_bytes(), in the jabber:client default
  // namespace): forwarded with 'from' put in, as they are, instead of serialized again.
  bool route_message_now(C2sSession& from, xml::Element& stanza, std::string_view received = {});
  // The same for a message the parser did not build (StreamHandler::wants_bytes()): its 'to'
  // and 'type' attributes and `received`, all of its bytes, with no 'from' of its own. Forwarded
  // with 'from' put in; never serialized.
  bool forward_message_now(C2sSession& from, const xml::ElementHead& head, std::string_view to,
                           std::string_view type, std::string_view received);
  // Where a message to a local account goes (RFC 6121 §8.5.2.1.1); empty when nobody is available.
  std::vector<SessionPtr> message_targets(const xmpp::Jid& to, std::string_view type);
  // The same, into `targets` (cleared first; its capacity is reused), by prepared bare JID.
  void message_targets(std::string_view bare, std::string_view type,
                       std::vector<SessionPtr>& targets) const;
  // Delivers a stanza addressed to a local account or resource, as if from the network
  // (RFC 6121 §8.5 rules), through the kMessageIn/kPresenceIn hooks. `stanza` has from/to set;
  // `from` is the sending session when it is local and on this shard.
  awaitable<void> deliver(xml::Element stanza, SessionPtr from = nullptr);
  // Delivers again a message that reached a resource's queue but not the resource (RFC 6121
  // §8.5.3.2.1): the kMessageIn hooks saw it on its way in (it was checked against the block
  // list, archived, carbon-copied), so only the routing is done again: another resource, else
  // offline storage, else an error to the sender.
  awaitable<void> redeliver(xml::Element message);
  // Runs the hooks of `point` in order; true when one stopped the stanza.
  awaitable<bool> run_hooks(Hook point, SessionPtr from, xml::Element& stanza);
  // Runs every handler of `event` for `s` (a failing one is logged; the others still run).
  awaitable<void> fire(SessionEvent event, SessionPtr s);
  // HTTP listener, when configured (the upload module serves on it); nullptr otherwise.
  HttpServer* http() const { return http_.get(); }
  // The shards connections are spread over (listeners hand them round robin) and one of them.
  net::ShardRing& shard_ring() { return ring_; }
  Shard& shard(std::size_t i) { return *shards_[i]; }
  bool stopping() const { return stopping_.load(std::memory_order_relaxed); }
  // A client session over XMPP over WebSocket (RFC 7395) on the connection `inner` an HTTP
  // upgrade was answered on (`started`: its reads went to the HTTPS server until now); on
  // `shard`'s thread.
  void adopt_websocket(Shard& shard, std::unique_ptr<net::Transport> inner, bool started);

  // Sends a stanza to one session (serialized once).
  static void send_to(const SessionPtr& s, const xml::Element& stanza);
  // Queues a message (serialized: `bytes`) for `to`; `from` is the local sending session on this
  // shard, or null. Where either side uses stream management the message is also logged in
  // flight (store/message_log.h) until its delivery is certain, and the sender's acks wait for
  // the log's commit; otherwise the bytes are queued and nothing else happens (the fast path).
  void send_message(const SessionPtr& to, std::string bytes, C2sSession* from,
                    std::string_view sender_bare);
  // An offline message of `user` whose delivery is certain: deleted in the log's next group
  // commit (what log_committed() waits for).
  void delete_delivered_offline(const std::string& user, std::int64_t id);
  // Appends a message to its account's archive (XEP-0313) in the log's next group commit.
  void archive(store::ArchivedMessage m) { log_->archive(std::move(m)); }
  // The same for a new message: `fill(record, seq)` fills it in (store::MessageLog::archive_new()).
  template <class Fill>
  void archive_new(Fill&& fill) {
    log_->archive_new(std::forward<Fill>(fill));
  }
  // Resumes once everything logged so far is committed (false: the commit failed). `now`: the
  // commit comes at once (a person waits); else the next gathered one (store::MessageLog).
  awaitable<bool> log_committed(bool now = true);
  // Resumes (on the caller's shard) once every handler that any shard had posted to `via`
  // before this call has run on `via`, and whatever those posted to the caller's shard has run
  // there before it. A sender routes on its own thread and posts to the session it looked up
  // in the same handler, so after a directory change (rebind()) this is the point past which
  // nothing routed by the old entry can still arrive (XEP-0198 §5 resumption keeps each sender's
  // order across the handover with it).
  awaitable<void> posts_settled(net::Shard& via);
  // On the shard's thread: whether an ack since the last call let logged messages go (the
  // caller waits for log_committed() before it goes on, so that an answered <r/> means the
  // acknowledged messages will not come again after a crash).
  static bool take_log_removals();
  const store::MessageLog& message_log() const { return *log_; }
  // Answers `stanza` to its local sender with a cancel-type stanza error (never for errors).
  void bounce(const xml::Element& stanza, std::string_view condition);

  // Called by a session, on its shard, once it is gone (after the unavailable broadcast).
  awaitable<void> session_closed(SessionPtr s);
  // Ends a session bound to the full JID another connection binds now (RFC 6120 §7.7.2.2) on
  // the old session's shard, and resumes the caller once its unavailable presence is out.
  awaitable<void> replace_session(SessionPtr old);

 private:
  void listen(const Endpoint& ep, bool direct_tls);
  // Makes the session on `shard` (called on that shard's thread).
  void adopt(Shard& shard, asio::ip::tcp::socket sock, bool direct_tls);
  // Makes and starts the session over `transport`, admitted as unauthenticated.
  void start_session(Shard& shard, std::unique_ptr<net::Transport> transport,
                     UnauthenticatedConnections::Admission admission);
  // Runs `work` on shard 0 and resumes the caller on its own shard.
  awaitable<void> on_shard0(awaitable<void> work);
  awaitable<void> sweep_loop(Shard& shard);
  awaitable<void> end_replaced(SessionPtr old);
  void stop_shard(Shard& shard);
  void setup_tls();
  awaitable<void> route_message(SessionPtr from, xml::Element stanza);
  // deliver(); `again`: redeliver() (no kMessageIn hooks). One coroutine for both: deliver()
  // and redeliver() only hand it on. (A deliver() that co_awaited a second coroutine for the
  // routing after its hooks was resumed at no suspend point, SIGILL in its actor, within seconds
  // of test_slow_reader's flood, every run; built with GCC 12. Not understood further.)
  awaitable<void> deliver_stanza(xml::Element stanza, SessionPtr from, bool again);
  awaitable<void> route_iq(SessionPtr from, xml::Element stanza);

  asio::io_context& io_;
  Config cfg_;
  asio::ssl::context tls_;
  asio::thread_pool store_pool_{1};
  CpuPool cpu_{2};
  std::unique_ptr<store::Store> store_;
  // Shared with the deliveries it tracks, which may outlive the server at exit.
  std::shared_ptr<store::MessageLog> log_;
  std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> acceptors_;
  std::vector<std::unique_ptr<Shard>> shards_;
  net::ShardRing ring_;        // round robin over the shards (accepts run on shard 0)
  mutable std::mutex dir_mu_;  // guards bound_
  // Looked up by string_view too (no string built per routed message).
  std::unordered_map<std::string, std::vector<ResourceView>, StringHash, std::equal_to<>>
      bound_;  // bare JID -> resources
  // Where a message to `to` of `type` goes at once (a chat to a contact who is online), into
  // `targets` (cleared first); false, `targets` empty, when it must take handle_stanza().
  // `from`: the sender's username (its AccountFlags may send the message down the full path).
  bool instant_targets(std::string_view from, std::string_view to, std::string_view type,
                       std::vector<SessionPtr>& targets) const;
  ModuleRegistry registry_;
  std::unique_ptr<Clock> clock_ = std::make_unique<SystemClock>();
  std::unique_ptr<Random> random_ = std::make_unique<SystemRandom>();
  // AccountFlags by username (guarded by dir_mu_), and how many accounts have any: while none
  // has, the fast path reads only this counter.
  std::unordered_map<std::string, std::uint32_t, StringHash, std::equal_to<>> account_flags_;
  std::atomic<std::size_t> flagged_accounts_{0};
  MessageTap tap_;  // set_message_tap(); fixed before the shards run
  std::atomic<int> db_pending_{0};
  AuthThrottle throttle_;
  UnauthenticatedConnections unauth_;
  xmpp::ScramCredentials unknown_user_;
  std::int64_t started_ms_ = 0;
  std::atomic<bool> stopping_{false};
  std::unique_ptr<HttpServer> http_;
  // A connection silent this long between stanzas gives its XML parser back (hibernate()).
  static constexpr std::int64_t kHibernateAfterMs = 2000;
};

template <typename F>
auto Server::db(F f) -> awaitable<decltype(f(std::declval<store::Store&>()))> {
  using R = decltype(f(std::declval<store::Store&>()));
  if constexpr (std::is_void_v<R>) {
    // Named, not a temporary in the co_await expression (GCC 12: see the comment on db()).
    auto wrapped = [f = std::move(f)](store::Store& s) mutable {
      f(s);
      return true;
    };
    co_await db(std::move(wrapped));
  } else {
    // With GCC 12 and Boost 1.74, use_awaitable's initiate() relocates the initiation object
    // bytewise (no move constructor runs), which corrupts captured std::strings (their SSO
    // pointer still points into the old copy) and crashed kabard on the first login. So the
    // initiation only holds trivially copyable pointers; the callable lives on the heap, owned
    // by the pool-side lambda.
    auto* fn = new F(std::move(f));
    co_return co_await asio::async_initiate<decltype(asio::use_awaitable),
                                            void(std::exception_ptr, R)>(
        [this, fn](auto handler) mutable {
          std::unique_ptr<F> owned(fn);
          auto io_ex = asio::get_associated_executor(handler, io_.get_executor());
          db_pending_.fetch_add(1, std::memory_order_acq_rel);
          // The caller's loop has work until the result is back (a shard that stops waits
          // for the store writes of the stanzas it handles).
          asio::post(store_pool_, [this, owned = std::move(owned), handler = std::move(handler),
                                   io_ex, work = asio::make_work_guard(io_ex)]() mutable {
            std::exception_ptr ep;
            R result{};
            try {
              result = (*owned)(*store_);
            } catch (...) {
              ep = std::current_exception();
            }
            asio::post(io_ex,
                       [handler = std::move(handler), ep, result = std::move(result)]() mutable {
                         std::move(handler)(ep, std::move(result));
                       });
            db_pending_.fetch_sub(1, std::memory_order_acq_rel);
          });
        },
        asio::use_awaitable);
  }
}

}  // namespace kabar::server
