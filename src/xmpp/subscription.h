// The presence subscription state machine of RFC 6121 §3 and Appendix A, as pure functions: the
// server applies them to the stored roster item and acts on the returned decisions.
#pragma once

#include <optional>
#include <string_view>

namespace kabar::xmpp {

enum class Subscription { kNone, kTo, kFrom, kBoth };
std::string_view subscription_name(Subscription s);  // "none", "to", "from", "both"
std::optional<Subscription> parse_subscription(std::string_view s);

// One side's view of its relationship with a contact (RFC 6121 Appendix A.1's states, plus the
// pre-approval flag of §3.4).
struct SubState {
  Subscription sub = Subscription::kNone;
  bool pending_out = false;  // we asked the contact (ask='subscribe')
  bool pending_in = false;   // the contact asked us and we have not answered
  bool preapproved = false;  // we approved before being asked (§3.4)
  friend bool operator==(const SubState&, const SubState&) = default;
};

enum class SubscriptionType { kSubscribe, kSubscribed, kUnsubscribe, kUnsubscribed };
std::optional<SubscriptionType> parse_subscription_type(std::string_view presence_type);

// What the server does with a subscription stanza.
struct SubDecision {
  SubState next;               // the item's new state (== old when nothing changes)
  bool state_changed = false;  // store it and push the roster item to interested resources
  bool route = false;          // outbound: route the stanza to the contact; inbound: deliver it
                               // to the user's available resources (or store it for later)
  // Inbound subscribe from a contact who already has a subscription from us, or whom we
  // pre-approved: the server answers 'subscribed' on the user's behalf (§3.1.3).
  bool auto_reply_subscribed = false;
};

// The user's server processing a subscription stanza the user sends to a contact
// (RFC 6121 Appendix A.2, §3.1.2, §3.2.2, §3.3.2, §3.4).
SubDecision apply_outbound(const SubState& s, SubscriptionType t);
// The user's server processing a subscription stanza arriving from a contact
// (RFC 6121 Appendix A.3, §3.1.3, §3.1.6, §3.2.3, §3.3.3).
SubDecision apply_inbound(const SubState& s, SubscriptionType t);

}  // namespace kabar::xmpp
