// Shared pieces of the kabar command: settings from flags, environment and config file; exit codes;
// one-line error reporting; running a coroutine to completion.
#pragma once

#include <boost/asio.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>  // before Asio: Boost 1.74 awaitable.hpp uses std::exchange
#include <vector>

#include "kabar/call.h"
#include "kabar/client.h"

namespace kabar::cli {

namespace asio = boost::asio;
using client::awaitable;

// Exit codes (documented in the README).
enum Exit {
  kExitOk = 0,
  kExitError = 1,         // anything else
  kExitUsage = 2,         // bad arguments or configuration
  kExitAuth = 3,          // wrong password or unknown account
  kExitUnreachable = 4,   // server unreachable or timed out
  kExitCertificate = 5,   // certificate not trusted or mismatched
  kExitConflict = 6,      // account exists
  kExitNotFound = 7,      // unknown contact
  kExitCallNotTaken = 8,  // a call declined, busy, not answered, or cancelled before it began
  kExitCallFailed = 9,    // a call that could not connect or broke off (ICE, DTLS, the contact's
                          // client failed)
};

int exit_code(const client::Error& e);
// Prints "kabar: MESSAGE" on stderr, made terminal-safe; returns the exit code for it.
int report(const client::Error& e);
int fail(int code, const std::string& message);
// Writes `line` and a newline on stdout, with what came from the network made terminal-safe.
void print_line(const std::string& line);

// Runs `fn` on `io` until it completes; returns its result. Exceptions become one line and 1.
int run(asio::io_context& io, std::function<awaitable<int>()> fn);

// Where kabar keeps its files (XDG base directories).
std::string config_dir();  // $XDG_CONFIG_HOME/kabar or ~/.config/kabar
std::string cache_dir();   // $XDG_CACHE_HOME/kabar or ~/.cache/kabar; created
std::string state_dir();   // $XDG_STATE_HOME/kabar or ~/.local/state/kabar; created
std::string data_dir();    // $XDG_DATA_HOME/kabar or ~/.local/share/kabar; created

// An account's name in a file name: its bare JID (normalized), with anything but letters, digits,
// '@', '.' and '-' replaced by '_'.
std::string account_file_name(const std::string& jid);

// The saved own presence that listen and chat announce (set by `kabar status` or /status), one
// per account: state_dir()/status-ACCOUNT, mode 0600.
struct SavedStatus {
  std::string show;
  std::string status;
};
SavedStatus load_status(const std::string& jid);
bool save_status(const std::string& jid, const SavedStatus& s);

// Removes the unfinished transfers kept for a resume (hidden ".NAME.KEY.part" files) in `dir`
// last written more than `max_age_days` days ago; 0 days: none. Returns how many it removed.
int clean_parts(const std::string& dir, int max_age_days);

// The bare form of a JID, or empty when it is not a valid JID.
std::string xmpp_bare(const std::string& jid);

// A JSON string for `listen --json`: valid JSON whatever the bytes, and safe on a terminal
// (xmpp::json_quoted).
std::string json_string(const std::string& s);

// "LABEL [#####.....]  45%  12.3 MiB/50.0 MiB  8.5 MiB/s  0:04 left"
std::string progress_text(const std::string& label, std::uint64_t done, std::uint64_t total,
                          double seconds);

// A one-line progress bar on stderr (bar, percent, bytes, speed, time left), drawn only when
// stderr is a terminal and at most ten times a second.
class ProgressBar {
 public:
  explicit ProgressBar(std::string label);
  void update(std::uint64_t done, std::uint64_t total);
  void finish();  // ends the line

 private:
  std::string label_;
  bool tty_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

// ---- calls: kabar call, listen --answer-calls, chat ----

// The media options of the commands that take calls.
struct CallFlags {
  bool video = false;
  std::string audio_in, audio_out, video_in, video_out;
  std::string audio_device = "default";  // ALSA PCM for the direction without a file
  bool no_audio_device = false;
  std::vector<std::string> host_addresses;  // gather on these only (tests: 127.0.0.1)
  bool relay_only = false;
  int connect_timeout = 30;  // seconds from the answer to media flowing (0: no limit)
  // Copies them into the settings every call of `calls` starts with.
  void apply(client::media::Config& config) const;
  // An error message for an input file that cannot be read, or empty.
  std::string check() const;
};

// The real media engine (libnice, DTLS-SRTP, Opus, VP8) for client::Calls. The engine's
// warnings (a sound device that cannot be opened) go to `warn`, called on the engine's thread;
// without one, to stderr.
client::MediaFactory media_engine(std::function<void(const std::string&)> warn = {});

// Asks the server for its STUN/TURN services (XEP-0215) for the next calls; says on stderr
// when there are none (then only direct paths work). Never fails the command.
awaitable<void> fetch_ice_servers(client::Calls& calls);

// One line per event of a call, the same in every command.
std::string call_media_text(const client::CallInfo& call);  // "audio" or "audio and video"
std::string call_state_text(const client::CallInfo& call);
// "ended: REASON ... after M:SS; packets sent N, received N, lost N (x.x%); ..." (the figures
// when stats are known).
std::string call_end_text(const client::CallInfo& call, const client::CallEnd& end,
                          const std::optional<client::media::Stats>& stats);
std::string call_stats_text(const client::media::Stats& stats);
std::string call_duration_text(std::chrono::seconds duration);  // "M:SS" or "H:MM:SS"
// A call that ended with this reason, having been active or not: kExitOk, kExitCallNotTaken or
// kExitCallFailed.
int call_exit_code(const client::CallEnd& end, bool was_active);

// Watches the calls twice a second. Keeps the latest media statistics of every active call (the
// engine stops with the call, and Calls forgets a call before it reports the end), and hangs up
// a call answered `connect_timeout` seconds ago whose media never started: ICE without a working
// candidate pair can wait forever (with no local candidate at all, libnice never says it failed).
class CallWatch {
 public:
  CallWatch(asio::io_context& io, client::Calls& calls, int connect_timeout);
  ~CallWatch();
  CallWatch(const CallWatch&) = delete;
  CallWatch& operator=(const CallWatch&) = delete;
  void sample();  // now (before a hang-up of ours)
  // The last sample of call `id`, forgotten after this.
  std::optional<client::media::Stats> take(const std::string& id);
  std::optional<client::media::Stats> peek(const std::string& id) const;
  // True once for a call this hung up for want of a media path (forgotten after this).
  bool take_timed_out(const std::string& id);
  // The end to report for a call that ended: `end`, or connectivity-error for one hung up here
  // for want of a media path.
  client::CallEnd reported_end(const std::string& id, const client::CallEnd& end);

 private:
  void schedule();
  void check_connecting();
  client::Calls& calls_;
  int connect_timeout_;
  std::map<std::string, std::chrono::steady_clock::time_point> connecting_since_;
  std::set<std::string> timed_out_;
  asio::steady_timer timer_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::map<std::string, client::media::Stats> last_;
};

}  // namespace kabar::cli
