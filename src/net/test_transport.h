// An in-memory transport for unit tests: no socket. The test pushes bytes as the peer would send
// them (each push is one read event, as a socket read is) and reads back what was written; it
// can stall writes or let them through a few bytes at a time, and end the connection.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "net/shard.h"
#include "net/transport.h"

namespace kabar::net {

class TestTransport final : public Transport {
 public:
  explicit TestTransport(Shard& shard, std::string peer_address = "192.0.2.1");

  // --- The test's side.
  // Delivers `bytes` as one read event. While the handler has paused reading, they wait and are
  // delivered by its next read().
  void push(std::string_view bytes);
  // The peer closes its side cleanly (TLS close_notify).
  void push_peer_close();
  // The connection dies (what a reset or EOF does): the handler hears on_transport_closed().
  void drop();
  // Everything written so far, as the peer would have received it.
  const std::string& written() const { return written_; }
  std::string take_written() { return std::exchange(written_, {}); }
  // Write calls that took bytes (each one system call on a socket).
  std::size_t write_calls() const { return write_calls_; }
  // At most `n` bytes per write (then kBlocked, and on_writable() at the next unblock());
  // 0: no limit.
  void set_write_limit(std::size_t n) { write_limit_ = n; }
  // While stalled, writes take nothing (kBlocked).
  void stall() { stalled_ = true; }
  // Ends a stall (or a short write): on_writable() if a write was blocked.
  void unblock();
  void set_security(Security s) { security_ = std::move(s); }
  bool reading() const { return reading_; }
  // True once the connection is closed or the transport destroyed; still readable after the
  // session that owns the transport has let go of it (the transport itself is gone then).
  std::shared_ptr<const bool> ended() const { return ended_; }
  ~TestTransport() override { *ended_ = true; }

  // --- Transport.
  void start(TransportHandler& handler) override;
  void set_handler(TransportHandler& handler) override { handler_ = &handler; }
  void read() override;
  WriteResult write(std::span<const std::string_view> bufs) override;
  bool holds_output() const override { return false; }
  boost::asio::awaitable<void> start_tls() override;
  void close() override;
  void abandon() override;
  bool is_closed() const override { return closed_; }
  bool hibernate() override { return false; }
  const std::string& peer_address() const override { return peer_addr_; }
  const Security& security() const override { return security_; }

 private:
  void deliver();

  Shard& shard_;
  TransportHandler* handler_ = nullptr;
  std::string peer_addr_;
  Security security_;
  std::string pending_;  // pushed while reading was paused
  bool pending_close_ = false;
  bool reading_ = false;
  bool closed_ = false;
  std::shared_ptr<bool> ended_ = std::make_shared<bool>(false);
  bool stalled_ = false;
  bool blocked_ = false;  // a write came back kBlocked
  std::size_t write_limit_ = 0;
  std::size_t write_calls_ = 0;
  std::string written_;
};

}  // namespace kabar::net
