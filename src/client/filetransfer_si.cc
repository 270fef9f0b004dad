#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>

#include "client/filetransfer_impl.h"
#include "xmpp/jid.h"
#include "xmpp/scram.h"
#include "xmpp/stanza.h"

namespace kabar::client {

// Bytes from a SOCKS5 bytestream into the file until `size`.
awaitable<Error> FileTransfer::Impl::read_stream(SessionPtr s, tcp::socket& sock, int fd,
                                                 Hashes& hash, std::uint64_t& got) {
  std::vector<char> buf(kChunk);
  progress(*s, got);
  while (got < s->file.size) {
    std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), s->file.size - got));
    error_code ec;
    std::size_t n = co_await sock.async_read_some(asio::buffer(buf.data(), want),
                                                  asio::redirect_error(use_awaitable, ec));
    if (ec)
      co_return err(Errc::kDisconnected, "the bytestream broke after " + std::to_string(got) +
                                             " bytes: " + ec.message());
    if (!write_all(fd, buf.data(), n)) co_return err(Errc::kBadInput, "writing the file failed");
    hash.update(buf.data(), n);
    got += n;
    progress(*s, got);
  }
  co_return Error{};
}

void FileTransfer::Impl::on_bytestreams_iq(const xml::Element& iq) {
  std::string why;
  auto q = jingle::parse_bytestreams(*iq.first_child(), why);
  std::string from(iq.attr("from"));
  if (q && iq.attr("type") == "set") {
    for (auto& [id, s] : sessions) {
      if (s->si && !s->sending && s->s5b_sid == q->sid && s->peer == from && s->iqs.empty()) {
        s->iqs.push_back(iq);
        s->notify();
        return;
      }
    }
  }
  client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "item-not-found"));
}

void FileTransfer::Impl::on_si_iq(const xml::Element& iq) {
  if (iq.attr("type") != "set") {
    client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "bad-request"));
    return;
  }
  std::string why;
  auto offer = jingle::parse_si_offer(*iq.first_child(), why);
  if (!offer) {
    xml::Element e = xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request", why);
    if (xml::Element* er = e.child("error")) er->add_child("bad-profile", jingle::kSi);
    client->send_stanza(e);
    return;
  }
  std::string from(iq.attr("from"));
  // XEP-0095 §3.2: SOCKS5 bytestreams first, in-band as the last resort.
  std::string method;
  for (const char* m : {jingle::kBytestreams, jingle::kIbb})
    if (method.empty() &&
        std::find(offer->methods.begin(), offer->methods.end(), m) != offer->methods.end())
      method = m;
  std::string key = "si/" + from + "/" + offer->sid;
  if (method.empty() || sessions.count(key)) {
    xml::Element e = xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "bad-request");
    if (xml::Element* er = e.child("error")) er->add_child("no-valid-streams", jingle::kSi);
    client->send_stanza(e);
    return;
  }
  FileOffer fo;
  fo.from = from;
  fo.sid = key;
  fo.name = offer->name;
  fo.safe_name = jingle::safe_file_name(offer->name);
  fo.size = offer->size;
  auto s = std::make_shared<Session>(io);
  s->si = true;
  s->sid = key;
  s->peer = from;
  s->initiator = from;
  s->responder = me();
  s->file.name = offer->name;
  s->file.size = offer->size;
  if (method == jingle::kBytestreams)
    s->s5b_sid = offer->sid;
  else
    s->ibb_sid = offer->sid;
  sessions[key] = s;
  asio::co_spawn(io, receive_si(shared_from_this(), s, fo, offer->md5, iq, method), asio::detached);
}

awaitable<void> FileTransfer::Impl::receive_si(std::shared_ptr<Impl> self, SessionPtr s,
                                               FileOffer fo, std::string md5, xml::Element iq,
                                               std::string method) {
  TransferResult res;
  res.peer = s->peer;
  res.protocol = "si";
  if (auto why = co_await decide_offer(s, fo)) {
    // XEP-0095 §3.2: a declined offer is a forbidden error.
    client->send_stanza(
        xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "forbidden", "Offer declined"));
    res.error = err(Errc::kNotAllowed, *why);
  } else {
    xml::Element r = xmpp::make_iq_result(iq);
    r.add_child(jingle::build_si_accept(method));
    client->send_stanza(r);
    res.error = co_await run_si_receiver(s, fo.safe_name, md5, res);
  }
  end(s);
  if (owner && owner->on_received) owner->on_received(res);
}

awaitable<Error> FileTransfer::Impl::run_si_receiver(SessionPtr s, std::string safe_name,
                                                     std::string md5, TransferResult& res) {
  if (!owner) co_return err(Errc::kDisconnected, "file transfer stopped");
  const std::string dir = owner->accept_dir;
  std::string final_path = unused_path(dir, safe_name);
  std::string part = dir + "/." + safe_name + "." + random_id() + ".part";
  Fd fd(final_path.empty() ? -1
                           : ::open(part.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (fd.fd < 0) co_return err(Errc::kBadInput, "cannot create a file in " + dir);
  struct PartGuard {
    std::string path;
    ~PartGuard() {
      if (!path.empty()) ::unlink(path.c_str());
    }
  } guard{part};
  res.path = final_path;
  Hashes hash;
  std::uint64_t got = 0;
  if (!s->s5b_sid.empty()) {
    auto until = std::chrono::steady_clock::now() + kStepTimeout;
    if (!co_await wait(*s, until) || s->iqs.empty())
      co_return err(Errc::kTimeout, "the sender offered no streamhost");
    xml::Element iq = std::move(s->iqs.front());
    s->iqs.pop_front();
    std::string why;
    auto q = jingle::parse_bytestreams(*iq.first_child(), why);
    if (!q) co_return err(Errc::kProtocol, "bad streamhost offer: " + why);
    std::string dst = jingle::socks5_dst(s->s5b_sid, s->initiator, s->responder);
    std::unique_ptr<tcp::socket> sock;
    std::string used;
    for (const auto& h : q->hosts) {
      jingle::Candidate c;
      c.host = h.host;
      c.port = h.port;
      sock = co_await connect_streamhost(c, dst);
      if (sock) {
        used = h.jid;
        break;
      }
    }
    if (!sock) {
      client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "item-not-found"));
      co_return err(Errc::kUnreachable, "no streamhost offered by " + s->peer + " worked");
    }
    xml::Element r = xmpp::make_iq_result(iq);
    r.add_child(jingle::build_bytestreams({s->s5b_sid, {}, used}));
    client->send_stanza(r);
    res.transport = used == s->peer ? "s5b-direct" : "s5b-proxy";
    if (Error e = co_await read_stream(s, *sock, fd.fd, hash, got)) co_return e;
  } else {
    res.transport = "ibb";
    if (Error e = co_await receive_ibb(s, fd.fd, hash, got)) co_return e;
    if (got != s->file.size)
      co_return err(Errc::kDisconnected, "the in-band stream closed after " + std::to_string(got) +
                                             " of " + std::to_string(s->file.size) + " bytes");
  }
  res.sha256 = to_hex(hash.sha256.final());
  res.bytes = got;
  if (!md5.empty()) {
    std::string have = to_hex(hash.md5.final());
    std::string want = md5;
    std::transform(want.begin(), want.end(), want.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (have != want)
      co_return err(Errc::kProtocol,
                    "the file from " + s->peer + " arrived damaged (MD5 is not the one offered)");
    res.hash_checked = true;
  }
  if (::link(part.c_str(), final_path.c_str()) != 0) {
    final_path = unused_path(dir, safe_name);
    if (final_path.empty() || ::link(part.c_str(), final_path.c_str()) != 0)
      co_return err(Errc::kBadInput, "cannot save the file in " + dir);
    res.path = final_path;
  }
  co_return Error{};
}

awaitable<Error> FileTransfer::Impl::run_si_sender(SessionPtr s, int fd, std::string md5,
                                                   TransferResult* result) {
  const TransferOptions opts = owner->options;
  jingle::SiOffer offer;
  offer.sid = s->s5b_sid;  // one id for the offer and whichever stream follows
  offer.name = s->file.name;
  offer.size = s->file.size;
  offer.md5 = md5;
  if (opts.direct || opts.proxy) offer.methods.push_back(jingle::kBytestreams);
  if (opts.ibb) offer.methods.push_back(jingle::kIbb);
  xml::Element iq("iq", "jabber:client");
  iq.set_attr("type", "set").set_attr("to", s->peer);
  iq.add_child(jingle::build_si_offer(offer));
  auto r = co_await client->send_iq(std::move(iq));
  if (std::string c = Client::iq_condition(r); !c.empty()) {
    if (c == "forbidden" || c == "not-acceptable")
      co_return err(Errc::kNotAllowed, "the contact declined the file (" + c + ")");
    co_return err(c == "timeout" ? Errc::kTimeout : Errc::kNotFound,
                  "the contact did not take the offer (" + c + ")");
  }
  const xml::Element* si = r->child("si", jingle::kSi);
  std::string method = si ? jingle::parse_si_accept(*si) : std::string();
  if (method == jingle::kIbb && opts.ibb) {
    s->ibb_sid = offer.sid;
    if (result) result->transport = "ibb";
    // slixmpp accepts at most 8 KiB blocks; 4 KiB is XEP-0047's own example.
    if (Error e = co_await send_ibb(s, fd, 4096)) co_return e;
    if (result) result->bytes = s->file.size;
    co_return Error{};
  }
  if (method != jingle::kBytestreams)
    co_return err(Errc::kProtocol, "the contact chose no stream method we offered");
  // XEP-0065 §5.3.1: our own address (one: a target may open every streamhost at once, and we
  // must know which connection it chose) and the server's proxy.
  s->direct_dst = jingle::socks5_dst(s->s5b_sid, s->initiator, s->responder);
  jingle::BytestreamQuery q;
  q.sid = s->s5b_sid;
  if (opts.direct) {
    error_code ec;
    auto acc = std::make_unique<tcp::acceptor>(io);
    acc->open(tcp::v4(), ec);
    if (!ec) acc->bind(tcp::endpoint(tcp::v4(), 0), ec);
    if (!ec) acc->listen(8, ec);
    auto addrs = local_addresses();
    if (!ec && !addrs.empty()) {
      q.hosts.push_back({s->initiator, addrs.front(), acc->local_endpoint(ec).port()});
      s->acceptor = std::move(acc);
      asio::co_spawn(io, accept_loop(s), asio::detached);
    }
  }
  if (opts.proxy) {
    co_await discover_proxy();
    if (proxy) q.hosts.push_back({proxy->jid, proxy->host, proxy->port});
  }
  if (q.hosts.empty()) co_return err(Errc::kUnreachable, "no streamhost to offer");
  xml::Element bs("iq", "jabber:client");
  bs.set_attr("type", "set").set_attr("to", s->peer);
  bs.add_child(jingle::build_bytestreams(q));
  auto br = co_await client->send_iq(std::move(bs));
  if (std::string c = Client::iq_condition(br); !c.empty())
    co_return err(Errc::kUnreachable, "the contact reached none of our streamhosts (" + c + ")");
  std::string why;
  const xml::Element* bq = br->child("query", jingle::kBytestreams);
  auto used = bq ? jingle::parse_bytestreams(*bq, why) : std::nullopt;
  std::unique_ptr<tcp::socket> sock;
  if (used && used->used == s->initiator) {
    if (result) result->transport = "s5b-direct";
    auto until = std::chrono::steady_clock::now() + kConnectTimeout;
    while (!s->direct && std::chrono::steady_clock::now() < until) {
      s->signal.expires_at(until);
      error_code ec;
      co_await s->signal.async_wait(asio::redirect_error(use_awaitable, ec));
    }
    sock = std::move(s->direct);
  } else if (used && proxy && used->used == proxy->jid) {
    if (result) result->transport = "s5b-proxy";
    sock = co_await connect_streamhost(*proxy, s->direct_dst);
    if (sock) {
      if (!co_await activate_at_proxy(proxy->jid, s->s5b_sid, s->responder)) sock.reset();
    }
  }
  if (!sock) co_return err(Errc::kUnreachable, "the chosen streamhost did not work");
  if (Error e = co_await stream_file(s, *sock, fd, 0)) co_return e;
  // The end of the stream is the end of the file (XEP-0096 has no confirmation).
  error_code ig;
  sock->shutdown(tcp::socket::shutdown_send, ig);
  char c;
  {
    Watchdog w(io, *sock, std::chrono::seconds(10));
    co_await sock->async_read_some(asio::buffer(&c, 1), asio::redirect_error(use_awaitable, ig));
  }
  if (result) result->bytes = s->file.size;
  co_return Error{};
}

}  // namespace kabar::client
