// `kabar chat`: contacts with presence on the left (unread counts), one conversation on the right
// (its local history, PageUp/PageDown), an editable input line at the bottom. ncurses in
// wide-character mode; keyboard input and SIGWINCH come through Asio so the client's reader runs in
// the same loop.
#include "chat.h"

#include <curses.h>
#include <langinfo.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <clocale>
#include <cstring>
#include <ctime>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kabar/filetransfer.h"
#include "local_history.h"
#include "xmpp/display_text.h"

namespace kabar::cli {

namespace {

// Everything drawn goes through here: text from peers (names, bodies, status texts, JIDs) is made
// terminal-safe first (xmpp::terminal_text), so no control, C1 or bidi character reaches ncurses.
std::wstring widen(const std::string& raw) {
  const std::string s = xmpp::terminal_text(raw);
  std::wstring out;
  std::mbstate_t st{};
  const char* p = s.data();
  const char* end = p + s.size();
  while (p < end) {
    wchar_t wc;
    std::size_t n = std::mbrtowc(&wc, p, end - p, &st);
    if (n == static_cast<std::size_t>(-1) || n == static_cast<std::size_t>(-2)) {
      out += L'?';
      ++p;
      st = {};
      continue;
    }
    if (n == 0) n = 1;
    out += wc == L'\t' ? L' ' : wc;
    p += n;
  }
  return out;
}

std::string narrow(const std::wstring& w) {
  std::string out;
  std::mbstate_t st{};
  char buf[MB_LEN_MAX];
  for (wchar_t c : w) {
    std::size_t n = std::wcrtomb(buf, c, &st);
    if (n != static_cast<std::size_t>(-1)) out.append(buf, n);
  }
  return out;
}

std::string clock_now() {
  std::time_t t = std::time(nullptr);
  char buf[8];
  std::strftime(buf, sizeof buf, "%H:%M", std::localtime(&t));
  return buf;
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Local time: "10:20" today, "05-01 10:20" on another day.
std::string clock_of(std::int64_t ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::time_t now = std::time(nullptr);
  std::tm tm{}, today{};
  localtime_r(&t, &tm);
  localtime_r(&now, &today);
  char buf[16];
  const bool same_day = tm.tm_year == today.tm_year && tm.tm_yday == today.tm_yday;
  std::strftime(buf, sizeof buf, same_day ? "%H:%M" : "%m-%d %H:%M", &tm);
  return buf;
}

// A conversation line: a message (`who` is "me" or the contact's name) or, with `who` empty, a
// note from kabar itself (a file offer, a transfer's outcome, an error), drawn as "-- TEXT".
struct Line {
  std::string time;
  std::string who;
  std::string text;
  std::string id;  // our message id, for its receipt or its error
  bool delivered = false;
  std::string failed;  // the error condition that came back for it
};

struct Conversation {
  std::vector<Line> lines;
  int unread = 0;
  std::string chat_state;  // theirs
  bool composing_sent = false;
  bool no_chat_states = false;  // a notification bounced: send none
  // Where what the server's archive has and the local history lacks goes: after the lines
  // loaded from the local history (and those filled in before), before this run's own.
  std::size_t gap_at = 0;
};

class ChatUi {
 public:
  ChatUi(asio::io_context& io, client::Options o, std::string accept_dir, CallFlags call)
      : io_(io),
        account_(o.jid),
        client_(io, o),
        ft_(client_),
        // A warning (a sound device that cannot be opened) is the status line's: stderr is
        // the screen.
        calls_(client_, media_engine([&io, alive = alive_, this](const std::string& what) {
                 asio::post(io, [alive, this, what] {
                   if (!*alive) return;
                   status_ = what;
                   draw();
                 });
               })),
        call_stats_(io, calls_, call.connect_timeout),
        call_clock_(io),
        call_flags_(std::move(call)),
        accept_dir_(std::move(accept_dir)),
        input_fd_(io, ::dup(0)),
        signals_(io, SIGWINCH) {}
  ~ChatUi() { *alive_ = false; }
  ChatUi(const ChatUi&) = delete;
  ChatUi& operator=(const ChatUi&) = delete;

  awaitable<int> run() {
    init_screen();
    client_.on_message = [this](const client::Message& m) { on_message(m); };
    client_.on_presence = [this](const client::Presence& p) { on_presence(p); };
    client_.on_roster_push = [this](const client::RosterItem&, bool) { draw(); };
    // Stream management: a lost connection is resumed underneath; the status line says so.
    client_.on_connection = [this](const client::ConnectionEvent& ev) {
      status_ = ev.kind == client::ConnectionEvent::Kind::kLost ? "connection lost; reconnecting..."
                : ev.kind == client::ConnectionEvent::Kind::kResumed ? presence_line()
                                                                     : ev.message;
      draw();
    };
    setup_files();
    setup_calls();
    watch_resize();
    asio::co_spawn(io_, read_keys(), asio::detached);
    status_ = "connecting to the server...";
    if (std::string why; !history_.open(history_path(account_), why))
      status_ = "no local history (" + why + "); connecting to the server...";
    draw();
    SavedStatus st = load_status(account_);
    int result = kExitOk;
    bool first = true;
    while (!quit_) {
      client::Error e = co_await client::with_backoff(
          io_, [this]() -> awaitable<client::Error> { co_return co_await client_.connect(); },
          first ? 1 : 1000);
      if (quit_) break;
      if (e) {
        end_screen();
        co_return report(e);
      }
      first = false;
      co_await client_.fetch_roster();
      my_show_ = st.show;
      my_status_ = st.status;
      client_.send_presence(my_show_, my_status_);
      status_ = presence_line();
      if (selected_.empty() && !client_.roster().empty()) selected_ = client_.roster()[0].jid;
      // What the account's other clients sent and received while this one was not connected.
      for (const auto& [peer, conv] : convs_) asio::co_spawn(io_, fill_gap(peer), asio::detached);
      draw();
      client::Error why = co_await client_.wait_closed();
      if (quit_) break;
      if (why.code == client::Errc::kConflict || why.code == client::Errc::kAuth) {
        end_screen();
        co_return report(why);
      }
      status_ = "disconnected (" + why.message + "); reconnecting...";
      draw();
    }
    co_await client_.disconnect();
    end_screen();
    co_return result;
  }

  // ---- files: offers wait for /accept or /decline; /file PATH sends to the selected contact ----
  void setup_files() {
    ft_.accept_dir = accept_dir_;
    ft_.on_offer = [this](const client::FileOffer& f) {
      offers_.push_back(f);
      std::string from = bare_of(f.from);
      auto& c = conv(from);
      c.lines.push_back(Line{
          clock_now(),
          "",
          "offers " + f.safe_name + " (" + std::to_string(f.size) + " bytes): /accept or /decline",
          {},
          false,
          {}});
      if (from != selected_) ++c.unread;
      status_ = from + " offers " + f.safe_name + ": /accept or /decline";
      draw();
      return client::OfferDecision::kAsk;
    };
    ft_.on_progress = [this](const std::string&, std::uint64_t done, std::uint64_t total) {
      auto now = std::chrono::steady_clock::now();
      if (done == 0) transfer_start_ = now;
      if (done < total && now - last_progress_ < std::chrono::milliseconds(200)) return;
      last_progress_ = now;
      status_ = progress_text("file", done, total,
                              std::chrono::duration<double>(now - transfer_start_).count());
      draw();
    };
    ft_.on_received = [this](const client::TransferResult& r) {
      std::string text = r.error ? "file failed: " + r.error.message
                                 : "received " + r.path + " (" + std::to_string(r.bytes) +
                                       " bytes" + (r.hash_checked ? ", hash checked)" : ")");
      conv(bare_of(r.peer)).lines.push_back(Line{clock_now(), "", text, {}, false, {}});
      status_ = text;
      draw();
    };
  }

  void answer_offer(bool accept) {
    if (offers_.empty()) {
      status_ = "no file offer is waiting";
      return;
    }
    client::FileOffer f = offers_.back();
    offers_.pop_back();
    if (accept) ::mkdir(accept_dir_.c_str(), 0700);
    ft_.decide(f.sid, accept);
    status_ = (accept ? "accepted " : "declined ") + f.safe_name;
  }

  awaitable<void> send_file(std::string to, std::string path) {
    std::string target;
    int prio = -129;
    if (auto it = client_.presences().find(to); it != client_.presences().end())
      for (const auto& [res, p] : it->second)
        if (p.priority > prio) {
          prio = p.priority;
          target = to + "/" + res;
        }
    client::TransferResult r;
    client::Error e;
    std::string url;
    std::string why;  // why it went by upload
    if (!target.empty()) {
      e = co_await ft_.send_file(target, path, &r);
      // Their client cannot take it peer to peer: upload it and send the link instead.
      if (e.code == client::Errc::kUnsupported) {
        why = e.message + ": ";
        target.clear();
      }
    }
    if (target.empty()) e = co_await ft_.upload_and_send(to, path, &url);
    std::string text = e                ? "sending failed: " + e.message
                       : target.empty() ? why + "uploaded " + path + " and sent the link " + url
                                        : "sent " + path + " over " + r.transport;
    conv(to).lines.push_back(Line{clock_now(), "", text, {}, false, {}});
    status_ = text;
    draw();
  }

  // ---- calls: one at a time; /call, /answer, /reject, /hangup; the status line shows it ----
  void setup_calls() {
    call_flags_.apply(calls_.config);
    calls_.on_incoming = [this](const client::CallInfo& in) {
      const std::string from = bare_of(in.peer);
      if (!call_id_.empty() || call_starting_) {
        calls_.reject(in.id, "busy");
        note(from, call_state_text(in) + ": declined, busy with another call");
        return;
      }
      call_id_ = in.id;
      note(from, call_state_text(in) + ": /answer or /reject");
      if (from != selected_) ++conv(from).unread;
      beep();
      draw();
    };
    calls_.on_state = [this](const client::CallInfo& info) {
      if (info.id != call_id_) return;
      note(bare_of(info.peer), call_state_text(info));
      if (info.state == client::CallState::kActive) tick_call_clock();
      draw();
    };
    calls_.on_ended = [this](const client::CallInfo& info, const client::CallEnd& ended) {
      const client::CallEnd e = call_stats_.reported_end(info.id, ended);
      const std::string text = call_end_text(info, e, call_stats_.take(info.id));
      note(bare_of(info.peer), text);
      if (info.id != call_id_) return;
      call_id_.clear();
      call_clock_.cancel();
      status_ = text;
      draw();
    };
  }

  // A line from kabar in the conversation with `peer`.
  void note(const std::string& peer, const std::string& text) {
    conv(peer).lines.push_back(Line{clock_now(), "", text, {}, false, {}});
  }

  // The call for the status line: "in call with JID 1:23, lost 0.4%", or how far it got.
  std::string call_status() const {
    if (call_starting_) return "calling...";
    auto info = calls_.info(call_id_);
    if (!info) return {};
    using client::CallState;
    switch (info->state) {
      case CallState::kProposed:
      case CallState::kRinging:
        return info->incoming ? "call from " + info->peer + ": /answer or /reject"
                              : "calling " + info->peer + " (/hangup)";
      case CallState::kAccepted:
      case CallState::kConnecting:
        return "connecting to " + info->peer + " (/hangup)";
      case CallState::kActive:
        break;
      case CallState::kEnded:
        return {};
    }
    std::string s = "in call with " + info->peer + " " +
                    call_duration_text(std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::steady_clock::now() - call_active_since_));
    if (auto st = call_stats_.peek(call_id_)) {
      const std::uint64_t expected = st->rtp_received + st->rtp_lost;
      char loss[48];
      std::snprintf(loss, sizeof loss, ", lost %.1f%%",
                    expected ? 100.0 * static_cast<double>(st->rtp_lost) / expected : 0.0);
      s += loss;
    }
    return s + " (/hangup)";
  }

  // Redraws the call's duration and loss once a second while it is up.
  void tick_call_clock() {
    call_active_since_ = std::chrono::steady_clock::now();
    arm_call_clock();
  }
  void arm_call_clock() {
    call_clock_.expires_after(std::chrono::seconds(1));
    call_clock_.async_wait([this, alive = alive_](boost::system::error_code ec) {
      if (ec || !*alive || call_id_.empty()) return;
      draw();
      arm_call_clock();
    });
  }

  // /call [JID]: the selected contact's devices all ring (a full JID: that one).
  awaitable<void> start_call(std::string to) {
    call_starting_ = true;
    draw();
    // Fresh TURN credentials (XEP-0215) for this call; without them only direct paths work.
    client::Error e = co_await calls_.fetch_ice_servers();
    call_starting_ = false;
    if (quit_) co_return;
    call_id_ = calls_.call(to, call_flags_.video || !call_flags_.video_in.empty());
    if (call_id_.empty()) {
      status_ = "'" + to + "' is not a contact's JID";
    } else if (auto info = calls_.info(call_id_)) {
      note(bare_of(to), call_state_text(*info));
      if (e) status_ = e.message + "; direct paths only";
    }
    draw();
  }

  awaitable<void> answer_call(std::string id) {
    client::Error e = co_await calls_.fetch_ice_servers();
    if (e) status_ = e.message + "; direct paths only";
    calls_.accept(id);
    draw();
  }

  void call_command(const std::string& cmd, const std::string& arg) {
    auto info = calls_.info(call_id_);
    if (cmd == "/call") {
      if (info || call_starting_) {
        status_ = "one call at a time: /hangup first";
        return;
      }
      std::string to = arg.empty() ? selected_ : arg;
      if (to.empty() || xmpp_bare(to).empty()) {
        status_ = to.empty() ? "no contact selected: /call JID" : "'" + to + "' is not a valid JID";
        return;
      }
      if (!client_.connected()) {
        status_ = "not connected";
        return;
      }
      asio::co_spawn(io_, start_call(to), asio::detached);
    } else if (cmd == "/answer" || cmd == "/reject") {
      if (!info || !info->incoming || info->state != client::CallState::kRinging) {
        status_ = "no call is ringing";
        return;
      }
      if (cmd == "/reject")
        calls_.reject(call_id_);
      else
        asio::co_spawn(io_, answer_call(call_id_), asio::detached);
    } else if (cmd == "/hangup") {
      if (!info) {
        status_ = "no call to hang up";
        return;
      }
      call_stats_.sample();
      calls_.hang_up(call_id_);
    }
  }

  void quit() {
    if (quit_) return;
    quit_ = true;
    ft_.cancel();  // the other side of a transfer is told why it stops
    // The contact hears the hang-up before the stream closes.
    if (!call_id_.empty()) calls_.hang_up(call_id_);
    asio::co_spawn(io_, client_.disconnect(), asio::detached);
  }

 private:
  void init_screen() {
    // Wide characters need a UTF-8 locale, also where the environment names none (tmux, cron).
    std::setlocale(LC_ALL, "");
    if (std::strcmp(nl_langinfo(CODESET), "UTF-8") != 0) std::setlocale(LC_CTYPE, "C.UTF-8");
    initscr();
    cbreak();
    // Ctrl-C is read as a key, in order with what was typed before it. As the terminal's
    // interrupt character it would raise SIGINT ahead of the keys still queued and the terminal
    // would discard them (POSIX: the input queue is flushed on INTR), so a line typed just before
    // it would be lost and the chat quit instead of keeping it. Ctrl-Z still suspends.
    if (termios t; ::tcgetattr(0, &t) == 0) {
      t.c_cc[VINTR] = _POSIX_VDISABLE;
      ::tcsetattr(0, TCSANOW, &t);
      def_prog_mode();  // what ncurses restores after a suspend or a resize
    }
    noecho();
    nonl();
    keypad(stdscr, TRUE);
    nodelay(stdscr, TRUE);
    set_escdelay(25);
    if (has_colors()) {
      start_color();
      use_default_colors();
      init_pair(1, COLOR_GREEN, -1);
      init_pair(2, COLOR_YELLOW, -1);
      init_pair(3, COLOR_CYAN, -1);
    }
    screen_ = true;
  }

  void end_screen() {
    if (!screen_) return;
    screen_ = false;
    signals_.cancel();
    boost::system::error_code ec;
    input_fd_.cancel(ec);
    endwin();
  }

  void watch_resize() {
    signals_.async_wait([this](boost::system::error_code ec, int) {
      if (ec || !screen_) return;
      endwin();
      refresh();
      draw();
      watch_resize();
    });
  }

  awaitable<void> read_keys() {
    while (screen_ && !quit_) {
      boost::system::error_code ec;
      co_await input_fd_.async_wait(asio::posix::descriptor_base::wait_read,
                                    asio::redirect_error(asio::use_awaitable, ec));
      if (ec || !screen_) co_return;
      wint_t ch;
      int r;
      while (screen_ && (r = get_wch(&ch)) != ERR) handle_key(r == KEY_CODE_YES, ch);
      if (screen_) draw();
    }
  }

  std::vector<std::string> contacts() const {
    std::vector<std::string> out;
    for (const auto& i : client_.roster()) out.push_back(i.jid);
    for (const auto& jid : client_.pending_requests())
      if (std::find(out.begin(), out.end(), jid) == out.end()) out.push_back(jid);
    for (const auto& [jid, c] : convs_)
      if (std::find(out.begin(), out.end(), jid) == out.end()) out.push_back(jid);
    return out;
  }

  void select(int delta) {
    auto cs = contacts();
    if (cs.empty()) return;
    auto it = std::find(cs.begin(), cs.end(), selected_);
    int idx = it == cs.end() ? 0 : static_cast<int>(it - cs.begin());
    idx = (idx + delta + static_cast<int>(cs.size())) % static_cast<int>(cs.size());
    selected_ = cs[idx];
    scroll_ = 0;
    conv(selected_).unread = 0;
  }

  void handle_key(bool code, wint_t ch) {
    show_help_ = false;
    if (code || (ch != 3 && ch != 4)) interrupt_armed_ = false;
    if (code) {
      switch (ch) {
        case KEY_BTAB:
        case KEY_UP:
          select(-1);
          break;
        case KEY_DOWN:
          select(1);
          break;
        case KEY_LEFT:
          if (cursor_ > 0) --cursor_;
          break;
        case KEY_RIGHT:
          if (cursor_ < input_.size()) ++cursor_;
          break;
        case KEY_HOME:
          cursor_ = 0;
          break;
        case KEY_END:
          cursor_ = input_.size();
          break;
        case KEY_BACKSPACE:
          if (cursor_ > 0) input_.erase(--cursor_, 1);
          break;
        case KEY_DC:
          if (cursor_ < input_.size()) input_.erase(cursor_, 1);
          break;
        case KEY_ENTER:
          submit();
          break;
        case KEY_PPAGE:
          scroll_ += page_;
          break;
        case KEY_NPAGE:
          scroll_ = std::max(0, scroll_ - page_);
          break;
        default:
          break;
      }
      return;
    }
    switch (ch) {
      case L'\t':
      case 14:  // Ctrl-N
        select(1);
        return;
      case 16:  // Ctrl-P
        select(-1);
        return;
      case L'\r':
      case L'\n':
        submit();
        return;
      case 127:
      case 8:
        if (cursor_ > 0) input_.erase(--cursor_, 1);
        return;
      case 1:  // Ctrl-A
        cursor_ = 0;
        return;
      case 5:  // Ctrl-E
        cursor_ = input_.size();
        return;
      case 21:  // Ctrl-U
        input_.erase(0, cursor_);
        cursor_ = 0;
        return;
      case 11:  // Ctrl-K
        input_.erase(cursor_);
        return;
      case 23: {  // Ctrl-W: the word before the cursor
        std::size_t p = cursor_;
        while (p > 0 && input_[p - 1] == L' ') --p;
        while (p > 0 && input_[p - 1] != L' ') --p;
        input_.erase(p, cursor_ - p);
        cursor_ = p;
        return;
      }
      case 3:  // Ctrl-C
      case 4:  // Ctrl-D
        interrupt();
        return;
      default:
        if (ch >= 32) {
          input_.insert(cursor_++, 1, static_cast<wchar_t>(ch));
          typing();
        }
    }
  }

  // XEP-0085: <composing/> once per message being typed to a contact.
  void typing() {
    if (selected_.empty() || input_.empty() || input_[0] == L'/' || !client_.connected()) return;
    auto& c = conv(selected_);
    if (!c.composing_sent && !c.no_chat_states) {
      client_.send_chat_state(selected_, "composing");
      c.composing_sent = true;
    }
  }

  void submit() {
    std::string text = narrow(input_);
    input_.clear();
    cursor_ = 0;
    if (text.empty()) return;
    if (text[0] == '/') {
      command(text);
      return;
    }
    if (selected_.empty()) {
      status_ = "no contact selected: /to JID opens a conversation";
      return;
    }
    if (!client_.connected()) {
      status_ = "not connected; the message was not sent";
      return;
    }
    if (client::Error e = client::check_text("the message", text)) {
      status_ = e.message + "; it was not sent";
      return;
    }
    std::string id = client_.send_message(selected_, text);
    auto& c = conv(selected_);
    c.composing_sent = false;
    c.lines.push_back(Line{clock_now(), "me", text, id, false, {}});
    history_.append(selected_, HistoryEntry{now_ms(), true, text, id, false, {}});
  }

  void command(const std::string& text) {
    std::string cmd = text.substr(0, text.find(' '));
    std::string arg = text.size() > cmd.size() ? text.substr(cmd.size() + 1) : std::string();
    std::string bare = xmpp_bare(arg);
    if (cmd == "/quit" || cmd == "/q") {
      quit();
    } else if (cmd == "/to" && !bare.empty()) {
      selected_ = bare;
      scroll_ = 0;
      conv(bare).unread = 0;
    } else if (cmd == "/add" && !bare.empty()) {
      auto jid = bare;
      asio::co_spawn(
          io_,
          [this, jid]() -> awaitable<void> {
            client::Error e = co_await client_.roster_set(jid);
            if (!e) client_.subscribe(jid);
            status_ = e ? e.message : "asked " + jid + " to share presence";
            draw();
          },
          asio::detached);
    } else if (cmd == "/approve" || cmd == "/deny") {
      answer_request(cmd == "/approve", arg, bare);
    } else if (cmd == "/accept" || cmd == "/decline") {
      answer_offer(cmd == "/accept");
    } else if (cmd == "/call" || cmd == "/answer" || cmd == "/reject" || cmd == "/hangup") {
      call_command(cmd, arg);
    } else if (cmd == "/file" && !arg.empty() && !selected_.empty()) {
      status_ = "sending " + arg + " to " + selected_ + "...";
      asio::co_spawn(io_, send_file(selected_, arg), asio::detached);
    } else if (cmd == "/status") {
      std::string show = arg.substr(0, arg.find(' '));
      std::string st = arg.size() > show.size() ? arg.substr(show.size() + 1) : std::string();
      if (show != "online" && show != "away" && show != "dnd" && show != "xa" && show != "chat") {
        status_ = "usage: /status online|away|dnd|xa [TEXT]";
        return;
      }
      if (show == "online") show.clear();
      if (client::Error e = client::check_text("the status text", st)) {
        status_ = e.message;
        return;
      }
      client_.send_presence(show, st);
      my_show_ = show;
      my_status_ = st;
      status_ = presence_line();
      if (!save_status(account_, SavedStatus{show, st}))
        status_ += " (could not save it for the next start)";
    } else if (cmd == "/help" || cmd == "/?") {
      show_help_ = true;
      status_ = "any key closes the help";
    } else if (cmd == "/to" || cmd == "/add") {
      status_ = arg.empty() ? "usage: " + cmd + " JID" : "'" + arg + "' is not a valid JID";
    } else if (cmd == "/file") {
      status_ = arg.empty() ? "usage: /file PATH (to the selected contact)"
                            : "no contact selected: /to JID opens a conversation";
    } else {
      status_ = "unknown command " + cmd + ": /help lists the commands";
    }
  }

  // Our own presence as announced, for the status bar: "dnd (busy) as alice@example.org/kabar.x".
  std::string presence_line() const {
    std::string s = my_show_.empty() ? "online" : my_show_;
    if (!my_status_.empty()) s += " (" + my_status_ + ")";
    return s + " as " + client_.bound_jid();
  }

 public:
  // Ctrl-C (the key, or SIGINT from elsewhere) or Ctrl-D: quits, unless a line is half-typed: then
  // the first press keeps it and says how to quit without it.
  void interrupt() {
    if (input_.empty() || interrupt_armed_) {
      quit();
      return;
    }
    interrupt_armed_ = true;
    status_ = "your line is not sent yet: Enter sends it, Ctrl-C again quits without it";
    draw();
  }
  bool quitting() const { return quit_; }

 private:
  // /approve [JID], /deny [JID]: without a JID, the one request waiting (if several wait, which
  // ones).
  void answer_request(bool approve, const std::string& arg, std::string bare) {
    const std::string cmd = approve ? "/approve" : "/deny";
    const auto& waiting = client_.pending_requests();
    if (arg.empty()) {
      if (waiting.empty()) {
        status_ = "no subscription request is waiting; " + cmd + " JID answers one by name";
        return;
      }
      if (waiting.size() > 1) {
        std::string names;
        for (const auto& j : waiting) names += (names.empty() ? "" : ", ") + j;
        status_ =
            std::to_string(waiting.size()) + " requests wait (" + names + "): " + cmd + " JID";
        return;
      }
      bare = waiting.front();
    } else if (bare.empty()) {
      status_ = "'" + arg + "' is not a valid JID";
      return;
    }
    if (approve) {
      client_.approve(bare);
      // Approving makes it mutual: ask back unless we already see their presence or asked.
      const client::RosterItem* i = client_.roster_item(bare);
      if (!i || (i->subscription != "to" && i->subscription != "both" && !i->ask))
        client_.subscribe(bare);
      status_ = "approved " + bare + ": they see your presence";
    } else {
      client_.deny(bare);
      status_ = "denied " + bare;
    }
  }

  std::string name_of(const std::string& bare) const { return bare.substr(0, bare.find('@')); }

  // The conversation with `peer`, its history loaded from the local store when first used (before
  // anything of this run is added to it).
  Conversation& conv(const std::string& peer) {
    auto [it, created] = convs_.try_emplace(peer);
    if (created && history_.is_open()) {
      for (const HistoryEntry& e : history_.tail(peer, kHistoryLines))
        it->second.lines.push_back(Line{clock_of(e.stamp_ms),
                                        e.outgoing ? "me" : name_of(peer),
                                        e.body,
                                        e.msg_id,
                                        e.delivered,
                                        {}});
      it->second.gap_at = it->second.lines.size();
      // Where the server keeps an archive (XEP-0313), what was missed since the newest line
      // kept here is asked for from it.
      if (client_.connected()) asio::co_spawn(io_, fill_gap(peer), asio::detached);
    }
    return it->second;
  }

  // Messages of the conversation with `peer` that the server's archive (XEP-0313) has and the
  // local history does not: those sent or received by the account's other clients while this
  // one was off (what reached no client at all came as offline messages). From a little before
  // the newest line kept (clocks differ; what is known already is skipped), or the newest page
  // when nothing is kept.
  awaitable<void> fill_gap(std::string peer) {
    const std::int64_t since = history_.newest_stamp(peer);
    client::ArchiveQuery q;
    q.with = peer;
    q.max = kGapPage;
    if (since > 0)
      q.start_ms = since - kGapSlackMs;
    else
      q.before = std::string();
    std::vector<client::ArchivedMessage> got;
    for (int pages = 0; pages < kGapPages; ++pages) {
      client::ArchivePage page = co_await client_.query_archive(q);
      if (page.error) co_return;  // no archive, or no answer: the conversation stays as it is
      got.insert(got.end(), std::make_move_iterator(page.messages.begin()),
                 std::make_move_iterator(page.messages.end()));
      if (!q.start_ms || page.complete || page.messages.empty() || page.last.empty()) break;
      q.after = page.last;
    }
    Conversation& c = convs_[peer];
    std::vector<Line> add;
    for (const client::ArchivedMessage& a : got) {
      const client::Message& m = a.message;
      if (m.body.empty() || m.type == "error") continue;
      if (history_.knows(peer, a.archive_id, m.id, a.outgoing, m.body)) continue;
      const std::int64_t stamp = m.delay.empty() ? 0 : parse_stamp_ms(m.delay);
      add.push_back(Line{stamp ? clock_of(stamp) : clock_now(),
                         a.outgoing ? "me" : name_of(peer),
                         m.body,
                         a.outgoing ? m.id : std::string(),
                         false,
                         {}});
      history_.append(peer, HistoryEntry{stamp ? stamp : now_ms(), a.outgoing, m.body, m.id, false,
                                         a.archive_id});
    }
    if (add.empty()) co_return;
    const std::size_t at = std::min(c.gap_at, c.lines.size());
    c.lines.insert(c.lines.begin() + static_cast<std::ptrdiff_t>(at), add.begin(), add.end());
    c.gap_at = at + add.size();
    if (peer != selected_) c.unread += static_cast<int>(add.size());
    draw();
  }

  std::string bare_of(const std::string& full) {
    std::string b = xmpp_bare(full);
    return b.empty() ? full : b;
  }

  void on_message(const client::Message& m) {
    if (m.outgoing) {
      on_sent_carbon(m);
      return;
    }
    std::string from = bare_of(m.from);
    if (m.type == "error" && m.carbon) {
      // Another client's bounce: nothing of this chat's to mark.
    } else if (m.type == "error") {
      auto& c = conv(from);
      if (m.id.empty()) {
        // Only our chat-state notifications go without an id: a bounce of one says the contact
        // cannot take them; XEP-0085 §5.1: send no more (the message's own error is shown).
        c.no_chat_states = true;
      } else {
        // The error marks the message it answers, else it is a note of its own.
        const std::string cond = m.error.empty() ? "error" : m.error;
        bool marked = false;
        for (auto& l : c.lines)
          if (l.id == m.id) {
            l.failed = cond;
            marked = true;
          }
        if (!marked)
          c.lines.push_back(Line{clock_now(), "", "not delivered: " + cond, {}, false, {}});
      }
    } else if (!m.body.empty()) {
      auto& c = conv(from);
      const std::int64_t stamp = m.delay.empty() ? 0 : parse_stamp_ms(m.delay);
      c.lines.push_back(
          Line{stamp ? clock_of(stamp) : clock_now(), name_of(from), m.body, {}, false, {}});
      history_.append(
          from, HistoryEntry{stamp ? stamp : now_ms(), false, m.body, m.id, false, m.stanza_id});
      c.chat_state = "active";
      if (from != selected_) ++c.unread;
      if (selected_.empty()) selected_ = from;
    } else if (!m.receipt_for.empty()) {
      for (auto& l : conv(from).lines)
        if (l.id == m.receipt_for) l.delivered = true;
      history_.mark_delivered(from, m.receipt_for);
    } else if (!m.chat_state.empty()) {
      conv(from).chat_state = m.chat_state;
    }
    draw();
  }

  // XEP-0280: what this account sent from another client shows as ours in the conversation with
  // its recipient, and is kept in the local history as sent.
  void on_sent_carbon(const client::Message& m) {
    const std::string to = bare_of(m.to);
    if (to.empty() || m.type == "error" || m.body.empty()) return;
    auto& c = conv(to);
    const std::int64_t stamp = m.delay.empty() ? 0 : parse_stamp_ms(m.delay);
    c.lines.push_back(Line{stamp ? clock_of(stamp) : clock_now(), "me", m.body, m.id, false, {}});
    history_.append(to,
                    HistoryEntry{stamp ? stamp : now_ms(), true, m.body, m.id, false, m.stanza_id});
    if (selected_.empty()) selected_ = to;
    draw();
  }

  void on_presence(const client::Presence& p) {
    if (p.type == "subscribe") {
      const std::string from = bare_of(p.from);
      status_ = client_.pending_requests().size() > 1
                    ? from + " asks to see your presence: /approve " + from + " or /deny " + from
                    : from + " asks to see your presence: /approve or /deny";
    }
    draw();
  }

  // "online", "away", ... or "offline" from the best resource.
  std::string show_of(const std::string& jid) const {
    auto it = client_.presences().find(jid);
    if (it == client_.presences().end() || it->second.empty()) return "offline";
    std::string best = "xa";
    for (const auto& [res, p] : it->second) {
      std::string s = p.show.empty() ? "online" : p.show;
      if (s == "online" || s == "chat") return "online";
      if (s == "away" || (s == "dnd" && best == "xa")) best = s;
    }
    return best;
  }

  // The status text of the contact's highest-priority resource (the one `show_of` reflects).
  std::string status_text_of(const std::string& jid) const {
    auto it = client_.presences().find(jid);
    if (it == client_.presences().end()) return {};
    const client::Presence* best = nullptr;
    for (const auto& [res, p] : it->second)
      if (!best || p.priority > best->priority) best = &p;
    return best ? best->status : std::string();
  }

  void put(int y, int x, const std::string& s, int width, attr_t attr = A_NORMAL) {
    if (width <= 0) return;
    std::wstring w = widen(s);
    if (static_cast<int>(w.size()) > width) w.resize(width);
    attron(attr);
    mvaddnwstr(y, x, w.c_str(), static_cast<int>(w.size()));
    attroff(attr);
  }

  void draw() {
    if (!screen_) return;
    int rows, cols;
    getmaxyx(stdscr, rows, cols);
    erase();
    int left = std::min(34, cols / 3);
    // Contacts.
    put(0, 0, "Contacts", left - 1, A_BOLD);
    int y = 1;
    for (const auto& jid : contacts()) {
      if (y >= rows - 3) break;
      std::string show = show_of(jid);
      const auto& waiting = client_.pending_requests();
      const bool asks = std::find(waiting.begin(), waiting.end(), jid) != waiting.end();
      std::string mark = asks                ? "[?] "
                         : show == "online"  ? "[+] "
                         : show == "offline" ? "[ ] "
                                             : "[~] ";
      std::string line = mark + jid;
      int unread = convs_.count(jid) ? convs_.at(jid).unread : 0;
      if (unread) line += " (" + std::to_string(unread) + ")";
      attr_t a = jid == selected_ ? A_REVERSE : A_NORMAL;
      if (show == "online" && has_colors()) a |= COLOR_PAIR(1);
      if (unread) a |= A_BOLD;
      put(y++, 0, line, left - 1, a);
    }
    for (int r = 0; r < rows - 2; ++r) mvaddch(r, left - 1, ACS_VLINE);
    // Conversation.
    int cx = left + 1;
    int cw = cols - cx;
    if (show_help_) {
      static const char* const kHelp[] = {
          "Commands",
          "  /to JID            open a conversation",
          "  /add JID           add a contact and ask to see their presence",
          "  /approve [JID]     let them see your presence (no JID: the one request waiting)",
          "  /deny [JID]        refuse a request (no JID: the one request waiting)",
          "  /status SHOW [TEXT]  online, away, dnd, xa or chat, with an optional text",
          "  /file PATH         send a file to the selected contact",
          "  /accept, /decline  answer the latest file offer",
          "  /call [JID]        call the selected contact (or JID); /hangup ends it",
          "  /answer, /reject   answer or decline the call that rings",
          "  /help              this help",
          "  /quit              leave (also Ctrl-D, Ctrl-C)",
          "Keys",
          "  Tab, Shift-Tab, Up, Down, Ctrl-N, Ctrl-P   change the contact",
          "  Left, Right, Home, End, Ctrl-A, Ctrl-E, Backspace, Delete, Ctrl-U, Ctrl-K, Ctrl-W",
          "                     edit the line; Enter sends it",
      };
      int row = 0;
      for (const char* line : kHelp) {
        if (row >= rows - 2) break;
        put(row, cx, line, cw, line[0] != ' ' ? A_BOLD : A_NORMAL);
        ++row;
      }
    } else if (!selected_.empty()) {
      std::string head = selected_ + " - " + show_of(selected_);
      if (std::string text = status_text_of(selected_); !text.empty()) head += ": " + text;
      conv(selected_);  // loads its history when first shown
      auto it = convs_.find(selected_);
      if (it != convs_.end() && it->second.chat_state == "composing") head += " (typing...)";
      if (scroll_ > 0) head += "  [older lines: PageDown for newer]";
      put(0, cx, head, cw, A_BOLD);
      if (it != convs_.end()) {
        // Wrap, then show the last lines that fit.
        std::vector<std::pair<std::wstring, bool>> wrapped;
        for (const auto& l : it->second.lines) {
          std::wstring w = widen("[" + l.time + "] " + (l.who.empty() ? "-- " : l.who + ": ") +
                                 l.text + (l.delivered ? " ✓" : "") +
                                 (l.failed.empty() ? "" : "  (not delivered: " + l.failed + ")"));
          for (std::size_t i = 0; i < w.size() || i == 0; i += std::max(1, cw)) {
            wrapped.emplace_back(w.substr(i, std::max(1, cw)), l.who == "me");
            if (w.empty()) break;
          }
        }
        int avail = rows - 3;
        page_ = std::max(1, avail - 1);
        // PageUp/PageDown: `scroll_` wrapped lines up from the newest, at most to the oldest.
        const int total = static_cast<int>(wrapped.size());
        scroll_ = std::clamp(scroll_, 0, std::max(0, total - avail));
        int end = total - scroll_;
        int start = std::max(0, end - avail);
        int row = 1;
        for (std::size_t i = start; i < static_cast<std::size_t>(end); ++i, ++row) {
          attr_t a = wrapped[i].second && has_colors() ? COLOR_PAIR(3) : A_NORMAL;
          attron(a);
          mvaddnwstr(row, cx, wrapped[i].first.c_str(), static_cast<int>(wrapped[i].first.size()));
          attroff(a);
        }
      }
    } else {
      put(0, cx, "No conversation: Tab picks a contact, /to JID opens one", cw, A_DIM);
    }
    // Status and input.
    mvhline(rows - 2, 0, ACS_HLINE, cols);
    const std::string call = call_status();
    put(rows - 2, 1,
        " " + (call.empty() ? "" : "[" + call + "] ") + status_ +
            " | Tab: next contact  /help  /quit ",
        cols - 2, A_DIM);
    std::wstring prompt = L"> ";
    int iw = cols - static_cast<int>(prompt.size()) - 1;
    std::size_t off = cursor_ > static_cast<std::size_t>(std::max(1, iw))
                          ? cursor_ - static_cast<std::size_t>(iw)
                          : 0;
    std::wstring shown = input_.substr(off, std::max(0, iw));
    mvaddnwstr(rows - 1, 0, prompt.c_str(), static_cast<int>(prompt.size()));
    mvaddnwstr(rows - 1, static_cast<int>(prompt.size()), shown.c_str(),
               static_cast<int>(shown.size()));
    move(rows - 1, static_cast<int>(prompt.size() + (cursor_ - off)));
    refresh();
  }

  asio::io_context& io_;
  // For handlers that may outlive this (call_clock_'s, the media engine's warnings); before
  // calls_, whose factory holds it.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::string account_;  // the JID as configured: names the account's files
  client::Client client_;
  client::FileTransfer ft_;  // after client_: it registers handlers on it
  client::Calls calls_;      // likewise
  CallWatch call_stats_;     // after calls_
  asio::steady_timer call_clock_;
  CallFlags call_flags_;
  std::string call_id_;  // the call in the status line (one at a time)
  bool call_starting_ = false;
  std::chrono::steady_clock::time_point call_active_since_;
  std::string accept_dir_;
  std::vector<client::FileOffer> offers_;  // waiting for /accept or /decline
  std::chrono::steady_clock::time_point transfer_start_, last_progress_;
  asio::posix::stream_descriptor input_fd_;
  asio::signal_set signals_;
  bool screen_ = false;
  bool quit_ = false;
  bool show_help_ = false;
  int scroll_ = 0;  // wrapped lines above the newest (PageUp)
  int page_ = 10;   // how far PageUp/PageDown move: the conversation pane's height
  History history_;
  static constexpr int kHistoryLines = 1000;    // loaded when a conversation opens
  static constexpr std::size_t kGapPage = 100;  // archive messages per query
  static constexpr int kGapPages = 10;          // at most so many pages per gap
  static constexpr std::int64_t kGapSlackMs = 5 * 60 * 1000;

 public:
 private:
  bool interrupt_armed_ = false;  // Ctrl-C kept a half-typed line once
  std::string my_show_, my_status_;
  std::string selected_;
  std::string status_;
  std::map<std::string, Conversation> convs_;
  std::wstring input_;
  std::size_t cursor_ = 0;
};

}  // namespace

awaitable<int> chat_main(asio::io_context& io, client::Options options, std::string accept_dir,
                         CallFlags call) {
  if (!::isatty(0) || !::isatty(1)) co_return fail(kExitUsage, "kabar chat needs a terminal");
  if (std::string e = call.check(); !e.empty()) co_return fail(kExitUsage, e);
  auto ui =
      std::make_shared<ChatUi>(io, std::move(options), std::move(accept_dir), std::move(call));
  asio::signal_set stop(io, SIGINT, SIGTERM);
  // SIGINT (kill -INT; the Ctrl-C key is read as a key) keeps a half-typed line once; SIGTERM
  // quits.
  std::function<void()> arm = [&stop, &arm, ui]() {
    stop.async_wait([&arm, ui](boost::system::error_code ec, int sig) {
      if (ec) return;
      if (sig == SIGINT)
        ui->interrupt();
      else
        ui->quit();
      if (!ui->quitting()) arm();
    });
  };
  arm();
  int r = co_await ui->run();
  stop.cancel();
  co_return r;
}

}  // namespace kabar::cli
