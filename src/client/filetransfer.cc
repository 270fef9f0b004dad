#include "kabar/filetransfer.h"

#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <deque>
#include <map>
#include <set>

#include "xmpp/jid.h"
#include "xmpp/jingle.h"
#include "xmpp/namespaces.h"
#include "xmpp/scram.h"
#include "xmpp/socks5.h"
#include "xmpp/stanza.h"

namespace kabar::client {

namespace jingle = xmpp::jingle;
namespace socks5 = xmpp::socks5;
using asio::use_awaitable;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

constexpr std::size_t kChunk = 64 * 1024;
constexpr const char* kHttpUpload = "urn:xmpp:http:upload:0";
constexpr auto kConnectTimeout = std::chrono::seconds(5);
constexpr auto kStepTimeout = std::chrono::seconds(30);

Error err(Errc c, std::string msg) { return Error{c, std::move(msg)}; }

std::string to_hex(std::string_view raw) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char b : raw) {
    out += d[b >> 4];
    out += d[b & 15];
  }
  return out;
}

std::string random_id() { return to_hex(xmpp::random_bytes(8)); }

// Incremental digest: SHA-256 (XEP-0300 sha-256) for Jingle, MD5 for XEP-0096's hash attribute.
class Digest {
 public:
  explicit Digest(const EVP_MD* md) : ctx_(EVP_MD_CTX_new()) {
    EVP_DigestInit_ex(ctx_, md, nullptr);
  }
  ~Digest() { EVP_MD_CTX_free(ctx_); }
  Digest(const Digest&) = delete;
  Digest& operator=(const Digest&) = delete;
  void update(const void* p, std::size_t n) { EVP_DigestUpdate(ctx_, p, n); }
  std::string final() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    return std::string(reinterpret_cast<char*>(md), len);
  }

 private:
  EVP_MD_CTX* ctx_;
};

// SHA-256 and MD5 of the bytes received, in one pass.
struct Hashes {
  Digest sha256{EVP_sha256()};
  Digest md5{EVP_md5()};
  void update(const void* p, std::size_t n) {
    sha256.update(p, n);
    md5.update(p, n);
  }
};

// A file descriptor closed on scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

bool write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

// The IPv4 addresses of this host's interfaces that are up; loopback last.
std::vector<std::string> local_addresses() {
  std::vector<std::string> out, loop;
  ifaddrs* ifs = nullptr;
  if (::getifaddrs(&ifs) != 0) return out;
  for (ifaddrs* i = ifs; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP)) continue;
    auto* sin = reinterpret_cast<sockaddr_in*>(i->ifa_addr);
    asio::ip::address_v4 a(ntohl(sin->sin_addr.s_addr));
    (a.is_loopback() ? loop : out).push_back(a.to_string());
  }
  ::freeifaddrs(ifs);
  out.insert(out.end(), loop.begin(), loop.end());
  return out;
}

// Closes `s` when the timer fires: the bound on one connect or handshake.
struct Watchdog {
  asio::steady_timer timer;
  Watchdog(asio::io_context& io, tcp::socket& s, std::chrono::steady_clock::duration d)
      : timer(io, d) {
    timer.async_wait([&s](error_code e) {
      error_code ig;
      if (!e) s.close(ig);
    });
  }
  ~Watchdog() { timer.cancel(); }
};

awaitable<bool> read_exact(tcp::socket& s, char* p, std::size_t n) {
  error_code ec;
  co_await asio::async_read(s, asio::buffer(p, n), asio::redirect_error(use_awaitable, ec));
  co_return !ec;
}

awaitable<bool> write_exact(tcp::socket& s, const std::string& data) {
  error_code ec;
  co_await asio::async_write(s, asio::buffer(data), asio::redirect_error(use_awaitable, ec));
  co_return !ec;
}

// Reads a SOCKS5 request or reply (same layout) byte-exactly, so no payload is consumed.
awaitable<std::optional<socks5::Request>> read_socks_message(tcp::socket& s) {
  std::string buf(5, '\0');
  if (!co_await read_exact(s, buf.data(), 5)) co_return std::nullopt;
  std::size_t rest = 0;
  switch (static_cast<unsigned char>(buf[3])) {
    case 1:
      rest = 4 - 1 + 2;
      break;
    case 3:
      rest = static_cast<unsigned char>(buf[4]) + 2;
      break;
    case 4:
      rest = 16 - 1 + 2;
      break;
    default:
      co_return std::nullopt;
  }
  buf.resize(5 + rest);
  if (!co_await read_exact(s, buf.data() + 5, rest)) co_return std::nullopt;
  socks5::Request r;
  std::size_t used = 0;
  if (socks5::parse_request(buf, r, used) != socks5::Parse::kDone) co_return std::nullopt;
  co_return r;
}

// XEP-0065 §5.3.2 / §6.3.2: the client side of the SOCKS5 handshake to a streamhost.
awaitable<bool> socks5_client(tcp::socket& s, const std::string& dst) {
  if (!co_await write_exact(s, std::string(socks5::kClientGreeting))) co_return false;
  char m[2];
  if (!co_await read_exact(s, m, 2)) co_return false;
  bool no_auth = false;
  std::size_t used = 0;
  if (socks5::parse_method_reply(std::string_view(m, 2), no_auth, used) != socks5::Parse::kDone ||
      !no_auth)
    co_return false;
  if (!co_await write_exact(s, socks5::encode_request(dst, 0))) co_return false;
  auto reply = co_await read_socks_message(s);
  co_return reply && reply->command == socks5::kSucceeded;
}

// The server side, on our own listener (we are the streamhost for direct candidates).
awaitable<bool> socks5_server(tcp::socket& s, const std::string& expected_dst) {
  char g[2];
  if (!co_await read_exact(s, g, 2)) co_return false;
  std::string methods(static_cast<unsigned char>(g[1]), '\0');
  if (!methods.empty() && !co_await read_exact(s, methods.data(), methods.size())) co_return false;
  socks5::Greeting greeting;
  std::size_t used = 0;
  if (socks5::parse_greeting(std::string(g, 2) + methods, greeting, used) != socks5::Parse::kDone ||
      !greeting.no_auth) {
    co_await write_exact(s, std::string("\x05\xff", 2));
    co_return false;
  }
  if (!co_await write_exact(s, std::string("\x05\x00", 2))) co_return false;
  auto req = co_await read_socks_message(s);
  if (!req) co_return false;
  if (req->command != 1 || req->address_type != 3 || req->host != expected_dst) {
    co_await write_exact(s, socks5::encode_reply(socks5::kNotAllowed, {}, 0));
    co_return false;
  }
  co_return co_await write_exact(s, socks5::encode_reply(socks5::kSucceeded, req->host, 0));
}

// ---- HTTP PUT for XEP-0363 ----

struct Url {
  bool tls = false;
  std::string host;
  std::string port;
  std::string target;  // path and query
};

std::optional<Url> parse_url(std::string_view u) {
  Url out;
  if (u.rfind("https://", 0) == 0) {
    out.tls = true;
    u.remove_prefix(8);
  } else if (u.rfind("http://", 0) == 0) {
    u.remove_prefix(7);
  } else {
    return std::nullopt;
  }
  auto slash = u.find('/');
  std::string_view authority = u.substr(0, slash);
  out.target = slash == std::string_view::npos ? "/" : std::string(u.substr(slash));
  if (authority.empty() || authority.find('@') != std::string_view::npos) return std::nullopt;
  if (authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    out.host = std::string(authority.substr(1, close - 1));
    if (close + 1 < authority.size() && authority[close + 1] == ':')
      out.port = std::string(authority.substr(close + 2));
  } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    out.host = std::string(authority.substr(0, colon));
    out.port = std::string(authority.substr(colon + 1));
  } else {
    out.host = std::string(authority);
  }
  if (out.port.empty()) out.port = out.tls ? "443" : "80";
  for (char c : out.target + out.host + out.port)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return std::nullopt;
  return out;
}

std::string media_type_of(const std::string& name) {
  auto dot = name.rfind('.');
  std::string ext = dot == std::string::npos ? "" : name.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  static const std::map<std::string, std::string> types = {
      {"jpg", "image/jpeg"},  {"jpeg", "image/jpeg"}, {"png", "image/png"},
      {"gif", "image/gif"},   {"webp", "image/webp"}, {"mp4", "video/mp4"},
      {"webm", "video/webm"}, {"mp3", "audio/mpeg"},  {"ogg", "audio/ogg"},
      {"opus", "audio/ogg"},  {"m4a", "audio/mp4"},   {"pdf", "application/pdf"},
      {"txt", "text/plain"}};
  auto it = types.find(ext);
  return it == types.end() ? "application/octet-stream" : it->second;
}

// Sends the request head and the file, then reads the status line. Works on a plain socket and
// on a TLS stream alike.
template <typename Stream>
awaitable<Error> put_over(Stream& stream, std::string head, int fd, std::uint64_t size,
                          const std::function<void(std::uint64_t)>& progress) {
  error_code ec;
  co_await asio::async_write(stream, asio::buffer(head), asio::redirect_error(use_awaitable, ec));
  if (ec) co_return err(Errc::kDisconnected, "the upload connection broke: " + ec.message());
  std::vector<char> buf(kChunk);
  std::uint64_t done = 0;
  while (done < size) {
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, size - done));
    ssize_t n = ::pread(fd, buf.data(), want, static_cast<off_t>(done));
    if (n <= 0) co_return err(Errc::kBadInput, "reading the file failed");
    co_await asio::async_write(stream, asio::buffer(buf.data(), static_cast<std::size_t>(n)),
                               asio::redirect_error(use_awaitable, ec));
    if (ec) co_return err(Errc::kDisconnected, "the upload broke: " + ec.message());
    done += static_cast<std::uint64_t>(n);
    progress(done);
  }
  std::string resp;
  auto dyn = asio::dynamic_buffer(resp, 8192);
  co_await asio::async_read_until(stream, dyn, "\r\n", asio::redirect_error(use_awaitable, ec));
  if (ec && resp.find("\r\n") == std::string::npos)
    co_return err(Errc::kDisconnected, "the upload server did not answer: " + ec.message());
  // "HTTP/1.1 201 Created"
  auto sp = resp.find(' ');
  int status = sp == std::string::npos ? 0 : std::atoi(resp.c_str() + sp + 1);
  if (status != 200 && status != 201)
    co_return err(Errc::kNotAllowed,
                  "the upload server refused the file: " + resp.substr(0, resp.find("\r\n")));
  co_return Error{};
}

}  // namespace

// One Jingle session, sending or receiving. Lives in Impl::sessions while it runs; the coroutine
// that drives it holds a shared_ptr, so it outlives every await in it.
struct Session {
  explicit Session(asio::io_context& io) : signal(io) {}
  std::string sid;
  std::string peer;  // full JID
  std::string initiator, responder;
  bool sending = false;
  std::string content_name = "file";
  jingle::File file;
  std::string s5b_sid, ibb_sid;
  std::deque<jingle::Action> actions;  // received from the peer, acknowledged already
  std::deque<xml::Element> iqs;        // IBB or bytestreams IQs not yet answered
  bool si = false;                     // XEP-0096 stream initiation, not Jingle
  asio::steady_timer signal;           // cancelled when something arrives
  // Sender side: our listener and the connection negotiated on it.
  std::unique_ptr<tcp::acceptor> acceptor;
  std::unique_ptr<tcp::socket> direct;
  tcp::socket* reading = nullptr;
  std::optional<bool> decision;  // receiving: the user's answer to an offer (OfferDecision::kAsk)
                                 // // receiving: the bytestream being read (closed on terminate)
  std::string direct_dst;
  int accepted = 0;
  bool closed = false;

  void notify() { signal.cancel(); }
};
using SessionPtr = std::shared_ptr<Session>;

struct FileTransfer::Impl : std::enable_shared_from_this<Impl> {
  Impl(FileTransfer& o, Client& c) : owner(&o), client(&c), io(c.io_context()) {}
  FileTransfer* owner;
  Client* client;
  asio::io_context& io;
  std::map<std::string, SessionPtr> sessions;  // by Jingle sid
  std::optional<jingle::Candidate> proxy;      // discovered once
  std::set<std::string> parts_in_use;          // resumable .part files of running sessions
  bool proxy_looked_up = false;
  std::vector<HandlerToken> handler_tokens;  // our registrations on the client

  std::string me() const { return client->bound_jid(); }

  void progress(const Session& s, std::uint64_t done) {
    if (owner && owner->on_progress) owner->on_progress(s.sid, done, s.file.size);
  }

  // ---- stanzas in ----

  // Claims a Jingle IQ that belongs to a file transfer: a session-initiate offering a file
  // (an XEP-0234 description), or an action on one of our sessions from its peer. Anything else
  // is left to the session's other Jingle handlers (calls), or to its unknown-session answer.
  bool on_jingle_iq(const xml::Element& iq) {
    const xml::Element* j = iq.first_child();
    bool ours = false;
    if (j->attr("action") == "session-initiate") {
      const xml::Element* c = j->child("content", jingle::kJingle);
      ours = c && c->child("description", jingle::kFileTransfer);
    } else {
      auto known = sessions.find(std::string(j->attr("sid")));
      ours =
          known != sessions.end() && !known->second->si && known->second->peer == iq.attr("from");
    }
    if (!ours) return false;
    handle_jingle_iq(iq);
    return true;
  }

  void handle_jingle_iq(const xml::Element& iq) {
    if (iq.attr("type") != "set") {
      client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "bad-request"));
      return;
    }
    std::string why;
    auto a = jingle::parse(*iq.first_child(), why);
    if (!a) {
      client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request", why));
      return;
    }
    std::string from(iq.attr("from"));
    auto it = sessions.find(a->sid);
    if (a->action == "session-initiate") {
      if (it != sessions.end()) {
        client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "conflict"));
        return;
      }
      client->send_stanza(xmpp::make_iq_result(iq));
      start_receiving(from, std::move(*a));
      return;
    }
    if (it == sessions.end() || it->second->peer != from) {
      // XEP-0166 §7.2.1 (unknown-session)
      xml::Element e = xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "item-not-found");
      if (xml::Element* er = e.child("error"))
        er->add_child("unknown-session", "urn:xmpp:jingle:errors:1");
      client->send_stanza(e);
      return;
    }
    client->send_stanza(xmpp::make_iq_result(iq));
    if (a->action == "session-terminate" && it->second->reading) {
      // The sender gave up on this stream: stop waiting for its bytes.
      error_code ig;
      it->second->reading->close(ig);
    }
    it->second->actions.push_back(std::move(*a));
    it->second->notify();
  }

  void on_ibb_iq(const xml::Element& iq) {
    const xml::Element* q = iq.first_child();
    std::string sid(q->attr("sid"));
    std::string from(iq.attr("from"));
    for (auto& [id, s] : sessions) {
      if (!s->sending && s->ibb_sid == sid && s->peer == from && iq.attr("type") == "set") {
        if (s->iqs.size() > 64) break;  // a sender ignoring our acks
        s->iqs.push_back(iq);
        s->notify();
        return;
      }
    }
    client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "item-not-found"));
  }

  // Waits until the session has something queued or `until` passes; false on timeout.
  awaitable<bool> wait(Session& s, std::chrono::steady_clock::time_point until) {
    while (s.actions.empty() && s.iqs.empty() && !s.closed && !s.decision) {
      if (std::chrono::steady_clock::now() >= until) co_return false;
      s.signal.expires_at(until);
      error_code ec;
      co_await s.signal.async_wait(asio::redirect_error(use_awaitable, ec));
      if (!client->connected()) co_return false;
    }
    co_return true;
  }

  // The next Jingle action, or nullopt on timeout.
  awaitable<std::optional<jingle::Action>> next_action(Session& s, std::chrono::seconds timeout) {
    auto until = std::chrono::steady_clock::now() + timeout;
    while (true) {
      if (!s.actions.empty()) {
        jingle::Action a = std::move(s.actions.front());
        s.actions.pop_front();
        co_return a;
      }
      if (!s.iqs.empty()) {
        // IBB before the transport was replaced: refuse it.
        client->send_stanza(
            xmpp::make_error_reply(s.iqs.front(), xmpp::ErrorType::kCancel, "not-acceptable"));
        s.iqs.pop_front();
        continue;
      }
      if (!co_await wait(s, until)) co_return std::nullopt;
    }
  }

  awaitable<std::optional<xml::Element>> send_jingle(const Session& s, const jingle::Action& a) {
    xml::Element iq("iq", "jabber:client");
    iq.set_attr("type", "set").set_attr("to", s.peer);
    iq.add_child(jingle::build(a));
    co_return co_await client->send_iq(std::move(iq));
  }

  jingle::Action action(const Session& s, std::string name) {
    jingle::Action a;
    a.action = std::move(name);
    a.sid = s.sid;
    a.content_name = s.content_name;
    a.creator = "initiator";
    return a;
  }

  void terminate(Session& s, const std::string& reason) {
    jingle::Action a;
    a.action = "session-terminate";
    a.sid = s.sid;
    a.reason = reason;
    xml::Element iq("iq", "jabber:client");
    iq.set_attr("type", "set").set_attr("to", s.peer).set_attr("id", "t" + random_id());
    iq.add_child(jingle::build(a));
    client->send_stanza(iq);
  }

  void end(const SessionPtr& s) {
    s->closed = true;
    error_code ig;
    if (s->acceptor) s->acceptor->close(ig);
    if (s->direct) s->direct->close(ig);
    s->reading = nullptr;
    sessions.erase(s->sid);
  }

  // ---- proxy discovery (XEP-0065 §4) ----

  awaitable<void> discover_proxy() {
    if (proxy_looked_up) co_return;
    proxy_looked_up = true;
    std::string domain;
    if (auto j = xmpp::Jid::parse(me())) domain = j->domain();
    xml::Element items("iq", "jabber:client");
    items.set_attr("type", "get").set_attr("to", domain);
    items.add_child("query", xmpp::ns::kDiscoItems);
    auto r = co_await client->send_iq(std::move(items));
    if (!r || r->attr("type") != "result") co_return;
    std::vector<std::string> jids;
    if (const xml::Element* q = r->child("query", xmpp::ns::kDiscoItems))
      for (const xml::Element* i : q->children("item")) jids.emplace_back(i->attr("jid"));
    if (jids.size() > 32) jids.resize(32);
    for (const std::string& jid : jids) {
      xml::Element info("iq", "jabber:client");
      info.set_attr("type", "get").set_attr("to", jid);
      info.add_child("query", xmpp::ns::kDiscoInfo);
      auto ir = co_await client->send_iq(std::move(info));
      if (!ir || ir->attr("type") != "result") continue;
      const xml::Element* q = ir->child("query", xmpp::ns::kDiscoInfo);
      bool is_proxy = false;
      if (q)
        for (const xml::Element* id : q->children("identity"))
          if (id->attr("category") == "proxy" && id->attr("type") == "bytestreams") is_proxy = true;
      if (!is_proxy) continue;
      xml::Element sh("iq", "jabber:client");
      sh.set_attr("type", "get").set_attr("to", jid);
      sh.add_child("query", jingle::kBytestreams);
      auto sr = co_await client->send_iq(std::move(sh));
      if (!sr || sr->attr("type") != "result") continue;
      const xml::Element* sq = sr->child("query", jingle::kBytestreams);
      const xml::Element* host = sq ? sq->child("streamhost", jingle::kBytestreams) : nullptr;
      if (!host) continue;
      unsigned long port = std::strtoul(std::string(host->attr("port")).c_str(), nullptr, 10);
      if (port == 0 || port > 65535 || host->attr("host").empty()) continue;
      jingle::Candidate c;
      c.cid = "p" + random_id();
      c.host = std::string(host->attr("host"));
      c.port = static_cast<std::uint16_t>(port);
      c.jid = host->has_attr("jid") ? std::string(host->attr("jid")) : jid;
      c.type = "proxy";
      c.priority = jingle::candidate_priority("proxy", 0);
      proxy = c;
      co_return;
    }
  }

  // ---- sending ----

  awaitable<void> accept_loop(SessionPtr s) {
    while (s->acceptor && s->acceptor->is_open() && !s->closed) {
      tcp::socket sock(io);
      error_code ec;
      co_await s->acceptor->async_accept(sock, asio::redirect_error(use_awaitable, ec));
      if (ec) co_return;
      if (++s->accepted > 16 || s->direct) continue;  // bound what strangers can make us do
      auto p = std::make_unique<tcp::socket>(std::move(sock));
      bool ok = false;
      {
        Watchdog w(io, *p, kConnectTimeout);
        ok = co_await socks5_server(*p, s->direct_dst);
      }
      if (ok && !s->direct && !s->closed) {
        s->direct = std::move(p);
        s->notify();
      }
    }
  }

  awaitable<Error> stream_file(SessionPtr s, tcp::socket& sock, int fd, std::uint64_t offset) {
    std::vector<char> buf(kChunk);
    std::uint64_t done = offset;
    progress(*s, done);
    while (done < s->file.size) {
      std::size_t want =
          static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, s->file.size - done));
      ssize_t n = ::pread(fd, buf.data(), want, static_cast<off_t>(done));
      if (n <= 0) co_return err(Errc::kBadInput, "reading the file failed");
      error_code ec;
      co_await asio::async_write(sock, asio::buffer(buf.data(), static_cast<std::size_t>(n)),
                                 asio::redirect_error(use_awaitable, ec));
      if (ec) co_return err(Errc::kDisconnected, "the bytestream broke: " + ec.message());
      done += static_cast<std::uint64_t>(n);
      progress(*s, done);
    }
    co_return Error{};
  }

  awaitable<Error> send_ibb(SessionPtr s, int fd, std::uint32_t block, std::uint64_t offset = 0) {
    xml::Element open("iq", "jabber:client");
    open.set_attr("type", "set").set_attr("to", s->peer);
    open.add_child("open", jingle::kIbb)
        .set_attr("sid", s->ibb_sid)
        .set_attr("block-size", std::to_string(block))
        .set_attr("stanza", "iq");
    auto r = co_await client->send_iq(std::move(open));
    if (std::string c = Client::iq_condition(r); !c.empty())
      co_return err(Errc::kNotAllowed, "the contact refused the in-band bytestream (" + c + ")");
    std::vector<char> buf(block);
    std::uint64_t done = offset;
    std::uint16_t seq = 0;
    progress(*s, done);
    // One block in flight at a time (XEP-0047 §2.2: wait for each acknowledgement).
    while (done < s->file.size) {
      std::size_t want =
          static_cast<std::size_t>(std::min<std::uint64_t>(block, s->file.size - done));
      ssize_t n = ::pread(fd, buf.data(), want, static_cast<off_t>(done));
      if (n <= 0) co_return err(Errc::kBadInput, "reading the file failed");
      xml::Element data("iq", "jabber:client");
      data.set_attr("type", "set").set_attr("to", s->peer);
      data.add_child("data", jingle::kIbb)
          .set_attr("sid", s->ibb_sid)
          .set_attr("seq", std::to_string(seq++))
          .add_text(xmpp::base64_encode(std::string_view(buf.data(), static_cast<std::size_t>(n))));
      auto dr = co_await client->send_iq(std::move(data));
      if (std::string c = Client::iq_condition(dr); !c.empty())
        co_return err(Errc::kDisconnected, "the in-band bytestream broke (" + c + ")");
      done += static_cast<std::uint64_t>(n);
      progress(*s, done);
    }
    xml::Element close("iq", "jabber:client");
    close.set_attr("type", "set").set_attr("to", s->peer);
    close.add_child("close", jingle::kIbb).set_attr("sid", s->ibb_sid);
    co_await client->send_iq(std::move(close));
    co_return Error{};
  }

  // After the bytes: the receiver checks the hash and ends the session.
  // Once every byte is out, whichever the path: the receiver's verdict (its hash check) is the
  // outcome, recorded in `result` when it is a success.
  awaitable<Error> sent_all(SessionPtr s, TransferResult* result) {
    Error v = co_await wait_for_verdict(s);
    if (!v && result) {
      result->bytes = s->file.size;
      result->hash_checked = true;
    }
    co_return v;
  }

  awaitable<Error> wait_for_verdict(SessionPtr s) {
    // A relay may have taken all our bytes into its memory and still be passing them on (Prosody's
    // mod_proxy65 does): allow the rest to drain at 1 MiB/s before giving up.
    const auto patience = std::chrono::seconds(120 + s->file.size / (1024 * 1024));
    while (true) {
      auto a = co_await next_action(*s, patience);
      if (!a) co_return err(Errc::kTimeout, "the contact did not confirm the file");
      if (a->action != "session-terminate") continue;
      if (a->reason == "success") co_return Error{};
      co_return err(Errc::kProtocol, "the contact ended the transfer: " + a->reason);
    }
  }

  awaitable<Error> send_file(std::string to, std::string path, TransferResult* result) {
    auto self = shared_from_this();
    auto j = xmpp::Jid::parse(to);
    if (!j || j->resource().empty())
      co_return err(Errc::kBadInput, "'" + to + "' is not a full JID (user@domain/resource)");
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st {};
    if (fd.fd < 0 || ::fstat(fd.fd, &st) != 0 || !S_ISREG(st.st_mode))
      co_return err(Errc::kBadInput, "cannot read the file " + path);
    auto s = std::make_shared<Session>(io);
    s->sending = true;
    s->sid = random_id();
    s->peer = j->str();
    s->initiator = me();
    s->responder = s->peer;
    s->s5b_sid = random_id();
    s->ibb_sid = random_id();
    s->file.name = jingle::safe_file_name(path);
    s->file.size = static_cast<std::uint64_t>(st.st_size);
    std::string md5;
    {
      Hashes h;
      std::vector<char> buf(kChunk);
      ssize_t n;
      while ((n = ::read(fd.fd, buf.data(), buf.size())) > 0)
        h.update(buf.data(), static_cast<std::size_t>(n));
      if (n < 0) co_return err(Errc::kBadInput, "reading the file failed");
      s->file.sha256 = h.sha256.final();
      md5 = to_hex(h.md5.final());
    }
    if (result) {
      result->peer = s->peer;
      result->path = path;
      result->sha256 = to_hex(s->file.sha256);
    }
    bool use_si = owner->options.protocol == TransferOptions::Protocol::kSi;
    if (owner->options.protocol == TransferOptions::Protocol::kAuto) {
      // XEP-0030: Jingle FT when the contact announces it, else stream initiation if it has that.
      xml::Element info("iq", "jabber:client");
      info.set_attr("type", "get").set_attr("to", s->peer);
      info.add_child("query", xmpp::ns::kDiscoInfo);
      auto r = co_await client->send_iq(std::move(info));
      bool jft = false, sift = false;
      const xml::Element* q = r ? r->child("query", xmpp::ns::kDiscoInfo) : nullptr;
      if (q)
        for (const xml::Element* f : q->children("feature")) {
          if (f->attr("var") == jingle::kFileTransfer) jft = true;
          if (f->attr("var") == jingle::kSiFileTransfer) sift = true;
        }
      use_si = !jft && sift;
    }
    if (result) result->protocol = use_si ? "si" : "jingle";
    sessions[s->sid] = s;
    // Not one ?: expression: GCC 12 mishandles co_await in a conditional operator.
    Error e;
    if (use_si) {
      e = co_await run_si_sender(s, fd.fd, md5, result);
      end(s);
    } else {
      // A transfer broken off is offered again while we are online; the receiver answers with the
      // offset it has (XEP-0234 §8), so only the rest travels.
      const int attempts = std::max(1, owner->options.resume_attempts + 1);
      for (int i = 0; i < attempts; ++i) {
        if (i > 0) {
          auto next = std::make_shared<Session>(io);
          next->sending = true;
          next->sid = random_id();
          next->peer = s->peer;
          next->initiator = me();
          next->responder = s->peer;
          next->s5b_sid = random_id();
          next->ibb_sid = random_id();
          next->file = s->file;
          s = next;
          sessions[s->sid] = s;
          if (result) ++result->attempts;
        }
        e = co_await run_sender(s, fd.fd, result);
        end(s);
        if (e.code != Errc::kDisconnected || !client->connected() || i + 1 == attempts) break;
        asio::steady_timer t(io, std::chrono::seconds(1));
        error_code ig;
        co_await t.async_wait(asio::redirect_error(use_awaitable, ig));
        if (!client->connected()) break;
      }
    }
    if (result) result->error = e;
    co_return e;
  }

  awaitable<Error> run_sender(SessionPtr s, int fd, TransferResult* result) {
    const TransferOptions opts = owner->options;  // the owner may go while we await
    std::vector<jingle::Candidate> candidates;
    s->direct_dst = jingle::socks5_dst(s->s5b_sid, s->initiator, s->responder);
    if (opts.direct) {
      error_code ec;
      auto acc = std::make_unique<tcp::acceptor>(io);
      acc->open(tcp::v4(), ec);
      if (!ec) acc->bind(tcp::endpoint(tcp::v4(), 0), ec);
      if (!ec) acc->listen(8, ec);
      if (!ec) {
        std::uint16_t port = acc->local_endpoint(ec).port();
        s->acceptor = std::move(acc);
        std::uint16_t pref = 65535;
        for (const std::string& a : local_addresses()) {
          jingle::Candidate c;
          c.cid = "d" + random_id();
          c.host = a;
          c.port = port;
          c.jid = s->initiator;
          c.type = "direct";
          c.priority = jingle::candidate_priority("direct", pref--);
          candidates.push_back(c);
        }
        asio::co_spawn(io, accept_loop(s), asio::detached);
      }
    }
    if (opts.proxy) {
      co_await discover_proxy();
      if (proxy) candidates.push_back(*proxy);
    }
    jingle::Action init = action(*s, "session-initiate");
    init.initiator = s->initiator;
    init.file = s->file;
    init.file->range_offset = 0;  // XEP-0234 §8: we can send from an offset (resume)
    init.transport.kind = jingle::Transport::Kind::kS5b;
    init.transport.sid = s->s5b_sid;
    init.transport.dstaddr = s->direct_dst;
    init.transport.candidates = candidates;
    auto r = co_await send_jingle(*s, init);
    if (std::string c = Client::iq_condition(r); !c.empty())
      co_return err(c == "timeout" ? Errc::kTimeout : Errc::kNotFound,
                    "the contact did not take the offer (" + c + ")");
    // Wait for the answer.
    auto accepted = co_await next_action(*s, opts.accept_timeout);
    if (!accepted) {
      terminate(*s, "timeout");
      co_return err(Errc::kTimeout, "the contact did not accept the file in time");
    }
    if (accepted->action == "session-terminate")
      co_return err(Errc::kNotAllowed, "the contact declined the file (" + accepted->reason + ")");
    if (accepted->action != "session-accept") {
      terminate(*s, "failed-application");
      co_return err(Errc::kProtocol, "unexpected " + accepted->action + " from the contact");
    }
    // XEP-0234 §8: the receiver already has the first `offset` bytes (an earlier, broken
    // transfer) and asks for the rest.
    std::uint64_t offset = 0;
    if (accepted->file && accepted->file->range_offset) {
      if (*accepted->file->range_offset > s->file.size) {
        terminate(*s, "failed-application");
        co_return err(Errc::kProtocol, "the contact asked for a range past the end of the file");
      }
      offset = *accepted->file->range_offset;
    }
    if (result) result->resumed_from = offset;
    // We do not try the responder's candidates (ours are enough, and a proxy covers the rest):
    // XEP-0260 §2.3 lets us say so with candidate-error.
    {
      jingle::Action ce = action(*s, "transport-info");
      ce.transport.kind = jingle::Transport::Kind::kS5b;
      ce.transport.sid = s->s5b_sid;
      ce.transport.candidate_error = true;
      co_await send_jingle(*s, ce);
    }
    std::string used;
    bool their_error = false;
    while (used.empty() && !their_error) {
      auto a = co_await next_action(*s, kStepTimeout);
      if (!a) {
        terminate(*s, "timeout");
        co_return err(Errc::kTimeout, "the contact did not report on the candidates");
      }
      if (a->action == "session-terminate")
        co_return err(Errc::kNotAllowed, "the contact ended the transfer (" + a->reason + ")");
      if (a->action != "transport-info") continue;
      if (!a->transport.candidate_used.empty()) used = a->transport.candidate_used;
      if (a->transport.candidate_error) their_error = true;
    }
    if (!used.empty()) {
      auto c = std::find_if(candidates.begin(), candidates.end(),
                            [&](const jingle::Candidate& x) { return x.cid == used; });
      if (c == candidates.end()) {
        terminate(*s, "failed-transport");
        co_return err(Errc::kProtocol, "the contact used a candidate we did not offer");
      }
      std::unique_ptr<tcp::socket> sock;
      std::string kind;
      if (c->type == "proxy") {
        kind = "s5b-proxy";
        sock = co_await connect_streamhost(*c, s->direct_dst);
        bool activated = false;
        if (sock) {
          xml::Element act("iq", "jabber:client");
          act.set_attr("type", "set").set_attr("to", c->jid);
          act.add_child("query", jingle::kBytestreams)
              .set_attr("sid", s->s5b_sid)
              .add_child("activate", jingle::kBytestreams)
              .add_text(s->responder);
          auto ar = co_await client->send_iq(std::move(act));
          activated = Client::iq_condition(ar).empty();
        }
        jingle::Action info = action(*s, "transport-info");
        info.transport.kind = jingle::Transport::Kind::kS5b;
        info.transport.sid = s->s5b_sid;
        if (activated)
          info.transport.activated = c->cid;
        else
          info.transport.proxy_error = true;
        co_await send_jingle(*s, info);
        if (!activated) sock.reset();
      } else {
        kind = "s5b-direct";
        auto until = std::chrono::steady_clock::now() + kConnectTimeout;
        while (!s->direct && std::chrono::steady_clock::now() < until) {
          s->signal.expires_at(until);
          error_code ec;
          co_await s->signal.async_wait(asio::redirect_error(use_awaitable, ec));
        }
        sock = std::move(s->direct);
      }
      if (sock) {
        if (result) result->transport = kind;
        Error e = co_await stream_file(s, *sock, fd, offset);
        if (e) {
          terminate(*s, "connectivity-error");
          co_return e;
        }
        co_return co_await sent_all(s, result);
      }
    }
    // No SOCKS5 path: XEP-0260 §2.5 fallback, transport-replace to in-band bytestreams.
    if (!opts.ibb) {
      terminate(*s, "connectivity-error");
      co_return err(Errc::kUnreachable, "no SOCKS5 candidate worked and in-band transfer is off");
    }
    jingle::Action rep = action(*s, "transport-replace");
    rep.transport.kind = jingle::Transport::Kind::kIbb;
    rep.transport.sid = s->ibb_sid;
    rep.transport.block_size = std::clamp<std::uint32_t>(opts.ibb_block_size, 1, 65535);
    auto rr = co_await send_jingle(*s, rep);
    if (std::string c = Client::iq_condition(rr); !c.empty()) {
      terminate(*s, "failed-transport");
      co_return err(Errc::kNotAllowed, "the contact refused the in-band fallback (" + c + ")");
    }
    std::uint32_t block = rep.transport.block_size;
    while (true) {
      auto a = co_await next_action(*s, kStepTimeout);
      if (!a) {
        terminate(*s, "timeout");
        co_return err(Errc::kTimeout, "the contact did not accept the in-band fallback");
      }
      if (a->action == "session-terminate")
        co_return err(Errc::kNotAllowed, "the contact ended the transfer (" + a->reason + ")");
      if (a->action == "transport-reject") {
        terminate(*s, "failed-transport");
        co_return err(Errc::kNotAllowed, "the contact rejected the in-band fallback");
      }
      if (a->action == "transport-accept") {
        // XEP-0261 §2: the responder may ask for smaller blocks.
        if (a->transport.kind == jingle::Transport::Kind::kIbb && a->transport.block_size > 0)
          block = std::min(block, a->transport.block_size);
        break;
      }
    }
    if (result) result->transport = "ibb";
    if (Error e = co_await send_ibb(s, fd, block, offset)) {
      terminate(*s, "connectivity-error");
      co_return e;
    }
    co_return co_await sent_all(s, result);
  }

  awaitable<std::unique_ptr<tcp::socket>> connect_streamhost(const jingle::Candidate& c,
                                                             std::string dst) {
    error_code ec;
    auto addr = asio::ip::make_address(c.host, ec);
    std::vector<tcp::endpoint> eps;
    if (!ec) {
      eps.emplace_back(addr, c.port);
    } else {
      tcp::resolver resolver(io);
      auto res = co_await resolver.async_resolve(c.host, std::to_string(c.port),
                                                 asio::redirect_error(use_awaitable, ec));
      if (ec) co_return nullptr;
      for (const auto& e : res) eps.push_back(e.endpoint());
    }
    auto sock = std::make_unique<tcp::socket>(io);
    Watchdog w(io, *sock, kConnectTimeout);
    co_await asio::async_connect(*sock, eps, asio::redirect_error(use_awaitable, ec));
    if (ec) co_return nullptr;
    if (!co_await socks5_client(*sock, dst)) co_return nullptr;
    co_return sock;
  }

  // ---- receiving ----

  void start_receiving(const std::string& from, jingle::Action a) {
    auto s = std::make_shared<Session>(io);
    s->sid = a.sid;
    s->peer = from;
    s->initiator = a.initiator.empty() ? from : a.initiator;
    s->responder = me();
    s->content_name = a.content_name.empty() ? "file" : a.content_name;
    sessions[s->sid] = s;
    asio::co_spawn(io, receive(shared_from_this(), s, std::move(a)), asio::detached);
  }

  // A file name in `dir` that does not exist yet: name, then "name (1).ext", ...
  static std::string unused_path(const std::string& dir, const std::string& name) {
    std::string stem = name, ext;
    if (auto dot = name.rfind('.'); dot != std::string::npos && dot > 0) {
      stem = name.substr(0, dot);
      ext = name.substr(dot);
    }
    for (int i = 0; i < 1000; ++i) {
      std::string p = dir + "/" + (i == 0 ? name : stem + " (" + std::to_string(i) + ")" + ext);
      struct stat st {};
      if (::lstat(p.c_str(), &st) != 0) return p;
    }
    return {};
  }

  awaitable<void> receive(std::shared_ptr<Impl> self, SessionPtr s, jingle::Action init) {
    TransferResult res;
    res.peer = s->peer;
    res.protocol = "jingle";
    res.error = co_await run_receiver(s, std::move(init), res);
    end(s);
    if (owner && owner->on_received) owner->on_received(res);
  }

  // Whether to take an offer: nullopt to accept, else why not. With OfferDecision::kAsk the
  // answer comes later through decide(), or the offer times out.
  awaitable<std::optional<std::string>> decide_offer(SessionPtr s, FileOffer offer) {
    std::string declined = "declined " + offer.safe_name + " from " + s->peer;
    if (!owner || owner->accept_dir.empty()) co_return declined;
    if (owner->max_size && offer.size > owner->max_size)
      co_return declined + ": " + std::to_string(offer.size) + " bytes is over the limit";
    auto d = owner->on_offer ? owner->on_offer(offer) : OfferDecision::kAccept;
    if (d == OfferDecision::kAccept) co_return std::nullopt;
    if (d == OfferDecision::kDecline) co_return declined;
    auto until = std::chrono::steady_clock::now() + owner->options.accept_timeout;
    while (!s->decision) {
      if (!s->actions.empty()) {
        jingle::Action a = std::move(s->actions.front());
        s->actions.pop_front();
        if (a.action == "session-terminate")
          co_return s->peer + " withdrew the offer of " + offer.safe_name;
        continue;
      }
      if (!co_await wait(*s, until)) co_return declined + " (no answer in time)";
    }
    if (*s->decision) co_return std::nullopt;
    co_return declined;
  }

  awaitable<Error> run_receiver(SessionPtr s, jingle::Action init, TransferResult& res) {
    if (!init.file || init.transport.kind == jingle::Transport::Kind::kNone) {
      terminate(*s, "unsupported-applications");
      co_return err(Errc::kProtocol, "an offer from " + s->peer + " that is not a file transfer");
    }
    s->file = *init.file;
    if (!owner) co_return err(Errc::kDisconnected, "file transfer stopped");
    const std::string dir = owner->accept_dir;  // the owner may go while we await
    FileOffer offer;
    offer.from = s->peer;
    offer.sid = s->sid;
    offer.name = s->file.name;
    offer.safe_name = jingle::safe_file_name(s->file.name);
    offer.size = s->file.size;
    if (auto why = co_await decide_offer(s, offer)) {
      terminate(*s, "decline");
      co_return err(Errc::kNotAllowed, *why);
    }
    std::string final_path = unused_path(dir, offer.safe_name);
    Hashes hash;
    std::uint64_t got = 0;
    // XEP-0234 §8: a file with a hash can be resumed. Its partial bytes live under a name made
    // from the sender's account and the file's name, size and hash, so only the same file from
    // the same account continues it; the hash at the end checks the whole.
    bool resumable = !s->file.sha256.empty() && init.file->range_offset.has_value();
    std::string part;
    Fd fd;
    if (resumable) {
      Digest k(EVP_sha256());
      std::string id = xmpp::Jid::parse(s->peer) ? xmpp::Jid::parse(s->peer)->bare_str() : s->peer;
      id += '\n' + s->file.name + '\n' + std::to_string(s->file.size) + '\n' + s->file.sha256;
      k.update(id.data(), id.size());
      std::string key = to_hex(k.final()).substr(0, 24);
      part = dir + "/." + offer.safe_name + "." + key + ".part";
      if (!parts_in_use.insert(part).second) {
        resumable = false;  // the same file is arriving in another session right now
      } else {
        fd.fd = ::open(part.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        struct stat st {};
        if (fd.fd >= 0 && ::fstat(fd.fd, &st) == 0 && S_ISREG(st.st_mode) &&
            static_cast<std::uint64_t>(st.st_size) < s->file.size) {
          // The bytes we have count toward the hash.
          std::vector<char> buf(kChunk);
          ssize_t n;
          while (got < static_cast<std::uint64_t>(st.st_size) &&
                 (n = ::read(fd.fd, buf.data(), buf.size())) > 0) {
            hash.update(buf.data(), static_cast<std::size_t>(n));
            got += static_cast<std::uint64_t>(n);
          }
        } else if (fd.fd >= 0 && ::ftruncate(fd.fd, 0) != 0) {
          ::close(fd.fd);
          fd.fd = -1;
        }
        if (fd.fd >= 0 && ::lseek(fd.fd, static_cast<off_t>(got), SEEK_SET) < 0) {
          ::close(fd.fd);
          fd.fd = -1;
        }
      }
    }
    if (!resumable) {
      part = dir + "/." + offer.safe_name + "." + random_id() + ".part";
      fd.fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    }
    struct PartGuard {
      Impl* impl;
      std::string path;
      bool keep = false;  // a resumable part that broke off: kept for the next offer
      ~PartGuard() {
        impl->parts_in_use.erase(path);
        if (!keep) ::unlink(path.c_str());
      }
    } guard{this, part};
    if (final_path.empty() || fd.fd < 0) {
      terminate(*s, "failed-application");
      co_return err(Errc::kBadInput, "cannot create a file in " + dir);
    }
    res.path = final_path;
    res.resumed_from = got;

    jingle::Action acc = action(*s, "session-accept");
    acc.responder = s->responder;
    acc.file = s->file;
    if (resumable)
      acc.file->range_offset = got;
    else
      acc.file->range_offset.reset();
    acc.transport = init.transport;
    acc.transport.candidates.clear();
    if (acc.transport.kind == jingle::Transport::Kind::kIbb) s->ibb_sid = init.transport.sid;
    acc.transport.dstaddr.clear();
    auto r = co_await send_jingle(*s, acc);
    if (std::string c = Client::iq_condition(r); !c.empty())
      co_return err(Errc::kProtocol, "the sender did not take our acceptance (" + c + ")");
    // From here on a break keeps what arrived, when it can be resumed.
    guard.keep = resumable;

    std::unique_ptr<tcp::socket> sock;
    if (init.transport.kind == jingle::Transport::Kind::kS5b) {
      s->s5b_sid = init.transport.sid;
      auto cands = init.transport.candidates;
      std::stable_sort(cands.begin(), cands.end(),
                       [](const auto& a, const auto& b) { return a.priority > b.priority; });
      std::string dst = jingle::socks5_dst(s->s5b_sid, s->initiator, s->responder);
      const jingle::Candidate* chosen = nullptr;
      for (const auto& c : cands) {
        sock = co_await connect_streamhost(c, dst);
        if (sock) {
          chosen = &c;
          break;
        }
      }
      jingle::Action info = action(*s, "transport-info");
      info.transport.kind = jingle::Transport::Kind::kS5b;
      info.transport.sid = s->s5b_sid;
      if (chosen)
        info.transport.candidate_used = chosen->cid;
      else
        info.transport.candidate_error = true;
      co_await send_jingle(*s, info);
      // Until the sender says which pair wins (candidate-error from it: ours), or that the proxy
      // is activated, or replaces the transport.
      bool ready = false;
      while (!ready) {
        auto a = co_await next_action(*s, kStepTimeout);
        if (!a) {
          terminate(*s, "timeout");
          co_return err(Errc::kTimeout, "the sender went quiet");
        }
        if (a->action == "session-terminate")
          co_return err(Errc::kDisconnected, "the sender ended the transfer (" + a->reason + ")");
        if (a->action == "transport-replace") {
          if (a->transport.kind != jingle::Transport::Kind::kIbb) {
            jingle::Action rej = action(*s, "transport-reject");
            co_await send_jingle(*s, rej);
            continue;
          }
          sock.reset();
          s->ibb_sid = a->transport.sid;
          jingle::Action ta = action(*s, "transport-accept");
          ta.transport = a->transport;
          co_await send_jingle(*s, ta);
          break;
        }
        if (a->action != "transport-info") continue;
        if (a->transport.proxy_error) {
          sock.reset();
          continue;  // a transport-replace follows
        }
        if (chosen && chosen->type == "proxy") {
          ready = a->transport.activated == chosen->cid;
        } else if (chosen) {
          ready = a->transport.candidate_error || a->transport.candidate_used.empty();
        }
      }
      if (ready && sock) {
        res.transport = chosen->type == "proxy" ? "s5b-proxy" : "s5b-direct";
        std::vector<char> buf(kChunk);
        progress(*s, got);
        s->reading = sock.get();
        while (got < s->file.size) {
          std::size_t want =
              static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), s->file.size - got));
          error_code ec;
          std::size_t n = co_await sock->async_read_some(asio::buffer(buf.data(), want),
                                                         asio::redirect_error(use_awaitable, ec));
          if (ec) {
            terminate(*s, "connectivity-error");
            co_return err(Errc::kDisconnected, "the bytestream broke after " + std::to_string(got) +
                                                   " bytes: " + ec.message());
          }
          if (!write_all(fd.fd, buf.data(), n)) {
            terminate(*s, "failed-application");
            co_return err(Errc::kBadInput, "writing " + part + " failed");
          }
          hash.update(buf.data(), n);
          got += n;
          progress(*s, got);
        }
        s->reading = nullptr;
      }
    } else {
      s->ibb_sid = init.transport.sid;
    }
    if (!s->ibb_sid.empty() && got < s->file.size) {
      res.transport = "ibb";
      if (Error e = co_await receive_ibb(s, fd.fd, hash, got)) {
        terminate(*s, "connectivity-error");
        co_return e;
      }
    }
    if (got != s->file.size) {
      terminate(*s, "failed-transport");
      co_return err(Errc::kDisconnected, "no transport worked");
    }
    std::string digest = hash.sha256.final();
    res.sha256 = to_hex(digest);
    res.bytes = got;
    if (!s->file.sha256.empty() && digest != s->file.sha256) {
      guard.keep = false;
      terminate(*s, "media-error");
      co_return err(Errc::kProtocol, "the file from " + s->peer + " arrived damaged (SHA-256 " +
                                         res.sha256 + " is not the one offered)");
    }
    res.hash_checked = !s->file.sha256.empty();
    guard.keep = false;  // linked under its final name below, or given up
    // No overwriting: link() fails if a file of that name appeared meanwhile.
    if (::link(part.c_str(), final_path.c_str()) != 0) {
      final_path = unused_path(dir, offer.safe_name);
      if (final_path.empty() || ::link(part.c_str(), final_path.c_str()) != 0) {
        terminate(*s, "failed-application");
        co_return err(Errc::kBadInput, "cannot save the file in " + dir);
      }
      res.path = final_path;
    }
    terminate(*s, "success");
    co_return Error{};
  }

  awaitable<Error> receive_ibb(SessionPtr s, int fd, Hashes& hash, std::uint64_t& got) {
    bool open = false;
    std::uint16_t expect = 0;
    while (true) {
      auto until = std::chrono::steady_clock::now() + kStepTimeout;
      while (s->iqs.empty()) {
        if (!s->actions.empty()) {
          jingle::Action a = std::move(s->actions.front());
          s->actions.pop_front();
          if (a.action == "session-terminate")
            co_return err(Errc::kDisconnected, "the sender ended the transfer (" + a.reason + ")");
          continue;
        }
        if (!co_await wait(*s, until)) co_return err(Errc::kTimeout, "the in-band stream stalled");
      }
      xml::Element iq = std::move(s->iqs.front());
      s->iqs.pop_front();
      const xml::Element* q = iq.first_child();
      if (q->name() == "open") {
        unsigned long bs = std::strtoul(std::string(q->attr("block-size")).c_str(), nullptr, 10);
        if (q->attr("stanza") == "message" || bs == 0 || bs > 65535) {
          client->send_stanza(
              xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "not-acceptable"));
          continue;
        }
        open = true;
        client->send_stanza(xmpp::make_iq_result(iq));
      } else if (q->name() == "data" && open) {
        // XEP-0047 §2.2: seq counts from 0 and wraps at 65535; a gap or a repeat ends the stream.
        unsigned long seq = std::strtoul(std::string(q->attr("seq")).c_str(), nullptr, 10);
        auto raw = xmpp::base64_decode(q->text());
        if (seq != expect || !raw || got + raw->size() > s->file.size) {
          client->send_stanza(
              xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "unexpected-request"));
          co_return err(Errc::kProtocol, "the in-band stream from " + s->peer + " was malformed");
        }
        ++expect;
        if (!write_all(fd, raw->data(), raw->size())) {
          client->send_stanza(
              xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "resource-constraint"));
          co_return err(Errc::kBadInput, "writing the file failed");
        }
        hash.update(raw->data(), raw->size());
        got += raw->size();
        client->send_stanza(xmpp::make_iq_result(iq));
        progress(*s, got);
      } else if (q->name() == "close") {
        client->send_stanza(xmpp::make_iq_result(iq));
        co_return Error{};
      } else {
        client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "item-not-found"));
      }
    }
  }

  // ---- stream initiation (XEP-0095, XEP-0096) ----

  // Bytes from a SOCKS5 bytestream into the file until `size`.
  awaitable<Error> read_stream(SessionPtr s, tcp::socket& sock, int fd, Hashes& hash,
                               std::uint64_t& got) {
    std::vector<char> buf(kChunk);
    progress(*s, got);
    while (got < s->file.size) {
      std::size_t want =
          static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), s->file.size - got));
      error_code ec;
      std::size_t n = co_await sock.async_read_some(asio::buffer(buf.data(), want),
                                                    asio::redirect_error(use_awaitable, ec));
      if (ec)
        co_return err(Errc::kDisconnected, "the bytestream broke after " + std::to_string(got) +
                                               " bytes: " + ec.message());
      if (!write_all(fd, buf.data(), n)) co_return err(Errc::kBadInput, "writing the file failed");
      hash.update(buf.data(), n);
      got += n;
      progress(*s, got);
    }
    co_return Error{};
  }

  void on_bytestreams_iq(const xml::Element& iq) {
    std::string why;
    auto q = jingle::parse_bytestreams(*iq.first_child(), why);
    std::string from(iq.attr("from"));
    if (q && iq.attr("type") == "set") {
      for (auto& [id, s] : sessions) {
        if (s->si && !s->sending && s->s5b_sid == q->sid && s->peer == from && s->iqs.empty()) {
          s->iqs.push_back(iq);
          s->notify();
          return;
        }
      }
    }
    client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "item-not-found"));
  }

  void on_si_iq(const xml::Element& iq) {
    if (iq.attr("type") != "set") {
      client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "bad-request"));
      return;
    }
    std::string why;
    auto offer = jingle::parse_si_offer(*iq.first_child(), why);
    if (!offer) {
      xml::Element e = xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request", why);
      if (xml::Element* er = e.child("error")) er->add_child("bad-profile", jingle::kSi);
      client->send_stanza(e);
      return;
    }
    std::string from(iq.attr("from"));
    // XEP-0095 §3.2: SOCKS5 bytestreams first, in-band as the last resort.
    std::string method;
    for (const char* m : {jingle::kBytestreams, jingle::kIbb})
      if (method.empty() &&
          std::find(offer->methods.begin(), offer->methods.end(), m) != offer->methods.end())
        method = m;
    std::string key = "si/" + from + "/" + offer->sid;
    if (method.empty() || sessions.count(key)) {
      xml::Element e = xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "bad-request");
      if (xml::Element* er = e.child("error")) er->add_child("no-valid-streams", jingle::kSi);
      client->send_stanza(e);
      return;
    }
    FileOffer fo;
    fo.from = from;
    fo.sid = key;
    fo.name = offer->name;
    fo.safe_name = jingle::safe_file_name(offer->name);
    fo.size = offer->size;
    auto s = std::make_shared<Session>(io);
    s->si = true;
    s->sid = key;
    s->peer = from;
    s->initiator = from;
    s->responder = me();
    s->file.name = offer->name;
    s->file.size = offer->size;
    if (method == jingle::kBytestreams)
      s->s5b_sid = offer->sid;
    else
      s->ibb_sid = offer->sid;
    sessions[key] = s;
    asio::co_spawn(io, receive_si(shared_from_this(), s, fo, offer->md5, iq, method),
                   asio::detached);
  }

  awaitable<void> receive_si(std::shared_ptr<Impl> self, SessionPtr s, FileOffer fo,
                             std::string md5, xml::Element iq, std::string method) {
    TransferResult res;
    res.peer = s->peer;
    res.protocol = "si";
    if (auto why = co_await decide_offer(s, fo)) {
      // XEP-0095 §3.2: a declined offer is a forbidden error.
      client->send_stanza(
          xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "forbidden", "Offer declined"));
      res.error = err(Errc::kNotAllowed, *why);
    } else {
      xml::Element r = xmpp::make_iq_result(iq);
      r.add_child(jingle::build_si_accept(method));
      client->send_stanza(r);
      res.error = co_await run_si_receiver(s, fo.safe_name, md5, res);
    }
    end(s);
    if (owner && owner->on_received) owner->on_received(res);
  }

  awaitable<Error> run_si_receiver(SessionPtr s, std::string safe_name, std::string md5,
                                   TransferResult& res) {
    if (!owner) co_return err(Errc::kDisconnected, "file transfer stopped");
    const std::string dir = owner->accept_dir;
    std::string final_path = unused_path(dir, safe_name);
    std::string part = dir + "/." + safe_name + "." + random_id() + ".part";
    Fd fd(final_path.empty() ? -1
                             : ::open(part.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (fd.fd < 0) co_return err(Errc::kBadInput, "cannot create a file in " + dir);
    struct PartGuard {
      std::string path;
      ~PartGuard() {
        if (!path.empty()) ::unlink(path.c_str());
      }
    } guard{part};
    res.path = final_path;
    Hashes hash;
    std::uint64_t got = 0;
    if (!s->s5b_sid.empty()) {
      auto until = std::chrono::steady_clock::now() + kStepTimeout;
      if (!co_await wait(*s, until) || s->iqs.empty())
        co_return err(Errc::kTimeout, "the sender offered no streamhost");
      xml::Element iq = std::move(s->iqs.front());
      s->iqs.pop_front();
      std::string why;
      auto q = jingle::parse_bytestreams(*iq.first_child(), why);
      if (!q) co_return err(Errc::kProtocol, "bad streamhost offer: " + why);
      std::string dst = jingle::socks5_dst(s->s5b_sid, s->initiator, s->responder);
      std::unique_ptr<tcp::socket> sock;
      std::string used;
      for (const auto& h : q->hosts) {
        jingle::Candidate c;
        c.host = h.host;
        c.port = h.port;
        sock = co_await connect_streamhost(c, dst);
        if (sock) {
          used = h.jid;
          break;
        }
      }
      if (!sock) {
        client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "item-not-found"));
        co_return err(Errc::kUnreachable, "no streamhost offered by " + s->peer + " worked");
      }
      xml::Element r = xmpp::make_iq_result(iq);
      r.add_child(jingle::build_bytestreams({s->s5b_sid, {}, used}));
      client->send_stanza(r);
      res.transport = used == s->peer ? "s5b-direct" : "s5b-proxy";
      if (Error e = co_await read_stream(s, *sock, fd.fd, hash, got)) co_return e;
    } else {
      res.transport = "ibb";
      if (Error e = co_await receive_ibb(s, fd.fd, hash, got)) co_return e;
      if (got != s->file.size)
        co_return err(Errc::kDisconnected, "the in-band stream closed after " +
                                               std::to_string(got) + " of " +
                                               std::to_string(s->file.size) + " bytes");
    }
    res.sha256 = to_hex(hash.sha256.final());
    res.bytes = got;
    if (!md5.empty()) {
      std::string have = to_hex(hash.md5.final());
      std::string want = md5;
      std::transform(want.begin(), want.end(), want.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      if (have != want)
        co_return err(Errc::kProtocol,
                      "the file from " + s->peer + " arrived damaged (MD5 is not the one offered)");
      res.hash_checked = true;
    }
    if (::link(part.c_str(), final_path.c_str()) != 0) {
      final_path = unused_path(dir, safe_name);
      if (final_path.empty() || ::link(part.c_str(), final_path.c_str()) != 0)
        co_return err(Errc::kBadInput, "cannot save the file in " + dir);
      res.path = final_path;
    }
    co_return Error{};
  }

  awaitable<Error> run_si_sender(SessionPtr s, int fd, std::string md5, TransferResult* result) {
    const TransferOptions opts = owner->options;
    jingle::SiOffer offer;
    offer.sid = s->s5b_sid;  // one id for the offer and whichever stream follows
    offer.name = s->file.name;
    offer.size = s->file.size;
    offer.md5 = md5;
    if (opts.direct || opts.proxy) offer.methods.push_back(jingle::kBytestreams);
    if (opts.ibb) offer.methods.push_back(jingle::kIbb);
    xml::Element iq("iq", "jabber:client");
    iq.set_attr("type", "set").set_attr("to", s->peer);
    iq.add_child(jingle::build_si_offer(offer));
    auto r = co_await client->send_iq(std::move(iq));
    if (std::string c = Client::iq_condition(r); !c.empty()) {
      if (c == "forbidden" || c == "not-acceptable")
        co_return err(Errc::kNotAllowed, "the contact declined the file (" + c + ")");
      co_return err(c == "timeout" ? Errc::kTimeout : Errc::kNotFound,
                    "the contact did not take the offer (" + c + ")");
    }
    const xml::Element* si = r->child("si", jingle::kSi);
    std::string method = si ? jingle::parse_si_accept(*si) : std::string();
    if (method == jingle::kIbb && opts.ibb) {
      s->ibb_sid = offer.sid;
      if (result) result->transport = "ibb";
      // slixmpp accepts at most 8 KiB blocks; 4 KiB is XEP-0047's own example.
      if (Error e = co_await send_ibb(s, fd, 4096)) co_return e;
      if (result) result->bytes = s->file.size;
      co_return Error{};
    }
    if (method != jingle::kBytestreams)
      co_return err(Errc::kProtocol, "the contact chose no stream method we offered");
    // XEP-0065 §5.3.1: our own address (one: a target may open every streamhost at once, and we
    // must know which connection it chose) and the server's proxy.
    s->direct_dst = jingle::socks5_dst(s->s5b_sid, s->initiator, s->responder);
    jingle::BytestreamQuery q;
    q.sid = s->s5b_sid;
    if (opts.direct) {
      error_code ec;
      auto acc = std::make_unique<tcp::acceptor>(io);
      acc->open(tcp::v4(), ec);
      if (!ec) acc->bind(tcp::endpoint(tcp::v4(), 0), ec);
      if (!ec) acc->listen(8, ec);
      auto addrs = local_addresses();
      if (!ec && !addrs.empty()) {
        q.hosts.push_back({s->initiator, addrs.front(), acc->local_endpoint(ec).port()});
        s->acceptor = std::move(acc);
        asio::co_spawn(io, accept_loop(s), asio::detached);
      }
    }
    if (opts.proxy) {
      co_await discover_proxy();
      if (proxy) q.hosts.push_back({proxy->jid, proxy->host, proxy->port});
    }
    if (q.hosts.empty()) co_return err(Errc::kUnreachable, "no streamhost to offer");
    xml::Element bs("iq", "jabber:client");
    bs.set_attr("type", "set").set_attr("to", s->peer);
    bs.add_child(jingle::build_bytestreams(q));
    auto br = co_await client->send_iq(std::move(bs));
    if (std::string c = Client::iq_condition(br); !c.empty())
      co_return err(Errc::kUnreachable, "the contact reached none of our streamhosts (" + c + ")");
    std::string why;
    const xml::Element* bq = br->child("query", jingle::kBytestreams);
    auto used = bq ? jingle::parse_bytestreams(*bq, why) : std::nullopt;
    std::unique_ptr<tcp::socket> sock;
    if (used && used->used == s->initiator) {
      if (result) result->transport = "s5b-direct";
      auto until = std::chrono::steady_clock::now() + kConnectTimeout;
      while (!s->direct && std::chrono::steady_clock::now() < until) {
        s->signal.expires_at(until);
        error_code ec;
        co_await s->signal.async_wait(asio::redirect_error(use_awaitable, ec));
      }
      sock = std::move(s->direct);
    } else if (used && proxy && used->used == proxy->jid) {
      if (result) result->transport = "s5b-proxy";
      sock = co_await connect_streamhost(*proxy, s->direct_dst);
      if (sock) {
        xml::Element act("iq", "jabber:client");
        act.set_attr("type", "set").set_attr("to", proxy->jid);
        act.add_child("query", jingle::kBytestreams)
            .set_attr("sid", s->s5b_sid)
            .add_child("activate", jingle::kBytestreams)
            .add_text(s->responder);
        auto ar = co_await client->send_iq(std::move(act));
        if (!Client::iq_condition(ar).empty()) sock.reset();
      }
    }
    if (!sock) co_return err(Errc::kUnreachable, "the chosen streamhost did not work");
    if (Error e = co_await stream_file(s, *sock, fd, 0)) co_return e;
    // The end of the stream is the end of the file (XEP-0096 has no confirmation).
    error_code ig;
    sock->shutdown(tcp::socket::shutdown_send, ig);
    char c;
    {
      Watchdog w(io, *sock, std::chrono::seconds(10));
      co_await sock->async_read_some(asio::buffer(&c, 1), asio::redirect_error(use_awaitable, ig));
    }
    if (result) result->bytes = s->file.size;
    co_return Error{};
  }

  // ---- HTTP upload (XEP-0363) and out-of-band data (XEP-0066) ----

  awaitable<std::string> discover_upload() {
    std::string domain;
    if (auto j = xmpp::Jid::parse(me())) domain = j->domain();
    xml::Element items("iq", "jabber:client");
    items.set_attr("type", "get").set_attr("to", domain);
    items.add_child("query", xmpp::ns::kDiscoItems);
    auto r = co_await client->send_iq(std::move(items));
    std::vector<std::string> jids{domain};
    if (r && r->attr("type") == "result")
      if (const xml::Element* q = r->child("query", xmpp::ns::kDiscoItems))
        for (const xml::Element* i : q->children("item")) {
          if (jids.size() == 33) break;
          jids.emplace_back(i->attr("jid"));
        }
    for (const std::string& jid : jids) {
      xml::Element info("iq", "jabber:client");
      info.set_attr("type", "get").set_attr("to", jid);
      info.add_child("query", xmpp::ns::kDiscoInfo);
      auto ir = co_await client->send_iq(std::move(info));
      if (!ir || ir->attr("type") != "result") continue;
      if (const xml::Element* q = ir->child("query", xmpp::ns::kDiscoInfo))
        for (const xml::Element* f : q->children("feature"))
          if (f->attr("var") == kHttpUpload) co_return jid;
    }
    co_return std::string();
  }

  awaitable<Error> upload_and_send(std::string to, std::string path, std::string* url_out) {
    auto self = shared_from_this();
    auto j = xmpp::Jid::parse(to);
    if (!j) co_return err(Errc::kBadInput, "'" + to + "' is not a valid JID");
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st {};
    if (fd.fd < 0 || ::fstat(fd.fd, &st) != 0 || !S_ISREG(st.st_mode))
      co_return err(Errc::kBadInput, "cannot read the file " + path);
    const auto size = static_cast<std::uint64_t>(st.st_size);
    std::string service = co_await discover_upload();
    if (service.empty())
      co_return err(Errc::kNotFound, "the server offers no HTTP upload service (XEP-0363)");
    std::string name = jingle::safe_file_name(path);
    std::string type = media_type_of(name);
    xml::Element req("iq", "jabber:client");
    req.set_attr("type", "get").set_attr("to", service);
    req.add_child("request", kHttpUpload)
        .set_attr("filename", name)
        .set_attr("size", std::to_string(size))
        .set_attr("content-type", type);
    auto r = co_await client->send_iq(std::move(req));
    if (std::string c = Client::iq_condition(r); !c.empty()) {
      std::string text;
      if (r)
        if (const xml::Element* e = r->child("error"))
          text = e->child_text("text", "urn:ietf:params:xml:ns:xmpp-stanzas");
      co_return err(Errc::kNotAllowed, "the upload service refused a slot: " + c +
                                           (text.empty() ? "" : " (" + text + ")"));
    }
    const xml::Element* slot = r->child("slot", kHttpUpload);
    const xml::Element* put = slot ? slot->child("put", kHttpUpload) : nullptr;
    const xml::Element* get = slot ? slot->child("get", kHttpUpload) : nullptr;
    auto put_url = put ? parse_url(put->attr("url")) : std::nullopt;
    std::string get_url = get ? std::string(get->attr("url")) : std::string();
    if (!put_url || !parse_url(get_url))
      co_return err(Errc::kProtocol, "the upload service sent a slot without usable URLs");
    std::string head = "PUT " + put_url->target + " HTTP/1.1\r\nHost: " + put_url->host + ":" +
                       put_url->port + "\r\nContent-Length: " + std::to_string(size) +
                       "\r\nContent-Type: " + type + "\r\nConnection: close\r\n";
    // XEP-0363 §4.2: only these headers may be passed on, and never with a line break in them.
    for (const xml::Element* h : put->children("header", kHttpUpload)) {
      std::string hn(h->attr("name"));
      std::string hv = h->text();
      if ((hn == "Authorization" || hn == "Cookie" || hn == "Expires") &&
          hv.find_first_of("\r\n") == std::string::npos)
        head += hn + ": " + hv + "\r\n";
    }
    head += "\r\n";
    Session prog(io);
    prog.sid = "upload";
    prog.file.size = size;
    std::function<void(std::uint64_t)> on_progress = [this, &prog](std::uint64_t d) {
      progress(prog, d);
    };
    progress(prog, 0);
    tcp::resolver resolver(io);
    error_code ec;
    auto eps = co_await resolver.async_resolve(put_url->host, put_url->port,
                                               asio::redirect_error(use_awaitable, ec));
    if (ec) co_return err(Errc::kUnreachable, "cannot resolve " + put_url->host);
    Error e;
    if (!put_url->tls) {
      tcp::socket sock(io);
      {
        Watchdog w(io, sock, kConnectTimeout);
        co_await asio::async_connect(sock, eps, asio::redirect_error(use_awaitable, ec));
      }
      if (ec)
        co_return err(Errc::kUnreachable, "cannot reach " + put_url->host + ":" + put_url->port);
      e = co_await put_over(sock, head, fd.fd, size, on_progress);
    } else {
      asio::ssl::context ctx(asio::ssl::context::tls_client);
      ctx.set_default_verify_paths();
      ctx.set_verify_mode(client->options().insecure ? asio::ssl::verify_none
                                                     : asio::ssl::verify_peer);
      asio::ssl::stream<tcp::socket> tls(io, ctx);
      SSL_set_tlsext_host_name(tls.native_handle(), put_url->host.c_str());
      if (!client->options().insecure) SSL_set1_host(tls.native_handle(), put_url->host.c_str());
      {
        Watchdog w(io, tls.next_layer(), kConnectTimeout);
        co_await asio::async_connect(tls.next_layer(), eps,
                                     asio::redirect_error(use_awaitable, ec));
        if (!ec)
          co_await tls.async_handshake(asio::ssl::stream_base::client,
                                       asio::redirect_error(use_awaitable, ec));
      }
      if (ec)
        co_return err(Errc::kCertificate,
                      "cannot set up TLS to " + put_url->host + ": " + ec.message());
      e = co_await put_over(tls, head, fd.fd, size, on_progress);
    }
    if (e) co_return e;
    // XEP-0066 §3 with the URL as body too, so any client shows something useful.
    xml::Element m("message", "jabber:client");
    m.set_attr("to", j->str()).set_attr("type", "chat").set_attr("id", "u" + random_id());
    m.add_child("body", "jabber:client").add_text(get_url);
    m.add_child("x", "jabber:x:oob").add_child("url", "jabber:x:oob").add_text(get_url);
    client->send_stanza(m);
    if (url_out) *url_out = get_url;
    co_return Error{};
  }
};

FileTransfer::FileTransfer(Client& client) : impl_(std::make_shared<Impl>(*this, client)) {
  auto weak = std::weak_ptr<Impl>(impl_);
  auto& tokens = impl_->handler_tokens;
  tokens.push_back(client.add_iq_handler(jingle::kJingle, [weak](const xml::Element& iq) {
    auto i = weak.lock();
    return i && i->on_jingle_iq(iq);
  }));
  // In-band bytestreams, stream initiation and SOCKS5 bytestream IQs are file transfer's alone:
  // an unknown sid is answered here with the item-not-found their XEPs ask for.
  tokens.push_back(client.add_iq_handler(jingle::kIbb, [weak](const xml::Element& iq) {
    auto i = weak.lock();
    if (i) i->on_ibb_iq(iq);
    return i != nullptr;
  }));
  tokens.push_back(client.add_iq_handler(jingle::kSi, [weak](const xml::Element& iq) {
    auto i = weak.lock();
    if (i) i->on_si_iq(iq);
    return i != nullptr;
  }));
  tokens.push_back(client.add_iq_handler(jingle::kBytestreams, [weak](const xml::Element& iq) {
    auto i = weak.lock();
    if (i) i->on_bytestreams_iq(iq);
    return i != nullptr;
  }));
  for (const char* f : {jingle::kJingle, jingle::kFileTransfer, jingle::kS5b, jingle::kIbbTransport,
                        jingle::kIbb, jingle::kBytestreams, jingle::kSi, jingle::kSiFileTransfer})
    client.add_feature(f);
}

FileTransfer::~FileTransfer() {
  for (HandlerToken t : impl_->handler_tokens) impl_->client->remove_handler(t);
  impl_->owner = nullptr;
  for (auto& [sid, s] : impl_->sessions) {
    s->closed = true;
    error_code ig;
    if (s->acceptor) s->acceptor->close(ig);
    if (s->direct) s->direct->close(ig);
    s->notify();
  }
}

void FileTransfer::decide(const std::string& sid, bool accept) {
  auto it = impl_->sessions.find(sid);
  if (it == impl_->sessions.end() || it->second->sending || it->second->decision) return;
  it->second->decision = accept;
  it->second->notify();
}

awaitable<Error> FileTransfer::upload_and_send(std::string to, std::string path, std::string* url) {
  auto impl = impl_;
  co_return co_await impl->upload_and_send(std::move(to), std::move(path), url);
}

awaitable<Error> FileTransfer::send_file(std::string to, std::string path, TransferResult* result) {
  auto impl = impl_;
  co_return co_await impl->send_file(std::move(to), std::move(path), result);
}

}  // namespace kabar::client
