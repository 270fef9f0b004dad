// Opening a TCP listener, shared by the client, HTTP and proxy listeners (net/listener.h).
#pragma once

#include <boost/asio.hpp>
#include <memory>
#include <string_view>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange

#include "net/listener.h"
#include "server/config.h"

namespace kabar::server {

inline std::unique_ptr<boost::asio::ip::tcp::acceptor> open_listener(boost::asio::io_context& io,
                                                                     const Endpoint& ep,
                                                                     std::string_view what) {
  return net::open_listener(io, ep.host, ep.port, what);
}

}  // namespace kabar::server
