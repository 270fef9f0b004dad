#include "server/modules/proxy65/proxy65.h"

#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <chrono>

#include "server/c2s_session.h"
#include "server/listener.h"
#include "xmpp/hex.h"
#include "xmpp/namespaces.h"
#include "xmpp/socks5.h"
#include "xmpp/stanza.h"

namespace kabar::server {

namespace ns = xmpp::ns;
namespace socks5 = xmpp::socks5;
using asio::ip::tcp;

namespace {

constexpr const char* kBytestreams = "http://jabber.org/protocol/bytestreams";
constexpr auto kNegotiationTimeout = std::chrono::seconds(10);
constexpr std::size_t kMaxWaiting = 1000;  // connections not yet activated, all accounts
constexpr std::size_t kRelayBuffer = 64 * 1024;

std::string sha1_hex(std::string_view in) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(in.data(), in.size(), md, &len, EVP_sha1(), nullptr);
  return xmpp::to_hex({reinterpret_cast<const char*>(md), len});
}

bool is_sha1_hex(std::string_view s) {
  return s.size() == 40 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

struct Proxy65::Conn {
  explicit Conn(tcp::socket s) : sock(std::move(s)) {}
  tcp::socket sock;
  std::string hash;  // DST.ADDR once negotiated
  bool activated = false;
  bool closed = false;
  std::unique_ptr<asio::steady_timer> timer;  // negotiation, then waiting deadline

  void close() {
    if (closed) return;
    closed = true;
    boost::system::error_code ec;
    sock.shutdown(tcp::socket::shutdown_both, ec);
    sock.close(ec);
    // A pending deadline is work on the loop: left armed, it kept kabard from stopping for up to
    // the idle timeout while a connection waited for activation.
    if (timer) timer->cancel();
  }
};

struct Proxy65::Stream {
  std::array<ConnPtr, 2> side;
  std::string owner;  // the requester's bare JID
  std::int64_t last_activity_ms = 0;
  std::array<double, 2> next_send_ms{0, 0};  // rate limit, per direction
  int open_directions = 2;
  bool ended = false;
  std::unique_ptr<asio::steady_timer> watch_timer;
};

Proxy65::Proxy65(Server& server) : server_(server), jid_("proxy." + server.config().domain) {}

Proxy65::~Proxy65() = default;

void Proxy65::start() {
  const Config& cfg = server_.config();
  for (const auto& ep : cfg.proxy65) {
    auto acc = open_listener(server_.io(), ep, "proxy65");
    auto bound = acc->local_endpoint();
    if (port_ == 0) {
      port_ = bound.port();
      host_ = !cfg.proxy65_host.empty() ? cfg.proxy65_host : bound.address().to_string();
    }
    spdlog::info("SOCKS5 bytestreams proxy {} on {}:{} (announced as {}:{})", jid_,
                 bound.address().to_string(), bound.port(), host_, port_);
    asio::co_spawn(server_.io(), accept_loop(*acc), asio::detached);
    acceptors_.push_back(std::move(acc));
  }
}

void Proxy65::stop() {
  stopping_ = true;
  for (auto& acc : acceptors_) {
    boost::system::error_code ec;
    acc->close(ec);
  }
  for (auto& [hash, conns] : by_hash_) {
    for (auto& c : conns) c->close();
  }
  for (const auto& c : negotiating_) c->close();
  // Relays in flight hold work on the loop: end them so kabard can stop.
  auto active = active_;
  for (const auto& st : active) end_stream(st);
}

std::size_t Proxy65::waiting() const {
  std::size_t n = 0;
  for (const auto& [hash, conns] : by_hash_) n += conns.size();
  return n;
}

awaitable<void> Proxy65::accept_loop(tcp::acceptor& acc) {
  while (!stopping_) {
    boost::system::error_code ec;
    tcp::socket sock = co_await acc.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_ || ec == asio::error::operation_aborted) co_return;
    if (ec) {
      spdlog::warn("proxy65 accept: {}", ec.message());
      asio::steady_timer t(server_.io(), std::chrono::milliseconds(100));
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    sock.set_option(tcp::no_delay(true), ec);
    auto c = std::make_shared<Conn>(std::move(sock));
    asio::co_spawn(server_.io(), negotiate(c), asio::detached);
  }
}

// RFC 1928 with the XEP-0065 §5.3.2 / §6.3.2 rules: no authentication, CONNECT, ATYP domain
// name, DST.ADDR the 40-hex-digit SHA-1, DST.PORT 0; the reply echoes DST.ADDR and DST.PORT.
awaitable<void> Proxy65::negotiate(ConnPtr c) {
  // Tracked until negotiated, so stop() can end it too (a client that connected to several
  // streamhosts may leave this one half-way).
  negotiating_.insert(c);
  struct Untrack {
    Proxy65* self;
    ConnPtr c;
    ~Untrack() { self->negotiating_.erase(c); }
  } untrack{this, c};
  c->timer = std::make_unique<asio::steady_timer>(server_.io(), kNegotiationTimeout);
  c->timer->async_wait([c](const boost::system::error_code& ec) {
    if (!ec && c->hash.empty()) c->close();  // too slow to negotiate
  });
  try {
    // What the client sends is parsed by xmpp/socks5 (fuzzed on its own); bytes arrive however
    // they come, and neither message is longer than 262 bytes.
    std::string in;
    std::array<char, 512> chunk;
    std::size_t used = 0;
    socks5::Greeting greeting;
    socks5::Parse r;
    while ((r = socks5::parse_greeting(in, greeting, used)) == socks5::Parse::kNeedMore) {
      in.append(chunk.data(),
                co_await c->sock.async_read_some(asio::buffer(chunk), asio::use_awaitable));
    }
    if (r == socks5::Parse::kBad) {
      c->close();  // not SOCKS5: no reply can be understood
      co_return;
    }
    in.erase(0, used);
    const std::array<std::uint8_t, 2> choice{
        5, static_cast<std::uint8_t>(greeting.no_auth ? 0 : 0xFF)};
    co_await asio::async_write(c->sock, asio::buffer(choice), asio::use_awaitable);
    if (!greeting.no_auth) {
      c->close();
      co_return;
    }
    socks5::Request req;
    while ((r = socks5::parse_request(in, req, used)) == socks5::Parse::kNeedMore) {
      in.append(chunk.data(),
                co_await c->sock.async_read_some(asio::buffer(chunk), asio::use_awaitable));
    }
    if (r == socks5::Parse::kBad) {
      co_await refuse(c, socks5::kGeneralFailure);
      co_return;
    }
    if (req.command != 1) {
      co_await refuse(c, socks5::kCommandNotSupported);
      co_return;
    }
    if (req.address_type != 3) {
      co_await refuse(c, socks5::kAddressNotSupported);
      co_return;
    }
    std::string hash = req.host;
    std::transform(hash.begin(), hash.end(), hash.begin(),
                   [](char ch) { return (ch >= 'A' && ch <= 'F') ? char(ch + 32) : ch; });
    if (!is_sha1_hex(hash)) {
      co_await refuse(c, socks5::kGeneralFailure);
      co_return;
    }
    auto& peers = by_hash_[hash];
    if (peers.size() >= 2 || waiting() > kMaxWaiting) {
      if (peers.empty()) by_hash_.erase(hash);
      co_await refuse(c, socks5::kNotAllowed);
      co_return;
    }
    c->hash = hash;
    peers.push_back(c);
    c->timer->cancel();
    // Both reply fields echo the request (XEP-0065 §6.3.2).
    const std::string reply = socks5::encode_reply(socks5::kSucceeded, req.host, req.port);
    co_await asio::async_write(c->sock, asio::buffer(reply), asio::use_awaitable);
  } catch (const boost::system::system_error& e) {
    spdlog::debug("proxy65: negotiation ended: {}", e.code().message());
    if (c->activated) co_return;  // the activation cancelled the reply's write: the relay has it
    forget(c);
    c->close();
    co_return;
  }
  co_await wait_for_activation(c);
}

awaitable<void> Proxy65::refuse(ConnPtr c, std::uint8_t code) {
  const std::string reply = socks5::encode_reply(code, {}, 0);
  boost::system::error_code ec;
  co_await asio::async_write(c->sock, asio::buffer(reply),
                             asio::redirect_error(asio::use_awaitable, ec));
  c->close();
}

awaitable<void> Proxy65::wait_for_activation(ConnPtr c) {
  // The activation may already have run: the reply's write completes on this loop after the
  // initiator has read the reply, sent its activate IQ and had it handled here (a completion
  // queued by this thread is run after what other shards posted meanwhile). The relay owns the
  // connection then; forgetting and closing it here cut the stream before its first byte.
  if (c->activated) co_return;
  // Unactivated connections expire like idle streams; bytes sent before activation are ignored
  // (XEP-0065 §8.1), the end of the connection ends the wait.
  c->timer = std::make_unique<asio::steady_timer>(
      server_.io(), std::chrono::seconds(server_.config().proxy65_idle_timeout_s));
  c->timer->async_wait([c](const boost::system::error_code& ec) {
    if (!ec && !c->activated) c->close();
  });
  while (!c->activated && !c->closed) {
    boost::system::error_code ec;
    co_await c->sock.async_wait(tcp::socket::wait_read,
                                asio::redirect_error(asio::use_awaitable, ec));
    if (c->activated) co_return;  // the relay has it now
    if (ec || c->closed) break;
    std::array<char, 4096> junk;
    std::size_t n = c->sock.read_some(asio::buffer(junk), ec);
    if (ec || n == 0) break;
  }
  forget(c);
  c->close();
}

void Proxy65::forget(const ConnPtr& c) {
  if (c->hash.empty()) return;
  auto it = by_hash_.find(c->hash);
  if (it == by_hash_.end()) return;
  auto& v = it->second;
  v.erase(std::remove(v.begin(), v.end(), c), v.end());
  if (v.empty()) by_hash_.erase(it);
}

xml::Element Proxy65::streamhost_result(const xml::Element& iq) const {
  xml::Element reply = xmpp::make_iq_result(iq);
  xml::Element& sh = reply.add_child("query", kBytestreams).add_child("streamhost", kBytestreams);
  sh.set_attr("jid", jid_);
  sh.set_attr("host", host_);
  sh.set_attr("port", std::to_string(port_));
  return reply;
}

awaitable<void> Proxy65::handle_iq(SessionPtr from, xml::Element iq) {
  const std::string_view type = iq.attr("type");
  if (type != "get" && type != "set") co_return;  // results and errors end here
  const xml::Element* q = iq.first_child();
  auto error = [&](xmpp::ErrorType t, std::string_view condition) {
    from->send(xmpp::make_error_reply(iq, t, condition));
  };
  if (q == nullptr) {
    error(xmpp::ErrorType::kModify, "bad-request");
    co_return;
  }
  if (q->is("query", ns::kDiscoInfo) && type == "get") {
    xml::Element reply = xmpp::make_iq_result(iq);
    xml::Element& query = reply.add_child("query", ns::kDiscoInfo);
    xml::Element& id = query.add_child("identity", ns::kDiscoInfo);
    id.set_attr("category", "proxy");
    id.set_attr("type", "bytestreams");
    id.set_attr("name", "SOCKS5 Bytestreams Service");
    query.add_child("feature", ns::kDiscoInfo).set_attr("var", ns::kDiscoInfo);
    query.add_child("feature", ns::kDiscoInfo).set_attr("var", kBytestreams);
    from->send(reply);
    co_return;
  }
  if (q->is("query", ns::kDiscoItems) && type == "get") {
    xml::Element reply = xmpp::make_iq_result(iq);
    reply.add_child("query", ns::kDiscoItems);
    from->send(reply);
    co_return;
  }
  if (!q->is("query", kBytestreams)) {
    error(xmpp::ErrorType::kCancel, "service-unavailable");
    co_return;
  }
  if (type == "get") {
    from->send(streamhost_result(iq));
    co_return;
  }
  // Activation (§6.3.3): the hash is made with the sender's own full JID, so only the requester
  // can activate its stream; anyone else's hash matches nothing.
  const std::string_view sid = q->attr("sid");
  const xml::Element* act = q->child("activate", kBytestreams);
  if (sid.empty() || act == nullptr) {
    error(xmpp::ErrorType::kModify, "bad-request");
    co_return;
  }
  auto target = xmpp::Jid::parse(act->text());
  if (!target) {
    error(xmpp::ErrorType::kModify, "jid-malformed");
    co_return;
  }
  const std::string hash = sha1_hex(std::string(sid) + from->jid().str() + target->str());
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) {
    error(xmpp::ErrorType::kCancel, "item-not-found");
    co_return;
  }
  if (it->second.size() < 2) {
    error(xmpp::ErrorType::kCancel, "not-allowed");  // only one party is connected
    co_return;
  }
  const std::string owner = from->jid().bare_str();
  if (streams_of_[owner] >= server_.config().proxy65_streams_per_account) {
    error(xmpp::ErrorType::kWait, "resource-constraint");
    co_return;
  }
  auto st = std::make_shared<Stream>();
  st->side = {it->second[0], it->second[1]};
  st->owner = owner;
  st->last_activity_ms = server_.now_ms();
  by_hash_.erase(it);
  ++streams_of_[owner];
  active_.insert(st);
  for (auto& c : st->side) {
    c->activated = true;
    if (c->timer) c->timer->cancel();
    boost::system::error_code ec;
    c->sock.cancel(ec);  // ends wait_for_activation()
  }
  spdlog::info("proxy65: stream {} activated by {}", hash.substr(0, 8), from->jid().str());
  asio::co_spawn(server_.io(), relay(st, 0), asio::detached);
  asio::co_spawn(server_.io(), relay(st, 1), asio::detached);
  asio::co_spawn(server_.io(), watch(st), asio::detached);
  from->send(xmpp::make_iq_result(iq));
}

awaitable<void> Proxy65::relay(std::shared_ptr<Stream> st, int direction) {
  ConnPtr src = st->side[direction];
  ConnPtr dst = st->side[1 - direction];
  const auto rate = static_cast<double>(server_.config().proxy65_bytes_per_second);
  std::vector<char> buf(kRelayBuffer);
  bool clean_end = false;
  try {
    while (!st->ended) {
      boost::system::error_code ec;
      std::size_t n = co_await src->sock.async_read_some(
          asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
      if (ec == asio::error::eof) {
        clean_end = true;
        break;
      }
      if (ec) throw boost::system::system_error(ec);
      st->last_activity_ms = server_.now_ms();
      if (rate > 0) {
        // Token bucket: this chunk may start once the previous ones have had their time.
        const auto now = static_cast<double>(server_.now_ms());
        double& next = st->next_send_ms[direction];
        const double start = std::max(next, now);
        next = start + static_cast<double>(n) * 1000.0 / rate;
        if (start > now) {
          asio::steady_timer t(server_.io(),
                               std::chrono::milliseconds(static_cast<std::int64_t>(start - now)));
          co_await t.async_wait(asio::use_awaitable);
        }
      }
      co_await asio::async_write(dst->sock, asio::buffer(buf.data(), n), asio::use_awaitable);
      st->last_activity_ms = server_.now_ms();
    }
  } catch (const boost::system::system_error& e) {
    spdlog::debug("proxy65: relay ended: {}", e.code().message());
  }
  if (clean_end && !st->ended) {
    // Half close: the other direction may still be sending.
    boost::system::error_code ec;
    dst->sock.shutdown(tcp::socket::shutdown_send, ec);
    if (--st->open_directions > 0) co_return;
  }
  end_stream(st);
}

awaitable<void> Proxy65::watch(std::shared_ptr<Stream> st) {
  const std::int64_t idle_ms = std::int64_t{server_.config().proxy65_idle_timeout_s} * 1000;
  st->watch_timer = std::make_unique<asio::steady_timer>(server_.io());
  while (!st->ended) {
    st->watch_timer->expires_after(std::chrono::seconds(1));
    boost::system::error_code ec;
    co_await st->watch_timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (st->ended) break;
    if (server_.now_ms() - st->last_activity_ms > idle_ms) {
      spdlog::info("proxy65: stream of {} idle for {} s, closed", st->owner,
                   server_.config().proxy65_idle_timeout_s);
      end_stream(st);
    }
  }
}

void Proxy65::end_stream(const std::shared_ptr<Stream>& st) {
  if (st->ended) return;
  st->ended = true;
  for (auto& c : st->side) c->close();
  if (st->watch_timer) st->watch_timer->cancel();
  if (auto it = streams_of_.find(st->owner); it != streams_of_.end() && --it->second <= 0) {
    streams_of_.erase(it);
  }
  active_.erase(st);
}

}  // namespace kabar::server
