// Voice and video calls on a kabar::client::Client session: the signalling. A call is proposed
// with Jingle Message Initiation (XEP-0353: propose to the contact's bare JID, so every device of
// theirs rings; ringing, proceed, reject, retract, finish; the other devices of this account see
// the answer as a carbon, XEP-0280, and stop ringing), then set up as a Jingle RTP session
// (XEP-0166, XEP-0167) with an ICE-UDP transport (XEP-0176, candidates trickled in
// transport-info), DTLS-SRTP (XEP-0320), BUNDLE (XEP-0338) and rtcp-mux. A session-initiate that
// comes without a proposal (a client without XEP-0353) rings too.
//
// The media (ICE, DTLS-SRTP, codecs) is a media::Session made by the factory given to the
// constructor: the real engine in the kabar command, a scripted one in tests. Its callbacks may
// come from any thread; they are posted to the client's io_context.
//
// Runs on the client's io_context like the client itself; not thread-safe. The client must
// outlive the Calls (it unregisters its stanza handlers when destroyed).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "client/media/media.h"
#include "kabar/client.h"

namespace kabar::client {

using MediaFactory =
    std::function<std::unique_ptr<media::Session>(media::Config, media::Callbacks)>;

enum class CallState {
  kProposed,    // outgoing: propose sent, no device has answered yet
  kRinging,     // outgoing: a device of the contact rings; incoming: ringing here
  kAccepted,    // proceed sent or received; the Jingle session is being set up
  kConnecting,  // the session is accepted; ICE and DTLS are running
  kActive,      // media flows
  kEnded,
};

struct CallInfo {
  std::string id;    // the XEP-0353 id, which is also the Jingle sid
  std::string peer;  // the contact: a bare JID until a device answers, then its full JID
  bool incoming = false;
  bool video = false;  // proposed (or offered) with video
  CallState state = CallState::kProposed;
};

// How a call ended.
struct CallEnd {
  // XEP-0166 §7.4 condition: success, decline, busy, cancel, failed-application,
  // security-error, connectivity-error, ...; "answered-elsewhere" and "rejected-elsewhere" when
  // another device of this account took or refused it.
  std::string reason;
  std::string text;      // the peer's <text/>, or why here
  bool by_peer = false;  // the contact ended it (else this side or another device of ours)
  std::chrono::seconds duration{0};  // time in kActive
};

class Calls {
 public:
  Calls(Client& client, MediaFactory factory);
  ~Calls();
  Calls(const Calls&) = delete;
  Calls& operator=(const Calls&) = delete;

  // Media settings for every call (files, host addresses, relay only). ice_servers is filled by
  // fetch_ice_servers().
  media::Config config;
  // XEP-0353 §3.2: a proposal that rings here says so to the caller, when the caller already
  // sees our presence (a roster subscription from us: §8, the answer must not reveal it to
  // anyone else). Off: silent until accept() or reject().
  bool send_ringing = true;

  // XEP-0215: asks our server for its STUN and TURN services (with TURN credentials) and puts
  // them in config.ice_servers. kNotFound when the server has none to offer.
  awaitable<Error> fetch_ice_servers();

  // Proposes a call to `jid` (a bare JID: every device rings; a full JID: that one). Returns
  // the call id, or "" for a JID that does not parse.
  std::string call(const std::string& jid, bool video = false);
  // Incoming: takes the call here (proceed, then the Jingle answer).
  void accept(const std::string& id);
  // Incoming: declines it on every device (reject with `reason`: busy or decline).
  void reject(const std::string& id, const std::string& reason = "decline");
  // Either side, any state: retract, or session-terminate success with finish.
  void hang_up(const std::string& id);
  // The same, with a XEP-0166 §7.4 condition and text of our choosing for a call whose Jingle
  // session exists (e.g. connectivity-error when no media path was found in time).
  void hang_up(const std::string& id, const std::string& reason, const std::string& text);

  std::vector<CallInfo> calls() const;  // those not ended
  std::optional<CallInfo> info(const std::string& id) const;
  std::optional<media::Stats> stats(const std::string& id) const;

  // Events.
  std::function<void(const CallInfo&)> on_incoming;  // ring
  std::function<void(const CallInfo&)> on_state;     // every change but kEnded
  std::function<void(const CallInfo&, const CallEnd&)> on_ended;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace kabar::client
