// Jingle RTP sessions without I/O: XEP-0166 <jingle/> actions whose contents carry a XEP-0167
// RTP description (payload types with their parameters, XEP-0293 rtcp-fb, XEP-0339 sources,
// <rtcp-mux/>) and a XEP-0176 ICE-UDP transport (credentials, candidates, the XEP-0320 DTLS
// fingerprint); the XEP-0338 BUNDLE group; and the XEP-0353 Jingle Message Initiation messages.
// Everything parsed here comes from the network: counts and lengths are bounded, and a parse that
// fails says why instead of throwing. The client converts these to and from its media engine's
// types (the xmpp layer does not see the client).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "xml/element.h"

namespace kabar::xmpp::jingle_rtp {

inline constexpr const char* kJingle = "urn:xmpp:jingle:1";
inline constexpr const char* kJingleErrors = "urn:xmpp:jingle:errors:1";
inline constexpr const char* kRtp = "urn:xmpp:jingle:apps:rtp:1";
inline constexpr const char* kRtpAudio = "urn:xmpp:jingle:apps:rtp:audio";
inline constexpr const char* kRtpVideo = "urn:xmpp:jingle:apps:rtp:video";
inline constexpr const char* kRtcpFb = "urn:xmpp:jingle:apps:rtp:rtcp-fb:0";
inline constexpr const char* kSsma = "urn:xmpp:jingle:apps:rtp:ssma:0";
inline constexpr const char* kIceUdp = "urn:xmpp:jingle:transports:ice-udp:1";
inline constexpr const char* kDtls = "urn:xmpp:jingle:apps:dtls:0";
inline constexpr const char* kGrouping = "urn:xmpp:jingle:apps:grouping:0";
inline constexpr const char* kJmi = "urn:xmpp:jingle-message:0";
inline constexpr const char* kHints = "urn:xmpp:hints";

// Bounds applied to what a peer sends. Beyond a count the rest is ignored; beyond a length the
// parse fails.
inline constexpr std::size_t kMaxContents = 8;
inline constexpr std::size_t kMaxPayloadTypes = 32;
inline constexpr std::size_t kMaxParameters = 16;
inline constexpr std::size_t kMaxFeedback = 16;
inline constexpr std::size_t kMaxSources = 16;
inline constexpr std::size_t kMaxCandidates = 32;
inline constexpr std::size_t kMaxAttrBytes = 256;  // names, ids, ufrag, pwd, addresses, values
inline constexpr std::size_t kMaxFingerprintBytes = 3 * 64;  // SHA-512 as hex pairs with ':'

// XEP-0167 §4 <payload-type/>, with its XEP-0293 <rtcp-fb/> children.
struct PayloadType {
  int id = 0;  // 0..127
  std::string name;
  std::uint32_t clockrate = 0;  // 0: not given
  int channels = 1;
  std::vector<std::pair<std::string, std::string>> parameters;  // name, value
  std::vector<std::pair<std::string, std::string>> rtcp_fb;     // type, subtype
};

// XEP-0167 §4 <description/>.
struct Description {
  std::string media;  // audio, video
  std::vector<PayloadType> payload_types;
  // XEP-0293 §3: feedback for every payload type of the description.
  std::vector<std::pair<std::string, std::string>> rtcp_fb;
  std::vector<std::uint32_t> ssrcs;  // XEP-0339 <source ssrc/>, in order
  bool rtcp_mux = false;
};

// XEP-0176 §5 <candidate/>. Only UDP candidates are kept by parse().
struct Candidate {
  std::string foundation;
  int component = 1;
  std::string protocol = "udp";
  std::uint32_t priority = 0;
  std::string ip;
  std::uint16_t port = 0;
  std::string type;  // host, srflx, prflx, relay
  std::string rel_addr;
  std::uint16_t rel_port = 0;
  std::string id;      // may be absent from a peer
  int generation = 0;  // absent: 0
  int network = 0;     // absent: 0
};

// XEP-0320 §3 <fingerprint/>.
struct Fingerprint {
  std::string hash;   // sha-256, ...
  std::string setup;  // actpass, active, passive
  std::string value;  // hex pairs joined by ':' (as sent)
};

// XEP-0176 §5 <transport/>.
struct Transport {
  std::string ufrag;
  std::string pwd;
  std::vector<Candidate> candidates;
  std::optional<Fingerprint> fingerprint;
  std::size_t ignored_candidates = 0;  // TCP or malformed ones dropped by parse()
};

// XEP-0166 §7.3 <content/>.
struct Content {
  std::string creator = "initiator";
  std::string name;
  std::string senders;  // empty: both
  std::optional<Description> description;
  std::optional<Transport> transport;
};

// One <jingle/> action of an RTP session.
struct Action {
  std::string action;
  std::string sid;
  std::string initiator;
  std::string responder;
  std::vector<Content> contents;
  std::vector<std::string> bundle;  // XEP-0338 <group semantics='BUNDLE'/>: content names
  std::string reason;               // XEP-0166 §7.4 condition
  std::string reason_text;
};

// True when `jingle` is a session-initiate whose first content has an RTP description: which
// handler owns a session is decided by its application namespace.
bool is_rtp_initiate(const xml::Element& jingle);

// Parses <jingle xmlns='urn:xmpp:jingle:1'/> of any action; nullopt with `why` when malformed.
std::optional<Action> parse(const xml::Element& jingle, std::string& why);
// Builds <jingle/> for `a`.
xml::Element build(const Action& a);

// XEP-0166 §7.4: the conditions a <reason/> may carry; anything else is sent as <general-error/>.
bool known_reason(std::string_view condition);

// ---- XEP-0353 Jingle Message Initiation ----

struct JingleMessage {
  std::string kind;                // propose, ringing, proceed, reject, retract, finish
  std::string id;                  // the session id to be
  std::vector<std::string> media;  // propose: one per <description media=/>
  std::string reason;              // XEP-0166 reason condition, when given
  std::string reason_text;
  bool tie_break = false;
};

// The <propose/>, <ringing/>, ... child of `message`, if any; nullopt with `why` when there is
// one but it is malformed, nullopt with `why` empty when there is none.
std::optional<JingleMessage> parse_jmi(const xml::Element& message, std::string& why);
// §3: <message type='chat' to=`to` id=`stanza_id`> with the element and a <store/> hint.
xml::Element build_jmi(const JingleMessage& m, std::string_view to, std::string_view stanza_id);

}  // namespace kabar::xmpp::jingle_rtp
