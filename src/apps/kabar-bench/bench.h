// kabar-bench's parts: options.cc (the command line), server_stats.cc (the server under test,
// seen from /proc), scram.cc (the SCRAM client's key cache), connection.cc (sockets, TLS and
// the event loop), stanzas.cc (what the server sends: login steps, IQs, messages, presence),
// scenarios.cc (the scenario runners and their JSON results), main.cc.
#pragma once

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "apps/kabar-bench/histogram.h"
#include "apps/kabar-bench/stanza_scanner.h"

namespace kabar::bench {

inline std::int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}
inline double secs(std::int64_t ns) { return static_cast<double>(ns) / 1e9; }

// ---------------------------------------------------------------------------------------------
// Options

struct Options {
  std::string mode = "messages";
  std::string host = "127.0.0.1";
  int port = 5222;
  std::string domain = "localhost";
  std::string prefix = "u";
  std::string password = "pw";
  int users = 100;
  int first = 0;
  int resources = 1;          // connections per account (idle mode)
  int contacts = 10;          // ring roster size: neighbours +-contacts/2
  int sources = 8;            // loopback source addresses 127.0.0.2 ...
  int concurrency = 100;      // logins in flight
  std::string tls = "none";   // none | starttls | direct
  std::string mech = "auto";  // auto | plain | scram-sha-1 | scram-sha-256
  std::vector<double> rates{1000};
  double warmup = 2;        // seconds before each measured window
  double measure = 10;      // seconds of each measured window
  double drain = 3;         // seconds to wait for messages in flight after the last step
  double max_p99_ms = 100;  // a step whose p99 passes this ends the ladder
  double hold = 5;          // idle mode: seconds connected before the RSS sample
  double duration = 10;     // logins/presence modes: measured seconds
  double churn = 50;        // presence mode: logout+login cycles per second
  double login_timeout = 120;
  double time_limit = 0;  // 0: derived from the scenario
  bool presence = true;   // initial presence and roster get after bind
  // Stream management (XEP-0198) on every connection, an ack requested after every `sm_every`
  // messages sent (Conversations asks after 5), the server's requests answered.
  bool sm = false;
  int sm_every = 5;
  bool stop_on_fail = true;
  int server_pid = 0;
  std::string perf_dir;  // run `perf stat` on the server over each measured window
  std::string label;
};

Options parse_options(int argc, char** argv);

// ---------------------------------------------------------------------------------------------
// The server under test, seen from /proc.

struct ServerSample {
  double cpu_s = 0;  // utime + stime of all its threads
  long rss_kib = 0;
  long ctx_switches = 0;  // voluntary + involuntary, all threads
  // Time the hypervisor ran something else on the CPU the server last ran on (it is pinned
  // there): a virtual machine's neighbours, the noise in every figure of a window.
  double steal_s = 0;
  bool ok = false;
};

ServerSample sample_server(int pid);

// `perf stat` attached to the server over one measured window: syscalls, context switches.
class PerfStat {
 public:
  void start(const Options& o, const std::string& name) {
    if (o.perf_dir.empty() || o.server_pid <= 0) return;
    path_ = o.perf_dir + "/" + name + ".perf";
    std::string pid = std::to_string(o.server_pid);
    pid_ = fork();
    if (pid_ == 0) {
      int devnull = open("/dev/null", O_RDWR);
      dup2(devnull, 1);
      dup2(devnull, 2);
      execlp("perf", "perf", "stat", "-x", ",", "-e",
             "raw_syscalls:sys_enter,context-switches,task-clock", "-p", pid.c_str(), "-o",
             path_.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  // Stops perf and returns {syscalls, context switches}, or -1s when not measured.
  std::pair<double, double> stop() {
    if (pid_ <= 0) return {-1, -1};
    kill(pid_, SIGINT);
    int st = 0;
    waitpid(pid_, &st, 0);
    pid_ = -1;
    double sys = -1, cs = -1;
    if (FILE* f = std::fopen(path_.c_str(), "r")) {
      char line[512];
      while (std::fgets(line, sizeof line, f)) {
        double v = std::strtod(line, nullptr);
        if (std::strstr(line, "raw_syscalls:sys_enter")) sys = v;
        if (std::strstr(line, "context-switches")) cs = v;
      }
      std::fclose(f);
    }
    return {sys, cs};
  }

 private:
  pid_t pid_ = -1;
  std::string path_;
};

// ---------------------------------------------------------------------------------------------
// SCRAM client with a cache of the salted password: every account shares one password, so the
// PBKDF2 cost is paid once per (salt, iterations) and the tool measures the server, not itself.

struct ScramKeys {
  std::string client_key, stored_key, server_key;
};

const EVP_MD* md_of(bool sha256);
std::string hmac(bool sha256, std::string_view key, std::string_view data);
std::string digest(bool sha256, std::string_view data);

class ScramCache {
 public:
  const ScramKeys& keys(bool sha256, const std::string& password, const std::string& salt,
                        int iterations) {
    std::string key = std::string(sha256 ? "2" : "1") + std::to_string(iterations) + ":" + salt;
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
    std::string salted(sha256 ? 32 : 20, '\0');
    PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                      reinterpret_cast<const unsigned char*>(salt.data()),
                      static_cast<int>(salt.size()), iterations, md_of(sha256),
                      static_cast<int>(salted.size()),
                      reinterpret_cast<unsigned char*>(salted.data()));
    ScramKeys k;
    k.client_key = hmac(sha256, salted, "Client Key");
    k.stored_key = digest(sha256, k.client_key);
    k.server_key = hmac(sha256, salted, "Server Key");
    ++derivations_;
    return cache_.emplace(std::move(key), std::move(k)).first->second;
  }
  long derivations() const { return derivations_; }

 private:
  std::map<std::string, ScramKeys> cache_;
  long derivations_ = 0;
};

// What one connection keeps during a SCRAM exchange (dropped after <success/>).
struct ScramState {
  bool sha256 = false;
  std::string client_first_bare;
  std::string nonce;
  std::string server_signature;
};

// ---------------------------------------------------------------------------------------------
// Connections

enum class St : std::uint8_t {
  kFree,
  kConnecting,
  kTlsHandshake,
  kStream,    // stream header sent, waiting for features
  kStartTls,  // <starttls/> sent
  kRegister,  // register IQ sent
  kAuth,      // <auth/> sent
  kBind,      // bind IQ sent
  kSession,   // session IQ sent
  kRoster,    // roster get sent
  kOnline,
  kClosing,  // </stream:stream> sent, waiting for the server's close
};

struct Conn {
  int fd = -1;
  std::uint32_t gen = 0;
  St st = St::kFree;
  std::uint8_t level = 0;
  bool authed = false;
  bool want_out = false;
  bool tls_active = false;
  bool counted_online = false;
  bool session_required = false;  // an old server that wants the RFC 3921 session IQ
  bool sm_on = false;             // <enabled/> received: stanzas are counted from there
  std::uint32_t sm_in = 0;        // stanzas received since <enabled/> (the 'h' we send)
  std::uint32_t sm_out = 0;       // messages sent since <enabled/>
  std::uint32_t user = 0;         // account index (0-based, offset by --first on the wire)
  std::uint16_t resource = 0;
  std::int64_t t_start = 0;  // when this login began
  SSL* ssl = nullptr;
  std::unique_ptr<ScramState> scram;
  std::string in;   // an incomplete piece carried over to the next read
  std::string out;  // bytes the socket did not take yet
};

struct Step {
  double offered = 0;
  std::int64_t t0 = 0, t1 = 0;  // measured window (send times)
  std::uint64_t sent = 0, delivered = 0;
  Histogram lat;
  ServerSample s0, s1;
  std::pair<double, double> perf{-1, -1};
  std::uint64_t errors_at_start = 0, errors_at_end = 0;
  double tool_lag_s = 0;  // how far the sender fell behind its schedule
};

class Bench {
 public:
  explicit Bench(Options o) : o_(std::move(o)) {}
  // Connections still open at the end (idle mode holds them) and the TLS context are freed, so
  // LeakSanitizer builds exit 0.
  ~Bench() {
    for (int slot = 0; slot < static_cast<int>(conns_.size()); ++slot) close_conn(slot);
    if (ssl_ctx_ != nullptr) SSL_CTX_free(ssl_ctx_);
  }
  Bench(const Bench&) = delete;
  Bench& operator=(const Bench&) = delete;
  int run();

 private:
  // --- plumbing
  // Counts an error by kind. A stanza in the kind is cut down to its name and first defined
  // condition, so that thousands of bounces make one line, not thousands.
  void error(const std::string& kind) {
    std::string key = kind;
    auto lt = key.find('<');
    if (lt != std::string::npos) {
      std::string_view el(kind);
      el.remove_prefix(lt);
      std::string cond;
      for (const char* c : {"service-unavailable", "not-authorized", "conflict", "item-not-found",
                            "policy-violation", "resource-constraint", "internal-server-error",
                            "not-allowed", "connection-timeout", "system-shutdown", "bad-request",
                            "remote-server-not-found", "temporary-auth-failure", "aborted"})
        if (el.find(c) != std::string_view::npos) {
          cond = c;
          break;
        }
      key = key.substr(0, lt) + "<" + std::string(local_name(el)) + "> " + cond;
    }
    ++errors_[key];
    ++error_total_;
  }
  int open_conn(std::uint32_t user, std::uint16_t resource);
  void close_conn(int slot);
  void on_event(int slot, std::uint32_t events);
  void on_readable(int slot);
  void flush(int slot);
  void send(int slot, std::string_view bytes);
  void set_out_interest(int slot, bool want);
  void start_stream(int slot);
  void tls_handshake(int slot);
  bool process(int slot, const char* data, std::size_t n);
  bool on_piece(int slot, Piece kind, std::string_view el);
  void on_features(int slot, std::string_view el);
  void on_iq(int slot, std::string_view el);
  void on_message(int slot, std::string_view el);
  void on_presence(int slot, std::string_view el);
  void went_online(int slot);
  void poll_once(int timeout_ms);
  std::string jid(std::uint32_t user) const {
    return o_.prefix + std::to_string(o_.first + user) + "@" + o_.domain;
  }
  std::uint32_t contact_of(std::uint32_t user, std::uint64_t k) const;
  bool timed_out() const { return now_ns() > deadline_; }

  // --- phases
  bool login_all(int per_user, bool until_online);
  void logout_all();
  int run_register();
  int run_subscribe();
  int run_messages();
  int run_idle();
  int run_logins();
  int run_presence();
  void print_errors_json(std::string& out) const;

  Options o_;
  int ep_ = -1;
  SSL_CTX* ssl_ctx_ = nullptr;
  std::vector<Conn> conns_;
  std::vector<int> free_slots_;
  std::vector<int> online_by_user_;  // slot of the user's first online connection, or -1
  std::map<std::string, long> errors_;
  std::uint64_t error_total_ = 0;
  std::int64_t deadline_ = 0;
  std::uint64_t source_rr_ = 0;
  ScramCache scram_cache_;
  std::vector<char> scratch_ = std::vector<char>(256 * 1024);

  // counters
  long run_id_ = static_cast<long>(getpid());
  long bind_count_ = 0;
  long in_flight_ = 0;  // logins started, not finished
  long online_ = 0;
  long logins_done_ = 0;
  long registered_ = 0;
  long subscribed_ = 0;
  long presence_rx_ = 0;
  std::uint64_t sm_acks_ = 0;      // <a/> received
  std::uint64_t sm_requests_ = 0;  // <r/> received (and answered)
  long closed_ = 0;
  Histogram login_lat_;
  bool login_lat_on_ = false;

  // messages
  std::vector<Step> steps_;
  std::uint64_t msgs_sent_ = 0, msgs_rx_ = 0, msgs_rx_unmatched_ = 0;
};

// Scenario results: one JSON line on stdout.
void emit(const std::string& json);
std::string fmt_num(double v, int prec = 1);

}  // namespace kabar::bench
