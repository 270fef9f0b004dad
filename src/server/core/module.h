// The module interface: how a feature folder (src/server/modules/<feature>/) plugs into the
// server. A module registers everything through one ModuleContext in setup(): IQ handlers by
// namespace (and by type, and by whether the IQ is to the server or to an account's bare JID),
// stream features, disco features and identities (disco#info answers are built from these),
// ordered hooks on inbound and outbound messages and presence, session events, components by
// domain, and services other modules may look up. Time and randomness come from the context.
// Per-session state lives in `session->ext<T>()` (core/session_ext.h), never in fields of the
// session class.
//
// Threads: setup() runs once, before any shard runs; the registry is read-only afterwards, so
// every shard reads it without a lock. Handlers and hooks run on the sender's shard (components
// on shard 0).
#pragma once

// clang-format off
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange
// clang-format on

#include <boost/asio.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "server/core/clock.h"
#include "xml/element.h"

namespace kabar::server {

namespace asio = boost::asio;
using asio::awaitable;

class C2sSession;
class Server;
struct Config;
using SessionPtr = std::shared_ptr<C2sSession>;

// An IQ handler. `iq` has 'from' stamped with the sender's full JID.
using IqHandler = std::function<awaitable<void>(SessionPtr, xml::Element)>;
// A top-level element that is not a stanza (a "nonza": XEP-0198's <enable/>, <r/>, ...) from an
// authenticated session, bound or not, in order with its stanzas.
using NonzaHandler = std::function<awaitable<void>(SessionPtr, xml::Element)>;

// Where an IQ or a disco answer is addressed (bit set): the server itself (no 'to', or the
// domain), or a local account's bare JID (the account's own included: RFC 6120 §10.3.3).
enum Target : unsigned { kToServer = 1, kToAccount = 2, kToServerOrAccount = 3 };
// Which IQ requests a handler takes (bit set).
enum IqKind : unsigned { kIqGet = 1, kIqSet = 2, kIqGetOrSet = 3 };

// Hook points on the stanza path, in the order a stanza meets them:
//  kMessageOut / kPresenceOut: sent by a bound session, 'from' stamped, before routing;
//  kMessageIn / kPresenceIn: addressed to a local account or resource, before delivery;
//  kMessageUndelivered: a message to a local account no resource can take (offline storage);
//  kIqOut: an IQ sent by a bound session, 'from' stamped, before it is routed or answered.
// The last hook of kPresenceOut and kPresenceIn is the presence module's processing.
enum class Hook { kMessageOut, kPresenceOut, kMessageIn, kPresenceIn, kMessageUndelivered, kIqOut };
inline constexpr std::size_t kHookCount = 6;
// kStop: the stanza was handled (consumed, answered or dropped): later hooks and the default
// routing do not run. A hook may change the stanza and return kContinue.
enum class HookResult { kContinue, kStop };
// `from`: the sending session for the outbound points; for the others the sender if it is a
// local session handled on this shard, else nullptr. The stanza outlives the hook's co_await.
using StanzaHook = std::function<awaitable<HookResult>(SessionPtr from, xml::Element& stanza)>;

// kBound: resource bound (the session is in the directory). kAvailable: initial presence sent
// (RFC 6121 §4.2). kClosed: the session ended, after its unavailable presence went out and it
// left the directory. kResumed: a detached session went on over a new connection (XEP-0198 §5).
// kDetached: a resumable session lost its connection and waits for <resume/> (it stays bound;
// what is sent to it is queued), on its own shard.
enum class SessionEvent { kBound, kAvailable, kClosed, kResumed, kDetached };
inline constexpr std::size_t kSessionEventCount = 5;
using SessionHandler = std::function<awaitable<void>(SessionPtr)>;

struct DiscoIdentity {
  std::string category;
  std::string type;
  std::string name;  // may be empty
};

// A component: a domain of its own (proxy.<domain>, upload.<domain>; group chat later). It gets
// every stanza addressed to its domain or to a JID at it, on shard 0.
class Component {
 public:
  virtual ~Component() = default;
  virtual const std::string& jid() const = 0;
  virtual std::string_view disco_name() const = 0;  // its name in the server's disco#items
  virtual awaitable<void> handle(SessionPtr from, xml::Element stanza) = 0;
};

class ModuleContext;

class Module {
 public:
  virtual ~Module() = default;
  virtual std::string_view name() const = 0;
  // Registers the module's handlers (Server's constructor calls it, before anything runs).
  virtual void setup(ModuleContext& ctx) = 0;
  // After the store is open and the listeners are bound, on shard 0's thread (Server::start());
  // a module that owns sockets or timers starts them here and may register a component.
  virtual void start(ModuleContext& /*ctx*/) {}
  // Server::stop(): close what start() opened.
  virtual void stop() {}
};

// What the modules registered. Filled before the shards run, read-only afterwards.
class ModuleRegistry {
 public:
  // The handler for a request of `type` ("get"/"set") in `xmlns` to `target`; nullptr if none.
  const IqHandler* iq_handler(std::string_view xmlns, std::string_view type, Target target) const;
  // The features and identities disco#info announces for `target` (registration order, once).
  std::vector<std::string> disco_features(Target target) const;
  std::vector<DiscoIdentity> disco_identities(Target target) const;
  // Offered after authentication (RFC 6120 §4.3.2), beside bind.
  const std::vector<xml::Element>& stream_features() const { return stream_features_; }
  // The handler of top-level elements in `xmlns` that are not stanzas; nullptr if none.
  const NonzaHandler* nonza_handler(std::string_view xmlns) const;
  const std::vector<StanzaHook>& hooks(Hook h) const { return hooks_[static_cast<std::size_t>(h)]; }
  const std::vector<SessionHandler>& handlers(SessionEvent e) const {
    return events_[static_cast<std::size_t>(e)];
  }
  // The component serving `domain`, or nullptr.
  Component* component(std::string_view domain) const;
  const std::vector<Component*>& components() const { return components_; }
  // An object a module provides to others (the proxy65 module's Proxy65 for extdisco), or
  // nullptr when that module is not configured.
  template <typename T>
  T* service() const {
    for (const auto& s : services_) {
      if (s.key == service_key<T>()) return static_cast<T*>(s.ptr);
    }
    return nullptr;
  }
  const std::vector<std::unique_ptr<Module>>& modules() const { return modules_; }

 private:
  friend class ModuleContext;
  friend class Server;
  struct IqEntry {
    std::string xmlns;
    unsigned kinds;
    unsigned targets;
    IqHandler handler;
  };
  struct DiscoFeature {
    std::string var;
    unsigned targets;
  };
  struct DiscoId {
    DiscoIdentity id;
    unsigned targets;
  };
  struct OrderedHook {
    int order;
    StanzaHook hook;
  };
  struct Service {
    const void* key;
    void* ptr;
  };
  template <typename T>
  static const void* service_key() {
    static const char tag = 0;
    return &tag;
  }

  std::vector<IqEntry> iqs_;
  std::vector<DiscoFeature> features_;
  std::vector<DiscoId> identities_;
  std::vector<xml::Element> stream_features_;
  std::vector<std::pair<std::string, NonzaHandler>> nonzas_;
  std::vector<OrderedHook> ordered_[kHookCount];
  std::vector<StanzaHook> hooks_[kHookCount];  // ordered_, sorted by order (stable)
  std::vector<SessionHandler> events_[kSessionEventCount];
  std::vector<Component*> components_;
  std::vector<Service> services_;
  std::vector<std::unique_ptr<Module>> modules_;
};

// The one interface a module registers through; also its way to the server at run time.
class ModuleContext {
 public:
  ModuleContext(Server& server, ModuleRegistry& registry) : server_(server), reg_(registry) {}

  Server& server() const { return server_; }
  const Config& config() const;
  const Clock& clock() const;
  Random& random() const;

  void iq(std::string xmlns, IqHandler handler, unsigned kinds = kIqGetOrSet,
          unsigned targets = kToServerOrAccount);
  void disco_feature(std::string var, unsigned targets = kToServer);
  void disco_identity(DiscoIdentity id, unsigned targets = kToServer);
  void stream_feature(xml::Element feature);
  // Top-level elements in `xmlns` from an authenticated session (stream management).
  void nonza(std::string xmlns, NonzaHandler handler);
  // Lower `order` runs first; equal orders run in registration order.
  void hook(Hook point, StanzaHook hook, int order = 0);
  void on(SessionEvent event, SessionHandler handler);
  // `c` must outlive the server's use of it (the module owns it until stop()).
  void component(Component& c);
  template <typename T>
  void provide(T& service) {
    reg_.services_.push_back({ModuleRegistry::service_key<T>(), &service});
  }

 private:
  Server& server_;
  ModuleRegistry& reg_;
};

// A component that takes IQs only (the proxy, upload): an IQ to its domain goes to `iq`; a
// request to any other JID at the domain is answered service-unavailable, a message bounced
// (RFC 6120 §8.3.3.19) unless it is an error or a headline, presence dropped.
awaitable<void> serve_iq_only(Server& server, SessionPtr from, xml::Element stanza,
                              const IqHandler& iq);

// Every module kabard runs, in setup order (modules/modules.cc: the one place they are listed).
std::vector<std::unique_ptr<Module>> make_modules();

}  // namespace kabar::server
