#include "tls/record13.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <algorithm>
#include <cstring>

namespace kabar::tls {

namespace {

constexpr std::uint8_t kChangeCipherSpec = 20;
constexpr std::uint8_t kAlertType = 21;
constexpr std::uint8_t kHandshakeType = 22;
constexpr std::uint8_t kApplicationData = 23;
constexpr std::uint8_t kKeyUpdate = 24;  // HandshakeType key_update (§4)
// RFC 8446 §5.5: AES-GCM keys should seal at most 2^24.5 full-size records; we move to the next
// write key well before that, for every suite.
constexpr std::uint64_t kRekeyAfterRecords = std::uint64_t{1} << 24;

const char* digest_name(Suite s) { return s == Suite::kAes256GcmSha384 ? "SHA384" : "SHA256"; }

const EVP_CIPHER* cipher_of(Suite s) {
  switch (s) {
    case Suite::kAes128GcmSha256:
      return EVP_aes_128_gcm();
    case Suite::kAes256GcmSha384:
      return EVP_aes_256_gcm();
    case Suite::kChacha20Poly1305Sha256:
      return EVP_chacha20_poly1305();
  }
  return nullptr;
}

}  // namespace

bool hkdf_expand_label(Suite suite, std::span<const unsigned char> secret, std::string_view label,
                       std::span<unsigned char> out) {
  // struct { uint16 length; opaque label<7..255> = "tls13 " + Label; opaque context<0..255>; }
  std::string info;
  const std::string full = "tls13 " + std::string(label);
  if (full.size() > 255 || out.size() > 0xffff) return false;
  info.push_back(static_cast<char>(out.size() >> 8));
  info.push_back(static_cast<char>(out.size() & 0xff));
  info.push_back(static_cast<char>(full.size()));
  info += full;
  info.push_back(0);  // empty context
  // Fetched once: a fetch per derivation costs a provider lookup under a lock.
  static EVP_KDF* const kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  if (kdf == nullptr) return false;
  EVP_KDF_CTX* kctx = EVP_KDF_CTX_new(kdf);
  if (kctx == nullptr) return false;
  int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char*>(digest_name(suite)),
                                       0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                        const_cast<unsigned char*>(secret.data()), secret.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
      OSSL_PARAM_construct_end(),
  };
  const bool ok = EVP_KDF_derive(kctx, out.data(), out.size(), params) == 1;
  EVP_KDF_CTX_free(kctx);
  return ok;
}

Record13::Record13(Suite suite)
    : suite_(suite),
      hash_len_(suite == Suite::kAes256GcmSha384 ? 48 : 32),
      key_len_(suite == Suite::kAes128GcmSha256 ? 16 : 32) {}

Record13::~Record13() {
  hibernate();
  OPENSSL_cleanse(&read_, sizeof read_);
  OPENSSL_cleanse(&write_, sizeof write_);
}

std::unique_ptr<Record13> Record13::make(Suite suite, std::span<const unsigned char> read_secret,
                                         std::span<const unsigned char> write_secret) {
  if (cipher_of(suite) == nullptr) return nullptr;
  std::unique_ptr<Record13> r(new Record13(suite));
  if (!r->set_secret(r->read_, read_secret) || !r->set_secret(r->write_, write_secret)) {
    return nullptr;
  }
  return r;
}

bool Record13::set_secret(Direction& d, std::span<const unsigned char> secret) {
  if (secret.size() != hash_len_) return false;
  std::copy(secret.begin(), secret.end(), d.secret.begin());
  // §7.3: [sender]_write_key and [sender]_write_iv from the traffic secret.
  if (!hkdf_expand_label(suite_, secret, "key", std::span(d.key.data(), key_len_)) ||
      !hkdf_expand_label(suite_, secret, "iv", d.iv)) {
    return false;
  }
  d.seq = 0;
  if (d.ctx != nullptr) {
    EVP_CIPHER_CTX_free(d.ctx);
    d.ctx = nullptr;
  }
  return true;
}

bool Record13::next_secret(Direction& d) {
  // §7.2: application_traffic_secret_N+1 = HKDF-Expand-Label(secret_N, "traffic upd", "",
  // Hash.length)
  std::array<unsigned char, kMaxSecret> next{};
  const bool ok = hkdf_expand_label(suite_, std::span(d.secret.data(), hash_len_), "traffic upd",
                                    std::span(next.data(), hash_len_)) &&
                  set_secret(d, std::span(next.data(), hash_len_));
  OPENSSL_cleanse(next.data(), next.size());
  return ok;
}

bool Record13::keyed(Direction& d, bool encrypt) {
  if (d.ctx != nullptr) return true;
  d.ctx = EVP_CIPHER_CTX_new();
  if (d.ctx == nullptr) return false;
  if (EVP_CipherInit_ex(d.ctx, cipher_of(suite_), nullptr, d.key.data(), d.iv.data(),
                        encrypt ? 1 : 0) != 1 ||
      EVP_CIPHER_CTX_get_iv_length(d.ctx) != static_cast<int>(d.iv.size())) {
    EVP_CIPHER_CTX_free(d.ctx);
    d.ctx = nullptr;
    return false;
  }
  return true;
}

bool Record13::hibernate() {
  bool freed = false;
  for (Direction* d : {&read_, &write_}) {
    if (d->ctx != nullptr) {
      EVP_CIPHER_CTX_free(d->ctx);
      d->ctx = nullptr;
      freed = true;
    }
  }
  if (pending_.empty() && pending_.capacity() > 0) {
    std::string().swap(pending_);
    freed = true;
  }
  return freed;
}

bool Record13::seal_record(std::uint8_t type, std::string_view content, std::string& out) {
  if (write_closed_ || content.size() > kMaxPlaintext) return false;
  if (write_.seq >= kRekeyAfterRecords && type != kHandshakeType) {
    // Our own KeyUpdate first: the sequence number must never wrap (§5.3) and GCM's limit holds.
    if (!seal_key_update(false, out)) return false;
  }
  if (write_.seq == UINT64_MAX || !keyed(write_, true)) return false;
  // §5.3: the per-record nonce is the IV xor the 64-bit sequence number, left-padded.
  std::array<unsigned char, 12> nonce = write_.iv;
  for (int i = 0; i < 8; ++i) {
    nonce[nonce.size() - 1 - i] ^= static_cast<unsigned char>(write_.seq >> (8 * i));
  }
  const std::size_t inner = content.size() + 1;
  const std::size_t length = inner + kTagSize;
  const std::size_t start = out.size();
  out.resize(start + kHeaderSize + length);
  auto* rec = reinterpret_cast<unsigned char*>(out.data() + start);
  // §5.2: opaque_type application_data, legacy_record_version 0x0303; the header is the AAD.
  rec[0] = kApplicationData;
  rec[1] = 0x03;
  rec[2] = 0x03;
  rec[3] = static_cast<unsigned char>(length >> 8);
  rec[4] = static_cast<unsigned char>(length & 0xff);
  unsigned char* body = rec + kHeaderSize;
  if (!content.empty()) std::memcpy(body, content.data(), content.size());
  body[content.size()] = type;
  int n = 0;
  bool ok = EVP_CipherInit_ex(write_.ctx, nullptr, nullptr, nullptr, nonce.data(), 1) == 1 &&
            EVP_CipherUpdate(write_.ctx, nullptr, &n, rec, kHeaderSize) == 1 &&
            EVP_CipherUpdate(write_.ctx, body, &n, body, static_cast<int>(inner)) == 1 &&
            static_cast<std::size_t>(n) == inner &&
            EVP_CipherFinal_ex(write_.ctx, body + inner, &n) == 1 && n == 0 &&
            EVP_CIPHER_CTX_ctrl(write_.ctx, EVP_CTRL_AEAD_GET_TAG, kTagSize, body + inner) == 1;
  if (!ok) {
    // Nothing half-sealed leaves, and this direction is done: a nonce must never be reused.
    OPENSSL_cleanse(rec, kHeaderSize + length);
    out.resize(start);
    write_closed_ = true;
    return false;
  }
  ++write_.seq;
  return true;
}

bool Record13::seal(std::string_view plaintext, std::string& out) {
  if (write_closed_) return false;
  const std::size_t start = out.size();
  if (owe_key_update_ && !seal_key_update(false, out)) return false;
  while (!plaintext.empty()) {
    const std::string_view part = plaintext.substr(0, kMaxPlaintext);
    if (!seal_record(kApplicationData, part, out)) {
      out.resize(start);
      return false;
    }
    plaintext.remove_prefix(part.size());
  }
  return true;
}

bool Record13::seal_close_notify(std::string& out) {
  if (write_closed_) return false;
  const char alert[2] = {1, static_cast<char>(Alert::kCloseNotify)};  // warning, close_notify
  const bool ok = seal_record(kAlertType, std::string_view(alert, 2), out);
  write_closed_ = true;
  return ok;
}

bool Record13::seal_key_update(bool update_requested, std::string& out) {
  // §4.6.3: struct { KeyUpdateRequest request_update; } in a handshake message of its own.
  const char msg[5] = {static_cast<char>(kKeyUpdate), 0, 0, 1,
                       static_cast<char>(update_requested ? 1 : 0)};
  if (!seal_record(kHandshakeType, std::string_view(msg, 5), out)) return false;
  owe_key_update_ = false;
  if (!next_secret(write_)) {
    write_closed_ = true;
    return false;
  }
  return true;
}

Record13::Status Record13::fail(Alert alert, std::string& to_send) {
  failed_ = true;
  alert_ = alert;
  pending_.clear();
  if (!write_closed_) {
    const char a[2] = {2, static_cast<char>(alert)};  // fatal (§6.2)
    seal_record(kAlertType, std::string_view(a, 2), to_send);
    write_closed_ = true;
  }
  return Status::kError;
}

Record13::Status Record13::open(std::string_view in, std::string& plaintext, std::string& to_send) {
  if (failed_) return Status::kError;
  if (read_closed_) return Status::kClosed;
  auto bytes = [](std::string_view s) {
    return std::span(reinterpret_cast<const unsigned char*>(s.data()), s.size());
  };
  for (;;) {
    // A record starts either in the partial one held from before or at the front of `in`.
    std::string_view head = pending_.empty() ? in : std::string_view(pending_);
    if (!pending_.empty() && pending_.size() < kHeaderSize) {
      const std::size_t take = std::min(in.size(), kHeaderSize - pending_.size());
      pending_.append(in.substr(0, take));
      in.remove_prefix(take);
      head = pending_;
    }
    if (head.size() < kHeaderSize) {
      if (pending_.empty()) pending_.assign(in);
      break;
    }
    const auto type = static_cast<std::uint8_t>(head[0]);
    const std::size_t length =
        (static_cast<std::size_t>(static_cast<unsigned char>(head[3])) << 8) |
        static_cast<unsigned char>(head[4]);
    // §5: after the handshake every record is protected application_data; a change_cipher_spec
    // or any other outer type now is unexpected.
    if (type != kApplicationData) return fail(Alert::kUnexpectedMessage, to_send);
    if (length > kMaxCiphertext) return fail(Alert::kRecordOverflow, to_send);
    const std::size_t whole = kHeaderSize + length;
    bool ok;
    if (pending_.empty()) {
      if (in.size() < whole) {
        pending_.assign(in);
        break;
      }
      ok = open_record(bytes(in.substr(0, whole)), plaintext, to_send);
      in.remove_prefix(whole);
    } else {
      const std::size_t take = std::min(in.size(), whole - pending_.size());
      pending_.append(in.substr(0, take));
      in.remove_prefix(take);
      if (pending_.size() < whole) break;
      ok = open_record(bytes(pending_), plaintext, to_send);
      std::string().swap(pending_);
    }
    if (!ok) return fail(alert_, to_send);
    if (read_closed_) {
      std::string().swap(pending_);
      break;
    }
    if (in.empty() && pending_.empty()) break;
  }
  if (owe_key_update_ && !write_closed_ && !seal_key_update(false, to_send)) {
    return fail(Alert::kInternalError, to_send);
  }
  return read_closed_ ? Status::kClosed : Status::kOk;
}

bool Record13::open_record(std::span<const unsigned char> record, std::string& plaintext,
                           std::string& to_send) {
  const std::size_t length = record.size() - kHeaderSize;
  // The smallest record holds the inner content type and the tag.
  if (length < 1 + kTagSize) {
    alert_ = Alert::kBadRecordMac;
    return false;
  }
  if (read_.seq == UINT64_MAX || !keyed(read_, false)) {
    alert_ = Alert::kInternalError;
    return false;
  }
  std::array<unsigned char, 12> nonce = read_.iv;
  for (int i = 0; i < 8; ++i) {
    nonce[nonce.size() - 1 - i] ^= static_cast<unsigned char>(read_.seq >> (8 * i));
  }
  const std::size_t inner_len = length - kTagSize;
  const unsigned char* body = record.data() + kHeaderSize;
  const std::size_t start = plaintext.size();
  plaintext.resize(start + inner_len);
  auto* inner = reinterpret_cast<unsigned char*>(plaintext.data() + start);
  int n = 0;
  // The tag is checked by EVP's AEAD (constant time) in EVP_CipherFinal_ex; until it succeeds
  // the decrypted bytes are not ours to use, and on failure they are wiped and dropped.
  const bool ok = EVP_CipherInit_ex(read_.ctx, nullptr, nullptr, nullptr, nonce.data(), 0) == 1 &&
                  EVP_CIPHER_CTX_ctrl(read_.ctx, EVP_CTRL_AEAD_SET_TAG, kTagSize,
                                      const_cast<unsigned char*>(body + inner_len)) == 1 &&
                  EVP_CipherUpdate(read_.ctx, nullptr, &n, record.data(), kHeaderSize) == 1 &&
                  EVP_CipherUpdate(read_.ctx, inner, &n, body, static_cast<int>(inner_len)) == 1 &&
                  static_cast<std::size_t>(n) == inner_len &&
                  EVP_CipherFinal_ex(read_.ctx, inner + inner_len, &n) == 1 && n == 0;
  if (!ok) {
    OPENSSL_cleanse(inner, inner_len);
    plaintext.resize(start);
    alert_ = Alert::kBadRecordMac;
    return false;
  }
  ++read_.seq;
  // §5.4: the content type is the last non-zero octet; all zeros is unexpected_message.
  std::size_t end = inner_len;
  while (end > 0 && inner[end - 1] == 0) --end;
  if (end == 0) {
    plaintext.resize(start);
    alert_ = Alert::kUnexpectedMessage;
    return false;
  }
  const std::uint8_t type = inner[end - 1];
  const std::size_t content_len = end - 1;
  // §5.4: TLSInnerPlaintext.content is at most 2^14 bytes.
  if (content_len > kMaxPlaintext) {
    plaintext.resize(start);
    alert_ = Alert::kRecordOverflow;
    return false;
  }
  plaintext.resize(start + content_len);
  if (type == kApplicationData) {
    // Handshake messages must not be split by application data (§5.1).
    if (!hs_frag_.empty()) {
      plaintext.resize(start);
      alert_ = Alert::kUnexpectedMessage;
      return false;
    }
    return true;
  }
  std::string content(plaintext, start, content_len);
  plaintext.resize(start);
  if (type == kAlertType) {
    // §6: an alert is exactly level and description; every alert but close_notify and
    // user_canceled is an error, whatever its level.
    if (content.size() != 2 || !hs_frag_.empty()) {
      alert_ = Alert::kDecodeError;
      return false;
    }
    const auto desc = static_cast<std::uint8_t>(content[1]);
    if (desc == static_cast<std::uint8_t>(Alert::kCloseNotify)) {
      read_closed_ = true;
      return true;
    }
    if (desc == static_cast<std::uint8_t>(Alert::kUserCanceled)) return true;  // §6.1
    peer_alerted_ = true;
    write_closed_ = true;  // no alert goes back to a fatal alert
    alert_ = static_cast<Alert>(desc);
    return false;
  }
  if (type == kHandshakeType) {
    if (content.empty()) {  // §5.1: no zero-length handshake fragments
      alert_ = Alert::kUnexpectedMessage;
      return false;
    }
    return on_handshake(
        std::span(reinterpret_cast<const unsigned char*>(content.data()), content.size()), to_send);
  }
  if (type == kChangeCipherSpec) {
    alert_ = Alert::kUnexpectedMessage;  // §5: a protected change_cipher_spec
    return false;
  }
  alert_ = Alert::kUnexpectedMessage;  // §5: an unknown content type
  return false;
}

bool Record13::on_handshake(std::span<const unsigned char> body, std::string& to_send) {
  // After the handshake the only message a client may send us is KeyUpdate: we never ask for
  // post-handshake authentication, and NewSessionTicket goes the other way. A KeyUpdate is
  // 5 bytes (type, uint24 length 1, request_update) and may arrive split across records.
  hs_frag_.append(reinterpret_cast<const char*>(body.data()), body.size());
  if (static_cast<std::uint8_t>(hs_frag_[0]) != kKeyUpdate) {
    alert_ = Alert::kUnexpectedMessage;
    return false;
  }
  if (hs_frag_.size() >= 4 && (hs_frag_[1] != 0 || hs_frag_[2] != 0 || hs_frag_[3] != 1)) {
    alert_ = Alert::kDecodeError;
    return false;
  }
  if (hs_frag_.size() < 5) return true;
  // §5.1: a message before a key change must end its record: nothing may follow a KeyUpdate.
  if (hs_frag_.size() > 5) {
    alert_ = Alert::kUnexpectedMessage;
    return false;
  }
  const auto request = static_cast<std::uint8_t>(hs_frag_[4]);
  hs_frag_.clear();
  std::string().swap(hs_frag_);
  if (request > 1) {
    alert_ = Alert::kIllegalParameter;
    return false;
  }
  if (!next_secret(read_)) {
    alert_ = Alert::kInternalError;
    return false;
  }
  // §4.6.3: update_requested is answered with update_not_requested before our next record;
  // several requests while we are silent get one answer.
  if (request == 1) owe_key_update_ = true;
  (void)to_send;
  return true;
}

}  // namespace kabar::tls
