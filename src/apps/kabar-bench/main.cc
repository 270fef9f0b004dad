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
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>

#include <cstdio>

#include "apps/kabar-bench/bench.h"

namespace kabar::bench {

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

}  // namespace kabar::bench

int main(int argc, char** argv) {
  kabar::bench::Bench bench(kabar::bench::parse_options(argc, argv));
  return bench.run();
}
