#include "net/listener.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <stdexcept>
#include <string>

namespace kabar::net {

namespace asio = boost::asio;
using asio::ip::tcp;

std::unique_ptr<tcp::acceptor> open_listener(asio::io_context& io, const std::string& host,
                                             std::uint16_t port, std::string_view what) {
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
  if (ec) {
    throw std::runtime_error("bad " + std::string(what) + " listen address '" + host +
                             "': " + ec.message());
  }
  tcp::endpoint endpoint(addr, port);
  auto acc = std::make_unique<tcp::acceptor>(io);
  acc->open(endpoint.protocol(), ec);
  if (!ec) acc->set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acc->bind(endpoint, ec);
  if (!ec) acc->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    throw std::runtime_error("cannot listen on " + host + ":" + std::to_string(port) + " (" +
                             std::string(what) + "): " + ec.message());
  }
  return acc;
}

asio::awaitable<void> accept_loop(tcp::acceptor& acc, const std::atomic<bool>& stopping,
                                  ShardRing& ring, Adopt adopt) {
  while (!stopping) {
    boost::system::error_code ec;
    tcp::socket sock = co_await acc.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping) co_return;
    if (ec) {
      if (ec == asio::error::operation_aborted) co_return;
      // Out of descriptors and the like: log, back off briefly, keep serving.
      spdlog::warn("accept: {}", ec.message());
      asio::steady_timer t(acc.get_executor(), std::chrono::milliseconds(100));
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    sock.set_option(tcp::no_delay(true), ec);
    // Round robin over the shards; the connection stays on the one it gets.
    Shard& sh = ring.pick();
    if (sh.on_this_thread()) {
      adopt(sh, std::move(sock));
      continue;
    }
    const bool v6 = acc.local_endpoint(ec).address().is_v6();
    const int fd = sock.release(ec);
    if (ec) continue;
    asio::post(*sh.io, [&sh, fd, v6, adopt] {
      tcp::socket moved(*sh.io);
      boost::system::error_code aec;
      moved.assign(v6 ? tcp::v6() : tcp::v4(), fd, aec);
      if (aec) {
        ::close(fd);
        return;
      }
      adopt(sh, std::move(moved));
    });
  }
}

}  // namespace kabar::net
