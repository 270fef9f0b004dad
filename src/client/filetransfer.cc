#include "kabar/filetransfer.h"

#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include "client/filetransfer_impl.h"
#include "xmpp/scram.h"

namespace kabar::client {

std::string stop_reason_text(const std::string& reason) {
  if (reason == "gone") return "went offline";
  if (reason == "cancel") return "cancelled it";
  if (reason == "decline") return "declined it";
  if (reason == "timeout") return "gave up waiting";
  if (reason == "connectivity-error") return "lost the connection";
  if (reason == "failed-transport") return "found no working transport";
  if (reason == "failed-application") return "could not write the file";
  if (reason == "media-error") return "found the file damaged";
  if (reason == "busy") return "is busy";
  return "ended it (" + (reason.empty() ? std::string("no reason given") : reason) + ")";
}

std::string random_id() { return to_hex(xmpp::random_bytes(8)); }

bool write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

// The IPv4 addresses of this host's interfaces that are up; loopback last.
std::vector<std::string> local_addresses() {
  std::vector<std::string> out, loop;
  ifaddrs* ifs = nullptr;
  if (::getifaddrs(&ifs) != 0) return out;
  for (ifaddrs* i = ifs; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP)) continue;
    auto* sin = reinterpret_cast<sockaddr_in*>(i->ifa_addr);
    asio::ip::address_v4 a(ntohl(sin->sin_addr.s_addr));
    (a.is_loopback() ? loop : out).push_back(a.to_string());
  }
  ::freeifaddrs(ifs);
  out.insert(out.end(), loop.begin(), loop.end());
  return out;
}

FileTransfer::FileTransfer(Client& client) : impl_(std::make_shared<Impl>(*this, client)) {
  auto weak = std::weak_ptr<Impl>(impl_);
  auto& tokens = impl_->handler_tokens;
  tokens.push_back(client.add_iq_handler(jingle::kJingle, [weak](const xml::Element& iq) {
    auto i = weak.lock();
    return i && i->on_jingle_iq(iq);
  }));
  // In-band bytestreams, stream initiation and SOCKS5 bytestream IQs are file transfer's alone:
  // an unknown sid is answered here with the item-not-found their XEPs ask for.
  tokens.push_back(client.add_iq_handler(jingle::kIbb, [weak](const xml::Element& iq) {
    auto i = weak.lock();
    if (i) i->on_ibb_iq(iq);
    return i != nullptr;
  }));
  tokens.push_back(client.add_iq_handler(jingle::kSi, [weak](const xml::Element& iq) {
    auto i = weak.lock();
    if (i) i->on_si_iq(iq);
    return i != nullptr;
  }));
  tokens.push_back(client.add_iq_handler(jingle::kBytestreams, [weak](const xml::Element& iq) {
    auto i = weak.lock();
    if (i) i->on_bytestreams_iq(iq);
    return i != nullptr;
  }));
  // A peer whose resource goes offline ends its transfers with it: the waits and a read that
  // would otherwise hang on a bytestream the peer's side never closed end now, saying why.
  tokens.push_back(client.add_presence_handler("", [weak](const xml::Element& p) {
    auto i = weak.lock();
    if (!i || p.attr("type") != "unavailable") return false;
    const std::string from(p.attr("from"));
    for (auto& [sid, s] : i->sessions) {
      if (s->peer != from || s->closed) continue;
      jingle::Action gone;
      gone.action = "session-terminate";
      gone.sid = s->sid;
      gone.reason = "gone";
      s->actions.push_back(std::move(gone));
      error_code ig;
      if (s->reading) s->reading->close(ig);
      s->notify();
    }
    return false;  // the presence is the client's too
  }));
  for (const char* f : {jingle::kJingle, jingle::kFileTransfer, jingle::kS5b, jingle::kIbbTransport,
                        jingle::kIbb, jingle::kBytestreams, jingle::kSi, jingle::kSiFileTransfer})
    client.add_feature(f);
}

FileTransfer::~FileTransfer() {
  for (HandlerToken t : impl_->handler_tokens) impl_->client->remove_handler(t);
  impl_->owner = nullptr;
  for (auto& [sid, s] : impl_->sessions) {
    s->closed = true;
    error_code ig;
    if (s->acceptor) s->acceptor->close(ig);
    if (s->direct) s->direct->close(ig);
    s->notify();
  }
}

void FileTransfer::decide(const std::string& sid, bool accept) {
  auto it = impl_->sessions.find(sid);
  if (it == impl_->sessions.end() || it->second->sending || it->second->decision) return;
  it->second->decision = accept;
  it->second->notify();
}

void FileTransfer::cancel() {
  for (auto& [sid, s] : impl_->sessions) {
    if (s->closed) continue;
    s->cancelled = true;
    if (!s->si) impl_->terminate(*s, "cancel");
    error_code ig;
    if (s->reading) s->reading->close(ig);
    if (s->direct) s->direct->close(ig);
    if (s->acceptor) s->acceptor->close(ig);
    s->notify();
  }
  impl_->cancelled = true;
}

awaitable<Error> FileTransfer::upload_and_send(std::string to, std::string path, std::string* url) {
  auto impl = impl_;
  co_return co_await impl->upload_and_send(std::move(to), std::move(path), url);
}

awaitable<Error> FileTransfer::send_file(std::string to, std::string path, TransferResult* result) {
  auto impl = impl_;
  co_return co_await impl->send_file(std::move(to), std::move(path), result);
}

}  // namespace kabar::client
