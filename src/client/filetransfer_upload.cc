#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <boost/asio/ssl.hpp>

#include "client/filetransfer_impl.h"
#include "xmpp/jid.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

namespace kabar::client {

namespace {

constexpr const char* kHttpUpload = "urn:xmpp:http:upload:0";

// ---- HTTP PUT for XEP-0363 ----

struct Url {
  bool tls = false;
  std::string host;
  std::string port;
  std::string target;  // path and query
};

std::optional<Url> parse_url(std::string_view u) {
  Url out;
  if (u.rfind("https://", 0) == 0) {
    out.tls = true;
    u.remove_prefix(8);
  } else if (u.rfind("http://", 0) == 0) {
    u.remove_prefix(7);
  } else {
    return std::nullopt;
  }
  auto slash = u.find('/');
  std::string_view authority = u.substr(0, slash);
  out.target = slash == std::string_view::npos ? "/" : std::string(u.substr(slash));
  if (authority.empty() || authority.find('@') != std::string_view::npos) return std::nullopt;
  if (authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    out.host = std::string(authority.substr(1, close - 1));
    if (close + 1 < authority.size() && authority[close + 1] == ':')
      out.port = std::string(authority.substr(close + 2));
  } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    out.host = std::string(authority.substr(0, colon));
    out.port = std::string(authority.substr(colon + 1));
  } else {
    out.host = std::string(authority);
  }
  if (out.port.empty()) out.port = out.tls ? "443" : "80";
  for (char c : out.target + out.host + out.port)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return std::nullopt;
  return out;
}

std::string media_type_of(const std::string& name) {
  auto dot = name.rfind('.');
  std::string ext = dot == std::string::npos ? "" : name.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  static const std::map<std::string, std::string> types = {
      {"jpg", "image/jpeg"},  {"jpeg", "image/jpeg"}, {"png", "image/png"},
      {"gif", "image/gif"},   {"webp", "image/webp"}, {"mp4", "video/mp4"},
      {"webm", "video/webm"}, {"mp3", "audio/mpeg"},  {"ogg", "audio/ogg"},
      {"opus", "audio/ogg"},  {"m4a", "audio/mp4"},   {"pdf", "application/pdf"},
      {"txt", "text/plain"}};
  auto it = types.find(ext);
  return it == types.end() ? "application/octet-stream" : it->second;
}

// Sends the request head and the file, then reads the status line. Works on a plain socket and
// on a TLS stream alike.
template <typename Stream>
awaitable<Error> put_over(Stream& stream, std::string head, int fd, std::uint64_t size,
                          const std::function<void(std::uint64_t)>& progress) {
  error_code ec;
  co_await asio::async_write(stream, asio::buffer(head), asio::redirect_error(use_awaitable, ec));
  if (ec) co_return err(Errc::kDisconnected, "the upload connection broke: " + ec.message());
  std::vector<char> buf(kChunk);
  std::uint64_t done = 0;
  while (done < size) {
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, size - done));
    ssize_t n = ::pread(fd, buf.data(), want, static_cast<off_t>(done));
    if (n <= 0) co_return err(Errc::kBadInput, "reading the file failed");
    co_await asio::async_write(stream, asio::buffer(buf.data(), static_cast<std::size_t>(n)),
                               asio::redirect_error(use_awaitable, ec));
    if (ec) co_return err(Errc::kDisconnected, "the upload broke: " + ec.message());
    done += static_cast<std::uint64_t>(n);
    progress(done);
  }
  std::string resp;
  auto dyn = asio::dynamic_buffer(resp, 8192);
  co_await asio::async_read_until(stream, dyn, "\r\n", asio::redirect_error(use_awaitable, ec));
  if (ec && resp.find("\r\n") == std::string::npos)
    co_return err(Errc::kDisconnected, "the upload server did not answer: " + ec.message());
  // "HTTP/1.1 201 Created"
  auto sp = resp.find(' ');
  int status = sp == std::string::npos ? 0 : std::atoi(resp.c_str() + sp + 1);
  if (status != 200 && status != 201)
    co_return err(Errc::kNotAllowed,
                  "the upload server refused the file: " + resp.substr(0, resp.find("\r\n")));
  co_return Error{};
}

}  // namespace

awaitable<std::string> FileTransfer::Impl::discover_upload() {
  std::string domain;
  if (auto j = xmpp::Jid::parse(me())) domain = j->domain();
  xml::Element items("iq", "jabber:client");
  items.set_attr("type", "get").set_attr("to", domain);
  items.add_child("query", xmpp::ns::kDiscoItems);
  auto r = co_await client->send_iq(std::move(items));
  std::vector<std::string> jids{domain};
  if (r && r->attr("type") == "result")
    if (const xml::Element* q = r->child("query", xmpp::ns::kDiscoItems))
      for (const xml::Element* i : q->children("item")) {
        if (jids.size() == 33) break;
        jids.emplace_back(i->attr("jid"));
      }
  for (const std::string& jid : jids) {
    xml::Element info("iq", "jabber:client");
    info.set_attr("type", "get").set_attr("to", jid);
    info.add_child("query", xmpp::ns::kDiscoInfo);
    auto ir = co_await client->send_iq(std::move(info));
    if (!ir || ir->attr("type") != "result") continue;
    if (const xml::Element* q = ir->child("query", xmpp::ns::kDiscoInfo))
      for (const xml::Element* f : q->children("feature"))
        if (f->attr("var") == kHttpUpload) co_return jid;
  }
  co_return std::string();
}

awaitable<Error> FileTransfer::Impl::upload_and_send(std::string to, std::string path,
                                                     std::string* url_out) {
  auto self = shared_from_this();
  auto j = xmpp::Jid::parse(to);
  if (!j) co_return err(Errc::kBadInput, "'" + to + "' is not a valid JID");
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st {};
  if (fd.fd < 0 || ::fstat(fd.fd, &st) != 0 || !S_ISREG(st.st_mode))
    co_return err(Errc::kBadInput, "cannot read the file " + path);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  std::string service = co_await discover_upload();
  if (service.empty())
    co_return err(Errc::kNotFound, "the server offers no HTTP upload service (XEP-0363)");
  std::string name = jingle::safe_file_name(path);
  std::string type = media_type_of(name);
  xml::Element req("iq", "jabber:client");
  req.set_attr("type", "get").set_attr("to", service);
  req.add_child("request", kHttpUpload)
      .set_attr("filename", name)
      .set_attr("size", std::to_string(size))
      .set_attr("content-type", type);
  auto r = co_await client->send_iq(std::move(req));
  if (std::string c = Client::iq_condition(r); !c.empty()) {
    std::string text;
    if (r)
      if (const xml::Element* e = r->child("error"))
        text = e->child_text("text", "urn:ietf:params:xml:ns:xmpp-stanzas");
    co_return err(Errc::kNotAllowed, "the upload service refused a slot: " + c +
                                         (text.empty() ? "" : " (" + text + ")"));
  }
  const xml::Element* slot = r->child("slot", kHttpUpload);
  const xml::Element* put = slot ? slot->child("put", kHttpUpload) : nullptr;
  const xml::Element* get = slot ? slot->child("get", kHttpUpload) : nullptr;
  auto put_url = put ? parse_url(put->attr("url")) : std::nullopt;
  std::string get_url = get ? std::string(get->attr("url")) : std::string();
  if (!put_url || !parse_url(get_url))
    co_return err(Errc::kProtocol, "the upload service sent a slot without usable URLs");
  std::string head = "PUT " + put_url->target + " HTTP/1.1\r\nHost: " + put_url->host + ":" +
                     put_url->port + "\r\nContent-Length: " + std::to_string(size) +
                     "\r\nContent-Type: " + type + "\r\nConnection: close\r\n";
  // XEP-0363 §4.2: only these headers may be passed on, and never with a line break in them.
  for (const xml::Element* h : put->children("header", kHttpUpload)) {
    std::string hn(h->attr("name"));
    std::string hv = h->text();
    if ((hn == "Authorization" || hn == "Cookie" || hn == "Expires") &&
        hv.find_first_of("\r\n") == std::string::npos)
      head += hn + ": " + hv + "\r\n";
  }
  head += "\r\n";
  Session prog(io);
  prog.sid = "upload";
  prog.file.size = size;
  std::function<void(std::uint64_t)> on_progress = [this, &prog](std::uint64_t d) {
    progress(prog, d);
  };
  progress(prog, 0);
  tcp::resolver resolver(io);
  error_code ec;
  auto eps = co_await resolver.async_resolve(put_url->host, put_url->port,
                                             asio::redirect_error(use_awaitable, ec));
  if (ec) co_return err(Errc::kUnreachable, "cannot resolve " + put_url->host);
  Error e;
  if (!put_url->tls) {
    tcp::socket sock(io);
    {
      Watchdog w(io, sock, kConnectTimeout);
      co_await asio::async_connect(sock, eps, asio::redirect_error(use_awaitable, ec));
    }
    if (ec)
      co_return err(Errc::kUnreachable, "cannot reach " + put_url->host + ":" + put_url->port);
    e = co_await put_over(sock, head, fd.fd, size, on_progress);
  } else {
    asio::ssl::context ctx(asio::ssl::context::tls_client);
    ctx.set_default_verify_paths();
    ctx.set_verify_mode(client->options().insecure ? asio::ssl::verify_none
                                                   : asio::ssl::verify_peer);
    asio::ssl::stream<tcp::socket> tls(io, ctx);
    SSL_set_tlsext_host_name(tls.native_handle(), put_url->host.c_str());
    if (!client->options().insecure) SSL_set1_host(tls.native_handle(), put_url->host.c_str());
    {
      Watchdog w(io, tls.next_layer(), kConnectTimeout);
      co_await asio::async_connect(tls.next_layer(), eps, asio::redirect_error(use_awaitable, ec));
      if (!ec)
        co_await tls.async_handshake(asio::ssl::stream_base::client,
                                     asio::redirect_error(use_awaitable, ec));
    }
    if (ec)
      co_return err(Errc::kCertificate,
                    "cannot set up TLS to " + put_url->host + ": " + ec.message());
    e = co_await put_over(tls, head, fd.fd, size, on_progress);
  }
  if (e) co_return e;
  // XEP-0066 §3 with the URL as body too, so any client shows something useful.
  xml::Element m("message", "jabber:client");
  m.set_attr("to", j->str()).set_attr("type", "chat").set_attr("id", "u" + random_id());
  m.add_child("body", "jabber:client").add_text(get_url);
  m.add_child("x", "jabber:x:oob").add_child("url", "jabber:x:oob").add_text(get_url);
  client->send_stanza(m);
  if (url_out) *url_out = get_url;
  co_return Error{};
}

}  // namespace kabar::client
