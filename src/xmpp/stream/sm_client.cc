// XEP-0198 stream management, the client's counting and resend queue.
#include "xmpp/stream/sm_client.h"

#include <utility>

#include "xmpp/namespaces.h"

namespace kabar::xmpp::stream {

namespace {

bool is_true(std::string_view v) { return v == "true" || v == "1"; }

// An xs:unsignedInt in decimal digits; nullopt when empty, not digits or out of range.
std::optional<std::uint32_t> unsigned_int(std::string_view v) {
  if (v.empty() || v.size() > 10) return std::nullopt;
  std::uint64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (n > 0xffffffffULL) return std::nullopt;
  return static_cast<std::uint32_t>(n);
}

}  // namespace

std::optional<std::uint32_t> sm_h(const xml::Element& el) {
  if (!el.has_attr("h")) return std::nullopt;
  return unsigned_int(el.attr("h"));
}

bool SmClient::offered(const xml::Element& features) {
  return features.child("sm", kSmNs) != nullptr;
}

std::string SmClient::enable(bool resume) {
  state_ = State::kEnabling;
  id_.clear();
  max_ = 0;
  // §4 note: our outbound count starts at zero once <enable/> is sent.
  acked_ = 0;
  since_request_ = 0;
  request_outstanding_ = false;
  queue_.clear();
  return resume ? "<enable xmlns='urn:xmpp:sm:3' resume='true'/>"
                : "<enable xmlns='urn:xmpp:sm:3'/>";
}

std::string SmClient::outbound(std::string stanza) {
  if (state_ == State::kOff) return stanza;
  queue_.push_back(stanza);
  if (request_every_ != 0 && ++since_request_ >= request_every_) {
    stanza += request();
  }
  return stanza;
}

std::string SmClient::request() {
  since_request_ = 0;
  request_outstanding_ = true;
  return "<r xmlns='urn:xmpp:sm:3'/>";
}

std::string SmClient::ack() {
  last_ack_sent_ = h_;
  return "<a xmlns='urn:xmpp:sm:3' h='" + std::to_string(h_) + "'/>";
}

bool SmClient::apply(std::uint32_t h) {
  // §4: 'h' wraps from 2^32-1 to 0; the distance from the last value is what it acknowledges.
  const std::uint32_t newly = h - acked_;
  if (newly > queue_.size()) return false;
  for (std::uint32_t i = 0; i < newly; ++i) queue_.pop_front();
  acked_ = h;
  return true;
}

SmClient::Input SmClient::inbound(const xml::Element& el) {
  if (el.xmlns() == ns::kClient &&
      (el.name() == "message" || el.name() == "presence" || el.name() == "iq")) {
    // §4 note: the inbound count starts once <enabled/> is received.
    if (state_ == State::kOn) ++h_;
    return Input::kStanza;
  }
  if (el.xmlns() != kSmNs || state_ == State::kOff) return Input::kOther;
  if (el.name() == "r") return Input::kRequest;
  if (el.name() == "a") {
    auto h = sm_h(el);
    // §4: an <a/> MUST possess 'h'; one without is ignored rather than guessed at.
    if (!h) return Input::kOther;
    if (!apply(*h)) return Input::kTooHigh;
    request_outstanding_ = false;
    ++acks_received_;
    return Input::kAck;
  }
  if (state_ == State::kEnabling && el.name() == "enabled") {
    state_ = State::kOn;
    h_ = 0;
    last_ack_sent_ = 0;
    // §5: resumption only when the server says so (resume true or 1) and names the session.
    if (is_true(el.attr("resume"))) id_ = std::string(el.attr("id"));
    max_ = unsigned_int(el.attr("max")).value_or(0);
    return Input::kEnabled;
  }
  if (state_ == State::kEnabling && el.name() == "failed") {
    state_ = State::kOff;
    queue_.clear();
    return Input::kFailed;
  }
  return Input::kOther;
}

std::optional<std::string> SmClient::resumed(std::uint32_t h) {
  // §5: handle 'h' as on an <a/>, then resend everything still unhandled. Our own count of
  // what we handled carries over (h_ stays).
  if (!apply(h)) return std::nullopt;
  std::string out;
  for (const std::string& s : queue_) out += s;
  since_request_ = 0;
  request_outstanding_ = false;
  ++acks_received_;
  if (!queue_.empty()) out += request();
  return out;
}

std::vector<std::string> SmClient::failed(std::optional<std::uint32_t> h) {
  // §5: a <failed/> may say how many stanzas the server handled before the session timed out.
  if (h) apply(*h);
  std::vector<std::string> rest(std::make_move_iterator(queue_.begin()),
                                std::make_move_iterator(queue_.end()));
  queue_.clear();
  state_ = State::kOff;
  id_.clear();
  h_ = 0;
  acked_ = 0;
  last_ack_sent_ = 0;
  since_request_ = 0;
  request_outstanding_ = false;
  return rest;
}

}  // namespace kabar::xmpp::stream
