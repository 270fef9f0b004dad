#include <algorithm>
#include <optional>

#include "client/client_impl.h"
#include "xmpp/scram.h"

namespace kabar::client {

awaitable<std::optional<Error>> Client::Impl::open_transport() {
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

awaitable<std::optional<Error>> Client::Impl::secure(bool direct) {
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

awaitable<std::optional<Error>> Client::Impl::authenticate(const xml::Element& features) {
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

awaitable<std::optional<Error>> Client::Impl::bind(const xml::Element& features) {
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
awaitable<Error> Client::Impl::guarded(std::function<awaitable<std::optional<Error>>()> step) {
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

awaitable<Error> Client::Impl::connect() {
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

awaitable<Error> Client::Impl::register_account() {
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

}  // namespace kabar::client
