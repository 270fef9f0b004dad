// Stanzas a session had queued for its client and that never reached it: the session ended
// (its connection failed, it was cut for not reading, it timed out, the server stopped) before
// writing them, or, with stream management (XEP-0198), before the client acknowledged them.
// They are routed again as if the resource had gone before they arrived (RFC 6121 §8.5,
// XEP-0198 §5): another resource, else offline storage, else an error to the sender. Nothing a
// session queued is dropped in silence.
#pragma once

#include <boost/asio.hpp>
#include <utility>  // before Asio: Boost 1.74 awaitable.hpp uses std::exchange
#include <vector>

#include "server/core/out_queue.h"

namespace kabar::server {

class C2sSession;
class Server;

// Routes `entries` (what `s` took out of its queue, in order) again; on any shard, after `s`
// has left the directory. An entry with a delivery callback belongs to whoever queued it (an
// offline message is still stored, and deleted only once delivered): it is not routed.
boost::asio::awaitable<void> hand_on_undelivered(Server& server, const C2sSession& s,
                                                 std::vector<OutQueue::Entry> entries);

}  // namespace kabar::server
