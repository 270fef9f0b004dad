#include <boost/asio/ssl.hpp>

#include "client/filetransfer_impl.h"
#include "xmpp/jid.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

namespace kabar::client {

awaitable<bool> read_exact(tcp::socket& s, char* p, std::size_t n) {
  error_code ec;
  co_await asio::async_read(s, asio::buffer(p, n), asio::redirect_error(use_awaitable, ec));
  co_return !ec;
}

awaitable<bool> write_exact(tcp::socket& s, const std::string& data) {
  error_code ec;
  co_await asio::async_write(s, asio::buffer(data), asio::redirect_error(use_awaitable, ec));
  co_return !ec;
}

// Reads a SOCKS5 request or reply (same layout) byte-exactly, so no payload is consumed.
awaitable<std::optional<socks5::Request>> read_socks_message(tcp::socket& s) {
  std::string buf(5, '\0');
  if (!co_await read_exact(s, buf.data(), 5)) co_return std::nullopt;
  std::size_t rest = 0;
  switch (static_cast<unsigned char>(buf[3])) {
    case 1:
      rest = 4 - 1 + 2;
      break;
    case 3:
      rest = static_cast<unsigned char>(buf[4]) + 2;
      break;
    case 4:
      rest = 16 - 1 + 2;
      break;
    default:
      co_return std::nullopt;
  }
  buf.resize(5 + rest);
  if (!co_await read_exact(s, buf.data() + 5, rest)) co_return std::nullopt;
  socks5::Request r;
  std::size_t used = 0;
  if (socks5::parse_request(buf, r, used) != socks5::Parse::kDone) co_return std::nullopt;
  co_return r;
}

// XEP-0065 §5.3.2 / §6.3.2: the client side of the SOCKS5 handshake to a streamhost.
awaitable<bool> socks5_client(tcp::socket& s, const std::string& dst) {
  if (!co_await write_exact(s, std::string(socks5::kClientGreeting))) co_return false;
  char m[2];
  if (!co_await read_exact(s, m, 2)) co_return false;
  bool no_auth = false;
  std::size_t used = 0;
  if (socks5::parse_method_reply(std::string_view(m, 2), no_auth, used) != socks5::Parse::kDone ||
      !no_auth)
    co_return false;
  if (!co_await write_exact(s, socks5::encode_request(dst, 0))) co_return false;
  auto reply = co_await read_socks_message(s);
  co_return reply && reply->command == socks5::kSucceeded;
}

// The server side, on our own listener (we are the streamhost for direct candidates).
awaitable<bool> socks5_server(tcp::socket& s, const std::string& expected_dst) {
  char g[2];
  if (!co_await read_exact(s, g, 2)) co_return false;
  std::string methods(static_cast<unsigned char>(g[1]), '\0');
  if (!methods.empty() && !co_await read_exact(s, methods.data(), methods.size())) co_return false;
  socks5::Greeting greeting;
  std::size_t used = 0;
  if (socks5::parse_greeting(std::string(g, 2) + methods, greeting, used) != socks5::Parse::kDone ||
      !greeting.no_auth) {
    co_await write_exact(s, std::string("\x05\xff", 2));
    co_return false;
  }
  if (!co_await write_exact(s, std::string("\x05\x00", 2))) co_return false;
  auto req = co_await read_socks_message(s);
  if (!req) co_return false;
  if (req->command != 1 || req->address_type != 3 || req->host != expected_dst) {
    co_await write_exact(s, socks5::encode_reply(socks5::kNotAllowed, {}, 0));
    co_return false;
  }
  co_return co_await write_exact(s, socks5::encode_reply(socks5::kSucceeded, req->host, 0));
}

awaitable<void> FileTransfer::Impl::discover_proxy() {
  if (proxy_looked_up) co_return;
  proxy_looked_up = true;
  std::string domain;
  if (auto j = xmpp::Jid::parse(me())) domain = j->domain();
  xml::Element items("iq", "jabber:client");
  items.set_attr("type", "get").set_attr("to", domain);
  items.add_child("query", xmpp::ns::kDiscoItems);
  auto r = co_await client->send_iq(std::move(items));
  if (!r || r->attr("type") != "result") co_return;
  std::vector<std::string> jids;
  if (const xml::Element* q = r->child("query", xmpp::ns::kDiscoItems))
    for (const xml::Element* i : q->children("item")) jids.emplace_back(i->attr("jid"));
  if (jids.size() > 32) jids.resize(32);
  for (const std::string& jid : jids) {
    xml::Element info("iq", "jabber:client");
    info.set_attr("type", "get").set_attr("to", jid);
    info.add_child("query", xmpp::ns::kDiscoInfo);
    auto ir = co_await client->send_iq(std::move(info));
    if (!ir || ir->attr("type") != "result") continue;
    const xml::Element* q = ir->child("query", xmpp::ns::kDiscoInfo);
    bool is_proxy = false;
    if (q)
      for (const xml::Element* id : q->children("identity"))
        if (id->attr("category") == "proxy" && id->attr("type") == "bytestreams") is_proxy = true;
    if (!is_proxy) continue;
    xml::Element sh("iq", "jabber:client");
    sh.set_attr("type", "get").set_attr("to", jid);
    sh.add_child("query", jingle::kBytestreams);
    auto sr = co_await client->send_iq(std::move(sh));
    if (!sr || sr->attr("type") != "result") continue;
    const xml::Element* sq = sr->child("query", jingle::kBytestreams);
    const xml::Element* host = sq ? sq->child("streamhost", jingle::kBytestreams) : nullptr;
    if (!host) continue;
    unsigned long port = std::strtoul(std::string(host->attr("port")).c_str(), nullptr, 10);
    if (port == 0 || port > 65535 || host->attr("host").empty()) continue;
    jingle::Candidate c;
    c.cid = "p" + random_id();
    c.host = std::string(host->attr("host"));
    c.port = static_cast<std::uint16_t>(port);
    c.jid = host->has_attr("jid") ? std::string(host->attr("jid")) : jid;
    c.type = "proxy";
    c.priority = jingle::candidate_priority("proxy", 0);
    proxy = c;
    co_return;
  }
}

awaitable<std::unique_ptr<tcp::socket>> FileTransfer::Impl::connect_streamhost(
    const jingle::Candidate& c, std::string dst) {
  error_code ec;
  auto addr = asio::ip::make_address(c.host, ec);
  std::vector<tcp::endpoint> eps;
  if (!ec) {
    eps.emplace_back(addr, c.port);
  } else {
    tcp::resolver resolver(io);
    auto res = co_await resolver.async_resolve(c.host, std::to_string(c.port),
                                               asio::redirect_error(use_awaitable, ec));
    if (ec) co_return nullptr;
    for (const auto& e : res) eps.push_back(e.endpoint());
  }
  auto sock = std::make_unique<tcp::socket>(io);
  Watchdog w(io, *sock, kConnectTimeout);
  co_await asio::async_connect(*sock, eps, asio::redirect_error(use_awaitable, ec));
  if (ec) co_return nullptr;
  if (!co_await socks5_client(*sock, dst)) co_return nullptr;
  co_return sock;
}

awaitable<bool> FileTransfer::Impl::activate_at_proxy(const std::string& proxy_jid,
                                                      const std::string& sid,
                                                      const std::string& target) {
  xml::Element act("iq", "jabber:client");
  act.set_attr("type", "set").set_attr("to", proxy_jid);
  act.add_child("query", jingle::kBytestreams)
      .set_attr("sid", sid)
      .add_child("activate", jingle::kBytestreams)
      .add_text(target);
  auto ar = co_await client->send_iq(std::move(act));
  co_return Client::iq_condition(ar).empty();
}

}  // namespace kabar::client
