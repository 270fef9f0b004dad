#include "tls/handover.h"

#include <openssl/crypto.h>

#include <array>
#include <cstring>
#include <string_view>

namespace kabar::tls {

namespace {

struct Secrets {
  std::array<unsigned char, kMaxSecret> client{};
  std::array<unsigned char, kMaxSecret> server{};
  std::size_t client_len = 0;
  std::size_t server_len = 0;
  int client_seen = 0;  // more than one of a kind: something we do not understand
  int server_seen = 0;
};

void free_secrets(void* /*parent*/, void* ptr, CRYPTO_EX_DATA* /*ad*/, int /*idx*/, long /*argl*/,
                  void* /*argp*/) {
  if (ptr == nullptr) return;
  auto* s = static_cast<Secrets*>(ptr);
  OPENSSL_cleanse(s, sizeof *s);
  delete s;
}

int secrets_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, free_secrets);
  return index;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// "LABEL <client_random hex> <secret hex>" (the NSS key log format OpenSSL writes).
void on_keylog(const SSL* ssl, const char* line) {
  const int index = secrets_index();
  if (index < 0) return;
  auto* s = static_cast<Secrets*>(SSL_get_ex_data(ssl, index));
  if (s == nullptr) return;
  std::string_view l(line);
  const std::size_t sp1 = l.find(' ');
  if (sp1 == std::string_view::npos) return;
  const std::string_view label = l.substr(0, sp1);
  unsigned char* dst;
  std::size_t* len;
  if (label == "CLIENT_TRAFFIC_SECRET_0") {
    dst = s->client.data();
    len = &s->client_len;
    ++s->client_seen;
  } else if (label == "SERVER_TRAFFIC_SECRET_0") {
    dst = s->server.data();
    len = &s->server_len;
    ++s->server_seen;
  } else {
    return;
  }
  *len = 0;
  const std::size_t sp2 = l.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return;
  const std::string_view hex = l.substr(sp2 + 1);
  if (hex.size() % 2 != 0 || hex.size() / 2 > kMaxSecret) return;
  for (std::size_t i = 0; i < hex.size() / 2; ++i) {
    const int hi = hex_value(hex[2 * i]);
    const int lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return;
    dst[i] = static_cast<unsigned char>(hi * 16 + lo);
  }
  *len = hex.size() / 2;
}

}  // namespace

void enable_handover(SSL_CTX* ctx) {
  SSL_CTX_set_keylog_callback(ctx, on_keylog);
  SSL_CTX_set_num_tickets(ctx, 0);
}

bool arm_handover(SSL* ssl) {
  const int index = secrets_index();
  if (index < 0 || SSL_get_ex_data(ssl, index) != nullptr) return false;
  auto* s = new Secrets();
  if (SSL_set_ex_data(ssl, index, s) != 1) {
    delete s;
    return false;
  }
  return true;
}

std::unique_ptr<Record13> take_over(SSL* ssl) {
  const int index = secrets_index();
  if (index < 0) return nullptr;
  auto* s = static_cast<Secrets*>(SSL_get_ex_data(ssl, index));
  if (s == nullptr) return nullptr;
  // Whatever the outcome, the secrets leave the SSL object now: a connection that stays on
  // OpenSSL does not carry them (nor their memory) for its lifetime.
  SSL_set_ex_data(ssl, index, nullptr);
  std::unique_ptr<Secrets, void (*)(Secrets*)> owned(s, [](Secrets* p) {
    OPENSSL_cleanse(p, sizeof *p);
    delete p;
  });
  // The record layer takes over only a finished TLS 1.3 server handshake in which OpenSSL has
  // used the application keys for nothing: no ticket or KeyUpdate written (sequence numbers
  // both 0), no record read past the client's Finished (without read_ahead OpenSSL reads one
  // record at a time, exactly its length), nothing unread or unwritten in its buffers.
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
  if (SSL_is_server(ssl) != 1 || SSL_is_init_finished(ssl) != 1 ||
      SSL_version(ssl) != TLS1_3_VERSION || SSL_get_shutdown(ssl) != 0 ||
      SSL_get_num_tickets(ssl) != 0 || SSL_get_read_ahead(ssl) != 0 || SSL_pending(ssl) != 0 ||
      SSL_has_pending(ssl) != 0 || SSL_get_key_update_type(ssl) != SSL_KEY_UPDATE_NONE ||
      SSL_get_early_data_status(ssl) == SSL_EARLY_DATA_ACCEPTED || cipher == nullptr) {
    return nullptr;
  }
  if (BIO* w = SSL_get_wbio(ssl); w == nullptr || BIO_wpending(w) != 0) return nullptr;
  Suite suite;
  switch (SSL_CIPHER_get_protocol_id(cipher)) {
    case 0x1301:
      suite = Suite::kAes128GcmSha256;
      break;
    case 0x1302:
      suite = Suite::kAes256GcmSha384;
      break;
    case 0x1303:
      suite = Suite::kChacha20Poly1305Sha256;
      break;
    default:
      return nullptr;
  }
  if (s->client_seen != 1 || s->server_seen != 1) return nullptr;
  // On a server the peer's (client's) secret protects what we read.
  return Record13::make(suite, std::span(s->client.data(), s->client_len),
                        std::span(s->server.data(), s->server_len));
}

}  // namespace kabar::tls
