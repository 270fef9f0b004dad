// The client session's private state and the parts of it each source file implements:
// transport.cc (TLS and the XML stream), login.cc (connect, authenticate, bind, register),
// session.cc (reader, writer, IQ round trips), iq_dispatch.cc, roster.cc, messaging.cc,
// presence.cc. Not a public header.
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kabar/client.h"
#include "xml/serializer.h"
#include "xml/stream_parser.h"
#include "xmpp/jid.h"
#include "xmpp/namespaces.h"

namespace kabar::client {

namespace ns = xmpp::ns;
using asio::use_awaitable;
using asio::ip::tcp;

inline constexpr const char* kReceipts = "urn:xmpp:receipts";
inline constexpr const char* kChatStates = "http://jabber.org/protocol/chatstates";

inline Error err(Errc c, std::string msg) { return Error{c, std::move(msg)}; }

inline std::string hex(const unsigned char* p, std::size_t n) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    out += d[p[i] >> 4];
    out += d[p[i] & 15];
  }
  return out;
}

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
};

struct Client::Impl : std::enable_shared_from_this<Impl>, xml::StreamHandler {
  Impl(Client& owner, asio::io_context& io, Options o)
      : owner(&owner), io(io), opt(std::move(o)), closed_signal(io) {}

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
  std::map<std::string, std::function<void(const xml::Element&)>> iq_handlers;  // by xmlns
  std::vector<std::string> extra_features;

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
  awaitable<void> reader();
  void finish(const Error& why);
  void close_socket();
  void send(const xml::Element& el) { send_raw(xml::serialize(el)); }
  void send_raw(std::string data);
  awaitable<void> writer();
  awaitable<std::optional<xml::Element>> iq(xml::Element iq);
  Error iq_error(const std::optional<xml::Element>& r, std::string_view what);

  // ---- inbound stanzas (iq_dispatch.cc, roster.cc, messaging.cc, presence.cc) ----
  void dispatch(xml::Element& el);
  bool from_self_or_server(std::string_view from);
  void handle_iq(xml::Element& el);
  static RosterItem parse_item(const xml::Element& item);
  void handle_message(xml::Element& el);
  void handle_presence(xml::Element& el);
  void load_roster();
  void save_roster();
};

}  // namespace kabar::client
