#include "server/core/paced_send.h"

#include <memory>
#include <utility>

#include "server/c2s_session.h"

namespace kabar::server {

namespace {

// Owned by the on_written callback of the last stanza of the batch in the session's output: when
// the session drops its output (the connection ended), the rest goes with it.
struct PacedRun {
  std::weak_ptr<C2sSession> to;
  std::vector<std::string> stanzas;
  std::size_t next = 0;
  std::size_t batch_bytes = 0;
};

void send_batch(const std::shared_ptr<PacedRun>& run) {
  SessionPtr to = run->to.lock();
  if (!to || to->closed()) return;
  std::size_t bytes = 0;
  while (run->next < run->stanzas.size() && bytes < run->batch_bytes) {
    std::string& stanza = run->stanzas[run->next++];
    bytes += stanza.size();
    if (run->next == run->stanzas.size() || bytes >= run->batch_bytes) {
      // The last of this batch: once it is written, the next batch. Posted, so that it is not
      // queued from inside the session's flush.
      asio::io_context* io = to->shard().io;
      to->send_raw(std::move(stanza), [run, io] {
        if (run->next < run->stanzas.size()) asio::post(*io, [run] { send_batch(run); });
      });
    } else {
      to->send_raw(std::move(stanza));
    }
  }
}

}  // namespace

void send_paced(const SessionPtr& to, std::vector<std::string> stanzas, std::size_t batch_bytes) {
  if (stanzas.empty()) return;
  auto run = std::make_shared<PacedRun>();
  run->to = to;
  run->stanzas = std::move(stanzas);
  run->batch_bytes = batch_bytes;
  send_batch(run);
}

}  // namespace kabar::server
