// Listening sockets and the accept loop that hands connections to the shards in turn.
#pragma once

#include <atomic>
#include <boost/asio.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange
#include <vector>

#include "net/shard.h"

namespace kabar::net {

// Opens, binds (SO_REUSEADDR) and listens on host:port ("localhost" means 127.0.0.1). Throws
// std::runtime_error naming the address and `what` ("client", "http", ...) when it cannot.
std::unique_ptr<boost::asio::ip::tcp::acceptor> open_listener(boost::asio::io_context& io,
                                                              const std::string& host,
                                                              std::uint16_t port,
                                                              std::string_view what);

// The shards connections are spread over, round robin; shared by every listener.
struct ShardRing {
  std::vector<Shard*> shards;
  std::size_t next = 0;
  Shard& pick() { return *shards[next++ % shards.size()]; }
};

// Runs `adopt(shard, socket)` on the chosen shard's thread.
using Adopt = std::function<void(Shard&, boost::asio::ip::tcp::socket)>;

// Accepts on `acc` (on its io_context's thread) until it is closed or `stopping` is set; each
// connection (TCP_NODELAY set) goes to the next shard of `ring`, where it stays. A connection
// for another shard crosses as a file descriptor, posted to that shard's loop.
boost::asio::awaitable<void> accept_loop(boost::asio::ip::tcp::acceptor& acc,
                                         const std::atomic<bool>& stopping, ShardRing& ring,
                                         Adopt adopt);

}  // namespace kabar::net
