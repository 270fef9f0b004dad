#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>

#include "client/filetransfer_impl.h"
#include "xmpp/jid.h"
#include "xmpp/namespaces.h"
#include "xmpp/scram.h"
#include "xmpp/stanza.h"

namespace kabar::client {

awaitable<void> FileTransfer::Impl::accept_loop(SessionPtr s) {
  while (s->acceptor && s->acceptor->is_open() && !s->closed) {
    tcp::socket sock(io);
    error_code ec;
    co_await s->acceptor->async_accept(sock, asio::redirect_error(use_awaitable, ec));
    if (ec) co_return;
    if (++s->accepted > 16 || s->direct) continue;  // bound what strangers can make us do
    auto p = std::make_unique<tcp::socket>(std::move(sock));
    bool ok = false;
    {
      Watchdog w(io, *p, kConnectTimeout);
      ok = co_await socks5_server(*p, s->direct_dst);
    }
    if (ok && !s->direct && !s->closed) {
      s->direct = std::move(p);
      s->notify();
    }
  }
}

// The bytestream broke while we sent: when the contact ended the session (its session-terminate,
// or its going offline), that is why, and unless its connection broke too, offering the file
// again would not help; else the caller offers it again. The contact's word may come a moment
// after the bytestream's end: it is waited for briefly.
awaitable<Error> FileTransfer::Impl::send_broke(SessionPtr s, std::string what,
                                                std::uint64_t done) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  std::optional<std::string> reason;
  while (!reason && !s->cancelled && !s->closed) {
    if (!s->actions.empty()) {
      jingle::Action a = std::move(s->actions.front());
      s->actions.pop_front();
      if (a.action == "session-terminate") reason = a.reason;
      continue;
    }
    if (!s->iqs.empty()) {
      client->send_stanza(
          xmpp::make_error_reply(s->iqs.front(), xmpp::ErrorType::kCancel, "not-acceptable"));
      s->iqs.pop_front();
      continue;
    }
    const bool more = co_await wait(*s, until);
    if (!more) break;
  }
  const std::string counted =
      " after " + std::to_string(done) + " of " + std::to_string(s->file.size) + " bytes";
  if (!reason) co_return err(Errc::kDisconnected, what + counted);
  s->closed = true;  // nothing more to tell the contact
  // A connection that broke on its side (or its going offline) may work again: offered again.
  // Anything else is the contact's decision (cancel, a full disk, ...): that is the end.
  const bool broke =
      *reason == "connectivity-error" || *reason == "failed-transport" || *reason == "gone";
  co_return err(broke ? Errc::kDisconnected : Errc::kNotAllowed,
                "the contact " + stop_reason_text(*reason) + counted);
}

awaitable<Error> FileTransfer::Impl::stream_file(SessionPtr s, tcp::socket& sock, int fd,
                                                 std::uint64_t offset) {
  std::vector<char> buf(kChunk);
  std::uint64_t done = offset;
  progress(*s, done);
  while (done < s->file.size) {
    std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, s->file.size - done));
    ssize_t n = ::pread(fd, buf.data(), want, static_cast<off_t>(done));
    if (n <= 0) co_return err(Errc::kBadInput, "reading the file failed");
    error_code ec;
    co_await asio::async_write(sock, asio::buffer(buf.data(), static_cast<std::size_t>(n)),
                               asio::redirect_error(use_awaitable, ec));
    if (ec) co_return co_await send_broke(s, "the bytestream broke: " + ec.message(), done);
    done += static_cast<std::uint64_t>(n);
    progress(*s, done);
  }
  co_return Error{};
}

awaitable<Error> FileTransfer::Impl::send_ibb(SessionPtr s, int fd, std::uint32_t block,
                                              std::uint64_t offset) {
  xml::Element open("iq", "jabber:client");
  open.set_attr("type", "set").set_attr("to", s->peer);
  open.add_child("open", jingle::kIbb)
      .set_attr("sid", s->ibb_sid)
      .set_attr("block-size", std::to_string(block))
      .set_attr("stanza", "iq");
  auto r = co_await client->send_iq(std::move(open));
  if (std::string c = Client::iq_condition(r); !c.empty())
    co_return err(Errc::kNotAllowed, "the contact refused the in-band bytestream (" + c + ")");
  std::vector<char> buf(block);
  std::uint64_t done = offset;
  std::uint16_t seq = 0;
  progress(*s, done);
  // One block in flight at a time (XEP-0047 §2.2: wait for each acknowledgement).
  while (done < s->file.size) {
    std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(block, s->file.size - done));
    ssize_t n = ::pread(fd, buf.data(), want, static_cast<off_t>(done));
    if (n <= 0) co_return err(Errc::kBadInput, "reading the file failed");
    xml::Element data("iq", "jabber:client");
    data.set_attr("type", "set").set_attr("to", s->peer);
    data.add_child("data", jingle::kIbb)
        .set_attr("sid", s->ibb_sid)
        .set_attr("seq", std::to_string(seq++))
        .add_text(xmpp::base64_encode(std::string_view(buf.data(), static_cast<std::size_t>(n))));
    auto dr = co_await client->send_iq(std::move(data));
    if (std::string c = Client::iq_condition(dr); !c.empty())
      co_return co_await send_broke(s, "the in-band bytestream broke (" + c + ")", done);
    done += static_cast<std::uint64_t>(n);
    progress(*s, done);
  }
  xml::Element close("iq", "jabber:client");
  close.set_attr("type", "set").set_attr("to", s->peer);
  close.add_child("close", jingle::kIbb).set_attr("sid", s->ibb_sid);
  co_await client->send_iq(std::move(close));
  co_return Error{};
}

// After the bytes: the receiver checks the hash and ends the session.
// Once every byte is out, whichever the path: the receiver's verdict (its hash check) is the
// outcome, recorded in `result` when it is a success.
awaitable<Error> FileTransfer::Impl::sent_all(SessionPtr s, TransferResult* result) {
  Error v = co_await wait_for_verdict(s);
  if (!v && result) {
    result->bytes = s->file.size;
    result->hash_checked = true;
  }
  co_return v;
}

awaitable<Error> FileTransfer::Impl::wait_for_verdict(SessionPtr s) {
  // A relay may have taken all our bytes into its memory and still be passing them on (Prosody's
  // mod_proxy65 does): allow the rest to drain at 1 MiB/s before giving up.
  const auto patience = std::chrono::seconds(120 + s->file.size / (1024 * 1024));
  while (true) {
    auto a = co_await next_action(*s, patience);
    if (!a) co_return err(Errc::kTimeout, "the contact did not confirm the file");
    if (a->action != "session-terminate") continue;
    if (a->reason == "success") co_return Error{};
    co_return err(a->reason == "gone" ? Errc::kDisconnected : Errc::kProtocol,
                  "the contact " + stop_reason_text(a->reason));
  }
}

awaitable<Error> FileTransfer::Impl::send_file(std::string to, std::string path,
                                               TransferResult* result) {
  auto self = shared_from_this();
  auto j = xmpp::Jid::parse(to);
  if (!j || j->resource().empty())
    co_return err(Errc::kBadInput, "'" + to + "' is not a full JID (user@domain/resource)");
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st {};
  if (fd.fd < 0 || ::fstat(fd.fd, &st) != 0 || !S_ISREG(st.st_mode))
    co_return err(Errc::kBadInput, "cannot read the file " + path);
  auto s = std::make_shared<Session>(io);
  s->sending = true;
  s->sid = random_id();
  s->peer = j->str();
  s->initiator = me();
  s->responder = s->peer;
  s->s5b_sid = random_id();
  s->ibb_sid = random_id();
  s->file.name = jingle::safe_file_name(path);
  s->file.size = static_cast<std::uint64_t>(st.st_size);
  std::string md5;
  {
    Hashes h;
    std::vector<char> buf(kChunk);
    ssize_t n;
    while ((n = ::read(fd.fd, buf.data(), buf.size())) > 0)
      h.update(buf.data(), static_cast<std::size_t>(n));
    if (n < 0) co_return err(Errc::kBadInput, "reading the file failed");
    s->file.sha256 = h.sha256.final();
    md5 = to_hex(h.md5.final());
  }
  if (result) {
    result->peer = s->peer;
    result->path = path;
    result->sha256 = to_hex(s->file.sha256);
  }
  bool use_si = owner->options.protocol == TransferOptions::Protocol::kSi;
  if (owner->options.protocol == TransferOptions::Protocol::kAuto) {
    // XEP-0115 caps when the contact's presence carried a verified hash (no question asked),
    // else XEP-0030 disco#info: Jingle FT when it announces it, else stream initiation if it has
    // that.
    std::optional<std::vector<std::string>> features = co_await client->features_of(s->peer);
    bool jft = false, sift = false;
    if (features)
      for (const std::string& f : *features) {
        if (f == jingle::kFileTransfer) jft = true;
        if (f == jingle::kSiFileTransfer) sift = true;
      }
    use_si = !jft && sift;
    // An answer that announces neither: its client cannot take a file peer to peer (a caller can
    // upload it instead). No answer at all: try Jingle.
    if (features && !jft && !sift)
      co_return err(Errc::kUnsupported,
                    s->peer +
                        "'s client does not support Jingle file transfer (XEP-0234) or "
                        "stream initiation (XEP-0096)");
  }
  if (result) result->protocol = use_si ? "si" : "jingle";
  sessions[s->sid] = s;
  // Not one ?: expression: GCC 12 mishandles co_await in a conditional operator.
  Error e;
  if (use_si) {
    e = co_await run_si_sender(s, fd.fd, md5, result);
    end(s);
  } else {
    // A transfer broken off is offered again while we are online; the receiver answers with the
    // offset it has (XEP-0234 §8), so only the rest travels.
    const int attempts = std::max(1, owner->options.resume_attempts + 1);
    Error first;
    for (int i = 0; i < attempts; ++i) {
      if (i > 0) {
        auto next = std::make_shared<Session>(io);
        next->sending = true;
        next->sid = random_id();
        next->peer = s->peer;
        next->initiator = me();
        next->responder = s->peer;
        next->s5b_sid = random_id();
        next->ibb_sid = random_id();
        next->file = s->file;
        s = next;
        sessions[s->sid] = s;
        if (result) ++result->attempts;
      }
      e = co_await run_sender(s, fd.fd, result);
      end(s);
      if (s->cancelled || cancelled) {
        e = err(Errc::kCancelled,
                "stopped; the receiver keeps what arrived, so sending the "
                "file again resumes");
        break;
      }
      if (i > 0 && e.code == Errc::kUnsupported) {
        // The contact's client took part of the file and now does not take the offer (gone,
        // most likely): what broke off is the news, not a client without file transfer (which
        // a caller would answer with an upload).
        e = err(Errc::kDisconnected, first.message + "; offered again, " + e.message);
        break;
      }
      if (i == 0) first = e;
      if (e.code != Errc::kDisconnected || !client->connected() || i + 1 == attempts) break;
      asio::steady_timer t(io, std::chrono::seconds(1));
      error_code ig;
      co_await t.async_wait(asio::redirect_error(use_awaitable, ig));
      if (!client->connected()) break;
    }
  }
  if (result) result->error = e;
  co_return e;
}

awaitable<Error> FileTransfer::Impl::run_sender(SessionPtr s, int fd, TransferResult* result) {
  const TransferOptions opts = owner->options;  // the owner may go while we await
  std::vector<jingle::Candidate> candidates;
  s->direct_dst = jingle::socks5_dst(s->s5b_sid, s->initiator, s->responder);
  if (opts.direct) {
    error_code ec;
    auto acc = std::make_unique<tcp::acceptor>(io);
    acc->open(tcp::v4(), ec);
    if (!ec) acc->bind(tcp::endpoint(tcp::v4(), 0), ec);
    if (!ec) acc->listen(8, ec);
    if (!ec) {
      std::uint16_t port = acc->local_endpoint(ec).port();
      s->acceptor = std::move(acc);
      std::uint16_t pref = 65535;
      for (const std::string& a : local_addresses()) {
        jingle::Candidate c;
        c.cid = "d" + random_id();
        c.host = a;
        c.port = port;
        c.jid = s->initiator;
        c.type = "direct";
        c.priority = jingle::candidate_priority("direct", pref--);
        candidates.push_back(c);
      }
      asio::co_spawn(io, accept_loop(s), asio::detached);
    }
  }
  if (opts.proxy) {
    co_await discover_proxy();
    if (proxy) candidates.push_back(*proxy);
  }
  jingle::Action init = action(*s, "session-initiate");
  init.initiator = s->initiator;
  init.file = s->file;
  init.file->range_offset = 0;  // XEP-0234 §8: we can send from an offset (resume)
  init.transport.kind = jingle::Transport::Kind::kS5b;
  init.transport.sid = s->s5b_sid;
  init.transport.dstaddr = s->direct_dst;
  init.transport.candidates = candidates;
  auto r = co_await send_jingle(*s, init);
  if (std::string c = Client::iq_condition(r); !c.empty())
    co_return err(Errc::kUnsupported, c == "timeout" ? s->peer + " did not answer the offer"
                                                     : s->peer + " refused the offer (" + c + ")");
  // Wait for the answer.
  auto accepted = co_await next_action(*s, opts.accept_timeout);
  if (!accepted) {
    terminate(*s, "timeout");
    co_return err(Errc::kTimeout, "the contact did not accept the file in time");
  }
  if (accepted->action == "session-terminate")
    co_return err(accepted->reason == "gone" ? Errc::kUnsupported : Errc::kNotAllowed,
                  accepted->reason == "gone"
                      ? "the contact went offline before answering"
                      : "the contact declined the file (" + accepted->reason + ")");
  if (accepted->action != "session-accept") {
    terminate(*s, "failed-application");
    co_return err(Errc::kProtocol, "unexpected " + accepted->action + " from the contact");
  }
  // XEP-0234 §8: the receiver already has the first `offset` bytes (an earlier, broken
  // transfer) and asks for the rest.
  std::uint64_t offset = 0;
  if (accepted->file && accepted->file->range_offset) {
    if (*accepted->file->range_offset > s->file.size) {
      terminate(*s, "failed-application");
      co_return err(Errc::kProtocol, "the contact asked for a range past the end of the file");
    }
    offset = *accepted->file->range_offset;
  }
  if (result) result->resumed_from = offset;
  // We do not try the responder's candidates (ours are enough, and a proxy covers the rest):
  // XEP-0260 §2.3 lets us say so with candidate-error.
  {
    jingle::Action ce = action(*s, "transport-info");
    ce.transport.kind = jingle::Transport::Kind::kS5b;
    ce.transport.sid = s->s5b_sid;
    ce.transport.candidate_error = true;
    co_await send_jingle(*s, ce);
  }
  std::string used;
  bool their_error = false;
  while (used.empty() && !their_error) {
    auto a = co_await next_action(*s, kStepTimeout);
    if (!a) {
      terminate(*s, "timeout");
      co_return err(Errc::kTimeout, "the contact did not report on the candidates");
    }
    if (a->action == "session-terminate")
      co_return err(Errc::kNotAllowed, "the contact " + stop_reason_text(a->reason));
    if (a->action != "transport-info") continue;
    if (!a->transport.candidate_used.empty()) used = a->transport.candidate_used;
    if (a->transport.candidate_error) their_error = true;
  }
  if (!used.empty()) {
    auto c = std::find_if(candidates.begin(), candidates.end(),
                          [&](const jingle::Candidate& x) { return x.cid == used; });
    if (c == candidates.end()) {
      terminate(*s, "failed-transport");
      co_return err(Errc::kProtocol, "the contact used a candidate we did not offer");
    }
    std::unique_ptr<tcp::socket> sock;
    std::string kind;
    if (c->type == "proxy") {
      kind = "s5b-proxy";
      sock = co_await connect_streamhost(*c, s->direct_dst);
      bool activated = false;
      if (sock) activated = co_await activate_at_proxy(c->jid, s->s5b_sid, s->responder);
      jingle::Action info = action(*s, "transport-info");
      info.transport.kind = jingle::Transport::Kind::kS5b;
      info.transport.sid = s->s5b_sid;
      if (activated)
        info.transport.activated = c->cid;
      else
        info.transport.proxy_error = true;
      co_await send_jingle(*s, info);
      if (!activated) sock.reset();
    } else {
      kind = "s5b-direct";
      auto until = std::chrono::steady_clock::now() + kConnectTimeout;
      while (!s->direct && std::chrono::steady_clock::now() < until) {
        s->signal.expires_at(until);
        error_code ec;
        co_await s->signal.async_wait(asio::redirect_error(use_awaitable, ec));
      }
      sock = std::move(s->direct);
    }
    if (sock) {
      if (result) result->transport = kind;
      Error e = co_await stream_file(s, *sock, fd, offset);
      if (e) {
        if (!s->closed) terminate(*s, "connectivity-error");  // unless the contact ended it
        co_return e;
      }
      co_return co_await sent_all(s, result);
    }
  }
  // No SOCKS5 path: XEP-0260 §2.5 fallback, transport-replace to in-band bytestreams.
  if (!opts.ibb) {
    terminate(*s, "connectivity-error");
    co_return err(Errc::kUnreachable, "no SOCKS5 candidate worked and in-band transfer is off");
  }
  jingle::Action rep = action(*s, "transport-replace");
  rep.transport.kind = jingle::Transport::Kind::kIbb;
  rep.transport.sid = s->ibb_sid;
  rep.transport.block_size = std::clamp<std::uint32_t>(opts.ibb_block_size, 1, 65535);
  auto rr = co_await send_jingle(*s, rep);
  if (std::string c = Client::iq_condition(rr); !c.empty()) {
    terminate(*s, "failed-transport");
    co_return err(Errc::kNotAllowed, "the contact refused the in-band fallback (" + c + ")");
  }
  std::uint32_t block = rep.transport.block_size;
  while (true) {
    auto a = co_await next_action(*s, kStepTimeout);
    if (!a) {
      terminate(*s, "timeout");
      co_return err(Errc::kTimeout, "the contact did not accept the in-band fallback");
    }
    if (a->action == "session-terminate")
      co_return err(Errc::kNotAllowed, "the contact " + stop_reason_text(a->reason));
    if (a->action == "transport-reject") {
      terminate(*s, "failed-transport");
      co_return err(Errc::kNotAllowed, "the contact rejected the in-band fallback");
    }
    if (a->action == "transport-accept") {
      // XEP-0261 §2: the responder may ask for smaller blocks.
      if (a->transport.kind == jingle::Transport::Kind::kIbb && a->transport.block_size > 0)
        block = std::min(block, a->transport.block_size);
      break;
    }
  }
  if (result) result->transport = "ibb";
  if (Error e = co_await send_ibb(s, fd, block, offset)) {
    if (!s->closed) terminate(*s, "connectivity-error");  // unless the contact ended it
    co_return e;
  }
  co_return co_await sent_all(s, result);
}

}  // namespace kabar::client
