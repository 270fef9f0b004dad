// kabar-floor: the leanest XMPP relay kabar-bench can drive, written only to be measured, so that
// kabard's figures have a floor to be compared with. One thread, epoll (level-triggered),
// nonblocking sockets, expat parsing each stanza once; a message (or a presence with a 'to') is
// routed by the bare JID of its 'to' to the connection bound to it and forwarded as the original
// bytes. Writes are gathered: a connection's output is flushed once per epoll batch.
//
// It answers just enough of the stream for kabar-bench: the stream header, features, SASL PLAIN
// accepting any password, resource binding, an empty roster, and it swallows presence without a
// 'to'. No TLS, no storage, no checks. Never deploy it.
#include <arpa/inet.h>
#include <expat.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "xmpp/scram.h"

namespace {

std::string g_domain = "localhost";

struct Conn;
using ConnMap = std::unordered_map<std::string, Conn*>;
ConnMap g_bound;             // bare JID -> its connection
std::vector<Conn*> g_dirty;  // connections with output to flush after this batch
long g_forwarded = 0, g_dropped = 0;

std::string_view local(const XML_Char* name) {
  std::string_view n(name);
  auto colon = n.find(':');
  return colon == std::string_view::npos ? n : n.substr(colon + 1);
}

const XML_Char* attr(const XML_Char** atts, const char* key) {
  for (int i = 0; atts[i]; i += 2)
    if (std::strcmp(atts[i], key) == 0) return atts[i + 1];
  return nullptr;
}

struct Conn {
  int fd = -1;
  XML_Parser parser = nullptr;
  int depth = 0;
  bool authed = false;
  bool restart = false;
  bool closing = false;
  bool dirty = false;
  bool want_out = false;
  // The stanza being parsed: its name, 'to', 'id', first child, the text we need.
  std::string kind, to, id, child, text, user, resource;
  std::string jid_bare;
  // Stream offsets: `base` is the offset of the current read's first byte. The bytes after the
  // last complete stanza (`last_end`) that earlier reads left are kept in `carry`, which starts
  // at offset `carry_off`: a stanza (or just its start tag) may span reads.
  XML_Index base = 0;
  XML_Index stanza_start = -1;
  XML_Index last_end = 0;
  XML_Index carry_off = 0;
  std::string carry;
  const char* cur = nullptr;  // the read being parsed
  std::string out;

  void queue(std::string_view bytes) {
    out.append(bytes);
    if (!dirty) {
      dirty = true;
      g_dirty.push_back(this);
    }
  }
};

void on_start(void* ud, const XML_Char* name, const XML_Char** atts);
void on_end(void* ud, const XML_Char* name);
void on_text(void* ud, const XML_Char* s, int len);

void make_parser(Conn* c) {
  if (c->parser) {
    XML_ParserReset(c->parser, nullptr);
  } else {
    c->parser = XML_ParserCreate(nullptr);
  }
  XML_SetUserData(c->parser, c);
  XML_SetElementHandler(c->parser, on_start, on_end);
  XML_SetCharacterDataHandler(c->parser, on_text);
  c->depth = 0;
  c->base = 0;
  c->stanza_start = -1;
  c->last_end = 0;
  c->carry_off = 0;
  c->carry.clear();
}

void on_start(void* ud, const XML_Char* name, const XML_Char** atts) {
  auto* c = static_cast<Conn*>(ud);
  if (c->depth == 0) {
    // Stream header: answer with ours and the features for this stage.
    c->queue(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams' version='1.0' from='" +
        g_domain + "' id='floor'>");
    if (!c->authed) {
      c->queue(
          "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
          "<mechanism>PLAIN</mechanism></mechanisms></stream:features>");
    } else {
      c->queue(
          "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>");
    }
    c->last_end = XML_GetCurrentByteIndex(c->parser) + XML_GetCurrentByteCount(c->parser);
  } else if (c->depth == 1) {
    c->stanza_start = XML_GetCurrentByteIndex(c->parser);
    c->kind = local(name);
    const XML_Char* to = attr(atts, "to");
    const XML_Char* id = attr(atts, "id");
    c->to = to ? to : "";
    c->id = id ? id : "";
    c->child.clear();
    c->text.clear();
  } else if (c->depth == 2) {
    c->child = local(name);
  }
  if (c->depth >= 2) c->text.clear();
  ++c->depth;
}

void on_text(void* ud, const XML_Char* s, int len) {
  auto* c = static_cast<Conn*>(ud);
  if (c->depth >= 2 && (c->kind == "auth" || c->child == "bind")) c->text.append(s, len);
}

void route(Conn* c, XML_Index end) {
  std::string_view bare(c->to);
  bare = bare.substr(0, bare.find('/'));
  auto it = g_bound.find(std::string(bare));
  if (it == g_bound.end()) {
    ++g_dropped;
    return;
  }
  // The original bytes: from the stanza's start to the end of its end tag.
  Conn* dst = it->second;
  if (c->stanza_start >= c->base) {
    dst->queue(std::string_view(c->cur + (c->stanza_start - c->base),
                                static_cast<std::size_t>(end - c->stanza_start)));
  } else {
    dst->queue(std::string_view(c->carry).substr(
        static_cast<std::size_t>(c->stanza_start - c->carry_off)));
    dst->queue(std::string_view(c->cur, static_cast<std::size_t>(end - c->base)));
  }
  ++g_forwarded;
}

void on_end(void* ud, const XML_Char* name) {
  auto* c = static_cast<Conn*>(ud);
  --c->depth;
  if (c->depth == 0) {
    c->queue("</stream:stream>");
    c->closing = true;
    return;
  }
  if (c->depth == 2 && c->child == "bind" && local(name) == "resource") c->resource = c->text;
  if (c->depth != 1) return;
  XML_Index end = XML_GetCurrentByteIndex(c->parser) + XML_GetCurrentByteCount(c->parser);
  const std::string& k = c->kind;
  if (k == "message") {
    route(c, end);
  } else if (k == "presence") {
    if (!c->to.empty()) route(c, end);
  } else if (k == "auth") {
    auto plain = kabar::xmpp::base64_decode(c->text);
    if (plain) {
      auto p = kabar::xmpp::parse_plain(*plain);
      if (p) c->user = p->authcid;
    }
    c->authed = true;
    c->restart = true;
    c->queue("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
  } else if (k == "iq") {
    if (c->child == "bind") {
      c->jid_bare = c->user + "@" + g_domain;
      g_bound[c->jid_bare] = c;
      c->queue("<iq type='result' id='" + c->id +
               "'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>" + c->jid_bare + "/" +
               c->resource + "</jid></bind></iq>");
    } else if (c->child == "query") {
      c->queue("<iq type='result' id='" + c->id + "'><query xmlns='jabber:iq:roster'/></iq>");
    } else {
      c->queue("<iq type='result' id='" + c->id + "'/>");
    }
  }
  c->stanza_start = -1;
  c->last_end = end;
}

void set_out(int ep, Conn* c, bool want) {
  if (c->want_out == want) return;
  c->want_out = want;
  epoll_event ev{};
  ev.events = want ? (EPOLLIN | EPOLLOUT) : EPOLLIN;
  ev.data.ptr = c;
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

void destroy(Conn* c) {
  if (!c->jid_bare.empty()) {
    auto it = g_bound.find(c->jid_bare);
    if (it != g_bound.end() && it->second == c) g_bound.erase(it);
  }
  ::close(c->fd);
  XML_ParserFree(c->parser);
  c->fd = -1;
  c->parser = nullptr;
}

// Returns false when the connection is finished.
bool flush(int ep, Conn* c) {
  std::size_t done = 0;
  while (done < c->out.size()) {
    ssize_t n = ::send(c->fd, c->out.data() + done, c->out.size() - done, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN) break;
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  c->out.erase(0, done);
  if (c->out.empty()) std::string().swap(c->out);
  set_out(ep, c, !c->out.empty());
  return !(c->closing && c->out.empty());
}

// Returns false when the connection is finished.
bool on_readable(Conn* c, char* buf, std::size_t cap) {
  ssize_t n = ::recv(c->fd, buf, cap, 0);
  if (n == 0) return false;
  if (n < 0) return errno == EAGAIN;
  c->cur = buf;
  if (XML_Parse(c->parser, buf, static_cast<int>(n), 0) != XML_STATUS_OK) return false;
  if (c->restart) {
    // SASL success: the client opens a new stream (RFC 6120 §6.4.6); nothing follows <auth/>.
    c->restart = false;
    make_parser(c);
    return true;
  }
  // Keep the bytes of a stanza that continues in the next read.
  XML_Index keep = c->stanza_start >= 0 ? c->stanza_start : c->last_end;
  XML_Index end = c->base + n;
  if (keep >= end) {
    if (!c->carry.empty()) std::string().swap(c->carry);
  } else if (keep >= c->base) {
    c->carry.assign(buf + (keep - c->base), static_cast<std::size_t>(end - keep));
    c->carry_off = keep;
  } else {
    c->carry.append(buf, static_cast<std::size_t>(n));  // carry already starts at or before keep
  }
  c->base = end;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  int port = 5299;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view a = argv[i];
    if (a == "--listen") {
      std::string v = argv[i + 1];
      auto colon = v.rfind(':');
      host = v.substr(0, colon);
      port = std::atoi(v.c_str() + colon + 1);
    } else if (a == "--domain") {
      g_domain = argv[i + 1];
    } else {
      std::fprintf(stderr, "usage: kabar-floor --listen HOST:PORT --domain D\n");
      return 2;
    }
  }
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  signal(SIGPIPE, SIG_IGN);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  if (bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(lfd, 4096) != 0) {
    std::perror("kabar-floor: listen");
    return 1;
  }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event lev{};
  lev.events = EPOLLIN;
  lev.data.ptr = nullptr;
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
  std::fprintf(stderr, "kabar-floor: %s:%d for %s\n", host.c_str(), port, g_domain.c_str());

  static char buf[64 * 1024];
  std::vector<std::unique_ptr<Conn>> graveyard;  // freed after the batch that closed them
  epoll_event evs[512];
  for (;;) {
    int n = epoll_wait(ep, evs, 512, -1);
    for (int i = 0; i < n; ++i) {
      auto* c = static_cast<Conn*>(evs[i].data.ptr);
      if (c == nullptr) {
        for (;;) {
          int fd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          auto* nc = new Conn;
          nc->fd = fd;
          make_parser(nc);
          epoll_event ev{};
          ev.events = EPOLLIN;
          ev.data.ptr = nc;
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        }
        continue;
      }
      if (c->fd < 0) continue;
      bool alive = true;
      if (evs[i].events & EPOLLOUT) alive = flush(ep, c);
      if (alive && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        alive = on_readable(c, buf, sizeof buf);
      if (!alive) {
        destroy(c);
        graveyard.emplace_back(c);
      }
    }
    for (Conn* c : g_dirty) {
      c->dirty = false;
      if (c->fd >= 0 && !flush(ep, c)) {
        destroy(c);
        graveyard.emplace_back(c);
      }
    }
    g_dirty.clear();
    graveyard.clear();
  }
}
