// kabarctl: offline administration of a kabar server's data directory (accounts, their offline
// message queues and their message archives).
// It opens the same SQLite database as kabard; WAL mode and the store's busy timeout let both run
// at once. What a running kabard must act on (deleting an account whose sessions are live,
// deleting archived messages, whose newest places kabard keeps in memory) goes through kabard's
// admin control socket, DATA/kabard.sock.
#include <fmt/core.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "store/store.h"
#include "version/version.h"
#include "xmpp/display_text.h"
#include "xmpp/jid.h"
#include "xmpp/namespaces.h"
#include "xmpp/scram.h"
#include "xmpp/stanza.h"

namespace {

namespace fs = std::filesystem;
using kabar::store::Store;

constexpr int kIterations = 4096;  // RFC 7677 §4 minimum
constexpr const char* kPasswordEnv = "KABAR_PASSWORD";
// Archived messages deleted in one transaction by `archive expire` (kabard's own expiry and its
// admin socket take the same bites): a running kabard's store serves others between them.
constexpr std::size_t kExpireBite = 10'000;
constexpr std::chrono::seconds kArchiveAnswerLimit{600};

// A failure reported to the user as one line on stderr, exit status 1.
class CommandError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// USER is a bare localpart or a JID whose localpart names the account; either way nodeprep'ed.
std::string account_name(std::string_view arg) {
  std::optional<std::string> local;
  if (arg.find_first_of("@/") != std::string_view::npos) {
    if (auto jid = kabar::xmpp::Jid::parse(arg)) {
      if (!jid->local().empty()) local = jid->local();
    }
  } else {
    local = kabar::xmpp::nodeprep(arg);
  }
  if (!local || local->empty()) {
    throw CommandError(fmt::format("invalid username: {}", arg));
  }
  return *local;
}

// Unix milliseconds as an RFC 3339 / XEP-0082 UTC stamp.
std::string utc_stamp(std::int64_t ms) {
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03}Z", buf, ms % 1000);
}

// --- Message archives -------------------------------------------------------------------------

// --with JID: a bare JID selects every message with that correspondent, a full JID those with
// that resource only (as a XEP-0313 query's 'with' does).
kabar::store::ArchiveFilter archive_filter(const std::optional<std::string>& with) {
  kabar::store::ArchiveFilter f;
  if (!with) return f;
  auto jid = kabar::xmpp::Jid::parse(*with);
  if (!jid) throw CommandError(fmt::format("invalid JID: {}", kabar::xmpp::terminal_text(*with)));
  f.with = jid->bare_str();
  f.with_resource = jid->resource();
  return f;
}

// One archived message as `archive show` prints it.
struct ShownMessage {
  std::string time;
  std::string direction;  // "in" (USER received it) or "out" (USER sent it)
  std::string with;       // the correspondent, a bare JID
  std::string body;
  std::string id;  // its archive UID (the stanza-id its recipient saw)
};

// A message is archived for the account that received it with `with` its sender, and for the one
// that sent it with `with` its recipient; a note to self is archived once, as received.
ShownMessage shown(const kabar::store::ArchivedMessage& m) {
  ShownMessage out;
  out.time = utc_stamp(m.stamp_ms);
  out.with = m.with;
  out.id = m.id;
  out.direction = "in";
  if (auto stanza = kabar::xmpp::parse_stanza(m.stanza)) {
    auto from = kabar::xmpp::Jid::parse(stanza->attr("from"));
    auto to = kabar::xmpp::Jid::parse(stanza->attr("to"));
    if ((!from || from->bare_str() != m.with) && to && to->bare_str() == m.with) {
      out.direction = "out";
    }
    if (const auto* body = stanza->child("body", kabar::xmpp::ns::kClient)) out.body = body->text();
  }
  return out;
}

// --- Reading a password without echo --------------------------------------------------------

termios g_saved_termios;
volatile std::sig_atomic_t g_echo_off = 0;

// A signal while echo is off must not leave the terminal without echo.
extern "C" void restore_echo_and_die(int sig) {
  if (g_echo_off) tcsetattr(STDIN_FILENO, TCSANOW, &g_saved_termios);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

std::optional<std::string> read_line(std::istream& in) {
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

std::string prompt_no_echo(const std::string& prompt) {
  if (tcgetattr(STDIN_FILENO, &g_saved_termios) != 0) {
    throw CommandError("cannot read the terminal's settings");
  }
  termios quiet = g_saved_termios;
  quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
  quiet.c_lflag |= ECHONL;
  for (int sig : {SIGINT, SIGTERM, SIGQUIT, SIGHUP}) std::signal(sig, restore_echo_and_die);
  std::cerr << prompt << std::flush;
  g_echo_off = 1;
  tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
  auto line = read_line(std::cin);
  tcsetattr(STDIN_FILENO, TCSAFLUSH, &g_saved_termios);
  g_echo_off = 0;
  for (int sig : {SIGINT, SIGTERM, SIGQUIT, SIGHUP}) std::signal(sig, SIG_DFL);
  if (!line) throw CommandError("no password given");
  return *line;
}

// The password from the argument, else $KABAR_PASSWORD, else a prompt on the terminal (twice),
// else one line of stdin.
std::string obtain_password(const std::optional<std::string>& arg, const std::string& user) {
  std::string password;
  if (arg) {
    password = *arg;
  } else if (const char* env = std::getenv(kPasswordEnv)) {
    password = env;
  } else if (isatty(STDIN_FILENO)) {
    password = prompt_no_echo(fmt::format("Password for {}: ", user));
    if (!password.empty() && prompt_no_echo("Repeat password: ") != password) {
      throw CommandError("passwords do not match");
    }
  } else {
    auto line = read_line(std::cin);
    if (!line) throw CommandError("no password given on stdin");
    password = *line;
  }
  if (password.empty()) throw CommandError("empty password");

  // SCRAM hashes the SASLprep'ed password (RFC 5802 §2.2, RFC 4013), stored-string rules.
  auto prepared = kabar::xmpp::saslprep(password);
  if (!prepared) throw CommandError("invalid password: not allowed by SASLprep (RFC 4013)");
  return *prepared;
}

kabar::store::Account make_account(const std::string& user, const std::string& password) {
  kabar::store::Account a;
  a.username = user;
  a.sha1 = kabar::xmpp::make_credentials(kabar::xmpp::ScramHash::kSha1, password, kIterations);
  a.sha256 = kabar::xmpp::make_credentials(kabar::xmpp::ScramHash::kSha256, password, kIterations);
  a.created_unix = static_cast<std::int64_t>(std::time(nullptr));
  return a;
}

// Only `user add` may create the data directory and database; the other commands refuse a
// directory without one, which is almost always a mistyped path.
std::unique_ptr<Store> open_store(const std::string& data_dir, bool create) {
  if (data_dir.empty()) throw CommandError("empty --data-dir");
  if (!create) {
    std::error_code ec;
    if (!fs::is_directory(data_dir, ec)) {
      throw CommandError(fmt::format("bad data dir {}: no such directory", data_dir));
    }
    if (!fs::exists(fs::path(data_dir) / "kabar.db", ec)) {
      throw CommandError(fmt::format("bad data dir {}: no kabar.db in it", data_dir));
    }
  }
  try {
    // Never the archive's owner: a kabard running (or starting) on the directory is.
    return kabar::store::open_sqlite_store(data_dir, /*archive_owner=*/false);
  } catch (const kabar::store::StoreError& e) {
    throw CommandError(fmt::format("bad data dir: {}", e.what()));
  }
}

// Sends one command line to the kabard running on `data_dir` and returns its answer line, or
// nullopt when no kabard listens there (no socket, or a stale one: nothing to tell). Waits at
// most `limit` for the answer: ending many sessions takes a moment, not a minute; deleting
// millions of archived messages may take minutes.
std::optional<std::string> tell_kabard(const std::string& data_dir, const std::string& command,
                                       std::chrono::seconds limit = std::chrono::seconds(60)) {
  const std::string path = (fs::path(data_dir) / "kabard.sock").string();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return std::nullopt;  // kabard cannot listen there
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  struct Fd {
    int fd;
    ~Fd() {
      if (fd >= 0) ::close(fd);
    }
  } s{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  if (s.fd < 0) throw CommandError(fmt::format("socket: {}", std::strerror(errno)));
  if (::connect(s.fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno == ENOENT || errno == ECONNREFUSED) return std::nullopt;
    throw CommandError(fmt::format("cannot reach kabard at {}: {}", path, std::strerror(errno)));
  }
  timeval wait{static_cast<time_t>(limit.count()), 0};
  ::setsockopt(s.fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
  const std::string line = command + "\n";
  if (::send(s.fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    throw CommandError(fmt::format("cannot write to kabard at {}: {}", path, std::strerror(errno)));
  }
  std::string answer;
  char c = 0;
  while (answer.size() < 1024) {
    const ssize_t n = ::recv(s.fd, &c, 1, 0);
    if (n <= 0) throw CommandError(fmt::format("no answer from kabard at {}", path));
    if (c == '\n') return answer;
    answer += c;
  }
  throw CommandError(fmt::format("an overlong answer from kabard at {}", path));
}

// --help-all (and so the man page, made from it) shows the options of every level of commands:
// CLI11 2.1 expands only the first (`archive`), naming `archive show` without its options.
class HelpAllFormatter : public CLI::Formatter {
 public:
  std::string make_subcommands(const CLI::App* app, CLI::AppFormatMode mode) const override {
    // Sub: asked while expanding a command, for its own subcommands.
    return CLI::Formatter::make_subcommands(
        app, mode == CLI::AppFormatMode::Sub ? CLI::AppFormatMode::All : mode);
  }
};

int run(int argc, char** argv) {
  CLI::App app{"kabarctl: manage the accounts and message archives of a kabar XMPP server."};
  app.formatter(std::make_shared<HelpAllFormatter>());
  app.footer(
      "USER is a localpart (alice) or a JID whose localpart is used (alice@example.com); it is\n"
      "normalized with Nodeprep.\n"
      "\n"
      "When PASSWORD is omitted it is taken from the environment variable KABAR_PASSWORD, else\n"
      "asked for on the terminal (twice, without echo), else read as one line from standard\n"
      "input. A password on the command line is visible to other local users.\n"
      "\n"
      "'user offline USER' reads the database, also while kabard runs; with --clear, a running\n"
      "kabard deletes the queue itself (through DATA/kabard.sock).\n"
      "\n"
      "'archive count' and 'archive show' read the database too, also while kabard runs (kabard\n"
      "writes its archive in group commits: the last second's messages may not be there yet).\n"
      "'archive clear' and 'archive expire' go through a running kabard (DATA/kabard.sock),\n"
      "which keeps archive state in memory; without one they delete from the database. An\n"
      "archive loses only its oldest messages or all of them: 'clear' takes no --with.\n"
      "\n"
      "Exit status: 0 on success, 1 on an error (user exists, no such user, invalid username,\n"
      "bad data dir, ...), 2 on a usage error.");
  app.require_subcommand(1);

  // One line, named like every other error of kabarctl.
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return std::string("kabarctl: ") + e.what() + " (see kabarctl --help)\n";
  });
  app.set_version_flag("--version", std::string("kabarctl ") + kabar::version());
  app.set_help_all_flag("--help-all", "Print this help with every command's options and exit");
  // The same default as kabard's: both run from the same directory find the same data.
  std::string data_dir = "data";
  app.add_option("--data-dir", data_dir,
                 "Data directory of kabard, holding kabar.db (created by 'user add' if missing)")
      ->capture_default_str();

  std::string user_arg;
  std::optional<std::string> password_arg;

  auto* user = app.add_subcommand("user", "Manage accounts");
  user->require_subcommand(1);

  auto* add = user->add_subcommand("add", "Create an account");
  add->add_option("USER", user_arg, "Account to create")->required();
  add->add_option("PASSWORD", password_arg, "Its password (see below when omitted)");

  auto* del = user->add_subcommand("delete", "Delete an account and all its data");
  del->add_option("USER", user_arg, "Account to delete")->required();

  auto* passwd = user->add_subcommand("passwd", "Set an account's password");
  passwd->add_option("USER", user_arg, "Account to change")->required();
  passwd->add_option("PASSWORD", password_arg, "The new password (see below when omitted)");

  user->add_subcommand("list", "List the accounts, one per line, sorted");

  bool clear_offline = false;
  auto* offline = user->add_subcommand(
      "offline", "Show an account's offline message queue (count, bytes, stamps, per sender)");
  offline->add_option("USER", user_arg, "Account whose queue to show")->required();
  offline->add_flag("--clear", clear_offline, "Delete every message in the queue");

  std::optional<std::string> with_arg;
  std::size_t last_count = 20;
  bool json = false;
  int older_than_days = 0;

  auto* archive = app.add_subcommand("archive", "Inspect and prune message archives (XEP-0313)");
  archive->require_subcommand(1);

  auto* acount =
      archive->add_subcommand("count", "Print how many messages an account's archive holds");
  acount->add_option("USER", user_arg, "Account whose archive to count")->required();
  acount
      ->add_option("--with", with_arg,
                   "Only the messages with this JID (bare; a full JID: that resource only)")
      ->type_name("JID");

  auto* ashow = archive->add_subcommand(
      "show",
      "Print an account's newest archived messages, oldest first: time (UTC), direction (in or "
      "out), correspondent, body");
  ashow->add_option("USER", user_arg, "Account whose archive to show")->required();
  ashow
      ->add_option("--with", with_arg,
                   "Only the messages with this JID (bare; a full JID: that resource only)")
      ->type_name("JID");
  ashow->add_option("--last", last_count, "How many of the newest messages")
      ->type_name("N")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{1'000'000}));
  ashow->add_flag("--json", json,
                  "One JSON object per line: time, direction, with, body, id (the archive's)");

  auto* aclear = archive->add_subcommand("clear", "Delete every message in an account's archive");
  aclear->add_option("USER", user_arg, "Account whose archive to delete")->required();

  auto* aexpire = archive->add_subcommand(
      "expire", "Delete the messages older than DAYS from every account's archive");
  aexpire->add_option("--older-than", older_than_days, "Age in days of the messages to delete")
      ->type_name("DAYS")
      ->required()
      ->check(CLI::Range(1, 100'000));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  try {
    if (add->parsed()) {
      std::string name = account_name(user_arg);
      auto store = open_store(data_dir, /*create=*/true);
      // Checked before asking for a password; create_account() decides in the end.
      if (store->account(name)) throw CommandError(fmt::format("user exists: {}", name));
      std::string password = obtain_password(password_arg, name);
      if (!store->create_account(make_account(name, password))) {
        throw CommandError(fmt::format("user exists: {}", name));
      }
    } else if (del->parsed()) {
      std::string name = account_name(user_arg);
      auto store = open_store(data_dir, /*create=*/false);  // also checks the directory
      // A running kabard deletes the account itself: its contacts see its sessions go
      // unavailable before the roster that names them is gone, then the sessions end.
      if (auto answer = tell_kabard(data_dir, "delete-account " + name)) {
        if (*answer == "no-such-user") throw CommandError(fmt::format("no such user: {}", name));
        if (*answer != "ok") throw CommandError(fmt::format("kabard: {}", *answer));
        fmt::print("deleted {}; the running kabard ended its sessions\n", name);
      } else {
        if (!store->delete_account(name)) throw CommandError(fmt::format("no such user: {}", name));
        fmt::print("deleted {}; no kabard is running on {}\n", name, data_dir);
      }
    } else if (passwd->parsed()) {
      std::string name = account_name(user_arg);
      auto store = open_store(data_dir, /*create=*/false);
      if (!store->account(name)) throw CommandError(fmt::format("no such user: {}", name));
      std::string password = obtain_password(password_arg, name);
      if (!store->set_credentials(make_account(name, password))) {
        throw CommandError(fmt::format("no such user: {}", name));
      }
    } else if (offline->parsed()) {
      std::string name = account_name(user_arg);
      auto store = open_store(data_dir, /*create=*/false);
      if (!store->account(name)) throw CommandError(fmt::format("no such user: {}", name));
      if (clear_offline) {
        // A running kabard clears the queue itself, so a delivery under way stops with it.
        if (auto answer = tell_kabard(data_dir, "clear-offline " + name)) {
          if (*answer == "no-such-user") throw CommandError(fmt::format("no such user: {}", name));
          if (!answer->starts_with("ok ")) throw CommandError(fmt::format("kabard: {}", *answer));
          fmt::print("cleared {} offline messages of {} through the running kabard\n",
                     answer->substr(3), name);
        } else {
          fmt::print("cleared {} offline messages of {}\n", store->clear_offline(name), name);
        }
      } else {
        // Read from the database, also while kabard runs (WAL: readers do not wait for it).
        const kabar::store::OfflineSummary sum = store->offline_summary(name);
        fmt::print("user {}\nmessages {}\nbytes {}\n", name, sum.count, sum.bytes);
        if (sum.count > 0) {
          fmt::print("oldest {}\nnewest {}\n", utc_stamp(sum.oldest_ms), utc_stamp(sum.newest_ms));
        }
        for (const auto& [sender, count] : sum.senders) {
          fmt::print("from {} {}\n", sender.empty() ? "(unknown)" : sender, count);
        }
      }
    } else if (acount->parsed()) {
      std::string name = account_name(user_arg);
      const kabar::store::ArchiveFilter filter = archive_filter(with_arg);
      auto store = open_store(data_dir, /*create=*/false);
      if (!store->account(name)) throw CommandError(fmt::format("no such user: {}", name));
      fmt::print("{}\n", store->archive_count(name, filter));
    } else if (ashow->parsed()) {
      std::string name = account_name(user_arg);
      const kabar::store::ArchiveFilter filter = archive_filter(with_arg);
      auto store = open_store(data_dir, /*create=*/false);
      if (!store->account(name)) throw CommandError(fmt::format("no such user: {}", name));
      using kabar::xmpp::json_quoted;
      using kabar::xmpp::terminal_text;
      for (const auto& m : store->archive_query(name, filter, last_count, /*newest=*/true)) {
        const ShownMessage s = shown(m);
        if (json) {
          fmt::print("{{\"time\":{},\"direction\":{},\"with\":{},\"body\":{},\"id\":{}}}\n",
                     json_quoted(s.time), json_quoted(s.direction), json_quoted(s.with),
                     json_quoted(s.body), json_quoted(s.id));
        } else {
          fmt::print("{} {:<3} {} {}\n", s.time, s.direction, terminal_text(s.with),
                     terminal_text(s.body));
        }
      }
    } else if (aclear->parsed()) {
      std::string name = account_name(user_arg);
      auto store = open_store(data_dir, /*create=*/false);
      if (!store->account(name)) throw CommandError(fmt::format("no such user: {}", name));
      if (auto answer = tell_kabard(data_dir, "clear-archive " + name, kArchiveAnswerLimit)) {
        if (*answer == "no-such-user") throw CommandError(fmt::format("no such user: {}", name));
        if (!answer->starts_with("ok ")) throw CommandError(fmt::format("kabard: {}", *answer));
        fmt::print("cleared {} archived messages of {} through the running kabard\n",
                   answer->substr(3), name);
      } else {
        fmt::print("cleared {} archived messages of {}\n", store->archive_clear(name), name);
      }
    } else if (aexpire->parsed()) {
      auto store = open_store(data_dir, /*create=*/false);
      using std::chrono::duration_cast;
      using std::chrono::milliseconds;
      const std::int64_t now_ms =
          duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
      const std::int64_t before_ms = now_ms - std::int64_t{older_than_days} * 24 * 3600 * 1000;
      const std::string age =
          fmt::format("{} day{}", older_than_days, older_than_days == 1 ? "" : "s");
      if (auto answer = tell_kabard(data_dir, fmt::format("expire-archive {}", before_ms),
                                    kArchiveAnswerLimit)) {
        if (!answer->starts_with("ok ")) throw CommandError(fmt::format("kabard: {}", *answer));
        fmt::print("deleted {} archived messages older than {} through the running kabard\n",
                   answer->substr(3), age);
      } else {
        std::size_t total = 0;
        for (;;) {
          const std::size_t n = store->archive_expire(before_ms, kExpireBite);
          total += n;
          if (n < kExpireBite) break;
        }
        fmt::print("deleted {} archived messages older than {}\n", total, age);
      }
    } else {  // list
      auto store = open_store(data_dir, /*create=*/false);
      for (const std::string& name : store->list_accounts()) fmt::print("{}\n", name);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "kabarctl: {}\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kabarctl: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "kabarctl: unexpected error\n");
  }
  return 1;
}
