#include "xmpp/subscription.h"

namespace kabar::xmpp {
namespace {

bool has_to(Subscription s) { return s == Subscription::kTo || s == Subscription::kBoth; }
bool has_from(Subscription s) { return s == Subscription::kFrom || s == Subscription::kBoth; }

Subscription make(bool to, bool from) {
  if (to && from) return Subscription::kBoth;
  if (to) return Subscription::kTo;
  if (from) return Subscription::kFrom;
  return Subscription::kNone;
}

// The states of RFC 6121 Appendix A.1 cannot express "Pending In" together with a subscription
// from the user ("From + Pending In" does not exist), nor "Pending Out" with "To". Items stored
// by older code may still carry such flags; they are read as the nearest defined state.
SubState normalize(SubState s) {
  if (has_from(s.sub)) {
    s.pending_in = false;
    s.preapproved = false;
  }
  if (has_to(s.sub)) s.pending_out = false;
  return s;
}

SubDecision decide(const SubState& old, const SubState& next, bool route) {
  SubDecision d;
  d.next = next;
  d.state_changed = !(next == old);
  d.route = route;
  return d;
}

}  // namespace

std::string_view subscription_name(Subscription s) {
  switch (s) {
    case Subscription::kNone:
      return "none";
    case Subscription::kTo:
      return "to";
    case Subscription::kFrom:
      return "from";
    case Subscription::kBoth:
      return "both";
  }
  return "none";
}

std::optional<Subscription> parse_subscription(std::string_view s) {
  if (s == "none") return Subscription::kNone;
  if (s == "to") return Subscription::kTo;
  if (s == "from") return Subscription::kFrom;
  if (s == "both") return Subscription::kBoth;
  return std::nullopt;
}

std::optional<SubscriptionType> parse_subscription_type(std::string_view presence_type) {
  if (presence_type == "subscribe") return SubscriptionType::kSubscribe;
  if (presence_type == "subscribed") return SubscriptionType::kSubscribed;
  if (presence_type == "unsubscribe") return SubscriptionType::kUnsubscribe;
  if (presence_type == "unsubscribed") return SubscriptionType::kUnsubscribed;
  return std::nullopt;
}

SubDecision apply_outbound(const SubState& old, SubscriptionType t) {
  const SubState s = normalize(old);
  SubState n = s;
  const bool to = has_to(s.sub);
  const bool from = has_from(s.sub);
  switch (t) {
    case SubscriptionType::kSubscribe:
      // A.2.1 / §3.1.2: ask for the contact's presence unless we already have it; the request
      // is routed in every state (the contact's server deduplicates).
      if (!to) n.pending_out = true;
      return decide(old, n, true);

    case SubscriptionType::kUnsubscribe:
      // A.2.2 / §3.3.2: drop our subscription to the contact and any pending request; routed in
      // every state.
      n.sub = make(false, from);
      n.pending_out = false;
      return decide(old, n, true);

    case SubscriptionType::kSubscribed:
      if (from) {
        // §3.1.5 / §3.4.2: "From", "From + Pending Out", "Both": silently ignored.
        return decide(old, s, false);
      }
      if (s.pending_in) {
        // §3.1.5: approving a pending request: "None + Pending In" -> "From",
        // "None + Pending Out/In" -> "From + Pending Out", "To + Pending In" -> "Both".
        n.sub = make(to, true);
        n.pending_in = false;
        n.preapproved = false;
        return decide(old, n, true);
      }
      // §3.4.2: "None", "None + Pending Out", "To" without a request: note a pre-approval and do
      // not route the stanza.
      n.preapproved = true;
      return decide(old, n, false);

    case SubscriptionType::kUnsubscribed:
      if (from || s.pending_in) {
        // §3.2.2: cancel the contact's subscription or deny its pending request:
        // "None + Pending In" -> "None", "None + Pending Out/In" -> "None + Pending Out",
        // "To + Pending In" -> "To", "From" -> "None", "From + Pending Out" ->
        // "None + Pending Out", "Both" -> "To".
        n.sub = make(to, false);
        n.pending_in = false;
        n.preapproved = false;
        return decide(old, n, true);
      }
      // §3.2.2 / §3.4: "None", "None + Pending Out", "To": nothing to cancel except a
      // pre-approval, which is withdrawn; the stanza is not routed.
      n.preapproved = false;
      return decide(old, n, false);
  }
  return decide(old, s, false);
}

SubDecision apply_inbound(const SubState& old, SubscriptionType t) {
  const SubState s = normalize(old);
  SubState n = s;
  const bool to = has_to(s.sub);
  const bool from = has_from(s.sub);
  switch (t) {
    case SubscriptionType::kSubscribe: {
      if (from) {
        // A.3.1 / §3.1.3: "From", "From + Pending Out", "Both": the contact is already
        // subscribed; answer 'subscribed' on the user's behalf, deliver nothing.
        SubDecision d = decide(old, s, false);
        d.auto_reply_subscribed = true;
        return d;
      }
      if (s.preapproved) {
        // §3.4.1 / §3.1.3: pre-approved: the subscription is established without asking the
        // user: "None" -> "From", "None + Pending Out" -> "From + Pending Out", "To" -> "Both".
        n.sub = make(to, true);
        n.pending_in = false;
        n.preapproved = false;
        SubDecision d = decide(old, n, false);
        d.auto_reply_subscribed = true;
        return d;
      }
      if (s.pending_in) {
        // A.3.1: "None + Pending In", "None + Pending Out/In", "To + Pending In": a duplicate of
        // a request the user has already been shown.
        return decide(old, s, false);
      }
      // A.3.1: "None" -> "None + Pending In", "None + Pending Out" -> "None + Pending Out/In",
      // "To" -> "To + Pending In"; delivered to the user (or kept until the user is online).
      n.pending_in = true;
      return decide(old, n, true);
    }

    case SubscriptionType::kUnsubscribe:
      // A.3.2 / §3.3.3: the contact no longer wants the user's presence, or withdraws its
      // request. Delivered only when something is cancelled.
      if (from || s.pending_in) {
        n.sub = make(to, false);
        n.pending_in = false;
        return decide(old, n, true);
      }
      return decide(old, s, false);

    case SubscriptionType::kSubscribed:
      // A.3.3 / §3.1.6: the contact approved our request; only meaningful while pending out.
      if (s.pending_out) {
        n.sub = make(true, from);
        n.pending_out = false;
        return decide(old, n, true);
      }
      return decide(old, s, false);

    case SubscriptionType::kUnsubscribed:
      // A.3.4 / §3.2.3: the contact cancelled our subscription or denied our request.
      if (to || s.pending_out) {
        n.sub = make(false, from);
        n.pending_out = false;
        return decide(old, n, true);
      }
      return decide(old, s, false);
  }
  return decide(old, s, false);
}

}  // namespace kabar::xmpp
