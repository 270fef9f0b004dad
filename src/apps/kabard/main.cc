// kabard: the kabar XMPP server.
#include <fcntl.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/asio.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>

#include "server/admin_socket.h"
#include "server/config.h"
#include "server/server.h"
#include "version/version.h"

namespace {

// The file-descriptor limit bounds the number of connections: raise the soft limit to the hard
// one and say so.
void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  rlim_t before = rl.rlim_cur;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
      spdlog::warn("could not raise the open-file limit from {}", before);
      return;
    }
  }
  spdlog::info("open-file limit {} (was {}; hard limit {})", rl.rlim_cur, before, rl.rlim_max);
}

// One kabard per data directory: two would each cache sessions, rosters and offline queues the
// other cannot see. An exclusive flock on DATA/kabard.lock, held by this open descriptor for the
// life of the process (the kernel drops it when the process ends, however it ends). kabarctl does
// not take it: it may run beside kabard (SQLite's WAL mode and busy timeout serialize them).
class DataDirLock {
 public:
  // Creates the data directory if needed (as Server::start() would) and takes the lock; on
  // failure returns false with a one-line reason in `error`.
  bool acquire(const std::filesystem::path& dir, std::string& error) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) {
      error = "cannot create data directory " + dir.string() + ": " + ec.message();
      return false;
    }
    const std::filesystem::path path = dir / "kabard.lock";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ < 0) {
      error = "cannot open " + path.string() + ": " + std::strerror(errno);
      return false;
    }
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      if (err != EWOULDBLOCK) {
        error = "cannot lock " + path.string() + ": " + std::strerror(err);
        return false;
      }
      error = "data directory " + dir.string() + " is in use by another kabard";
      char buf[32] = {};
      const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
      const std::string pid = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
      if (!pid.empty() && pid.find_first_not_of("0123456789\n") == std::string::npos) {
        error += " (pid " + pid.substr(0, pid.find('\n')) + ")";
      }
      return false;
    }
    // The holder's pid, for the message above and for people (not used to decide anything).
    const std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd_, 0) != 0 ||
        ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
      spdlog::warn("could not write the pid into {}", path.string());
    }
    return true;
  }

  ~DataDirLock() {
    if (fd_ >= 0) ::close(fd_);
  }

 private:
  int fd_ = -1;
};

}  // namespace

int main(int argc, char** argv) {
  using kabar::server::Config;
  CLI::App app{"kabard: the kabar XMPP server (RFC 6120/6121)"};
  std::string domain, data_dir, config_file, log_level;
  std::vector<std::string> c2s, c2s_tls, proxy65, http, https;
  std::string web_root;
  bool allow_registration = false, allow_plaintext = false;
  int threads = 0;
  app.add_option("--config", config_file, "TOML configuration file (flags override it)")
      ->check(CLI::ExistingFile);
  app.add_option("--domain", domain, "the XMPP domain served (default: localhost)");
  app.add_option("--data-dir", data_dir,
                 "directory for the database and certificate (default: data)");
  app.add_option("--c2s", c2s, "client listener with STARTTLS, HOST:PORT (repeatable)");
  app.add_option("--c2s-tls", c2s_tls, "client listener with direct TLS (XEP-0368), HOST:PORT");
  app.add_option("--proxy65", proxy65,
                 "SOCKS5 bytestreams proxy (XEP-0065) as proxy.DOMAIN, HOST:PORT (default: none)");
  app.add_option(
      "--http", http,
      "HTTP listener, HOST:PORT (default: none): file upload (XEP-0363) as upload.DOMAIN, XMPP "
      "over WebSocket (RFC 7395) at /xmpp-websocket, the web client at /");
  app.add_option("--https", https,
                 "HTTPS listener with the client certificate, HOST:PORT (default: none): "
                 "WebSocket (wss://) and the web client");
  app.add_option("--web-root", web_root,
                 "Converse.js's dist/ directory for the web client (default: found next to the "
                 "binary, web/node_modules/converse.js/dist in a checkout)");
  app.add_flag("--allow-registration", allow_registration,
               "let clients create accounts in-band (XEP-0077)");
  app.add_flag("--allow-plaintext", allow_plaintext,
               "let clients authenticate without TLS (local tests and benchmarks only)");
  app.add_option("--threads", threads,
                 "I/O shards, each an event loop on its own thread (default: one per CPU this "
                 "process may run on)")
      ->check(CLI::Range(1, 256));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error (default: info)");
  // One line, named like every other error of kabard.
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return std::string("kabard: ") + e.what() + " (see kabard --help)\n";
  });
  app.set_version_flag("--version", std::string("kabard ") + kabar::version());
  app.footer(
      "Exit status: 0 after a clean shutdown (SIGTERM or SIGINT), 1 when the server cannot\n"
      "start (a port in use, the data directory locked by another kabard), 2 on a\n"
      "command-line or configuration error.");
  // Every command-line error (an unknown flag, a missing or bad value) exits 2, as a bad
  // configuration does; --help and --version exit 0.
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  spdlog::set_default_logger(spdlog::stderr_color_mt("kabard"));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

  Config cfg;
  try {
    if (!config_file.empty()) kabar::server::load_config_file(config_file, cfg);
    if (!domain.empty()) cfg.domain = domain;
    if (!data_dir.empty()) cfg.data_dir = data_dir;
    if (!c2s.empty()) {
      cfg.c2s.clear();
      for (const auto& e : c2s) cfg.c2s.push_back(kabar::server::parse_endpoint(e));
    }
    if (!c2s_tls.empty()) {
      cfg.c2s_tls.clear();
      for (const auto& e : c2s_tls) cfg.c2s_tls.push_back(kabar::server::parse_endpoint(e));
    }
    if (!proxy65.empty()) {
      cfg.proxy65.clear();
      for (const auto& e : proxy65) cfg.proxy65.push_back(kabar::server::parse_endpoint(e));
    }
    if (!http.empty()) {
      cfg.http.clear();
      for (const auto& e : http) cfg.http.push_back(kabar::server::parse_endpoint(e));
    }
    if (!https.empty()) {
      cfg.https.clear();
      for (const auto& e : https) cfg.https.push_back(kabar::server::parse_endpoint(e));
    }
    if (!web_root.empty()) cfg.web_root = web_root;
    if (allow_registration) cfg.allow_registration = true;
    if (allow_plaintext) cfg.allow_plaintext = true;
    if (!log_level.empty()) cfg.log_level = log_level;
    if (threads > 0) cfg.threads = threads;
    auto domain_jid = kabar::xmpp::Jid::parse(cfg.domain);
    if (!domain_jid || !domain_jid->is_domain()) {
      throw std::runtime_error("'" + cfg.domain + "' is not a valid domain");
    }
    cfg.domain = domain_jid->domain();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kabard: %s\n", e.what());
    return 2;
  }
  auto level = spdlog::level::from_str(cfg.log_level);
  if (level == spdlog::level::off && cfg.log_level != "off") {
    std::fprintf(stderr, "kabard: unknown log level '%s'\n", cfg.log_level.c_str());
    return 2;
  }
  spdlog::set_level(level);
  DataDirLock lock;
  if (std::string error; !lock.acquire(cfg.data_dir, error)) {
    std::fprintf(stderr, "kabard: %s\n", error.c_str());
    return 1;
  }
  raise_fd_limit();

  boost::asio::io_context io(1);
  // Registered before the listeners open: a SIGTERM that arrives once a client can connect but
  // before io.run() is queued for the handler below instead of killing the process (the default
  // action), so kabard always shuts down cleanly.
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  std::signal(SIGPIPE, SIG_IGN);
  kabar::server::Server server(io, cfg);
  try {
    server.start();
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    std::fprintf(stderr, "kabard: %s\n", e.what());
    return 1;
  }
  kabar::server::AdminSocket admin(server);
  try {
    admin.start();
  } catch (const std::exception& e) {
    // kabard serves without it; `kabarctl user delete` then cannot end live sessions.
    spdlog::warn("no admin control socket: {}", e.what());
  }
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    spdlog::info("signal {}: shutting down", sig);
    admin.stop();
    server.stop();
  });
  io.run();
  server.join();
  spdlog::info("stopped; store closed");
  return 0;
}
