#include "server/listener.h"

#include <stdexcept>
#include <string>

namespace kabar::server {

std::unique_ptr<boost::asio::ip::tcp::acceptor> open_listener(boost::asio::io_context& io,
                                                              const Endpoint& ep,
                                                              std::string_view what) {
  namespace asio = boost::asio;
  using asio::ip::tcp;
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(ep.host == "localhost" ? "127.0.0.1" : ep.host, ec);
  if (ec) {
    throw std::runtime_error("bad " + std::string(what) + " listen address '" + ep.host +
                             "': " + ec.message());
  }
  tcp::endpoint endpoint(addr, ep.port);
  auto acc = std::make_unique<tcp::acceptor>(io);
  acc->open(endpoint.protocol(), ec);
  if (!ec) acc->set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acc->bind(endpoint, ec);
  if (!ec) acc->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    throw std::runtime_error("cannot listen on " + ep.host + ":" + std::to_string(ep.port) + " (" +
                             std::string(what) + "): " + ec.message());
  }
  return acc;
}

}  // namespace kabar::server
