// XMPP addresses (RFC 7622): localpart@domainpart/resourcepart.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace kabar::xmpp {

class Jid {
 public:
  Jid() = default;
  // Parses and normalizes: localpart with stringprep Nodeprep (case-folded; rejects
  // " & ' / : < > @ and spaces), domainpart lower-cased with Nameprep (a trailing dot removed;
  // IP literals kept), resourcepart with Resourceprep. Each part 1..1023 bytes after preparation,
  // the whole string at most 3071 bytes; an empty localpart or resourcepart where its separator is
  // present is invalid. Returns nullopt when the input is not a valid JID.
  static std::optional<Jid> parse(std::string_view text);
  // Builds from parts, each prepared as in parse(); nullopt when invalid. Empty local/resource
  // mean absent.
  static std::optional<Jid> from_parts(std::string_view local, std::string_view domain,
                                       std::string_view resource = {});

  const std::string& local() const { return local_; }
  const std::string& domain() const { return domain_; }
  const std::string& resource() const { return resource_; }
  bool empty() const { return domain_.empty(); }
  bool is_bare() const { return resource_.empty(); }
  bool is_domain() const { return local_.empty() && resource_.empty(); }

  Jid bare() const;                                    // without the resource
  Jid with_resource(std::string_view resource) const;  // resource must be prepared already
  std::string str() const;                             // full form
  std::string bare_str() const;                        // local@domain or domain

  friend bool operator==(const Jid& a, const Jid& b) = default;

 private:
  std::string local_;
  std::string domain_;
  std::string resource_;
};

// A JID string already in the form Jid::parse() gives back, split without copying: printable
// ASCII, nothing a profile would fold or reject (no upper-case letter in the localpart or
// domainpart), a domainpart of DNS labels (no trailing dot, no IP literal). For such a string
// Jid::parse(text)->str() == text. Returns nullopt for anything else, valid or not: Jid::parse()
// then decides. For routing without building a Jid per message.
struct CanonicalJid {
  std::string_view local;  // empty when there is none
  std::string_view domain;
  std::string_view resource;  // empty when there is none
  std::string_view bare;      // local@domain or domain
};
std::optional<CanonicalJid> canonical_jid(std::string_view text);

// The bare part and the resource part of a JID's text, split at its first '/' (a localpart and
// a domainpart hold none), without checking or preparing anything: for a JID known to be valid,
// such as a bound session's.
inline std::string_view bare_part(std::string_view jid) { return jid.substr(0, jid.find('/')); }
inline std::string_view resource_part(std::string_view jid) {
  const std::size_t slash = jid.find('/');
  return slash == std::string_view::npos ? std::string_view() : jid.substr(slash + 1);
}

// Prepares one part; nullopt if invalid. Exposed for tests and for registration checks.
std::optional<std::string> nodeprep(std::string_view local);
std::optional<std::string> nameprep(std::string_view domain);
std::optional<std::string> resourceprep(std::string_view resource);

}  // namespace kabar::xmpp

template <>
struct std::hash<kabar::xmpp::Jid> {
  std::size_t operator()(const kabar::xmpp::Jid& j) const noexcept {
    return std::hash<std::string>{}(j.str());
  }
};
