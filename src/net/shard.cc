#include "net/shard.h"

namespace kabar::net {

void Shard::defer(std::shared_ptr<Deferred> d) {
  if (in_event) {
    to_flush.push_back(std::move(d));
  } else {
    boost::asio::post(*io, [d = std::move(d)] { d->run_deferred(); });
  }
}

EventScope::EventScope(Shard& shard) : shard_(shard), outer_(!shard.in_event) {
  shard_.in_event = true;
}

EventScope::~EventScope() {
  if (!outer_) return;
  // A flush may append more (a callback run once bytes are written): the loop reaches those too.
  auto& list = shard_.to_flush;
  for (std::size_t i = 0; i < list.size(); ++i) list[i]->run_deferred();
  list.clear();
  shard_.in_event = false;
}

}  // namespace kabar::net
