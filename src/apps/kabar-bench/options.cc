#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "apps/kabar-bench/bench.h"
#include "version/version.h"

namespace kabar::bench {

namespace {

constexpr const char* kUsage =
    "usage: kabar-bench --mode register|subscribe|messages|idle|logins|presence\n"
    "  [--host H] [--port P] [--domain D] [--users N] [--first I] [--prefix u]\n"
    "  [--password PW] [--resources R] [--contacts K] [--sources S] [--concurrency C]\n"
    "  [--tls none|starttls|direct] [--mech auto|plain|scram-sha-1|scram-sha-256]\n"
    "  [--rates R1,R2,...] [--warmup S] [--measure S] [--drain S] [--max-p99-ms MS]\n"
    "  [--hold S] [--duration S] [--churn N] [--login-timeout S] [--time-limit S]\n"
    "  [--no-presence] [--no-stop] [--server-pid PID] [--perf-dir DIR] [--label L]\n"
    "  [--sm] [--sm-every N]\n"
    "  kabar-bench --help | --version\n";

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr, "kabar-bench: %s\n%s", msg, kUsage);
  std::exit(2);
}

double to_double(const char* s) {
  char* end = nullptr;
  double v = std::strtod(s, &end);
  if (end == s || *end) usage("bad number");
  return v;
}

}  // namespace

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto val = [&]() -> const char* {
      if (i + 1 >= argc) usage("missing value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (a == "--version") {
      std::printf("kabar-bench %s\n", kabar::version());
      std::exit(0);
    }
    if (a == "--mode")
      o.mode = val();
    else if (a == "--host")
      o.host = val();
    else if (a == "--port")
      o.port = static_cast<int>(to_double(val()));
    else if (a == "--domain")
      o.domain = val();
    else if (a == "--prefix")
      o.prefix = val();
    else if (a == "--password")
      o.password = val();
    else if (a == "--users")
      o.users = static_cast<int>(to_double(val()));
    else if (a == "--first")
      o.first = static_cast<int>(to_double(val()));
    else if (a == "--resources")
      o.resources = static_cast<int>(to_double(val()));
    else if (a == "--contacts")
      o.contacts = static_cast<int>(to_double(val()));
    else if (a == "--sources")
      o.sources = static_cast<int>(to_double(val()));
    else if (a == "--concurrency")
      o.concurrency = static_cast<int>(to_double(val()));
    else if (a == "--tls")
      o.tls = val();
    else if (a == "--mech")
      o.mech = val();
    else if (a == "--rates" || a == "--rate") {
      o.rates.clear();
      std::string_view s = val();
      while (!s.empty()) {
        auto comma = s.find(',');
        std::string part(s.substr(0, comma));
        o.rates.push_back(to_double(part.c_str()));
        s = comma == std::string_view::npos ? std::string_view{} : s.substr(comma + 1);
      }
    } else if (a == "--warmup")
      o.warmup = to_double(val());
    else if (a == "--measure")
      o.measure = to_double(val());
    else if (a == "--drain")
      o.drain = to_double(val());
    else if (a == "--max-p99-ms")
      o.max_p99_ms = to_double(val());
    else if (a == "--hold")
      o.hold = to_double(val());
    else if (a == "--duration")
      o.duration = to_double(val());
    else if (a == "--churn")
      o.churn = to_double(val());
    else if (a == "--login-timeout")
      o.login_timeout = to_double(val());
    else if (a == "--time-limit")
      o.time_limit = to_double(val());
    else if (a == "--no-presence")
      o.presence = false;
    else if (a == "--sm")
      o.sm = true;
    else if (a == "--sm-every")
      o.sm_every = std::max(1, static_cast<int>(to_double(val())));
    else if (a == "--no-stop")
      o.stop_on_fail = false;
    else if (a == "--server-pid")
      o.server_pid = static_cast<int>(to_double(val()));
    else if (a == "--perf-dir")
      o.perf_dir = val();
    else if (a == "--label")
      o.label = val();
    else
      usage("unknown option");
  }
  static const char* modes[] = {"register", "subscribe", "messages", "idle", "logins", "presence"};
  if (std::none_of(std::begin(modes), std::end(modes), [&](const char* m) { return o.mode == m; }))
    usage("unknown mode");
  if (o.tls != "none" && o.tls != "starttls" && o.tls != "direct") usage("bad --tls");
  if (o.users <= 0 || o.resources <= 0 || o.concurrency <= 0 || o.rates.empty()) usage("bad sizes");
  if (o.contacts >= o.users) o.contacts = (o.users - 1) / 2 * 2;
  return o;
}

}  // namespace kabar::bench
