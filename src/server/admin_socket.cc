#include "server/admin_socket.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <optional>
#include <stdexcept>

#include "server/c2s_session.h"
#include "server/features.h"
#include "xmpp/jid.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"
#include "xmpp/subscription.h"

namespace kabar::server {

namespace {

constexpr std::size_t kMaxLine = 1024;       // a command and a username fit many times over
constexpr std::size_t kExpireBite = 10'000;  // archived messages deleted in one transaction

// On the session's shard: its contacts (read from the roster, still there) and its other
// resources see it go unavailable (RFC 6121 §4.5.2), then its stream ends. RFC 6120 §4.9.3.12
// <not-authorized/>: the authentication the stream rests on no longer holds; the same condition
// ends the sessions of an account removed in-band (XEP-0077 §3.2), and Prosody uses it for a
// deleted account too.
awaitable<void> end_deleted_session(Server& server, SessionPtr session) {
  if (session->available && !session->closed()) {
    xml::Element unavailable("presence", xmpp::ns::kClient);
    unavailable.set_attr("type", "unavailable");
    unavailable.set_attr("from", session->jid().str());
    co_await broadcast_unavailable(server, session, std::move(unavailable));
  }
  session->stream_error("not-authorized", "account deleted");
}

}  // namespace

AdminSocket::AdminSocket(Server& server) : server_(server) {}

AdminSocket::~AdminSocket() = default;

void AdminSocket::start() {
  path_ = path_in(server_.config().data_dir);
  if (path_.native().size() >= sizeof(sockaddr_un{}.sun_path)) {
    throw std::runtime_error("control socket path too long for a unix socket: " + path_.string());
  }
  ::unlink(path_.c_str());
  acceptor_ = std::make_unique<Local::acceptor>(server_.io());
  boost::system::error_code ec;
  acceptor_->open(Local(), ec);
  if (!ec) acceptor_->bind(Local::endpoint(path_.string()), ec);
  // Owner only. Until the chmod the socket has the umask's mode, but it lies in the data
  // directory (0700): nobody else reaches it. (umask is process-wide: the shards already run.)
  if (!ec && ::chmod(path_.c_str(), 0600) != 0) {
    ec = boost::system::error_code(errno, boost::system::system_category());
  }
  if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    throw std::runtime_error("cannot listen on " + path_.string() + ": " + ec.message());
  }
  spdlog::info("admin control socket {}", path_.string());
  asio::co_spawn(server_.io(), accept_loop(), asio::detached);
}

void AdminSocket::stop() {
  if (!acceptor_) return;
  boost::system::error_code ec;
  acceptor_->close(ec);
  for (const auto& c : clients_) c->close(ec);
  clients_.clear();
  ::unlink(path_.c_str());
}

awaitable<void> AdminSocket::accept_loop() {
  for (;;) {
    boost::system::error_code ec;
    Local::socket sock =
        co_await acceptor_->async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !acceptor_->is_open()) co_return;
    if (ec) {  // out of descriptors, say: try again a little later rather than spin
      asio::steady_timer pause(server_.io(), std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    auto client = std::make_shared<Local::socket>(std::move(sock));
    clients_.insert(client);
    asio::co_spawn(server_.io(), serve(client), asio::detached);
  }
}

awaitable<void> AdminSocket::serve(std::shared_ptr<Local::socket> client) {
  struct Forget {
    std::set<std::shared_ptr<Local::socket>>& set;
    std::shared_ptr<Local::socket> c;
    ~Forget() { set.erase(c); }
  } forget{clients_, client};
  Local::socket& sock = *client;
  asio::streambuf in(kMaxLine);
  for (;;) {
    boost::system::error_code ec;
    std::size_t n = co_await asio::async_read_until(sock, in, '\n',
                                                    asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;  // the end, or a line longer than kMaxLine
    std::string line(asio::buffers_begin(in.data()), asio::buffers_begin(in.data()) + n - 1);
    in.consume(n);
    std::string answer;
    try {
      answer = co_await run_command(std::move(line));
    } catch (const std::exception& e) {
      answer = std::string("error ") + e.what();
    }
    answer += '\n';
    co_await asio::async_write(sock, asio::buffer(answer),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;
  }
}

awaitable<std::string> AdminSocket::run_command(std::string line) {
  const std::size_t space = line.find(' ');
  if (space == std::string::npos) co_return "error unknown command";
  const std::string verb = line.substr(0, space);
  const std::string_view arg = std::string_view(line).substr(space + 1);
  if (verb == "expire-archive") {
    std::int64_t before_ms = 0;
    const char* end = arg.data() + arg.size();
    auto [at, ec] = std::from_chars(arg.data(), end, before_ms);
    if (arg.empty() || ec != std::errc() || at != end) co_return "error invalid time";
    co_return co_await expire_archive(before_ms);
  }
  if (verb != "delete-account" && verb != "clear-offline" && verb != "clear-archive") {
    co_return "error unknown command";
  }
  auto user = xmpp::nodeprep(arg);
  if (!user || user->empty()) co_return "error invalid username";
  if (verb == "delete-account") co_return co_await delete_account(*user);
  if (verb == "clear-offline") co_return co_await clear_offline(*user);
  co_return co_await clear_archive(*user);
}

awaitable<std::string> AdminSocket::delete_account(std::string user) {
  auto exists_op = [user](store::Store& st) { return st.account(user).has_value(); };
  if (!co_await server_.db(std::move(exists_op))) co_return "no-such-user";
  const std::string bare = user + "@" + server_.config().domain;
  for (const SessionPtr& session : server_.sessions_of(bare)) {
    co_await asio::co_spawn(*session->shard().io, end_deleted_session(server_, session),
                            asio::use_awaitable);
  }
  // The local contacts' subscriptions to and from the account end, as if it had cancelled them
  // (RFC 6121 §3.2 and §3.3, processed on the contact's side), before its roster is gone: their
  // roster items stay, with subscription 'none' and a push. Prosody does the same for a deleted
  // account. (There are no server-to-server links yet: remote contacts are not told.)
  auto roster_op = [user](store::Store& st) { return st.roster(user); };
  for (const store::RosterItem& item : co_await server_.db(std::move(roster_op))) {
    auto contact = xmpp::Jid::parse(item.jid);
    if (!contact || !server_.is_local(*contact) || contact->local().empty()) continue;
    using xmpp::Subscription;
    const xmpp::SubState& st = item.state;
    const bool from = st.sub == Subscription::kFrom || st.sub == Subscription::kBoth;
    const bool to = st.sub == Subscription::kTo || st.sub == Subscription::kBoth;
    for (const auto& [needed, type] : {std::pair{from || st.pending_in, "unsubscribed"},
                                       std::pair{to || st.pending_out, "unsubscribe"}}) {
      if (!needed) continue;
      xml::Element cancel("presence", xmpp::ns::kClient);
      cancel.set_attr("type", type);
      cancel.set_attr("from", bare);
      cancel.set_attr("to", contact->bare_str());
      co_await server_.deliver(std::move(cancel));
    }
  }
  // Each closing session writes the account's last activity (XEP-0012) once it is unbound: the
  // rows go after that, or that write would bring one back.
  for (int i = 0; i < 500 && !server_.sessions_of(bare).empty(); ++i) {
    asio::steady_timer tick(server_.io(), std::chrono::milliseconds(10));
    co_await tick.async_wait(asio::use_awaitable);
  }
  BlockingView* blocking = server_.modules().service<BlockingView>();
  ArchiveView* archive = server_.modules().service<ArchiveView>();
  PushView* push = server_.modules().service<PushView>();
  // Its messages still on their way to the archive are written first, then go with it.
  co_await server_.log_committed();
  auto delete_op = [user, blocking, archive, push](store::Store& st) {
    const bool existed = st.delete_account(user);
    if (blocking != nullptr) blocking->forget(user);  // its blocklist went with it
    if (archive != nullptr) archive->forget(user);
    if (push != nullptr) push->forget(user);
    return existed;
  };
  const bool deleted = co_await server_.db(std::move(delete_op));
  // A login that completed meanwhile holds a session of an account that is gone now.
  for (const SessionPtr& session : server_.sessions_of(bare)) {
    session->stream_error("not-authorized", "account deleted");
  }
  spdlog::info("account {} deleted by the administrator", bare);
  co_return deleted ? "ok" : "no-such-user";
}

// A delivery under way to one of the account's sessions reads the queue a page at a time after
// the last id it sent: with the rows gone it finds nothing more and ends.
awaitable<std::string> AdminSocket::clear_offline(std::string user) {
  auto op = [user](store::Store& st) -> std::optional<std::size_t> {
    if (!st.account(user)) return std::nullopt;
    return st.clear_offline(user);
  };
  auto cleared = co_await server_.db(std::move(op));
  if (!cleared) co_return "no-such-user";
  spdlog::info("offline queue of {} cleared by the administrator ({} messages)", user, *cleared);
  co_return "ok " + std::to_string(*cleared);
}

// Archive writes still waiting in the message log are committed first, so that they go with
// the rest; archive_clear() on kabard's own store forgets the archive's newest place it keeps in
// memory. The account's preferences stay (the MAM module's copy of them with them).
awaitable<std::string> AdminSocket::clear_archive(std::string user) {
  co_await server_.log_committed();
  auto op = [user](store::Store& st) -> std::optional<std::size_t> {
    if (!st.account(user)) return std::nullopt;
    return st.archive_clear(user);
  };
  auto cleared = co_await server_.db(std::move(op));
  if (!cleared) co_return "no-such-user";
  spdlog::info("archive of {} cleared by the administrator ({} messages)", user, *cleared);
  co_return "ok " + std::to_string(*cleared);
}

// In bites, as the archive module's hourly expiry does: between them the store serves the rest
// (logins, offline messages).
awaitable<std::string> AdminSocket::expire_archive(std::int64_t before_ms) {
  std::size_t total = 0;
  for (;;) {
    auto op = [before_ms](store::Store& st) { return st.archive_expire(before_ms, kExpireBite); };
    const std::size_t n = co_await server_.db(std::move(op));
    total += n;
    if (n < kExpireBite) break;
    if (server_.stopping())
      co_return "error kabard is stopping (" + std::to_string(total) + " messages deleted)";
  }
  spdlog::info("archive: {} messages stamped before {} deleted by the administrator", total,
               xmpp::format_datetime(before_ms));
  co_return "ok " + std::to_string(total);
}

}  // namespace kabar::server
