// Waiting for a TCP socket to become readable, one system call cheaper than Asio's async_wait.
//
// Asio 1.74 (Boost 1.74, Debian 12) registers a socket with epoll once, edge-triggered, but its
// async_wait re-arms the registration with epoll_ctl(EPOLL_CTL_MOD) every time it is called: an
// extra system call for every message a connection sends (bench/results: 1 of ~4 per message at
// low rates). The re-arm is needed only when bytes may be waiting whose edge epoll has already
// reported. A caller that has just read the socket dry (a short read or EAGAIN) in the same
// handler knows there are none: any byte arriving later makes a new edge. For that case,
// ReadWait queues a wait operation on the socket's reactor the way Asio's own speculative reads
// do, without touching epoll; otherwise it waits as async_wait does. The operation lives inside
// its owner (no allocation per wait) and holds the owner alive while it is queued.
//
// This uses Asio's detail namespace, so it is compiled only for the version and reactor it was
// written against; elsewhere every wait is a plain async_wait.
#pragma once

#include <boost/asio.hpp>
#include <boost/version.hpp>
#include <memory>
#include <utility>  // before Asio: Boost 1.74 awaitable.hpp uses std::exchange

#if BOOST_VERSION == 107400 && defined(BOOST_ASIO_HAS_EPOLL) && !defined(BOOST_ASIO_HAS_IOCP)
#define KABAR_READ_WAIT_NO_REARM 1
#else
#define KABAR_READ_WAIT_NO_REARM 0
#endif

namespace kabar::net {

// A TCP socket whose reactor registration ReadWait can reach.
class Socket : public boost::asio::ip::tcp::socket {
 public:
  explicit Socket(boost::asio::ip::tcp::socket&& s) : boost::asio::ip::tcp::socket(std::move(s)) {}

 private:
  friend class ReadWait;
};

#if KABAR_READ_WAIT_NO_REARM

class ReadWait : private boost::asio::detail::reactor_op {
 public:
  using Callback = void (*)(void* target, const boost::system::error_code& ec);

  ReadWait()
      : boost::asio::detail::reactor_op(boost::system::error_code(), &ReadWait::do_perform,
                                        &ReadWait::do_complete) {}
  ReadWait(const ReadWait&) = delete;
  ReadWait& operator=(const ReadWait&) = delete;

  // Calls cb(target, ec) once `sock` is readable (or the wait is cancelled: ec is set). `keep`
  // holds the target alive until then. `drained`: the caller read the socket dry in the current
  // handler, so the epoll registration needs no re-arm. One wait at a time; every wait of a
  // ReadWait on the same socket and io_context.
  void start(Socket& sock, boost::asio::io_context& io, std::shared_ptr<void> keep, void* target,
             Callback cb, bool drained);
  bool pending() const { return keep_ != nullptr; }

 private:
  static status do_perform(reactor_op* base);
  static void do_complete(void* owner, boost::asio::detail::operation* base,
                          const boost::system::error_code& ec, std::size_t bytes);

  bool arming_ = false;  // inside start(): the reactor's speculative call must not complete it
  boost::asio::detail::reactor* reactor_ = nullptr;  // the socket's, found on the first wait
  std::shared_ptr<void> keep_;
  void* target_ = nullptr;
  Callback cb_ = nullptr;
};

#else

class ReadWait {
 public:
  using Callback = void (*)(void* target, const boost::system::error_code& ec);
  void start(Socket& sock, boost::asio::io_context&, std::shared_ptr<void> keep, void* target,
             Callback cb, bool /*drained*/) {
    sock.async_wait(boost::asio::ip::tcp::socket::wait_read,
                    [keep = std::move(keep), target, cb](const boost::system::error_code& ec) {
                      cb(target, ec);
                    });
  }
};

#endif

}  // namespace kabar::net
