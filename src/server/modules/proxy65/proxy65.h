// SOCKS5 Bytestreams proxy (XEP-0065 §6, "mediated connection"), as the component
// proxy.<domain>: clients that cannot reach each other both connect here with SOCKS5 (RFC 1928,
// CONNECT to the hostname SHA1(SID + Requester JID + Target JID)), and once the requester
// activates the stream with an IQ the proxy relays the bytes between the two connections.
//
// Limits: streams per account, bytes per second per stream, an idle timeout, and a bound on
// connections waiting for activation; everything of a stream is freed when either side goes.
#pragma once

#include <boost/asio.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange
#include <vector>

#include "server/server.h"

namespace kabar::server {

class Proxy65 {
 public:
  explicit Proxy65(Server& server);
  ~Proxy65();

  // Binds every configured listener; throws std::runtime_error (port in use, bad address).
  void start();
  void stop();

  const std::string& jid() const { return jid_; }
  const std::string& host() const { return host_; }  // the announced address
  std::uint16_t port() const { return port_; }
  // Handles an IQ addressed to the proxy: disco#info/#items, the streamhost query, activation.
  awaitable<void> handle_iq(SessionPtr from, xml::Element iq);

  std::size_t waiting() const;  // SOCKS5 connections not yet activated
  std::size_t relaying() const { return active_.size(); }

 private:
  struct Conn;
  struct Stream;
  using ConnPtr = std::shared_ptr<Conn>;

  awaitable<void> accept_loop(asio::ip::tcp::acceptor& acc);
  awaitable<void> negotiate(ConnPtr c);
  awaitable<void> wait_for_activation(ConnPtr c);
  awaitable<void> refuse(ConnPtr c, std::uint8_t code);  // SOCKS5 failure reply, then close
  awaitable<void> relay(std::shared_ptr<Stream> st, int direction);
  awaitable<void> watch(std::shared_ptr<Stream> st);
  void forget(const ConnPtr& c);
  void end_stream(const std::shared_ptr<Stream>& st);
  xml::Element streamhost_result(const xml::Element& iq) const;

  Server& server_;
  std::string jid_;
  std::string host_;  // announced address
  std::uint16_t port_ = 0;
  std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> acceptors_;
  std::unordered_map<std::string, std::vector<ConnPtr>> by_hash_;  // waiting, by DST.ADDR
  std::unordered_set<ConnPtr> negotiating_;                        // SOCKS5 handshake under way
  std::unordered_map<std::string, int> streams_of_;  // requester's bare JID -> active streams
  std::unordered_set<std::shared_ptr<Stream>> active_;
  bool stopping_ = false;
};

}  // namespace kabar::server
