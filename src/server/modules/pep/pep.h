// Personal eventing (XEP-0163): every account a pubsub service (XEP-0060, the subset PEP needs),
// notifications filtered by entity capabilities (XEP-0115). The pieces here take plain values,
// so the unit test needs no session for them; the module is in pep.cc.
#pragma once

#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "store/store.h"
#include "xml/element.h"
#include "xmpp/stanza.h"

namespace kabar::server::pep {

inline constexpr const char* kPubsub = "http://jabber.org/protocol/pubsub";
inline constexpr const char* kPubsubOwner = "http://jabber.org/protocol/pubsub#owner";
inline constexpr const char* kPubsubEvent = "http://jabber.org/protocol/pubsub#event";
inline constexpr const char* kPubsubErrors = "http://jabber.org/protocol/pubsub#errors";
inline constexpr const char* kPublishOptions = "http://jabber.org/protocol/pubsub#publish-options";
inline constexpr const char* kNodeConfig = "http://jabber.org/protocol/pubsub#node_config";
inline constexpr const char* kCaps = "http://jabber.org/protocol/caps";
inline constexpr const char* kAddress = "http://jabber.org/protocol/address";

// One field of a submitted data form (XEP-0004).
struct FormField {
  std::string var;
  std::vector<std::string> values;
};
// The fields of a submitted form and its FORM_TYPE (empty when it has none); nullopt when `x`
// is not a jabber:x:data form of type submit.
struct SubmittedForm {
  std::string form_type;
  std::vector<FormField> fields;
};
std::optional<SubmittedForm> read_form(const xml::Element& x);

// Sets one node configuration field (XEP-0060 §16.4.4 names) in `c`; false when kabard does
// not know the field or cannot take its value.
bool apply_config_field(store::PepNodeConfig& c, const FormField& f);
// XEP-0060 §7.1.5: whether `c` meets a publish-options precondition; nullopt when the field is
// unknown or its value is not one the field can take (the publish is then a bad request).
std::optional<bool> meets_precondition(const store::PepNodeConfig& c, const FormField& f);
// The node configuration form (XEP-0060 §8.2.4) for `c`.
xml::Element config_form(const store::PepNodeConfig& c);

// A stanza error with a pubsub-specific condition (XEP-0060 §7, the #errors namespace) and,
// for <unsupported/>, the feature.
xml::Element pubsub_error(const xml::Element& iq, xmpp::ErrorType type, std::string_view condition,
                          std::string_view pubsub_condition = {}, std::string_view feature = {});

// Whether `requester` (a bare JID that is not the owner) may subscribe to or retrieve from a
// node with `node`'s access model: with a presence subscription to the owner
// (`has_presence_sub`), or on the whitelist. The error to answer otherwise, or nullopt.
struct AccessDenied {
  xmpp::ErrorType type;
  std::string condition;
  std::string pubsub_condition;
};
std::optional<AccessDenied> check_access(const store::PepNode& node, std::string_view requester,
                                         bool has_presence_sub);

// The +notify features entity capabilities announced, by caps 'ver' (verified against its
// hash, shared by every client that sends it) or by full JID (a legacy or unverified answer:
// that resource only). Any shard reads and writes it.
class CapsCache {
 public:
  using Features = std::shared_ptr<const std::set<std::string>>;
  Features by_ver(const std::string& ver) const;
  void put_ver(const std::string& ver, Features f);
  Features by_jid(const std::string& full) const;
  void put_jid(const std::string& full, Features f);
  void forget_jid(const std::string& full);
  std::size_t size() const;

  // Past this many hashes the oldest known one goes: clients make up new hashes only when their
  // features change, and a hostile one cannot grow the cache without bound.
  static constexpr std::size_t kMaxVers = 10'000;

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, Features> vers_;
  std::deque<std::string> order_;  // vers_ keys, oldest first
  std::unordered_map<std::string, Features> jids_;
};

}  // namespace kabar::server::pep
