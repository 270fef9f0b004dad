// A TLS 1.3 record layer (RFC 8446 §5) for a connection whose handshake OpenSSL has done: seals
// application data into records and opens the peer's records, with KeyUpdate (§4.6.3), alerts
// (§6) and the size limits of §5. No I/O: bytes in, bytes out; the caller owns the socket.
//
// Why it exists: an OpenSSL 3.0 SSL object costs about 14 KB per connection after the handshake
// whatever its settings, and this kernel has no kTLS to hand the record layer to. What a
// connection needs after the handshake is two traffic secrets, their keys and IVs and two
// sequence numbers; the cipher contexts are made on use and freed by hibernate().
#pragma once

#include <openssl/evp.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace kabar::tls {

// The three TLS 1.3 cipher suites (RFC 8446 §B.4) with their IANA numbers.
enum class Suite : std::uint16_t {
  kAes128GcmSha256 = 0x1301,
  kAes256GcmSha384 = 0x1302,
  kChacha20Poly1305Sha256 = 0x1303,
};

// Alert descriptions (RFC 8446 §6) this layer sends or reports.
enum class Alert : std::uint8_t {
  kCloseNotify = 0,
  kUnexpectedMessage = 10,
  kBadRecordMac = 20,
  kRecordOverflow = 22,
  kIllegalParameter = 47,
  kDecodeError = 50,
  kInternalError = 80,
  kUserCanceled = 90,
};

constexpr std::size_t kMaxPlaintext = 16384;                 // 2^14 (§5.1)
constexpr std::size_t kMaxCiphertext = kMaxPlaintext + 256;  // 2^14 + 256 (§5.2)
constexpr std::size_t kHeaderSize = 5;
constexpr std::size_t kTagSize = 16;
constexpr std::size_t kMaxSecret = 48;  // SHA-384

class Record13 {
 public:
  enum class Status {
    kOk,      // all input taken (a partial record is kept for the next call)
    kClosed,  // the peer sent close_notify; later input is ignored, writing may go on
    kError,   // fatal: an alert to send is in `to_send` (unless the peer's alert ended it)
  };

  // `read_secret` is the peer's application traffic secret, `write_secret` ours (on a server:
  // client_application_traffic_secret_0 and server_application_traffic_secret_0, §7.1). Both
  // must be the suite's hash length. Null on a bad length or a failure to derive the keys.
  static std::unique_ptr<Record13> make(Suite suite, std::span<const unsigned char> read_secret,
                                        std::span<const unsigned char> write_secret);
  ~Record13();
  Record13(const Record13&) = delete;
  Record13& operator=(const Record13&) = delete;

  // Appends `plaintext` as application_data records (at most 2^14 bytes each) to `out`. False
  // (and nothing appended) when the connection can no longer write: after an alert of ours, or
  // on a crypto failure.
  bool seal(std::string_view plaintext, std::string& out);
  // Appends our close_notify (§6.1) to `out`; nothing is sealed after it.
  bool seal_close_notify(std::string& out);
  // Appends a KeyUpdate of ours and moves to the next write keys (§4.6.3).
  bool seal_key_update(bool update_requested, std::string& out);

  // Takes bytes from the peer, in any split: application data is appended to `plaintext`, and
  // what must go back to the peer (a KeyUpdate answer, an alert) to `to_send`. Plaintext of a
  // record is appended only once its tag has been checked.
  Status open(std::string_view in, std::string& plaintext, std::string& to_send);

  // Frees the cipher contexts (made again on use): an idle connection keeps only its secrets,
  // keys, IVs, sequence numbers and any partial record. True if there was something to free.
  bool hibernate();

  Suite suite() const { return suite_; }
  // The alert that ended the connection: sent by us on kError, or received from the peer.
  Alert alert() const { return alert_; }
  bool peer_alerted() const { return peer_alerted_; }
  std::uint64_t read_sequence() const { return read_.seq; }
  std::uint64_t write_sequence() const { return write_.seq; }
  // Bytes of a partial record held between calls.
  std::size_t buffered() const { return pending_.size(); }

 private:
  struct Direction {
    std::array<unsigned char, kMaxSecret> secret{};
    std::array<unsigned char, 32> key{};
    std::array<unsigned char, 12> iv{};
    std::uint64_t seq = 0;
    EVP_CIPHER_CTX* ctx = nullptr;  // keyed with `key`; null while hibernating
  };

  explicit Record13(Suite suite);
  bool set_secret(Direction& d, std::span<const unsigned char> secret);
  bool next_secret(Direction& d);  // §7.2 application_traffic_secret_N+1
  bool keyed(Direction& d, bool encrypt);
  // Seals one record of inner type `type` (§5.2), no padding.
  bool seal_record(std::uint8_t type, std::string_view content, std::string& out);
  // Opens one whole record (header included); false on a fatal error (alert_ set).
  bool open_record(std::span<const unsigned char> record, std::string& plaintext,
                   std::string& to_send);
  bool on_handshake(std::span<const unsigned char> body, std::string& to_send);
  Status fail(Alert alert, std::string& to_send);

  Suite suite_;
  std::size_t hash_len_;
  std::size_t key_len_;
  Direction read_;
  Direction write_;
  std::string pending_;          // a partial record: at most kHeaderSize + kMaxCiphertext bytes
  std::string hs_frag_;          // a handshake message split across records (at most 4 bytes)
  bool owe_key_update_ = false;  // the peer asked for one: sent before our next record
  bool read_closed_ = false;
  bool write_closed_ = false;
  bool failed_ = false;
  bool peer_alerted_ = false;
  Alert alert_ = Alert::kCloseNotify;
};

// RFC 8446 §7.1 HKDF-Expand-Label(secret, label, context = "", length) with the suite's hash;
// `out.size()` is the length (at most the hash length). Exposed for the tests.
bool hkdf_expand_label(Suite suite, std::span<const unsigned char> secret, std::string_view label,
                       std::span<unsigned char> out);

}  // namespace kabar::tls
