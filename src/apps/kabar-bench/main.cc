// kabar-bench: a lean XMPP load generator. One thread, epoll, nonblocking sockets, a few dozen
// bytes of state per idle connection (buffers exist only while bytes are pending). It logs users
// in (SCRAM, or PLAIN where that is all a server offers; plain TCP, STARTTLS or direct TLS), and
// then runs one scenario:
//   register   in-band registration (XEP-0077) of the accounts
//   subscribe  fills rosters: each user subscribes to its ring neighbours, all approve
//   messages   chat messages at a target total rate, in steps; the send time travels in the body
//   idle       many authenticated connections held open; the server's RSS per connection
//   logins     repeated logins (connect, SASL, bind, close) at a fixed concurrency
//   presence   users with full rosters logging out and in again (presence fan-out)
// Results are JSON lines on stdout (one per step and one summary), progress on stderr. With
// --server-pid it samples that process's CPU time, RSS and context switches from /proc over each
// measured window only.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "apps/kabar-bench/histogram.h"
#include "apps/kabar-bench/stanza_scanner.h"
#include "xmpp/scram.h"

namespace kabar::bench {
namespace {

std::int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}
double secs(std::int64_t ns) { return static_cast<double>(ns) / 1e9; }

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
  bool stop_on_fail = true;
  int server_pid = 0;
  std::string perf_dir;  // run `perf stat` on the server over each measured window
  std::string label;
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "kabar-bench: %s\n"
               "usage: kabar-bench --mode register|subscribe|messages|idle|logins|presence\n"
               "  [--host H] [--port P] [--domain D] [--users N] [--first I] [--prefix u]\n"
               "  [--password PW] [--resources R] [--contacts K] [--sources S] [--concurrency C]\n"
               "  [--tls none|starttls|direct] [--mech auto|plain|scram-sha-1|scram-sha-256]\n"
               "  [--rates R1,R2,...] [--warmup S] [--measure S] [--drain S] [--max-p99-ms MS]\n"
               "  [--hold S] [--duration S] [--churn N] [--login-timeout S] [--time-limit S]\n"
               "  [--no-presence] [--no-stop] [--server-pid PID] [--perf-dir DIR] [--label L]\n",
               msg);
  std::exit(2);
}

double to_double(const char* s) {
  char* end = nullptr;
  double v = std::strtod(s, &end);
  if (end == s || *end) usage("bad number");
  return v;
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto val = [&]() -> const char* {
      if (i + 1 >= argc) usage("missing value");
      return argv[++i];
    };
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

// The steal column of /proc/stat's line for `cpu`, in seconds.
double cpu_steal_s(int cpu) {
  double steal = 0;
  if (FILE* f = std::fopen("/proc/stat", "r")) {
    char line[512];
    char want[16];
    std::snprintf(want, sizeof want, "cpu%d ", cpu);
    while (std::fgets(line, sizeof line, f)) {
      if (std::strncmp(line, want, std::strlen(want)) != 0) continue;
      // cpuN user nice system idle iowait irq softirq steal ...
      unsigned long long v[8] = {};
      if (std::sscanf(line + std::strlen(want), "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
                      &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
        steal = static_cast<double>(v[7]) / static_cast<double>(sysconf(_SC_CLK_TCK));
      }
      break;
    }
    std::fclose(f);
  }
  return steal;
}

ServerSample sample_server(int pid) {
  ServerSample s;
  if (pid <= 0) return s;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  if (FILE* f = std::fopen(path, "r")) {
    char buf[1024];
    std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = 0;
    const char* p = std::strrchr(buf, ')');  // the command name may hold spaces
    if (p) {
      // Fields after ')' start at 3 (state); utime is 14 and stime 15.
      unsigned long long ut = 0, st = 0;
      int cpu = -1;
      int field = 2;
      for (const char* q = p + 1; *q; ++q) {
        if (*q == ' ') {
          ++field;
          if (field == 14) ut = std::strtoull(q + 1, nullptr, 10);
          if (field == 15) st = std::strtoull(q + 1, nullptr, 10);
          if (field == 39) cpu = static_cast<int>(std::strtol(q + 1, nullptr, 10));
        }
      }
      s.cpu_s = static_cast<double>(ut + st) / static_cast<double>(sysconf(_SC_CLK_TCK));
      if (cpu >= 0) s.steal_s = cpu_steal_s(cpu);
      s.ok = true;
    }
  }
  auto status_value = [](const char* file, const char* key) {
    long v = 0;
    if (FILE* f = std::fopen(file, "r")) {
      char line[256];
      std::size_t klen = std::strlen(key);
      while (std::fgets(line, sizeof line, f))
        if (std::strncmp(line, key, klen) == 0) v += std::strtol(line + klen, nullptr, 10);
      std::fclose(f);
    }
    return v;
  };
  std::snprintf(path, sizeof path, "/proc/%d/status", pid);
  s.rss_kib = status_value(path, "VmRSS:");
  std::snprintf(path, sizeof path, "/proc/%d/task", pid);
  if (DIR* d = opendir(path)) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::string file = std::string(path) + "/" + e->d_name + "/status";
      s.ctx_switches += status_value(file.c_str(), "voluntary_ctxt_switches:");
      s.ctx_switches += status_value(file.c_str(), "nonvoluntary_ctxt_switches:");
    }
    closedir(d);
  }
  return s;
}

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

const EVP_MD* md_of(bool sha256) { return sha256 ? EVP_sha256() : EVP_sha1(); }

std::string hmac(bool sha256, std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(md_of(sha256), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string digest(bool sha256, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, md_of(sha256), nullptr);
  return std::string(reinterpret_cast<char*>(out), len);
}

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
  long closed_ = 0;
  Histogram login_lat_;
  bool login_lat_on_ = false;

  // messages
  std::vector<Step> steps_;
  std::uint64_t msgs_sent_ = 0, msgs_rx_ = 0, msgs_rx_unmatched_ = 0;
};

// ---------------------------------------------------------------------------------------------

int Bench::open_conn(std::uint32_t user, std::uint16_t resource) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error(std::string("socket: ") + std::strerror(errno));
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(static_cast<std::uint16_t>(o_.port));
  inet_pton(AF_INET, o_.host.c_str(), &dst.sin_addr);
  if (o_.sources > 0 && (ntohl(dst.sin_addr.s_addr) >> 24) == 127) {
    // Spread connections over source addresses so ephemeral ports never run out.
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    sockaddr_in src{};
    src.sin_family = AF_INET;
    src.sin_addr.s_addr =
        htonl(0x7f000002u + static_cast<std::uint32_t>(source_rr_++ % o_.sources));
    if (bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) {
      error(std::string("bind: ") + std::strerror(errno));
      ::close(fd);
      return -1;
    }
  }
  if (connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst) != 0 && errno != EINPROGRESS) {
    error(std::string("connect: ") + std::strerror(errno));
    ::close(fd);
    return -1;
  }
  int slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    slot = static_cast<int>(conns_.size());
    conns_.emplace_back();
  }
  Conn& c = conns_[slot];
  c.fd = fd;
  ++c.gen;
  c.st = St::kConnecting;
  c.level = 0;
  c.authed = false;
  c.tls_active = false;
  c.counted_online = false;
  c.session_required = false;
  c.user = user;
  c.resource = resource;
  c.t_start = now_ns();
  c.want_out = true;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT;
  ev.data.u64 = (std::uint64_t{c.gen} << 32) | static_cast<std::uint32_t>(slot);
  epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
  ++in_flight_;
  return slot;
}

void Bench::close_conn(int slot) {
  Conn& c = conns_[slot];
  if (c.st == St::kFree) return;
  if (c.st != St::kOnline && c.st != St::kClosing) --in_flight_;
  if (c.counted_online) {
    --online_;
    if (online_by_user_.size() > c.user && online_by_user_[c.user] == slot)
      online_by_user_[c.user] = -1;
  }
  if (c.ssl) {
    SSL_free(c.ssl);
    c.ssl = nullptr;
  }
  linger lg{1, 0};  // no TIME_WAIT pile-up over long login runs
  setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  ::close(c.fd);
  c.fd = -1;
  c.st = St::kFree;
  c.scram.reset();
  std::string().swap(c.in);
  std::string().swap(c.out);
  ++closed_;
  free_slots_.push_back(slot);
}

void Bench::set_out_interest(int slot, bool want) {
  Conn& c = conns_[slot];
  if (c.want_out == want) return;
  c.want_out = want;
  epoll_event ev{};
  ev.events = want ? (EPOLLIN | EPOLLOUT) : EPOLLIN;
  ev.data.u64 = (std::uint64_t{c.gen} << 32) | static_cast<std::uint32_t>(slot);
  epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
}

void Bench::send(int slot, std::string_view bytes) {
  Conn& c = conns_[slot];
  if (!c.out.empty() || c.st == St::kConnecting || c.st == St::kTlsHandshake) {
    c.out.append(bytes);
    return;
  }
  std::size_t done = 0;
  if (c.tls_active) {
    while (done < bytes.size()) {
      int n = SSL_write(c.ssl, bytes.data() + done, static_cast<int>(bytes.size() - done));
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
  } else {
    ssize_t n = ::send(c.fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n > 0) done = static_cast<std::size_t>(n);
  }
  if (done < bytes.size()) {
    c.out.append(bytes.substr(done));
    set_out_interest(slot, true);
  }
}

void Bench::flush(int slot) {
  Conn& c = conns_[slot];
  std::size_t done = 0;
  while (done < c.out.size()) {
    ssize_t n;
    if (c.tls_active) {
      n = SSL_write(c.ssl, c.out.data() + done, static_cast<int>(c.out.size() - done));
      if (n <= 0) {
        int e = SSL_get_error(c.ssl, static_cast<int>(n));
        if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) {
          error("tls write failed");
          close_conn(slot);
          return;
        }
        break;
      }
    } else {
      n = ::send(c.fd, c.out.data() + done, c.out.size() - done, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno != EAGAIN) {
          error(std::string("send: ") + std::strerror(errno));
          close_conn(slot);
          return;
        }
        break;
      }
    }
    done += static_cast<std::size_t>(n);
  }
  c.out.erase(0, done);
  if (c.out.empty()) std::string().swap(c.out);
  set_out_interest(slot, !c.out.empty());
}

void Bench::start_stream(int slot) {
  Conn& c = conns_[slot];
  c.level = 0;
  c.st = St::kStream;
  std::string h = "<?xml version='1.0'?><stream:stream to='" + o_.domain +
                  "' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                  "version='1.0'>";
  send(slot, h);
}

void Bench::tls_handshake(int slot) {
  Conn& c = conns_[slot];
  int r = SSL_connect(c.ssl);
  if (r == 1) {
    c.tls_active = true;
    start_stream(slot);
    if (!c.out.empty()) flush(slot);
    return;
  }
  int e = SSL_get_error(c.ssl, r);
  if (e == SSL_ERROR_WANT_READ) {
    set_out_interest(slot, false);
  } else if (e == SSL_ERROR_WANT_WRITE) {
    set_out_interest(slot, true);
  } else {
    error("tls handshake failed");
    close_conn(slot);
  }
}

void Bench::on_event(int slot, std::uint32_t events) {
  Conn& c = conns_[slot];
  if (c.st == St::kConnecting) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      error(std::string("connect: ") + std::strerror(err));
      close_conn(slot);
      return;
    }
    if (!(events & (EPOLLOUT | EPOLLIN))) return;
    if (o_.tls == "direct") {
      c.ssl = SSL_new(ssl_ctx_);
      SSL_set_fd(c.ssl, c.fd);
      SSL_set_tlsext_host_name(c.ssl, o_.domain.c_str());
      c.st = St::kTlsHandshake;
      tls_handshake(slot);
      return;
    }
    start_stream(slot);
    if (!c.out.empty())
      flush(slot);
    else
      set_out_interest(slot, false);
    return;
  }
  if (c.st == St::kTlsHandshake) {
    tls_handshake(slot);
    return;
  }
  if (events & EPOLLOUT) {
    flush(slot);
    if (conns_[slot].st == St::kFree || conns_[slot].gen != c.gen) return;
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(slot);
}

void Bench::on_readable(int slot) {
  std::uint32_t gen = conns_[slot].gen;
  // Plain sockets: a few reads, then level-triggered epoll calls again. TLS: read until OpenSSL
  // wants more from the socket, since it may hold decrypted bytes epoll cannot see.
  for (int round = 0; round < 4 || conns_[slot].tls_active; ++round) {
    Conn& c = conns_[slot];
    if (c.st == St::kFree || c.gen != gen) return;
    ssize_t n;
    if (c.tls_active) {
      n = SSL_read(c.ssl, scratch_.data(), static_cast<int>(scratch_.size()));
      if (n <= 0) {
        int e = SSL_get_error(c.ssl, static_cast<int>(n));
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
        if (c.st != St::kClosing) error("connection closed by server");
        close_conn(slot);
        return;
      }
    } else {
      n = ::recv(c.fd, scratch_.data(), scratch_.size(), 0);
      if (n < 0) {
        if (errno == EAGAIN) return;
        if (c.st != St::kClosing) error(std::string("recv: ") + std::strerror(errno));
        close_conn(slot);
        return;
      }
      if (n == 0) {
        if (c.st != St::kClosing) error("connection closed by server");
        close_conn(slot);
        return;
      }
    }
    if (c.in.empty()) {
      if (!process(slot, scratch_.data(), static_cast<std::size_t>(n))) return;
    } else {
      std::string buf;
      buf.swap(c.in);
      buf.append(scratch_.data(), static_cast<std::size_t>(n));
      if (!process(slot, buf.data(), buf.size())) return;
    }
    if (static_cast<std::size_t>(n) < scratch_.size() && !conns_[slot].tls_active) return;
  }
}

// Feeds bytes through the scanner; keeps an incomplete tail. False once the connection closed.
bool Bench::process(int slot, const char* data, std::size_t n) {
  std::uint32_t gen = conns_[slot].gen;
  std::size_t pos = 0;
  for (;;) {
    Conn& c = conns_[slot];
    int level = c.level;
    std::string_view el;
    std::size_t before = pos;
    Piece kind = next_piece(data, n, pos, level, el);
    c.level = static_cast<std::uint8_t>(level);
    if (kind == Piece::kNeedMore) {
      if (pos < n) c.in.assign(data + pos, n - pos);
      (void)before;
      return true;
    }
    if (!on_piece(slot, kind, el)) return false;
    if (conns_[slot].st == St::kFree || conns_[slot].gen != gen) return false;
    // A TLS upgrade consumes nothing more from this buffer: the rest is ciphertext.
    if (conns_[slot].st == St::kTlsHandshake) return false;
  }
}

bool Bench::on_piece(int slot, Piece kind, std::string_view el) {
  Conn& c = conns_[slot];
  if (kind == Piece::kStreamOpen) return true;
  if (kind == Piece::kStreamClose) {
    if (c.st != St::kClosing) error("stream closed by server");
    close_conn(slot);
    return false;
  }
  std::string_view name = local_name(el);
  if (name == "message") {
    on_message(slot, el);
  } else if (name == "presence") {
    on_presence(slot, el);
  } else if (name == "iq") {
    on_iq(slot, el);
  } else if (name == "features") {
    on_features(slot, el);
  } else if (name == "proceed" && c.st == St::kStartTls) {
    c.ssl = SSL_new(ssl_ctx_);
    SSL_set_fd(c.ssl, c.fd);
    SSL_set_tlsext_host_name(c.ssl, o_.domain.c_str());
    c.st = St::kTlsHandshake;
    tls_handshake(slot);
  } else if (name == "challenge" && c.st == St::kAuth && c.scram) {
    // The challenge text is the element's own content.
    std::size_t gt = el.find('>');
    std::size_t lt = el.rfind('<');
    auto server_first = xmpp::base64_decode(el.substr(gt + 1, lt > gt ? lt - gt - 1 : 0));
    if (!server_first) {
      error("sasl: bad challenge");
      close_conn(slot);
      return false;
    }
    ScramState& s = *c.scram;
    std::string_view sf = *server_first;
    std::string r, salt_b64;
    int iterations = 0;
    for (std::size_t at = 0; at < sf.size();) {
      std::size_t comma = sf.find(',', at);
      std::string_view kv = sf.substr(at, comma == std::string_view::npos ? sf.npos : comma - at);
      if (kv.size() > 2 && kv[1] == '=') {
        if (kv[0] == 'r') r = kv.substr(2);
        if (kv[0] == 's') salt_b64 = kv.substr(2);
        if (kv[0] == 'i') iterations = std::atoi(std::string(kv.substr(2)).c_str());
      }
      if (comma == std::string_view::npos) break;
      at = comma + 1;
    }
    auto salt = xmpp::base64_decode(salt_b64);
    if (r.compare(0, s.nonce.size(), s.nonce) != 0 || !salt || iterations <= 0) {
      error("sasl: bad server-first");
      close_conn(slot);
      return false;
    }
    const ScramKeys& k = scram_cache_.keys(s.sha256, o_.password, *salt, iterations);
    std::string without_proof = "c=biws,r=" + r;
    std::string auth_msg = s.client_first_bare + "," + std::string(sf) + "," + without_proof;
    std::string sig = hmac(s.sha256, k.stored_key, auth_msg);
    std::string proof = k.client_key;
    for (std::size_t i = 0; i < proof.size(); ++i) proof[i] ^= sig[i];
    s.server_signature = hmac(s.sha256, k.server_key, auth_msg);
    std::string final_msg = without_proof + ",p=" + xmpp::base64_encode(proof);
    send(slot, "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" +
                   xmpp::base64_encode(final_msg) + "</response>");
  } else if (name == "success" && c.st == St::kAuth) {
    if (c.scram) {
      std::size_t gt = el.find('>');
      std::size_t lt = el.rfind('<');
      bool has_text = el[gt - 1] != '/' && lt > gt + 1;
      auto final_msg = has_text ? xmpp::base64_decode(el.substr(gt + 1, lt - gt - 1))
                                : std::optional<std::string>();
      if (!final_msg || *final_msg != "v=" + xmpp::base64_encode(c.scram->server_signature)) {
        error("sasl: server signature mismatch");
        close_conn(slot);
        return false;
      }
      c.scram.reset();
    }
    c.authed = true;
    start_stream(slot);  // RFC 6120 §6.4.6: restart; the scanner level is back to 0
  } else if (name == "failure") {
    error("sasl failure: " + std::string(el.substr(0, 160)));
    close_conn(slot);
    return false;
  } else if (name == "error") {
    error("stream error: " + std::string(el.substr(0, 200)));
    close_conn(slot);
    return false;
  }
  return true;
}

void Bench::on_features(int slot, std::string_view el) {
  Conn& c = conns_[slot];
  if (c.st != St::kStream) return;
  if (!c.authed) {
    if (o_.tls == "starttls" && !c.tls_active) {
      c.st = St::kStartTls;
      send(slot, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
      return;
    }
    if (o_.mode == "register") {
      c.st = St::kRegister;
      send(slot, "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>" +
                     o_.prefix + std::to_string(o_.first + c.user) + "</username><password>" +
                     o_.password + "</password></query></iq>");
      return;
    }
    bool has256 = el.find(">SCRAM-SHA-256<") != std::string_view::npos;
    bool has1 = el.find(">SCRAM-SHA-1<") != std::string_view::npos;
    bool plain = el.find(">PLAIN<") != std::string_view::npos;
    std::string mech;
    if (o_.mech == "auto")
      mech = has256 ? "SCRAM-SHA-256" : has1 ? "SCRAM-SHA-1" : "PLAIN";
    else if (o_.mech == "plain")
      mech = "PLAIN";
    else if (o_.mech == "scram-sha-1")
      mech = "SCRAM-SHA-1";
    else
      mech = "SCRAM-SHA-256";
    if ((mech == "PLAIN" && !plain) || (mech == "SCRAM-SHA-1" && !has1) ||
        (mech == "SCRAM-SHA-256" && !has256)) {
      error("mechanism not offered: " + mech);
      close_conn(slot);
      return;
    }
    std::string user = o_.prefix + std::to_string(o_.first + c.user);
    std::string payload;
    if (mech == "PLAIN") {
      payload = std::string(1, '\0') + user + std::string(1, '\0') + o_.password;
    } else {
      c.scram = std::make_unique<ScramState>();
      c.scram->sha256 = mech == "SCRAM-SHA-256";
      c.scram->nonce = xmpp::base64_encode(xmpp::random_bytes(12));
      c.scram->client_first_bare = "n=" + user + ",r=" + c.scram->nonce;
      payload = "n,," + c.scram->client_first_bare;
    }
    c.st = St::kAuth;
    send(slot, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='" + mech + "'>" +
                   xmpp::base64_encode(payload) + "</auth>");
    return;
  }
  c.st = St::kBind;
  // A resource name never used before (run id and login count): a login never waits for the
  // server to retire an older session of the same resource (RFC 6120 §7.7.2.2).
  send(slot, "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r" +
                 std::to_string(c.resource) + "-" + std::to_string(run_id_) + "-" +
                 std::to_string(++bind_count_) + "</resource></bind></iq>");
  c.session_required = el.find("urn:ietf:params:xml:ns:xmpp-session") != std::string_view::npos &&
                       el.find("<optional") == std::string_view::npos;
}

void Bench::went_online(int slot) {
  Conn& c = conns_[slot];
  c.st = St::kOnline;
  c.counted_online = true;
  --in_flight_;
  ++online_;
  ++logins_done_;
  if (login_lat_on_) login_lat_.add((now_ns() - c.t_start) / 1000);
  if (online_by_user_.size() > c.user && online_by_user_[c.user] < 0)
    online_by_user_[c.user] = slot;
}

void Bench::on_iq(int slot, std::string_view el) {
  Conn& c = conns_[slot];
  std::string_view type = attribute(el, "type");
  std::string_view id = attribute(el, "id");
  if (type == "get" || type == "set") {
    // Roster pushes and pings: answer every request (RFC 6120 §8.2.3).
    std::string from(attribute(el, "from"));
    send(slot, "<iq type='result' id='" + std::string(id) + "'" +
                   (from.empty() ? std::string() : " to='" + from + "'") + "/>");
    return;
  }
  if (type == "error") {
    if (c.st == St::kRegister && el.find("conflict") != std::string_view::npos) {
      ++registered_;  // exists already: fine for a benchmark
      c.st = St::kClosing;
      --in_flight_;
      send(slot, "</stream:stream>");
      return;
    }
    error("iq error (" + std::string(id) + "): " + std::string(el.substr(0, 200)));
    close_conn(slot);
    return;
  }
  if (c.st == St::kRegister && id == "reg") {
    ++registered_;
    c.st = St::kClosing;
    --in_flight_;
    send(slot, "</stream:stream>");
  } else if (c.st == St::kBind && id == "b") {
    if (c.session_required) {
      c.st = St::kSession;
      send(slot,
           "<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
      return;
    }
    if (o_.mode == "logins") {
      went_online(slot);
      c.st = St::kClosing;
      send(slot, "</stream:stream>");
      return;
    }
    if (!o_.presence) {
      went_online(slot);
      return;
    }
    c.st = St::kRoster;
    send(slot, "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>");
  } else if (c.st == St::kSession && id == "s") {
    c.st = St::kRoster;
    send(slot, "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>");
  } else if (c.st == St::kRoster && id == "r") {
    send(slot, "<presence/>");
    went_online(slot);
  }
}

void Bench::on_message(int slot, std::string_view el) {
  if (attribute(el, "type") == "error") {
    error("message error: " + std::string(el.substr(0, 200)));
    return;
  }
  std::string_view body = child_text(el, "body");
  if (body.size() < 2 || body[0] != 't') {
    ++msgs_rx_unmatched_;
    return;
  }
  std::int64_t sent = 0;
  std::from_chars(body.data() + 1, body.data() + body.size(), sent);
  std::int64_t now = now_ns();
  ++msgs_rx_;
  for (Step& s : steps_) {
    if (sent >= s.t0 && sent < s.t1) {
      ++s.delivered;
      s.lat.add((now - sent) / 1000);
      break;
    }
  }
}

void Bench::on_presence(int slot, std::string_view el) {
  std::string_view type = attribute(el, "type");
  if (type.empty() || type == "unavailable") {
    ++presence_rx_;
  } else if (type == "subscribe") {
    std::string from(attribute(el, "from"));
    send(slot, "<presence type='subscribed' to='" + from + "'/>");
  } else if (type == "subscribed") {
    ++subscribed_;
  } else if (type == "error") {
    error("presence error: " + std::string(el.substr(0, 200)));
  }
}

void Bench::poll_once(int timeout_ms) {
  epoll_event evs[512];
  int n = epoll_wait(ep_, evs, 512, timeout_ms);
  for (int i = 0; i < n; ++i) {
    int slot = static_cast<int>(evs[i].data.u64 & 0xffffffffu);
    auto gen = static_cast<std::uint32_t>(evs[i].data.u64 >> 32);
    if (slot >= static_cast<int>(conns_.size())) continue;
    Conn& c = conns_[slot];
    if (c.st == St::kFree || c.gen != gen) continue;
    on_event(slot, evs[i].events);
  }
}

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

std::string fmt_num(double v, int prec = 1) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Scenarios

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
      ",\"scram_derivations\":" + std::to_string(scram_cache_.derivations()) + ",";
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

int Bench::run() {
  // The idle scenario holds thousands of sockets: take the whole descriptor allowance.
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  signal(SIGPIPE, SIG_IGN);
  ep_ = epoll_create1(EPOLL_CLOEXEC);
  if (o_.tls != "none") {
    ssl_ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ssl_ctx_, SSL_VERIFY_NONE, nullptr);
    // Idle TLS connections should hold no buffers in the tool either.
    SSL_CTX_set_mode(ssl_ctx_, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                                   SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ssl_ctx_, SSL_SESS_CACHE_OFF);
  }
  online_by_user_.assign(static_cast<std::size_t>(o_.users), -1);
  double limit = o_.time_limit;
  if (limit <= 0) {
    limit = o_.login_timeout + 30;
    if (o_.mode == "messages")
      limit += static_cast<double>(o_.rates.size()) * (o_.warmup + o_.measure + 1) + o_.drain;
    if (o_.mode == "idle") limit += o_.hold;
    if (o_.mode == "logins" || o_.mode == "presence") limit += o_.duration;
  }
  deadline_ = now_ns() + static_cast<std::int64_t>(limit * 1e9);
  int rc;
  if (o_.mode == "register")
    rc = run_register();
  else if (o_.mode == "subscribe")
    rc = run_subscribe();
  else if (o_.mode == "messages")
    rc = run_messages();
  else if (o_.mode == "idle")
    rc = run_idle();
  else if (o_.mode == "logins")
    rc = run_logins();
  else
    rc = run_presence();
  if (timed_out()) {
    std::fprintf(stderr, "kabar-bench: stopped at its time limit (%.0f s)\n", limit);
    rc = 1;
  }
  return rc;
}

}  // namespace
}  // namespace kabar::bench

int main(int argc, char** argv) {
  kabar::bench::Bench bench(kabar::bench::parse_options(argc, argv));
  return bench.run();
}
