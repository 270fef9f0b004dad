#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "apps/kabar-bench/bench.h"

namespace kabar::bench {

int Bench::open_conn(std::uint32_t user, std::uint16_t resource) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error(std::string("socket: ") + std::strerror(errno));
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(static_cast<std::uint16_t>(o_.port));
  inet_pton(AF_INET, o_.host.c_str(), &dst.sin_addr);
  if (o_.sources > 0 && (ntohl(dst.sin_addr.s_addr) >> 24) == 127) {
    // Spread connections over source addresses so ephemeral ports never run out.
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    sockaddr_in src{};
    src.sin_family = AF_INET;
    src.sin_addr.s_addr =
        htonl(0x7f000002u + static_cast<std::uint32_t>(source_rr_++ % o_.sources));
    if (bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) {
      error(std::string("bind: ") + std::strerror(errno));
      ::close(fd);
      return -1;
    }
  }
  if (connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst) != 0 && errno != EINPROGRESS) {
    error(std::string("connect: ") + std::strerror(errno));
    ::close(fd);
    return -1;
  }
  int slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    slot = static_cast<int>(conns_.size());
    conns_.emplace_back();
  }
  Conn& c = conns_[slot];
  c.fd = fd;
  ++c.gen;
  c.st = St::kConnecting;
  c.level = 0;
  c.authed = false;
  c.tls_active = false;
  c.counted_online = false;
  c.session_required = false;
  c.user = user;
  c.resource = resource;
  c.t_start = now_ns();
  c.want_out = true;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT;
  ev.data.u64 = (std::uint64_t{c.gen} << 32) | static_cast<std::uint32_t>(slot);
  epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
  ++in_flight_;
  return slot;
}

void Bench::close_conn(int slot) {
  Conn& c = conns_[slot];
  if (c.st == St::kFree) return;
  if (c.st != St::kOnline && c.st != St::kClosing) --in_flight_;
  if (c.counted_online) {
    --online_;
    if (online_by_user_.size() > c.user && online_by_user_[c.user] == slot)
      online_by_user_[c.user] = -1;
  }
  if (c.ssl) {
    SSL_free(c.ssl);
    c.ssl = nullptr;
  }
  linger lg{1, 0};  // no TIME_WAIT pile-up over long login runs
  setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  ::close(c.fd);
  c.fd = -1;
  c.st = St::kFree;
  c.scram.reset();
  std::string().swap(c.in);
  std::string().swap(c.out);
  ++closed_;
  free_slots_.push_back(slot);
}

void Bench::set_out_interest(int slot, bool want) {
  Conn& c = conns_[slot];
  if (c.want_out == want) return;
  c.want_out = want;
  epoll_event ev{};
  ev.events = want ? (EPOLLIN | EPOLLOUT) : EPOLLIN;
  ev.data.u64 = (std::uint64_t{c.gen} << 32) | static_cast<std::uint32_t>(slot);
  epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
}

void Bench::send(int slot, std::string_view bytes) {
  Conn& c = conns_[slot];
  if (!c.out.empty() || c.st == St::kConnecting || c.st == St::kTlsHandshake) {
    c.out.append(bytes);
    return;
  }
  std::size_t done = 0;
  if (c.tls_active) {
    while (done < bytes.size()) {
      int n = SSL_write(c.ssl, bytes.data() + done, static_cast<int>(bytes.size() - done));
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
  } else {
    ssize_t n = ::send(c.fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n > 0) done = static_cast<std::size_t>(n);
  }
  if (done < bytes.size()) {
    c.out.append(bytes.substr(done));
    set_out_interest(slot, true);
  }
}

void Bench::flush(int slot) {
  Conn& c = conns_[slot];
  std::size_t done = 0;
  while (done < c.out.size()) {
    ssize_t n;
    if (c.tls_active) {
      n = SSL_write(c.ssl, c.out.data() + done, static_cast<int>(c.out.size() - done));
      if (n <= 0) {
        int e = SSL_get_error(c.ssl, static_cast<int>(n));
        if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) {
          error("tls write failed");
          close_conn(slot);
          return;
        }
        break;
      }
    } else {
      n = ::send(c.fd, c.out.data() + done, c.out.size() - done, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno != EAGAIN) {
          error(std::string("send: ") + std::strerror(errno));
          close_conn(slot);
          return;
        }
        break;
      }
    }
    done += static_cast<std::size_t>(n);
  }
  c.out.erase(0, done);
  if (c.out.empty()) std::string().swap(c.out);
  set_out_interest(slot, !c.out.empty());
}

void Bench::start_stream(int slot) {
  Conn& c = conns_[slot];
  c.level = 0;
  c.st = St::kStream;
  std::string h = "<?xml version='1.0'?><stream:stream to='" + o_.domain +
                  "' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                  "version='1.0'>";
  send(slot, h);
}

void Bench::tls_handshake(int slot) {
  Conn& c = conns_[slot];
  int r = SSL_connect(c.ssl);
  if (r == 1) {
    c.tls_active = true;
    start_stream(slot);
    if (!c.out.empty()) flush(slot);
    return;
  }
  int e = SSL_get_error(c.ssl, r);
  if (e == SSL_ERROR_WANT_READ) {
    set_out_interest(slot, false);
  } else if (e == SSL_ERROR_WANT_WRITE) {
    set_out_interest(slot, true);
  } else {
    error("tls handshake failed");
    close_conn(slot);
  }
}

void Bench::on_event(int slot, std::uint32_t events) {
  Conn& c = conns_[slot];
  if (c.st == St::kConnecting) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      error(std::string("connect: ") + std::strerror(err));
      close_conn(slot);
      return;
    }
    if (!(events & (EPOLLOUT | EPOLLIN))) return;
    if (o_.tls == "direct") {
      c.ssl = SSL_new(ssl_ctx_);
      SSL_set_fd(c.ssl, c.fd);
      SSL_set_tlsext_host_name(c.ssl, o_.domain.c_str());
      c.st = St::kTlsHandshake;
      tls_handshake(slot);
      return;
    }
    start_stream(slot);
    if (!c.out.empty())
      flush(slot);
    else
      set_out_interest(slot, false);
    return;
  }
  if (c.st == St::kTlsHandshake) {
    tls_handshake(slot);
    return;
  }
  if (events & EPOLLOUT) {
    flush(slot);
    if (conns_[slot].st == St::kFree || conns_[slot].gen != c.gen) return;
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(slot);
}

void Bench::on_readable(int slot) {
  std::uint32_t gen = conns_[slot].gen;
  // Plain sockets: a few reads, then level-triggered epoll calls again. TLS: read until OpenSSL
  // wants more from the socket, since it may hold decrypted bytes epoll cannot see.
  for (int round = 0; round < 4 || conns_[slot].tls_active; ++round) {
    Conn& c = conns_[slot];
    if (c.st == St::kFree || c.gen != gen) return;
    ssize_t n;
    if (c.tls_active) {
      n = SSL_read(c.ssl, scratch_.data(), static_cast<int>(scratch_.size()));
      if (n <= 0) {
        int e = SSL_get_error(c.ssl, static_cast<int>(n));
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
        if (c.st != St::kClosing) error("connection closed by server");
        close_conn(slot);
        return;
      }
    } else {
      n = ::recv(c.fd, scratch_.data(), scratch_.size(), 0);
      if (n < 0) {
        if (errno == EAGAIN) return;
        if (c.st != St::kClosing) error(std::string("recv: ") + std::strerror(errno));
        close_conn(slot);
        return;
      }
      if (n == 0) {
        if (c.st != St::kClosing) error("connection closed by server");
        close_conn(slot);
        return;
      }
    }
    if (c.in.empty()) {
      if (!process(slot, scratch_.data(), static_cast<std::size_t>(n))) return;
    } else {
      std::string buf;
      buf.swap(c.in);
      buf.append(scratch_.data(), static_cast<std::size_t>(n));
      if (!process(slot, buf.data(), buf.size())) return;
    }
    if (static_cast<std::size_t>(n) < scratch_.size() && !conns_[slot].tls_active) return;
  }
}

// Feeds bytes through the scanner; keeps an incomplete tail. False once the connection closed.
bool Bench::process(int slot, const char* data, std::size_t n) {
  std::uint32_t gen = conns_[slot].gen;
  std::size_t pos = 0;
  for (;;) {
    Conn& c = conns_[slot];
    int level = c.level;
    std::string_view el;
    std::size_t before = pos;
    Piece kind = next_piece(data, n, pos, level, el);
    c.level = static_cast<std::uint8_t>(level);
    if (kind == Piece::kNeedMore) {
      if (pos < n) c.in.assign(data + pos, n - pos);
      (void)before;
      return true;
    }
    if (!on_piece(slot, kind, el)) return false;
    if (conns_[slot].st == St::kFree || conns_[slot].gen != gen) return false;
    // A TLS upgrade consumes nothing more from this buffer: the rest is ciphertext.
    if (conns_[slot].st == St::kTlsHandshake) return false;
  }
}

void Bench::poll_once(int timeout_ms) {
  epoll_event evs[512];
  int n = epoll_wait(ep_, evs, 512, timeout_ms);
  for (int i = 0; i < n; ++i) {
    int slot = static_cast<int>(evs[i].data.u64 & 0xffffffffu);
    auto gen = static_cast<std::uint32_t>(evs[i].data.u64 >> 32);
    if (slot >= static_cast<int>(conns_.size())) continue;
    Conn& c = conns_[slot];
    if (c.st == St::kFree || c.gen != gen) continue;
    on_event(slot, evs[i].events);
  }
}

}  // namespace kabar::bench
