// One client-to-server stream (RFC 6120): stream negotiation (STARTTLS or direct TLS, SASL,
// resource binding) through an xmpp::stream::ServerNegotiator, which the session answers (store
// lookups, PBKDF2 on the CPU pool, the auth throttle, binding) and frees once the stream is
// bound; then stanzas handed to the server. It talks to its connection through a
// net::Transport (TCP/TLS, or an in-memory one in tests) and sees no socket. Lives on one shard:
// its state is touched only on that shard's thread. The send functions, stream_error() and
// close() may be called from any shard; off the session's own shard they post to it.
#pragma once

#include <atomic>
#include <boost/asio.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>  // before Asio: Boost 1.74 awaitable.hpp uses std::exchange
#include <vector>

#include "net/transport.h"
#include "server/core/out_queue.h"
#include "server/core/session_ext.h"
#include "server/server.h"
#include "xml/stream_parser.h"
#include "xmpp/jid.h"
#include "xmpp/stream/negotiator.h"

namespace kabar::server {

class C2sSession : public std::enable_shared_from_this<C2sSession>,
                   public net::TransportHandler,
                   public net::Deferred,
                   private xml::StreamHandler {
 public:
  // A session on `shard` over `transport` (TCP/TLS from a listener; a net::TestTransport in
  // unit tests), which it owns.
  C2sSession(Server& server, Shard& shard, std::unique_ptr<net::Transport> transport);
  ~C2sSession() override;

  // Joins the shard's sessions and starts reading.
  void start();
  // For unit tests of server code: makes a started session bound to the full JID `full` (of a
  // local account) as if it had authenticated and bound it, without negotiation; false if
  // another session holds that JID.
  bool bind_for_test(const xmpp::Jid& full);
  // For unit tests: authenticated as `user` (what SASL success does), not bound.
  void authenticate_for_test(std::string user) { username_ = std::move(user); }
  // The stanza write queue (counters of stanzas queued, written, acknowledged).
  const OutQueue& out_queue() const { return out_; }

  // Sessions that outlive their connection (what XEP-0198 resumption needs). Resumable, a bound
  // session whose connection dies is detached instead of ended: it stays bound, keeps every
  // stanza not acknowledged, and queues what is sent to it meanwhile. Not resumable (the
  // default), a closed connection ends the session.
  void set_resumable(bool on);
  bool detached() const { return detached_; }
  // XEP-0198 §4: the peer has handled `h` stanzas (modulo 2^32); false when that is more than
  // were written (nothing changes then). The callbacks of the stanzas it covers run.
  bool ack(std::uint32_t h);
  // Continues a detached session on `transport`, whose stream (opened, authenticated, for this
  // account) goes on where the bytes it brings start: every stanza not acknowledged is written
  // again, in order, then what was queued while detached. On the session's shard.
  void attach(std::unique_ptr<net::Transport> transport);

  // --- XEP-0198 stream management: the seams modules/sm drives (the protocol lives there).
  // Starts counting stanzas both ways from here (§4), keeps written stanzas until acked (their
  // on_written callbacks wait for the ack), and asks the client for acks. `resumable`: a dead
  // connection detaches the session for `resume_window_ms` (§5). Its own shard.
  void enable_sm(bool resumable, std::int64_t resume_window_ms);
  bool sm_enabled() const { return sm_; }
  // Stanzas received since enable_sm() whose handling has finished (modulo 2^32): the 'h' of
  // the <a/> this side sends. A message counts once routed: queued to an online recipient
  // (the byte fast path) or, taking the general path, once the router's work for it returned
  // (stored offline, bounced, queued).
  std::uint32_t handled_in() const { return handled_in_; }
  // Queues stream-level bytes (not a stanza: never counted nor resent).
  void send_nonza(std::string bytes) { send_stream_level(std::move(bytes)); }

  // --- Acknowledged means durable (store/message_log.h). An <a h/> counts a stanza only once
  // its effects are durable: a message it sent to an online recipient is committed to the
  // message log first. Any shard may ask whether messages to this session are logged (it uses
  // stream management, so it acknowledges them itself).
  bool logs_messages() const { return logs_messages_.load(std::memory_order_relaxed); }
  // On this session's shard, while it handles a stanza: an effect of that stanza (a message
  // logged) is not durable yet. The function returned (any thread, once) reports its commit;
  // `ok` false, the commit failed and the stream ends (the client sends it again elsewhere).
  std::function<void(bool ok)> durable_later();
  // Stanzas received whose handling is over and durable: handled_in() less those waiting for
  // a commit (and everything after the first of them).
  std::uint32_t durable_h() const {
    return pending_commits_.empty() ? handled_in_ : pending_commits_.front().index - 1;
  }
  // XEP-0198 §4: an <r/> is answered with durable_h() once it covers every stanza handled when
  // it came (at once when nothing waits for a commit), and once the removals of every <a/>
  // before it are committed (removals_later()).
  void answer_ack_request();
  // An <a/> from the client let logged messages go; their removal commits in the message log's
  // next gathered run. The stream goes on meanwhile; an <r/> that comes after it waits for that
  // commit, so the client can tell from the answer that those messages will not come back after
  // a crash.
  void removals_later();
  // Whether an <a/>'s removals wait for their commit (a resumption waits for it too).
  bool removals_pending() const { return removals_done_ < removals_issued_; }
  // XEP-0198 §4: asks the client for an ack now when stream management is on and stanzas wait
  // unacknowledged (offline delivery asks after each batch: the next follows the ack).
  void ask_for_ack() {
    if (sm_ && !closing_ && !detached_ && out_.unacked() > 0) request_ack();
  }
  // Queues a message logged in flight: `on_delivered` runs once its delivery is certain (written
  // without stream management, acknowledged with it); undelivered, it is routed again first
  // (OutQueue::Entry::reroute).
  void send_logged(std::string data, std::function<void()> on_delivered);
  // Stanzas of a session that is over which the client never acknowledged (those of a
  // connection that failed included) or, without stream management, that were never written,
  // in order, their callbacks not run. Once, at its end (Server::session_closed() routes them
  // again); what is sent to the session afterwards is routed again as it comes.
  std::vector<OutQueue::Entry> take_unacked();
  // The sweep's part (every second): a detached session past its window ends; a connected one
  // asks for an ack while stanzas wait unacknowledged. True when the session is detached (no
  // ping for it).
  bool sm_tick(std::int64_t now_ms);
  // The connection is presumed dead (no answer to a ping): a resumable session detaches
  // (true); otherwise nothing happens (false).
  bool detach_if_resumable();
  std::int64_t detached_at_ms = 0;

  // Resumption (§5): what a detached (or superseded) session hands to the new stream that
  // resumes it. Its state moves: the stream belongs to the new session's shard.
  struct Resumption {
    std::string username;
    bool available = false;
    int priority = 0;
    std::shared_ptr<const xml::Element> last_presence;
    SessionExt ext;
    OutQueue out;
    std::uint32_t handled_in = 0;
    std::vector<std::pair<std::uint32_t, std::uint32_t>> pending_commits;  // index, count
    bool removals_pending = false;                                         // removals_pending()
    bool resumable = false;
    std::int64_t resume_window_ms = 0;
  };
  // On the new (authenticated, unbound) session's shard, before hand_over(): takes the full
  // JID it resumes, and holds what is sent to it until adopt() (or resume_failed()).
  void begin_resume(const xmpp::Jid& full);
  void resume_failed();
  // On the old session's shard: gives its state to `successor` (the directory points at it
  // from now on; what is sent to this one still is forwarded there) and ends without a trace
  // (no unavailable presence, no kClosed); its connection, if it still has one, is dropped.
  // Nothing when it has ended or is not resumable.
  std::optional<Resumption> hand_over(const SessionPtr& successor);
  // On the new session's shard: continues the old session on this stream. `h` acknowledges
  // the old queue (false, nothing acked, when too high: the caller ends the stream);
  // `resumed` (<resumed/>) is written first, then every unacknowledged stanza again, in order,
  // then what came meanwhile.
  bool adopt(Resumption r, std::uint32_t h, std::string resumed);

  // --- A hold on what is sent to this session (XEP-0352 client state indication: modules/csi).
  // While one is set, every stanza for the session is offered to it before it is queued: the
  // hold keeps what can wait and lets the rest through, and queues what it kept later
  // (queue_held()). A kept stanza is not queued: stream management neither counts it nor
  // resends it until it is. Unset (the default), queuing pays one test of a pointer.
  class OutboundHold {
   public:
    virtual ~OutboundHold() = default;
    // A stanza for `s`, on its shard: true when the hold keeps it. Before letting `e` through
    // it may queue stanzas it kept (queue_held()): they go first.
    virtual bool take(C2sSession& s, OutQueue::Entry& e) = 0;
    // Everything kept, in order: the hold lets go for good (the session ends, or its stream is
    // resumed by another session, which starts active: XEP-0352 §5.2).
    virtual std::vector<OutQueue::Entry> release() = 0;
  };
  // On the session's shard; nullptr: none. The hold outlives its setting (a module keeps it
  // in ext<T>()); the session unsets it when it lets go (release()).
  void set_hold(OutboundHold* hold) { hold_ = hold; }
  bool has_hold() const { return hold_ != nullptr; }
  // Queues a stanza the hold kept, past the hold (its shard).
  void queue_held(OutQueue::Entry e) { queue(std::move(e)); }

  // --- Back-pressure: a slow reader slows its senders instead of being dropped.
  // Past kHighWatermark bytes of unwritten output a session is congested: a session that sends
  // it a stanza stops reading its own socket (TCP back-pressure then slows its client) until the
  // output drains below kLowWatermark, or the congested session ends. Senders to others read on.
  // The hard cap (4 MiB) and write_stall_timeout still cut a reader that stops reading.
  static constexpr std::size_t kHighWatermark = 1024 * 1024;
  static constexpr std::size_t kLowWatermark = 256 * 1024;
  // Any shard may ask (a relaxed load: the flag is advice, the post below settles races).
  bool congested() const {
    return congested_.load(std::memory_order_relaxed) ||
           posted_bytes_.load(std::memory_order_relaxed) > kHighWatermark;
  }
  // On this (the sender's) shard: a stanza of this session has been queued for `to`.
  void sent_to(C2sSession& to) {
    if (to.congested()) [[unlikely]]
      wait_for(to);
  }
  // Reading is held back until congested recipients drain (on this session's shard).
  bool waiting_for_recipients() const { return !waiting_for_.empty(); }
  // Its output is over the high watermark and the connection has taken nothing for
  // `timeout_ms`: the sweep cuts it.
  bool write_stalled(std::int64_t now_ms, std::int64_t timeout_ms) const {
    return congested_.load(std::memory_order_relaxed) && now_ms - progress_ms_ > timeout_ms;
  }
  // A congested session whose client reads nothing any more: its connection is dropped (a
  // resumable XEP-0198 session detaches) and what it had queued is routed again.
  void cut_stalled();

  // Stanzas up to this size are forwarded as received (Server::route_message_now()).
  static constexpr std::size_t kKeptBytes = 16 * 1024;

  // Queues bytes for the client; `on_written` runs once they have been handed to the kernel
  // (used to delete offline messages only after delivery).
  void send_raw(std::string data, std::function<void()> on_written = {});
  void send(const xml::Element& stanza, std::function<void()> on_written = {});
  // Queues a stanza made of bytes shared with other recipients around a part of its own (a
  // broadcast: one serialization, only the 'to' differs); written with the rest in one writev.
  void send_shared(const std::shared_ptr<const std::string>& head, std::string own,
                   const std::shared_ptr<const std::string>& tail);
  // Sends <stream:error/> and closes the stream (RFC 6120 §4.9.1.1). `app`: an
  // application-specific condition element, serialized (XEP-0198 §6 handled-count-too-high).
  void stream_error(std::string_view condition, std::string_view text = {},
                    std::string_view app = {});
  // Closes the stream cleanly (</stream:stream>) and the connection.
  void close();
  // Drops the connection at once, without flushing (a peer that does not read).
  void abort();
  bool closed() const { return closing_; }  // any shard may ask
  bool ended() const { return ended_; }     // end() has begun (its own shard)
  // The server stops (SIGTERM): nothing more is read; the stanzas already read are handled
  // (messages stored, routed), then the stream ends with <system-shutdown/>. Its own shard.
  void shut_down();
  // Stanzas read are being handled (a coroutine runs; reading waits for it).
  bool processing() const { return processing_; }
  Shard& shard() const { return shard_; }
  // Frees the XML parser of a stream idle between stanzas (it is made again when bytes come)
  // and the TLS 1.3 cipher contexts; true if it freed anything.
  bool hibernate();
  // A keepalive of the connection's own (a WebSocket ping, RFC 6455 §5.5.2; its pong counts as
  // a read); false when it has none and the server pings in XMPP (XEP-0199).
  bool ping_connection() { return transport_ && !detached_ && transport_->ping(); }
  std::int64_t closed_at_ms = 0;

  // State the server reads and writes (on this session's shard; other shards read the copy that
  // Server::publish() puts into the directory).
  const xmpp::Jid& jid() const { return jid_; }            // set before bind(), fixed afterwards
  const std::string& jid_str() const { return jid_str_; }  // jid().str(), kept
  // jid_str() as an attribute value needs no character references (nearly always).
  bool jid_str_plain() const { return jid_plain_; }
  bool bound() const { return bound_; }
  // Stream negotiation is under way: the negotiator is held (freed once bound).
  bool negotiating() const { return negotiator_ != nullptr; }
  bool authenticated() const { return !username_.empty(); }
  const std::string& username() const { return username_; }
  bool available = false;  // has sent initial presence and not gone unavailable
  int priority = 0;
  std::shared_ptr<const xml::Element> last_presence;  // for probes and new resources
  // A module's own state of this session (core/session_ext.h).
  template <typename T>
  T& ext() {
    return ext_.get<T>();
  }
  std::int64_t last_read_ms = 0;
  std::int64_t created_ms = 0;
  std::int64_t ping_sent_ms = 0;  // 0: no server ping outstanding
  // Counted by Server::unauthenticated() until authenticated (0: not counted).
  std::uint64_t preauth_ticket = 0;
  const std::string& peer_address() const { return peer_addr_; }
  std::uint64_t serial() const { return serial_; }

  // net::TransportHandler
  bool on_bytes(std::string_view bytes) override;
  bool on_read_done() override;
  void on_peer_closed() override;
  void on_transport_closed() override;
  void on_writable() override;
  bool hold_reading() const override { return !waiting_for_.empty(); }
  std::shared_ptr<void> keep_alive() override { return shared_from_this(); }
  // net::Deferred: the end-of-event flush.
  void run_deferred() override { flush(); }

 private:
  // xml::StreamHandler
  void on_stream_open(const xml::Element& header, std::string_view default_xmlns) override;
  void on_element(xml::Element&& element) override;
  void on_stream_close() override;
  bool wants_bytes(const xml::ElementHead& head) override;
  bool on_element_bytes(const xml::ElementHead& head, std::string_view bytes) override;
  bool routable_now(std::string_view name, std::string_view xmlns) const;

  awaitable<void> process_batch();
  awaitable<void> process_inbox();
  awaitable<void> begin_tls();
  // The end of a session: flush, close the connection, tell the server. Runs once.
  awaitable<void> end();
  void spawn_end();
  void flush();
  void flush_now();
  bool transport_closed() const { return !transport_ || transport_->is_closed(); }
  bool secure() const { return transport_ && transport_->security().tls; }
  bool drained() const;  // nothing queued, posted or being written
  awaitable<void> wait_drained();
  void notify_drained();
  void written(std::size_t n);
  void clear_outq();
  // Parses received bytes; on a parse error sends the matching stream error and returns false.
  bool feed(std::string_view bytes);
  awaitable<void> process(xml::Element el);
  // Negotiation: acts on the negotiator's events, in order, until it has none left, answering
  // its questions (which may wait for the store or the CPU pool). Frees it once bound.
  awaitable<void> negotiate();
  // The events the negotiator can emit without a question (kSend, kRestartStream, kClosed:
  // what stream_opened(), parse_error(), stream_error(), stream_closed() and tls_established()
  // emit), acted on at once; false for a question (left to negotiate()).
  bool negotiation_event(xmpp::stream::Event& ev);
  void negotiation_events_now();
  // The auth throttle's word on an attempt (refused: answered here, false; delayed: waits).
  awaitable<bool> throttle_attempt(const std::string& user);
  awaitable<void> check_scram(xmpp::stream::Event ev);
  awaitable<void> check_plain(xmpp::stream::Event ev);
  awaitable<void> bind_resource(std::string full);
  awaitable<void> handle_preauth_iq(const xml::Element& iq);
  // After the last bytes of a closed stream are queued: nothing more is sent or read.
  void stream_ended();
  // Stream-level bytes and elements (headers, features, SASL, errors): not stanzas, so never
  // counted or resent by stream management.
  void send_stream_level(std::string data);
  void send_stream_level(const xml::Element& el);
  void shutdown_socket();
  // The connection is gone but the session stays (set_resumable()).
  void detach();
  // Fires SessionEvent::kDetached after a detach() that leaves the session waiting.
  void announce_detached();

  bool on_own_shard() const { return shard_.on_this_thread(); }

  Server& server_;
  Shard& shard_;
  std::unique_ptr<net::Transport> transport_;
  xml::StreamParser parser_;
  bool route_tried_ = false;  // on_element_bytes() tried to route the element on_element() gets
  // Vectors, not deques: an empty std::deque still holds a 576-byte block.
  std::vector<xml::Element> inbox_;
  void enqueue(OutQueue::Entry e);
  void queue(OutQueue::Entry e);  // enqueue() past the hold
  OutboundHold* hold_ = nullptr;  // set_hold()
  // The hold lets go: what it kept, in order (nothing without one).
  std::vector<OutQueue::Entry> release_hold();
  // After hand_over(): to the successor, on its shard.
  void forward(OutQueue::Entry e);
  // On this shard: an entry the session this one resumed had been sent.
  void enqueue_forwarded(OutQueue::Entry e);
  OutQueue out_;
  bool writing_ = false;  // the transport took less than it was given: on_writable() follows
  bool flush_posted_ = false;
  bool ended_ = false;
  std::unique_ptr<asio::steady_timer> drain_wait_;  // wait_drained() sleeps on it
  std::atomic<bool> closing_{false};                // read by other shards (closed())
  bool stream_open_ = false;                        // we have sent our stream header
  bool stream_closed_ = false;                      // we have queued </stream:stream>
  bool peer_closed_ = false;
  bool resumable_ = false;
  bool detached_ = false;
  // XEP-0198 (enable_sm()).
  bool sm_ = false;
  bool resuming_ = false;     // begin_resume(): writes wait in held_
  bool handed_over_ = false;  // hand_over(): what is sent here goes to successor_
  std::uint32_t handled_in_ = 0;
  std::atomic<bool> logs_messages_{false};  // logs_messages()
  // Stanzas (by their count, handled_in_ once handled) with effects not committed yet, in
  // order, with how many commits each waits for.
  struct PendingCommit {
    std::uint32_t index;
    std::uint32_t count;
  };
  std::vector<PendingCommit> pending_commits_;
  bool ack_owed_ = false;  // an <r/> waits for durable_h() to reach ack_target_
  std::uint32_t ack_target_ = 0;
  // removals_later(): <a/>s whose removals were queued, and those committed (in order); the
  // owed ack waits until ack_removals_ are.
  std::uint64_t removals_issued_ = 0;
  std::uint64_t removals_done_ = 0;
  std::uint64_t ack_removals_ = 0;
  void committed(std::uint32_t index, bool ok);
  void pay_owed_ack();
  std::uint32_t since_request_ = 0;  // stanzas queued since our last <r/>
  std::int64_t last_request_ms_ = 0;
  std::int64_t resume_window_ms_ = 0;
  std::vector<OutQueue::Entry> held_;
  // Forwarded by the session this one resumes (stanzas routed to it before the directory
  // changed) before adopt(): written after its queue and before held_.
  std::vector<OutQueue::Entry> forwarded_;
  std::vector<OutQueue::Entry> undelivered_;  // stanzas this stream will not deliver
  bool undelivered_taken_ = false;            // take_unacked() has run
  // Back-pressure (see congested()).
  std::atomic<bool> congested_{false};
  std::atomic<std::size_t> posted_bytes_{0};  // posted here from other shards, not yet queued
  void post_enqueue(OutQueue::Entry e);
  std::int64_t progress_ms_ = 0;  // congested: when the connection last took bytes
  // Senders holding back their reads until this session's output drains (its own shard).
  std::vector<std::weak_ptr<C2sSession>> waiters_;
  // Congested recipients this session waits for (compared, never dereferenced).
  std::vector<const C2sSession*> waiting_for_;
  bool read_held_ = false;      // reading is due but held back by waiting_for_
  bool processing_ = false;     // process_batch() runs
  bool shutting_down_ = false;  // shut_down()
  void wait_for(C2sSession& to);
  void add_waiter(const std::shared_ptr<C2sSession>& sender);
  void release_waiters();
  void recipient_drained(const C2sSession* to);
  void check_congestion();
  // Resumes reading after a pause (process_batch(), back-pressure), unless held back.
  void read_on();
  // A stanza this stream will not deliver: kept for take_unacked(), or, after it, routed again
  // at once (core/undelivered.h).
  void undeliverable(OutQueue::Entry e);
  std::weak_ptr<C2sSession> successor_;
  void request_ack();
  bool continuing_stream_ = false;  // attach(): the parser is put inside the stream it continues
  bool start_tls_ = false;          // STARTTLS accepted: handshake after <proceed/> is written
  std::string peer_addr_;
  std::uint64_t serial_ = 0;

  // Until the stream is bound (nullptr afterwards: an idle bound connection does not keep it).
  std::unique_ptr<xmpp::stream::ServerNegotiator> negotiator_;
  std::string username_;
  bool bound_ = false;
  bool jid_plain_ = false;  // jid_str_plain()
  xmpp::Jid jid_;
  std::string jid_str_;
  SessionExt ext_;
};

}  // namespace kabar::server
