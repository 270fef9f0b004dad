#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "apps/kabar-bench/bench.h"

namespace kabar::bench {

std::uint32_t Bench::contact_of(std::uint32_t user, std::uint64_t k) const {
  // Ring neighbours: +1, -1, +2, -2, ... up to contacts/2 on each side.
  int half = std::max(1, o_.contacts / 2);
  int idx = static_cast<int>(k % static_cast<std::uint64_t>(2 * half));
  int off = idx / 2 + 1;
  if (idx % 2) off = -off;
  long n = o_.users;
  return static_cast<std::uint32_t>(((static_cast<long>(user) + off) % n + n) % n);
}

// Logs in users x per_user connections, at most --concurrency at a time. True when all made it.
bool Bench::login_all(int per_user, bool until_online) {
  long total = static_cast<long>(o_.users) * per_user;
  long next = 0;
  long target_done = logins_done_ + total;
  std::int64_t limit = now_ns() + static_cast<std::int64_t>(o_.login_timeout * 1e9);
  std::int64_t last_report = now_ns();
  while (logins_done_ < target_done) {
    while (next < total && in_flight_ < o_.concurrency) {
      auto user = static_cast<std::uint32_t>(next % o_.users);
      auto res = static_cast<std::uint16_t>(next / o_.users);
      ++next;
      open_conn(user, res);
    }
    poll_once(5);
    std::int64_t now = now_ns();
    if (now - last_report > 2'000'000'000) {
      std::fprintf(stderr, "  login: %ld/%ld online, %ld in flight, %llu errors\n",
                   logins_done_ - (target_done - total), total, in_flight_,
                   static_cast<unsigned long long>(error_total_));
      last_report = now;
    }
    if (next >= total && in_flight_ == 0) break;  // the rest failed
    if (now > limit || timed_out()) {
      // Say where the stragglers are stuck: which step of the login the server never answered.
      static const char* names[] = {"free",     "connecting", "tls-handshake", "stream",
                                    "starttls", "register",   "auth",          "bind",
                                    "session",  "roster",     "online",        "closing"};
      std::map<std::string, long> stuck;
      for (auto& c : conns_)
        if (c.st != St::kFree && c.st != St::kOnline)
          ++stuck[std::string(names[static_cast<int>(c.st)]) +
                  (c.authed ? " (authenticated)" : "") +
                  (c.in.empty() ? "" : " holding a partial: " + c.in.substr(0, 80))];
      for (auto& [state, n] : stuck)
        error("login stuck waiting in state " + state + " x" + std::to_string(n));
      error("login phase timed out");
      return false;
    }
  }
  (void)until_online;
  return logins_done_ >= target_done;
}

void Bench::logout_all() {
  for (std::size_t i = 0; i < conns_.size(); ++i) {
    if (conns_[i].st == St::kOnline) {
      conns_[i].st = St::kClosing;
      send(static_cast<int>(i), "<presence type='unavailable'/></stream:stream>");
    }
  }
  std::int64_t end = now_ns() + 3'000'000'000;
  while (now_ns() < end) {
    bool any = false;
    for (auto& c : conns_)
      if (c.st != St::kFree) any = true;
    if (!any) break;
    poll_once(10);
  }
  for (std::size_t i = 0; i < conns_.size(); ++i) close_conn(static_cast<int>(i));
}

void Bench::print_errors_json(std::string& out) const {
  out += "\"errors\":" + std::to_string(error_total_) + ",\"error_kinds\":{";
  bool first = true;
  for (auto& [k, v] : errors_) {
    std::string key;
    for (char ch : k.substr(0, 120)) {
      if (ch == '"' || ch == '\\') key += '\\';
      if (static_cast<unsigned char>(ch) >= 0x20) key += ch;
    }
    out += (first ? "\"" : ",\"") + key + "\":" + std::to_string(v);
    first = false;
  }
  out += "}";
}

void emit(const std::string& json) {
  std::fprintf(stdout, "%s\n", json.c_str());
  std::fflush(stdout);
}

std::string fmt_num(double v, int prec) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

int Bench::run_register() {
  long total = o_.users;
  long next = 0;
  std::int64_t t0 = now_ns();
  while (registered_ + static_cast<long>(error_total_) < total && !timed_out()) {
    while (next < total && in_flight_ < o_.concurrency)
      open_conn(static_cast<std::uint32_t>(next++), 0);
    poll_once(5);
    if (next >= total && in_flight_ == 0) break;
  }
  while (std::any_of(conns_.begin(), conns_.end(), [](auto& c) { return c.st != St::kFree; }) &&
         now_ns() - t0 < static_cast<std::int64_t>(o_.login_timeout * 1e9))
    poll_once(10);
  for (std::size_t i = 0; i < conns_.size(); ++i) close_conn(static_cast<int>(i));
  std::string j = "{\"mode\":\"register\",\"label\":\"" + o_.label +
                  "\",\"registered\":" + std::to_string(registered_) +
                  ",\"seconds\":" + fmt_num(secs(now_ns() - t0), 2) + ",";
  print_errors_json(j);
  emit(j + "}");
  return registered_ == total && error_total_ == 0 ? 0 : 1;
}

int Bench::run_subscribe() {
  std::int64_t t0 = now_ns();
  if (!login_all(1, true)) {
    std::string j = "{\"mode\":\"subscribe\",\"label\":\"" + o_.label + "\",\"ok\":false,";
    print_errors_json(j);
    emit(j + "}");
    return 1;
  }
  // Each user asks each ring neighbour; every user approves what it is asked, so each pair ends
  // with subscription "both" and each roster holds `contacts` items.
  long expected = static_cast<long>(o_.users) * o_.contacts;
  long sent = 0;
  double pace = o_.rates.front();  // subscription requests per second
  std::int64_t start = now_ns();
  while (sent < expected && !timed_out()) {
    long due = std::min<long>(expected, static_cast<long>(secs(now_ns() - start) * pace) + 1);
    for (; sent < due; ++sent) {
      auto user = static_cast<std::uint32_t>(sent / o_.contacts);
      std::uint32_t contact = contact_of(user, static_cast<std::uint64_t>(sent % o_.contacts));
      int slot = online_by_user_[user];
      if (slot >= 0) send(slot, "<presence type='subscribe' to='" + jid(contact) + "'/>");
    }
    poll_once(1);
  }
  std::int64_t limit = now_ns() + static_cast<std::int64_t>(o_.login_timeout * 1e9);
  std::int64_t last_report = now_ns();
  while (subscribed_ < expected && now_ns() < limit && !timed_out()) {
    poll_once(10);
    if (now_ns() - last_report > 2'000'000'000) {
      std::fprintf(stderr, "  subscribe: %ld/%ld approved\n", subscribed_, expected);
      last_report = now_ns();
    }
  }
  if (subscribed_ < expected) error("subscriptions not all approved");
  // Let the last approvals and roster pushes settle before leaving.
  std::int64_t settle = now_ns() + 1'000'000'000;
  while (now_ns() < settle) poll_once(10);
  logout_all();
  std::string j = "{\"mode\":\"subscribe\",\"label\":\"" + o_.label +
                  "\",\"approved\":" + std::to_string(subscribed_) +
                  ",\"expected\":" + std::to_string(expected) +
                  ",\"seconds\":" + fmt_num(secs(now_ns() - t0), 2) + ",";
  print_errors_json(j);
  emit(j + "}");
  return subscribed_ >= expected && error_total_ == 0 ? 0 : 1;
}

int Bench::run_messages() {
  std::int64_t t0 = now_ns();
  std::fprintf(stderr, "kabar-bench %s: logging in %d users\n", o_.label.c_str(), o_.users);
  login_lat_on_ = true;
  bool ok = login_all(1, true);
  double login_s = secs(now_ns() - t0);
  login_lat_on_ = false;
  std::string head = "{\"mode\":\"messages\",\"label\":\"" + o_.label + "\"";
  if (!ok) {
    std::string j = head + ",\"ok\":false,\"online\":" + std::to_string(online_) + ",";
    print_errors_json(j);
    emit(j + "}");
    for (std::size_t i = 0; i < conns_.size(); ++i) close_conn(static_cast<int>(i));
    return 1;
  }
  // Presence floods from the logins settle before the first step.
  std::int64_t settle = now_ns() + 1'000'000'000;
  while (now_ns() < settle) poll_once(5);
  std::uint64_t errors_before = error_total_;

  std::string body_prefix = "'><body>t";
  std::vector<std::string> to_attr(static_cast<std::size_t>(o_.users));
  for (int u = 0; u < o_.users; ++u)
    to_attr[u] = "<message type='chat' to='" + jid(static_cast<std::uint32_t>(u)) + "' id='m";

  double best_rate = 0;
  int best_step = -1;
  steps_.reserve(o_.rates.size());
  std::uint64_t rr = 0;  // round-robin sender cursor
  for (std::size_t si = 0; si < o_.rates.size() && !timed_out(); ++si) {
    double rate = o_.rates[si];
    steps_.emplace_back();
    Step& s = steps_.back();
    s.offered = rate;
    std::int64_t start = now_ns();
    s.t0 = start + static_cast<std::int64_t>(o_.warmup * 1e9);
    s.t1 = s.t0 + static_cast<std::int64_t>(o_.measure * 1e9);
    std::uint64_t sent_here = 0;
    bool window_open = false;
    PerfStat perf;
    char num[32];
    while (!timed_out()) {
      std::int64_t now = now_ns();
      if (!window_open && now >= s.t0) {
        window_open = true;
        s.s0 = sample_server(o_.server_pid);
        s.errors_at_start = error_total_;
        perf.start(o_, o_.label + "-step" + std::to_string(si));
      }
      if (now >= s.t1) break;
      auto due = static_cast<std::uint64_t>(secs(now - start) * rate);
      if (due > sent_here + 4 * static_cast<std::uint64_t>(rate)) {
        s.tool_lag_s = std::max(s.tool_lag_s, static_cast<double>(due - sent_here) / rate);
      }
      int burst = 0;
      while (sent_here < due && burst < 20000) {
        ++burst;
        auto sender = static_cast<std::uint32_t>(rr % static_cast<std::uint64_t>(o_.users));
        std::uint32_t to = contact_of(sender, rr / static_cast<std::uint64_t>(o_.users));
        ++rr;
        ++sent_here;
        int slot = online_by_user_[sender];
        if (slot < 0) {
          error("sender offline");
          continue;
        }
        std::int64_t t = now_ns();
        std::string m = to_attr[to];
        auto r = std::to_chars(num, num + sizeof num, msgs_sent_);
        m.append(num, r.ptr);
        m += body_prefix;
        r = std::to_chars(num, num + sizeof num, t);
        m.append(num, r.ptr);
        m += "</body></message>";
        send(slot, m);
        if (conns_[slot].sm_on && ++conns_[slot].sm_out % o_.sm_every == 0) {
          send(slot, "<r xmlns='urn:xmpp:sm:3'/>");
        }
        ++msgs_sent_;
        if (t >= s.t0 && t < s.t1) ++s.sent;
      }
      poll_once(sent_here < due ? 0 : 1);
    }
    s.s1 = sample_server(o_.server_pid);
    s.perf = perf.stop();
    s.errors_at_end = error_total_;
    // Wait briefly for this window's messages before judging it; the next step's load runs on.
    std::int64_t judge = now_ns() + 300'000'000;
    while (now_ns() < judge && s.delivered < s.sent) poll_once(1);
    double p99 = s.lat.percentile_us(0.99) / 1000.0;
    double delivered_rate = static_cast<double>(s.delivered) / o_.measure;
    double cpu = s.s1.cpu_s - s.s0.cpu_s;
    bool step_errors = s.errors_at_end > s.errors_at_start;
    bool sustained = s.delivered + s.sent / 1000 >= s.sent && s.tool_lag_s < 1.0;
    bool pass = p99 <= o_.max_p99_ms && !step_errors && sustained;
    std::fprintf(stderr,
                 "  step %.0f msg/s: delivered %.0f/s, p50 %.2f ms p99 %.2f ms p99.9 %.2f ms, "
                 "server cpu %.2f s (steal %.2f s), errors %llu%s\n",
                 rate, delivered_rate, s.lat.percentile_us(0.5) / 1000.0, p99,
                 s.lat.percentile_us(0.999) / 1000.0, cpu, s.s1.steal_s - s.s0.steal_s,
                 static_cast<unsigned long long>(s.errors_at_end - s.errors_at_start),
                 pass ? "" : "  <- limit");
    std::string j =
        head + ",\"step\":" + std::to_string(si) + ",\"offered\":" + fmt_num(rate, 0) +
        ",\"sent\":" + std::to_string(s.sent) + ",\"delivered\":" + std::to_string(s.delivered) +
        ",\"delivered_per_s\":" + fmt_num(delivered_rate) +
        ",\"p50_ms\":" + fmt_num(s.lat.percentile_us(0.5) / 1000.0, 3) +
        ",\"p99_ms\":" + fmt_num(p99, 3) +
        ",\"p999_ms\":" + fmt_num(s.lat.percentile_us(0.999) / 1000.0, 3) +
        ",\"max_ms\":" + fmt_num(static_cast<double>(s.lat.max()) / 1000.0, 3) +
        ",\"server_cpu_s\":" + fmt_num(cpu, 3) +
        ",\"server_rss_kib\":" + std::to_string(s.s1.rss_kib) +
        ",\"server_ctx_switches\":" + std::to_string(s.s1.ctx_switches - s.s0.ctx_switches) +
        ",\"server_cpu_steal_s\":" + fmt_num(s.s1.steal_s - s.s0.steal_s, 2) +
        ",\"perf_syscalls\":" + fmt_num(s.perf.first, 0) +
        ",\"perf_ctx_switches\":" + fmt_num(s.perf.second, 0) +
        ",\"tool_lag_s\":" + fmt_num(s.tool_lag_s, 3) +
        ",\"step_errors\":" + std::to_string(s.errors_at_end - s.errors_at_start) +
        ",\"pass\":" + (pass ? "true" : "false") + "}";
    emit(j);
    if (pass && delivered_rate > best_rate) {
      best_rate = delivered_rate;
      best_step = static_cast<int>(si);
    }
    if (!pass && o_.stop_on_fail) break;
  }
  // Drain: no new messages; wait for those in flight.
  std::int64_t drain_end = now_ns() + static_cast<std::int64_t>(o_.drain * 1e9);
  while (now_ns() < drain_end && msgs_rx_ < msgs_sent_) poll_once(5);
  std::uint64_t lost = msgs_sent_ > msgs_rx_ ? msgs_sent_ - msgs_rx_ : 0;
  if (lost > 0) {
    errors_["messages not delivered"] += static_cast<long>(lost);
    error_total_ += lost;
  }
  Histogram all;
  for (auto& s : steps_) all.merge(s.lat);
  logout_all();
  std::string j =
      head + ",\"summary\":true,\"users\":" + std::to_string(o_.users) +
      ",\"login_s\":" + fmt_num(login_s, 3) +
      ",\"logins_per_s\":" + fmt_num(o_.users / login_s, 1) +
      ",\"login_p99_ms\":" + fmt_num(login_lat_.percentile_us(0.99) / 1000.0, 2) +
      ",\"sent\":" + std::to_string(msgs_sent_) + ",\"received\":" + std::to_string(msgs_rx_) +
      ",\"lost\":" + std::to_string(lost) + ",\"best_delivered_per_s\":" + fmt_num(best_rate) +
      ",\"best_step\":" + std::to_string(best_step) +
      ",\"p50_ms\":" + fmt_num(all.percentile_us(0.5) / 1000.0, 3) +
      ",\"p99_ms\":" + fmt_num(all.percentile_us(0.99) / 1000.0, 3) +
      ",\"p999_ms\":" + fmt_num(all.percentile_us(0.999) / 1000.0, 3) +
      ",\"errors_before_steps\":" + std::to_string(errors_before) +
      ",\"scram_derivations\":" + std::to_string(scram_cache_.derivations()) +
      ",\"sm\":" + (o_.sm ? "true" : "false") + ",\"sm_acks\":" + std::to_string(sm_acks_) +
      ",\"sm_requests\":" + std::to_string(sm_requests_) + ",";
  print_errors_json(j);
  emit(j + "}");
  std::fprintf(stderr, "kabar-bench %s: sent %llu, received %llu, best %.0f msg/s, errors %llu\n",
               o_.label.c_str(), static_cast<unsigned long long>(msgs_sent_),
               static_cast<unsigned long long>(msgs_rx_), best_rate,
               static_cast<unsigned long long>(error_total_));
  for (auto& [k, v] : errors_) std::fprintf(stderr, "  error x%ld: %s\n", v, k.c_str());
  return error_total_ == 0 ? 0 : 1;
}

int Bench::run_idle() {
  ServerSample before = sample_server(o_.server_pid);
  std::int64_t t0 = now_ns();
  long total = static_cast<long>(o_.users) * o_.resources;
  std::fprintf(stderr, "kabar-bench %s: opening %ld connections\n", o_.label.c_str(), total);
  bool ok = login_all(o_.resources, true);
  double login_s = secs(now_ns() - t0);
  std::int64_t hold_end = now_ns() + static_cast<std::int64_t>(o_.hold * 1e9);
  while (now_ns() < hold_end && !timed_out()) poll_once(50);
  ServerSample after = sample_server(o_.server_pid);
  long connected = online_;
  double per_conn = connected > 0 ? static_cast<double>(after.rss_kib - before.rss_kib) * 1024.0 /
                                        static_cast<double>(connected)
                                  : 0;
  std::fprintf(stderr, "  %ld connected; server RSS %ld -> %ld KiB: %.0f bytes per connection\n",
               connected, before.rss_kib, after.rss_kib, per_conn);
  logout_all();
  std::string j = "{\"mode\":\"idle\",\"label\":\"" + o_.label + "\",\"tls\":\"" + o_.tls +
                  "\",\"connections\":" + std::to_string(connected) +
                  ",\"target\":" + std::to_string(total) + ",\"login_s\":" + fmt_num(login_s, 2) +
                  ",\"rss_before_kib\":" + std::to_string(before.rss_kib) +
                  ",\"rss_after_kib\":" + std::to_string(after.rss_kib) +
                  ",\"bytes_per_conn\":" + fmt_num(per_conn, 0) +
                  ",\"server_cpu_s\":" + fmt_num(after.cpu_s - before.cpu_s, 2) + ",";
  print_errors_json(j);
  emit(j + "}");
  return ok && error_total_ == 0 ? 0 : 1;
}

int Bench::run_logins() {
  // Warm up the SCRAM cache and the server with one round, then measure a fixed duration.
  login_lat_on_ = false;
  std::int64_t warm_end = now_ns() + 1'000'000'000;
  long next = 0;
  auto pump = [&](std::int64_t until) {
    while (now_ns() < until && !timed_out()) {
      while (in_flight_ < o_.concurrency) {
        if (open_conn(static_cast<std::uint32_t>(next % o_.users), 0) < 0) break;
        ++next;
      }
      poll_once(2);
      if (error_total_ > 100) break;
    }
  };
  pump(warm_end);
  long base = logins_done_;
  ServerSample s0 = sample_server(o_.server_pid);
  login_lat_on_ = true;
  std::int64_t t0 = now_ns();
  PerfStat perf;
  perf.start(o_, o_.label + "-logins");
  pump(t0 + static_cast<std::int64_t>(o_.duration * 1e9));
  auto pr = perf.stop();
  ServerSample s1 = sample_server(o_.server_pid);
  double dur = secs(now_ns() - t0);
  long done = logins_done_ - base;
  login_lat_on_ = false;
  std::int64_t end = now_ns() + 2'000'000'000;
  while (now_ns() < end &&
         std::any_of(conns_.begin(), conns_.end(), [](auto& c) { return c.st != St::kFree; }))
    poll_once(5);
  for (std::size_t i = 0; i < conns_.size(); ++i) close_conn(static_cast<int>(i));
  double cpu = s1.cpu_s - s0.cpu_s;
  std::fprintf(stderr,
               "kabar-bench %s: %.0f logins/s, server cpu %.2f s (%.0f per cpu-s), p99 %.1f ms\n",
               o_.label.c_str(), done / dur, cpu, cpu > 0 ? done / cpu : 0,
               login_lat_.percentile_us(0.99) / 1000.0);
  std::string j = "{\"mode\":\"logins\",\"label\":\"" + o_.label +
                  "\",\"logins\":" + std::to_string(done) + ",\"seconds\":" + fmt_num(dur, 3) +
                  ",\"logins_per_s\":" + fmt_num(done / dur) +
                  ",\"server_cpu_s\":" + fmt_num(cpu, 3) +
                  ",\"logins_per_cpu_s\":" + fmt_num(cpu > 0 ? done / cpu : 0) +
                  ",\"p50_ms\":" + fmt_num(login_lat_.percentile_us(0.5) / 1000.0, 2) +
                  ",\"p99_ms\":" + fmt_num(login_lat_.percentile_us(0.99) / 1000.0, 2) +
                  ",\"perf_syscalls\":" + fmt_num(pr.first, 0) +
                  ",\"perf_ctx_switches\":" + fmt_num(pr.second, 0) + ",";
  print_errors_json(j);
  emit(j + "}");
  return error_total_ == 0 ? 0 : 1;
}

int Bench::run_presence() {
  std::fprintf(stderr, "kabar-bench %s: logging in %d users\n", o_.label.c_str(), o_.users);
  if (!login_all(1, true)) {
    std::string j = "{\"mode\":\"presence\",\"label\":\"" + o_.label + "\",\"ok\":false,";
    print_errors_json(j);
    emit(j + "}");
    return 1;
  }
  std::int64_t settle = now_ns() + 2'000'000'000;
  while (now_ns() < settle) poll_once(5);
  // Churn: a user leaves (unavailable goes to its contacts) and comes back (its presence goes
  // out, its contacts' presence comes in) — fan-out both ways on every cycle.
  long presence_base = presence_rx_;
  long logins_base = logins_done_;
  ServerSample s0 = sample_server(o_.server_pid);
  std::int64_t t0 = now_ns();
  std::int64_t t1 = t0 + static_cast<std::int64_t>(o_.duration * 1e9);
  login_lat_on_ = true;
  long cycles = 0;
  std::uint64_t cursor = 0;
  while (now_ns() < t1 && !timed_out()) {
    auto due = static_cast<long>(secs(now_ns() - t0) * o_.churn);
    int guard = 0;
    while (cycles < due && guard++ < static_cast<int>(o_.users)) {
      auto user = static_cast<std::uint32_t>(cursor++ % o_.users);
      int slot = online_by_user_[user];
      if (slot < 0) continue;  // still logging in from an earlier cycle
      conns_[slot].st = St::kClosing;
      --online_;
      conns_[slot].counted_online = false;
      online_by_user_[user] = -1;
      send(slot, "<presence type='unavailable'/></stream:stream>");
      open_conn(user, 0);
      ++cycles;
    }
    poll_once(1);
  }
  ServerSample s1 = sample_server(o_.server_pid);
  double dur = secs(now_ns() - t0);
  long presences = presence_rx_ - presence_base;
  long relogins = logins_done_ - logins_base;
  login_lat_on_ = false;
  std::int64_t end = now_ns() + 3'000'000'000;
  while (now_ns() < end && in_flight_ > 0) poll_once(5);
  logout_all();
  double cpu = s1.cpu_s - s0.cpu_s;
  std::fprintf(stderr,
               "kabar-bench %s: %ld cycles, %.0f presence/s delivered, server cpu %.2f s, login "
               "p99 %.1f ms\n",
               o_.label.c_str(), relogins, presences / dur, cpu,
               login_lat_.percentile_us(0.99) / 1000.0);
  std::string j =
      "{\"mode\":\"presence\",\"label\":\"" + o_.label +
      "\",\"users\":" + std::to_string(o_.users) + ",\"contacts\":" + std::to_string(o_.contacts) +
      ",\"cycles\":" + std::to_string(relogins) + ",\"seconds\":" + fmt_num(dur, 3) +
      ",\"cycles_per_s\":" + fmt_num(relogins / dur) +
      ",\"presence_per_s\":" + fmt_num(presences / dur) + ",\"server_cpu_s\":" + fmt_num(cpu, 3) +
      ",\"presence_per_cpu_s\":" + fmt_num(cpu > 0 ? presences / cpu : 0) +
      ",\"relogin_p99_ms\":" + fmt_num(login_lat_.percentile_us(0.99) / 1000.0, 2) + ",";
  print_errors_json(j);
  emit(j + "}");
  return error_total_ == 0 ? 0 : 1;
}

}  // namespace kabar::bench
