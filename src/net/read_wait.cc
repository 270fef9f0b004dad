#include "net/read_wait.h"

#if KABAR_READ_WAIT_NO_REARM

#include <cassert>

namespace kabar::net {

namespace detail = boost::asio::detail;

void ReadWait::start(Socket& sock, boost::asio::io_context& io, std::shared_ptr<void> keep,
                     void* target, Callback cb, bool drained) {
  assert(!pending());
  keep_ = std::move(keep);
  target_ = target;
  cb_ = cb;
  ec_ = boost::system::error_code();
  auto& impl = sock.impl_.get_implementation();
  // use_service() takes the service registry's lock and walks its list: looked up on the first
  // wait only (a socket stays with its io_context).
  if (reactor_ == nullptr) reactor_ = &boost::asio::use_service<detail::reactor>(io);
  detail::reactor& reactor = *reactor_;
  // allow_speculative: the reactor first calls do_perform() (which, while arming_, says "not
  // done") and then queues the operation without epoll_ctl. Without it, it re-arms epoll first.
  arming_ = true;
  reactor.start_op(detail::reactor::read_op, impl.socket_, impl.reactor_data_, this,
                   /*is_continuation=*/true, /*allow_speculative=*/drained);
  arming_ = false;
}

detail::reactor_op::status ReadWait::do_perform(reactor_op* base) {
  // Called by the reactor when epoll reports the socket readable (or in error, or hung up):
  // the wait is over. Called inside start() too, where the wait has only begun.
  return static_cast<ReadWait*>(base)->arming_ ? not_done : done;
}

void ReadWait::do_complete(void* owner, detail::operation* base,
                           const boost::system::error_code& /*ec*/, std::size_t /*bytes*/) {
  auto* self = static_cast<ReadWait*>(base);
  // The target may start the next wait from its callback, or be destroyed once `keep` goes
  // (which destroys this object): nothing of *self is touched after the callback.
  std::shared_ptr<void> keep = std::move(self->keep_);
  const boost::system::error_code ec = self->ec_;
  void* target = self->target_;
  Callback cb = self->cb_;
  // No owner: the io_context is being destroyed with the wait queued; only let go.
  if (owner) cb(target, ec);
}

}  // namespace kabar::net

#endif
