#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <array>
#include <stdexcept>

#include "client/client_impl.h"
#include "xmpp/stanza.h"

namespace kabar::client {

namespace {

std::string normalize_fingerprint(std::string_view fp) {
  std::string out;
  for (char c : fp) {
    if (c == ':' || c == ' ') continue;
    out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  if (out.rfind("sha256", 0) == 0) out = out.substr(6);
  return out;
}

}  // namespace

awaitable<std::size_t> Client::Impl::read_some(char* buf, std::size_t n) {
  if (tls) co_return co_await stream->async_read_some(asio::buffer(buf, n), use_awaitable);
  co_return co_await stream->next_layer().async_read_some(asio::buffer(buf, n), use_awaitable);
}

awaitable<void> Client::Impl::write_raw(const std::string& data) {
  if (tls)
    co_await asio::async_write(*stream, asio::buffer(data), use_awaitable);
  else
    co_await asio::async_write(stream->next_layer(), asio::buffer(data), use_awaitable);
}

awaitable<void> Client::Impl::read_more() {
  std::array<char, 8192> buf;
  std::size_t n = co_await read_some(buf.data(), buf.size());
  auto r = parser->feed(std::string_view(buf.data(), n));
  if (r.status != xml::StreamParser::Status::kOk) {
    parse_failed = true;
    throw std::runtime_error("the server sent malformed XML");
  }
}

// The next top-level element during negotiation (before the reader runs).
awaitable<xml::Element> Client::Impl::next_element() {
  while (inbox.empty()) {
    if (stream_closed) throw std::runtime_error("the server closed the stream");
    co_await read_more();
  }
  xml::Element el = std::move(inbox.front());
  inbox.pop_front();
  if (el.is("error", ns::kStream)) {
    const auto [cond, text] = xmpp::read_stream_error(el);
    throw std::runtime_error("stream error from the server: " + cond +
                             (text.empty() ? "" : " (" + text + ")"));
  }
  co_return el;
}

void Client::Impl::make_ssl_context() {
  ssl_ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  ssl_ctx->set_default_verify_paths();
  ssl_ctx->set_options(asio::ssl::context::no_sslv2 | asio::ssl::context::no_sslv3 |
                       asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
  // The chain and name are checked after the handshake (check_certificate) so a failure can
  // say why and offer the fingerprint; nothing is sent on the stream before that.
  ssl_ctx->set_verify_mode(asio::ssl::verify_none);
}

awaitable<std::optional<Error>> Client::Impl::tls_handshake() {
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
  fingerprint = to_hex({reinterpret_cast<const char*>(md), len});
  if (opt.insecure) co_return std::nullopt;
  if (!opt.pin_sha256.empty()) {
    if (normalize_fingerprint(opt.pin_sha256) == fingerprint) co_return std::nullopt;
    co_return err(Errc::kCertificate, "the server's certificate (SHA-256 " + fingerprint +
                                          ") does not match the pinned fingerprint");
  }
  long v = SSL_get_verify_result(ssl);
  if (v != X509_V_OK) {
    co_return err(Errc::kCertificate, "the certificate of " + jid.domain() +
                                          " is not trusted: " + X509_verify_cert_error_string(v) +
                                          " (SHA-256 " + fingerprint +
                                          "); pin it with --pin if you trust it, or --insecure for "
                                          "a test server");
  }
  co_return std::nullopt;
}

}  // namespace kabar::client
