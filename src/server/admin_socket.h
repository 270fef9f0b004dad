// The admin control channel: how kabarctl tells a running kabard about changes it must act on.
#pragma once

#include <boost/asio.hpp>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <set>
#include <string>

#include "server/server.h"

namespace kabar::server {

// A unix-domain stream socket, DATA/kabard.sock (mode 0600, in the 0700 data directory), served
// on shard 0's loop. One command per line, one answer line per command:
//   delete-account USER  ->  "ok" | "no-such-user" | "error TEXT"
//   clear-offline USER   ->  "ok N" (N messages deleted) | "no-such-user" | "error TEXT"
//   clear-archive USER   ->  "ok N" (N archived messages deleted) | "no-such-user" | "error TEXT"
//   expire-archive MS    ->  "ok N" (N archived messages stamped before Unix ms MS deleted, from
//                            every archive) | "error TEXT"
// Only a process that may open the data directory can connect: it already has the database.
//
// Why a channel rather than kabard noticing the deletion in the database: kabard holds the
// account's state in memory (live sessions, their presence, who was told of it), and the
// contacts must see the account go unavailable, which needs the account's roster; once kabarctl
// has deleted the rows that roster is gone. So kabard does the deletion itself, in order: the
// sessions' unavailable presence, the stream errors, then the rows. The archive commands come
// here for a like reason: kabard's store keeps each archive's newest place in memory and its
// message log holds archive writes not yet committed, so only kabard can delete consistently.
class AdminSocket {
 public:
  explicit AdminSocket(Server& server);
  ~AdminSocket();

  // Binds DATA/kabard.sock, replacing a stale one (the caller holds the data directory's lock,
  // so no other kabard uses it); throws std::runtime_error when it cannot.
  void start();
  // Stops accepting, closes the connected clients and removes the socket file (shard 0's
  // thread).
  void stop();

  static std::filesystem::path path_in(const std::filesystem::path& data_dir) {
    return data_dir / "kabard.sock";
  }

 private:
  using Local = asio::local::stream_protocol;
  awaitable<void> accept_loop();
  awaitable<void> serve(std::shared_ptr<Local::socket> sock);
  // One command line (without its newline) -> its answer (without its newline).
  awaitable<std::string> run_command(std::string line);
  awaitable<std::string> delete_account(std::string user);
  awaitable<std::string> clear_offline(std::string user);
  awaitable<std::string> clear_archive(std::string user);
  awaitable<std::string> expire_archive(std::int64_t before_ms);

  Server& server_;
  std::filesystem::path path_;
  std::unique_ptr<Local::acceptor> acceptor_;
  std::set<std::shared_ptr<Local::socket>> clients_;  // closed by stop(), so the loop can end
};

}  // namespace kabar::server
