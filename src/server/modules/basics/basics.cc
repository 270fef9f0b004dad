// Software version (XEP-0092), ping (XEP-0199) and last activity (XEP-0012).
#include <spdlog/spdlog.h>

#include "server/c2s_session.h"
#include "server/features.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

#ifndef KABAR_VERSION
#define KABAR_VERSION "0.1.0"
#endif

namespace kabar::server {

namespace ns = xmpp::ns;

namespace {

bool to_server_or_self(const xml::Element& iq, const SessionPtr& from) {
  std::string_view to = iq.attr("to");
  if (to.empty()) return true;
  auto j = xmpp::Jid::parse(to);
  return j && (j->is_domain() || j->bare_str() == from->jid().bare_str());
}

bool to_server(const xml::Element& iq) {
  std::string_view to = iq.attr("to");
  if (to.empty()) return true;
  auto j = xmpp::Jid::parse(to);
  return j && j->is_domain();
}

}  // namespace

void register_basics(ModuleContext& ctx) {
  Server& s = ctx.server();
  ctx.disco_feature(ns::kVersion);
  ctx.disco_feature(ns::kPing);
  ctx.disco_feature(ns::kLast, kToServerOrAccount);
  // RFC 6121 Appendix E: session establishment is offered as <optional/>.
  xml::Element session_feature("session", ns::kSession);
  session_feature.add_child("optional", ns::kSession);
  ctx.stream_feature(std::move(session_feature));
  // XEP-0012 §4: once an account's last resource has gone, that time is its last activity.
  ctx.on(SessionEvent::kClosed, [&s](SessionPtr who) -> awaitable<void> {
    if (!s.sessions_of(who->jid().bare_str()).empty()) co_return;
    std::string user = who->username();
    store::LastActivity last{s.now_ms() / 1000, {}};
    try {
      auto op = [user, last](store::Store& st) { st.set_last_activity(user, last); };
      co_await s.db(std::move(op));
    } catch (const std::exception& e) {
      spdlog::error("last activity for {}: {}", user, e.what());
    }
  });
  ctx.iq(ns::kVersion, [&s](SessionPtr from, xml::Element iq) -> awaitable<void> {
    if (!to_server(iq) || iq.attr("type") != "get") {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
      co_return;
    }
    xml::Element reply = xmpp::make_iq_result(iq);
    xml::Element& q = reply.add_child("query", ns::kVersion);
    q.add_child("name", ns::kVersion).add_text("kabard");
    q.add_child("version", ns::kVersion).add_text(KABAR_VERSION);
    from->send(reply);
  });
  // RFC 3921 §3 session establishment: advertised as <optional/> in the stream features
  // (RFC 6121 Appendix E), so older clients still send it and expect an empty result.
  ctx.iq(ns::kSession, [](SessionPtr from, xml::Element iq) -> awaitable<void> {
    if (!to_server(iq) || iq.attr("type") != "set") {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
      co_return;
    }
    from->send(xmpp::make_iq_result(iq));
  });
  ctx.iq(ns::kPing, [&s](SessionPtr from, xml::Element iq) -> awaitable<void> {
    if (!to_server_or_self(iq, from) || iq.attr("type") != "get") {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
      co_return;
    }
    from->send(xmpp::make_iq_result(iq));
  });
  ctx.iq(ns::kLast, [&s](SessionPtr from, xml::Element iq) -> awaitable<void> {
    if (iq.attr("type") != "get") {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "not-allowed"));
      co_return;
    }
    xml::Element reply = xmpp::make_iq_result(iq);
    xml::Element& q = reply.add_child("query", ns::kLast);
    if (to_server(iq)) {
      // XEP-0012 §5: for the server, the time since it started.
      q.set_attr("seconds", std::to_string((s.now_ms() - s.started_ms()) / 1000));
      from->send(reply);
      co_return;
    }
    auto to = xmpp::Jid::parse(iq.attr("to"));
    std::string user = to->local();
    std::string requester = from->jid().bare_str();
    struct Answer {
      bool exists = false;
      bool allowed = false;
      std::optional<store::LastActivity> last;
    };
    auto op = [user, requester, self = from->username()](store::Store& st) {
      Answer r;
      r.exists = st.account(user).has_value();
      if (!r.exists) return r;
      auto item = st.roster_item(user, requester);
      // XEP-0012 §4: only to those subscribed to the account's presence.
      r.allowed = self == user || (item && (item->state.sub == xmpp::Subscription::kFrom ||
                                            item->state.sub == xmpp::Subscription::kBoth));
      r.last = st.last_activity(user);
      return r;
    };
    Answer a = co_await s.db(std::move(op));
    if (!a.exists) {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
      co_return;
    }
    if (!a.allowed) {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kAuth, "forbidden"));
      co_return;
    }
    std::int64_t seconds = 0;
    bool online = false;
    for (auto& x : s.resources_of(to->bare_str())) online = online || x.available;
    if (!online) {
      if (!a.last) {
        from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "item-not-found"));
        co_return;
      }
      seconds = std::max<std::int64_t>(0, s.now_ms() / 1000 - a.last->logout_unix);
      if (!a.last->status.empty()) q.add_text(a.last->status);
    }
    q.set_attr("seconds", std::to_string(seconds));
    from->send(reply);
  });
}

namespace {

class BasicsModule final : public Module {
 public:
  std::string_view name() const override { return "basics"; }
  void setup(ModuleContext& ctx) override { register_basics(ctx); }
};

}  // namespace

std::unique_ptr<Module> make_basics_module() { return std::make_unique<BasicsModule>(); }

}  // namespace kabar::server
