// Opening a TCP listener, shared by the client, HTTP and proxy listeners.
#pragma once

#include <boost/asio.hpp>
#include <memory>
#include <string_view>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange

#include "server/config.h"

namespace kabar::server {

// Opens, binds (SO_REUSEADDR) and listens on `ep` ("localhost" means 127.0.0.1). Throws
// std::runtime_error naming the address and `what` ("client", "http", ...) when it cannot.
std::unique_ptr<boost::asio::ip::tcp::acceptor> open_listener(boost::asio::io_context& io,
                                                              const Endpoint& ep,
                                                              std::string_view what);

}  // namespace kabar::server
