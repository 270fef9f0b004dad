// The server: listeners, the session directory (router), storage threads, and the stanza
// handlers each feature folder registers.
//
// Threading (deviation from ARCHITECTURE.md, for now): one I/O thread runs every connection; the
// store runs on its own thread and results are posted back, so the I/O thread never blocks on
// SQLite. Sharding over cores comes with the performance work.
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange
#include <vector>

#include "server/auth_throttle.h"
#include "server/config.h"
#include "store/store.h"
#include "xml/element.h"
#include "xmpp/jid.h"

namespace kabar::server {

namespace asio = boost::asio;
using asio::awaitable;

class C2sSession;
class Proxy65;
class HttpServer;
class Upload;
using SessionPtr = std::shared_ptr<C2sSession>;

// An IQ handler for one payload namespace. `iq` has 'from' stamped with the sender's full JID.
using IqHandler = std::function<awaitable<void>(SessionPtr, xml::Element)>;

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
  asio::io_context& io() { return io_; }
  asio::ssl::context& tls() { return tls_; }
  AuthThrottle& throttle() { return throttle_; }
  std::int64_t now_ms() const;
  std::int64_t started_ms() const { return started_ms_; }

  // Runs `f(store)` on the storage thread and resumes on the I/O thread with its result.
  // Exceptions thrown by `f` (store::StoreError) are rethrown in the caller.
  // Callers pass a named closure (`auto op = [...](store::Store& st) {...};` then
  // `co_await s.db(std::move(op))`), never a lambda written inside the co_await expression:
  // GCC 12 miscompiles a closure temporary passed to a coroutine there (its captures are
  // relocated bytewise and a phantom copy is destroyed too), which freed garbage pointers and
  // crashed kabard at the first registration.
  template <typename F>
  auto db(F f) -> awaitable<decltype(f(std::declval<store::Store&>()))>;

  // Session directory.
  void add_session(const SessionPtr& s);  // every accepted connection (for timeouts)
  void remove_session(C2sSession* s);
  // Binds a full JID; a session already bound to it is returned so the caller can replace it.
  SessionPtr bound_session(const xmpp::Jid& full) const;
  void bind(const SessionPtr& s);
  void unbind(C2sSession* s);
  // Bound sessions of an account (empty if none).
  std::vector<SessionPtr> sessions_of(const std::string& bare) const;
  bool is_local(const xmpp::Jid& j) const { return j.domain() == cfg_.domain; }

  // Stanza entry point for a bound session: 'from' already stamped.
  awaitable<void> handle_stanza(SessionPtr from, xml::Element stanza);
  // Delivers a message from a bound session at once when that needs no store access (the
  // recipient is online); stamps 'from'. False, changing nothing else, when the message has to
  // take handle_stanza() instead.
  bool route_message_now(const C2sSession& from, xml::Element& stanza);
  // Where a message to a local account goes (RFC 6121 §8.5.2.1.1); empty when nobody is available.
  std::vector<SessionPtr> message_targets(const xmpp::Jid& to, std::string_view type);
  // Delivers a stanza addressed to a local account or resource, as if from the network
  // (RFC 6121 §8.5 rules). `stanza` has from/to set.
  awaitable<void> deliver(xml::Element stanza);

  // The SOCKS5 bytestreams proxy component, when configured (nullptr otherwise).
  const Proxy65* proxy65() const { return proxy65_.get(); }
  // The HTTP file-upload component, when an HTTP listener is configured (nullptr otherwise).
  const Upload* upload() const { return upload_.get(); }

  void register_iq(std::string xmlns, IqHandler h) {
    iq_handlers_[std::move(xmlns)] = std::move(h);
  }

  // Sends a stanza to one session (serialized once).
  static void send_to(const SessionPtr& s, const xml::Element& stanza);
  // Answers `stanza` to its local sender with a cancel-type stanza error (never for errors).
  void bounce(const xml::Element& stanza, std::string_view condition);

  // Called by a session once it is gone (after the unavailable broadcast).
  awaitable<void> session_closed(SessionPtr s);

 private:
  void listen(const Endpoint& ep, bool direct_tls);
  awaitable<void> accept_loop(asio::ip::tcp::acceptor& acc, bool direct_tls);
  awaitable<void> sweep_loop();
  void setup_tls();
  awaitable<void> route_message(xml::Element stanza);
  awaitable<void> route_iq(SessionPtr from, xml::Element stanza);

  asio::io_context& io_;
  Config cfg_;
  asio::ssl::context tls_;
  asio::thread_pool store_pool_{1};
  std::unique_ptr<store::Store> store_;
  std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> acceptors_;
  std::unordered_map<C2sSession*, std::weak_ptr<C2sSession>> all_sessions_;
  std::unordered_map<std::string, std::vector<SessionPtr>> bound_;  // bare JID -> resources
  std::unordered_map<std::string, IqHandler> iq_handlers_;
  AuthThrottle throttle_;
  std::int64_t started_ms_ = 0;
  bool stopping_ = false;
  std::unique_ptr<asio::steady_timer> sweep_timer_;
  std::unique_ptr<Proxy65> proxy65_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<Upload> upload_;
  std::int64_t last_upload_sweep_ms_ = 0;
  std::int64_t last_trim_ms_ = 0;
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
          asio::post(store_pool_, [this, owned = std::move(owned), handler = std::move(handler),
                                   io_ex]() mutable {
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
          });
        },
        asio::use_awaitable);
  }
}

}  // namespace kabar::server
