// Stream negotiation (RFC 6120 §4-§7) as I/O-free state machines, one per role: stream
// headers, features, STARTTLS, SASL (SCRAM-SHA-1/-256 with and without -PLUS, PLAIN) and
// resource binding.
//
// A negotiator takes what the peer sent, already parsed (the stream header, each top-level
// element, the stream close, or a parse error) and answers with events, in order: bytes to
// write, "start TLS now", "the parser must expect a new stream", questions for the caller (the
// stored SCRAM credentials of a user, whether a PLAIN password is right, whether a resource may
// be bound) and the outcome. The caller owns the socket, the TLS handshake and the store; it
// answers a question through the matching method, from any thread's result, whenever it has
// one, and elements that arrive meanwhile wait in the negotiator (RFC 6120 §6.4: nothing is
// processed out of order).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "xml/element.h"
#include "xml/stream_parser.h"
#include "xmpp/scram.h"

namespace kabar::xmpp::stream {

// Fresh random bytes (nonces, stream ids, resource names); injected so tests are deterministic.
using RandomBytes = std::function<std::string(std::size_t)>;

// How a client-side negotiation failed; the message says it in words for a person.
enum class FailureKind {
  kNone,
  kTls,          // no STARTTLS offered, STARTTLS refused
  kAuth,         // SASL failure, or the server could not prove it knows the password
  kProtocol,     // something the protocol does not allow, a malformed challenge, no bind
  kStreamError,  // the peer sent <stream:error/>
  kClosed,       // the peer closed the stream, or sent XML that does not parse
};

struct Event {
  enum class Kind {
    // `data`: bytes to write to the peer, in order with everything else.
    kSend,
    // Write everything sent so far, then do the TLS handshake (server: as the server, client:
    // as the client); what was received after the element that asked for it is dropped
    // (RFC 6120 §5.3.3). Then call tls_established(): it emits kRestartStream.
    kStartTls,
    // The parser must expect a new stream header (RFC 6120 §5.3.4, §6.4.6): reset it.
    kRestartStream,
    // Server: look up the SCRAM credentials of `user` (nodeprep'ed; empty when the name did not
    // prepare: answer with nothing) for `hash`, then call scram_credentials() or refuse_auth().
    kNeedScramCredentials,
    // Server: check `password` (SASLprep'ed; empty when it did not prepare) of `user`
    // (nodeprep'ed, may be empty), then call plain_result() or refuse_auth().
    kVerifyPlain,
    // Server: an authentication attempt of `user` (may be empty) failed with `condition`: count
    // it against the address and the account.
    kAuthFailed,
    // Authenticated as `user` (server: nodeprep'ed local part; client: the account's local part).
    kAuthenticated,
    // Server: the client asks to bind the full JID `jid` (resource prepared, or made up when the
    // client named none); call bind_accepted() or bind_refused().
    kBindRequest,
    // An element the negotiator does not handle, for the caller: server: a pre-authentication
    // registration IQ (XEP-0077) it must answer itself; client: a stanza the server sent while
    // binding.
    kStanza,
    // Negotiation is done: `jid` is bound. Client: `features` holds the last stream features;
    // client resuming (ClientOptions::resume_previd): `element` holds the server's <resumed/>
    // (XEP-0198 §5) and `jid` is empty: the former session goes on, nothing is bound anew.
    kBound,
    // Client with authenticate = false: the stream is secured (or allowed in the clear) and
    // `features` holds its features; the caller goes on itself (in-band registration).
    kReady,
    // The stream is over (a stream error sent or received, the peer closed it, a negotiation
    // failure): write what was sent, then close the connection. `condition`/`text`: the stream
    // error condition, if any; client: `failure` and `message` say why.
    kClosed,
  };
  explicit Event(Kind k) : kind(k) {}
  Kind kind;
  std::string data;      // kSend
  std::string user;      // kNeedScramCredentials, kVerifyPlain, kAuthFailed, kAuthenticated
  std::string password;  // kVerifyPlain
  ScramHash hash = ScramHash::kSha256;       // kNeedScramCredentials
  std::string jid;                           // kBindRequest, kBound
  std::string condition;                     // kAuthFailed, kClosed
  std::string text;                          // kClosed
  FailureKind failure = FailureKind::kNone;  // kClosed (client)
  std::string message;                       // kClosed (client)
  std::optional<xml::Element> element;       // kStanza; kBound/kReady (client): the features
};

// What both roles share: the input side and the event queue.
class Negotiator {
 public:
  virtual ~Negotiator() = default;

  // The peer's stream header as xml::StreamHandler::on_stream_open() gives it.
  virtual void stream_opened(const xml::Element& header, std::string_view default_xmlns) = 0;
  // One top-level element from the peer.
  virtual void element(xml::Element&& el) = 0;
  // The peer closed its stream (</stream:stream>).
  virtual void stream_closed() = 0;
  // The peer's bytes did not parse (RFC 6120 §4.9.3).
  virtual void parse_error(xml::ParseError error, std::string_view message) = 0;
  // The TLS handshake asked for by kStartTls is done (or, before the stream starts, the
  // connection is direct TLS). `cb_type`/`cb_data`: the channel binding (RFC 5929 tls-unique,
  // RFC 9266 tls-exporter) of this connection, empty when there is none; -PLUS mechanisms are
  // used only with it.
  virtual void tls_established(std::string_view cb_type, std::string_view cb_data) = 0;

  // Events since the last call, in order.
  std::vector<Event> take_events();
  bool has_events() const { return !events_.empty(); }
  bool bound() const { return bound_; }
  bool closed() const { return closed_; }
  // True between kStartTls and tls_established(): received elements are dropped.
  bool awaiting_tls() const { return awaiting_tls_; }

 protected:
  void send(std::string bytes);
  void emit(Event ev) { events_.push_back(std::move(ev)); }
  std::vector<Event> events_;
  bool bound_ = false;
  bool closed_ = false;
  bool awaiting_tls_ = false;
};

struct ServerOptions {
  std::string domain;
  // STARTTLS can be offered (a TLS context is configured).
  bool tls_available = true;
  // SASL and registration allowed without TLS; STARTTLS is then offered without <required/>.
  bool allow_plaintext = false;
  // Offer XEP-0077 in-band registration (<register/>) next to the mechanisms.
  bool allow_registration = false;
  // Features offered after authentication next to <bind/> (legacy session, roster versioning,
  // pre-approval, ...).
  std::vector<xml::Element> bound_features;
  // RFC 6120 §6.4.5: the stream is closed after this many failed attempts (not-authorized).
  int max_auth_failures = 3;
  RandomBytes random;  // empty: xmpp::random_bytes
};

// The receiving entity of a client-to-server stream.
class ServerNegotiator final : public Negotiator {
 public:
  explicit ServerNegotiator(ServerOptions options);

  void stream_opened(const xml::Element& header, std::string_view default_xmlns) override;
  void element(xml::Element&& el) override;
  void stream_closed() override;
  void parse_error(xml::ParseError error, std::string_view message) override;
  void tls_established(std::string_view cb_type, std::string_view cb_data) override;

  // Answers to kNeedScramCredentials (nothing: no such account; the exchange then fails only at
  // its end, revealing nothing), kVerifyPlain, and either of them (e.g. too many failures from
  // this address: "temporary-auth-failure").
  void scram_credentials(std::optional<ScramCredentials> creds);
  void plain_result(bool ok);
  void refuse_auth(std::string_view condition, std::string_view text = {});
  // Answers to kBindRequest. Refused (e.g. "conflict", RFC 6120 §7.7.2.2, or
  // "resource-constraint"), the client may try again.
  void bind_accepted();
  void bind_refused(std::string_view condition, std::string_view text = {});

  // Sends <stream:error/> (with our header first if it is not out yet, RFC 6120 §4.9.1.1) and
  // closes the stream.
  void stream_error(std::string_view condition, std::string_view text = {});

  bool secure() const { return secure_; }
  bool authenticated() const { return !user_.empty(); }
  const std::string& user() const { return user_; }
  const std::string& stream_id() const { return stream_id_; }

 private:
  enum class State {
    kWaitHeader,  // before the (next) stream header
    kNegotiating,
    kStartTls,   // <proceed/> sent, waiting for tls_established()
    kWaitScram,  // kNeedScramCredentials out
    kWaitPlain,  // kVerifyPlain out
    kWaitBind,   // kBindRequest out
    kBound,
    kClosed,
  };
  bool waiting() const {
    return state_ == State::kWaitScram || state_ == State::kWaitPlain || state_ == State::kWaitBind;
  }
  void process(xml::Element&& el);
  void drain_backlog();
  void handle_auth(const xml::Element& el);
  void handle_response(const xml::Element& el);
  void handle_plain(const std::string& payload);
  void handle_bind(const xml::Element& iq);
  void send_header();
  void send_features();
  void sasl_failure(std::string_view condition, std::string_view text = {});
  void sasl_success(std::string_view additional);
  std::string random(std::size_t n) const;

  ServerOptions opt_;
  State state_ = State::kWaitHeader;
  bool stream_open_ = false;  // our header is out on the current stream
  bool secure_ = false;
  std::string cb_type_;
  std::string cb_data_;
  std::string stream_id_;
  std::optional<ScramServer> scram_;
  std::string sasl_user_;  // of the exchange under way
  int auth_failures_ = 0;
  std::string user_;      // authenticated
  std::string bind_jid_;  // of the kBindRequest out
  std::optional<xml::Element> bind_iq_;
  std::deque<xml::Element> backlog_;  // received while a question is out
};

struct ClientOptions {
  std::string jid;  // the account's bare JID (local@domain)
  std::string password;
  std::string resource;  // asked for at bind; empty: the server picks one
  // Carry on without TLS when the server offers no STARTTLS, and use PLAIN in the clear.
  bool allow_plaintext = false;
  // false: stop at the first features of the secured stream (kReady), for in-band registration.
  bool authenticate = true;
  // XEP-0198 §5: after authentication, resume the session with this SM-ID instead of binding,
  // reporting `resume_h` stanzas handled; empty: bind.
  std::string resume_previd;
  std::uint32_t resume_h = 0;
  RandomBytes random;  // empty: xmpp::random_bytes
};

// The initiating entity of a client-to-server stream.
class ClientNegotiator final : public Negotiator {
 public:
  // `options.jid` must be a valid bare JID with a local part (the caller has checked it).
  explicit ClientNegotiator(ClientOptions options);

  // Sends our stream header. Direct TLS: call tls_established() first instead (it sends it).
  void start();

  void stream_opened(const xml::Element& header, std::string_view default_xmlns) override;
  void element(xml::Element&& el) override;
  void stream_closed() override;
  void parse_error(xml::ParseError error, std::string_view message) override;
  void tls_established(std::string_view cb_type, std::string_view cb_data) override;

  bool secure() const { return secure_; }
  // The mechanism chosen (RFC 6120 §6.3.4), once <auth/> is out.
  const std::string& mechanism() const { return mechanism_; }
  const std::string& bound_jid() const { return bound_jid_; }
  FailureKind failure() const { return failure_; }
  // Resuming: whether the server refused (or offered no stream management) so a new session
  // was bound, and its <failed/> if it sent one (XEP-0198 §5: it may carry 'h').
  bool resume_refused() const { return resume_refused_; }
  const std::optional<xml::Element>& resume_failure() const { return resume_failure_; }

 private:
  enum class State {
    kIdle,
    kWaitFeatures,
    kWaitProceed,
    kStartTls,
    kWaitSasl,
    kWaitBind,
    kWaitSession,
    kWaitResume,
    kDone,
    kClosed,
  };
  void send_header();
  void request_bind(xml::Element&& features);
  void on_resume_answer(xml::Element&& el);
  void on_features(xml::Element&& features);
  void choose_mechanism(const xml::Element& features);
  void on_sasl(const xml::Element& el);
  void on_bind_result(xml::Element&& el);
  void finish();
  void fail(FailureKind kind, std::string message, std::string condition = {},
            std::string text = {});
  std::string random(std::size_t n) const;

  ClientOptions opt_;
  std::string local_;
  std::string domain_;
  State state_ = State::kIdle;
  bool secure_ = false;
  bool authenticated_ = false;
  bool direct_ = false;  // tls_established() before start()
  std::string cb_type_;
  std::string cb_data_;
  std::string mechanism_;
  std::optional<ScramClient> scram_;
  bool scram_final_sent_ = false;
  std::string bind_id_;
  std::string session_id_;
  std::string bound_jid_;
  std::optional<xml::Element> features_;
  bool resume_refused_ = false;
  std::optional<xml::Element> resume_failure_;
  FailureKind failure_ = FailureKind::kNone;
};

// Feeds bytes through the real xml::StreamParser into a negotiator: the parser's events become
// the negotiator's input. The caller still acts on the events (kRestartStream: restart()).
class ParsedInput final : private xml::StreamHandler {
 public:
  explicit ParsedInput(Negotiator& negotiator, xml::StreamLimits limits = {});
  ParsedInput(const ParsedInput&) = delete;
  ParsedInput& operator=(const ParsedInput&) = delete;

  // Parses `bytes`; a parse error goes to the negotiator (once), and false comes back.
  bool feed(std::string_view bytes);
  void restart() { parser_.reset(); }

 private:
  void on_stream_open(const xml::Element& header, std::string_view default_xmlns) override;
  void on_element(xml::Element&& element) override;
  void on_stream_close() override;

  Negotiator& negotiator_;
  xml::StreamParser parser_;
  bool failed_ = false;
};

}  // namespace kabar::xmpp::stream
