// One event loop and its thread (ARCHITECTURE.md, "Threads and the hot path"). A connection lives
// on one shard for its whole life; only that shard's thread touches its state.
#pragma once

#include <atomic>
#include <boost/asio.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <thread>
#include <utility>  // before Asio: Boost 1.74 awaitable.hpp uses std::exchange
#include <vector>

namespace kabar::net {

// What wants its output written once the read event being handled is over (a session given
// bytes to send).
class Deferred {
 public:
  virtual void run_deferred() = 0;

 protected:
  ~Deferred() = default;
};

struct Shard {
  unsigned index = 0;
  boost::asio::io_context* io = nullptr;            // shard 0: the io_context main() runs
  std::unique_ptr<boost::asio::io_context> own_io;  // shards 1..N-1
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work;
  std::thread thread;
  std::atomic<bool> done{false};
  // Touched only on this shard's thread:
  std::unique_ptr<boost::asio::steady_timer> sweep_timer;
  std::int64_t last_trim_ms = 0;
  // While a read event is being handled, what is given bytes to write waits here and is flushed
  // once at its end (one sendmsg each, and no handler posted to the loop: a posted handler makes
  // the loop poll epoll once more before it sleeps).
  bool in_event = false;
  std::vector<std::shared_ptr<Deferred>> to_flush;
  bool on_this_thread() const { return io->get_executor().running_in_this_thread(); }

  // Runs `d->run_deferred()` at the end of the current read event, or from a posted handler
  // outside one.
  void defer(std::shared_ptr<Deferred> d);
};

// Marks the shard as handling a read event; at the end of the outermost one, runs everything
// deferred meanwhile.
class EventScope {
 public:
  explicit EventScope(Shard& shard);
  ~EventScope();
  EventScope(const EventScope&) = delete;
  EventScope& operator=(const EventScope&) = delete;

 private:
  Shard& shard_;
  bool outer_;
};

}  // namespace kabar::net
