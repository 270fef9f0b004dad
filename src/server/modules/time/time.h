// Entity time (XEP-0202): the server answers <time xmlns='urn:xmpp:time'/> with its UTC time
// and its time zone offset. The walkthrough module of README's "Adding a XEP".
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "server/core/module.h"
#include "xml/element.h"

namespace kabar::server {

inline constexpr const char* kTimeNs = "urn:xmpp:time";

// "+hh:mm" / "-hh:mm" for an offset from UTC in seconds, "Z" for none (XEP-0082 TZD).
std::string time_zone_designator(long offset_s);
// The result for `iq` (a get carrying <time/>) at `now_ms` (Unix ms), for an entity whose
// local time is `offset_s` seconds ahead of UTC (XEP-0202 §3).
xml::Element entity_time_result(const xml::Element& iq, std::int64_t now_ms, long offset_s);

std::unique_ptr<Module> make_time_module();

}  // namespace kabar::server
