#include "common.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "kabar/private_file.h"
#include "xmpp/display_text.h"
#include "xmpp/jid.h"

namespace kabar::cli {

int exit_code(const client::Error& e) {
  switch (e.code) {
    case client::Errc::kOk:
      return kExitOk;
    case client::Errc::kBadInput:
      return kExitUsage;
    case client::Errc::kAuth:
      return kExitAuth;
    case client::Errc::kUnreachable:
    case client::Errc::kTimeout:
      return kExitUnreachable;
    case client::Errc::kCertificate:
    case client::Errc::kTls:
      return kExitCertificate;
    case client::Errc::kConflict:
      return kExitConflict;
    case client::Errc::kNotFound:
      return kExitNotFound;
    default:
      return kExitError;
  }
}

int report(const client::Error& e) {
  if (!e) return kExitOk;
  return fail(exit_code(e), e.message);
}

// An error can quote what a server or a peer sent (a JID, a condition, a text).
int fail(int code, const std::string& message) {
  std::fprintf(stderr, "kabar: %s\n", xmpp::terminal_text(message).c_str());
  return code;
}

void print_line(const std::string& line) { std::printf("%s\n", xmpp::terminal_text(line).c_str()); }

int run(asio::io_context& io, std::function<awaitable<int>()> fn) {
  int result = kExitError;
  asio::co_spawn(
      io, [&]() -> awaitable<int> { co_return co_await fn(); },
      [&](std::exception_ptr ep, int r) {
        if (ep) {
          try {
            std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            std::fprintf(stderr, "kabar: %s\n", xmpp::terminal_text(e.what()).c_str());
          }
          result = kExitError;
        } else {
          result = r;
        }
        io.stop();
      });
  io.run();
  return result;
}

namespace {
std::string home() {
  const char* h = std::getenv("HOME");
  return h && *h ? h : ".";
}
std::string xdg(const char* var, const char* fallback) {
  const char* v = std::getenv(var);
  return (v && *v ? std::string(v) : home() + "/" + fallback) + "/kabar";
}
std::string ensure(std::string dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  ::chmod(dir.c_str(), 0700);
  return dir;
}
}  // namespace

std::string config_dir() { return xdg("XDG_CONFIG_HOME", ".config"); }
std::string cache_dir() { return ensure(xdg("XDG_CACHE_HOME", ".cache")); }
std::string state_dir() { return ensure(xdg("XDG_STATE_HOME", ".local/state")); }
std::string data_dir() { return ensure(xdg("XDG_DATA_HOME", ".local/share")); }

std::string account_file_name(const std::string& jid) {
  std::string bare = xmpp_bare(jid);
  if (bare.empty()) bare = jid;
  std::string name;
  for (char c : bare)
    name +=
        (std::isalnum(static_cast<unsigned char>(c)) || c == '@' || c == '.' || c == '-') ? c : '_';
  return name;
}

namespace {
std::string status_path(const std::string& jid) {
  return state_dir() + "/status-" + account_file_name(jid);
}
}  // namespace

SavedStatus load_status(const std::string& jid) {
  SavedStatus s;
  std::ifstream f(status_path(jid));
  std::getline(f, s.show);
  std::getline(f, s.status);
  return s;
}

bool save_status(const std::string& jid, const SavedStatus& s) {
  return client::write_private_file(status_path(jid), s.show + "\n" + s.status + "\n");
}

int clean_parts(const std::string& dir, int max_age_days) {
  if (max_age_days <= 0) return 0;
  namespace fs = std::filesystem;
  const auto limit = fs::file_time_type::clock::now() - std::chrono::hours(24) * max_age_days;
  int removed = 0;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() < 7 || name.front() != '.' || !name.ends_with(".part")) continue;
    std::error_code e2;
    if (!it->is_regular_file(e2) || it->is_symlink(e2)) continue;
    auto when = fs::last_write_time(it->path(), e2);
    if (!e2 && when < limit && fs::remove(it->path(), e2)) ++removed;
  }
  return removed;
}

std::string xmpp_bare(const std::string& jid) {
  auto j = xmpp::Jid::parse(jid);
  return j ? j->bare_str() : std::string();
}

std::string json_string(const std::string& s) { return xmpp::json_quoted(s); }

namespace {
std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
  return buf;
}
}  // namespace

ProgressBar::ProgressBar(std::string label)
    : label_(std::move(label)),
      tty_(::isatty(2) != 0),
      start_(std::chrono::steady_clock::now()),
      last_() {}

std::string progress_text(const std::string& label, std::uint64_t done, std::uint64_t total,
                          double secs) {
  double rate = secs > 0.05 ? static_cast<double>(done) / secs : 0;
  double frac = total ? static_cast<double>(done) / static_cast<double>(total) : 1.0;
  constexpr int kWidth = 24;
  int filled = static_cast<int>(frac * kWidth);
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.append(static_cast<std::size_t>(kWidth - filled), '.');
  std::string left = "--:--";
  if (rate > 0 && total >= done) {
    long s = static_cast<long>(static_cast<double>(total - done) / rate);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
    left = buf;
  }
  char line[512];
  std::snprintf(
      line, sizeof line, "%s [%s] %3d%%  %s/%s  %s/s  %s left", label.c_str(), bar.c_str(),
      static_cast<int>(frac * 100), human_bytes(static_cast<double>(done)).c_str(),
      human_bytes(static_cast<double>(total)).c_str(), human_bytes(rate).c_str(), left.c_str());
  return line;
}

void ProgressBar::update(std::uint64_t done, std::uint64_t total) {
  if (!tty_) return;
  auto now = std::chrono::steady_clock::now();
  if (drawn_ && done < total && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  drawn_ = true;
  std::string line =
      progress_text(label_, done, total, std::chrono::duration<double>(now - start_).count());
  std::fprintf(stderr, "\r%s\x1b[K", line.c_str());
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (tty_ && drawn_) std::fprintf(stderr, "\n");
  drawn_ = false;
}

// ---- calls ----

void CallFlags::apply(client::media::Config& config) const {
  config.audio_in = audio_in;
  config.audio_out = audio_out;
  config.audio_device = no_audio_device ? std::string() : audio_device;
  config.video_in = video_in;
  config.video_out = video_out;
  config.host_addresses = host_addresses;
  config.relay_only = relay_only;
}

std::string CallFlags::check() const {
  for (const auto& [flag, path] :
       {std::pair<const char*, const std::string&>{"--audio-in", audio_in},
        {"--video-in", video_in}})
    if (!path.empty() && ::access(path.c_str(), R_OK) != 0)
      return std::string(flag) + ": cannot read " + path;
  for (const std::string& a : host_addresses) {
    boost::system::error_code ec;
    asio::ip::make_address(a, ec);
    if (ec) return "--host-address: '" + a + "' is not an IP address";
  }
  return {};
}

client::MediaFactory media_engine(std::function<void(const std::string&)> warn) {
  // One line on stderr is whole whichever thread writes it.
  if (!warn) warn = [](const std::string& what) { fail(0, what); };
  return [warn](client::media::Config config, client::media::Callbacks callbacks) {
    callbacks.warning = warn;
    return client::media::make_session(std::move(config), std::move(callbacks));
  };
}

awaitable<void> fetch_ice_servers(client::Calls& calls) {
  client::Error e = co_await calls.fetch_ice_servers();
  if (e) fail(0, e.message + "; calls can only take direct paths (no relay through NAT)");
}

std::string call_media_text(const client::CallInfo& call) {
  return call.video ? "audio and video" : "audio";
}

std::string call_state_text(const client::CallInfo& call) {
  using client::CallState;
  switch (call.state) {
    case CallState::kProposed:
      return "calling " + call.peer + " (" + call_media_text(call) + ")";
    case CallState::kRinging:
      return call.incoming ? "call from " + call.peer + " (" + call_media_text(call) + ")"
                           : "ringing at " + call.peer;
    case CallState::kAccepted:
      return call.incoming ? "accepted the call from " + call.peer : "accepted by " + call.peer;
    case CallState::kConnecting:
      return "connecting to " + call.peer;
    case CallState::kActive:
      return "connected to " + call.peer;
    case CallState::kEnded:
      break;
  }
  return "ended";
}

std::string call_duration_text(std::chrono::seconds duration) {
  const long s = static_cast<long>(duration.count());
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

std::string call_stats_text(const client::media::Stats& st) {
  const std::uint64_t expected = st.rtp_received + st.rtp_lost;
  const double loss = expected ? 100.0 * static_cast<double>(st.rtp_lost) / expected : 0.0;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "packets sent %llu, received %llu, lost %llu (%.1f%%); %llu audio frames "
                "concealed; jitter %.1f ms",
                static_cast<unsigned long long>(st.rtp_sent),
                static_cast<unsigned long long>(st.rtp_received),
                static_cast<unsigned long long>(st.rtp_lost), loss,
                static_cast<unsigned long long>(st.audio_frames_concealed), st.jitter_ms);
  std::string out = buf;
  if (st.video_frames_decoded)
    out += "; " + std::to_string(st.video_frames_decoded) + " video frames decoded";
  return out;
}

std::string call_end_text(const client::CallInfo& call, const client::CallEnd& end,
                          const std::optional<client::media::Stats>& stats) {
  std::string line = "call with " + call.peer + " ended: " + end.reason;
  if (!end.text.empty()) line += " (" + end.text + ")";
  line += end.by_peer ? ", by the contact" : ", by us";
  line += ", after " + call_duration_text(end.duration);
  if (stats) line += "; " + call_stats_text(*stats);
  return line;
}

int call_exit_code(const client::CallEnd& end, bool was_active) {
  if (end.reason == "success") return was_active ? kExitOk : kExitCallNotTaken;
  // XEP-0166 §7.4: the conditions that say the call was not wanted (or not any more).
  for (const char* r : {"decline", "busy", "cancel", "timeout", "expired", "gone",
                        "answered-elsewhere", "rejected-elsewhere"})
    if (end.reason == r) return was_active ? kExitCallFailed : kExitCallNotTaken;
  return kExitCallFailed;
}

CallWatch::CallWatch(asio::io_context& io, client::Calls& calls, int connect_timeout)
    : calls_(calls), connect_timeout_(connect_timeout), timer_(io) {
  schedule();
}

CallWatch::~CallWatch() {
  *alive_ = false;
  timer_.cancel();
}

void CallWatch::schedule() {
  timer_.expires_after(std::chrono::milliseconds(500));
  // A wait that completed just before the cancel still runs, after `this` is gone.
  timer_.async_wait([this, alive = alive_](boost::system::error_code ec) {
    if (ec || !*alive) return;
    sample();
    check_connecting();
    schedule();
  });
}

void CallWatch::sample() {
  for (const client::CallInfo& c : calls_.calls()) {
    if (c.state != client::CallState::kActive) continue;
    if (auto st = calls_.stats(c.id)) last_[c.id] = *st;
  }
}

void CallWatch::check_connecting() {
  const auto now = std::chrono::steady_clock::now();
  std::map<std::string, std::chrono::steady_clock::time_point> still;
  std::vector<std::string> expired;
  for (const client::CallInfo& c : calls_.calls()) {
    if (c.state != client::CallState::kAccepted && c.state != client::CallState::kConnecting)
      continue;
    auto it = connecting_since_.find(c.id);
    const auto since = it == connecting_since_.end() ? now : it->second;
    still[c.id] = since;
    if (connect_timeout_ > 0 && now - since >= std::chrono::seconds(connect_timeout_))
      expired.push_back(c.id);
  }
  connecting_since_ = std::move(still);
  for (const std::string& id : expired) {
    connecting_since_.erase(id);
    timed_out_.insert(id);
    // The contact learns why too; the end is reported through Calls::on_ended, now.
    calls_.hang_up(id, "connectivity-error",
                   "no media path within " + std::to_string(connect_timeout_) + " s");
  }
}

bool CallWatch::take_timed_out(const std::string& id) { return timed_out_.erase(id) > 0; }

client::CallEnd CallWatch::reported_end(const std::string& id, const client::CallEnd& end) {
  if (!take_timed_out(id)) return end;
  client::CallEnd e = end;
  e.reason = "connectivity-error";
  e.text = "no media path within " + std::to_string(connect_timeout_) + " s";
  e.by_peer = false;
  return e;
}

std::optional<client::media::Stats> CallWatch::take(const std::string& id) {
  auto it = last_.find(id);
  if (it == last_.end()) return std::nullopt;
  client::media::Stats st = it->second;
  last_.erase(it);
  return st;
}

std::optional<client::media::Stats> CallWatch::peek(const std::string& id) const {
  auto it = last_.find(id);
  if (it == last_.end()) return std::nullopt;
  return it->second;
}

}  // namespace kabar::cli
