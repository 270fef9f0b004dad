// SASL mechanisms: SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677) for both sides, PLAIN
// (RFC 4616), and the credentials a server stores instead of a password. OpenSSL does the
// hashing (PBKDF2, HMAC, SHA).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace kabar::xmpp {

enum class ScramHash { kSha1, kSha256 };
std::string_view mechanism_name(ScramHash h);  // "SCRAM-SHA-1" / "SCRAM-SHA-256"

// What the server keeps for one account and one hash: never the password (RFC 5802 §3).
struct ScramCredentials {
  std::string salt;  // raw bytes
  int iterations = 0;
  std::string stored_key;  // raw bytes: H(HMAC(SaltedPassword, "Client Key"))
  std::string server_key;  // raw bytes: HMAC(SaltedPassword, "Server Key")
};

// SASLprep (RFC 4013, "stored strings" rules) of a password, as SCRAM hashes it (RFC 5802 §2.2);
// nullopt when the password has prohibited or unassigned characters or prepares to nothing.
// Every place that turns a password into credentials or checks one applies it first.
std::optional<std::string> saslprep(std::string_view password);

// Derives credentials from a password (already SASLprep'ed by the caller, or used as is).
ScramCredentials derive_credentials(ScramHash h, std::string_view password, std::string_view salt,
                                    int iterations);
// Fresh random salt (16 bytes) and `iterations` (default 4096, RFC 7677 minimum).
ScramCredentials make_credentials(ScramHash h, std::string_view password, int iterations = 4096);
// Checks a clear password against stored credentials in constant time (for SASL PLAIN).
bool verify_password(ScramHash h, const ScramCredentials& creds, std::string_view password);

std::string base64_encode(std::string_view raw);
std::optional<std::string> base64_decode(std::string_view text);  // nullopt on bad input
std::string random_bytes(std::size_t n);

// SASL failure conditions (RFC 6120 §6.5).
enum class SaslFailure {
  kNone,
  kAborted,
  kMalformedRequest,
  kNotAuthorized,
  kInvalidAuthzid,
  kInvalidMechanism,
  kEncryptionRequired,
  kTemporaryAuthFailure,
  kCredentialsExpired,
  kAccountDisabled,
};
std::string_view failure_name(SaslFailure f);  // "not-authorized", ...

// Server side of one SCRAM exchange. Messages are the decoded SASL payloads (not base64).
class ScramServer {
 public:
  explicit ScramServer(ScramHash h);
  // Parses client-first-message. On success returns the username (SASLname decoded, =2C/=3D);
  // the caller looks up the credentials and calls server_first(). The channel-binding flag must
  // agree with set_channel_binding() (none set: only "n" and "y").
  std::optional<std::string> client_first(std::string_view msg, SaslFailure& failure);
  std::string_view authzid() const { return authzid_; }
  // Builds server-first-message from the stored credentials. For an unknown user pass
  // std::nullopt: a deterministic fake salt is used so the exchange fails only at the end and
  // does not reveal whether the account exists.
  std::string server_first(const std::optional<ScramCredentials>& creds);
  // Verifies client-final-message; on success returns server-final-message ("v=...").
  std::optional<std::string> client_final(std::string_view msg, SaslFailure& failure);

  // Test hook: a fixed server nonce part instead of a random one, for the RFC test vectors.
  void set_server_nonce_for_test(std::string nonce);

  // Channel binding (RFC 5802 §6), set before client_first(). `offered`: the -PLUS mechanisms
  // were advertised on this connection, so a client flag "y" means a downgrade and fails.
  // `plus`: this exchange is a -PLUS mechanism, so the client must send "p=<type>" with the type
  // given here and its data in c= (RFC 5929 tls-unique, RFC 9266 tls-exporter).
  void set_channel_binding(bool offered, bool plus, std::string type, std::string data);

 private:
  // One exchange: each step is accepted once and in order; any failure ends the exchange.
  enum class Stage { kStart, kClientFirst, kServerFirst, kDone, kFailed };
  Stage stage_ = Stage::kStart;
  ScramHash hash_;
  std::string authzid_;
  std::string username_;
  std::string client_first_bare_;
  std::string gs2_header_;
  std::string nonce_;  // client nonce + server nonce
  std::string server_first_;
  std::optional<ScramCredentials> creds_;
  ScramCredentials fake_creds_;  // for an unknown user; never matches a proof
  std::string server_nonce_for_test_;
  bool cb_offered_ = false;
  bool cb_plus_ = false;
  std::string cb_type_;
  std::string cb_data_;
};

// Client side of one SCRAM exchange.
class ScramClient {
 public:
  ScramClient(ScramHash h, std::string username, std::string password,
              std::string client_nonce = {});  // nonce empty: random
  std::string client_first() const;
  // Channel binding: with a -PLUS mechanism, `type` and its data ("p=type"); with a plain one
  // while the client could bind but the server offered no -PLUS, an empty type ("y").
  void set_channel_binding(std::string type, std::string data);
  // Parses server-first, returns client-final; nullopt on malformed input or too few iterations.
  std::optional<std::string> client_final(std::string_view server_first);
  // Checks the server's signature in server-final.
  bool verify_server_final(std::string_view server_final) const;

 private:
  ScramHash hash_;
  std::string username_;
  std::string password_;
  std::string nonce_;
  std::string client_first_bare_;
  std::string expected_server_signature_;
  std::string gs2_header_ = "n,,";
  std::string cb_data_;
};

// PLAIN (RFC 4616): "authzid\0authcid\0passwd".
struct PlainCredentials {
  std::string authzid;
  std::string authcid;
  std::string password;
};
std::optional<PlainCredentials> parse_plain(std::string_view msg);

}  // namespace kabar::xmpp
