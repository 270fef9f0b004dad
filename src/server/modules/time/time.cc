// XEP-0202 entity time, for the server's own JID.
#include "server/modules/time/time.h"

#include <cstdio>
#include <cstdlib>
#include <ctime>

#include "server/c2s_session.h"
#include "xmpp/stanza.h"

namespace kabar::server {

std::string time_zone_designator(long offset_s) {
  if (offset_s == 0) return "Z";
  const char sign = offset_s < 0 ? '-' : '+';
  const long m = std::labs(offset_s) / 60;
  char buf[8];
  std::snprintf(buf, sizeof buf, "%c%02ld:%02ld", sign, (m / 60) % 100, m % 60);
  return buf;
}

xml::Element entity_time_result(const xml::Element& iq, std::int64_t now_ms, long offset_s) {
  xml::Element reply = xmpp::make_iq_result(iq);
  xml::Element& t = reply.add_child("time", kTimeNs);
  // §3: <tzo/> is a XEP-0082 time zone designator; <utc/> a XEP-0082 DateTime in UTC.
  t.add_child("tzo", kTimeNs).add_text(time_zone_designator(offset_s));
  t.add_child("utc", kTimeNs).add_text(xmpp::format_datetime(now_ms));
  return reply;
}

namespace {

// The host's offset from UTC at `now_ms` (daylight saving time included).
long local_offset_s(std::int64_t now_ms) {
  const std::time_t secs = static_cast<std::time_t>(now_ms / 1000);
  std::tm tm{};
  if (localtime_r(&secs, &tm) == nullptr) return 0;
  return tm.tm_gmtoff;
}

class TimeModule final : public Module {
 public:
  std::string_view name() const override { return "time"; }

  void setup(ModuleContext& ctx) override {
    Server& s = ctx.server();
    // Only a get addressed to the server: anything else is answered service-unavailable by the
    // router (RFC 6120 §8.4). Full JIDs never get here: their resource answers for itself.
    ctx.iq(
        kTimeNs,
        [&s](SessionPtr from, xml::Element iq) -> awaitable<void> {
          const std::int64_t now = s.clock().now_ms();
          from->send(entity_time_result(iq, now, local_offset_s(now)));
          co_return;
        },
        kIqGet, kToServer);
    // §5: the feature is announced in the server's disco#info.
    ctx.disco_feature(kTimeNs, kToServer);
  }
};

}  // namespace

std::unique_ptr<Module> make_time_module() { return std::make_unique<TimeModule>(); }

}  // namespace kabar::server
