// Jingle file transfer payloads without I/O: XEP-0166 <jingle/> actions carrying a XEP-0234 file
// description and a XEP-0260 (SOCKS5) or XEP-0261 (in-band) transport; the XEP-0065 SOCKS5
// address hash; XEP-0047 in-band data; and the sanitizing of an offered file name. Everything
// parsed here comes from the network: sizes, counts and lengths are bounded, and a parse that
// fails says why instead of throwing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "xml/element.h"

namespace kabar::xmpp::jingle {

inline constexpr const char* kJingle = "urn:xmpp:jingle:1";
inline constexpr const char* kFileTransfer = "urn:xmpp:jingle:apps:file-transfer:5";
inline constexpr const char* kS5b = "urn:xmpp:jingle:transports:s5b:1";
inline constexpr const char* kIbbTransport = "urn:xmpp:jingle:transports:ibb:1";
inline constexpr const char* kHashes = "urn:xmpp:hashes:2";
inline constexpr const char* kIbb = "http://jabber.org/protocol/ibb";
inline constexpr const char* kBytestreams = "http://jabber.org/protocol/bytestreams";

// XEP-0234 §3: the file offered (or, with `offset`, the part asked for: §8 ranged transfer).
struct File {
  std::string name;
  std::uint64_t size = 0;
  std::string sha256;  // raw 32 bytes (XEP-0300 carries it base64); empty: not given
  std::string media_type;
  std::optional<std::uint64_t> range_offset;  // <range offset=.../>
};

// XEP-0260 §2.2 candidate.
struct Candidate {
  std::string cid;
  std::string host;
  std::uint16_t port = 0;
  std::string jid;   // the streamhost's JID (the proxy's for type proxy)
  std::string type;  // direct, assisted, tunnel, proxy
  std::uint32_t priority = 0;
};

struct Transport {
  enum class Kind { kNone, kS5b, kIbb };
  Kind kind = Kind::kNone;
  std::string sid;
  // s5b
  std::string dstaddr;
  std::vector<Candidate> candidates;
  std::string candidate_used;  // transport-info: <candidate-used cid=/>
  std::string activated;       // transport-info: <activated cid=/>
  bool candidate_error = false;
  bool proxy_error = false;
  // ibb
  std::uint32_t block_size = 0;
};

struct Action {
  std::string action;  // session-initiate, session-accept, transport-info, ...
  std::string sid;
  std::string initiator;
  std::string responder;
  std::string content_name;
  std::string creator = "initiator";
  std::string senders;  // empty: both (the default)
  std::optional<File> file;
  Transport transport;
  std::string reason;  // session-terminate: success, decline, media-error, ...
};

// Bounds applied to what a peer sends.
inline constexpr std::size_t kMaxCandidates = 16;
inline constexpr std::size_t kMaxNameBytes = 255;
inline constexpr std::size_t kMaxSidBytes = 128;

// Parses <jingle xmlns='urn:xmpp:jingle:1'/>; nullopt with `why` set when it is malformed.
std::optional<Action> parse(const xml::Element& jingle, std::string& why);
// Builds <jingle/> for `a` (the action's fields that are set).
xml::Element build(const Action& a);

// XEP-0065 §5.3.2: DST.ADDR = hex SHA-1(SID + requester JID + target JID).
std::string socks5_dst(std::string_view sid, std::string_view requester, std::string_view target);

// XEP-0260 §2.4: priority = 2^16 * type preference + local preference.
std::uint32_t candidate_priority(std::string_view type, std::uint16_t local_preference);

// A name safe to create inside the accept directory, for every input: the last path component
// of `offered` as valid UTF-8 (each ill-formed sequence becomes '_'), without control characters
// (C0, DEL, C1), bidirectional overrides or isolates (which could disguise the extension), ':'
// or path separators; no leading or trailing dot or space (so never ".", ".." or a hidden file);
// at most kMaxNameBytes, cut on a code point boundary, keeping a short extension only when
// something is left before it; "file" when nothing is left. safe_file_name(safe_file_name(x))
// == safe_file_name(x).
std::string safe_file_name(std::string_view offered);

// True for a sid made of [A-Za-z0-9._-], 1..kMaxSidBytes long (used in file names and hashes).
bool valid_sid(std::string_view sid);

// ---- The older stream initiation file transfer (XEP-0095, XEP-0096) and XEP-0065's IQs ----

inline constexpr const char* kSi = "http://jabber.org/protocol/si";
inline constexpr const char* kSiFileTransfer =
    "http://jabber.org/protocol/si/profile/file-transfer";
inline constexpr const char* kFeatureNeg = "http://jabber.org/protocol/feature-neg";
inline constexpr const char* kDataForms = "jabber:x:data";

struct SiOffer {
  std::string sid;
  std::string name;
  std::uint64_t size = 0;
  std::string md5;  // XEP-0096 §3.1: hex MD5, when given
  std::string mime_type;
  std::vector<std::string> methods;  // stream-method options, in the sender's order
};
// <si xmlns='http://jabber.org/protocol/si' profile='...file-transfer'/>: nullopt with `why`.
std::optional<SiOffer> parse_si_offer(const xml::Element& si, std::string& why);
xml::Element build_si_offer(const SiOffer& offer);
// The receiver's choice (XEP-0095 §3.2): <si><feature><x type='submit'>...stream-method.
xml::Element build_si_accept(std::string_view method);
std::string parse_si_accept(const xml::Element& si);  // the chosen method, or empty

// XEP-0065 §5.3.1 <query xmlns='http://jabber.org/protocol/bytestreams'/>.
struct StreamHost {
  std::string jid;
  std::string host;
  std::uint16_t port = 0;
};
struct BytestreamQuery {
  std::string sid;
  std::vector<StreamHost> hosts;  // at most kMaxCandidates, each with a host and a port
  std::string used;               // <streamhost-used jid=/>
};
std::optional<BytestreamQuery> parse_bytestreams(const xml::Element& query, std::string& why);
xml::Element build_bytestreams(const BytestreamQuery& q);

}  // namespace kabar::xmpp::jingle
