// XEP-0198 stream management: enabling (§3), acks both ways (§4), resumption (§5), errors (§6).
// See sm.h for what kabard promises about an ack.
#include "server/modules/sm/sm.h"

#include <spdlog/spdlog.h>

#include <charconv>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "server/c2s_session.h"
#include "server/config.h"
#include "server/server.h"
#include "xml/serializer.h"
#include "xml/stream_parser.h"
#include "xmpp/hex.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

namespace kabar::server {

namespace ns = xmpp::ns;

namespace {

// Bytes of randomness in a resumption id: 128 bits, hex-encoded (XEP-0198 §5, §8: an id must
// not be guessable; it is also bound to its account).
constexpr std::size_t kIdBytes = 16;
// Ids of ended sessions remembered for <failed h=.../> (§5), at most this many.
constexpr std::size_t kMaxTombstones = 10'000;

// The module's state of one session.
struct SmState {
  std::string id;  // resumption id; empty: not resumable
};

// An 'h' attribute: xs:unsignedInt (§7 schema), decimal digits only.
std::optional<std::uint32_t> parse_h(std::string_view text) {
  if (text.empty() || text.size() > 10) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (v > 0xffffffffu) return std::nullopt;
  return static_cast<std::uint32_t>(v);
}

std::string failed(std::string_view condition, std::optional<std::uint32_t> h = std::nullopt) {
  std::string out = "<failed xmlns='urn:xmpp:sm:3'";
  if (h) out += " h='" + std::to_string(*h) + "'";
  out += "><";
  out += condition;
  out += " xmlns='";
  out += ns::kStanzas;
  out += "'/></failed>";
  return out;
}

class SmModule final : public Module {
 public:
  std::string_view name() const override { return "sm"; }

  void setup(ModuleContext& ctx) override {
    server_ = &ctx.server();
    window_ms_ = std::int64_t{ctx.config().sm_resume_timeout_s} * 1000;
    // §3: offered after authentication, so that <resume/> can come instead of bind.
    ctx.stream_feature(xml::Element("sm", std::string(kSmNs)));
    ctx.nonza(std::string(kSmNs), [this](SessionPtr s, xml::Element el) -> awaitable<void> {
      co_await handle(std::move(s), std::move(el));
    });
    ctx.on(SessionEvent::kClosed,
           [this](SessionPtr s) -> awaitable<void> { co_await session_over(std::move(s)); });
  }

 private:
  struct Live {
    std::weak_ptr<C2sSession> session;
    std::string username;
    std::string full_jid;
  };
  struct Tombstone {
    std::string username;
    std::uint32_t h = 0;
    std::int64_t until_ms = 0;
  };

  awaitable<void> handle(SessionPtr s, xml::Element el) {
    const std::string& n = el.name();
    if (n == "enable") {
      enable(*s, el);
    } else if (n == "resume") {
      co_await resume(s, el);
    } else if (n == "r" && s->sm_enabled()) {
      // §4: answered with the count of stanzas handled so far (process() counts each when its
      // handling is over; <r/> is processed in order behind them), once their effects are
      // durable: at once, or when the message log has committed what they logged.
      s->answer_ack_request();
    } else if (n == "a" && s->sm_enabled()) {
      Server::take_log_removals();
      ack(*s, el);
      // The ack let logged messages go: an <r/> after it is answered once that is committed,
      // so the client can tell its ack is on disk (a crash then brings none of those messages
      // back). The commit is the next gathered one (a run at once for every <a/> woke the
      // store's thread hundreds of times a second at 4,000 msg/s), and the stream does not wait
      // for it: holding the next stanza back put every message of a busy sender behind the
      // archive's commits (p99 past 100 ms at 16,000 msg/s).
      if (Server::take_log_removals()) s->removals_later();
    } else {
      // <r/> or <a/> without stream management, or an element the client does not send.
      s->stream_error("unsupported-stanza-type");
    }
  }

  void enable(C2sSession& s, const xml::Element& el) {
    // §3: only after resource binding, and only once.
    if (!s.bound() || s.sm_enabled()) {
      s.send_nonza(failed("unexpected-request"));
      return;
    }
    const std::string_view resume = el.attr("resume");
    const bool resumable = resume == "true" || resume == "1";
    s.enable_sm(resumable, window_ms_);
    if (!resumable) {
      s.send_nonza("<enabled xmlns='urn:xmpp:sm:3'/>");
      return;
    }
    std::string id;
    {
      std::lock_guard lock(mu_);  // also around the generator, which shards share
      id = xmpp::to_hex(server_->random().bytes(kIdBytes));
      live_[id] = Live{s.weak_from_this(), s.username(), s.jid_str()};
    }
    s.ext<SmState>().id = id;
    // §5: resume='true' and the id; 'max', the longest the session waits, in seconds.
    s.send_nonza("<enabled xmlns='urn:xmpp:sm:3' id='" + id + "' resume='true' max='" +
                 std::to_string(window_ms_ / 1000) + "'/>");
  }

  void ack(C2sSession& s, const xml::Element& el) {
    const auto h = parse_h(el.attr("h"));
    if (!h) {
      s.stream_error("bad-format", "<a/> needs a numeric 'h'");  // §4: 'h' is required
      return;
    }
    if (!s.ack(*h)) too_high(s, *h, static_cast<std::uint32_t>(s.out_queue().written()));
  }

  // §6: more acknowledged than was sent.
  static void too_high(C2sSession& s, std::uint32_t h, std::uint32_t sent) {
    s.stream_error("undefined-condition", {},
                   "<handled-count-too-high xmlns='urn:xmpp:sm:3' h='" + std::to_string(h) +
                       "' send-count='" + std::to_string(sent) + "'/>");
  }

  awaitable<void> resume(SessionPtr s, const xml::Element& el) {
    // §5: after authentication (the session calls this only then), instead of binding.
    if (s->bound() || s->sm_enabled()) {
      s->send_nonza(failed("unexpected-request"));
      co_return;
    }
    const std::string previd(el.attr("previd"));
    const auto h = parse_h(el.attr("h"));
    if (previd.empty() || !h) {
      s->send_nonza(failed("bad-request"));
      co_return;
    }
    SessionPtr old;
    std::string full;
    std::optional<std::uint32_t> gone_h;
    {
      std::lock_guard lock(mu_);
      // An id is bound to its account: another account's id is as unknown as a made-up one.
      if (auto it = live_.find(previd); it != live_.end() && it->second.username == s->username()) {
        old = it->second.session.lock();
        full = it->second.full_jid;
      } else if (auto t = gone_.find(previd); t != gone_.end() &&
                                              t->second.username == s->username() &&
                                              t->second.until_ms > server_->now_ms()) {
        gone_h = t->second.h;  // §5: the count of stanzas received before it timed out
      }
    }
    auto jid = old ? xmpp::Jid::parse(full) : std::nullopt;
    if (!old || !jid) {
      s->send_nonza(failed("item-not-found", gone_h));
      co_return;
    }
    s->begin_resume(*jid);
    // The old session's state moves here on its own shard (it may be another one).
    auto take = [old, s]() -> awaitable<std::optional<C2sSession::Resumption>> {
      co_return old->hand_over(s);
    };
    std::optional<C2sSession::Resumption> r =
        co_await asio::co_spawn(*old->shard().io, take(), asio::use_awaitable);
    if (!r) {
      // It ended meanwhile (its window passed, or another stream resumed it first).
      s->resume_failed();
      s->send_nonza(failed("item-not-found"));
      co_return;
    }
    // The directory points here now; stanzas routed to the old session before that are still
    // being forwarded here. Once they all have arrived, the new stream starts.
    co_await server_->posts_settled(old->shard());
    // §5's 'h' acknowledges the client's stanzas as an <a/> does, and an ack here means durable
    // (store/message_log.h): what the old stream handled is committed first. Then no commit is
    // pending any more (the old session's callbacks may still be on their way; they find none).
    if ((!r->pending_commits.empty() || r->removals_pending) && co_await server_->log_committed()) {
      r->pending_commits.clear();
    }
    {
      std::lock_guard lock(mu_);
      live_[previd].session = s;
    }
    const std::uint32_t sent = static_cast<std::uint32_t>(r->out.written());
    // A commit that failed: only what came before it counts (the client sends the rest again).
    const std::uint32_t durable =
        r->pending_commits.empty() ? r->handled_in : r->pending_commits.front().first - 1;
    std::string resumed = "<resumed xmlns='urn:xmpp:sm:3' h='" + std::to_string(durable) +
                          "' previd='" + previd + "'/>";
    if (!s->adopt(std::move(*r), *h, std::move(resumed))) {
      too_high(*s, *h, sent);
      co_return;
    }
    spdlog::info("sm: {} resumed", s->jid_str());
    co_await server_->fire(SessionEvent::kResumed, s);
  }

  // The session is over (kClosed: it has left the directory, its unavailable presence is out).
  awaitable<void> session_over(SessionPtr s) {
    if (!s->sm_enabled()) co_return;
    const std::string& id = s->ext<SmState>().id;
    if (!id.empty()) {
      std::lock_guard lock(mu_);
      auto it = live_.find(id);
      if (it != live_.end() && it->second.session.lock() == s) live_.erase(it);
      gone_[id] = Tombstone{s->username(), s->durable_h(), server_->now_ms() + window_ms_};
      gone_order_.push_back(id);
      while (gone_order_.size() > kMaxTombstones) {
        gone_.erase(gone_order_.front());
        gone_order_.pop_front();
      }
    }
    // Its unacknowledged stanzas were routed again before kClosed (Server::session_closed(),
    // core/undelivered.h).
  }

  Server* server_ = nullptr;
  std::int64_t window_ms_ = 0;
  std::mutex mu_;  // the registry is shared by every shard
  std::unordered_map<std::string, Live> live_;
  std::unordered_map<std::string, Tombstone> gone_;
  std::deque<std::string> gone_order_;
};

}  // namespace

std::unique_ptr<Module> make_sm_module() { return std::make_unique<SmModule>(); }

}  // namespace kabar::server
