#include "server/server.h"

#include <malloc.h>
#include <openssl/ssl.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/tcp_transport.h"
#include "net/websocket_transport.h"
#include "server/c2s_session.h"
#include "server/core/undelivered.h"
#include "server/features.h"
#include "server/http/http_server.h"
#include "server/listener.h"
#include "server/tls/certificate.h"
#include "tls/handover.h"
#include "xml/serializer.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

namespace kabar::server {

namespace {

// `stanza` (one serialized element) with a XEP-0203 <delay/> as its last child, put in as text:
// the message log stores what a message would be as an offline message, on the store's thread,
// without parsing it.
std::string with_delay(std::string stanza, const std::string& domain, std::int64_t stamp_ms) {
  std::string delay = "<delay xmlns='urn:xmpp:delay' from='";
  xml::escape_attr(domain, delay);
  delay += "' stamp='" + xmpp::format_datetime(stamp_ms) + "'>Offline Storage</delay>";
  std::size_t end = stanza.size();
  while (end > 0 && (stanza[end - 1] == ' ' || stanza[end - 1] == '\n' || stanza[end - 1] == '\r' ||
                     stanza[end - 1] == '\t')) {
    --end;
  }
  stanza.resize(end);
  if (end >= 2 && stanza.compare(end - 2, 2, "/>") == 0) {
    // An empty element: it gets content and an end tag with its qualified name.
    std::size_t name_end = 1;
    while (name_end < stanza.size() && stanza[name_end] != ' ' && stanza[name_end] != '/' &&
           stanza[name_end] != '>' && stanza[name_end] != '\t' && stanza[name_end] != '\n' &&
           stanza[name_end] != '\r') {
      ++name_end;
    }
    const std::string name = stanza.substr(1, name_end - 1);
    stanza.resize(end - 2);
    stanza += '>';
    stanza += delay;
    stanza += "</" + name + ">";
    return stanza;
  }
  const std::size_t close = stanza.rfind("</");
  if (close == std::string::npos) return stanza;
  stanza.insert(close, delay);
  return stanza;
}

// How long the message log gathers operations before a batch is committed.
constexpr int kLogGatherMs = 10;
constexpr int kArchiveGatherMs = 1000;

// Set on a shard's thread when an ack lets logged messages go (Server::take_log_removals()).
thread_local bool t_log_removals = false;

// A message logged in flight, held by its entry in the recipient's queue: delivered, its record
// goes; dropped without delivery (the entry destroyed), it becomes an offline message.
struct LoggedDelivery {
  std::shared_ptr<store::MessageLog> log;
  std::shared_ptr<store::LogRecord> rec;
  bool delivered = false;
  LoggedDelivery(std::shared_ptr<store::MessageLog> l, std::shared_ptr<store::LogRecord> r)
      : log(std::move(l)), rec(std::move(r)) {}
  LoggedDelivery(const LoggedDelivery&) = delete;
  LoggedDelivery& operator=(const LoggedDelivery&) = delete;
  ~LoggedDelivery() {
    if (!delivered) log->release(std::move(rec));
  }
};

}  // namespace

namespace ns = xmpp::ns;
using asio::ip::tcp;

Server::Server(asio::io_context& io, Config cfg)
    : io_(io),
      cfg_(std::move(cfg)),
      tls_(asio::ssl::context::tls_server),
      throttle_(AuthThrottleLimits{
          .per_address = cfg_.auth_failures_per_address,
          .per_account_address = cfg_.auth_failures_per_account,
          .slow_account_after = cfg_.auth_failures_slow_account,
          .delay_ms = cfg_.auth_failure_delay_ms,
          .max_delay_ms = std::max(cfg_.auth_failure_max_delay_ms, cfg_.auth_failure_delay_ms),
      }),
      unauth_(static_cast<std::size_t>(cfg_.unauthenticated_connections),
              static_cast<std::size_t>(cfg_.unauthenticated_per_address)) {
  unknown_user_ = xmpp::make_credentials(xmpp::ScramHash::kSha256, xmpp::random_bytes(16),
                                         cfg_.scram_iterations);
  // The batch gathers for kLogGatherMs before it runs: each run wakes the store's thread and
  // then the shards its completions go to, so fewer runs cost less (10 ms instead of 2 ms: about
  // 9% more messages per CPU-second with stream management at 4,000 msg/s, docs/PERFORMANCE.md),
  // and a message acknowledged within the window is never written. The sender's ack waits that
  // much longer.
  // Archive records alone wait kArchiveGatherMs (or until MessageLog::kArchiveGatherMax are
  // queued): nobody waits for them (a query asks for a commit first), and each commit writes
  // every page it touched to the WAL, so the longer the gather, the more records share a page.
  // (Measured when the archive still had an index per message: at 4,000 msg/s among 1,000
  // accounts, 1 s instead of 100 ms gave 25% more messages per CPU-second, bench/profile.) A crash
  // loses at most that second of the archive, never a message: delivery, offline storage and stream
  // management acks do not wait for it. The runs for messages in flight leave the archive records
  // queued (with stream management on they come every few milliseconds); an archive query's
  // barrier takes them.
  auto run_after = [this](int ms, bool lazy) {
    db_pending_.fetch_add(1, std::memory_order_acq_rel);
    auto timer = std::make_shared<asio::steady_timer>(store_pool_.get_executor(),
                                                      std::chrono::milliseconds(ms));
    timer->async_wait([this, timer, lazy](const boost::system::error_code&) {
      if (auto error = log_->run(*store_, lazy)) spdlog::error("store: message log: {}", *error);
      db_pending_.fetch_sub(1, std::memory_order_acq_rel);
    });
  };
  log_ = std::make_shared<store::MessageLog>(
      [run_after] { run_after(kLogGatherMs, false); },
      [domain = cfg_.domain](std::string stanza, std::int64_t stamp_ms) {
        return with_delay(std::move(stanza), domain, stamp_ms);
      },
      [run_after] { run_after(kArchiveGatherMs, true); }, [run_after] { run_after(0, false); });
  registry_.modules_ = make_modules();
  ModuleContext ctx(*this, registry_);
  for (auto& m : registry_.modules_) m->setup(ctx);
}

Server::~Server() {
  join();
  // What is still in flight stays so; the next start makes it offline messages.
  log_->close();
  store_pool_.join();
}

namespace {

// Gives the freed heap back to the system (glibc's malloc_trim). Not under AddressSanitizer or
// ThreadSanitizer: their allocator replaces glibc's, whose arenas malloc_trim would then walk
// uninitialised (two shards trimming at once crashed an ASan kabard in mtrim).
void trim_heap() {
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  malloc_trim(0);
#endif
}

// CPUs this process may run on (taskset and cgroups' cpusets narrow it).
unsigned usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return static_cast<unsigned>(n);
  }
  const unsigned hc = std::thread::hardware_concurrency();
  return hc > 0 ? hc : 1;
}

}  // namespace

void Server::setup_tls() {
  std::filesystem::path cert = cfg_.tls_cert;
  std::filesystem::path key = cfg_.tls_key;
  if (cert.empty()) {
    cert = cfg_.data_dir / "cert.pem";
    key = cfg_.data_dir / "key.pem";
    if (!std::filesystem::exists(cert) || !std::filesystem::exists(key)) {
      generate_self_signed(cfg_.domain, cert, key);
      spdlog::warn("no TLS certificate configured: generated a self-signed one for {} in {}",
                   cfg_.domain, cert.string());
    }
  } else if (key.empty()) {
    key = cert;
  }
  SSL_CTX* ctx = tls_.native_handle();
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  // Idle connections give their TLS buffers back (memory per idle connection).
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  // TLS 1.3 connections move to our own record layer after the handshake (tls/handover.h); this
  // also turns TLS 1.3 session tickets off.
  tls::enable_handover(ctx);
  tls_.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                   asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
  boost::system::error_code ec;
  tls_.use_certificate_chain_file(cert.string(), ec);
  if (ec)
    throw std::runtime_error("cannot load TLS certificate " + cert.string() + ": " + ec.message());
  tls_.use_private_key_file(key.string(), asio::ssl::context::pem, ec);
  if (ec) throw std::runtime_error("cannot load TLS key " + key.string() + ": " + ec.message());
  spdlog::info("TLS certificate {}", cert.string());
}

void Server::start() {
  started_ms_ = now_ms();
  std::error_code fec;
  std::filesystem::create_directories(cfg_.data_dir, fec);
  if (fec) {
    throw std::runtime_error("cannot create data directory " + cfg_.data_dir.string() + ": " +
                             fec.message());
  }
  ::chmod(cfg_.data_dir.c_str(), 0700);
  if (!store_) {
    try {
      store_ = store::open_sqlite_store(cfg_.data_dir);
    } catch (const store::StoreError& e) {
      throw std::runtime_error(std::string("cannot open the store: ") + e.what());
    }
    spdlog::info("store: SQLite in {} (schema version {})", cfg_.data_dir.string(),
                 store_->schema_version());
    // Messages logged in flight when kabard last stopped without settling them (a crash):
    // their delivery is not certain, so they are offline messages now.
    try {
      if (const std::size_t n = store_->release_in_flight(); n > 0) {
        spdlog::info("store: {} messages in flight at the last stop are offline messages now", n);
      }
    } catch (const store::StoreError& e) {
      throw std::runtime_error(std::string("cannot open the store: ") + e.what());
    }
  }
  try {
    log_->set_archive_seq_floor(store_->archive_last_seq());
  } catch (const store::StoreError& e) {
    throw std::runtime_error(std::string("cannot open the store: ") + e.what());
  }
  setup_tls();
  const unsigned wanted = cfg_.threads > 0 ? static_cast<unsigned>(cfg_.threads) : usable_cpus();
  const unsigned count = std::min(wanted, 256u);
  for (unsigned i = 0; i < count; ++i) {
    auto sh = std::make_unique<Shard>();
    sh->index = i;
    if (i == 0) {
      sh->io = &io_;
    } else {
      sh->own_io = std::make_unique<asio::io_context>(1);
      sh->io = sh->own_io.get();
      sh->work.emplace(sh->own_io->get_executor());
    }
    ring_.shards.push_back(sh.get());
    shards_.push_back(std::move(sh));
  }
  if (cfg_.c2s.empty() && cfg_.c2s_tls.empty()) {
    throw std::runtime_error("no listener configured (use --c2s HOST:PORT)");
  }
  for (const auto& ep : cfg_.c2s) listen(ep, false);
  for (const auto& ep : cfg_.c2s_tls) listen(ep, true);
  if (!cfg_.http.empty() || !cfg_.https.empty()) {
    http_ = std::make_unique<HttpServer>(*this);
    http_->start();
  }
  {
    // Modules with sockets or timers of their own (the proxy, upload) start here, on shard 0.
    ModuleContext ctx(*this, registry_);
    for (auto& m : registry_.modules_) m->start(ctx);
  }
  for (auto& sh : shards_) {
    asio::co_spawn(*sh->io, sweep_loop(*sh), asio::detached);
    if (sh->own_io) {
      Shard* raw = sh.get();
      raw->thread = std::thread([raw] {
        raw->own_io->run();
        raw->done = true;
      });
    }
  }
  spdlog::info("{} I/O shard{} (event loops on their own threads){}", shards_.size(),
               shards_.size() == 1 ? "" : "s",
               cfg_.threads > 0 ? "" : ": one per CPU available to the process");
  spdlog::info("serving {}{}{}", cfg_.domain,
               cfg_.allow_registration ? ", in-band registration on" : "",
               cfg_.allow_plaintext ? ", authentication without TLS allowed (testing only)" : "");
}

void Server::listen(const Endpoint& ep, bool direct_tls) {
  auto acc = open_listener(io_, ep, "client");
  auto bound = acc->local_endpoint();
  spdlog::info("listening for clients ({}) on {}:{}", direct_tls ? "direct TLS" : "STARTTLS",
               bound.address().to_string(), bound.port());
  asio::co_spawn(io_,
                 net::accept_loop(*acc, stopping_, ring_,
                                  [this, direct_tls](net::Shard& sh, tcp::socket sock) {
                                    adopt(static_cast<Shard&>(sh), std::move(sock), direct_tls);
                                  }),
                 asio::detached);
  acceptors_.push_back(std::move(acc));
}

namespace {

// A connection over its address's cap of unauthenticated ones, closed before any session or TLS
// state is made for it. On the STARTTLS port it is told why first: our stream header and a
// <policy-violation/> stream error (RFC 6120 §4.9.1.1: the header precedes the error), written
// at once without waiting for the client's header (a few hundred bytes always fit a new
// socket's send buffer). On the direct TLS port it is just closed.
void refuse_connection(tcp::socket& sock, bool direct_tls, const std::string& domain) {
  boost::system::error_code ec;
  sock.non_blocking(true, ec);
  if (!direct_tls && !ec) {
    std::string out = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='";
    out += ns::kStream;
    out += "' version='1.0' from='";
    xml::escape_attr(domain, out);
    out += "'>";
    out += xmpp::stream_error_xml("policy-violation",
                                  "too many unauthenticated connections from your address");
    sock.write_some(asio::buffer(out), ec);
    // Bytes the client sent already would turn the close into a reset that can overtake the
    // error: read them first (only what has arrived; never wait).
    std::array<char, 4096> scratch;
    for (int i = 0; i < 16 && !ec; ++i) sock.read_some(asio::buffer(scratch), ec);
    sock.shutdown(tcp::socket::shutdown_both, ec);
  }
  sock.close(ec);
}

}  // namespace

void Server::adopt(Shard& shard, tcp::socket sock, bool direct_tls) {
  if (stopping_) return;  // the socket closes as it goes
  boost::system::error_code ec;
  const auto remote = sock.remote_endpoint(ec);
  const std::string key = ec ? std::string("?") : address_key(remote.address().to_string());
  UnauthenticatedConnections::Admission admission = unauth_.admit(key);
  if (!admission.admitted) {
    spdlog::debug("c2s {}: over {} unauthenticated connections from that address: refused", key,
                  cfg_.unauthenticated_per_address);
    refuse_connection(sock, direct_tls, cfg_.domain);
    return;
  }
  auto transport =
      std::make_unique<net::TcpTransport>(shard, std::move(sock), tls_.native_handle(), direct_tls);
  start_session(shard, std::move(transport), std::move(admission));
}

void Server::adopt_websocket(Shard& shard, std::unique_ptr<net::Transport> inner, bool started) {
  const std::string& peer = inner->peer_address();
  UnauthenticatedConnections::Admission admission = unauth_.admit(address_key(peer));
  if (stopping_ || !admission.admitted) {
    spdlog::debug("ws {}: over {} unauthenticated connections from that address: refused", peer,
                  cfg_.unauthenticated_per_address);
    inner->abandon();
    asio::post(*shard.io, [t = std::move(inner)] {});  // after what may still name it
    return;
  }
  net::WebSocketOptions o;
  // A message is one stanza (RFC 7395 §3.3.3): the stanza limit, with room for the framing
  // elements; the session's parser applies the stanza limits themselves, as on TCP.
  o.max_message = cfg_.max_stanza_bytes + 4096;
  // Plain ws:// from this machine (a browser here, or a TLS-terminating proxy in front) counts
  // as secure for authentication; from elsewhere only wss:// does (or --allow-plaintext).
  boost::system::error_code ec;
  const auto addr = asio::ip::make_address(peer, ec);
  o.trusted_plain =
      !ec && (addr.is_loopback() ||
              (addr.is_v6() && addr.to_v6().is_v4_mapped() &&
               asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6()).is_loopback()));
  auto transport = std::make_unique<net::WebSocketTransport>(std::move(inner), started, o);
  start_session(shard, std::move(transport), std::move(admission));
}

void Server::start_session(Shard& shard, std::unique_ptr<net::Transport> transport,
                           UnauthenticatedConnections::Admission admission) {
  auto session = std::make_shared<C2sSession>(*this, shard, std::move(transport));
  session->preauth_ticket = admission.ticket;
  const bool counted = unauth_.attach(admission.ticket, session);
  session->start();
  constexpr std::string_view kFull = "too many unauthenticated connections";
  // Evicted by a connection admitted on another shard between admit() and attach().
  if (!counted) session->stream_error("resource-constraint", kFull);
  if (auto oldest = admission.evicted.lock()) oldest->stream_error("resource-constraint", kFull);
}

awaitable<void> Server::sweep_loop(Shard& shard) {
  // Per shard: timeouts, pings and hibernation of the shard's own connections.
  shard.sweep_timer = std::make_unique<asio::steady_timer>(*shard.io);
  while (!stopping_) {
    shard.sweep_timer->expires_after(std::chrono::seconds(1));
    boost::system::error_code ec;
    co_await shard.sweep_timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_) co_return;
    std::int64_t now = now_ms();
    std::vector<SessionPtr> live;
    live.reserve(shard.sessions.size());
    for (auto& [raw, weak] : shard.sessions) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
    std::size_t hibernated = 0;
    for (auto& s : live) {
      if (s->closed()) {
        if (s->closed_at_ms != 0 && now - s->closed_at_ms > 5000) s->abort();
        continue;
      }
      // A client that reads nothing while its output is over the high watermark holds up its
      // senders: it is cut, and what it had queued routed again (C2sSession::cut_stalled()).
      if (s->write_stalled(now, std::int64_t{cfg_.write_stall_timeout_s} * 1000)) {
        s->cut_stalled();
        continue;
      }
      if (now - s->last_read_ms >= kHibernateAfterMs && s->hibernate()) ++hibernated;
      // XEP-0198: acks asked for on a timer; a detached session waits for its resumption.
      if (s->sm_tick(now)) continue;
      if (!s->bound()) {
        if (now - s->created_ms > std::int64_t{cfg_.auth_timeout_s} * 1000) {
          s->stream_error("connection-timeout", "no authentication in time");
        }
        continue;
      }
      if (s->ping_sent_ms != 0 && s->last_read_ms >= s->ping_sent_ms) s->ping_sent_ms = 0;
      if (s->ping_sent_ms != 0) {
        if (now - s->ping_sent_ms > std::int64_t{cfg_.ping_timeout_s} * 1000 &&
            !s->detach_if_resumable()) {
          s->stream_error("connection-timeout", "no answer to ping");
        }
      } else if (now - s->last_read_ms > std::int64_t{cfg_.idle_timeout_s} * 1000) {
        // Dead connections found by a ping: over WebSocket a ping frame (RFC 6455 §5.5.2, which
        // a browser answers itself, whatever its page is doing), else XEP-0199 §4.2's
        // server-to-client ping. Any read after it (its answer) clears it.
        if (!s->ping_connection()) {
          xml::Element ping("iq", ns::kClient);
          ping.set_attr("from", cfg_.domain);
          ping.set_attr("to", s->jid().str());
          ping.set_attr("type", "get");
          ping.set_attr("id", "kabar-ping-" + std::to_string(now));
          ping.add_child("ping", ns::kPing);
          send_to(s, ping);
        }
        s->ping_sent_ms = now;
      }
    }
    // What idle connections gave back goes back to the system too, not just to malloc's free
    // lists: a burst of logins that then sit idle would otherwise keep their peak RSS.
    // So does what a burst of connections that ended held (a flood of unauthenticated ones).
    const std::size_t freed = hibernated + shard.closed_since_trim;
    if (freed >= 16 || (freed > 0 && now - shard.last_trim_ms > 10'000)) {
      trim_heap();
      shard.last_trim_ms = now;
      shard.closed_since_trim = 0;
    }
  }
}

void Server::stop() {
  if (stopping_.exchange(true)) return;
  spdlog::info("stopping");
  for (auto& acc : acceptors_) {
    boost::system::error_code ec;
    acc->close(ec);
  }
  for (auto& m : registry_.modules_) m->stop();
  if (http_) http_->stop();
  for (auto& sh : shards_) {
    Shard* raw = sh.get();
    asio::post(*raw->io, [this, raw] { stop_shard(*raw); });
  }
}

void Server::stop_shard(Shard& shard) {
  if (shard.sweep_timer) shard.sweep_timer->cancel();
  std::vector<SessionPtr> live;
  for (auto& [raw, weak] : shard.sessions) {
    if (auto s = weak.lock()) live.push_back(std::move(s));
  }
  if (!live.empty()) {
    spdlog::info("shard {}: closing {} connections", shard.index, live.size());
  }
  // Nothing more is read; what was read is handled (stored, routed) before each stream ends.
  for (auto& s : live) s->shut_down();
  // Peers that do not read are cut off after a grace period (what they had queued is routed
  // again, core/undelivered.h); then the shard's loop may end once the work under way is done.
  auto timer = std::make_shared<asio::steady_timer>(*shard.io, std::chrono::seconds(2));
  timer->async_wait([&shard, timer](const boost::system::error_code&) {
    std::vector<SessionPtr> left;
    for (auto& [raw, weak] : shard.sessions) {
      if (auto s = weak.lock()) left.push_back(std::move(s));
    }
    // A session still handling what it read finishes (join() bounds the wait).
    for (auto& s : left) {
      if (!s->processing()) s->abort();
    }
    net::stop_lingering();  // closed connections waiting for their peers' FIN keep no loop alive
    shard.work.reset();
  });
}

void Server::join() {
  for (auto& sh : shards_) {
    if (!sh->thread.joinable()) continue;
    // Sessions still closing get a few seconds (their last store writes), then the loop stops.
    for (int i = 0; i < 500 && !sh->done; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!sh->done) sh->own_io->stop();
    sh->thread.join();
  }
}

SessionPtr Server::bound_session(const xmpp::Jid& full) const {
  return bound_session(full.bare_str(), full.str());
}

SessionPtr Server::bound_session(std::string_view bare, std::string_view full) const {
  std::lock_guard lock(dir_mu_);
  auto it = bound_.find(bare);
  if (it == bound_.end()) return nullptr;
  for (const auto& r : it->second) {
    // Set before bind() and fixed afterwards, like jid().
    if (r.session->jid_str() == full) return r.session;
  }
  return nullptr;
}

namespace {

// What the directory shows other shards of a session (Server::bind and Server::publish).
void copy_presence_state(const C2sSession& s, ResourceView& r) {
  r.available = s.available;
  r.priority = s.priority;
  r.presence = s.last_presence;
}

}  // namespace

SessionPtr Server::bind(const SessionPtr& s) {
  ResourceView r;
  r.session = s;
  copy_presence_state(*s, r);
  std::lock_guard lock(dir_mu_);
  auto& resources = bound_[s->jid().bare_str()];
  for (const auto& other : resources) {
    if (other.session->jid() == s->jid()) return other.session;
  }
  resources.push_back(std::move(r));
  if (!registry_.handlers(SessionEvent::kBound).empty()) {
    asio::co_spawn(*s->shard().io, fire(SessionEvent::kBound, s), asio::detached);
  }
  return nullptr;
}

void Server::unbind(C2sSession* s) {
  std::lock_guard lock(dir_mu_);
  auto it = bound_.find(s->jid().bare_str());
  if (it == bound_.end()) return;
  auto& v = it->second;
  std::erase_if(v, [s](const ResourceView& r) { return r.session.get() == s; });
  if (v.empty()) bound_.erase(it);
}

void Server::publish(const C2sSession& s) {
  std::lock_guard lock(dir_mu_);
  auto it = bound_.find(s.jid().bare_str());
  if (it == bound_.end()) return;
  for (auto& r : it->second) {
    if (r.session.get() == &s) copy_presence_state(s, r);
  }
}

void Server::rebind(const C2sSession& old, const SessionPtr& now) {
  std::lock_guard lock(dir_mu_);
  auto it = bound_.find(old.jid().bare_str());
  if (it == bound_.end()) return;
  for (auto& r : it->second) {
    if (r.session.get() == &old) r.session = now;
  }
}

void Server::set_resource_flags(const C2sSession& s, std::uint32_t bits, bool on) {
  std::lock_guard lock(dir_mu_);
  auto it = bound_.find(s.jid().bare_str());
  if (it == bound_.end()) return;
  for (auto& r : it->second) {
    if (r.session.get() == &s) r.flags = on ? (r.flags | bits) : (r.flags & ~bits);
  }
}

void Server::set_account_flags(std::string_view user, std::uint32_t bits, bool on) {
  std::lock_guard lock(dir_mu_);
  auto it = account_flags_.find(user);
  if (on) {
    if (it == account_flags_.end()) {
      it = account_flags_.emplace(std::string(user), 0).first;
      flagged_accounts_.fetch_add(1, std::memory_order_relaxed);
    }
    it->second |= bits;
  } else if (it != account_flags_.end()) {
    it->second &= ~bits;
    if (it->second == 0) {
      account_flags_.erase(it);
      flagged_accounts_.fetch_sub(1, std::memory_order_relaxed);
    }
  }
}

std::uint32_t Server::account_flags(std::string_view user) const {
  if (flagged_accounts_.load(std::memory_order_relaxed) == 0) return 0;
  std::lock_guard lock(dir_mu_);
  auto it = account_flags_.find(user);
  return it == account_flags_.end() ? 0 : it->second;
}

awaitable<bool> Server::run_hooks(Hook point, SessionPtr from, xml::Element& stanza) {
  for (const auto& hook : registry_.hooks(point)) {
    if (co_await hook(from, stanza) == HookResult::kStop) co_return true;
  }
  co_return false;
}

awaitable<void> Server::fire(SessionEvent event, SessionPtr s) {
  for (const auto& handler : registry_.handlers(event)) {
    try {
      co_await handler(s);
    } catch (const std::exception& e) {
      spdlog::error("session event {} for {}: {}", static_cast<int>(event), s->jid().str(),
                    e.what());
    }
  }
}

std::vector<SessionPtr> Server::sessions_of(const std::string& bare) const {
  std::vector<SessionPtr> out;
  std::lock_guard lock(dir_mu_);
  auto it = bound_.find(bare);
  if (it == bound_.end()) return out;
  out.reserve(it->second.size());
  for (const auto& r : it->second) out.push_back(r.session);
  return out;
}

std::vector<ResourceView> Server::resources_of(const std::string& bare) const {
  std::lock_guard lock(dir_mu_);
  auto it = bound_.find(bare);
  if (it == bound_.end()) return {};
  return it->second;
}

void Server::send_to(const SessionPtr& s, const xml::Element& stanza) { s->send(stanza); }

void Server::bounce(const xml::Element& stanza, std::string_view condition) {
  // RFC 6120 §8.3.1: never answer an error with an error.
  if (stanza.attr("type") == "error") return;
  auto sender = xmpp::Jid::parse(stanza.attr("from"));
  if (!sender) return;
  if (auto s = bound_session(*sender)) {
    send_to(s, xmpp::make_error_reply(stanza, xmpp::ErrorType::kCancel, condition));
  }
}

awaitable<void> Server::session_closed(SessionPtr s) {
  if (s->shard().sessions.erase(s.get()) == 0) co_return;  // already done
  unauth_.release(s->preauth_ticket);
  ++s->shard().closed_since_trim;
  if (!s->bound()) co_return;
  unbind(s.get());
  // The presence module broadcasts the unavailable presence; basics records last activity.
  // What it had queued and not written (or, with XEP-0198, not had acknowledged) is routed
  // again, now that the resource is gone, before its contacts see it go (a client that logs in
  // again on that finds them stored): nothing is dropped in silence.
  // (A session ended from elsewhere, replaced by a new stream, first writes what it has queued
  // for the old one, its stream error: its own end() hands the rest on.)
  if (s->ended()) co_await hand_on_undelivered(*this, *s, s->take_unacked());
  co_await fire(SessionEvent::kClosed, s);
  spdlog::info("c2s #{}: {} offline", s->serial(), s->jid().str());
}

awaitable<void> Server::replace_session(SessionPtr old) {
  co_await asio::co_spawn(*old->shard().io, end_replaced(old), asio::use_awaitable);
}

awaitable<void> Server::end_replaced(SessionPtr old) {
  // On the old session's shard.
  old->stream_error("conflict", "replaced by a new connection");
  unbind(old.get());
  co_await session_closed(old);
}

awaitable<void> Server::handle_stanza(SessionPtr from, xml::Element stanza) {
  std::string_view to = stanza.attr("to");
  if (!to.empty() && !xmpp::Jid::parse(to)) {
    if (stanza.attr("type") != "error") {
      send_to(from, xmpp::make_error_reply(stanza, xmpp::ErrorType::kModify, "jid-malformed"));
    }
    co_return;
  }
  // RFC 6120 §8.2.3: a get or set is answered even when the store fails under its hooks or
  // handler (the disk full, the database locked past its busy timeout). Unanswered, it would
  // stall its client for good (Converse.js waits on each of its IQs).
  const bool iq_request =
      stanza.name() == "iq" && (stanza.attr("type") == "get" || stanza.attr("type") == "set");
  std::string request_id, request_type, request_to;
  if (iq_request) {
    request_id = stanza.attr("id");
    request_type = stanza.attr("type");
    request_to = stanza.attr("to");
  }
  bool store_failed = false;
  try {
    if (!to.empty() && !registry_.components().empty()) {
      // A component takes every stanza to its domain; it lives on shard 0.
      auto jid = xmpp::Jid::parse(to);
      if (Component* c = registry_.component(jid->domain())) {
        co_await on_shard0(c->handle(from, std::move(stanza)));
        co_return;
      }
    }
    if (stanza.name() == "message") {
      if (to.empty()) stanza.set_attr("to", from->jid().bare_str());
      if (co_await run_hooks(Hook::kMessageOut, from, stanza)) co_return;
      co_await route_message(from, std::move(stanza));
    } else if (stanza.name() == "presence") {
      // The presence module's processing is the last of these hooks.
      co_await run_hooks(Hook::kPresenceOut, from, stanza);
    } else {
      if (co_await run_hooks(Hook::kIqOut, from, stanza)) co_return;
      co_await route_iq(from, std::move(stanza));
    }
  } catch (const store::StoreError& e) {
    spdlog::error("store: {}", e.what());
    store_failed = true;
  }
  if (store_failed && iq_request) {
    xml::Element request("iq", ns::kClient);
    request.set_attr("id", request_id);
    request.set_attr("type", request_type);
    request.set_attr("from", from->jid().str());
    if (!request_to.empty()) request.set_attr("to", request_to);
    send_to(from, xmpp::make_error_reply(request, xmpp::ErrorType::kWait, "internal-server-error"));
  }
}

awaitable<void> Server::route_message(SessionPtr from, xml::Element stanza) {
  auto to = xmpp::Jid::parse(stanza.attr("to"));
  std::string_view type = stanza.attr("type");
  auto bounce = [&](std::string_view condition) { this->bounce(stanza, condition); };
  if (!is_local(*to)) {
    // Components took theirs (handle_stanza); anything else is remote, and there are no
    // server-to-server links yet (RFC 6120 §10.4.3).
    bounce("remote-server-not-found");
    co_return;
  }
  if (to->local().empty()) {
    if (type != "error" && type != "headline") bounce("service-unavailable");
    co_return;
  }
  co_await deliver(std::move(stanza), std::move(from));
}

awaitable<void> Server::deliver(xml::Element stanza, SessionPtr from) {
  return deliver_stanza(std::move(stanza), std::move(from), false);
}

awaitable<void> Server::redeliver(xml::Element message) {
  return deliver_stanza(std::move(message), nullptr, true);
}

awaitable<void> Server::deliver_stanza(xml::Element stanza, SessionPtr from, bool again) {
  if (stanza.name() == "presence") {
    // The presence module's delivery is the last of these hooks.
    co_await run_hooks(Hook::kPresenceIn, std::move(from), stanza);
    co_return;
  }
  if (stanza.name() != "message") co_return;
  if (!again) {
    if (co_await run_hooks(Hook::kMessageIn, from, stanza)) co_return;
  }
  auto to = xmpp::Jid::parse(stanza.attr("to"));
  if (!to) co_return;
  // The sender's bare JID, for the message log's records.
  auto sender_of = [&stanza] {
    auto j = xmpp::Jid::parse(stanza.attr("from"));
    return j ? j->bare_str() : std::string();
  };
  if (!to->is_bare()) {
    if (auto s = bound_session(*to)) {
      send_message(s, xml::serialize(stanza, ns::kClient), from.get(), sender_of());
      if (from) from->sent_to(*s);
      co_return;
    }
  }
  std::string type(stanza.attr("type"));
  if (type.empty()) type = "normal";
  auto bounce = [&](std::string_view condition) { this->bounce(stanza, condition); };
  const bool to_full = !to->is_bare();
  // RFC 6121 §8.5.3.2.1: to an unbound full JID, only normal and chat fall back to the bare JID.
  if (to_full && type != "normal" && type != "chat") {
    if (type == "groupchat") bounce("service-unavailable");
    co_return;
  }
  if (type == "groupchat") {
    bounce("service-unavailable");
    co_return;
  }
  std::vector<SessionPtr> targets = message_targets(*to, type);
  if (!targets.empty()) {
    std::string bytes = xml::serialize(stanza, ns::kClient);
    const std::string sender = sender_of();
    for (auto& s : targets) {
      send_message(s, bytes, from.get(), sender);
      if (from) from->sent_to(*s);  // a congested recipient holds back the sender's reads
    }
    co_return;
  }
  if (type == "error" || type == "headline") co_return;
  // No available resource: the offline module stores it (XEP-0160) if the account exists.
  if (co_await run_hooks(Hook::kMessageUndelivered, std::move(from), stanza)) co_return;
  bounce("service-unavailable");
}

std::vector<SessionPtr> Server::message_targets(const xmpp::Jid& to, std::string_view type) {
  std::vector<SessionPtr> targets;
  message_targets(to.bare_str(), type, targets);
  return targets;
}

void Server::message_targets(std::string_view bare, std::string_view type,
                             std::vector<SessionPtr>& targets) const {
  // RFC 6121 §8.5.2.1.1: to the available resources with the highest non-negative priority
  // (headline: to all with non-negative priority; an error: to one).
  targets.clear();
  int best = -1;
  std::lock_guard lock(dir_mu_);
  const auto it = bound_.find(bare);
  if (it == bound_.end()) return;
  for (const auto& r : it->second) {
    if (!r.available || r.priority < 0 || r.session->closed()) continue;
    if (type == "headline") {
      targets.push_back(r.session);
    } else if (r.priority > best) {
      best = r.priority;
      targets.clear();
      targets.push_back(r.session);
    } else if (r.priority == best) {
      targets.push_back(r.session);
    }
  }
  if (type == "error" && targets.size() > 1) targets.resize(1);
}

namespace {

// A stanza's bytes as received with from='jid' added to its start tag, right after its name.
std::string with_from(std::string_view received, const C2sSession& from) {
  std::size_t name_end = 1;
  for (; name_end < received.size(); ++name_end) {
    const char c = received[name_end];
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '/' || c == '>') break;
  }
  std::string out;
  out.reserve(received.size() + from.jid_str().size() + 8);
  out.append(received.substr(0, name_end));
  out += " from='";
  if (from.jid_str_plain()) {
    out += from.jid_str();
  } else {
    xml::escape_attr(from.jid_str(), out);
  }
  out += '\'';
  out.append(received.substr(name_end));
  return out;
}

}  // namespace

bool Server::instant_targets(std::string_view from_user, std::string_view to_attr,
                             std::string_view type, std::vector<SessionPtr>& targets) const {
  // The common case needs neither the store nor a coroutine: a chat to a contact who is online
  // (RFC 6121 §8.5.2.1.1, §8.5.3.1). Anything else takes handle_stanza().
  //
  // This path runs no module hook. A module that must see messages (carbons, the archive) opts
  // in by setting AccountFlag kSeesMessages on the account with set_account_flags(): a message
  // from or to a flagged account then takes handle_stanza() and meets the kMessageOut and
  // kMessageIn hooks. While no account is flagged, the check below is one relaxed atomic load.
  targets.clear();
  if (to_attr.empty() || type == "groupchat") return false;
  const bool any_flagged = flagged_accounts_.load(std::memory_order_relaxed) != 0;
  if (any_flagged && (account_flags(from_user) & kFullMessagePath) != 0) return false;
  std::string_view bare;
  std::string_view full;  // empty for a bare JID
  std::string bare_buf;
  std::string full_buf;
  if (const auto view = xmpp::canonical_jid(to_attr)) {
    // Already prepared (nearly always): looked up as it came, nothing built.
    if (view->local.empty() || view->domain != cfg_.domain) return false;
    if (any_flagged && (account_flags(view->local) & kFullMessagePath) != 0) return false;
    bare = view->bare;
    if (!view->resource.empty()) full = to_attr;
  } else {
    const auto to = xmpp::Jid::parse(to_attr);
    if (!to || !is_local(*to) || to->local().empty()) return false;
    if (any_flagged && (account_flags(to->local()) & kFullMessagePath) != 0) return false;
    bare_buf = to->bare_str();
    bare = bare_buf;
    if (!to->is_bare()) {
      full_buf = to->str();
      full = full_buf;
    }
  }
  if (!full.empty()) {
    if (auto s = bound_session(bare, full)) {
      targets.push_back(std::move(s));
      return true;
    }
    if (!type.empty() && type != "normal" && type != "chat") return false;
  }
  message_targets(bare, type.empty() ? std::string_view("normal") : type, targets);
  return !targets.empty();
}

namespace {

// Hands `bytes` to each target, the last (usually the only) one taking them; empties `targets`
// so that no session is kept alive by it.
// `from` stops reading while any of them is congested (C2sSession::sent_to()).
void send_to_all(Server& server, std::vector<SessionPtr>& targets, std::string bytes,
                 C2sSession& from) {
  // With stream management on either side the message is logged too (Server::send_message()).
  const bool sm = from.sm_enabled();
  for (std::size_t i = 0; i + 1 < targets.size(); ++i) {
    if (sm || targets[i]->logs_messages()) [[unlikely]] {
      server.send_message(targets[i], bytes, &from, {});
    } else {
      targets[i]->send_raw(bytes);
    }
    from.sent_to(*targets[i]);
  }
  if (sm || targets.back()->logs_messages()) [[unlikely]] {
    server.send_message(targets.back(), std::move(bytes), &from, {});
  } else {
    targets.back()->send_raw(std::move(bytes));
  }
  from.sent_to(*targets.back());
  targets.clear();
}

// Reused from message to message (no allocation); always left empty.
std::vector<SessionPtr>& instant_targets_buffer() {
  thread_local std::vector<SessionPtr> targets;
  return targets;
}

}  // namespace

bool Server::route_message_now(C2sSession& from, xml::Element& stanza, std::string_view received) {
  std::vector<SessionPtr>& targets = instant_targets_buffer();
  if (!instant_targets(from.username(), stanza.attr("to"), stanza.attr("type"), targets)) {
    return false;
  }
  // A 'from' the client put there is replaced (RFC 6120 §8.1.2.1): that takes the element.
  std::string bytes;
  if (!received.empty() && received.front() == '<' && !stanza.has_attr("from")) {
    bytes = with_from(received, from);
  } else {
    stanza.set_attr("from", from.jid_str());  // the full path stamps the same
    bytes = xml::serialize(stanza, ns::kClient);
  }
  if (tap_ && !tap_(from, MessageView(stanza), targets, bytes)) {
    targets.clear();
    return false;
  }
  send_to_all(*this, targets, std::move(bytes), from);
  return true;
}

bool Server::forward_message_now(C2sSession& from, const xml::ElementHead& head,
                                 std::string_view to, std::string_view type,
                                 std::string_view received) {
  if (received.empty() || received.front() != '<') return false;
  std::vector<SessionPtr>& targets = instant_targets_buffer();
  if (!instant_targets(from.username(), to, type, targets)) return false;
  std::string bytes = with_from(received, from);
  if (tap_ && !tap_(from, MessageView(head), targets, bytes)) {
    targets.clear();
    return false;
  }
  send_to_all(*this, targets, std::move(bytes), from);
  return true;
}

void Server::send_message(const SessionPtr& to, std::string bytes, C2sSession* from,
                          std::string_view sender_bare) {
  const bool from_sm = from != nullptr && from->sm_enabled();
  if (!from_sm && !to->logs_messages()) {
    to->send_raw(std::move(bytes));
    return;
  }
  // Logged in flight (store/message_log.h) and queued at once: the recipient gets the bytes
  // without waiting for the store; the record goes once its delivery is certain (written to a
  // client without stream management, acknowledged by one with it), and a crash before that
  // leaves it an offline message. The sender's <a h/> counts the message once it is committed.
  auto rec = std::make_shared<store::LogRecord>();
  rec->username = to->username();  // fixed before the session was bound
  std::string sender(sender_bare);
  if (sender.empty() && from != nullptr) sender = from->jid().bare_str();
  log_->add(rec, std::move(sender), bytes, now_ms(),
            from_sm ? from->durable_later() : store::MessageLog::Done());
  auto held = std::make_shared<LoggedDelivery>(log_, std::move(rec));
  to->send_logged(std::move(bytes), [held = std::move(held)] {
    held->delivered = true;
    held->log->remove(held->rec);
    t_log_removals = true;
  });
}

void Server::delete_delivered_offline(const std::string& user, std::int64_t id) {
  auto rec = std::make_shared<store::LogRecord>();
  rec->username = user;
  rec->id = id;
  log_->remove(std::move(rec));
  t_log_removals = true;
}

bool Server::take_log_removals() { return std::exchange(t_log_removals, false); }

awaitable<bool> Server::log_committed(bool now) {
  // As in db(): the initiation holds only a pointer (GCC 12 relocates it bytewise).
  co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(bool)>(
      [this, now](auto handler) {
        auto io_ex = asio::get_associated_executor(handler, io_.get_executor());
        auto h = std::make_shared<decltype(handler)>(std::move(handler));
        log_->barrier(
            [h, io_ex, work = asio::make_work_guard(io_ex)](bool ok) mutable {
              asio::post(io_ex, [h, ok]() mutable { std::move (*h)(ok); });
            },
            now);
      },
      asio::use_awaitable);
}

awaitable<void> Server::posts_settled(net::Shard& via) {
  // A marker goes through every shard (after what it is running and has queued), then to `via`
  // (after everything posted there before it, since each loop runs its queue in order), then
  // back here. The last of them resumes the caller.
  struct Settle {
    explicit Settle(std::size_t n) : left(n) {}
    std::atomic<std::size_t> left;
    std::function<void()> done;
  };
  co_await asio::async_initiate<decltype(asio::use_awaitable), void()>(
      [this, &via](auto handler) {
        auto home = asio::get_associated_executor(handler, io_.get_executor());
        auto h = std::make_shared<decltype(handler)>(std::move(handler));
        // Every shard; `via` alone where none runs (a server that was not started: unit tests).
        std::vector<asio::io_context*> loops;
        for (const auto& sh : shards_) loops.push_back(sh->io);
        if (loops.empty()) loops.push_back(via.io);
        auto settle = std::make_shared<Settle>(loops.size());
        settle->done = [h, home, work = asio::make_work_guard(home)]() mutable {
          asio::post(home, [h]() mutable { std::move (*h)(); });
        };
        for (asio::io_context* loop : loops) {
          asio::post(*loop, [settle, &via] {
            asio::post(*via.io, [settle] {
              if (settle->left.fetch_sub(1, std::memory_order_acq_rel) == 1) settle->done();
            });
          });
        }
      },
      asio::use_awaitable);
}

awaitable<void> Server::on_shard0(awaitable<void> work) {
  if (shards_.front()->on_this_thread()) {
    co_await std::move(work);
  } else {
    co_await asio::co_spawn(io_, std::move(work), asio::use_awaitable);
  }
}

awaitable<void> Server::route_iq(SessionPtr from, xml::Element iq) {
  std::string_view type = iq.attr("type");
  auto to = iq.has_attr("to") ? xmpp::Jid::parse(iq.attr("to")) : std::optional<xmpp::Jid>();
  const bool is_request = type == "get" || type == "set";
  if (!is_request && type != "result" && type != "error") {
    send_to(from, xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request"));
    co_return;
  }
  if (to && !is_local(*to)) {
    if (is_request) {
      send_to(from,
              xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "remote-server-not-found"));
    }
    co_return;
  }
  if (to && !to->is_bare()) {
    // To a full JID: the resource answers (RFC 6120 §10.5.4).
    if (auto s = bound_session(*to)) {
      send_to(s, iq);
    } else if (is_request) {
      send_to(from, xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
    }
    co_return;
  }
  if (!is_request) {
    // Responses to the server (our pings): the read already proved the connection alive.
    co_return;
  }
  // RFC 6120 §8.2.3: a get or set has exactly one payload child.
  auto payloads = iq.children();
  if (payloads.size() != 1 || iq.attr("id").empty()) {
    send_to(from, xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request"));
    co_return;
  }
  // To the server (no 'to', or the domain) or to an account's bare JID (RFC 6120 §10.3.3): the
  // module registered for the payload's namespace, this type and this target answers.
  const Target target = !to || to->is_domain() ? kToServer : kToAccount;
  const IqHandler* handler = registry_.iq_handler(payloads[0]->xmlns(), type, target);
  if (handler == nullptr) {
    // RFC 6120 §8.4: a request nobody here understands.
    send_to(from, xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
    co_return;
  }
  co_await (*handler)(from, std::move(iq));
}

}  // namespace kabar::server
