// The client session's private state and the parts of it each source file implements:
// transport.cc (TLS and the XML stream), login.cc (connect, authenticate, bind, register),
// session.cc (reader, writer, IQ round trips), iq_dispatch.cc, roster.cc, messaging.cc,
// presence.cc. Not a public header.
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "client/error.h"
#include "client/stanza_handlers.h"
#include "kabar/client.h"
#include "xml/serializer.h"
#include "xml/stream_parser.h"
#include "xmpp/hex.h"
#include "xmpp/jid.h"
#include "xmpp/namespaces.h"
#include "xmpp/stream/sm_client.h"

namespace kabar::client {

namespace ns = xmpp::ns;
using asio::use_awaitable;
using asio::ip::tcp;

inline constexpr const char* kReceipts = "urn:xmpp:receipts";
inline constexpr const char* kChatStates = "http://jabber.org/protocol/chatstates";
inline constexpr const char* kCarbons = "urn:xmpp:carbons:2";          // XEP-0280
inline constexpr const char* kForward = "urn:xmpp:forward:0";          // XEP-0297
inline constexpr const char* kStanzaId = "urn:xmpp:sid:0";             // XEP-0359
inline constexpr const char* kMam = "urn:xmpp:mam:2";                  // XEP-0313
inline constexpr const char* kRsm = "http://jabber.org/protocol/rsm";  // XEP-0059

using xmpp::to_hex;

// The defined condition of a stanza or SASL error: the first child in the errors' namespace.
inline std::string error_condition(const xml::Element& el) {
  const xml::Element* e = el.child("error");
  if (!e) return "undefined-condition";
  for (const xml::Element* c : e->children()) {
    if (c->xmlns() == ns::kStanzas && c->name() != "text") return c->name();
  }
  return "undefined-condition";
}

inline std::string error_text(const xml::Element& el) {
  const xml::Element* e = el.child("error");
  if (!e) return {};
  return e->child_text("text", ns::kStanzas);
}

inline std::string bare_of(std::string_view full) {
  auto j = xmpp::Jid::parse(full);
  return j ? j->bare_str() : std::string(full);
}

inline std::string resource_of(std::string_view full) {
  auto j = xmpp::Jid::parse(full);
  return j ? j->resource() : std::string();
}

struct PendingIq {
  explicit PendingIq(asio::io_context& io) : timer(io) {}
  asio::steady_timer timer;
  bool done = false;
  xml::Element reply;
  std::string to;  // the request's 'to': who may answer it (RFC 6120 §8.1.2.1)
};

struct Client::Impl : std::enable_shared_from_this<Impl>, xml::StreamHandler {
  Impl(Client& owner, asio::io_context& io, Options o)
      : owner(&owner), io(io), opt(std::move(o)), closed_signal(io) {}

  // The session behind a Client (for the unit tests, which drive dispatch() directly).
  static Impl& of(Client& c) { return *c.impl_; }

  Client* owner;
  asio::io_context& io;
  Options opt;
  xmpp::Jid jid;
  std::unique_ptr<asio::ssl::context> ssl_ctx;
  std::unique_ptr<asio::ssl::stream<tcp::socket>> stream;
  bool tls = false;
  std::unique_ptr<xml::StreamParser> parser;
  std::deque<xml::Element> inbox;
  bool stream_closed = false;
  bool parse_failed = false;
  std::string fingerprint;
  std::string bound;
  bool roster_ver_supported = false;
  bool running = false;  // reader and writer loops started
  bool is_connected = false;
  bool closing = false;
  Error close_reason;
  asio::steady_timer closed_signal;
  std::deque<std::string> outq;
  bool writing = false;
  std::map<std::string, std::shared_ptr<PendingIq>> pending;
  std::uint64_t next_id = 0;
  std::vector<RosterItem> roster;
  std::string roster_ver;
  std::vector<std::string> requests;
  std::map<std::string, std::map<std::string, Presence>> presences;
  std::map<std::string, Message> bounced;  // message id -> its error bounce
  StanzaHandlers handlers;                 // registered by extensions (file transfer, calls)
  std::vector<std::string> extra_features;

  // ---- XEP-0115 entity capabilities (caps.cc) ----
  // Verified: "HASH VER" -> the features its disco#info lists (sorted), from this session or the
  // cache file (Options::caps_cache).
  std::map<std::string, std::vector<std::string>> caps_by_ver;
  std::map<std::string, std::string> caps_of_jid;  // full JID -> "HASH VER" of its last presence
  // "HASH VER" with a disco#info under way -> a timer cancelled when it is answered (features_of()
  // waits on it rather than asking the same client a second time).
  std::map<std::string, std::shared_ptr<asio::steady_timer>> caps_asking;
  // "HASH VER JID": an answer that did not match its hash (§5.4); that JID is not asked again for
  // it (another JID announcing the same ver is).
  std::set<std::string> caps_bad;
  bool caps_loaded = false;
  std::optional<xml::Element> own_presence;  // our broadcast presence without <c/> (send_presence)
  bool reannounce_posted = false;  // add_feature(): a new presence with the new ver is due
  bool carbons_on = false;         // the server enabled XEP-0280 carbons for this session

  // ---- XEP-0198 stream management ----
  using Clock = std::chrono::steady_clock;
  xmpp::stream::SmClient sm;
  bool link_down = false;                     // reconnecting: no connection carries the session now
  std::uint64_t link_gen = 0;                 // which connection the reader and ticker belong to
  bool resuming = false;                      // negotiate() sends <resume/> instead of binding
  std::optional<xml::Element> resume_answer;  // <resumed/> (negotiate() with resuming)
  std::optional<xml::Element> bound_features;     // the features that offered <bind/>
  std::vector<std::string> resend_after_failure;  // unacked when resumption failed
  std::deque<xml::Element> uncounted;             // arrived before <enabled/>: handled, not counted
  std::string last_presence;    // our broadcast presence, announced again in a new session
  Clock::time_point last_rx{};  // last bytes from the server
  Clock::time_point last_tx{};  // last stanza sent

  // Writes a serialized stanza, kept for resending while stream management is on.
  void send_stanza_bytes(std::string data);
  // One top-level element from the running stream; false when it ends the session (set `why`).
  bool take(xml::Element& el, Error& why);
  awaitable<Error> establish();  // connect (or reconnect): transport, negotiation, <enable/>
  void start_link();             // reader and ticker for the current connection
  awaitable<void> ticker(std::uint64_t gen);
  awaitable<void> relink(Error why);

  // StreamHandler
  void on_stream_open(const xml::Element&, std::string_view) override {}
  void on_element(xml::Element&& el) override { inbox.push_back(std::move(el)); }
  void on_stream_close() override { stream_closed = true; }

  std::string new_id();

  // ---- transport ----
  awaitable<std::size_t> read_some(char* buf, std::size_t n);
  awaitable<void> write_raw(const std::string& data);
  awaitable<void> read_more();
  // The next top-level element during negotiation (before the reader runs).
  awaitable<xml::Element> next_element();
  void make_ssl_context();
  awaitable<std::optional<Error>> tls_handshake();

  // ---- connect ----
  awaitable<std::optional<Error>> open_transport();
  // STARTTLS, SASL and bind through xmpp::stream::ClientNegotiator; authenticate = false
  // stops at the secured stream's features (registration).
  awaitable<std::optional<Error>> negotiate(bool authenticate);
  // Runs a negotiation step under the watchdog; maps exceptions to errors.
  awaitable<Error> guarded(std::function<awaitable<std::optional<Error>>()> step);
  awaitable<Error> connect();
  awaitable<Error> register_account();

  // ---- running session ----
  void start_loops();
  awaitable<void> reader(std::uint64_t gen);
  void finish(const Error& why);
  void close_socket();
  void send(const xml::Element& el) { send_stanza_bytes(xml::serialize(el)); }
  void send_raw(std::string data);
  awaitable<void> writer();
  awaitable<std::optional<xml::Element>> iq(xml::Element iq);
  Error iq_error(const std::optional<xml::Element>& r, std::string_view what);

  // ---- inbound stanzas (iq_dispatch.cc, roster.cc, messaging.cc, presence.cc) ----
  void dispatch(xml::Element& el);
  bool from_self_or_server(std::string_view from);
  // Whether an IQ result or error from `from` answers a request sent to `to`.
  bool answers(std::string_view to, std::string_view from);
  void handle_iq(xml::Element& el);
  // The answer to an IQ get/set no handler claimed.
  void answer_unclaimed(const xml::Element& iq);
  static RosterItem parse_item(const xml::Element& item);
  void handle_message(xml::Element& el);
  // XEP-0280 §4: asks for carbons (Options::carbons) and records the answer in carbons_on.
  awaitable<void> enable_carbons();
  // A Message from a <message/> stanza's fields (no carbon unwrapping).
  Message parse_message(const xml::Element& el) const;
  void handle_presence(xml::Element& el);
  void load_roster();
  void save_roster();

  // ---- XEP-0115 (caps.cc) ----
  // Our disco#info <query/> (XEP-0030): identity, the base features and add_feature()'s.
  xml::Element own_disco_info() const;
  std::string own_caps_ver() const;
  // Sends own_presence with our <c/> (and keeps it for a new session).
  void announce_presence();
  // An available presence's <c/>: remembers it for `from` and, for a ver not yet known, asks.
  void note_caps(const std::string& from, const xml::Element& presence);
  static awaitable<void> learn_caps(std::shared_ptr<Impl> self, std::string from, std::string key,
                                    std::string node);
  const std::vector<std::string>* known_caps(const std::string& full_jid) const;
  void load_caps();
  void save_caps() const;
};

}  // namespace kabar::client
