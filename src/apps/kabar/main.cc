// kabar: the command-line XMPP client. One-shot commands (register, send, roster, status), a
// line-per-event listener, and a full-screen chat.
#include <sys/stat.h>
#include <termios.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <iterator>

#include "chat.h"
#include "common.h"
#include "kabar/filetransfer.h"
#include "version/version.h"
#include "xmpp/display_text.h"
#include "xmpp/jid.h"
#include "xmpp/stanza.h"

namespace kabar::cli {

namespace {

struct Settings {
  std::string jid;
  std::string password_file;
  std::string server;
  bool insecure = false;
  std::string pin;
  bool direct_tls = false;
};

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string read_password(const std::string& prompt) {
  std::string pw;
  if (::isatty(0)) {
    std::fprintf(stderr, "%s", prompt.c_str());
    std::fflush(stderr);
    termios old{};
    ::tcgetattr(0, &old);
    termios noecho = old;
    noecho.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(0, TCSANOW, &noecho);
    std::getline(std::cin, pw);
    ::tcsetattr(0, TCSANOW, &old);
    std::fprintf(stderr, "\n");
  } else {
    std::getline(std::cin, pw);
  }
  if (!pw.empty() && pw.back() == '\r') pw.pop_back();
  return pw;
}

// Fills in what flags left empty from the environment, then the config file. Returns an error
// message, or empty.
struct Config {
  std::string jid, password, server, pin;
  bool insecure = false;
};

std::string load_config(Config& c) {
  std::string path = config_dir() + "/config.toml";
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  if ((st.st_mode & 077) != 0)
    return path + " is readable by others; run: chmod 600 " + path + " (it may hold a password)";
  try {
    toml::table t = toml::parse_file(path);
    for (auto&& [k, v] : t) {
      std::string key(k.str());
      if (key != "jid" && key != "password" && key != "server" && key != "pin" && key != "insecure")
        return path + ": unknown key '" + key + "'";
    }
    c.jid = t["jid"].value_or(std::string());
    c.password = t["password"].value_or(std::string());
    c.server = t["server"].value_or(std::string());
    c.pin = t["pin"].value_or(std::string());
    c.insecure = t["insecure"].value_or(false);
  } catch (const toml::parse_error& e) {
    return path + ": " + std::string(e.description());
  }
  return {};
}

// Builds client options. `jid` given positionally (register) wins over everything.
int make_options(const Settings& s, const std::string& jid_arg, bool need_password,
                 client::Options& o, bool confirm = false) {
  Config cfg;
  if (std::string e = load_config(cfg); !e.empty()) return fail(kExitUsage, e);
  o.jid = !jid_arg.empty()            ? jid_arg
          : !s.jid.empty()            ? s.jid
          : !env("KABAR_JID").empty() ? env("KABAR_JID")
                                      : cfg.jid;
  if (o.jid.empty())
    return fail(kExitUsage, "no account: give --jid, set KABAR_JID, or put jid in " + config_dir() +
                                "/config.toml");
  std::string server = !s.server.empty()              ? s.server
                       : !env("KABAR_SERVER").empty() ? env("KABAR_SERVER")
                                                      : cfg.server;
  if (!server.empty()) {
    std::string host = server;
    std::string port;
    if (server.front() == '[') {
      auto close = server.find(']');
      if (close == std::string::npos) return fail(kExitUsage, "bad --server '" + server + "'");
      host = server.substr(1, close - 1);
      if (close + 1 < server.size() && server[close + 1] == ':') port = server.substr(close + 2);
    } else if (auto colon = server.rfind(':');
               colon != std::string::npos && server.find(':') == colon) {
      host = server.substr(0, colon);
      port = server.substr(colon + 1);
    }
    o.host = host;
    if (!port.empty()) {
      char* end = nullptr;
      long p = std::strtol(port.c_str(), &end, 10);
      if (*end || p <= 0 || p > 65535)
        return fail(kExitUsage, "bad port in --server '" + server + "'");
      o.port = static_cast<std::uint16_t>(p);
    }
  }
  o.insecure = s.insecure || env("KABAR_INSECURE") == "1" || cfg.insecure;
  o.pin_sha256 = !s.pin.empty() ? s.pin : cfg.pin;
  if (s.direct_tls) o.tls = client::TlsMode::kDirect;
  if (need_password) {
    if (!s.password_file.empty()) {
      std::FILE* f = std::fopen(s.password_file.c_str(), "r");
      if (!f) return fail(kExitUsage, "cannot read " + s.password_file);
      char buf[1024];
      std::size_t n = std::fread(buf, 1, sizeof buf, f);
      std::fclose(f);
      o.password.assign(buf, n);
      while (!o.password.empty() && (o.password.back() == '\n' || o.password.back() == '\r'))
        o.password.pop_back();
    } else if (!env("KABAR_PASSWORD").empty()) {
      o.password = env("KABAR_PASSWORD");
    } else if (!cfg.password.empty() && (jid_arg.empty() || jid_arg == cfg.jid)) {
      o.password = cfg.password;
    } else {
      o.password = read_password("Password for " + o.jid + ": ");
      if (confirm && ::isatty(0) && read_password("Again: ") != o.password)
        return fail(kExitUsage, "the passwords differ");
    }
    if (o.password.empty()) return fail(kExitUsage, "empty password");
  }
  return kExitOk;
}

std::string roster_cache_path(const std::string& jid) {
  return cache_dir() + "/roster-" + account_file_name(jid);
}

awaitable<int> finish(client::Client& c, int code) {
  // One round trip so everything sent has been processed before the stream closes.
  if (c.connected()) co_await c.ping();
  co_await c.disconnect();
  co_return code;
}

// ---- commands ----

awaitable<int> cmd_register(asio::io_context& io, client::Options o) {
  client::Client c(io, o);
  if (auto e = co_await c.register_account()) co_return report(e);
  std::printf("registered %s\n", o.jid.c_str());
  co_return kExitOk;
}

awaitable<int> cmd_passwd(asio::io_context& io, client::Options o) {
  std::string np = env("KABAR_NEW_PASSWORD");
  if (np.empty()) np = read_password("New password for " + o.jid + ": ");
  if (np.empty()) co_return fail(kExitUsage, "empty password");
  client::Client c(io, o);
  if (auto e = co_await c.connect()) co_return report(e);
  if (auto e = co_await c.change_password(np)) {
    co_await c.disconnect();
    co_return report(e);
  }
  std::printf("password changed for %s\n", o.jid.c_str());
  co_return co_await finish(c, kExitOk);
}

awaitable<int> cmd_send(asio::io_context& io, client::Options o, std::string to, std::string text) {
  client::Client c(io, o);
  if (auto e = co_await c.connect()) co_return report(e);
  client::Error e = co_await c.send_message_checked(to, text);
  co_await c.disconnect();
  co_return report(e);
}

// The server's archive of the conversation with `with` (XEP-0313), oldest first, one line per
// message: "STAMP  FROM: TEXT" (STAMP in UTC; FROM is "me" for what the account sent). `since`:
// a XEP-0082 date-time or YYYY-MM-DD; `max`: at most so many of the newest messages (0: all).
awaitable<int> cmd_history(asio::io_context& io, client::Options o, std::string with,
                           std::string since, std::size_t max) {
  const std::string bare = xmpp_bare(with);
  if (bare.empty()) co_return fail(kExitUsage, "'" + with + "' is not a valid JID");
  std::optional<std::int64_t> start;
  if (!since.empty()) {
    start = xmpp::parse_datetime(since.size() == 10 ? since + "T00:00:00Z" : since);
    if (!start)
      co_return fail(kExitUsage, "--since: '" + since + "' is not YYYY-MM-DD or a XEP-0082 time");
  }
  client::Client c(io, o);
  if (auto e = co_await c.connect()) co_return report(e);
  const std::string own = xmpp_bare(c.bound_jid());
  std::vector<client::ArchivedMessage> kept;
  // Pages go backward from the newest, so --max needs no full read.
  client::ArchiveQuery q;
  q.with = bare;
  q.start_ms = start;
  q.before = std::string();
  int code = kExitOk;
  for (;;) {
    q.max = 100;
    if (max > 0) q.max = std::min<std::size_t>(q.max, max - kept.size());
    client::ArchivePage page = co_await c.query_archive(q);
    if (page.error) {
      code = report(page.error);
      break;
    }
    kept.insert(kept.begin(), std::make_move_iterator(page.messages.begin()),
                std::make_move_iterator(page.messages.end()));
    if (page.messages.empty() || page.complete || page.first.empty() ||
        (max > 0 && kept.size() >= max)) {
      break;
    }
    q.before = page.first;
  }
  for (const auto& a : kept) {
    std::string stamp = a.message.delay;
    if (stamp.size() >= 19) stamp = stamp.substr(0, 10) + " " + stamp.substr(11, 8);
    const std::string from = a.outgoing ? "me" : xmpp_bare(a.message.from);
    std::printf("%s  %s: %s\n", stamp.c_str(), xmpp::terminal_text(from).c_str(),
                xmpp::terminal_text(a.message.body).c_str());
  }
  co_await c.disconnect();
  co_return code;
}

awaitable<int> cmd_roster(asio::io_context& io, client::Options o, std::string action,
                          std::string jid) {
  o.roster_cache = roster_cache_path(o.jid);
  client::Client c(io, o);
  if (action != "list" && jid.empty())
    co_return fail(kExitUsage, "roster " + action + " needs a JID");
  std::string bare;
  if (!jid.empty()) {
    auto j = xmpp_bare(jid);
    if (j.empty()) co_return fail(kExitUsage, "'" + jid + "' is not a valid JID");
    bare = j;
  }
  if (auto e = co_await c.connect()) co_return report(e);
  if (auto e = co_await c.fetch_roster()) {
    co_await c.disconnect();
    co_return report(e);
  }
  const client::RosterItem* item = bare.empty() ? nullptr : c.roster_item(bare);
  if (action == "list") {
    // RFC 6121 §3.4: the server hands over the subscription requests that wait for us when we
    // send presence (priority -1: this short-lived resource takes no messages). They precede the
    // answer to the ping that follows.
    c.send_presence({}, {}, -1);
    if (auto e = co_await c.ping()) {
      co_await c.disconnect();
      co_return report(e);
    }
    const auto& asking = c.pending_requests();
    auto asks = [&](const std::string& jid) {
      return std::find(asking.begin(), asking.end(), jid) != asking.end();
    };
    auto hint = [](const std::string& jid) {
      return " (asks you: kabar roster approve " + jid + ", or deny)";
    };
    for (const auto& i : c.roster()) {
      // The fields stay tab-separated; a tab inside one is shown escaped.
      std::string line = xmpp::terminal_text(i.jid) + "\t" + xmpp::terminal_text(i.subscription) +
                         (i.ask ? " (asked)" : "") + (asks(i.jid) ? hint(i.jid) : "");
      if (!i.name.empty()) line += "\t" + xmpp::terminal_text(i.name);
      std::printf("%s\n", line.c_str());
    }
    // Requests from JIDs not in the roster (the usual case: a stranger asks first).
    for (const auto& jid : asking)
      if (!c.roster_item(jid))
        std::printf("%s\tnone%s\n", xmpp::terminal_text(jid).c_str(),
                    xmpp::terminal_text(hint(jid)).c_str());
  } else if (action == "add") {
    if (auto e = co_await c.roster_set(bare)) {
      co_await c.disconnect();
      co_return report(e);
    }
    c.subscribe(bare);
    std::printf("asked %s to share presence\n", bare.c_str());
  } else if (action == "remove") {
    if (!item) {
      co_await c.disconnect();
      co_return fail(kExitNotFound, bare + " is not in your roster");
    }
    if (auto e = co_await c.roster_remove(bare)) {
      co_await c.disconnect();
      co_return report(e);
    }
    std::printf("removed %s\n", bare.c_str());
  } else if (action == "approve") {
    c.approve(bare);
    // Approving makes it mutual: ask back unless we already see their presence or asked.
    if (!item || (item->subscription != "to" && item->subscription != "both" && !item->ask)) {
      if (!item) co_await c.roster_set(bare);
      c.subscribe(bare);
    }
    std::printf("approved %s\n", bare.c_str());
  } else if (action == "deny") {
    c.deny(bare);
    std::printf("denied %s\n", bare.c_str());
  } else {
    co_await c.disconnect();
    co_return fail(kExitUsage, "unknown roster action '" + action + "'");
  }
  co_return co_await finish(c, kExitOk);
}

awaitable<int> cmd_status(asio::io_context& io, client::Options o, std::string show,
                          std::string text) {
  if (show == "online") show.clear();
  if (auto e = client::check_text("the status text", text)) co_return report(e);
  client::Client c(io, o);
  if (auto e = co_await c.connect()) co_return report(e);
  c.send_presence(show, text);
  if (!save_status(o.jid, SavedStatus{show, text}))
    fail(0, "could not save the status in " + state_dir() + " (listen and chat will not use it)");
  co_return co_await finish(c, kExitOk);
}

// The online resource of `jid` to send a file to: `jid` itself when it is a full JID, else the
// available resource with the highest priority seen within a few seconds of our presence.
awaitable<std::string> pick_resource(asio::io_context& io, client::Client& c,
                                     const std::string& jid) {
  auto j = xmpp_bare(jid);
  if (j.empty()) co_return std::string();
  if (j != jid) co_return jid;
  asio::steady_timer t(io);
  std::string best;
  for (int i = 0; i < 30; ++i) {
    auto it = c.presences().find(j);
    if (it != c.presences().end() && !it->second.empty()) {
      int prio = -129;
      for (const auto& [res, p] : it->second) {
        if (p.priority > prio) {
          prio = p.priority;
          best = j + "/" + res;
        }
      }
      if (i >= 3) break;  // give other resources a moment to show up too
    }
    t.expires_after(std::chrono::milliseconds(100));
    boost::system::error_code ec;
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return best;
}

struct SendFileFlags {
  bool no_direct = false;
  bool no_proxy = false;
  bool no_ibb = false;
  bool si = false;
  bool no_upload = false;
};

awaitable<int> cmd_sendfile(asio::io_context& io, client::Options o, std::string to,
                            std::string path, SendFileFlags flags) {
  if (xmpp_bare(to).empty()) co_return fail(kExitUsage, "'" + to + "' is not a valid JID");
  if (::access(path.c_str(), R_OK) != 0) co_return fail(kExitUsage, "cannot read " + path);
  client::Client c(io, o);
  if (auto e = co_await c.connect()) co_return report(e);
  // Before our presence, so that its caps (XEP-0115) include file transfer from the start.
  client::FileTransfer ft(c);
  // Negative priority: this short-lived resource must not take the account's messages.
  c.send_presence({}, {}, -1);
  std::string target = co_await pick_resource(io, c, to);
  // Ctrl-C: the contact is told (session-terminate <cancel/>) and keeps what it has.
  asio::signal_set stop(io, SIGINT, SIGTERM);
  stop.async_wait([&ft](boost::system::error_code ec, int) {
    if (!ec) ft.cancel();
  });
  if (target.empty()) {
    stop.cancel();
    if (flags.no_upload) {
      co_await c.disconnect();
      co_return fail(kExitNotFound, to + " has no online resource to send the file to");
    }
    // Offline (or not sharing presence with us): upload and send the link (XEP-0363, XEP-0066).
    ProgressBar bar(path);
    ft.on_progress = [&bar](const std::string&, std::uint64_t done, std::uint64_t total) {
      bar.update(done, total);
    };
    std::string url;
    client::Error e = co_await ft.upload_and_send(xmpp_bare(to), path, &url);
    bar.finish();
    if (e) {
      co_await c.disconnect();
      if (e.code == client::Errc::kNotFound)
        co_return fail(kExitNotFound,
                       to + " has no online resource to send the file to, and " + e.message);
      co_return report(e);
    }
    print_line(to + " has no online resource we can see: uploaded " + path + " and sent the link " +
               url);
    co_return co_await finish(c, kExitOk);
  }
  ft.options.direct = !flags.no_direct;
  ft.options.proxy = !flags.no_proxy;
  ft.options.ibb = !flags.no_ibb;
  if (flags.si) ft.options.protocol = client::TransferOptions::Protocol::kSi;
  ProgressBar bar(path);
  std::uint64_t moved = 0;
  ft.on_progress = [&bar, &moved](const std::string&, std::uint64_t done, std::uint64_t total) {
    moved = std::max(moved, done);
    bar.update(done, total);
  };
  client::TransferResult res;
  client::Error e = co_await ft.send_file(target, path, &res);
  bar.finish();
  stop.cancel();
  // The contact's client cannot take it peer to peer (no Jingle or SI in its disco#info, no
  // answer to the offer or to the request to accept it): HTTP upload and a link instead, which
  // every client shows (XEP-0363, XEP-0066).
  const bool p2p_impossible = e.code == client::Errc::kUnsupported ||
                              (e.code == client::Errc::kTimeout && moved == 0 && c.connected());
  if (p2p_impossible && !flags.no_upload) {
    std::string url;
    ft.on_progress = [&bar](const std::string&, std::uint64_t done, std::uint64_t total) {
      bar.update(done, total);
    };
    client::Error ue = co_await ft.upload_and_send(xmpp_bare(to), path, &url);
    bar.finish();
    if (ue) {
      co_await c.disconnect();
      co_return fail(exit_code(ue) == kExitUsage ? kExitError : exit_code(ue),
                     e.message + ", and uploading failed: " + ue.message);
    }
    print_line(e.message + ": uploaded " + path + " and sent the link " + url);
    co_return co_await finish(c, kExitOk);
  }
  if (e) {
    const bool online = c.connected();
    co_await c.disconnect();
    // A contact that does not answer is not an unreachable server (exit 4): exit 1.
    if (e.code == client::Errc::kTimeout && online) co_return fail(kExitError, e.message);
    if (p2p_impossible)
      co_return fail(kExitError, e.message + " (and --no-upload forbids the HTTP upload)");
    co_return report(e);
  }
  if (res.protocol == "si")
    std::printf("sent %s to %s: %llu bytes over %s (stream initiation), SHA-256 %s\n", path.c_str(),
                target.c_str(), static_cast<unsigned long long>(res.bytes), res.transport.c_str(),
                res.sha256.c_str());
  else
    std::printf("sent %s to %s: %llu bytes over %s, SHA-256 %s confirmed by the receiver%s\n",
                path.c_str(), target.c_str(), static_cast<unsigned long long>(res.bytes),
                res.transport.c_str(), res.sha256.c_str(),
                res.resumed_from
                    ? (" (resumed at byte " + std::to_string(res.resumed_from) + ")").c_str()
                    : "");
  co_return co_await finish(c, kExitOk);
}

// `kabar call`: one call, one line per change of its state. What the contact's side of the
// state machine ends with decides the exit code (call_exit_code).
struct CallRun {
  explicit CallRun(asio::io_context& io) : done(io, asio::steady_timer::time_point::max()) {}
  asio::steady_timer done;  // cancelled once the call has ended, or the connection
  bool ended = false;       // also: the command is over, the timers' handlers do nothing
  bool was_active = false;
  bool unanswered = false;  // hung up by --ring-timeout
  bool watching = true;     // the server connection is watched
  bool lost = false;
  std::string lost_why;
  client::CallEnd end;
};

awaitable<int> cmd_call(asio::io_context& io, client::Options o, std::string to, CallFlags flags,
                        int duration, int ring_timeout) {
  auto jid = xmpp::Jid::parse(to);
  if (!jid || jid->local().empty())
    co_return fail(kExitUsage, "'" + to + "' is not a contact's JID");
  if (std::string e = flags.check(); !e.empty()) co_return fail(kExitUsage, e);
  client::Client c(io, o);
  if (auto e = co_await c.connect()) co_return report(e);
  auto run = std::make_shared<CallRun>(io);
  // Before our presence, so that its caps (XEP-0115) say that we take calls.
  client::Calls calls(c, media_engine());
  flags.apply(calls.config);
  co_await fetch_ice_servers(calls);
  // Negative priority: this short-lived resource must not take the account's messages.
  c.send_presence({}, {}, -1);
  CallWatch stats(io, calls, flags.connect_timeout);
  asio::steady_timer ring(io), hangup(io);
  asio::signal_set signals(io, SIGINT, SIGTERM);
  std::string id;
  // The timers' and signals' handlers may run after a completed wait was cancelled, when
  // this frame is gone: they look at `run` (shared) first.
  calls.on_incoming = [&calls](const client::CallInfo& in) {
    print_line(call_state_text(in) + ": busy with a call of our own");
    calls.reject(in.id, "busy");
  };
  calls.on_state = [&, run](const client::CallInfo& info) {
    if (info.id != id) return;
    print_line(call_state_text(info));
    if (info.state == client::CallState::kAccepted) ring.cancel();
    if (info.state != client::CallState::kActive) return;
    run->was_active = true;
    if (duration <= 0) return;
    hangup.expires_after(std::chrono::seconds(duration));
    hangup.async_wait([&calls, &stats, &id, run](boost::system::error_code ec) {
      if (ec || run->ended) return;
      stats.sample();
      calls.hang_up(id);
    });
  };
  calls.on_ended = [&, run](const client::CallInfo& info, const client::CallEnd& ended) {
    if (info.id != id) return;
    const client::CallEnd e = stats.reported_end(id, ended);
    if (run->unanswered)
      print_line("no answer from " + info.peer + " within " + std::to_string(ring_timeout) + " s");
    else
      print_line(call_end_text(info, e, stats.take(id)));
    run->ended = true;
    run->end = e;
    run->done.cancel();
  };
  id = calls.call(to, flags.video || !flags.video_in.empty());
  if (id.empty()) co_return fail(kExitUsage, "'" + to + "' is not a contact's JID");
  if (auto info = calls.info(id)) print_line(call_state_text(*info));
  if (ring_timeout > 0) {
    ring.expires_after(std::chrono::seconds(ring_timeout));
    ring.async_wait([&calls, &id, run](boost::system::error_code ec) {
      if (ec || run->ended) return;
      auto info = calls.info(id);
      if (!info || (info->state != client::CallState::kProposed &&
                    info->state != client::CallState::kRinging))
        return;
      run->unanswered = true;
      calls.hang_up(id);  // XEP-0353 retract: the contact's devices stop ringing
    });
  }
  // Ctrl-C: hang up (or withdraw the call while it rings), then exit.
  signals.async_wait([&calls, &stats, &id, run](boost::system::error_code ec, int) {
    if (ec || run->ended) return;
    stats.sample();
    calls.hang_up(id);
  });
  asio::co_spawn(io, c.wait_closed(), [run](std::exception_ptr, client::Error e) {
    if (!run->watching) return;
    run->lost = true;
    run->lost_why = e ? e.message : std::string("the server closed the connection");
    run->done.cancel();
  });
  boost::system::error_code ec;
  co_await run->done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  run->watching = false;
  signals.cancel();
  ring.cancel();
  hangup.cancel();
  if (!run->ended) {
    run->ended = true;
    co_return fail(kExitUnreachable, "lost the connection to the server: " + run->lost_why);
  }
  // Calls ends a proposal the server bounced (no such account, or one that refuses our
  // messages) with <gone/> and the stanza error's condition.
  if (!run->was_active && !run->end.by_peer && run->end.reason == "gone") {
    co_await c.disconnect();
    co_return fail(kExitNotFound, to + " cannot be called: the server answered " + run->end.text +
                                      " (no such account, or it does not take our messages)");
  }
  run->ended = true;
  const int code = run->unanswered ? kExitCallNotTaken : call_exit_code(run->end, run->was_active);
  if (code == kExitCallNotTaken)
    fail(code, run->unanswered     ? "the call was not answered"
               : !run->end.by_peer ? "the call was cancelled before it connected"
                                   : "the call was not taken (" + run->end.reason + ")");
  else if (code == kExitCallFailed)
    fail(code, "the call failed (" + run->end.reason +
                   (run->end.text.empty() ? "" : ": " + run->end.text) + ")");
  co_return co_await finish(c, code);
}

// listen --answer-calls: fresh TURN credentials for each call (they expire), then the answer.
awaitable<void> answer_call(client::Calls& calls, std::string id) {
  co_await fetch_ice_servers(calls);
  calls.accept(id);
}

const char* call_state_name(client::CallState s) {
  switch (s) {
    case client::CallState::kProposed:
      return "proposed";
    case client::CallState::kRinging:
      return "ringing";
    case client::CallState::kAccepted:
      return "accepted";
    case client::CallState::kConnecting:
      return "connecting";
    case client::CallState::kActive:
      return "connected";
    case client::CallState::kEnded:
      break;
  }
  return "ended";
}

void print_event_json(const std::string& type,
                      const std::vector<std::pair<std::string, std::string>>& fields) {
  std::string line = "{\"type\":" + json_string(type);
  for (const auto& [k, v] : fields) {
    if (v.empty()) continue;
    line += "," + json_string(k) + ":" + json_string(v);
  }
  line += "}\n";
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

struct AcceptFlags {
  std::string dir;
  std::uint64_t max_size = 0;
  int part_max_age_days = 7;
  bool answer_calls = false;
  bool reject_calls = false;
  CallFlags call;
};

awaitable<int> cmd_listen(asio::io_context& io, client::Options o, bool json, int keepalive,
                          AcceptFlags files) {
  if (std::string e = files.call.check(); !e.empty()) co_return fail(kExitUsage, e);
  if (!files.dir.empty()) {
    struct stat st {};
    if (::stat(files.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      co_return fail(kExitUsage, "--accept-files: " + files.dir + " is not a directory");
    if (int n = clean_parts(files.dir, files.part_max_age_days))
      fail(0, "removed " + std::to_string(n) + " unfinished file" + (n == 1 ? "" : "s") +
                  " older than " + std::to_string(files.part_max_age_days) + " days from " +
                  files.dir);
  }
  o.roster_cache = roster_cache_path(o.jid);
  // With stream management the library asks for acks after this long idle (and resumes when
  // none comes); without it, the XEP-0199 pings below do.
  o.keepalive = std::chrono::seconds(keepalive > 0 ? keepalive : 0);
  client::Client c(io, o);
  client::FileTransfer ft(c);
  ft.accept_dir = files.dir;
  ft.max_size = files.max_size;
  std::map<std::string, std::unique_ptr<ProgressBar>> bars;
  bool stopping = false;
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int) {
    if (ec) return;
    stopping = true;
    ft.cancel();  // a sender is told why its transfer stops (session-terminate <cancel/>)
    asio::co_spawn(io, c.disconnect(), asio::detached);
  });
  auto out = [&](const std::string& type, std::vector<std::pair<std::string, std::string>> f,
                 const std::string& text) {
    if (json)
      print_event_json(type, f);
    else {
      for (auto& [sid, b] : bars) b->finish();  // a progress line ends before another line
      print_line(text);  // one line per event: a body's newline is shown as \n
      std::fflush(stdout);
    }
  };
  c.on_message = [&](const client::Message& m) {
    if (m.outgoing || (m.carbon && m.type == "error")) {
      // XEP-0280: sent by this account from another client (its receipts and chat states, and
      // the other client's bounces, are that client's business: not shown).
      if (m.outgoing && m.type != "error" && !m.body.empty())
        out("sent",
            {{"to", m.to}, {"body", m.body}, {"id", m.id}, {"delay", m.delay}, {"url", m.oob_url}},
            "me -> " + m.to + ": " + m.body + (m.delay.empty() ? "" : "  [sent " + m.delay + "]"));
    } else if (m.type == "error") {
      out("error", {{"from", m.from}, {"id", m.id}, {"condition", m.error}},
          "error from " + m.from + ": " + m.error);
    } else if (!m.body.empty()) {
      std::vector<std::pair<std::string, std::string>> f{
          {"from", m.from}, {"body", m.body}, {"id", m.id}, {"delay", m.delay}, {"url", m.oob_url}};
      // A received carbon: to another client of this account (its full JID).
      if (m.carbon) f.emplace_back("to", m.to);
      out("message", std::move(f),
          m.from + (m.carbon ? " -> " + m.to : "") + ": " + m.body +
              (m.delay.empty() ? "" : "  [sent " + m.delay + "]"));
    } else if (!m.receipt_for.empty()) {
      out("receipt", {{"from", m.from}, {"id", m.receipt_for}},
          m.from + " received message " + m.receipt_for);
    } else if (!m.chat_state.empty()) {
      out("chatstate", {{"from", m.from}, {"state", m.chat_state}}, m.from + " is " + m.chat_state);
    }
  };
  c.on_presence = [&](const client::Presence& p) {
    std::string type = p.type.empty() ? "presence" : p.type;
    std::string shown = p.type.empty() ? (p.show.empty() ? "online" : p.show) : p.type;
    if (p.type == "subscribe") {
      const std::string bare = xmpp_bare(p.from);
      shown = "asks to see your presence: kabar roster approve " + bare + " (or deny " + bare + ")";
    }
    out(type,
        {{"from", p.from},
         {"show", p.show},
         {"status", p.status},
         {"delay", p.delay},
         {"condition", p.error}},
        p.from + " " + shown + (p.status.empty() ? "" : " \"" + p.status + "\""));
  };
  ft.on_offer = [&](const client::FileOffer& f) {
    out("file-offer", {{"from", f.from}, {"name", f.safe_name}, {"size", std::to_string(f.size)}},
        f.from + " offers " + f.safe_name + " (" + std::to_string(f.size) + " bytes)");
    if (!json) bars[f.sid] = std::make_unique<ProgressBar>(f.safe_name);
    return client::OfferDecision::kAccept;
  };
  ft.on_progress = [&](const std::string& sid, std::uint64_t done, std::uint64_t total) {
    if (auto it = bars.find(sid); it != bars.end()) it->second->update(done, total);
  };
  // Calls: printed; answered with --answer-calls (one at a time: busy meanwhile), declined with
  // --reject-calls, else left ringing until the caller gives up.
  client::Calls calls(c, media_engine());
  files.call.apply(calls.config);
  CallWatch call_stats(io, calls, files.call.connect_timeout);
  calls.on_incoming = [&](const client::CallInfo& in) {
    out("call", {{"id", in.id}, {"from", in.peer}, {"media", call_media_text(in)}},
        call_state_text(in));
    if (files.reject_calls) {
      calls.reject(in.id, "decline");
      return;
    }
    if (!files.answer_calls) return;
    for (const client::CallInfo& other : calls.calls()) {
      if (other.id != in.id && other.state != client::CallState::kRinging) {
        calls.reject(in.id, "busy");
        return;
      }
    }
    asio::co_spawn(io, answer_call(calls, in.id), asio::detached);
  };
  calls.on_state = [&](const client::CallInfo& info) {
    out("call-state",
        {{"id", info.id}, {"peer", info.peer}, {"state", call_state_name(info.state)}},
        call_state_text(info));
  };
  calls.on_ended = [&](const client::CallInfo& info, const client::CallEnd& ended) {
    const client::CallEnd e = call_stats.reported_end(info.id, ended);
    std::optional<client::media::Stats> st = call_stats.take(info.id);
    std::vector<std::pair<std::string, std::string>> f{
        {"id", info.id},
        {"peer", info.peer},
        {"reason", e.reason},
        {"text", e.text},
        {"by", e.by_peer ? "peer" : "us"},
        {"duration", std::to_string(e.duration.count())}};
    if (st) {
      char jitter[32];
      std::snprintf(jitter, sizeof jitter, "%.1f", st->jitter_ms);
      f.insert(f.end(), {{"sent", std::to_string(st->rtp_sent)},
                         {"received", std::to_string(st->rtp_received)},
                         {"lost", std::to_string(st->rtp_lost)},
                         {"concealed", std::to_string(st->audio_frames_concealed)},
                         {"video_frames", std::to_string(st->video_frames_decoded)},
                         {"jitter_ms", jitter}});
    }
    out("call-ended", std::move(f), call_end_text(info, e, st));
  };
  ft.on_received = [&](const client::TransferResult& r) {
    for (auto& [sid, b] : bars) b->finish();
    bars.clear();
    if (r.error) {
      out("file-error", {{"from", r.peer}, {"protocol", r.protocol}, {"error", r.error.message}},
          "file from " + r.peer + " failed: " + r.error.message);
    } else {
      out("file",
          {{"from", r.peer},
           {"path", r.path},
           {"size", std::to_string(r.bytes)},
           {"sha256", r.sha256},
           {"protocol", r.protocol},
           {"transport", r.transport},
           {"hash_checked", r.hash_checked ? "yes" : "no"},
           {"resumed_from", r.resumed_from ? std::to_string(r.resumed_from) : ""}},
          "received " + r.path + " from " + r.peer + " (" + std::to_string(r.bytes) +
              " bytes over " + r.transport + (r.hash_checked ? ", SHA-256 checked)" : ")"));
    }
  };
  // A lost connection under stream management is resumed by the library: one line at most
  // (on stderr; with --json an event on stdout instead).
  c.on_connection = [&](const client::ConnectionEvent& ev) {
    if (ev.kind == client::ConnectionEvent::Kind::kLost) return;
    const bool resumed = ev.kind == client::ConnectionEvent::Kind::kResumed;
    const std::string resent = ev.resent ? std::to_string(ev.resent) : "";
    if (json)
      print_event_json(resumed ? "reconnected" : "new-session",
                       {{"resent", resent}, {"message", resumed ? "" : ev.message}});
    else
      fail(0, resumed ? "reconnected" + (resent.empty() ? "" : " (" + resent + " sent again)")
                      : ev.message);
  };
  SavedStatus st = load_status(o.jid);
  bool first = true;
  while (!stopping) {
    client::Error e = co_await client::with_backoff(
        io, [&]() -> awaitable<client::Error> { co_return co_await c.connect(); },
        first ? 1 : 1000);
    if (e) {
      if (stopping) break;
      co_return report(e);
    }
    first = false;
    if (auto fe = co_await c.fetch_roster(); fe && fe.code != client::Errc::kDisconnected)
      co_return report(fe);
    c.send_presence(st.show, st.status);
    out("ready", {{"jid", c.bound_jid()}}, "listening as " + c.bound_jid());
    // XEP-0199 keepalive: a server that stops answering ends the connection, then we reconnect.
    auto alive = std::make_shared<bool>(true);
    if (keepalive > 0 && !c.stream_managed()) {
      asio::co_spawn(
          io,
          [&c, &io, alive, keepalive]() -> awaitable<void> {
            asio::steady_timer t(io);
            while (*alive) {
              t.expires_after(std::chrono::seconds(keepalive));
              boost::system::error_code ec;
              co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
              if (!*alive || !c.connected()) co_return;
              if (auto pe = co_await c.ping(); pe.code == client::Errc::kTimeout) {
                co_await c.disconnect();
                co_return;
              }
            }
          },
          asio::detached);
    }
    client::Error why = co_await c.wait_closed();
    *alive = false;
    if (stopping) break;
    fail(0, (why ? why.message : std::string("disconnected")) + "; reconnecting");
  }
  signals.cancel();
  co_return kExitOk;
}

// The media options of call, listen and chat.
void add_call_media_options(CLI::App* cmd, CallFlags& f) {
  cmd->add_option("--audio-in", f.audio_in,
                  "Send this WAV file (48 kHz, else resampled) instead of the sound device's "
                  "capture");
  cmd->add_option("--audio-out", f.audio_out,
                  "Write what we hear to this WAV file (48 kHz mono; each call anew) instead of "
                  "playing it");
  cmd->add_option("--audio-device", f.audio_device,
                  "The ALSA sound device (PCM name) to capture from and play to where no file is "
                  "given; ALSA's default reaches PulseAudio or PipeWire")
      ->capture_default_str();
  cmd->add_flag("--no-audio-device", f.no_audio_device,
                "Open no sound device: silence is sent where no --audio-in is given, nothing is "
                "played where no --audio-out is");
  cmd->add_option("--video-in", f.video_in, "Send this Y4M file as our video");
  cmd->add_option("--video-out", f.video_out, "Write the contact's video to this Y4M file");
  cmd->add_option("--host-address", f.host_addresses,
                  "Gather direct ICE candidates on this local address only (repeatable; "
                  "127.0.0.1 for tests on loopback)")
      ->allow_extra_args(false);  // one address per --host-address: JID is not taken as one
  cmd->add_flag("--relay-only", f.relay_only,
                "Offer only relayed candidates (the server's TURN), never our addresses");
  cmd->add_option("--connect-timeout", f.connect_timeout,
                  "Hang up an answered call whose media have not started after this many "
                  "seconds (0: never)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
}

}  // namespace

}  // namespace kabar::cli

int main(int argc, char** argv) {
  using namespace kabar::cli;
  CLI::App app{"kabar: an XMPP client for the terminal."};
  // One line, named like every other error of kabar.
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return std::string("kabar: ") + e.what() + " (see kabar --help)\n";
  });
  app.set_version_flag("--version", std::string("kabar ") + kabar::version());
  app.set_help_all_flag("--help-all", "Print this help with every command's options and exit");
  app.require_subcommand(1);
  app.fallthrough();  // global flags may follow the subcommand too
  Settings s;
  app.add_option("--jid", s.jid, "Account JID (else KABAR_JID or config.toml)");
  app.add_option("--password-file", s.password_file, "Read the password from this file");
  app.add_option("--server", s.server,
                 "Connect to HOST[:PORT] instead of the JID's domain (or KABAR_SERVER)");
  app.add_flag("--insecure", s.insecure, "Accept any server certificate (test servers only)");
  app.add_option("--pin", s.pin, "Trust a server certificate with this SHA-256 fingerprint");
  app.add_flag("--direct-tls", s.direct_tls,
               "TLS from the first byte (XEP-0368) instead of STARTTLS");

  std::string reg_jid;
  auto* reg = app.add_subcommand("register",
                                 "Create an account (password from KABAR_PASSWORD or a prompt)");
  reg->add_option("JID", reg_jid, "The new account")->required();
  auto* passwd = app.add_subcommand(
      "passwd", "Change the account's password (KABAR_NEW_PASSWORD or a prompt)");
  std::string send_to;
  std::vector<std::string> send_words;
  auto* send = app.add_subcommand(
      "send", "Send one message: the words after JID, else all of standard input");
  send->add_option("JID", send_to)->required();
  send->add_option("TEXT", send_words,
                   "The message; several words form one message, separated by spaces");
  std::string hist_jid, hist_since;
  std::size_t hist_max = 0;
  auto* history = app.add_subcommand(
      "history", "Print the server's archive (XEP-0313) of the conversation with a contact");
  history->add_option("JID", hist_jid)->required();
  history->add_option("--since", hist_since, "From this day (YYYY-MM-DD, UTC) or XEP-0082 time");
  history->add_option("--max", hist_max, "At most this many of the newest messages (0: all)")
      ->check(CLI::NonNegativeNumber);
  std::string action = "list", roster_jid;
  auto* roster = app.add_subcommand("roster", "List or change the contact list");
  roster->add_option("ACTION", action, "list, add, remove, approve, deny")
      ->check(CLI::IsMember({"list", "add", "remove", "approve", "deny"}));
  roster->add_option("JID", roster_jid);
  std::string show = "online";
  std::vector<std::string> status_words;
  auto* status = app.add_subcommand(
      "status",
      "Announce your presence (online, away, dnd, xa, chat) and keep it for listen and chat");
  status->add_option("SHOW", show)->check(CLI::IsMember({"online", "away", "dnd", "xa", "chat"}));
  status->add_option("TEXT", status_words,
                     "The status text; several words form one text, separated by spaces");
  bool json = false;
  int keepalive = 60;
  auto* listen = app.add_subcommand("listen", "Print incoming messages and presence, one per line");
  listen->add_flag("--json", json, "One JSON object per line");
  listen->add_option("--keepalive", keepalive, "Seconds between keepalive pings (0: none)")
      ->capture_default_str();
  AcceptFlags accept;
  listen->add_option("--accept-files", accept.dir,
                     "Accept every file offered (Jingle file transfer) into this directory");
  listen->add_option("--max-file-size", accept.max_size,
                     "Decline offered files larger than this many bytes (0: no limit)");
  listen
      ->add_option("--part-max-age", accept.part_max_age_days,
                   "Remove unfinished transfers (hidden .part files kept for a resume) older "
                   "than this many days from the --accept-files directory at start (0: keep)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  listen->add_flag("--answer-calls", accept.answer_calls,
                   "Answer every call (voice or video; one at a time, busy meanwhile)");
  listen->add_flag("--reject-calls", accept.reject_calls, "Decline every call")
      ->excludes("--answer-calls");
  add_call_media_options(listen, accept.call);
  std::string call_to;
  CallFlags call_flags;
  int call_duration = 0, ring_timeout = 60;
  auto* call = app.add_subcommand(
      "call",
      "Call a contact, peer to peer (Jingle RTP over ICE with the server's STUN/TURN, "
      "DTLS-SRTP, Opus and VP8), printing a line per change until the call ends");
  call->add_option("JID", call_to, "bare JID (every device of the contact rings) or full JID")
      ->required();
  call->add_flag("--video", call_flags.video, "Offer video too (sent from --video-in)");
  add_call_media_options(call, call_flags);
  call->add_option("--duration", call_duration,
                   "Hang up this many seconds after the call connects (0: at Ctrl-C or when the "
                   "contact hangs up)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  call->add_option("--ring-timeout", ring_timeout,
                   "Give up when no device has answered after this many seconds (0: never)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  std::string sf_to, sf_path;
  SendFileFlags sf_flags;
  auto* sendfile = app.add_subcommand(
      "sendfile",
      "Send a file: peer to peer to an online contact (Jingle over SOCKS5, direct, else the "
      "server's proxy, else in-band; stream initiation for older clients), else by HTTP upload "
      "and a link");
  sendfile->add_option("JID", sf_to, "bare JID (its highest-priority resource) or full JID")
      ->required();
  sendfile->add_option("FILE", sf_path)->required();
  sendfile->add_flag("--no-direct", sf_flags.no_direct, "Do not offer our own addresses");
  sendfile->add_flag("--no-proxy", sf_flags.no_proxy, "Do not offer the server's SOCKS5 proxy");
  sendfile->add_flag("--no-ibb", sf_flags.no_ibb, "Do not fall back to in-band bytestreams");
  sendfile->add_flag("--no-upload", sf_flags.no_upload,
                     "Never fall back to HTTP upload (XEP-0363) and a link: fail when the contact "
                     "is offline (exit 7) or its client cannot take the file peer to peer (1)");
  sendfile->add_flag("--si", sf_flags.si,
                     "Use the older stream initiation (XEP-0096) even if the contact has Jingle");
  auto* chat = app.add_subcommand(
      "chat",
      "Full-screen terminal chat; /file PATH sends a file, offers ask /accept or /decline; /call "
      "calls the selected contact, /answer, /reject, /hangup");
  std::string chat_dir;
  int chat_keepalive = 60;
  chat->add_option("--keepalive", chat_keepalive,
                   "Seconds idle before the server is asked for an ack, and to wait for it (0: "
                   "never)")
      ->capture_default_str();
  chat->add_option("--accept-files", chat_dir,
                   "Where accepted files go (default: ~/Downloads, created when needed)");
  int chat_part_days = 7;
  chat->add_option("--part-max-age", chat_part_days,
                   "Remove unfinished transfers (.part files) older than this many days from "
                   "that directory at start (0: keep)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  CallFlags chat_call;
  chat->add_flag("--video", chat_call.video, "Offer video too in calls (sent from --video-in)");
  add_call_media_options(chat, chat_call);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  kabar::client::Options o;
  boost::asio::io_context io;
  if (reg->parsed()) {
    if (int r = make_options(s, reg_jid, true, o, true)) return r;
    return run(io, [&]() { return cmd_register(io, o); });
  }
  if (int r = make_options(s, "", true, o)) return r;
  // XEP-0115: the contacts' verified capabilities, so a later run knows them at once.
  o.caps_cache = cache_dir() + "/caps-" + account_file_name(o.jid);
  if (passwd->parsed()) return run(io, [&]() { return cmd_passwd(io, o); });
  if (send->parsed()) {
    std::string text;
    if (send_words.empty()) {
      // The message from standard input (a long text, or one from another program), after the
      // password if that came from standard input too. One final newline is not part of it.
      if (::isatty(0)) std::fprintf(stderr, "kabar: type the message, then Ctrl-D on a line\n");
      text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
      if (!text.empty() && text.back() == '\n') text.pop_back();
      if (!text.empty() && text.back() == '\r') text.pop_back();
      if (text.empty())
        return fail(kExitUsage, "no message: give TEXT or pipe it on standard input");
    } else {
      for (std::size_t i = 0; i < send_words.size(); ++i) text += (i ? " " : "") + send_words[i];
    }
    return run(io, [&]() { return cmd_send(io, o, send_to, text); });
  }
  if (history->parsed())
    return run(io, [&]() { return cmd_history(io, o, hist_jid, hist_since, hist_max); });
  if (roster->parsed()) return run(io, [&]() { return cmd_roster(io, o, action, roster_jid); });
  if (status->parsed()) {
    std::string text;
    for (std::size_t i = 0; i < status_words.size(); ++i) text += (i ? " " : "") + status_words[i];
    return run(io, [&]() { return cmd_status(io, o, show, text); });
  }
  if (listen->parsed())
    return run(io, [&]() { return cmd_listen(io, o, json, keepalive, accept); });
  if (sendfile->parsed())
    return run(io, [&]() { return cmd_sendfile(io, o, sf_to, sf_path, sf_flags); });
  if (call->parsed())
    return run(io,
               [&]() { return cmd_call(io, o, call_to, call_flags, call_duration, ring_timeout); });
  if (chat->parsed()) {
    o.roster_cache = roster_cache_path(o.jid);
    o.keepalive = std::chrono::seconds(chat_keepalive > 0 ? chat_keepalive : 0);
    if (chat_dir.empty()) chat_dir = env("HOME") + "/Downloads";
    clean_parts(chat_dir, chat_part_days);
    return run(io, [&]() { return chat_main(io, o, chat_dir, chat_call); });
  }
  return kExitUsage;
}
