#include "kabar/client.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <deque>
#include <fstream>
#include <sstream>

#include "client/roster_cache.h"
#include "xml/serializer.h"
#include "xml/stream_parser.h"
#include "xmpp/jid.h"
#include "xmpp/namespaces.h"
#include "xmpp/scram.h"
#include "xmpp/stanza.h"

namespace kabar::client {

namespace ns = xmpp::ns;
using asio::use_awaitable;
using asio::ip::tcp;

namespace {

constexpr const char* kReceipts = "urn:xmpp:receipts";
constexpr const char* kChatStates = "http://jabber.org/protocol/chatstates";

Error err(Errc c, std::string msg) { return Error{c, std::move(msg)}; }

std::string hex(const unsigned char* p, std::size_t n) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    out += d[p[i] >> 4];
    out += d[p[i] & 15];
  }
  return out;
}

std::string normalize_fingerprint(std::string_view fp) {
  std::string out;
  for (char c : fp) {
    if (c == ':' || c == ' ') continue;
    out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  if (out.rfind("sha256", 0) == 0) out = out.substr(6);
  return out;
}

// The defined condition of a stanza or SASL error: the first child in the errors' namespace.
std::string error_condition(const xml::Element& el) {
  const xml::Element* e = el.child("error");
  if (!e) return "undefined-condition";
  for (const xml::Element* c : e->children()) {
    if (c->xmlns() == ns::kStanzas && c->name() != "text") return c->name();
  }
  return "undefined-condition";
}

std::string error_text(const xml::Element& el) {
  const xml::Element* e = el.child("error");
  if (!e) return {};
  return e->child_text("text", ns::kStanzas);
}

std::string bare_of(std::string_view full) {
  auto j = xmpp::Jid::parse(full);
  return j ? j->bare_str() : std::string(full);
}

std::string resource_of(std::string_view full) {
  auto j = xmpp::Jid::parse(full);
  return j ? j->resource() : std::string();
}

}  // namespace

struct PendingIq {
  explicit PendingIq(asio::io_context& io) : timer(io) {}
  asio::steady_timer timer;
  bool done = false;
  xml::Element reply;
};

struct Client::Impl : std::enable_shared_from_this<Impl>, xml::StreamHandler {
  Impl(Client& owner, asio::io_context& io, Options o)
      : owner(&owner), io(io), opt(std::move(o)), closed_signal(io) {}

  Client* owner;
  asio::io_context& io;
  Options opt;
  xmpp::Jid jid;
  std::unique_ptr<asio::ssl::context> ssl_ctx;
  std::unique_ptr<asio::ssl::stream<tcp::socket>> stream;
  bool tls = false;
  std::unique_ptr<xml::StreamParser> parser;
  std::deque<xml::Element> inbox;
  bool stream_closed = false;
  bool parse_failed = false;
  std::string fingerprint;
  std::string bound;
  bool roster_ver_supported = false;
  bool running = false;  // reader and writer loops started
  bool is_connected = false;
  bool closing = false;
  Error close_reason;
  asio::steady_timer closed_signal;
  std::deque<std::string> outq;
  bool writing = false;
  std::map<std::string, std::shared_ptr<PendingIq>> pending;
  std::uint64_t next_id = 0;
  std::vector<RosterItem> roster;
  std::string roster_ver;
  std::vector<std::string> requests;
  std::map<std::string, std::map<std::string, Presence>> presences;
  std::map<std::string, Message> bounced;  // message id -> its error bounce
  std::map<std::string, std::function<void(const xml::Element&)>> iq_handlers;  // by xmlns
  std::vector<std::string> extra_features;

  // StreamHandler
  void on_stream_open(const xml::Element&, std::string_view) override {}
  void on_element(xml::Element&& el) override { inbox.push_back(std::move(el)); }
  void on_stream_close() override { stream_closed = true; }

  std::string new_id() {
    return "k" + std::to_string(++next_id) + xmpp::base64_encode(xmpp::random_bytes(3));
  }

  // ---- transport ----
  awaitable<std::size_t> read_some(char* buf, std::size_t n) {
    if (tls) co_return co_await stream->async_read_some(asio::buffer(buf, n), use_awaitable);
    co_return co_await stream->next_layer().async_read_some(asio::buffer(buf, n), use_awaitable);
  }
  awaitable<void> write_raw(const std::string& data) {
    if (tls)
      co_await asio::async_write(*stream, asio::buffer(data), use_awaitable);
    else
      co_await asio::async_write(stream->next_layer(), asio::buffer(data), use_awaitable);
  }
  awaitable<void> read_more() {
    std::array<char, 8192> buf;
    std::size_t n = co_await read_some(buf.data(), buf.size());
    auto r = parser->feed(std::string_view(buf.data(), n));
    if (r.status != xml::StreamParser::Status::kOk) {
      parse_failed = true;
      throw std::runtime_error("the server sent malformed XML");
    }
  }
  // The next top-level element during negotiation (before the reader runs).
  awaitable<xml::Element> next_element() {
    while (inbox.empty()) {
      if (stream_closed) throw std::runtime_error("the server closed the stream");
      co_await read_more();
    }
    xml::Element el = std::move(inbox.front());
    inbox.pop_front();
    if (el.is("error", ns::kStream)) {
      std::string cond = "undefined-condition";
      std::string text;
      for (const xml::Element* c : el.children()) {
        if (c->name() == "text")
          text = c->text();
        else if (c->xmlns() == ns::kStreams)
          cond = c->name();
      }
      throw std::runtime_error("stream error from the server: " + cond +
                               (text.empty() ? "" : " (" + text + ")"));
    }
    co_return el;
  }
  awaitable<xml::Element> open_stream() {
    parser = std::make_unique<xml::StreamParser>(*this);
    inbox.clear();
    stream_closed = false;
    std::string header =
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams' to='";
    xml::escape_attr(jid.domain(), header);
    header += "' version='1.0' xml:lang='en'>";
    co_await write_raw(header);
    xml::Element features = co_await next_element();
    if (!features.is("features", ns::kStream))
      throw std::runtime_error("expected stream features, got <" + features.name() + "/>");
    co_return features;
  }

  void make_ssl_context() {
    ssl_ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    ssl_ctx->set_default_verify_paths();
    ssl_ctx->set_options(asio::ssl::context::no_sslv2 | asio::ssl::context::no_sslv3 |
                         asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
    // The chain and name are checked after the handshake (check_certificate) so a failure can
    // say why and offer the fingerprint; nothing is sent on the stream before that.
    ssl_ctx->set_verify_mode(asio::ssl::verify_none);
  }

  awaitable<std::optional<Error>> tls_handshake() {
    SSL* ssl = stream->native_handle();
    SSL_set_tlsext_host_name(ssl, jid.domain().c_str());
    // RFC 6125 / RFC 7590: the reference identity is the XMPP domain, not the host connected to.
    SSL_set1_host(ssl, jid.domain().c_str());
    boost::system::error_code ec;
    co_await stream->async_handshake(asio::ssl::stream_base::client,
                                     asio::redirect_error(use_awaitable, ec));
    if (ec) co_return err(Errc::kTls, "TLS handshake with the server failed: " + ec.message());
    tls = true;
    X509* cert = SSL_get1_peer_certificate(ssl);
    if (!cert) co_return err(Errc::kCertificate, "the server presented no certificate");
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    X509_digest(cert, EVP_sha256(), md, &len);
    X509_free(cert);
    fingerprint = hex(md, len);
    if (opt.insecure) co_return std::nullopt;
    if (!opt.pin_sha256.empty()) {
      if (normalize_fingerprint(opt.pin_sha256) == fingerprint) co_return std::nullopt;
      co_return err(Errc::kCertificate, "the server's certificate (SHA-256 " + fingerprint +
                                            ") does not match the pinned fingerprint");
    }
    long v = SSL_get_verify_result(ssl);
    if (v != X509_V_OK) {
      co_return err(Errc::kCertificate,
                    "the certificate of " + jid.domain() + " is not trusted: " +
                        X509_verify_cert_error_string(v) + " (SHA-256 " + fingerprint +
                        "); pin it with --pin if you trust it, or --insecure for "
                        "a test server");
    }
    co_return std::nullopt;
  }

  // ---- connect ----
  awaitable<std::optional<Error>> open_transport() {
    auto j = xmpp::Jid::parse(opt.jid);
    if (!j || j->local().empty())
      co_return err(Errc::kBadInput, "'" + opt.jid + "' is not a valid JID (user@domain)");
    jid = *j;
    // A fresh resource per process by default, so a one-shot command never replaces (RFC 6120
    // §7.7.2.2 conflict) a listener or chat of the same account.
    if (opt.resource.empty())
      opt.resource =
          jid.resource().empty()
              ? "kabar." +
                    hex(reinterpret_cast<const unsigned char*>(xmpp::random_bytes(3).data()), 3)
              : jid.resource();
    std::vector<std::pair<std::string, std::uint16_t>> targets;
    if (!opt.host.empty()) {
      targets.emplace_back(opt.host, opt.port ? opt.port : 5222);
    } else {
      targets = resolve_srv(jid.domain());
      if (opt.port) {
        for (auto& t : targets) t.second = opt.port;
      }
      targets.emplace_back(jid.domain(), opt.port ? opt.port : 5222);
    }
    make_ssl_context();
    std::string last_error;
    for (auto& [host, port] : targets) {
      stream = std::make_unique<asio::ssl::stream<tcp::socket>>(io, *ssl_ctx);
      tls = false;
      tcp::resolver resolver(io);
      boost::system::error_code ec;
      auto results = co_await resolver.async_resolve(host, std::to_string(port),
                                                     asio::redirect_error(use_awaitable, ec));
      if (ec) {
        last_error = "cannot resolve " + host + ": " + ec.message();
        continue;
      }
      asio::steady_timer watchdog(io, opt.timeout);
      watchdog.async_wait([this](boost::system::error_code e) {
        boost::system::error_code ig;
        if (!e) stream->next_layer().close(ig);
      });
      co_await asio::async_connect(stream->next_layer(), results,
                                   asio::redirect_error(use_awaitable, ec));
      watchdog.cancel();
      if (ec) {
        last_error = "cannot reach the server at " + host + ":" + std::to_string(port) + ": " +
                     (ec == asio::error::operation_aborted ? "timed out" : ec.message());
        continue;
      }
      bool direct = opt.tls == TlsMode::kDirect || (opt.tls == TlsMode::kAuto && port == 5223);
      co_return co_await secure(direct);
    }
    co_return err(Errc::kUnreachable, last_error);
  }

  awaitable<std::optional<Error>> secure(bool direct) {
    if (direct) {
      if (auto e = co_await tls_handshake()) co_return e;
      co_return std::nullopt;
    }
    xml::Element features = co_await open_stream();
    if (!features.child("starttls", ns::kTls))
      co_return err(Errc::kTls,
                    "the server does not offer STARTTLS; refusing to continue in the clear");
    co_await write_raw("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    xml::Element r = co_await next_element();
    if (!r.is("proceed", ns::kTls)) co_return err(Errc::kTls, "the server refused STARTTLS");
    // RFC 6120 §5.3.3: nothing read in the clear after <proceed/> is kept.
    inbox.clear();
    if (auto e = co_await tls_handshake()) co_return e;
    co_return std::nullopt;
  }

  awaitable<std::optional<Error>> authenticate(const xml::Element& features) {
    const xml::Element* mechs = features.child("mechanisms", ns::kSasl);
    std::vector<std::string> offered;
    if (mechs) {
      for (const xml::Element* m : mechs->children("mechanism")) offered.push_back(m->text());
    }
    auto has = [&](std::string_view m) {
      return std::find(offered.begin(), offered.end(), m) != offered.end();
    };
    std::optional<xmpp::ScramClient> scram;
    std::string mech;
    std::string initial;
    if (has("SCRAM-SHA-256") || has("SCRAM-SHA-1")) {
      auto h = has("SCRAM-SHA-256") ? xmpp::ScramHash::kSha256 : xmpp::ScramHash::kSha1;
      mech = std::string(xmpp::mechanism_name(h));
      scram.emplace(h, jid.local(), opt.password);
      initial = scram->client_first();
    } else if (has("PLAIN")) {
      // Only ever inside TLS: this code path is reached only after the TLS checks.
      mech = "PLAIN";
      std::string pw = xmpp::saslprep(opt.password).value_or(opt.password);
      initial = std::string("\0", 1) + jid.local() + std::string("\0", 1) + pw;
    } else {
      co_return err(Errc::kProtocol, "the server offers no SASL mechanism kabar supports");
    }
    co_await write_raw("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='" + mech + "'>" +
                       xmpp::base64_encode(initial) + "</auth>");
    while (true) {
      xml::Element r = co_await next_element();
      if (r.is("challenge", ns::kSasl)) {
        if (!scram) co_return err(Errc::kProtocol, "unexpected SASL challenge");
        auto decoded = xmpp::base64_decode(r.text());
        std::optional<std::string> final_msg;
        if (decoded) final_msg = scram->client_final(*decoded);
        if (!final_msg) co_return err(Errc::kProtocol, "malformed SCRAM challenge from the server");
        co_await write_raw("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" +
                           xmpp::base64_encode(*final_msg) + "</response>");
      } else if (r.is("success", ns::kSasl)) {
        if (scram) {
          auto decoded = xmpp::base64_decode(r.text());
          if (!decoded || !scram->verify_server_final(*decoded))
            co_return err(Errc::kAuth,
                          "the server could not prove it knows the password (SCRAM "
                          "server signature wrong)");
        }
        co_return std::nullopt;
      } else if (r.is("failure", ns::kSasl)) {
        std::string cond = "not-authorized";
        std::string text;
        for (const xml::Element* c : r.children()) {
          if (c->name() == "text")
            text = c->text();
          else
            cond = c->name();
        }
        if (cond == "not-authorized")
          co_return err(Errc::kAuth, "wrong password or unknown account " + jid.bare_str());
        co_return err(Errc::kAuth,
                      "login refused: " + cond + (text.empty() ? "" : " (" + text + ")"));
      } else {
        co_return err(Errc::kProtocol, "unexpected <" + r.name() + "/> during authentication");
      }
    }
  }

  awaitable<std::optional<Error>> bind(const xml::Element& features) {
    if (!features.child("bind", ns::kBind))
      co_return err(Errc::kProtocol, "the server offers no resource binding");
    roster_ver_supported = features.child("ver", ns::kRosterVer) != nullptr;
    std::string id = new_id();
    xml::Element iq("iq", ns::kClient);
    iq.set_attr("type", "set").set_attr("id", id);
    iq.add_child("bind", ns::kBind).add_child("resource", ns::kBind).add_text(opt.resource);
    co_await write_raw(xml::serialize(iq));
    while (true) {
      xml::Element r = co_await next_element();
      if (r.name() != "iq" || r.attr("id") != id) continue;
      if (r.attr("type") != "result")
        co_return err(Errc::kProtocol, "resource binding failed: " + error_condition(r));
      const xml::Element* b = r.child("bind", ns::kBind);
      bound = b ? b->child_text("jid", ns::kBind) : std::string();
      if (bound.empty()) bound = jid.bare_str() + "/" + opt.resource;
      break;
    }
    // RFC 3921 §3: the legacy session IQ, only when the server says it is required.
    const xml::Element* sess = features.child("session", ns::kSession);
    if (sess && !sess->child("optional")) {
      std::string sid = new_id();
      xml::Element s("iq", ns::kClient);
      s.set_attr("type", "set").set_attr("id", sid);
      s.add_child("session", ns::kSession);
      co_await write_raw(xml::serialize(s));
      while (true) {
        xml::Element r = co_await next_element();
        if (r.name() == "iq" && r.attr("id") == sid) break;
        inbox.push_back(std::move(r));
      }
    }
    co_return std::nullopt;
  }

  // Runs a negotiation step under the watchdog; maps exceptions to errors.
  awaitable<Error> guarded(std::function<awaitable<std::optional<Error>>()> step) {
    asio::steady_timer watchdog(io, opt.timeout);
    bool timed_out = false;
    watchdog.async_wait([this, &timed_out](boost::system::error_code e) {
      if (!e && stream) {
        timed_out = true;
        boost::system::error_code ig;
        stream->next_layer().close(ig);
      }
    });
    Error result;
    try {
      if (auto e = co_await step()) result = *e;
    } catch (const boost::system::system_error& e) {
      if (timed_out)
        result = err(Errc::kTimeout, "the server did not answer in time");
      else if (e.code() == asio::error::eof || e.code() == asio::ssl::error::stream_truncated)
        result = err(Errc::kDisconnected, "the server closed the connection");
      else
        result = err(Errc::kDisconnected, "connection failed: " + e.code().message());
    } catch (const std::exception& e) {
      result = err(Errc::kProtocol, e.what());
    }
    watchdog.cancel();
    if (result) close_socket();
    co_return result;
  }

  awaitable<Error> connect() {
    closing = false;
    close_reason = {};
    Error e = co_await guarded([this]() -> awaitable<std::optional<Error>> {
      if (auto e = co_await open_transport()) co_return e;
      xml::Element features = co_await open_stream();
      if (auto e = co_await authenticate(features)) co_return e;
      features = co_await open_stream();
      if (auto e = co_await bind(features)) co_return e;
      co_return std::nullopt;
    });
    if (e) co_return e;
    is_connected = true;
    start_loops();
    co_return Error{};
  }

  awaitable<Error> register_account() {
    co_return co_await guarded([this]() -> awaitable<std::optional<Error>> {
      if (auto e = co_await open_transport()) co_return e;
      xml::Element features = co_await open_stream();
      xml::Element iq("iq", ns::kClient);
      std::string id = new_id();
      iq.set_attr("type", "set").set_attr("id", id);
      xml::Element& q = iq.add_child("query", ns::kRegister);
      q.add_child("username", ns::kRegister).add_text(jid.local());
      q.add_child("password", ns::kRegister).add_text(opt.password);
      co_await write_raw(xml::serialize(iq));
      while (true) {
        xml::Element r = co_await next_element();
        if (r.name() != "iq" || r.attr("id") != id) continue;
        std::optional<Error> result;
        if (r.attr("type") != "result") {
          std::string cond = error_condition(r);
          std::string text = error_text(r);
          if (cond == "conflict")
            result = err(Errc::kConflict, "the account " + jid.bare_str() + " already exists");
          else if (cond == "not-acceptable")
            result = err(Errc::kNotAllowed, "the server did not accept the registration" +
                                                (text.empty() ? "" : ": " + text));
          else
            result = err(Errc::kNotAllowed, "the server refused the registration (" + cond + ")" +
                                                (text.empty() ? "" : ": " + text));
        }
        co_await write_raw("</stream:stream>");
        close_socket();
        co_return result;
      }
    });
  }

  // ---- running session ----
  void start_loops() {
    running = true;
    closed_signal.expires_at(asio::steady_timer::time_point::max());
    auto self = shared_from_this();
    asio::co_spawn(
        io, [self]() -> awaitable<void> { co_await self->reader(); }, asio::detached);
    // Elements that arrived with the bind result.
    if (!inbox.empty()) {
      asio::post(io, [self] {
        while (!self->inbox.empty()) {
          xml::Element el = std::move(self->inbox.front());
          self->inbox.pop_front();
          self->dispatch(el);
        }
      });
    }
  }

  awaitable<void> reader() {
    auto self = shared_from_this();
    Error why;
    try {
      while (!stream_closed) {
        co_await read_more();
        while (!inbox.empty()) {
          xml::Element el = std::move(inbox.front());
          inbox.pop_front();
          if (el.is("error", ns::kStream)) {
            std::string cond = "undefined-condition";
            for (const xml::Element* c : el.children())
              if (c->xmlns() == ns::kStreams && c->name() != "text") cond = c->name();
            if (cond == "conflict")
              why = err(Errc::kConflict,
                        "another client logged in with the same resource (" + opt.resource + ")");
            else
              why = err(Errc::kDisconnected, "the server ended the stream: " + cond);
            continue;
          }
          dispatch(el);
        }
      }
    } catch (const boost::system::system_error& e) {
      if (!closing)
        why = err(Errc::kDisconnected, "the connection was lost: " + e.code().message());
    } catch (const std::exception& e) {
      if (!closing) why = err(Errc::kDisconnected, e.what());
    }
    if (!why && !closing) why = err(Errc::kDisconnected, "the server closed the stream");
    finish(why);
  }

  void finish(const Error& why) {
    if (!is_connected && !running) return;
    is_connected = false;
    running = false;
    close_reason = why;
    close_socket();
    for (auto& [id, p] : pending) p->timer.cancel();
    closed_signal.cancel();
    if (owner && owner->on_disconnect && why) owner->on_disconnect(why);
  }

  void close_socket() {
    if (stream) {
      boost::system::error_code ig;
      stream->next_layer().shutdown(tcp::socket::shutdown_both, ig);
      stream->next_layer().close(ig);
    }
  }

  void send(const xml::Element& el) { send_raw(xml::serialize(el)); }
  void send_raw(std::string data) {
    if (!is_connected) return;
    outq.push_back(std::move(data));
    if (writing) return;
    writing = true;
    auto self = shared_from_this();
    asio::co_spawn(
        io, [self]() -> awaitable<void> { co_await self->writer(); }, asio::detached);
  }
  awaitable<void> writer() {
    auto self = shared_from_this();
    try {
      while (!outq.empty() && stream) {
        std::string data = std::move(outq.front());
        outq.pop_front();
        co_await write_raw(data);
      }
    } catch (const std::exception&) {
      outq.clear();
    }
    writing = false;
  }

  awaitable<std::optional<xml::Element>> iq(xml::Element iq) {
    if (!is_connected) co_return std::nullopt;
    std::string id = new_id();
    iq.set_attr("id", id);
    auto p = std::make_shared<PendingIq>(io);
    p->timer.expires_after(opt.timeout);
    pending[id] = p;
    send(iq);
    boost::system::error_code ec;
    co_await p->timer.async_wait(asio::redirect_error(use_awaitable, ec));
    pending.erase(id);
    if (!p->done) co_return std::nullopt;
    co_return std::move(p->reply);
  }

  Error iq_error(const std::optional<xml::Element>& r, std::string_view what) {
    if (!r) {
      if (!is_connected)
        return close_reason ? close_reason : err(Errc::kDisconnected, "not connected");
      return err(Errc::kTimeout, std::string(what) + ": the server did not answer");
    }
    if (r->attr("type") == "result") return {};
    std::string cond = error_condition(*r);
    Errc c = cond == "item-not-found" || cond == "service-unavailable" ? Errc::kNotFound
             : cond == "conflict"                                      ? Errc::kConflict
                                                                       : Errc::kNotAllowed;
    std::string text = error_text(*r);
    return err(c, std::string(what) + " failed: " + cond + (text.empty() ? "" : " (" + text + ")"));
  }

  void dispatch(xml::Element& el) {
    if (el.name() == "iq")
      handle_iq(el);
    else if (el.name() == "message")
      handle_message(el);
    else if (el.name() == "presence")
      handle_presence(el);
  }

  bool from_self_or_server(std::string_view from) {
    return from.empty() || from == jid.bare_str() || from == jid.domain() || from == bound;
  }

  void handle_iq(xml::Element& el) {
    std::string type(el.attr("type"));
    if (type == "result" || type == "error") {
      auto it = pending.find(std::string(el.attr("id")));
      if (it == pending.end()) return;
      // RFC 6120 §10.3: only the addressee (or our own server for bare/none) may answer.
      it->second->done = true;
      it->second->reply = std::move(el);
      it->second->timer.cancel();
      return;
    }
    if (type != "get" && type != "set") return;
    const xml::Element* q = el.first_child();
    if (type == "set" && q && q->is("query", ns::kRoster)) {
      // RFC 6121 §2.1.6: a push is accepted only from our own account.
      if (!from_self_or_server(el.attr("from"))) {
        send(xmpp::make_error_reply(el, xmpp::ErrorType::kCancel, "service-unavailable"));
        return;
      }
      if (q->has_attr("ver")) roster_ver = std::string(q->attr("ver"));
      for (const xml::Element* item : q->children("item", ns::kRoster)) {
        RosterItem ri = parse_item(*item);
        bool removed = item->attr("subscription") == "remove";
        auto it = std::find_if(roster.begin(), roster.end(),
                               [&](const RosterItem& x) { return x.jid == ri.jid; });
        if (removed) {
          if (it != roster.end()) roster.erase(it);
        } else if (it != roster.end()) {
          *it = ri;
        } else {
          roster.push_back(ri);
        }
        if (owner && owner->on_roster_push) owner->on_roster_push(ri, removed);
      }
      save_roster();
      send(xmpp::make_iq_result(el));
      return;
    }
    if (type == "get" && q && q->is("ping", ns::kPing)) {
      send(xmpp::make_iq_result(el));
      return;
    }
    if (q) {
      if (auto h = iq_handlers.find(q->xmlns()); h != iq_handlers.end()) {
        auto handler = h->second;  // a copy: the handler may add or remove handlers
        handler(el);
        return;
      }
    }
    if (type == "get" && q && q->is("query", ns::kDiscoInfo)) {
      xml::Element r = xmpp::make_iq_result(el);
      xml::Element& info = r.add_child("query", ns::kDiscoInfo);
      info.add_child("identity", ns::kDiscoInfo)
          .set_attr("category", "client")
          .set_attr("type", "console")
          .set_attr("name", "kabar");
      for (const char* f : {ns::kDiscoInfo, ns::kPing, kReceipts, kChatStates})
        info.add_child("feature", ns::kDiscoInfo).set_attr("var", f);
      for (const auto& f : extra_features)
        info.add_child("feature", ns::kDiscoInfo).set_attr("var", f);
      send(r);
      return;
    }
    send(xmpp::make_error_reply(el, xmpp::ErrorType::kCancel, "service-unavailable"));
  }

  static RosterItem parse_item(const xml::Element& item) {
    RosterItem ri;
    ri.jid = bare_of(item.attr("jid"));
    ri.name = std::string(item.attr("name"));
    ri.subscription =
        item.has_attr("subscription") ? std::string(item.attr("subscription")) : "none";
    ri.ask = item.attr("ask") == "subscribe";
    for (const xml::Element* g : item.children("group")) ri.groups.push_back(g->text());
    return ri;
  }

  void handle_message(xml::Element& el) {
    Message m;
    m.from = std::string(el.attr("from"));
    m.to = std::string(el.attr("to"));
    m.id = std::string(el.attr("id"));
    m.type = el.has_attr("type") ? std::string(el.attr("type")) : "normal";
    m.body = el.child_text("body");
    m.thread = el.child_text("thread");
    if (const xml::Element* d = el.child("delay", ns::kDelay))
      m.delay = std::string(d->attr("stamp"));
    for (const xml::Element* c : el.children()) {
      if (c->xmlns() == kChatStates) m.chat_state = c->name();
    }
    if (const xml::Element* r = el.child("received", kReceipts))
      m.receipt_for = std::string(r->attr("id"));
    m.receipt_requested = el.child("request", kReceipts) != nullptr;
    if (const xml::Element* x = el.child("x", "jabber:x:oob"))
      m.oob_url = x->child_text("url", "jabber:x:oob");
    if (m.type == "error") {
      m.error = error_condition(el);
      bounced[m.id] = m;
    } else if (m.receipt_requested && !m.id.empty() && !m.from.empty()) {
      // XEP-0184 §5.1: acknowledge what we received.
      xml::Element ack("message", ns::kClient);
      ack.set_attr("to", m.from).set_attr("id", new_id());
      ack.add_child("received", kReceipts).set_attr("id", m.id);
      send(ack);
    }
    if (owner && owner->on_message) owner->on_message(m);
  }

  void handle_presence(xml::Element& el) {
    Presence p;
    p.from = std::string(el.attr("from"));
    p.type = std::string(el.attr("type"));
    p.show = el.child_text("show");
    p.status = el.child_text("status");
    std::string prio = el.child_text("priority");
    p.priority = prio.empty() ? 0 : std::atoi(prio.c_str());
    if (const xml::Element* d = el.child("delay", ns::kDelay))
      p.delay = std::string(d->attr("stamp"));
    if (p.type == "error") p.error = error_condition(el);
    std::string bare = bare_of(p.from);
    if (p.type.empty()) {
      presences[bare][resource_of(p.from)] = p;
    } else if (p.type == "unavailable") {
      auto it = presences.find(bare);
      if (it != presences.end()) {
        it->second.erase(resource_of(p.from));
        if (it->second.empty()) presences.erase(it);
      }
    } else if (p.type == "subscribe") {
      if (std::find(requests.begin(), requests.end(), bare) == requests.end())
        requests.push_back(bare);
    }
    if (owner && owner->on_presence) owner->on_presence(p);
  }

  void load_roster() {
    if (opt.roster_cache.empty()) return;
    if (auto c = load_roster_cache(opt.roster_cache)) {
      roster_ver = c->ver;
      roster = std::move(c->items);
    }
  }
  void save_roster() {
    if (opt.roster_cache.empty() || !roster_ver_supported) return;
    save_roster_cache(opt.roster_cache, RosterCache{roster_ver, roster});
  }
};

// ---------------------------------------------------------------------------------------------

Client::Client(asio::io_context& io, Options options)
    : impl_(std::make_shared<Impl>(*this, io, std::move(options))) {}

Client::~Client() {
  impl_->owner = nullptr;
  impl_->closing = true;
  impl_->close_socket();
}

awaitable<Error> Client::connect() { co_return co_await impl_->connect(); }
awaitable<Error> Client::register_account() { co_return co_await impl_->register_account(); }

awaitable<Error> Client::change_password(std::string new_password) {
  auto self = impl_;
  xml::Element iq("iq", ns::kClient);
  iq.set_attr("type", "set").set_attr("to", self->jid.domain());
  xml::Element& q = iq.add_child("query", ns::kRegister);
  q.add_child("username", ns::kRegister).add_text(self->jid.local());
  q.add_child("password", ns::kRegister).add_text(new_password);
  auto r = co_await self->iq(std::move(iq));
  Error e = self->iq_error(r, "changing the password");
  if (!e) self->opt.password = std::move(new_password);
  co_return e;
}

awaitable<Error> Client::fetch_roster() {
  auto self = impl_;
  self->load_roster();
  xml::Element iq("iq", ns::kClient);
  iq.set_attr("type", "get");
  xml::Element& q = iq.add_child("query", ns::kRoster);
  bool sent_ver = self->roster_ver_supported && !self->opt.roster_cache.empty();
  if (sent_ver) q.set_attr("ver", self->roster_ver);
  auto r = co_await self->iq(std::move(iq));
  if (Error e = self->iq_error(r, "fetching the roster")) co_return e;
  const xml::Element* rq = r->child("query", ns::kRoster);
  if (!rq) {
    // XEP-0237 §2.3: an empty result means the cached roster is current (pushes may follow).
    if (!sent_ver) self->roster.clear();
    co_return Error{};
  }
  self->roster.clear();
  for (const xml::Element* item : rq->children("item", ns::kRoster))
    self->roster.push_back(Impl::parse_item(*item));
  self->roster_ver = std::string(rq->attr("ver"));
  self->save_roster();
  co_return Error{};
}

const std::vector<RosterItem>& Client::roster() const { return impl_->roster; }

const RosterItem* Client::roster_item(const std::string& bare_jid) const {
  for (const auto& i : impl_->roster)
    if (i.jid == bare_jid) return &i;
  return nullptr;
}

awaitable<Error> Client::roster_set(const std::string& jid, const std::string& name) {
  auto self = impl_;
  auto j = xmpp::Jid::parse(jid);
  if (!j) co_return err(Errc::kBadInput, "'" + jid + "' is not a valid JID");
  xml::Element iq("iq", ns::kClient);
  iq.set_attr("type", "set");
  xml::Element& item = iq.add_child("query", ns::kRoster).add_child("item", ns::kRoster);
  item.set_attr("jid", j->bare_str());
  if (!name.empty()) item.set_attr("name", name);
  auto r = co_await self->iq(std::move(iq));
  co_return self->iq_error(r, "adding " + j->bare_str() + " to the roster");
}

awaitable<Error> Client::roster_remove(const std::string& jid) {
  auto self = impl_;
  auto j = xmpp::Jid::parse(jid);
  if (!j) co_return err(Errc::kBadInput, "'" + jid + "' is not a valid JID");
  xml::Element iq("iq", ns::kClient);
  iq.set_attr("type", "set");
  iq.add_child("query", ns::kRoster)
      .add_child("item", ns::kRoster)
      .set_attr("jid", j->bare_str())
      .set_attr("subscription", "remove");
  auto r = co_await self->iq(std::move(iq));
  Error e = self->iq_error(r, "removing " + j->bare_str());
  if (e.code == Errc::kNotFound) e.message = j->bare_str() + " is not in your roster";
  co_return e;
}

static void presence_to(Client::Impl& impl, const std::string& jid, const char* type) {
  auto j = xmpp::Jid::parse(jid);
  if (!j) return;
  xml::Element p("presence", ns::kClient);
  p.set_attr("to", j->bare_str()).set_attr("type", type);
  impl.send(p);
  if (std::string_view(type) == "subscribed" || std::string_view(type) == "unsubscribed") {
    auto& r = impl.requests;
    r.erase(std::remove(r.begin(), r.end(), j->bare_str()), r.end());
  }
}

void Client::subscribe(const std::string& jid) { presence_to(*impl_, jid, "subscribe"); }
void Client::approve(const std::string& jid) { presence_to(*impl_, jid, "subscribed"); }
void Client::deny(const std::string& jid) { presence_to(*impl_, jid, "unsubscribed"); }
void Client::unsubscribe(const std::string& jid) { presence_to(*impl_, jid, "unsubscribe"); }
const std::vector<std::string>& Client::pending_requests() const { return impl_->requests; }

void Client::send_presence(const std::string& show, const std::string& status, int priority) {
  xml::Element p("presence", ns::kClient);
  if (!show.empty() && show != "online") p.add_child("show", ns::kClient).add_text(show);
  if (!status.empty()) p.add_child("status", ns::kClient).add_text(status);
  if (priority != 0) p.add_child("priority", ns::kClient).add_text(std::to_string(priority));
  impl_->send(p);
}

std::string Client::send_message(const std::string& to, const std::string& body) {
  if (check_text("the message", body)) return {};
  xml::Element m("message", ns::kClient);
  std::string id = impl_->new_id();
  m.set_attr("to", to).set_attr("type", "chat").set_attr("id", id);
  m.add_child("body", ns::kClient).add_text(body);
  m.add_child("request", kReceipts);
  m.add_child("active", kChatStates);
  impl_->send(m);
  return id;
}

void Client::send_chat_state(const std::string& to, const std::string& state) {
  xml::Element m("message", ns::kClient);
  m.set_attr("to", to).set_attr("type", "chat");
  m.add_child(state, kChatStates);
  impl_->send(m);
}

awaitable<Error> Client::ping() {
  auto self = impl_;
  xml::Element iq("iq", ns::kClient);
  iq.set_attr("type", "get").set_attr("to", self->jid.domain());
  iq.add_child("ping", ns::kPing);
  auto r = co_await self->iq(std::move(iq));
  if (!r) co_return self->iq_error(r, "ping");
  co_return Error{};  // an error reply still proves the server is alive
}

awaitable<Error> Client::send_message_checked(const std::string& to, const std::string& body) {
  auto self = impl_;
  auto j = xmpp::Jid::parse(to);
  if (!j) co_return err(Errc::kBadInput, "'" + to + "' is not a valid JID");
  if (Error e = check_text("the message", body)) co_return e;
  std::string id = send_message(j->str(), body);
  if (Error e = co_await ping()) co_return e;
  // A bounce from a remote router may trail the ping result a little.
  asio::steady_timer t(self->io, std::chrono::milliseconds(300));
  boost::system::error_code ec;
  co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
  auto it = self->bounced.find(id);
  if (it != self->bounced.end()) {
    const std::string& c = it->second.error;
    if (c == "service-unavailable" || c == "item-not-found" || c == "recipient-unavailable" ||
        c == "remote-server-not-found")
      co_return err(Errc::kNotFound, j->bare_str() + " is unknown to the server (" + c + ")");
    co_return err(Errc::kNotAllowed,
                  "the message to " + j->bare_str() + " was refused (" + c + ")");
  }
  co_return Error{};
}

const std::map<std::string, std::map<std::string, Presence>>& Client::presences() const {
  return impl_->presences;
}

awaitable<void> Client::disconnect() {
  auto self = impl_;
  if (!self->is_connected) co_return;
  self->send_raw("</stream:stream>");
  self->closing = true;
  // Wait for the server's closing tag (RFC 6120 §4.4), at most two seconds.
  asio::steady_timer t(self->io, std::chrono::seconds(2));
  t.async_wait([self](boost::system::error_code e) {
    if (!e) self->finish(Error{});
  });
  boost::system::error_code ec;
  co_await self->closed_signal.async_wait(asio::redirect_error(use_awaitable, ec));
  t.cancel();
  self->finish(Error{});
}

awaitable<Error> Client::wait_closed() {
  auto self = impl_;
  if (self->running) {
    boost::system::error_code ec;
    co_await self->closed_signal.async_wait(asio::redirect_error(use_awaitable, ec));
  }
  co_return self->close_reason;
}

bool Client::connected() const { return impl_->is_connected; }

void Client::add_iq_handler(const std::string& xmlns,
                            std::function<void(const xml::Element&)> handler) {
  impl_->iq_handlers[xmlns] = std::move(handler);
}

void Client::add_feature(const std::string& var) {
  auto& f = impl_->extra_features;
  if (std::find(f.begin(), f.end(), var) == f.end()) f.push_back(var);
}

awaitable<std::optional<xml::Element>> Client::send_iq(xml::Element iq) {
  auto self = impl_;
  co_return co_await self->iq(std::move(iq));
}

void Client::send_stanza(const xml::Element& el) { impl_->send(el); }

std::string Client::iq_condition(const std::optional<xml::Element>& reply) {
  if (!reply) return "timeout";
  if (reply->attr("type") == "result") return {};
  return error_condition(*reply);
}

asio::io_context& Client::io_context() { return impl_->io; }
const Options& Client::options() const { return impl_->opt; }
std::string Client::bound_jid() const { return impl_->bound; }
std::string Client::server_fingerprint() const { return impl_->fingerprint; }

awaitable<Error> with_backoff(asio::io_context& io, std::function<awaitable<Error>()> fn,
                              int attempts, std::chrono::seconds max) {
  std::chrono::seconds delay(1);
  Error e;
  for (int i = 0; i < attempts; ++i) {
    e = co_await fn();
    if (!e ||
        (e.code != Errc::kUnreachable && e.code != Errc::kTimeout && e.code != Errc::kDisconnected))
      co_return e;
    if (i + 1 == attempts) break;
    asio::steady_timer t(io, delay);
    boost::system::error_code ec;
    co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
    delay = std::min(delay * 2, max);
  }
  co_return e;
}

}  // namespace kabar::client
