#include "xmpp/jid.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stringprep.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

#include "xmpp/utf8.h"

namespace kabar::xmpp {
namespace {

// RFC 7622 §3.2-3.4: each part is limited to 1023 octets after preparation.
constexpr std::size_t kMaxPartBytes = 1023;
// Three parts plus the two separators.
constexpr std::size_t kMaxJidBytes = 3 * kMaxPartBytes + 2;

// Runs one libidn stringprep profile; nullopt when the input is rejected or the output is empty
// or longer than one part may be.
std::optional<std::string> run_profile(std::string_view in, const Stringprep_profile* profile) {
  if (in.empty() || in.size() > kMaxJidBytes || !valid_utf8(in)) return std::nullopt;
  // stringprep works in place; output longer than the buffer fails with TOO_SMALL_BUFFER, which
  // we treat as "too long" since anything above kMaxPartBytes is rejected anyway.
  std::string buf(std::max(in.size(), kMaxPartBytes) + 2, '\0');
  std::memcpy(buf.data(), in.data(), in.size());
  // Stored strings: unassigned code points are refused (RFC 3454 §7, RFC 6122 appendices).
  if (stringprep(buf.data(), buf.size(), STRINGPREP_NO_UNASSIGNED, profile) != STRINGPREP_OK) {
    return std::nullopt;
  }
  buf.resize(std::strlen(buf.c_str()));
  if (buf.empty() || buf.size() > kMaxPartBytes) return std::nullopt;
  return buf;
}

// Which profile, for the ASCII fast path below.
enum class Profile { kNode, kName, kResource };

// Printable ASCII is what nearly every JID on the wire is made of, and libidn's table walk cost
// about 15% of the server's CPU per routed message (perf, 2026-11-25). For those bytes the three
// profiles reduce to a case fold or nothing (RFC 3454): no code point in 0x20..0x7E is mapped to
// nothing (table B.1), unassigned, bidirectional (D.1) or changed by NFKC; B.2 folds only A-Z.
// Nodeprep prohibits the ASCII space (C.1.1) and the controls (C.2.1); Resourceprep only the
// controls; Nameprep neither (the label check in nameprep() rejects them). Anything else goes
// through libidn. tests/unit/xmpp_jid_test.cc checks this against libidn for every such byte.
std::optional<std::string> prepare_ascii(std::string_view in, Profile profile) {
  std::string out(in);
  for (char& c : out) {
    const auto uc = static_cast<unsigned char>(c);
    if (uc < 0x20 || uc > 0x7E) return std::nullopt;  // not for the fast path
    if (uc == 0x20 && profile == Profile::kNode) return std::nullopt;
    if (profile != Profile::kResource && c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  }
  return out;
}

// A profile applied to its own output must not change it again; otherwise parse(str()) would
// not round-trip. Stringprep is designed to be idempotent, this makes it a checked invariant.
std::optional<std::string> prepare(std::string_view in, const Stringprep_profile* profile,
                                   Profile which) {
  if (!in.empty() && in.size() <= kMaxPartBytes) {
    if (auto fast = prepare_ascii(in, which)) return fast;
  }
  auto once = run_profile(in, profile);
  if (!once) return std::nullopt;
  if (*once == in) return once;
  auto twice = run_profile(*once, profile);
  if (!twice || *twice != *once) return std::nullopt;
  return once;
}

constexpr bool valid_ascii_label_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

// RFC 7622 §3.2: an IPv6 address literal in brackets (RFC 3986 IP-literal, no IPvFuture).
std::optional<std::string> prepare_ip_literal(std::string_view domain) {
  // INET6_ADDRSTRLEN bounds the text form; the character check also keeps NUL away from
  // inet_pton, which would otherwise stop reading early.
  if (domain.size() < 3 || domain.size() > INET6_ADDRSTRLEN + 2 || domain.back() != ']') {
    return std::nullopt;
  }
  std::string inner(domain.substr(1, domain.size() - 2));
  if (inner.find_first_not_of("0123456789abcdefABCDEF:.") != std::string::npos) {
    return std::nullopt;
  }
  in6_addr addr;
  if (inet_pton(AF_INET6, inner.c_str(), &addr) != 1) return std::nullopt;
  std::string out(domain);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; });
  return out;
}

}  // namespace

std::optional<std::string> nodeprep(std::string_view local) {
  auto out = prepare(local, stringprep_xmpp_nodeprep, Profile::kNode);
  // RFC 6122 Appendix A.5 prohibits these in the Nodeprep profile; libidn's table already does,
  // the explicit check keeps the contract independent of the library version.
  if (out && out->find_first_of("\"&'/:<>@ ") != std::string::npos) return std::nullopt;
  return out;
}

std::optional<std::string> nameprep(std::string_view domain) {
  if (domain.empty() || domain.size() > kMaxJidBytes) return std::nullopt;
  if (domain.front() == '[') return prepare_ip_literal(domain);
  auto out = prepare(domain, stringprep_nameprep, Profile::kName);
  if (!out) return std::nullopt;
  // RFC 3490 §3.1: U+3002 IDEOGRAPHIC FULL STOP separates labels too (Nameprep's NFKC already
  // folded U+FF0E and U+FF61 to '.' and U+3002).
  std::string d;
  if (out->find('\xE3') == std::string::npos) {
    d = std::move(*out);  // nothing to replace (always so for ASCII)
  } else {
    d.reserve(out->size());
    for (std::size_t i = 0; i < out->size(); ++i) {
      if (out->compare(i, 3, "\xE3\x80\x82") == 0) {
        d.push_back('.');
        i += 2;
      } else {
        d.push_back((*out)[i]);
      }
    }
  }
  // RFC 7622 §3.2: a trailing dot is not part of the domainpart.
  if (!d.empty() && d.back() == '.') d.pop_back();
  if (d.empty()) return std::nullopt;
  std::size_t start = 0;
  while (start <= d.size()) {
    std::size_t end = d.find('.', start);
    if (end == std::string::npos) end = d.size();
    const std::string_view label(d.data() + start, end - start);
    if (label.empty() || label.size() > 63 * 4) return std::nullopt;
    bool ascii = true;
    for (char c : label) {
      const auto uc = static_cast<unsigned char>(c);
      if (uc >= 0x80) {
        ascii = false;
      } else if (!valid_ascii_label_char(c)) {
        return std::nullopt;
      }
    }
    // RFC 1035 §2.3.4 for ASCII labels; internationalized labels are measured in their A-label
    // form elsewhere, so only a generous bound applies to them here.
    if (ascii && label.size() > 63) return std::nullopt;
    start = end + 1;
  }
  return d;
}

std::optional<std::string> resourceprep(std::string_view resource) {
  return prepare(resource, stringprep_xmpp_resourceprep, Profile::kResource);
}

namespace {

// Byte classes for canonical_jid(): which part may hold a byte unchanged by its profile.
constexpr std::uint8_t kInLocal = 1;     // Nodeprep leaves it and allows it
constexpr std::uint8_t kInLabel = 2;     // a DNS label character nameprep() accepts as it is
constexpr std::uint8_t kInResource = 4;  // Resourceprep leaves it and allows it

constexpr std::array<std::uint8_t, 256> kJidByte = [] {
  std::array<std::uint8_t, 256> t{};
  for (int c = 0x20; c <= 0x7E; ++c) {
    std::uint8_t bits = kInResource;
    const bool upper = c >= 'A' && c <= 'Z';
    if (c != ' ' && !upper &&
        std::string_view("\"&'/:<>@").find(static_cast<char>(c)) == std::string_view::npos) {
      bits |= kInLocal;
    }
    if (valid_ascii_label_char(static_cast<char>(c))) bits |= kInLabel;
    t[static_cast<std::size_t>(c)] = bits;
  }
  return t;
}();

bool all_in(std::string_view part, std::uint8_t bit) {
  for (char c : part) {
    if ((kJidByte[static_cast<unsigned char>(c)] & bit) == 0) return false;
  }
  return true;
}

}  // namespace

std::optional<CanonicalJid> canonical_jid(std::string_view text) {
  CanonicalJid j;
  std::string_view rest = text;
  if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    j.resource = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
    if (j.resource.empty() || j.resource.size() > kMaxPartBytes ||
        !all_in(j.resource, kInResource)) {
      return std::nullopt;
    }
  }
  j.bare = rest;
  if (auto at = rest.find('@'); at != std::string_view::npos) {
    j.local = rest.substr(0, at);
    rest = rest.substr(at + 1);
    if (j.local.empty() || j.local.size() > kMaxPartBytes || !all_in(j.local, kInLocal)) {
      return std::nullopt;
    }
  }
  j.domain = rest;
  if (j.domain.empty() || j.domain.size() > kMaxPartBytes) return std::nullopt;
  // Labels of 1..63 characters between single dots; none at either end (as nameprep() checks).
  std::size_t label = 0;
  for (char c : j.domain) {
    if (c == '.') {
      if (label == 0) return std::nullopt;
      label = 0;
    } else if ((kJidByte[static_cast<unsigned char>(c)] & kInLabel) == 0 || ++label > 63) {
      return std::nullopt;
    }
  }
  if (label == 0) return std::nullopt;
  return j;
}

std::optional<Jid> Jid::parse(std::string_view text) {
  if (text.empty() || text.size() > kMaxJidBytes) return std::nullopt;
  // RFC 7622 §3.1: the resourcepart starts after the first '/', the localpart ends at the first
  // '@' before that.
  std::string_view rest = text;
  std::string_view resource;
  bool has_resource = false;
  if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    resource = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
    has_resource = true;
  }
  std::string_view local;
  bool has_local = false;
  if (auto at = rest.find('@'); at != std::string_view::npos) {
    local = rest.substr(0, at);
    rest = rest.substr(at + 1);
    has_local = true;
  }
  if ((has_local && local.empty()) || (has_resource && resource.empty()) || rest.empty()) {
    return std::nullopt;
  }
  Jid j;
  if (has_local) {
    auto l = nodeprep(local);
    if (!l) return std::nullopt;
    j.local_ = std::move(*l);
  }
  auto d = nameprep(rest);
  if (!d) return std::nullopt;
  j.domain_ = std::move(*d);
  if (has_resource) {
    auto r = resourceprep(resource);
    if (!r) return std::nullopt;
    j.resource_ = std::move(*r);
  }
  return j;
}

std::optional<Jid> Jid::from_parts(std::string_view local, std::string_view domain,
                                   std::string_view resource) {
  Jid j;
  if (!local.empty()) {
    auto l = nodeprep(local);
    if (!l) return std::nullopt;
    j.local_ = std::move(*l);
  }
  auto d = nameprep(domain);
  if (!d) return std::nullopt;
  j.domain_ = std::move(*d);
  if (!resource.empty()) {
    auto r = resourceprep(resource);
    if (!r) return std::nullopt;
    j.resource_ = std::move(*r);
  }
  return j;
}

Jid Jid::bare() const {
  Jid j;
  j.local_ = local_;
  j.domain_ = domain_;
  return j;
}

Jid Jid::with_resource(std::string_view resource) const {
  Jid j = bare();
  j.resource_ = std::string(resource);
  return j;
}

std::string Jid::bare_str() const {
  if (local_.empty()) return domain_;
  std::string s;
  s.reserve(local_.size() + 1 + domain_.size());
  s += local_;
  s += '@';
  s += domain_;
  return s;
}

std::string Jid::str() const {
  std::string s = bare_str();
  if (!resource_.empty()) {
    s += '/';
    s += resource_;
  }
  return s;
}

}  // namespace kabar::xmpp
