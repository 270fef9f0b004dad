#include "client/media/dtls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/srtp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cctype>
#include <vector>

namespace kabar::client::media {
namespace {

// RFC 8445 §... leaves the path MTU unknown; 1200 bytes is what browsers assume for DTLS too.
constexpr long kMtu = 1200;

std::string hex_fingerprint(const X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &len) != 1) return {};
  static const char* digits = "0123456789ABCDEF";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    if (i) out += ':';
    out += digits[md[i] >> 4];
    out += digits[md[i] & 15];
  }
  return out;
}

std::string openssl_error() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "no detail";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

}  // namespace

std::string normalize_fingerprint(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == ':') continue;
    out += char(std::toupper(static_cast<unsigned char>(c)));
  }
  return out;
}

struct Dtls::Impl {
  EVP_PKEY* key = nullptr;
  X509* cert = nullptr;
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;
  std::string expected;  // normalized peer fingerprint
  bool mismatch = false;
  // What OpenSSL wrote since the last flush, one datagram per write: DTLS records must not be
  // glued together past the MTU, which a memory BIO would do.
  std::vector<std::vector<std::uint8_t>> out;

  ~Impl() {
    if (ssl != nullptr) SSL_free(ssl);
    if (ctx != nullptr) SSL_CTX_free(ctx);
    if (cert != nullptr) X509_free(cert);
    if (key != nullptr) EVP_PKEY_free(key);
  }
};

namespace {

int out_write(BIO* bio, const char* data, int len) {
  auto* impl = static_cast<Dtls::Impl*>(BIO_get_data(bio));
  impl->out.emplace_back(data, data + len);
  return len;
}

long out_ctrl(BIO*, int cmd, long, void*) {
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_DGRAM_QUERY_MTU:
    case BIO_CTRL_DGRAM_GET_FALLBACK_MTU:
      return kMtu;
    default:
      return 0;
  }
}

int out_create(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

// One method table for the process; OpenSSL keeps it referenced from every BIO made with it.
const BIO_METHOD* out_method() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "kabar dtls out");
    BIO_meth_set_write(m, out_write);
    BIO_meth_set_ctrl(m, out_ctrl);
    BIO_meth_set_create(m, out_create);
    return m;
  }();
  return method;
}

// XEP-0320: the peer's self-signed certificate is trusted exactly when its hash is the one it
// signalled; chain errors are irrelevant.
int verify_peer(int, X509_STORE_CTX* store) {
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* impl = static_cast<Dtls::Impl*>(SSL_get_app_data(ssl));
  if (X509_STORE_CTX_get_error_depth(store) != 0) return 1;
  X509* cert = X509_STORE_CTX_get_current_cert(store);
  if (cert == nullptr || normalize_fingerprint(hex_fingerprint(cert)) != impl->expected) {
    impl->mismatch = true;
    return 0;
  }
  return 1;
}

}  // namespace

std::unique_ptr<Dtls> Dtls::create(std::string& error) {
  std::unique_ptr<Dtls> d(new Dtls);
  d->impl_ = std::make_unique<Impl>();
  Impl& i = *d->impl_;
  ERR_clear_error();
  i.key = EVP_EC_gen("P-256");
  i.cert = X509_new();
  if (i.key == nullptr || i.cert == nullptr) {
    error = "DTLS key: " + openssl_error();
    return nullptr;
  }
  X509_set_version(i.cert, 2);
  unsigned char serial[8];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7F;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(i.cert));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(i.cert), -24 * 3600);
  X509_gmtime_adj(X509_getm_notAfter(i.cert), 30L * 24 * 3600);
  X509_NAME* name = X509_get_subject_name(i.cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("kabar"), -1, -1, 0);
  X509_set_issuer_name(i.cert, name);
  X509_set_pubkey(i.cert, i.key);
  if (X509_sign(i.cert, i.key, EVP_sha256()) == 0) {
    error = "DTLS certificate: " + openssl_error();
    return nullptr;
  }
  d->fingerprint_ = hex_fingerprint(i.cert);

  i.ctx = SSL_CTX_new(DTLS_method());
  if (i.ctx == nullptr || SSL_CTX_set_min_proto_version(i.ctx, DTLS1_2_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(i.ctx, DTLS1_2_VERSION) != 1 ||
      SSL_CTX_use_certificate(i.ctx, i.cert) != 1 || SSL_CTX_use_PrivateKey(i.ctx, i.key) != 1 ||
      // RFC 5764 §4.1.2; this call returns 0 on success.
      SSL_CTX_set_tlsext_use_srtp(i.ctx, "SRTP_AES128_CM_SHA1_80") != 0) {
    error = "DTLS context: " + openssl_error();
    return nullptr;
  }
  SSL_CTX_set_verify(i.ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_peer);
  return d;
}

Dtls::~Dtls() = default;

Dtls::State Dtls::start(bool client, const std::string& peer_fingerprint) {
  if (state_ != State::kIdle) return state_;
  client_ = client;
  Impl& i = *impl_;
  i.expected = normalize_fingerprint(peer_fingerprint);
  ERR_clear_error();
  i.ssl = SSL_new(i.ctx);
  if (i.ssl == nullptr) return fail("DTLS: " + openssl_error());
  SSL_set_app_data(i.ssl, &i);
  BIO* in = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(in, -1);
  BIO* out = BIO_new(out_method());
  BIO_set_data(out, &i);
  SSL_set_bio(i.ssl, in, out);
  SSL_set_options(i.ssl, SSL_OP_NO_QUERY_MTU);
  DTLS_set_link_mtu(i.ssl, kMtu);
  if (client) {
    SSL_set_connect_state(i.ssl);
  } else {
    SSL_set_accept_state(i.ssl);
  }
  state_ = State::kHandshaking;
  return advance();
}

Dtls::State Dtls::receive(std::span<const std::uint8_t> datagram) {
  if (state_ != State::kHandshaking && state_ != State::kConnected) return state_;
  BIO_write(SSL_get_rbio(impl_->ssl), datagram.data(), int(datagram.size()));
  if (state_ == State::kHandshaking) return advance();
  // After the handshake only alerts (close_notify) and retransmitted handshake records come;
  // reading lets OpenSSL answer them. No application data is carried over DTLS here.
  unsigned char buf[1500];
  ERR_clear_error();
  while (SSL_read(impl_->ssl, buf, sizeof buf) > 0) {
  }
  ERR_clear_error();
  flush();
  return state_;
}

std::optional<std::chrono::milliseconds> Dtls::timeout() const {
  if (state_ != State::kHandshaking) return std::nullopt;
  timeval tv{};
  if (DTLSv1_get_timeout(impl_->ssl, &tv) != 1) return std::nullopt;
  return std::chrono::milliseconds(tv.tv_sec * 1000 + tv.tv_usec / 1000);
}

Dtls::State Dtls::on_timeout() {
  if (state_ != State::kHandshaking) return state_;
  ERR_clear_error();
  if (DTLSv1_handle_timeout(impl_->ssl) < 0) return fail("DTLS handshake timed out");
  flush();
  return state_;
}

void Dtls::close() {
  if (state_ == State::kConnected) {
    ERR_clear_error();
    SSL_shutdown(impl_->ssl);
    ERR_clear_error();
    flush();
  }
  state_ = State::kFailed;
  error_ = "closed";
}

Dtls::State Dtls::advance() {
  Impl& i = *impl_;
  ERR_clear_error();
  int r = SSL_do_handshake(i.ssl);
  flush();
  if (r != 1) {
    int e = SSL_get_error(i.ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return state_;
    if (i.mismatch) return fail("fingerprint mismatch");
    return fail("DTLS handshake failed: " + openssl_error());
  }
  // The verify callback has seen the certificate; make sure there was one.
  X509* peer = SSL_get1_peer_certificate(i.ssl);
  bool matches = peer != nullptr && normalize_fingerprint(hex_fingerprint(peer)) == i.expected;
  X509_free(peer);
  if (!matches) return fail("fingerprint mismatch");
  SRTP_PROTECTION_PROFILE* profile = SSL_get_selected_srtp_profile(i.ssl);
  if (profile == nullptr || profile->id != SRTP_AES128_CM_SHA1_80)
    return fail("DTLS: the peer did not agree on SRTP_AES128_CM_SHA1_80");
  // RFC 5764 §4.2: client write key, server write key, client salt, server salt.
  std::uint8_t material[60];
  static const char kLabel[] = "EXTRACTOR-dtls_srtp";
  if (SSL_export_keying_material(i.ssl, material, sizeof material, kLabel, sizeof kLabel - 1,
                                 nullptr, 0, 0) != 1)
    return fail("DTLS: exporting the SRTP keys failed");
  SrtpKey client_key{}, server_key{};
  std::copy(material, material + 16, client_key.begin());
  std::copy(material + 16, material + 32, server_key.begin());
  std::copy(material + 32, material + 46, client_key.begin() + 16);
  std::copy(material + 46, material + 60, server_key.begin() + 16);
  OPENSSL_cleanse(material, sizeof material);
  local_key_ = client_ ? client_key : server_key;
  remote_key_ = client_ ? server_key : client_key;
  state_ = State::kConnected;
  return state_;
}

Dtls::State Dtls::fail(std::string why) {
  flush();  // an alert for the peer, if OpenSSL wrote one
  state_ = State::kFailed;
  error_ = std::move(why);
  return state_;
}

void Dtls::flush() {
  auto out = std::move(impl_->out);
  impl_->out.clear();
  if (!send) return;
  for (const auto& datagram : out) send(datagram);
}

}  // namespace kabar::client::media
