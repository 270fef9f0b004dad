#include "server/c2s_session.h"

#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <span>

#include "server/core/undelivered.h"
#include "server/modules/register/register.h"
#include "xml/serializer.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

namespace kabar::server {

namespace ns = xmpp::ns;
namespace {

constexpr std::size_t kMaxQueuedBytes = 4 * 1024 * 1024;  // a reader this far behind is dropped

// XEP-0198: the server asks for an ack after this many stanzas, or after this long with stanzas
// unacknowledged; a client further behind than Config::sm_max_unacked stanzas (or
// kMaxQueuedBytes unwritten) loses its stream, its unacknowledged stanzas handled as undelivered.
constexpr std::uint32_t kAckRequestEvery = 5;
constexpr std::int64_t kAckRequestMs = 5000;
constexpr std::string_view kAckRequest = "<r xmlns='urn:xmpp:sm:3'/>";

std::atomic<std::uint64_t> g_serial{0};

// Buffers per write (one sendmsg).
constexpr std::size_t kMaxBuffers = 64;

// What the negotiator offers and allows: the server's configuration, and next to <bind/> the
// stream features the modules registered (legacy session, roster versioning, pre-approval, ...).
xmpp::stream::ServerOptions negotiator_options(const Server& server, const net::Security& sec) {
  const Config& cfg = server.config();
  xmpp::stream::ServerOptions o;
  o.domain = cfg.domain;
  // kabard always has a certificate (generated when none is given); over WebSocket TLS is the
  // connection's, never STARTTLS (RFC 7395 §3.8).
  o.tls_available = sec.starttls;
  o.allow_plaintext = cfg.allow_plaintext;
  o.allow_registration = cfg.allow_registration;
  o.bound_features = server.modules().stream_features();
  // RFC 6120 §6.4.5: the stream is closed after this many failed attempts.
  o.max_auth_failures = 3;
  return o;
}

}  // namespace

C2sSession::C2sSession(Server& server, Shard& shard, std::unique_ptr<net::Transport> transport)
    : server_(server),
      shard_(shard),
      transport_(std::move(transport)),
      // Until authenticated the stanza limit is the small pre-auth one: an unauthenticated
      // connection can hold no more than that of an unfinished element (RFC 6120 §13.12: limit
      // the size of stanzas before authentication, e.g. to 10,000 bytes). Nothing is
      // forwarded as bytes before bind, so no copy of the element's bytes is kept either.
      parser_(*this, xml::StreamLimits{std::min(server.config().preauth_stanza_bytes,
                                                server.config().max_stanza_bytes),
                                       32, 64, 0}),
      negotiator_(std::make_unique<xmpp::stream::ServerNegotiator>(
          negotiator_options(server, transport_->security()))) {
  serial_ = ++g_serial;
  peer_addr_ = transport_->peer_address();
  created_ms = last_read_ms = server.now_ms();
}

C2sSession::~C2sSession() = default;

void C2sSession::start() {
  shard_.sessions[this] = weak_from_this();
  transport_->start(*this);
}

bool C2sSession::bind_for_test(const xmpp::Jid& full) {
  username_ = full.local();
  parser_.set_max_stanza_bytes(server_.config().max_stanza_bytes);
  parser_.set_max_kept_bytes(kKeptBytes);
  jid_ = full;
  jid_str_ = jid_.str();
  std::string escaped;
  xml::escape_attr(jid_str_, escaped);
  jid_plain_ = escaped == jid_str_;
  if (server_.bind(shared_from_this())) return false;
  bound_ = true;
  negotiator_.reset();
  stream_open_ = true;
  return true;
}

awaitable<void> C2sSession::end() {
  if (ended_) co_return;
  ended_ = true;
  closing_ = true;
  if (closed_at_ms == 0) closed_at_ms = server_.now_ms();
  // A stream error queued as the read loop ended (bad XML, a size limit) must still reach the
  // peer before the close (RFC 6120 §4.9.1.1): let the writer finish. A peer that does not read
  // is cut off by the sweep (abort() after 5 s), which closes the connection and ends this wait.
  co_await wait_drained();
  shutdown_socket();
  // Its output goes no further: senders waiting for it read on.
  congested_.store(false, std::memory_order_relaxed);
  release_waiters();
  co_await server_.session_closed(shared_from_this());
  // Ended from elsewhere (Server::replace_session()), it has left the directory before its
  // last bytes went: what it did not deliver is routed again now (core/undelivered.h).
  if (bound_ && !undelivered_taken_) co_await hand_on_undelivered(server_, *this, take_unacked());
}

void C2sSession::spawn_end() {
  if (ended_) return;
  auto self = shared_from_this();
  asio::co_spawn(
      *shard_.io, [self]() -> awaitable<void> { co_await self->end(); }, asio::detached);
}

// Reading, driven by the transport. While idle there is no coroutine: bytes go from the read
// straight into the parser. A coroutine runs only while there are stanzas to process (they may
// wait for the store); reading pauses meanwhile.
bool C2sSession::on_bytes(std::string_view bytes) {
  last_read_ms = server_.now_ms();
  if ((!bytes.empty() && !feed(bytes)) || closing_) {
    spawn_end();
    return false;
  }
  return true;
}

bool C2sSession::on_read_done() {
  if (!inbox_.empty() || start_tls_) {
    processing_ = true;
    auto self = shared_from_this();
    asio::co_spawn(
        *shard_.io, [self]() -> awaitable<void> { co_await self->process_batch(); },
        asio::detached);
    return false;
  }
  if (peer_closed_) {
    close();
    spawn_end();
    return false;
  }
  if (!waiting_for_.empty()) [[unlikely]] {
    // A recipient of what was just read is congested: no more until it drains.
    read_held_ = true;
    return false;
  }
  return true;
}

void C2sSession::on_peer_closed() { peer_closed_ = true; }

void C2sSession::on_transport_closed() {
  if (detached_ || handed_over_) return;  // the old connection's last word
  if (resumable_ && bound_ && !closing_) {
    detach();
    announce_detached();
    return;
  }
  closing_ = true;
  inbox_.clear();
  spawn_end();
}

void C2sSession::set_resumable(bool on) {
  resumable_ = on;
  out_.keep_unacked(on);
}

void C2sSession::detach() {
  detached_ = true;
  detached_at_ms = server_.now_ms();
  spdlog::info("c2s #{}: {} detached from its connection", serial_, jid_str_);
  inbox_.clear();
  writing_ = false;
  // Operations of the old connection may still be queued with a pointer to it: it goes once
  // they have run (the loop runs handlers in order, and those were queued when it closed).
  transport_->abandon();
  asio::post(*shard_.io, [t = std::move(transport_)] {});
  notify_drained();
}

void C2sSession::announce_detached() {
  // Not from hand_over(): a session resumed over a connection still open is not waiting.
  if (server_.modules().handlers(SessionEvent::kDetached).empty()) return;
  asio::co_spawn(*shard_.io, server_.fire(SessionEvent::kDetached, shared_from_this()),
                 asio::detached);
}

void C2sSession::attach(std::unique_ptr<net::Transport> transport) {
  transport_ = std::move(transport);
  detached_ = false;
  peer_addr_ = transport_->peer_address();
  last_read_ms = server_.now_ms();
  ping_sent_ms = 0;
  // The new connection's stream is open already: the parser starts inside one, and nothing of
  // the old stream's bytes is written again.
  parser_.reset();
  continuing_stream_ = true;
  std::string header = "<stream:stream xmlns='jabber:client' xmlns:stream='";
  header += ns::kStream;
  header += "'>";
  feed(header);
  continuing_stream_ = false;
  stream_open_ = true;
  out_.rewind();
  // XEP-0352 §5.2: the continued stream starts active.
  for (auto& e : release_hold()) out_.push(std::move(e));
  spdlog::info("c2s #{} {}: {} attached; {} stanzas to write again", serial_, peer_addr_, jid_str_,
               out_.unacked());
  transport_->start(*this);
  if (out_.has_unwritten() && !flush_posted_) {
    flush_posted_ = true;
    shard_.defer(shared_from_this());
  }
}

void C2sSession::enable_sm(bool resumable, std::int64_t resume_window_ms) {
  sm_ = true;
  resumable_ = resumable;
  resume_window_ms_ = resume_window_ms;
  handled_in_ = 0;
  since_request_ = 0;
  last_request_ms_ = server_.now_ms();
  out_.start_counting();
  logs_messages_.store(true, std::memory_order_relaxed);
}

std::function<void(bool)> C2sSession::durable_later() {
  // The stanza being handled is counted once its handling returns (handled_in()).
  const std::uint32_t index = handled_in_ + 1;
  if (!pending_commits_.empty() && pending_commits_.back().index == index) {
    ++pending_commits_.back().count;
  } else {
    pending_commits_.push_back(PendingCommit{index, 1});
  }
  return [self = shared_from_this(), index](bool ok) {
    asio::post(*self->shard_.io, [self, index, ok] { self->committed(index, ok); });
  };
}

void C2sSession::committed(std::uint32_t index, bool ok) {
  if (handed_over_) {
    // Resumed on another stream, which took the waiting commits with the rest.
    if (auto next = successor_.lock()) {
      asio::post(*next->shard_.io, [next, index, ok] { next->committed(index, ok); });
    }
    return;
  }
  for (auto it = pending_commits_.begin(); it != pending_commits_.end(); ++it) {
    if (it->index != index) continue;
    if (--it->count == 0) pending_commits_.erase(it);
    break;
  }
  if (!ok) {
    // Not durable, so never acknowledged: the client sends it again on its next stream.
    stream_error("internal-server-error", "a message could not be stored");
    return;
  }
  pay_owed_ack();
}

void C2sSession::answer_ack_request() {
  ack_owed_ = true;
  ack_target_ = handled_in_;
  ack_removals_ = removals_issued_;
  pay_owed_ack();
}

void C2sSession::removals_later() {
  const std::uint64_t seq = ++removals_issued_;
  auto wait = [self = shared_from_this(), seq]() -> awaitable<void> {
    // A failed commit changes nothing here: the removals may come back after a crash, as
    // undelivered messages do.
    co_await self->server_.log_committed(false);
    self->removals_done_ = std::max(self->removals_done_, seq);
    self->pay_owed_ack();
  };
  asio::co_spawn(*shard_.io, std::move(wait), asio::detached);
}

void C2sSession::pay_owed_ack() {
  if (!ack_owed_ || closing_ || removals_done_ < ack_removals_) return;
  const std::uint32_t h = durable_h();
  // Modulo 2^32 (XEP-0198 §4): h has reached the target when the difference is "positive".
  if (static_cast<std::int32_t>(h - ack_target_) < 0) return;
  ack_owed_ = false;
  send_nonza("<a xmlns='urn:xmpp:sm:3' h='" + std::to_string(h) + "'/>");
}

bool C2sSession::ack(std::uint32_t h) {
  if (!out_.ack(h)) return false;
  out_.run_written();  // what the ack made certain (offline messages are deleted)
  return true;
}

void C2sSession::request_ack() {
  since_request_ = 0;
  last_request_ms_ = server_.now_ms();
  send_stream_level(std::string(kAckRequest));
}

std::vector<OutQueue::Entry> C2sSession::take_unacked() {
  std::vector<OutQueue::Entry> out = std::move(undelivered_);
  undelivered_.clear();
  for (auto& e : out_.take_unacked()) out.push_back(std::move(e));
  // What the hold kept came after every queued stanza of its sender (it lets a sender's
  // held stanzas go before that sender's next one is queued).
  for (auto& e : release_hold()) out.push_back(std::move(e));
  undelivered_taken_ = true;
  return out;
}

void C2sSession::undeliverable(OutQueue::Entry e) {
  // Stream-level bytes belong to one connection; an unbound stream has no stanza to route.
  if (!e.stanza || !bound_) return;
  if (!undelivered_taken_) {
    undelivered_.push_back(std::move(e));  // handed on with the rest at the session's end
    return;
  }
  // The session's end has handed on its queue already: this one (routed here just before the
  // session left the directory) follows alone.
  std::vector<OutQueue::Entry> one;
  one.push_back(std::move(e));
  auto hand_on = [self = shared_from_this(), one = std::move(one)]() mutable -> awaitable<void> {
    co_await hand_on_undelivered(self->server_, *self, std::move(one));
  };
  asio::co_spawn(*shard_.io, std::move(hand_on), asio::detached);
}

bool C2sSession::sm_tick(std::int64_t now_ms) {
  if (!sm_ || handed_over_) return detached_;
  if (detached_) {
    // XEP-0198 §5: the session is kept for the resumption window only; then it ends as a
    // cleanly closed one would (unavailable presence, its unacked stanzas undelivered).
    if (!closing_ && now_ms - detached_at_ms >= resume_window_ms_) {
      spdlog::info("c2s #{}: {} not resumed in time", serial_, jid_str_);
      close();
    }
    return true;
  }
  if (!closing_ && out_.unacked() > 0 && now_ms - last_request_ms_ >= kAckRequestMs) {
    request_ack();
  }
  return false;
}

bool C2sSession::detach_if_resumable() {
  if (!resumable_ || !bound_ || closing_ || detached_ || handed_over_) return false;
  detach();
  announce_detached();
  return true;
}

void C2sSession::begin_resume(const xmpp::Jid& full) {
  // Fixed before the directory points here (hand_over() on the old session's shard): other
  // shards read jid_str() there.
  jid_ = full;
  jid_str_ = jid_.str();
  std::string escaped;
  xml::escape_attr(jid_str_, escaped);
  jid_plain_ = escaped == jid_str_;
  resuming_ = true;
  // What is routed here from now on is logged in flight, as it was for the session resumed.
  logs_messages_.store(true, std::memory_order_relaxed);
}

void C2sSession::resume_failed() {
  resuming_ = false;
  logs_messages_.store(false, std::memory_order_relaxed);
  jid_ = xmpp::Jid();
  jid_str_.clear();
  // Nothing can have been held: the directory never pointed here.
  held_.clear();
  forwarded_.clear();
}

std::optional<C2sSession::Resumption> C2sSession::hand_over(const SessionPtr& successor) {
  if (!bound_ || !sm_ || !resumable_ || closing_ || ended_ || handed_over_) return std::nullopt;
  // XEP-0198 §5: a connection still open (the server has not noticed it died) is dropped.
  if (!detached_) detach();
  // XEP-0352 §5.2: a resumed stream starts active. What the hold kept is queued now, after the
  // unacknowledged stanzas: the new stream writes it after them.
  for (auto& e : release_hold()) out_.push(std::move(e));
  Resumption r;
  r.username = username_;
  r.available = available;
  r.priority = priority;
  r.last_presence = last_presence;
  r.ext = std::move(ext_);
  r.out = std::move(out_);
  out_ = OutQueue();
  r.handled_in = handled_in_;
  for (const PendingCommit& p : pending_commits_) r.pending_commits.emplace_back(p.index, p.count);
  pending_commits_.clear();
  r.removals_pending = removals_pending();
  r.resumable = resumable_;
  r.resume_window_ms = resume_window_ms_;
  server_.rebind(*this, successor);
  successor_ = successor;
  handed_over_ = true;
  // Ends without a trace: not bound any more, so no unavailable presence and no kClosed.
  bound_ = false;
  closing_ = true;
  closed_at_ms = server_.now_ms();
  spawn_end();
  return r;
}

bool C2sSession::adopt(Resumption r, std::uint32_t h, std::string resumed) {
  // XEP-0352 §5.2: the resumed stream starts active. (The csi module sets no hold before
  // bind; should one be set, what it kept goes after the rest, and it goes before the module
  // state it lives in is replaced.)
  std::vector<OutQueue::Entry> kept = release_hold();
  available = r.available;
  priority = r.priority;
  last_presence = std::move(r.last_presence);
  ext_ = std::move(r.ext);
  out_ = std::move(r.out);
  handled_in_ = r.handled_in;
  for (const auto& [index, count] : r.pending_commits) {
    pending_commits_.push_back(PendingCommit{index, count});
  }
  sm_ = true;
  logs_messages_.store(true, std::memory_order_relaxed);
  resumable_ = r.resumable;
  resume_window_ms_ = r.resume_window_ms;
  since_request_ = 0;
  last_request_ms_ = server_.now_ms();
  bound_ = true;
  stream_open_ = true;
  negotiator_.reset();
  resuming_ = false;
  // §5: 'h' is handled as on an <a/>, then everything still unacknowledged goes again.
  const bool h_ok = ack(h);
  out_.rewind(std::move(resumed));
  // Each sender's order holds: what reached the old session after the handover was routed
  // before what reached this one directly (the caller waited for Server::posts_settled()).
  std::vector<OutQueue::Entry> forwarded = std::move(forwarded_);
  forwarded_.clear();
  for (auto& e : forwarded) enqueue(std::move(e));
  std::vector<OutQueue::Entry> held = std::move(held_);
  held_.clear();
  for (auto& e : held) enqueue(std::move(e));
  for (auto& e : kept) enqueue(std::move(e));
  spdlog::info("c2s #{} {}: resumed {}; {} stanzas to write again", serial_, peer_addr_, jid_str_,
               out_.unacked());
  if (out_.has_unwritten() && !flush_posted_ && !writing_) {
    flush_posted_ = true;
    shard_.defer(shared_from_this());
  }
  return h_ok;
}

awaitable<void> C2sSession::process_batch() {
  bool failed = false;
  try {
    co_await process_inbox();
    // The server stops: everything read has been handled; nothing more is read.
    if (shutting_down_ && !closing_) stream_error("system-shutdown");
    if (peer_closed_) close();
    if (!closing_ && start_tls_) co_await begin_tls();
  } catch (const boost::system::system_error& e) {
    spdlog::debug("c2s #{} {}: connection ended: {}", serial_, peer_addr_, e.code().message());
    failed = true;
  } catch (const std::exception& e) {
    spdlog::error("c2s #{} {}: {}", serial_, peer_addr_, e.what());
    failed = true;
  }
  processing_ = false;
  if (failed || closing_) {
    co_await end();
    co_return;
  }
  // Detached meanwhile (XEP-0198: its connection failed while a stanza was handled): nothing to
  // read until a new connection resumes the session.
  if (transport_) read_on();
}

void C2sSession::shut_down() {
  shutting_down_ = true;
  // Stanzas being handled are finished first (process_batch() ends the stream after them).
  if (processing_) return;
  stream_error("system-shutdown");
}

void C2sSession::read_on() {
  if (!waiting_for_.empty()) {
    read_held_ = true;  // recipient_drained() reads on
    return;
  }
  read_held_ = false;
  if (transport_) transport_->read();
}

// Back-pressure. The sender notes a congested recipient on its own shard and asks to be woken;
// the recipient, on its shard, wakes its waiters once drained (or ended). The flag is read
// without a lock; a sender that saw it set too late or too early costs one post each way, and
// add_waiter() answers at once when the recipient has drained meanwhile, so no wake-up is lost.
void C2sSession::wait_for(C2sSession& to) {
  if (&to == this || closing_) return;
  for (const C2sSession* w : waiting_for_) {
    if (w == &to) return;
  }
  waiting_for_.push_back(&to);
  auto add = [to = to.shared_from_this(), sender = shared_from_this()] { to->add_waiter(sender); };
  asio::post(*to.shard_.io, std::move(add));
}

void C2sSession::add_waiter(const std::shared_ptr<C2sSession>& sender) {
  waiters_.push_back(sender);
  if (!congested() || ended_) release_waiters();
}

void C2sSession::release_waiters() {
  if (waiters_.empty()) return;
  std::vector<std::weak_ptr<C2sSession>> waiters = std::move(waiters_);
  waiters_.clear();
  for (auto& w : waiters) {
    if (auto sender = w.lock()) {
      asio::post(*sender->shard_.io, [sender, me = static_cast<const C2sSession*>(this)] {
        sender->recipient_drained(me);
      });
    }
  }
}

void C2sSession::recipient_drained(const C2sSession* to) {
  std::erase(waiting_for_, to);
  if (!waiting_for_.empty() || !read_held_) return;
  read_held_ = false;
  if (closing_ || ended_) return;
  read_on();
}

void C2sSession::check_congestion() {
  if (out_.unwritten_bytes() > kLowWatermark && !transport_closed() && !detached_) return;
  congested_.store(false, std::memory_order_relaxed);
  release_waiters();
}

void C2sSession::cut_stalled() {
  if (closing_ || ended_ || !congested_.load(std::memory_order_relaxed)) return;
  spdlog::warn("c2s #{} {}: {} bytes queued and nothing read for too long; dropping the connection",
               serial_, peer_addr_, out_.unwritten_bytes());
  if (detach_if_resumable()) {
    // XEP-0198 §5: kept for a resumption; what it holds no longer holds up its senders.
    congested_.store(false, std::memory_order_relaxed);
    release_waiters();
    return;
  }
  abort();
  spawn_end();
}

awaitable<void> C2sSession::process_inbox() {
  // After <starttls/> nothing more is read in the clear: what followed it in the same read is
  // dropped (RFC 6120 §5.3.3; the STARTTLS command-injection attack).
  while (!inbox_.empty() && !closing_ && !start_tls_) {
    std::vector<xml::Element> batch;
    batch.swap(inbox_);
    for (auto& el : batch) {
      if (closing_ || start_tls_) break;
      co_await process(std::move(el));
    }
  }
  inbox_.clear();
}

awaitable<void> C2sSession::begin_tls() {
  start_tls_ = false;
  // RFC 6120 §5.4.3.3: after <proceed/> both sides drop the stream and start TLS.
  // Wait until <proceed/> is on the wire, then handshake.
  co_await wait_drained();
  if (transport_closed()) throw boost::system::system_error(asio::error::connection_aborted);
  inbox_.clear();
  co_await transport_->start_tls();
  parser_.reset();
  // RFC 6120 §5.4.3.3: the negotiator restarts the stream; SCRAM -PLUS binds to this channel.
  const std::string& cb = transport_->security().tls_unique;
  negotiator_->tls_established(cb.empty() ? "" : "tls-unique", cb);
  negotiation_events_now();
}

bool C2sSession::feed(std::string_view bytes) {
  auto r = parser_.feed(bytes);
  if (r.status == xml::StreamParser::Status::kOk) return true;
  inbox_.clear();
  if (negotiator_) {
    negotiator_->parse_error(r.error, r.message);
    negotiation_events_now();
    return false;
  }
  switch (r.error) {
    case xml::ParseError::kRestrictedXml:
      stream_error("restricted-xml");
      break;
    case xml::ParseError::kPolicyViolation:
      stream_error("policy-violation", r.message);
      break;
    default:
      stream_error("not-well-formed");
  }
  return false;
}

void C2sSession::on_stream_open(const xml::Element& header, std::string_view default_xmlns) {
  // attach(): the new connection's stream is open already. A bound stream has no more headers.
  if (continuing_stream_ || !negotiator_) return;
  // Direct TLS (XEP-0368): the handshake was done before the first byte of the stream.
  if (secure() && !negotiator_->secure()) {
    const std::string& cb = transport_->security().tls_unique;
    negotiator_->tls_established(cb.empty() ? "" : "tls-unique", cb);
  }
  negotiator_->stream_opened(header, default_xmlns);
  negotiation_events_now();
}

// A message that can be delivered now goes from the parser's callback, as the bytes it was
// received in, without a coroutine: a chat to a contact who is online. Anything else, and
// everything after it (to keep the order), goes to process_batch().
bool C2sSession::routable_now(std::string_view name, std::string_view xmlns) const {
  return inbox_.empty() && bound_ && !closing_ && name == "message" && xmlns == ns::kClient;
}

bool C2sSession::wants_bytes(const xml::ElementHead& head) {
  // A message tap (the archive) reads the head's attributes and children's names.
  return routable_now(head.name(), head.xmlns());
}

bool C2sSession::on_element_bytes(const xml::ElementHead& head, std::string_view bytes) {
  if (!routable_now(head.name(), head.xmlns())) return false;
  std::string_view to;
  std::string_view type;
  for (std::size_t i = 0; i < head.attribute_count(); ++i) {
    const std::string_view name = head.attribute_name(i);
    if (name == "to") {
      to = head.attribute_value(i);
    } else if (name == "type") {
      type = head.attribute_value(i);
    } else if (name == "from") {
      return false;  // a 'from' of the client's own is replaced: that takes on_element()
    }
  }
  route_tried_ = true;
  if (!server_.forward_message_now(*this, head, to, type, bytes)) return false;
  route_tried_ = false;
  ++handled_in_;  // queued to the recipient: handled (XEP-0198 §4, see handled_in())
  return true;
}

void C2sSession::on_element(xml::Element&& element) {
  const bool tried = std::exchange(route_tried_, false);
  if (!tried && routable_now(element.name(), element.xmlns()) &&
      server_.route_message_now(*this, element, parser_.element_bytes())) {
    ++handled_in_;
    return;
  }
  inbox_.push_back(std::move(element));
}

void C2sSession::on_stream_close() { peer_closed_ = true; }

awaitable<void> C2sSession::process(xml::Element el) {
  if (!bound_) {
    // Authenticated, not bound: a module's nonza (XEP-0198 §5 <resume/>, or <enable/> sent
    // too early), in order with the rest.
    if (authenticated() && el.xmlns() != ns::kClient) {
      if (const NonzaHandler* h = server_.modules().nonza_handler(el.xmlns())) {
        co_await (*h)(shared_from_this(), std::move(el));
        co_return;
      }
    }
    negotiator_->element(std::move(el));
    co_await negotiate();
    co_return;
  }
  if (el.xmlns() != ns::kClient ||
      (el.name() != "message" && el.name() != "presence" && el.name() != "iq")) {
    if (const NonzaHandler* h = server_.modules().nonza_handler(el.xmlns())) {
      co_await (*h)(shared_from_this(), std::move(el));
      co_return;
    }
    stream_error("unsupported-stanza-type");
    co_return;
  }
  // RFC 6120 §8.1.2.1: the server stamps the full JID of the sender.
  el.set_attr("from", jid_.str());
  co_await server_.handle_stanza(shared_from_this(), std::move(el));
  // XEP-0198 §4: handled once the router's work for it is done (see handled_in()).
  ++handled_in_;
}

bool C2sSession::negotiation_event(xmpp::stream::Event& ev) {
  using Kind = xmpp::stream::Event::Kind;
  switch (ev.kind) {
    case Kind::kSend:
      // Headers, features, SASL, the bind result: stream-level, never counted as stanzas.
      send_stream_level(std::move(ev.data));
      return true;
    case Kind::kStartTls:
      // The handshake follows once <proceed/> is written (process_batch(), begin_tls()).
      start_tls_ = true;
      return true;
    case Kind::kRestartStream:
      // RFC 6120 §5.3.4, §6.4.6: the next stream starts with a fresh parser; whatever was
      // pipelined behind the element that ended this one is dropped.
      parser_.reset();
      inbox_.clear();
      return true;
    case Kind::kAuthFailed:
      server_.throttle().record_failure(peer_addr_, ev.user, server_.now_ms());
      return true;
    case Kind::kAuthenticated:
      username_ = ev.user;
      // The restarted stream's stanzas may be as large as the configured limit.
      parser_.set_max_stanza_bytes(server_.config().max_stanza_bytes);
      parser_.set_max_kept_bytes(kKeptBytes);
      server_.unauthenticated().release(preauth_ticket);
      spdlog::info("c2s #{} {}: authenticated as {}@{}", serial_, peer_addr_, username_,
                   server_.config().domain);
      return true;
    case Kind::kBound:
      bound_ = true;
      stream_open_ = true;
      spdlog::info("c2s #{}: bound {} (shard {})", serial_, jid_str_, shard_.index);
      return true;
    case Kind::kClosed:
      if (!ev.condition.empty()) {
        spdlog::info("c2s #{} {}: stream error {}{}{}", serial_, peer_addr_, ev.condition,
                     ev.text.empty() ? "" : ": ", ev.text);
      }
      stream_ended();
      return true;
    case Kind::kReady:  // client side only
      return true;
    case Kind::kNeedScramCredentials:
    case Kind::kVerifyPlain:
    case Kind::kBindRequest:
    case Kind::kStanza:
      return false;
  }
  return false;
}

void C2sSession::negotiation_events_now() {
  if (!negotiator_) return;
  for (xmpp::stream::Event& ev : negotiator_->take_events()) {
    if (!negotiation_event(ev)) {
      // Not emitted by the calls made outside negotiate() (see negotiation_event()).
      spdlog::error("c2s #{}: negotiation question outside negotiate() dropped", serial_);
    }
  }
}

awaitable<void> C2sSession::negotiate() {
  using Kind = xmpp::stream::Event::Kind;
  while (negotiator_ && negotiator_->has_events()) {
    // A named vector, not a temporary in the range-for: it lives across the co_awaits below.
    std::vector<xmpp::stream::Event> events = negotiator_->take_events();
    for (xmpp::stream::Event& ev : events) {
      // Closed meanwhile (a stream error from elsewhere, the connection gone): nothing more.
      if (closing_) co_return;
      if (negotiation_event(ev)) continue;
      switch (ev.kind) {
        case Kind::kNeedScramCredentials:
          co_await check_scram(std::move(ev));
          break;
        case Kind::kVerifyPlain:
          co_await check_plain(std::move(ev));
          break;
        case Kind::kBindRequest:
          co_await bind_resource(std::move(ev.jid));
          break;
        case Kind::kStanza:
          // Before authentication only a registration IQ (XEP-0077) comes here; stanzas that
          // followed the bind request come after kBound and take the bound path.
          if (bound_) {
            co_await process(std::move(*ev.element));
          } else {
            co_await handle_preauth_iq(*ev.element);
          }
          break;
        default:
          break;
      }
    }
  }
  // Bound: the negotiator is done, and an idle bound connection does not keep it.
  if (bound_) negotiator_.reset();
}

awaitable<bool> C2sSession::throttle_attempt(const std::string& user) {
  const AuthThrottle::Decision d = server_.throttle().check(peer_addr_, user, server_.now_ms());
  if (d.refuse) {
    negotiator_->refuse_auth("temporary-auth-failure");
    co_return false;
  }
  if (d.delay_ms > 0) {
    // The guessing address waits before its guess is checked (auth_throttle.h); its other
    // connections and everyone else's are served meanwhile.
    asio::steady_timer wait(*shard_.io, std::chrono::milliseconds(d.delay_ms));
    boost::system::error_code ec;
    co_await wait.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return !closing_;
}

awaitable<void> C2sSession::check_scram(xmpp::stream::Event ev) {
  if (!co_await throttle_attempt(ev.user)) co_return;
  std::optional<xmpp::ScramCredentials> creds;
  if (!ev.user.empty()) {
    auto op = [name = ev.user](store::Store& s) { return s.account(name); };
    auto account = co_await server_.db(std::move(op));
    if (closing_) co_return;
    if (account) creds = ev.hash == xmpp::ScramHash::kSha1 ? account->sha1 : account->sha256;
  }
  // No such account: the exchange goes on and fails only at its end (RFC 5802 §9).
  negotiator_->scram_credentials(std::move(creds));
}

awaitable<void> C2sSession::check_plain(xmpp::stream::Event ev) {
  if (!co_await throttle_attempt(ev.user)) co_return;
  bool ok = false;
  if (!ev.user.empty() && !ev.password.empty()) {
    // The account from the store's thread; the PBKDF2 derivation (RFC 5802 §3, thousands of
    // HMAC rounds) on the CPU pool, off both the shard and the store's thread, which serves
    // roster and offline reads meanwhile.
    auto op = [name = ev.user](store::Store& s) { return s.account(name); };
    auto account = co_await server_.db(std::move(op));
    if (closing_) co_return;
    // No such account: the same derivation on credentials no password matches, so that an
    // unknown user takes as long as a wrong password: neither the answer nor its timing may
    // tell which accounts exist (RFC 6120 §13.11, directory harvesting; SCRAM fakes a salt for
    // the same reason).
    const bool known = account.has_value();
    auto verify = [creds = known ? account->sha256 : server_.unknown_user_credentials(),
                   password = std::move(ev.password), known] {
      return xmpp::verify_password(xmpp::ScramHash::kSha256, creds, password) && known;
    };
    ok = co_await server_.cpu().run(std::move(verify));
    if (closing_) co_return;
  }
  negotiator_->plain_result(ok);
}

awaitable<void> C2sSession::bind_resource(std::string full) {
  auto jid = xmpp::Jid::parse(full);
  if (!jid) {  // the negotiator made it from prepared parts: not expected
    negotiator_->bind_refused("internal-server-error");
    co_return;
  }
  jid_ = *jid;
  jid_str_ = jid_.str();
  {
    std::string escaped;
    xml::escape_attr(jid_str_, escaped);
    jid_plain_ = escaped == jid_str_;
  }
  // RFC 6120 §7.7.2.2: the new session wins; the old one gets <conflict/>. It is ended on its
  // own shard, and its unavailable presence goes out before this one binds.
  while (auto old = server_.bind(shared_from_this())) {
    co_await server_.replace_session(old);
    if (closing_) co_return;
  }
  negotiator_->bind_accepted();
}

awaitable<void> C2sSession::handle_preauth_iq(const xml::Element& iq) {
  const Config& cfg = server_.config();
  if (!cfg.allow_registration) {
    send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
    co_return;
  }
  if (!secure() && !cfg.allow_plaintext) {
    send(xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "not-acceptable",
                                "registration requires TLS"));
    co_return;
  }
  xml::Element reply = co_await handle_register_preauth(server_, iq, peer_addr_);
  send(reply);
}

void C2sSession::send(const xml::Element& stanza, std::function<void()> on_written) {
  send_raw(xml::serialize(stanza, ns::kClient), std::move(on_written));
}

void C2sSession::send_raw(std::string data, std::function<void()> on_written) {
  OutQueue::Entry e;
  e.own = std::move(data);
  e.on_written = std::move(on_written);
  if (!on_own_shard()) {
    // From another shard: serialized there, queued here (ARCHITECTURE.md: a post to the shard).
    post_enqueue(std::move(e));
    return;
  }
  enqueue(std::move(e));
}

void C2sSession::send_logged(std::string data, std::function<void()> on_delivered) {
  OutQueue::Entry e;
  e.own = std::move(data);
  e.on_written = std::move(on_delivered);
  e.reroute = true;
  if (!on_own_shard()) {
    post_enqueue(std::move(e));
    return;
  }
  enqueue(std::move(e));
}

void C2sSession::send_stream_level(std::string data) {
  OutQueue::Entry e;
  e.own = std::move(data);
  e.stanza = false;
  enqueue(std::move(e));
}

void C2sSession::send_stream_level(const xml::Element& el) {
  send_stream_level(xml::serialize(el, ns::kClient));
}

void C2sSession::send_shared(const std::shared_ptr<const std::string>& head, std::string own,
                             const std::shared_ptr<const std::string>& tail) {
  OutQueue::Entry e;
  e.head = head;
  e.own = std::move(own);
  e.tail = tail;
  if (!on_own_shard()) {
    post_enqueue(std::move(e));
    return;
  }
  enqueue(std::move(e));
}

void C2sSession::post_enqueue(OutQueue::Entry e) {
  // Bytes on their way from other shards count toward congestion (congested()): a sender on
  // another shard sees the recipient fill up before the posts have run.
  const std::size_t n = e.size();
  posted_bytes_.fetch_add(n, std::memory_order_relaxed);
  asio::post(*shard_.io, [self = shared_from_this(), e = std::move(e), n]() mutable {
    self->posted_bytes_.fetch_sub(n, std::memory_order_relaxed);
    self->enqueue(std::move(e));
    // Senders held back by posts in flight alone (the connection took the bytes at once).
    if (!self->waiters_.empty() && !self->congested()) [[unlikely]]
      self->release_waiters();
  });
}

void C2sSession::forward(OutQueue::Entry e) {
  // Resumed on another stream (hand_over()): routed here before the directory changed.
  auto next = successor_.lock();
  if (!next || !e.stanza) return;
  if (next->on_own_shard()) {
    next->enqueue_forwarded(std::move(e));
  } else {
    asio::post(*next->shard_.io,
               [next, e = std::move(e)]() mutable { next->enqueue_forwarded(std::move(e)); });
  }
}

void C2sSession::enqueue_forwarded(OutQueue::Entry e) {
  if (handed_over_) {
    forward(std::move(e));  // resumed again meanwhile
  } else if (resuming_) {
    if (!held_.empty()) {
      spdlog::info(
          "c2s #{}: a stanza for {} came through the session it resumes after {} came "
          "directly: written before them",
          serial_, jid_str_, held_.size());
    }
    forwarded_.push_back(std::move(e));  // before what was routed here directly (held_)
  } else {
    enqueue(std::move(e));
  }
}

void C2sSession::enqueue(OutQueue::Entry e) {
  // XEP-0352: an inactive client's stanzas that can wait are kept by its hold (modules/csi).
  if (hold_ != nullptr) [[unlikely]] {
    if (e.stanza && hold_->take(*this, e)) return;
  }
  queue(std::move(e));
}

std::vector<OutQueue::Entry> C2sSession::release_hold() {
  if (hold_ == nullptr) return {};
  return std::exchange(hold_, nullptr)->release();
}

void C2sSession::queue(OutQueue::Entry e) {
  if (handed_over_) [[unlikely]] {
    forward(std::move(e));
    return;
  }
  if (resuming_) [[unlikely]] {
    held_.push_back(std::move(e));  // after <resumed/> and the resent stanzas (adopt())
    return;
  }
  if (sm_) [[unlikely]] {
    if (e.stanza && (stream_closed_ || closing_)) {
      // Too late for this stream, but the session's end hands it on as undelivered.
      undeliverable(std::move(e));
      return;
    }
    if (!e.stanza && (stream_closed_ || (transport_closed() && !detached_))) return;
    const bool stanza = e.stanza;
    // A client this far behind loses its stream; its stanzas are kept for the session's end,
    // which handles them as undelivered (never dropped).
    const bool over = stanza && (out_.unacked() >= server_.config().sm_max_unacked ||
                                 out_.unwritten_bytes() + e.size() > kMaxQueuedBytes);
    out_.push(std::move(e));
    if (out_.unwritten_bytes() > kHighWatermark && !detached_) [[unlikely]] {
      if (!congested_.load(std::memory_order_relaxed)) progress_ms_ = server_.now_ms();
      congested_.store(true, std::memory_order_relaxed);
    }
    if (over) {
      spdlog::warn("c2s #{} {}: {} stanzas unacknowledged; ending the stream", serial_, peer_addr_,
                   out_.unacked());
      stream_error("policy-violation", "too many unacknowledged stanzas");
      return;
    }
    if (stanza && !detached_ && ++since_request_ >= kAckRequestEvery) request_ack();
    if (!writing_ && !flush_posted_) {
      flush_posted_ = true;
      shard_.defer(shared_from_this());
    }
    return;
  }
  // Stanzas routed here after the stream was closed (posted from another shard) are not
  // written: nothing may follow </stream:stream>. They are routed again at the session's end
  // (core/undelivered.h). A detached session keeps them for its next connection.
  if ((transport_closed() && !detached_) || stream_closed_) [[unlikely]] {
    undeliverable(std::move(e));
    return;
  }
  if (out_.unwritten_bytes() + e.size() > kMaxQueuedBytes) [[unlikely]] {
    spdlog::warn("c2s #{} {}: client is not reading; dropping the connection", serial_, peer_addr_);
    closing_ = true;
    clear_outq();
    undeliverable(std::move(e));
    shutdown_socket();
    return;
  }
  out_.push(std::move(e));
  if (out_.unwritten_bytes() > kHighWatermark && !detached_) [[unlikely]] {
    if (!congested_.load(std::memory_order_relaxed)) progress_ms_ = server_.now_ms();
    congested_.store(true, std::memory_order_relaxed);
  }
  if (!writing_ && !flush_posted_) {
    // Written once the current event is handled: stanzas queued meanwhile go out in one write.
    flush_posted_ = true;
    shard_.defer(shared_from_this());
  }
}

void C2sSession::clear_outq() {
  // What the client did not get (without XEP-0198: what was not written; with it: what was not
  // acknowledged) is undelivered, not lost: the session's end routes it again (take_unacked()).
  for (auto& e : out_.take_unacked()) undeliverable(std::move(e));
  out_.clear();
  if (congested_.load(std::memory_order_relaxed)) check_congestion();
  notify_drained();
}

bool C2sSession::hibernate() {
  if (closing_ || ended_) return false;
  // The TLS 1.3 cipher contexts go whenever the connection is idle, also when the parser slept
  // already (a write since then, such as a ping, made them again).
  const bool keys_slept = transport_ && transport_->hibernate();
  if (!parser_.hibernate()) return keys_slept;
  // The queues' spare capacity goes too: an idle connection keeps no buffer at all.
  if (drained()) out_.release_memory();
  if (inbox_.empty()) std::vector<xml::Element>().swap(inbox_);
  return true;
}

bool C2sSession::drained() const {
  return !writing_ && !flush_posted_ && !out_.has_unwritten() &&
         !(transport_ && transport_->holds_output());
}

awaitable<void> C2sSession::wait_drained() {
  // Woken by notify_drained(); the timeout only bounds a wait nobody would end.
  while (!transport_closed() && !drained()) {
    drain_wait_ = std::make_unique<asio::steady_timer>(*shard_.io, std::chrono::seconds(5));
    boost::system::error_code ec;
    co_await drain_wait_->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    drain_wait_.reset();
  }
}

void C2sSession::notify_drained() {
  if (drain_wait_ && (transport_closed() || drained())) drain_wait_->cancel();
}

void C2sSession::flush() {
  flush_posted_ = false;
  flush_now();
  notify_drained();
}

void C2sSession::flush_now() {
  if (writing_ || transport_closed()) return;
  while (out_.has_unwritten()) {
    // Everything queued (up to kMaxBuffers pieces) in one write: one sendmsg, or one TLS batch.
    std::array<std::string_view, kMaxBuffers> bufs;
    const std::size_t count = out_.gather(bufs);
    const auto r = transport_->write(std::span<const std::string_view>(bufs.data(), count));
    out_.taken(r.taken);
    if (congested_.load(std::memory_order_relaxed)) [[unlikely]] {
      if (r.taken > 0) progress_ms_ = server_.now_ms();
      check_congestion();
    }
    if (r.status == net::Transport::WriteStatus::kFailed) {
      spdlog::debug("c2s #{}: write failed", serial_);
      // A resumable session outlives its connection (XEP-0198 §5).
      if (detach_if_resumable()) return;
      clear_outq();
      closing_ = true;
      shutdown_socket();
      return;
    }
    if (r.status == net::Transport::WriteStatus::kBlocked) {
      // The rest (and the callbacks of what the transport holds) once it can go on.
      writing_ = true;
      return;
    }
    out_.run_written();        // may queue more: the loop writes it too
    if (r.taken == 0) return;  // nothing goes out before the TLS handshake is done
  }
  if (closing_) shutdown_socket();
}

void C2sSession::on_writable() {
  writing_ = false;
  if (transport_closed()) {
    notify_drained();
    return;
  }
  out_.run_written();
  flush();
}

void C2sSession::stream_error(std::string_view condition, std::string_view text,
                              std::string_view app) {
  if (closing_) return;
  if (!on_own_shard()) {
    asio::post(*shard_.io,
               [self = shared_from_this(), c = std::string(condition), t = std::string(text),
                a = std::string(app)] { self->stream_error(c, t, a); });
    return;
  }
  if (negotiator_) {
    // Not bound yet: the negotiator knows whether our header is out (RFC 6120 §4.9.1.1).
    negotiator_->stream_error(condition, text);
    negotiation_events_now();
    return;
  }
  spdlog::info("c2s #{} {}: stream error {}{}{}", serial_, peer_addr_, condition,
               text.empty() ? "" : ": ", text);
  if (!stream_open_) {
    std::string out = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='";
    out += ns::kStream;
    out += "' version='1.0' from='";
    xml::escape_attr(server_.config().domain, out);
    out += "'>";
    send_stream_level(std::move(out));
    stream_open_ = true;
  }
  std::string err = xmpp::stream_error_xml(condition, text);
  if (!app.empty()) {
    // RFC 6120 §4.9.4: an application-specific condition goes beside the defined one.
    const std::size_t end = err.rfind("</stream:error>");
    if (end != std::string::npos) err.insert(end, app);
  }
  send_stream_level(std::move(err));
  stream_ended();
}

void C2sSession::close() {
  if (closing_) return;
  if (!on_own_shard()) {
    asio::post(*shard_.io, [self = shared_from_this()] { self->close(); });
    return;
  }
  if (negotiator_) {
    // Not bound yet: the negotiator closes its stream (</stream:stream> if ours is open).
    negotiator_->stream_closed();
    negotiation_events_now();
    return;
  }
  if (stream_open_) send_stream_level("</stream:stream>");
  stream_ended();
}

void C2sSession::stream_ended() {
  stream_closed_ = true;  // nothing may follow </stream:stream>
  closing_ = true;
  closed_at_ms = server_.now_ms();
  inbox_.clear();
  if (detached_ || read_held_) {
    // No read under way to notice the end (back-pressure held it back): end from here.
    spawn_end();
  } else if (!writing_ && !flush_posted_ && !out_.has_unwritten()) {
    shutdown_socket();
  }
}

void C2sSession::abort() {
  closing_ = true;
  clear_outq();
  shutdown_socket();
  if (detached_ || read_held_) spawn_end();
}

void C2sSession::shutdown_socket() {
  if (transport_closed()) return;
  transport_->close();
  notify_drained();
  // No read is under way to hear of the close (back-pressure held it back): the end is ours.
  if (read_held_ && !ended_) spawn_end();
}

}  // namespace kabar::server
