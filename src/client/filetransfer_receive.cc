#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>

#include "client/filetransfer_impl.h"
#include "xmpp/jid.h"
#include "xmpp/scram.h"
#include "xmpp/stanza.h"

namespace kabar::client {

void FileTransfer::Impl::start_receiving(const std::string& from, jingle::Action a) {
  auto s = std::make_shared<Session>(io);
  s->sid = a.sid;
  s->peer = from;
  s->initiator = a.initiator.empty() ? from : a.initiator;
  s->responder = me();
  s->content_name = a.content_name.empty() ? "file" : a.content_name;
  sessions[s->sid] = s;
  asio::co_spawn(io, receive(shared_from_this(), s, std::move(a)), asio::detached);
}

// A file name in `dir` that does not exist yet: name, then "name (1).ext", ...
std::string FileTransfer::Impl::unused_path(const std::string& dir, const std::string& name) {
  std::string stem = name, ext;
  if (auto dot = name.rfind('.'); dot != std::string::npos && dot > 0) {
    stem = name.substr(0, dot);
    ext = name.substr(dot);
  }
  for (int i = 0; i < 1000; ++i) {
    std::string p = dir + "/" + (i == 0 ? name : stem + " (" + std::to_string(i) + ")" + ext);
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) return p;
  }
  return {};
}

awaitable<void> FileTransfer::Impl::receive(std::shared_ptr<Impl> self, SessionPtr s,
                                            jingle::Action init) {
  TransferResult res;
  res.peer = s->peer;
  res.protocol = "jingle";
  res.error = co_await run_receiver(s, std::move(init), res);
  end(s);
  if (owner && owner->on_received) owner->on_received(res);
}

// Whether to take an offer: nullopt to accept, else why not. With OfferDecision::kAsk the
// answer comes later through decide(), or the offer times out.
awaitable<std::optional<std::string>> FileTransfer::Impl::decide_offer(SessionPtr s,
                                                                       FileOffer offer) {
  std::string declined = "declined " + offer.safe_name + " from " + s->peer;
  if (!owner || owner->accept_dir.empty()) co_return declined;
  if (owner->max_size && offer.size > owner->max_size)
    co_return declined + ": " + std::to_string(offer.size) + " bytes is over the limit";
  auto d = owner->on_offer ? owner->on_offer(offer) : OfferDecision::kAccept;
  if (d == OfferDecision::kAccept) co_return std::nullopt;
  if (d == OfferDecision::kDecline) co_return declined;
  auto until = std::chrono::steady_clock::now() + owner->options.accept_timeout;
  while (!s->decision) {
    if (!s->actions.empty()) {
      jingle::Action a = std::move(s->actions.front());
      s->actions.pop_front();
      if (a.action == "session-terminate")
        co_return s->peer + " withdrew the offer of " + offer.safe_name;
      continue;
    }
    if (!co_await wait(*s, until)) co_return declined + " (no answer in time)";
  }
  if (*s->decision) co_return std::nullopt;
  co_return declined;
}

awaitable<Error> FileTransfer::Impl::run_receiver(SessionPtr s, jingle::Action init,
                                                  TransferResult& res) {
  if (!init.file || init.transport.kind == jingle::Transport::Kind::kNone) {
    terminate(*s, "unsupported-applications");
    co_return err(Errc::kProtocol, "an offer from " + s->peer + " that is not a file transfer");
  }
  s->file = *init.file;
  if (!owner) co_return err(Errc::kDisconnected, "file transfer stopped");
  const std::string dir = owner->accept_dir;  // the owner may go while we await
  FileOffer offer;
  offer.from = s->peer;
  offer.sid = s->sid;
  offer.name = s->file.name;
  offer.safe_name = jingle::safe_file_name(s->file.name);
  offer.size = s->file.size;
  if (auto why = co_await decide_offer(s, offer)) {
    terminate(*s, "decline");
    co_return err(Errc::kNotAllowed, *why);
  }
  std::string final_path = unused_path(dir, offer.safe_name);
  Hashes hash;
  std::uint64_t got = 0;
  // XEP-0234 §8: a file with a hash can be resumed. Its partial bytes live under a name made
  // from the sender's account and the file's name, size and hash, so only the same file from
  // the same account continues it; the hash at the end checks the whole.
  bool resumable = !s->file.sha256.empty() && init.file->range_offset.has_value();
  std::string part;
  Fd fd;
  if (resumable) {
    Digest k(EVP_sha256());
    std::string id = xmpp::Jid::parse(s->peer) ? xmpp::Jid::parse(s->peer)->bare_str() : s->peer;
    id += '\n' + s->file.name + '\n' + std::to_string(s->file.size) + '\n' + s->file.sha256;
    k.update(id.data(), id.size());
    std::string key = to_hex(k.final()).substr(0, 24);
    part = dir + "/." + offer.safe_name + "." + key + ".part";
    if (!parts_in_use.insert(part).second) {
      resumable = false;  // the same file is arriving in another session right now
    } else {
      fd.fd = ::open(part.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
      struct stat st {};
      if (fd.fd >= 0 && ::fstat(fd.fd, &st) == 0 && S_ISREG(st.st_mode) &&
          static_cast<std::uint64_t>(st.st_size) < s->file.size) {
        // The bytes we have count toward the hash.
        std::vector<char> buf(kChunk);
        ssize_t n;
        while (got < static_cast<std::uint64_t>(st.st_size) &&
               (n = ::read(fd.fd, buf.data(), buf.size())) > 0) {
          hash.update(buf.data(), static_cast<std::size_t>(n));
          got += static_cast<std::uint64_t>(n);
        }
      } else if (fd.fd >= 0 && ::ftruncate(fd.fd, 0) != 0) {
        ::close(fd.fd);
        fd.fd = -1;
      }
      if (fd.fd >= 0 && ::lseek(fd.fd, static_cast<off_t>(got), SEEK_SET) < 0) {
        ::close(fd.fd);
        fd.fd = -1;
      }
    }
  }
  if (!resumable) {
    part = dir + "/." + offer.safe_name + "." + random_id() + ".part";
    fd.fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  }
  struct PartGuard {
    Impl* impl;
    std::string path;
    bool keep = false;  // a resumable part that broke off: kept for the next offer
    ~PartGuard() {
      impl->parts_in_use.erase(path);
      if (!keep) ::unlink(path.c_str());
    }
  } guard{this, part};
  if (final_path.empty() || fd.fd < 0) {
    terminate(*s, "failed-application");
    co_return err(Errc::kBadInput, "cannot create a file in " + dir);
  }
  res.path = final_path;
  res.resumed_from = got;

  jingle::Action acc = action(*s, "session-accept");
  acc.responder = s->responder;
  acc.file = s->file;
  if (resumable)
    acc.file->range_offset = got;
  else
    acc.file->range_offset.reset();
  acc.transport = init.transport;
  acc.transport.candidates.clear();
  if (acc.transport.kind == jingle::Transport::Kind::kIbb) s->ibb_sid = init.transport.sid;
  acc.transport.dstaddr.clear();
  auto r = co_await send_jingle(*s, acc);
  if (std::string c = Client::iq_condition(r); !c.empty())
    co_return err(Errc::kProtocol, "the sender did not take our acceptance (" + c + ")");
  // From here on a break keeps what arrived, when it can be resumed.
  guard.keep = resumable;

  std::unique_ptr<tcp::socket> sock;
  if (init.transport.kind == jingle::Transport::Kind::kS5b) {
    s->s5b_sid = init.transport.sid;
    auto cands = init.transport.candidates;
    std::stable_sort(cands.begin(), cands.end(),
                     [](const auto& a, const auto& b) { return a.priority > b.priority; });
    std::string dst = jingle::socks5_dst(s->s5b_sid, s->initiator, s->responder);
    const jingle::Candidate* chosen = nullptr;
    for (const auto& c : cands) {
      sock = co_await connect_streamhost(c, dst);
      if (sock) {
        chosen = &c;
        break;
      }
    }
    jingle::Action info = action(*s, "transport-info");
    info.transport.kind = jingle::Transport::Kind::kS5b;
    info.transport.sid = s->s5b_sid;
    if (chosen)
      info.transport.candidate_used = chosen->cid;
    else
      info.transport.candidate_error = true;
    co_await send_jingle(*s, info);
    // Until the sender says which pair wins (candidate-error from it: ours), or that the proxy
    // is activated, or replaces the transport.
    bool ready = false;
    while (!ready) {
      auto a = co_await next_action(*s, kStepTimeout);
      if (!a) {
        terminate(*s, "timeout");
        co_return err(Errc::kTimeout, "the sender went quiet");
      }
      if (a->action == "session-terminate")
        co_return err(Errc::kDisconnected, "the sender " + stop_reason_text(a->reason));
      if (a->action == "transport-replace") {
        if (a->transport.kind != jingle::Transport::Kind::kIbb) {
          jingle::Action rej = action(*s, "transport-reject");
          co_await send_jingle(*s, rej);
          continue;
        }
        sock.reset();
        s->ibb_sid = a->transport.sid;
        jingle::Action ta = action(*s, "transport-accept");
        ta.transport = a->transport;
        co_await send_jingle(*s, ta);
        break;
      }
      if (a->action != "transport-info") continue;
      if (a->transport.proxy_error) {
        sock.reset();
        continue;  // a transport-replace follows
      }
      if (chosen && chosen->type == "proxy") {
        ready = a->transport.activated == chosen->cid;
      } else if (chosen) {
        ready = a->transport.candidate_error || a->transport.candidate_used.empty();
      }
    }
    if (ready && sock) {
      res.transport = chosen->type == "proxy" ? "s5b-proxy" : "s5b-direct";
      std::vector<char> buf(kChunk);
      progress(*s, got);
      s->reading = sock.get();
      while (got < s->file.size) {
        std::size_t want =
            static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), s->file.size - got));
        error_code ec;
        std::size_t n = co_await sock->async_read_some(asio::buffer(buf.data(), want),
                                                       asio::redirect_error(use_awaitable, ec));
        if (ec) {
          // Why: the sender said so (a session-terminate closed the stream), or went offline.
          std::string why;
          for (const jingle::Action& a : s->actions)
            if (a.action == "session-terminate") why = "the sender " + stop_reason_text(a.reason);
          if (s->cancelled) why = "cancelled here";
          if (why.empty()) terminate(*s, "connectivity-error");
          if (why.empty()) why = "the bytestream broke (" + ec.message() + ")";
          co_return err(
              Errc::kDisconnected,
              why + " after " + std::to_string(got) + " of " + std::to_string(s->file.size) +
                  " bytes" +
                  (guard.keep ? "; they are kept, and the same file sent again resumes" : ""));
        }
        if (!write_all(fd.fd, buf.data(), n)) {
          terminate(*s, "failed-application");
          co_return err(Errc::kBadInput, "writing " + part + " failed");
        }
        hash.update(buf.data(), n);
        got += n;
        progress(*s, got);
      }
      s->reading = nullptr;
    }
  } else {
    s->ibb_sid = init.transport.sid;
  }
  if (!s->ibb_sid.empty() && got < s->file.size) {
    res.transport = "ibb";
    if (Error e = co_await receive_ibb(s, fd.fd, hash, got)) {
      terminate(*s, "connectivity-error");
      co_return err(
          e.code, e.message + " after " + std::to_string(got) + " of " +
                      std::to_string(s->file.size) + " bytes" +
                      (guard.keep ? "; they are kept, and the same file sent again resumes" : ""));
    }
  }
  if (got != s->file.size) {
    terminate(*s, "failed-transport");
    co_return err(Errc::kDisconnected, "no transport worked");
  }
  std::string digest = hash.sha256.final();
  res.sha256 = to_hex(digest);
  res.bytes = got;
  if (!s->file.sha256.empty() && digest != s->file.sha256) {
    guard.keep = false;
    terminate(*s, "media-error");
    co_return err(Errc::kProtocol, "the file from " + s->peer + " arrived damaged (SHA-256 " +
                                       res.sha256 + " is not the one offered)");
  }
  res.hash_checked = !s->file.sha256.empty();
  guard.keep = false;  // linked under its final name below, or given up
  // No overwriting: link() fails if a file of that name appeared meanwhile.
  if (::link(part.c_str(), final_path.c_str()) != 0) {
    final_path = unused_path(dir, offer.safe_name);
    if (final_path.empty() || ::link(part.c_str(), final_path.c_str()) != 0) {
      terminate(*s, "failed-application");
      co_return err(Errc::kBadInput, "cannot save the file in " + dir);
    }
    res.path = final_path;
  }
  terminate(*s, "success");
  co_return Error{};
}

awaitable<Error> FileTransfer::Impl::receive_ibb(SessionPtr s, int fd, Hashes& hash,
                                                 std::uint64_t& got) {
  bool open = false;
  std::uint16_t expect = 0;
  while (true) {
    auto until = std::chrono::steady_clock::now() + kStepTimeout;
    while (s->iqs.empty()) {
      if (!s->actions.empty()) {
        jingle::Action a = std::move(s->actions.front());
        s->actions.pop_front();
        if (a.action == "session-terminate")
          co_return err(Errc::kDisconnected, "the sender " + stop_reason_text(a.reason));
        continue;
      }
      if (!co_await wait(*s, until)) co_return err(Errc::kTimeout, "the in-band stream stalled");
    }
    xml::Element iq = std::move(s->iqs.front());
    s->iqs.pop_front();
    const xml::Element* q = iq.first_child();
    if (q->name() == "open") {
      unsigned long bs = std::strtoul(std::string(q->attr("block-size")).c_str(), nullptr, 10);
      if (q->attr("stanza") == "message" || bs == 0 || bs > 65535) {
        client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "not-acceptable"));
        continue;
      }
      open = true;
      client->send_stanza(xmpp::make_iq_result(iq));
    } else if (q->name() == "data" && open) {
      // XEP-0047 §2.2: seq counts from 0 and wraps at 65535; a gap or a repeat ends the stream.
      unsigned long seq = std::strtoul(std::string(q->attr("seq")).c_str(), nullptr, 10);
      auto raw = xmpp::base64_decode(q->text());
      if (seq != expect || !raw || got + raw->size() > s->file.size) {
        client->send_stanza(
            xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "unexpected-request"));
        co_return err(Errc::kProtocol, "the in-band stream from " + s->peer + " was malformed");
      }
      ++expect;
      if (!write_all(fd, raw->data(), raw->size())) {
        client->send_stanza(
            xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "resource-constraint"));
        co_return err(Errc::kBadInput, "writing the file failed");
      }
      hash.update(raw->data(), raw->size());
      got += raw->size();
      client->send_stanza(xmpp::make_iq_result(iq));
      progress(*s, got);
    } else if (q->name() == "close") {
      client->send_stanza(xmpp::make_iq_result(iq));
      co_return Error{};
    } else {
      client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "item-not-found"));
    }
  }
}

}  // namespace kabar::client
