// The kabar client library: one XMPP client session (RFC 6120, RFC 6121) over Boost.Asio
// coroutines. Connects by host and port or by DNS SRV, secures the stream with STARTTLS or direct
// TLS (certificate verified unless explicitly pinned or made insecure), authenticates with SCRAM or
// PLAIN inside TLS, binds a resource, then runs a reader that turns stanzas into events.
//
// Every call runs on the io_context the client was made with; none is thread-safe. Errors are
// values (kabar::client::Error) with a one-line message a person can act on.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>  // before Asio: Boost 1.74 awaitable.hpp uses std::exchange
#include <vector>

#include "xml/element.h"

namespace kabar::client {

namespace asio = boost::asio;
template <typename T>
using awaitable = asio::awaitable<T>;

enum class Errc {
  kOk,
  kBadInput,      // a malformed JID or option
  kUnreachable,   // no TCP connection to any address
  kTls,           // TLS handshake failed, or the server offers no TLS
  kCertificate,   // the server's certificate is not trusted / does not match
  kAuth,          // wrong password or unknown account
  kConflict,      // the account already exists (registration)
  kNotAllowed,    // the server refuses (registration disabled, forbidden, ...)
  kNotFound,      // an unknown contact or account
  kProtocol,      // the server said something we cannot follow
  kTimeout,       // no answer in time
  kDisconnected,  // the connection ended
  kUnsupported,   // the contact's client cannot do it (no such feature, or no answer to it)
  kCancelled,     // stopped here (FileTransfer::cancel)
};

struct Error {
  Errc code = Errc::kOk;
  std::string message;
  explicit operator bool() const { return code != Errc::kOk; }
};

enum class TlsMode {
  kAuto,      // direct TLS on port 5223, else STARTTLS
  kStartTls,  // RFC 6120 §5
  kDirect,    // XEP-0368
};

struct Options {
  std::string jid;         // bare (or full: its resource is asked for at bind)
  std::string password;    // never logged
  std::string host;        // empty: DNS SRV _xmpp-client._tcp.<domain>, then the domain itself
  std::uint16_t port = 0;  // 0: 5222 (or from SRV)
  TlsMode tls = TlsMode::kAuto;
  bool insecure = false;   // accept any certificate (test servers only)
  std::string pin_sha256;  // accept a certificate with this SHA-256 fingerprint (hex, ':' allowed)
  std::string resource;    // empty: the one in `jid`, else "kabar"
  std::string roster_cache;  // file for the versioned roster cache (XEP-0237); empty: none
  // File for the XEP-0115 capabilities learnt from contacts (verified hash -> features), so a
  // later session knows them from the first presence; empty: kept in memory only.
  std::string caps_cache;
  std::chrono::milliseconds timeout{15000};  // connect, negotiation and each IQ
  // XEP-0198 stream management when the server offers it: every stanza sent is kept until the
  // server acknowledges it, and a lost connection is resumed (or, when the server no longer has
  // the session, a new one bound) and the unacknowledged stanzas sent again, without ending the
  // session; on_connection says what happened.
  bool stream_management = true;
  // With stream management: after this long without a byte from the server, ask it for an ack;
  // an ack request unanswered for this long again means the connection is dead. 0: never ask
  // when idle.
  std::chrono::milliseconds keepalive{60000};
  // XEP-0280 message carbons: after binding (at connect, and again when a reconnection binds a
  // new session; a resumed session keeps them), ask the server to copy to this client the
  // messages the account's other clients send and receive. A server without carbons answers with
  // an error and the session goes on without. Copies arrive through on_message (Message::carbon);
  // off: none is asked for, and any copy that still arrives is ignored.
  bool carbons = true;
};

// What the connection under a stream-managed session did (Client::on_connection).
struct ConnectionEvent {
  enum class Kind {
    kLost,          // the connection failed; reconnecting (the session goes on meanwhile)
    kResumed,       // reconnected and the session resumed (XEP-0198 §5): nothing was lost
    kResumeFailed,  // reconnected, but the server had dropped the session: a new one is bound
  };
  Kind kind = Kind::kLost;
  std::string message;     // one line for a person
  std::size_t resent = 0;  // kResumed, kResumeFailed: our stanzas sent again
};

struct RosterItem {
  std::string jid;
  std::string name;
  std::string subscription = "none";  // none, to, from, both
  bool ask = false;                   // we asked for a subscription (pending out)
  std::vector<std::string> groups;
};

struct Presence {
  std::string from;  // full JID
  std::string type;  // "" (available), unavailable, subscribe, subscribed, unsubscribe,
                     // unsubscribed, error
  std::string show;  // away, chat, dnd, xa or "" (online)
  std::string status;
  int priority = 0;
  std::string delay;  // XEP-0203 stamp, if any
  std::string error;  // for type error: the condition
};

struct Message {
  std::string from;
  std::string to;
  std::string id;
  std::string type;  // chat, normal, groupchat, headline, error
  std::string body;
  std::string thread;
  std::string delay;        // XEP-0203 stamp: an offline (delayed) message
  std::string chat_state;   // XEP-0085: active, composing, paused, inactive, gone
  std::string receipt_for;  // XEP-0184: <received id=.../>: the id of our message delivered
  std::string oob_url;      // XEP-0066: <x xmlns='jabber:x:oob'><url/></x>, a file to fetch
  bool receipt_requested = false;
  std::string error;  // for type error: the condition
  // XEP-0280: a copy of a message one of the account's other clients sent or received (only
  // copies from the account's own bare JID are taken, §11; others are ignored). The fields above
  // are the original message's, with `from` and `to` as the original had them.
  bool carbon = false;
  // A sent carbon: this account sent it from another client, to `to` (the correspondent); the
  // conversation is with `to`, and the message is shown as ours. False for everything else,
  // including received carbons (from `from`, like any incoming message). No receipt is sent for
  // a carbon of either kind (XEP-0280 §10.4: copies are not answered automatically).
  bool outgoing = false;
  // XEP-0359: the id under which the account's own archive (XEP-0313) keeps this message, from a
  // <stanza-id/> whose `by` is the account's bare JID (any other is ignored: only the archive
  // the account reads can vouch for it); empty when none.
  std::string stanza_id;
};

// XEP-0313: which page of the account's own message archive to fetch (Client::query_archive).
struct ArchiveQuery {
  std::string with;                      // a bare JID: only the conversation with it; empty: all
  std::optional<std::int64_t> start_ms;  // Unix milliseconds: not older than this
  std::optional<std::int64_t> end_ms;    // not newer than this
  // XEP-0059 paging: `after` an archive id pages forward from it; `before` pages back from it,
  // and an empty `before` asks for the newest page. Neither: the oldest page.
  std::string after;
  std::optional<std::string> before;
  std::size_t max = 100;  // messages per page (the server may send fewer)
};

// One archived message: the stanza as the archive kept it.
struct ArchivedMessage {
  Message message;         // from/to as stored; delay: when the server archived it (XEP-0203)
  std::string archive_id;  // its id in the archive (equal to a live copy's Message::stanza_id)
  bool outgoing = false;   // this account sent it (from one of its clients)
};

struct ArchivePage {
  Error error;                            // kNotFound etc. with the server's condition; kOk
  std::vector<ArchivedMessage> messages;  // oldest first
  bool complete = false;                  // <fin complete='true'/>: nothing further this way
  std::string first, last;                // the page's first and last archive ids (RSM)
};

// A handler for one kind of stanza (see Client::add_iq_handler): returns true when it took the
// stanza (for an IQ get or set: it answers it, now or later), false to leave it to the next one.
using StanzaHandler = std::function<bool(const xml::Element&)>;

// Names one registered handler, for Client::remove_handler(). A default token names none.
struct HandlerToken {
  std::uint64_t id = 0;
  explicit operator bool() const { return id != 0; }
};

class Client {
 public:
  Client(asio::io_context& io, Options options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Connects, secures, authenticates and binds; then reads in the background until disconnect.
  awaitable<Error> connect();
  // XEP-0077: connects and secures, creates the account from options().jid and password before
  // authentication, then closes the connection. kConflict when it exists.
  awaitable<Error> register_account();
  // XEP-0077 §3.3, on a connected client. Updates options().password on success.
  awaitable<Error> change_password(std::string new_password);

  // Fetches the roster (with the cached version when the server supports XEP-0237).
  awaitable<Error> fetch_roster();
  const std::vector<RosterItem>& roster() const;
  const RosterItem* roster_item(const std::string& bare_jid) const;
  awaitable<Error> roster_set(const std::string& jid, const std::string& name = {});
  awaitable<Error> roster_remove(const std::string& jid);

  // RFC 6121 §3: subscription requests and answers.
  void subscribe(const std::string& jid);
  void approve(const std::string& jid);  // <presence type='subscribed'/>
  void deny(const std::string& jid);     // <presence type='unsubscribed'/>
  void unsubscribe(const std::string& jid);
  // Subscription requests received and not yet answered in this session.
  const std::vector<std::string>& pending_requests() const;

  // Own presence: show is "", away, chat, dnd or xa. A status text check_text() refuses goes out
  // with U+FFFD in place of each character XML cannot carry (the serializer's rule): check first.
  void send_presence(const std::string& show = {}, const std::string& status = {},
                     int priority = 0);
  // Sends a chat message with a receipt request and <active/>; returns its id. Sends nothing and
  // returns "" when check_text() refuses the body.
  std::string send_message(const std::string& to, const std::string& body);
  void send_chat_state(const std::string& to, const std::string& state);
  // XEP-0199 ping to the server; kTimeout when it does not answer.
  awaitable<Error> ping();
  // Sends a message, then pings the server so an immediate bounce (unknown contact) is seen:
  // kNotFound with the server's condition when the message came back as an error; kBadInput, with
  // nothing sent, for a body check_text() refuses.
  awaitable<Error> send_message_checked(const std::string& to, const std::string& body);

  // XEP-0313: one page of the account's own archive. kNotFound with "service-unavailable" (or
  // the server's other condition) when the server keeps none; kTimeout without an answer.
  awaitable<ArchivePage> query_archive(ArchiveQuery query);

  // Contacts' presence: bare JID -> resource -> last available presence.
  const std::map<std::string, std::map<std::string, Presence>>& presences() const;

  // Service discovery of a contact's client. An available presence with XEP-0115 caps whose
  // `ver` is not yet known is answered by a disco#info of `node#ver` to that full JID (once per
  // ver, whichever resource announced it); an answer whose hash matches (§5.1, §5.4) is cached
  // under that ver for every resource announcing it, one that does not is not.
  // The features of the full JID `jid`: from its caps when known and verified, else by asking
  // it (XEP-0030 disco#info). nullopt when it does not answer or answers with an error.
  awaitable<std::optional<std::vector<std::string>>> features_of(std::string jid);
  // Whether `jid` announces `feature`, as features_of() finds; nullopt without an answer.
  awaitable<std::optional<bool>> supports(std::string jid, std::string feature);
  // The verified caps features of `full_jid`'s last presence; nullptr when not known (yet).
  const std::vector<std::string>* caps_features(const std::string& full_jid) const;
  // XEP-0115 §4: the ver our presence announces (node kCapsNode), the sha-1 of our disco#info.
  std::string caps_ver() const;
  static constexpr const char* kCapsNode = "urn:kabar:client";

  // Closes the stream (</stream:stream>), waits briefly for the server's, closes the socket.
  awaitable<void> disconnect();
  // Waits until the connection ends; returns why (kOk after disconnect()).
  awaitable<Error> wait_closed();
  bool connected() const;
  // Whether XEP-0198 stream management is on for this session (the server enabled it).
  bool stream_managed() const;
  // Whether the server enabled XEP-0280 carbons for this session (Options::carbons).
  bool carbons_enabled() const;

  const Options& options() const;
  std::string bound_jid() const;           // full JID after bind
  std::string server_fingerprint() const;  // SHA-256 of the server's certificate, hex

  // For protocol extensions riding on this session (file transfer, calls): stanza-level access.
  // Several handlers may share a namespace; a stanza is offered to those that match, in the
  // order they were added, until one claims it.
  // An IQ get/set whose payload (first child) is in namespace `xmlns` (empty: any), after the
  // roster pushes and pings the client answers itself. An IQ get/set nobody claims is answered
  // with service-unavailable (RFC 6120 §8.4), or for Jingle with the XEP-0166 answers.
  HandlerToken add_iq_handler(const std::string& xmlns, StanzaHandler handler);
  // A message or presence with a child element in namespace `xmlns` (empty: every one). A
  // claimed stanza goes no further: no on_message/on_presence, no receipt, no presences() entry.
  HandlerToken add_message_handler(const std::string& xmlns, StanzaHandler handler);
  HandlerToken add_presence_handler(const std::string& xmlns, StanzaHandler handler);
  // Unregisters; false when the token names no registered handler. Safe inside a handler.
  bool remove_handler(HandlerToken token);
  // Announced in our disco#info (XEP-0030) and so in our caps (XEP-0115): a new feature after
  // our presence went out sends that presence again with the new ver (§4).
  void add_feature(const std::string& var);
  // Sends an IQ (its id is set here) and waits for its result or error; nullopt on timeout or
  // disconnect.
  awaitable<std::optional<xml::Element>> send_iq(xml::Element iq);
  void send_stanza(const xml::Element& el);
  // An IQ error reply's defined condition, "timeout" for nullopt, "" for a result.
  static std::string iq_condition(const std::optional<xml::Element>& reply);
  asio::io_context& io_context();

  // Events, called from the reader.
  std::function<void(const Message&)> on_message;
  std::function<void(const Presence&)> on_presence;
  std::function<void(const RosterItem&, bool removed)> on_roster_push;
  std::function<void(const Error&)> on_disconnect;
  // With stream management: the connection was lost and is being re-established, or was (see
  // ConnectionEvent). Stanzas sent meanwhile are queued and go out once it is back.
  std::function<void(const ConnectionEvent&)> on_connection;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// Whether `text` (a person's text: a message body, a status) can travel in a stanza. kBadInput
// naming the first character XML 1.0 §2.2 forbids (a control character such as ESC other than TAB,
// LF and CR; U+FFFE; U+FFFF) or the first byte that is not UTF-8; `what` names the text in the
// message ("the message"). kOk otherwise. The serializer would write U+FFFD for such characters;
// this lets a caller say no instead of sending something else than what was asked.
Error check_text(std::string_view what, std::string_view text);

// Resolves _xmpp-client._tcp.<domain> (RFC 6120 §3.2.1): (host, port) ordered by priority,
// empty when there is no record. Blocking; for connect().
std::vector<std::pair<std::string, std::uint16_t>> resolve_srv(const std::string& domain);

// Runs `fn` with exponential backoff (1 s doubling to `max`) while it returns an error whose
// code is kUnreachable, kTimeout or kDisconnected; stops on success or another error.
awaitable<Error> with_backoff(asio::io_context& io, std::function<awaitable<Error>()> fn,
                              int attempts, std::chrono::seconds max = std::chrono::seconds(30));

}  // namespace kabar::client
