#include <gtest/gtest.h>

#include <vector>

#include "xmpp/subscription.h"

namespace kabar::xmpp {
namespace {

// The nine states of RFC 6121 Appendix A.1.
const SubState kNone{Subscription::kNone, false, false, false};
const SubState kNonePendingOut{Subscription::kNone, true, false, false};
const SubState kNonePendingIn{Subscription::kNone, false, true, false};
const SubState kNonePendingOutIn{Subscription::kNone, true, true, false};
const SubState kTo{Subscription::kTo, false, false, false};
const SubState kToPendingIn{Subscription::kTo, false, true, false};
const SubState kFrom{Subscription::kFrom, false, false, false};
const SubState kFromPendingOut{Subscription::kFrom, true, false, false};
const SubState kBoth{Subscription::kBoth, false, false, false};

SubState preapproved(SubState s) {
  s.preapproved = true;
  return s;
}

struct Row {
  const char* name;  // RFC state name, for failure messages
  SubState before;
  bool route;
  SubState after;
  bool auto_reply = false;
};

void check(SubDecision (*apply)(const SubState&, SubscriptionType), SubscriptionType t,
           const std::vector<Row>& rows) {
  for (const Row& r : rows) {
    SCOPED_TRACE(r.name);
    const SubDecision d = apply(r.before, t);
    EXPECT_EQ(d.next, r.after);
    EXPECT_EQ(d.route, r.route);
    EXPECT_EQ(d.state_changed, !(r.after == r.before));
    EXPECT_EQ(d.auto_reply_subscribed, r.auto_reply);
  }
}

// RFC 6121 A.2.1: outbound "subscribe". Routed in every state (§3.1.2).
TEST(Subscription, OutboundSubscribe) {
  check(apply_outbound, SubscriptionType::kSubscribe,
        {
            // "None" -> "None + Pending Out"
            {"None", kNone, true, kNonePendingOut},
            // "None + Pending Out" -> no state change
            {"None + Pending Out", kNonePendingOut, true, kNonePendingOut},
            // "None + Pending In" -> "None + Pending Out/In"
            {"None + Pending In", kNonePendingIn, true, kNonePendingOutIn},
            // "None + Pending Out/In" -> no state change
            {"None + Pending Out/In", kNonePendingOutIn, true, kNonePendingOutIn},
            // "To" -> no state change
            {"To", kTo, true, kTo},
            // "To + Pending In" -> no state change
            {"To + Pending In", kToPendingIn, true, kToPendingIn},
            // "From" -> "From + Pending Out"
            {"From", kFrom, true, kFromPendingOut},
            // "From + Pending Out" -> no state change
            {"From + Pending Out", kFromPendingOut, true, kFromPendingOut},
            // "Both" -> no state change
            {"Both", kBoth, true, kBoth},
        });
}

// RFC 6121 A.2.2: outbound "unsubscribe". Routed in every state (§3.3.2).
TEST(Subscription, OutboundUnsubscribe) {
  check(apply_outbound, SubscriptionType::kUnsubscribe,
        {
            // "None" -> no state change
            {"None", kNone, true, kNone},
            // "None + Pending Out" -> "None"
            {"None + Pending Out", kNonePendingOut, true, kNone},
            // "None + Pending In" -> no state change
            {"None + Pending In", kNonePendingIn, true, kNonePendingIn},
            // "None + Pending Out/In" -> "None + Pending In"
            {"None + Pending Out/In", kNonePendingOutIn, true, kNonePendingIn},
            // "To" -> "None"
            {"To", kTo, true, kNone},
            // "To + Pending In" -> "None + Pending In"
            {"To + Pending In", kToPendingIn, true, kNonePendingIn},
            // "From" -> no state change
            {"From", kFrom, true, kFrom},
            // "From + Pending Out" -> "From"
            {"From + Pending Out", kFromPendingOut, true, kFrom},
            // "Both" -> "From"
            {"Both", kBoth, true, kFrom},
        });
}

// RFC 6121 §3.1.5 (approval of a pending request) and §3.4.2 (pre-approval): outbound
// "subscribed". Routed only when it approves a pending request.
TEST(Subscription, OutboundSubscribed) {
  check(apply_outbound, SubscriptionType::kSubscribed,
        {
            // "None": no request pending -> pre-approval noted, not routed (§3.4.2)
            {"None", kNone, false, preapproved(kNone)},
            // "None + Pending Out": pre-approval noted, not routed (§3.4.2)
            {"None + Pending Out", kNonePendingOut, false, preapproved(kNonePendingOut)},
            // "None + Pending In" -> "From" (§3.1.5)
            {"None + Pending In", kNonePendingIn, true, kFrom},
            // "None + Pending Out/In" -> "From + Pending Out" (§3.1.5)
            {"None + Pending Out/In", kNonePendingOutIn, true, kFromPendingOut},
            // "To": pre-approval noted, not routed (§3.4.2)
            {"To", kTo, false, preapproved(kTo)},
            // "To + Pending In" -> "Both" (§3.1.5)
            {"To + Pending In", kToPendingIn, true, kBoth},
            // "From": silently ignored (§3.4.2)
            {"From", kFrom, false, kFrom},
            // "From + Pending Out": silently ignored (§3.4.2)
            {"From + Pending Out", kFromPendingOut, false, kFromPendingOut},
            // "Both": silently ignored (§3.4.2)
            {"Both", kBoth, false, kBoth},
            // "None" already pre-approved: nothing new, not routed
            {"None (pre-approved)", preapproved(kNone), false, preapproved(kNone)},
        });
}

// RFC 6121 §3.2.2: outbound "unsubscribed" (cancel the contact's subscription or deny its
// request). Routed only when there is a subscription from the user or a pending request.
TEST(Subscription, OutboundUnsubscribed) {
  check(apply_outbound, SubscriptionType::kUnsubscribed,
        {
            // "None" -> no state change, not routed
            {"None", kNone, false, kNone},
            // "None + Pending Out" -> no state change, not routed
            {"None + Pending Out", kNonePendingOut, false, kNonePendingOut},
            // "None + Pending In" -> "None" (request denied)
            {"None + Pending In", kNonePendingIn, true, kNone},
            // "None + Pending Out/In" -> "None + Pending Out"
            {"None + Pending Out/In", kNonePendingOutIn, true, kNonePendingOut},
            // "To" -> no state change, not routed
            {"To", kTo, false, kTo},
            // "To + Pending In" -> "To"
            {"To + Pending In", kToPendingIn, true, kTo},
            // "From" -> "None"
            {"From", kFrom, true, kNone},
            // "From + Pending Out" -> "None + Pending Out"
            {"From + Pending Out", kFromPendingOut, true, kNonePendingOut},
            // "Both" -> "To"
            {"Both", kBoth, true, kTo},
            // "None" with a pre-approval: the pre-approval is withdrawn, not routed (§3.4)
            {"None (pre-approved)", preapproved(kNone), false, kNone},
            // "To" with a pre-approval: withdrawn, not routed (§3.4)
            {"To (pre-approved)", preapproved(kTo), false, kTo},
        });
}

// RFC 6121 A.3.1: inbound "subscribe".
TEST(Subscription, InboundSubscribe) {
  check(apply_inbound, SubscriptionType::kSubscribe,
        {
            // "None" -> "None + Pending In", delivered
            {"None", kNone, true, kNonePendingIn},
            // "None + Pending Out" -> "None + Pending Out/In", delivered
            {"None + Pending Out", kNonePendingOut, true, kNonePendingOutIn},
            // "None + Pending In" -> no state change, not delivered
            {"None + Pending In", kNonePendingIn, false, kNonePendingIn},
            // "None + Pending Out/In" -> no state change, not delivered
            {"None + Pending Out/In", kNonePendingOutIn, false, kNonePendingOutIn},
            // "To" -> "To + Pending In", delivered
            {"To", kTo, true, kToPendingIn},
            // "To + Pending In" -> no state change, not delivered
            {"To + Pending In", kToPendingIn, false, kToPendingIn},
            // "From" -> no state change, not delivered, auto-replied 'subscribed' (§3.1.3)
            {"From", kFrom, false, kFrom, true},
            // "From + Pending Out" -> no state change, auto-replied
            {"From + Pending Out", kFromPendingOut, false, kFromPendingOut, true},
            // "Both" -> no state change, auto-replied
            {"Both", kBoth, false, kBoth, true},
        });
}

// RFC 6121 §3.4.1 / §3.1.3: inbound "subscribe" after the user pre-approved: the subscription
// is established and answered without involving the user.
TEST(Subscription, InboundSubscribePreapproved) {
  check(apply_inbound, SubscriptionType::kSubscribe,
        {
            // "None" + pre-approval -> "From", auto-replied
            {"None (pre-approved)", preapproved(kNone), false, kFrom, true},
            // "None + Pending Out" + pre-approval -> "From + Pending Out", auto-replied
            {"None + Pending Out (pre-approved)", preapproved(kNonePendingOut), false,
             kFromPendingOut, true},
            // "To" + pre-approval -> "Both", auto-replied
            {"To (pre-approved)", preapproved(kTo), false, kBoth, true},
        });
}

// RFC 6121 A.3.2: inbound "unsubscribe".
TEST(Subscription, InboundUnsubscribe) {
  check(apply_inbound, SubscriptionType::kUnsubscribe,
        {
            // "None" -> no state change, not delivered
            {"None", kNone, false, kNone},
            // "None + Pending Out" -> no state change, not delivered
            {"None + Pending Out", kNonePendingOut, false, kNonePendingOut},
            // "None + Pending In" -> "None", delivered
            {"None + Pending In", kNonePendingIn, true, kNone},
            // "None + Pending Out/In" -> "None + Pending Out", delivered
            {"None + Pending Out/In", kNonePendingOutIn, true, kNonePendingOut},
            // "To" -> no state change, not delivered
            {"To", kTo, false, kTo},
            // "To + Pending In" -> "To", delivered
            {"To + Pending In", kToPendingIn, true, kTo},
            // "From" -> "None", delivered
            {"From", kFrom, true, kNone},
            // "From + Pending Out" -> "None + Pending Out", delivered
            {"From + Pending Out", kFromPendingOut, true, kNonePendingOut},
            // "Both" -> "To", delivered
            {"Both", kBoth, true, kTo},
        });
}

// RFC 6121 A.3.3: inbound "subscribed".
TEST(Subscription, InboundSubscribed) {
  check(apply_inbound, SubscriptionType::kSubscribed,
        {
            // "None" -> no state change, not delivered
            {"None", kNone, false, kNone},
            // "None + Pending Out" -> "To", delivered
            {"None + Pending Out", kNonePendingOut, true, kTo},
            // "None + Pending In" -> no state change, not delivered
            {"None + Pending In", kNonePendingIn, false, kNonePendingIn},
            // "None + Pending Out/In" -> "To + Pending In", delivered
            {"None + Pending Out/In", kNonePendingOutIn, true, kToPendingIn},
            // "To" -> no state change, not delivered
            {"To", kTo, false, kTo},
            // "To + Pending In" -> no state change, not delivered
            {"To + Pending In", kToPendingIn, false, kToPendingIn},
            // "From" -> no state change, not delivered
            {"From", kFrom, false, kFrom},
            // "From + Pending Out" -> "Both", delivered
            {"From + Pending Out", kFromPendingOut, true, kBoth},
            // "Both" -> no state change, not delivered
            {"Both", kBoth, false, kBoth},
        });
}

// RFC 6121 A.3.4: inbound "unsubscribed".
TEST(Subscription, InboundUnsubscribed) {
  check(apply_inbound, SubscriptionType::kUnsubscribed,
        {
            // "None" -> no state change, not delivered
            {"None", kNone, false, kNone},
            // "None + Pending Out" -> "None", delivered
            {"None + Pending Out", kNonePendingOut, true, kNone},
            // "None + Pending In" -> no state change, not delivered
            {"None + Pending In", kNonePendingIn, false, kNonePendingIn},
            // "None + Pending Out/In" -> "None + Pending In", delivered
            {"None + Pending Out/In", kNonePendingOutIn, true, kNonePendingIn},
            // "To" -> "None", delivered
            {"To", kTo, true, kNone},
            // "To + Pending In" -> "None + Pending In", delivered
            {"To + Pending In", kToPendingIn, true, kNonePendingIn},
            // "From" -> no state change, not delivered
            {"From", kFrom, false, kFrom},
            // "From + Pending Out" -> "From", delivered
            {"From + Pending Out", kFromPendingOut, true, kFrom},
            // "Both" -> "From", delivered
            {"Both", kBoth, true, kFrom},
        });
}

// A full handshake between two servers' views: user subscribes, contact approves.
TEST(Subscription, RoundTrip) {
  SubState user = kNone;     // user's item for the contact
  SubState contact = kNone;  // contact's item for the user
  auto d1 = apply_outbound(user, SubscriptionType::kSubscribe);
  ASSERT_TRUE(d1.route);
  user = d1.next;
  auto d2 = apply_inbound(contact, SubscriptionType::kSubscribe);
  ASSERT_TRUE(d2.route);
  contact = d2.next;
  auto d3 = apply_outbound(contact, SubscriptionType::kSubscribed);
  ASSERT_TRUE(d3.route);
  contact = d3.next;
  auto d4 = apply_inbound(user, SubscriptionType::kSubscribed);
  ASSERT_TRUE(d4.route);
  user = d4.next;
  EXPECT_EQ(user, kTo);
  EXPECT_EQ(contact, kFrom);
}

TEST(Subscription, Names) {
  for (auto s :
       {Subscription::kNone, Subscription::kTo, Subscription::kFrom, Subscription::kBoth}) {
    EXPECT_EQ(parse_subscription(subscription_name(s)), s);
  }
  EXPECT_FALSE(parse_subscription("remove").has_value());
  EXPECT_FALSE(parse_subscription("Both").has_value());
  EXPECT_EQ(parse_subscription_type("subscribe"), SubscriptionType::kSubscribe);
  EXPECT_EQ(parse_subscription_type("subscribed"), SubscriptionType::kSubscribed);
  EXPECT_EQ(parse_subscription_type("unsubscribe"), SubscriptionType::kUnsubscribe);
  EXPECT_EQ(parse_subscription_type("unsubscribed"), SubscriptionType::kUnsubscribed);
  EXPECT_FALSE(parse_subscription_type("probe").has_value());
  EXPECT_FALSE(parse_subscription_type("").has_value());
}

}  // namespace
}  // namespace kabar::xmpp
