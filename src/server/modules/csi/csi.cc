// Client State Indication (XEP-0352, urn:xmpp:csi:0). A client tells the server it is inactive
// (<inactive/>) or active again (<active/>); nothing is answered (§4). While a session is
// inactive it carries a hold (C2sSession::OutboundHold, its state in ext<CsiHold>()) that sees
// every stanza before it is queued for the client:
// - presence updates (available, unavailable) are kept, the latest per full JID of the sender;
// - messages with nothing but a chat state (XEP-0085) are kept, the latest per sender;
// - everything else goes at once: messages with a body (or any other payload), IQs,
//   subscription requests and answers, errors, the client's own presence. Before such a stanza
//   goes, what is kept from its sender (any resource of that bare JID) goes, so each sender's
//   order holds;
// - <active/> queues everything kept, in order, before the next element from the client is
//   handled (§5.1); so does going past [csi] max_held stanzas or 1 MiB kept (the session's
//   congestion mark), after which the hold starts again from nothing.
// Kept stanzas are not queued, so stream management (XEP-0198) neither counts nor resends them
// until they are. A session that ends hands what it kept on as undelivered, after its queue (a
// chat state may go to another resource; presence to a resource gone is dropped, RFC 6121 §4.3.3
// and §4.5); a stream resumed (XEP-0198) starts active (§5.2) and writes what was kept after the
// stanzas it resends. A session that never goes inactive pays one pointer test per stanza.
#include "server/modules/csi/csi.h"

#include <spdlog/spdlog.h>

#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "server/c2s_session.h"
#include "server/config.h"
#include "server/core/stanza_reader.h"
#include "server/features.h"
#include "xmpp/jid.h"
#include "xmpp/namespaces.h"

namespace kabar::server {

namespace {

constexpr std::string_view kCsiChatStatesNs = "http://jabber.org/protocol/chatstates";
constexpr std::string_view kCsiHintsNs = "urn:xmpp:hints";  // XEP-0334
constexpr std::string_view kCsiSidNs = "urn:xmpp:sid:0";    // XEP-0359

// The state of one session's hold (its shard only).
class CsiHold final : public C2sSession::OutboundHold {
 public:
  std::size_t max_held = 1000;
  std::size_t max_bytes = C2sSession::kHighWatermark;
  std::size_t max_stanza_bytes = 0;

  bool take(C2sSession& s, OutQueue::Entry& e) override {
    // An IQ never waits, and with nothing held it has nothing to go after: no need to read it.
    if (held_.empty() && (e.head ? *e.head : e.own).starts_with("<iq")) return false;
    std::optional<xml::Element> stanza = read(e);
    if (!stanza) {
      flush_all(s);  // not understood: it goes, after everything kept
      return false;
    }
    const std::string_view from = stanza->attr("from");
    const CsiWait wait = csi_wait(*stanza, s.jid_str());
    if (wait == CsiWait::kNow) {
      flush_sender(s, xmpp::bare_part(from));
      return false;
    }
    std::string key(wait == CsiWait::kPresence ? "p" : "m");
    key += from;
    if (auto it = index_.find(key); it != index_.end()) {
      // Superseded: the newer one takes its place at the end. What the old entry stood for is
      // done (a chat state logged in flight lets its record go).
      Held& old = *it->second;
      if (old.entry.on_written) std::exchange(old.entry.on_written, {})();
      forget(it->second);
      index_.erase(it);
    }
    bytes_ += e.size();
    held_.push_back(Held{key, std::string(xmpp::bare_part(from)), std::move(e)});
    index_.emplace(std::move(key), std::prev(held_.end()));
    ++per_sender_[held_.back().sender];
    if (held_.size() > max_held || bytes_ > max_bytes) {
      spdlog::debug("csi: {} keeps {} stanzas ({} bytes): queued", s.jid_str(), held_.size(),
                    bytes_);
      flush_all(s);
    }
    return true;
  }

  std::vector<OutQueue::Entry> release() override {
    std::vector<OutQueue::Entry> out;
    out.reserve(held_.size());
    for (Held& h : held_) out.push_back(std::move(h.entry));
    held_.clear();
    index_.clear();
    per_sender_.clear();
    bytes_ = 0;
    return out;
  }

  void flush_all(C2sSession& s) {
    for (OutQueue::Entry& e : release()) s.queue_held(std::move(e));
  }

 private:
  struct Held {
    std::string key;     // 'p' or 'm', then the sender's full JID
    std::string sender;  // its bare JID
    OutQueue::Entry entry;
  };
  using Iter = std::list<Held>::iterator;

  std::optional<xml::Element> read(const OutQueue::Entry& e) const {
    // One parser per shard thread, made again after a stanza it could not read.
    thread_local std::unique_ptr<StanzaReader> reader;
    if (!reader || !reader->ok()) {
      reader = std::make_unique<StanzaReader>(max_stanza_bytes);
    }
    return reader->read(e);
  }

  void flush_sender(C2sSession& s, std::string_view bare) {
    auto count = per_sender_.find(std::string(bare));
    if (count == per_sender_.end()) return;
    std::size_t left = count->second;
    for (auto it = held_.begin(); it != held_.end() && left > 0;) {
      if (it->sender != bare) {
        ++it;
        continue;
      }
      OutQueue::Entry e = std::move(it->entry);
      index_.erase(it->key);
      auto next = std::next(it);
      forget(it);
      it = next;
      --left;
      s.queue_held(std::move(e));
    }
  }

  // Removes `it` from the list and the counts (not from index_).
  void forget(Iter it) {
    bytes_ -= it->entry.size();
    if (auto c = per_sender_.find(it->sender); c != per_sender_.end() && --c->second == 0) {
      per_sender_.erase(c);
    }
    held_.erase(it);
  }

  std::list<Held> held_;  // in the order they came
  std::unordered_map<std::string, Iter> index_;
  std::unordered_map<std::string, std::size_t> per_sender_;
  std::size_t bytes_ = 0;
};

class CsiModule final : public Module {
 public:
  std::string_view name() const override { return "csi"; }

  void setup(ModuleContext& ctx) override {
    const Config& cfg = ctx.config();
    if (!cfg.csi_enabled) return;  // not offered; a CSI nonza is unsupported-stanza-type
    max_held_ = cfg.csi_max_held;
    max_stanza_bytes_ = cfg.max_stanza_bytes;
    // §3: offered after authentication, beside bind.
    ctx.stream_feature(xml::Element("csi", std::string(kCsiNs)));
    // From an authenticated session (before authentication the negotiator answers a CSI
    // element as any other: <not-authorized/>, RFC 6120 §4.9.3.12).
    ctx.nonza(std::string(kCsiNs), [this](SessionPtr s, xml::Element el) -> awaitable<void> {
      handle(*s, el);
      co_return;
    });
  }

 private:
  void handle(C2sSession& s, const xml::Element& el) {
    // §4: no reply to either element.
    if (el.name() == "inactive") {
      // Not bound yet: nothing is routed to the stream, and one that resumes a session
      // (XEP-0198 <resume/>) starts active (§5.2): ignored, as the XEP lets a server do.
      if (s.has_hold() || !s.bound()) return;
      CsiHold& hold = s.ext<CsiHold>();
      hold.max_held = max_held_;
      hold.max_stanza_bytes = max_stanza_bytes_;
      s.set_hold(&hold);
    } else if (el.name() == "active") {
      if (!s.has_hold()) return;
      // §5.1: everything kept is queued before the next element from the client is handled.
      s.set_hold(nullptr);
      s.ext<CsiHold>().flush_all(s);
    } else {
      s.stream_error("unsupported-stanza-type");
    }
  }

  std::size_t max_held_ = 1000;
  std::size_t max_stanza_bytes_ = 0;
};

}  // namespace

CsiWait csi_wait(const xml::Element& stanza, std::string_view own_jid) {
  const std::string_view from = stanza.attr("from");
  if (from.empty() || from == own_jid) return CsiWait::kNow;
  const std::string_view type = stanza.attr("type");
  if (stanza.name() == "presence") {
    // Subscription requests and answers, probes and errors go at once.
    return type.empty() || type == "unavailable" ? CsiWait::kPresence : CsiWait::kNow;
  }
  if (stanza.name() != "message" || type == "error" || type == "groupchat") return CsiWait::kNow;
  // XEP-0085 alone: a chat state with at most a thread, XEP-0334 hints and XEP-0359 ids beside
  // it. A body, a subject, a receipt, a marker, a carbon, a delay: anything else goes at once.
  bool chat_state = false;
  for (const xml::Element* c : stanza.children()) {
    const std::string& x = c->xmlns();
    if (x == kCsiChatStatesNs) {
      chat_state = true;
    } else if (!(x == kCsiHintsNs || x == kCsiSidNs ||
                 (x == xmpp::ns::kClient && c->name() == "thread"))) {
      return CsiWait::kNow;
    }
  }
  return chat_state ? CsiWait::kChatState : CsiWait::kNow;
}

std::unique_ptr<Module> make_csi_module() { return std::make_unique<CsiModule>(); }

}  // namespace kabar::server
