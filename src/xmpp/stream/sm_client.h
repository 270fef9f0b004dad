// The client's half of XEP-0198 stream management (urn:xmpp:sm:3) as an I/O-free state machine:
// it counts the stanzas each side handled, keeps every stanza sent until the server acknowledges
// it, and says what to resend after a resumption (§5) or a failed one. The caller owns the
// socket: it passes each stanza it is about to write through outbound(), each top-level element
// it reads through inbound(), and writes the bytes these return. Resumption itself (<resume/>
// after SASL) is the ClientNegotiator's (ClientOptions::resume_previd).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "xml/element.h"

namespace kabar::xmpp::stream {

inline constexpr const char* kSmNs = "urn:xmpp:sm:3";

class SmClient {
 public:
  enum class State {
    kOff,       // not enabled (not offered, refused, or not asked for)
    kEnabling,  // <enable/> sent, no answer yet
    kOn,        // <enabled/> received
  };

  // What an element read from the server was, for the caller.
  enum class Input {
    kStanza,   // a message, presence or IQ: handle it (it is counted)
    kEnabled,  // <enabled/>: stream management is on (resumable() says if resumption is)
    kFailed,   // <failed/> to our <enable/>: off
    kAck,      // <a/>: acknowledged stanzas were dropped from the queue
    kRequest,  // <r/>: write ack() now (§4: MUST acknowledge)
    kTooHigh,  // <a/> acknowledging more than was sent: end the stream (§6)
    kOther,    // anything else: not a stanza, not ours
  };

  // `request_every`: outbound() appends an <r/> after this many stanzas sent since the last one
  // (0: never; the caller requests on its own schedule).
  explicit SmClient(std::uint32_t request_every = 5) : request_every_(request_every) {}

  // Whether stream features offer stream management v3.
  static bool offered(const xml::Element& features);

  // §4: the <enable/> to write after resource binding; the outbound count starts at zero once it
  // is written. `resume`: ask for a resumable session (§5).
  std::string enable(bool resume);

  // The bytes to write for a serialized stanza: itself, kept until acknowledged while stream
  // management is on (or being enabled), followed by <r/> when one is due.
  std::string outbound(std::string stanza);

  // Classifies and accounts one top-level element the server sent.
  Input inbound(const xml::Element& el);

  // <r/>: asks the server how much it handled.
  std::string request();
  // <a h/> with the count of stanzas handled so far.
  std::string ack();
  // Stanzas handled since the last ack() (an unrequested <a/> would report them).
  std::uint32_t unacked_inbound() const { return state_ == State::kOn ? h_ - last_ack_sent_ : 0; }
  // How many <a/> (or <resumed/>) answers have come: a caller timing an <r/> sees progress.
  std::uint64_t acks_received() const { return acks_received_; }
  // Whether an <r/> is out with no <a/> since.
  bool request_outstanding() const { return request_outstanding_; }

  // §5: the server resumed the session, having handled `h` of our stanzas: drops those and
  // returns the bytes to write: every stanza still unacknowledged, in order, then <r/> when there
  // are any. nullopt when `h` acknowledges more than was sent (the caller ends the stream).
  std::optional<std::string> resumed(std::uint32_t h);
  // §5: resumption failed (or was impossible): applies `h` when the server gave one, then returns
  // the stanzas still unacknowledged, in order, and turns stream management off; the caller binds
  // a new session, enables again and sends them anew.
  std::vector<std::string> failed(std::optional<std::uint32_t> h);

  State state() const { return state_; }
  bool on() const { return state_ == State::kOn; }
  // Enabled with resumption granted (§5: resume='true' or '1', and an id).
  bool resumable() const { return state_ == State::kOn && !id_.empty(); }
  const std::string& id() const { return id_; }
  // The server's preferred maximum resumption time in seconds (0: it named none).
  std::uint32_t max_seconds() const { return max_; }
  // Stanzas received and handled (the 'h' we report).
  std::uint32_t handled() const { return h_; }
  // Stanzas sent and not yet acknowledged.
  std::size_t unacked() const { return queue_.size(); }
  // Stanzas sent since <enable/> (mod 2^32): acknowledged and not.
  std::uint32_t sent() const { return acked_ + static_cast<std::uint32_t>(queue_.size()); }

 private:
  // Drops the stanzas `h` acknowledges; false when it acknowledges more than were sent.
  bool apply(std::uint32_t h);

  std::uint32_t request_every_;
  State state_ = State::kOff;
  std::string id_;
  std::uint32_t max_ = 0;
  std::uint32_t h_ = 0;              // inbound stanzas handled (mod 2^32, §4)
  std::uint32_t acked_ = 0;          // the server's last 'h'
  std::uint32_t last_ack_sent_ = 0;  // the 'h' of our last <a/>
  std::uint32_t since_request_ = 0;  // stanzas sent since the last <r/>
  bool request_outstanding_ = false;
  std::uint64_t acks_received_ = 0;
  std::deque<std::string> queue_;  // unacknowledged stanzas, oldest first
};

// The 'h' attribute of an <a/>, <resumed/> or <failed/>: an xs:unsignedInt; nullopt when absent
// or not a number in range.
std::optional<std::uint32_t> sm_h(const xml::Element& el);

}  // namespace kabar::xmpp::stream
