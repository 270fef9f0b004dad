#include "server/admin_socket.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>

#include "server/c2s_session.h"
#include "server/features.h"
#include "xmpp/jid.h"
#include "xmpp/namespaces.h"
#include "xmpp/subscription.h"

namespace kabar::server {

namespace {

constexpr std::size_t kMaxLine = 1024;  // a command and a username fit many times over

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
    constexpr std::string_view kDelete = "delete-account ";
    constexpr std::string_view kClearOffline = "clear-offline ";
    if (line.starts_with(kDelete)) {
      auto user = xmpp::nodeprep(std::string_view(line).substr(kDelete.size()));
      if (!user || user->empty()) {
        answer = "error invalid username";
      } else {
        try {
          answer = co_await delete_account(*user);
        } catch (const std::exception& e) {
          answer = std::string("error ") + e.what();
        }
      }
    } else if (line.starts_with(kClearOffline)) {
      auto user = xmpp::nodeprep(std::string_view(line).substr(kClearOffline.size()));
      if (!user || user->empty()) {
        answer = "error invalid username";
      } else {
        try {
          answer = co_await clear_offline(*user);
        } catch (const std::exception& e) {
          answer = std::string("error ") + e.what();
        }
      }
    } else {
      answer = "error unknown command";
    }
    answer += '\n';
    co_await asio::async_write(sock, asio::buffer(answer),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;
  }
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

}  // namespace kabar::server
