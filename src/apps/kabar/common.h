// Shared pieces of the kabar command: settings from flags, environment and config file; exit codes;
// one-line error reporting; running a coroutine to completion.
#pragma once

#include <boost/asio.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>  // before Asio: Boost 1.74 awaitable.hpp uses std::exchange

#include "kabar/client.h"

namespace kabar::cli {

namespace asio = boost::asio;
using client::awaitable;

// Exit codes (documented in the README).
enum Exit {
  kExitOk = 0,
  kExitError = 1,        // anything else
  kExitUsage = 2,        // bad arguments or configuration
  kExitAuth = 3,         // wrong password or unknown account
  kExitUnreachable = 4,  // server unreachable or timed out
  kExitCertificate = 5,  // certificate not trusted or mismatched
  kExitConflict = 6,     // account exists
  kExitNotFound = 7,     // unknown contact
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

}  // namespace kabar::cli
