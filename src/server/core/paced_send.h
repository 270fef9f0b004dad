// Sending a long run of stanzas to one session without filling its output: a batch at a time,
// the next queued only once the session has written the last stanza of the one before (its
// on_written callback). A session's output is bounded (past 1 MiB unwritten its senders are held
// back, and a client that stops reading is cut at the 4 MiB hard cap or after write_stall_timeout:
// c2s_session.h); what a login hands the client at once (subscription requests that came while
// it was away, offline messages) must not reach those bounds however much of it there is.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "server/core/module.h"

namespace kabar::server {

// The bytes of stanzas queued at once by a paced sender (the last one of a batch may pass it).
inline constexpr std::size_t kPaceBatchBytes = 256 * 1024;

// Sends `stanzas` (serialized) to `to` in order, paced as above. On the session's shard. When the
// session ends first, what was not queued yet is dropped.
void send_paced(const SessionPtr& to, std::vector<std::string> stanzas,
                std::size_t batch_bytes = kPaceBatchBytes);

}  // namespace kabar::server
