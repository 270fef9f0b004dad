#include "kabar/filetransfer.h"

#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include "client/filetransfer_impl.h"
#include "xmpp/scram.h"

namespace kabar::client {

std::string to_hex(std::string_view raw) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char b : raw) {
    out += d[b >> 4];
    out += d[b & 15];
  }
  return out;
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

awaitable<Error> FileTransfer::upload_and_send(std::string to, std::string path, std::string* url) {
  auto impl = impl_;
  co_return co_await impl->upload_and_send(std::move(to), std::move(path), url);
}

awaitable<Error> FileTransfer::send_file(std::string to, std::string path, TransferResult* result) {
  auto impl = impl_;
  co_return co_await impl->send_file(std::move(to), std::move(path), result);
}

}  // namespace kabar::client
