#include "xmpp/scram.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "xmpp/utf8.h"

namespace kabar::xmpp {
namespace {

const EVP_MD* digest(ScramHash h) { return h == ScramHash::kSha1 ? EVP_sha1() : EVP_sha256(); }

std::string hmac(ScramHash h, std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (HMAC(digest(h), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), out,
           &len) == nullptr) {
    std::abort();  // only fails on allocation failure or a broken OpenSSL
  }
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string hash(ScramHash h, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), out, &len, digest(h), nullptr) != 1) std::abort();
  return std::string(reinterpret_cast<char*>(out), len);
}

// RFC 5802 §2.2 Hi(): PBKDF2 with HMAC as the PRF and one block of output.
std::string salted_password(ScramHash h, std::string_view password, std::string_view salt,
                            int iterations) {
  std::string out(static_cast<std::size_t>(EVP_MD_get_size(digest(h))), '\0');
  if (PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                        reinterpret_cast<const unsigned char*>(salt.data()),
                        static_cast<int>(salt.size()), iterations, digest(h),
                        static_cast<int>(out.size()),
                        reinterpret_cast<unsigned char*>(out.data())) != 1) {
    std::abort();
  }
  return out;
}

std::string xor_bytes(std::string_view a, std::string_view b) {
  std::string out(a.size(), '\0');
  for (std::size_t i = 0; i < a.size(); ++i) out[i] = static_cast<char>(a[i] ^ b[i]);
  return out;
}

bool equal_ct(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// Per-process key for the fake salts of unknown users: stable within a process so repeated
// attempts for one name see one salt, and unpredictable to outsiders.
const std::string& server_secret() {
  static const std::string secret = random_bytes(32);
  return secret;
}

// RFC 5802 §7 saslname: '=' only as "=2C" (',') or "=3D" ('='); no NUL, no bare ','.
std::optional<std::string> decode_saslname(std::string_view s) {
  if (s.empty() || !valid_utf8(s)) return std::nullopt;
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '\0' || c == ',') return std::nullopt;
    if (c == '=') {
      const std::string_view esc = s.substr(i + 1, 2);
      if (esc == "2C") {
        out.push_back(',');
      } else if (esc == "3D") {
        out.push_back('=');
      } else {
        return std::nullopt;
      }
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string encode_saslname(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == ',') {
      out += "=2C";
    } else if (c == '=') {
      out += "=3D";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// RFC 5802 §7: printable = %x21-2B / %x2D-7E (no ',').
bool valid_nonce(std::string_view n) {
  if (n.empty()) return false;
  for (char c : n) {
    if (c < 0x21 || c > 0x7E || c == ',') return false;
  }
  return true;
}

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// One "x=value" attribute of a SCRAM message.
struct Attr {
  char name;
  std::string_view value;
};

// Splits a message into attributes; every element must have the form ALPHA "=" value.
std::optional<std::vector<Attr>> split_attrs(std::string_view msg) {
  std::vector<Attr> out;
  std::size_t start = 0;
  while (true) {
    std::size_t end = msg.find(',', start);
    const std::string_view part =
        msg.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (part.size() < 2 || !is_alpha(part[0]) || part[1] != '=') return std::nullopt;
    out.push_back({part[0], part.substr(2)});
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return out;
}

// i= value: decimal digits only, no sign, no leading zero.
std::optional<int> parse_iterations(std::string_view v) {
  if (v.empty() || v.size() > 9 || v[0] == '0') return std::nullopt;
  int n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + (c - '0');
  }
  return n;
}

constexpr int kMinIterations = 4096;  // RFC 7677 §4
// Bounds the work a malicious server can make a client do.
constexpr int kMaxIterations = 10'000'000;

constexpr char kBase64Alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

}  // namespace

std::string_view mechanism_name(ScramHash h) {
  return h == ScramHash::kSha1 ? "SCRAM-SHA-1" : "SCRAM-SHA-256";
}

std::string_view failure_name(SaslFailure f) {
  switch (f) {
    case SaslFailure::kNone:
      return "";
    case SaslFailure::kAborted:
      return "aborted";
    case SaslFailure::kMalformedRequest:
      return "malformed-request";
    case SaslFailure::kNotAuthorized:
      return "not-authorized";
    case SaslFailure::kInvalidAuthzid:
      return "invalid-authzid";
    case SaslFailure::kInvalidMechanism:
      return "invalid-mechanism";
    case SaslFailure::kEncryptionRequired:
      return "encryption-required";
    case SaslFailure::kTemporaryAuthFailure:
      return "temporary-auth-failure";
    case SaslFailure::kCredentialsExpired:
      return "credentials-expired";
    case SaslFailure::kAccountDisabled:
      return "account-disabled";
  }
  return "";
}

std::string base64_encode(std::string_view raw) {
  std::string out;
  out.reserve((raw.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= raw.size(); i += 3) {
    const std::uint32_t v = (static_cast<unsigned char>(raw[i]) << 16) |
                            (static_cast<unsigned char>(raw[i + 1]) << 8) |
                            static_cast<unsigned char>(raw[i + 2]);
    out.push_back(kBase64Alphabet[(v >> 18) & 63]);
    out.push_back(kBase64Alphabet[(v >> 12) & 63]);
    out.push_back(kBase64Alphabet[(v >> 6) & 63]);
    out.push_back(kBase64Alphabet[v & 63]);
  }
  const std::size_t rest = raw.size() - i;
  if (rest == 1) {
    const std::uint32_t v = static_cast<unsigned char>(raw[i]) << 16;
    out.push_back(kBase64Alphabet[(v >> 18) & 63]);
    out.push_back(kBase64Alphabet[(v >> 12) & 63]);
    out += "==";
  } else if (rest == 2) {
    const std::uint32_t v =
        (static_cast<unsigned char>(raw[i]) << 16) | (static_cast<unsigned char>(raw[i + 1]) << 8);
    out.push_back(kBase64Alphabet[(v >> 18) & 63]);
    out.push_back(kBase64Alphabet[(v >> 12) & 63]);
    out.push_back(kBase64Alphabet[(v >> 6) & 63]);
    out.push_back('=');
  }
  return out;
}

// Strict RFC 4648 §4: padded to a multiple of four, no whitespace, padding only at the end and
// the unused bits of the last symbol zero, so every byte string has exactly one encoding.
std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = text[i + k];
      if (c == '=') {
        // Only the last one or two symbols of the last quantum may be padding.
        if (!last || k < 2) return std::nullopt;
        ++pad;
        v[k] = 0;
        continue;
      }
      if (pad > 0) return std::nullopt;  // data after padding
      v[k] = base64_value(c);
      if (v[k] < 0) return std::nullopt;
    }
    const std::uint32_t bits =
        (static_cast<std::uint32_t>(v[0]) << 18) | (static_cast<std::uint32_t>(v[1]) << 12) |
        (static_cast<std::uint32_t>(v[2]) << 6) | static_cast<std::uint32_t>(v[3]);
    if (pad == 2 && (bits & 0xFFFF) != 0) return std::nullopt;
    if (pad == 1 && (bits & 0xFF) != 0) return std::nullopt;
    out.push_back(static_cast<char>((bits >> 16) & 0xFF));
    if (pad < 2) out.push_back(static_cast<char>((bits >> 8) & 0xFF));
    if (pad < 1) out.push_back(static_cast<char>(bits & 0xFF));
  }
  return out;
}

std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  if (n > 0 && RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    std::abort();  // no entropy: nothing secure can be done
  }
  return out;
}

ScramCredentials derive_credentials(ScramHash h, std::string_view password, std::string_view salt,
                                    int iterations) {
  const std::string sp = salted_password(h, password, salt, iterations);
  ScramCredentials c;
  c.salt = std::string(salt);
  c.iterations = iterations;
  c.stored_key = hash(h, hmac(h, sp, "Client Key"));
  c.server_key = hmac(h, sp, "Server Key");
  return c;
}

ScramCredentials make_credentials(ScramHash h, std::string_view password, int iterations) {
  return derive_credentials(h, password, random_bytes(16), iterations);
}

bool verify_password(ScramHash h, const ScramCredentials& creds, std::string_view password) {
  if (creds.iterations <= 0) return false;
  const ScramCredentials d = derive_credentials(h, password, creds.salt, creds.iterations);
  // Both compared without short-circuit so the time does not depend on which one differs.
  const bool stored_ok = equal_ct(d.stored_key, creds.stored_key);
  const bool server_ok = equal_ct(d.server_key, creds.server_key);
  return stored_ok & server_ok;
}

// ---------------------------------------------------------------------------------------------
// ScramServer

ScramServer::ScramServer(ScramHash h) : hash_(h) {}

void ScramServer::set_server_nonce_for_test(std::string nonce) {
  server_nonce_for_test_ = std::move(nonce);
}

void ScramServer::set_channel_binding(bool offered, bool plus, std::string type, std::string data) {
  cb_offered_ = offered;
  cb_plus_ = plus;
  cb_type_ = std::move(type);
  cb_data_ = std::move(data);
}

std::optional<std::string> ScramServer::client_first(std::string_view msg, SaslFailure& failure) {
  failure = SaslFailure::kMalformedRequest;
  if (stage_ != Stage::kStart) return std::nullopt;
  stage_ = Stage::kFailed;
  // RFC 5802 §7: gs2-header = gs2-cbind-flag "," [ authzid ] ","
  const std::size_t c1 = msg.find(',');
  if (c1 == std::string_view::npos) return std::nullopt;
  const std::string_view flag = msg.substr(0, c1);
  if (flag.starts_with("p=")) {
    // The client binds: only inside a -PLUS exchange, and only with the type we offer.
    if (!cb_plus_ || flag.substr(2) != cb_type_) return std::nullopt;
  } else if (cb_plus_) {
    return std::nullopt;  // a -PLUS mechanism without binding
  } else if (flag == "y") {
    // The client could bind but thinks we cannot: if we offered -PLUS, someone stripped it
    // from the features on the way (RFC 5802 §6, downgrade protection).
    if (cb_offered_) return std::nullopt;
  } else if (flag != "n") {
    return std::nullopt;
  }
  const std::size_t c2 = msg.find(',', c1 + 1);
  if (c2 == std::string_view::npos) return std::nullopt;
  const std::string_view authz = msg.substr(c1 + 1, c2 - c1 - 1);
  std::string authzid;
  if (!authz.empty()) {
    if (!authz.starts_with("a=")) return std::nullopt;
    auto decoded = decode_saslname(authz.substr(2));
    if (!decoded) return std::nullopt;
    authzid = std::move(*decoded);
  }
  const std::string_view bare = msg.substr(c2 + 1);
  auto attrs = split_attrs(bare);
  if (!attrs || attrs->size() < 2) return std::nullopt;
  // reserved-mext: a mandatory extension we do not know, so authentication must fail (§5.1).
  if ((*attrs)[0].name == 'm') return std::nullopt;
  if ((*attrs)[0].name != 'n' || (*attrs)[1].name != 'r') return std::nullopt;
  auto username = decode_saslname((*attrs)[0].value);
  if (!username || !valid_nonce((*attrs)[1].value)) return std::nullopt;
  // Optional extensions after the nonce are ignored (§5.1), but must be well-formed; 'm' is only
  // valid first.
  for (std::size_t i = 2; i < attrs->size(); ++i) {
    if ((*attrs)[i].name == 'm') return std::nullopt;
  }

  authzid_ = std::move(authzid);
  username_ = *username;
  gs2_header_ = std::string(msg.substr(0, c2 + 1));
  client_first_bare_ = std::string(bare);
  nonce_ = std::string((*attrs)[1].value);
  failure = SaslFailure::kNone;
  stage_ = Stage::kClientFirst;
  return username;
}

std::string ScramServer::server_first(const std::optional<ScramCredentials>& creds) {
  if (stage_ != Stage::kClientFirst) {
    stage_ = Stage::kFailed;
    return {};
  }
  if (creds && creds->iterations > 0) {
    creds_ = creds;
  } else {
    // Unknown account (RFC 5802 §9 notes the enumeration risk): a salt derived from the name
    // and a per-process secret, default iterations, and keys nobody can match.
    ScramCredentials fake;
    fake.salt = hmac(hash_, server_secret(), username_).substr(0, 16);
    fake.iterations = kMinIterations;
    fake.stored_key = hmac(hash_, server_secret(), "stored:" + username_);
    fake.server_key = hmac(hash_, server_secret(), "server:" + username_);
    creds_ = std::nullopt;
    fake_creds_ = std::move(fake);
  }
  const ScramCredentials& c = creds_ ? *creds_ : fake_creds_;
  nonce_ +=
      server_nonce_for_test_.empty() ? base64_encode(random_bytes(18)) : server_nonce_for_test_;
  server_first_ =
      "r=" + nonce_ + ",s=" + base64_encode(c.salt) + ",i=" + std::to_string(c.iterations);
  stage_ = Stage::kServerFirst;
  return server_first_;
}

std::optional<std::string> ScramServer::client_final(std::string_view msg, SaslFailure& failure) {
  failure = SaslFailure::kMalformedRequest;
  if (stage_ != Stage::kServerFirst) return std::nullopt;
  stage_ = Stage::kFailed;
  // client-final-message = channel-binding "," nonce ["," extensions] "," proof
  const std::size_t proof_at = msg.rfind(",p=");
  if (proof_at == std::string_view::npos) return std::nullopt;
  const std::string_view without_proof = msg.substr(0, proof_at);
  auto attrs = split_attrs(without_proof);
  if (!attrs || attrs->size() < 2 || (*attrs)[0].name != 'c' || (*attrs)[1].name != 'r') {
    return std::nullopt;
  }
  for (std::size_t i = 2; i < attrs->size(); ++i) {
    if ((*attrs)[i].name == 'm' || (*attrs)[i].name == 'p') return std::nullopt;
  }
  auto cbind = base64_decode((*attrs)[0].value);
  auto proof = base64_decode(msg.substr(proof_at + 3));
  if (!cbind || !proof) return std::nullopt;
  // §5.1/§6: c= is the gs2 header, followed by the channel-binding data with "p=".
  const bool binds = gs2_header_.starts_with("p=");
  if (*cbind != (binds ? gs2_header_ + cb_data_ : gs2_header_)) return std::nullopt;
  if ((*attrs)[1].value != nonce_) return std::nullopt;

  const ScramCredentials& c = creds_ ? *creds_ : fake_creds_;
  const std::string auth_message =
      client_first_bare_ + "," + server_first_ + "," + std::string(without_proof);
  const std::string client_signature = hmac(hash_, c.stored_key, auth_message);
  failure = SaslFailure::kNotAuthorized;
  if (proof->size() != client_signature.size()) return std::nullopt;
  const std::string client_key = xor_bytes(*proof, client_signature);
  const bool proof_ok = equal_ct(hash(hash_, client_key), c.stored_key);
  if (!proof_ok || !creds_) return std::nullopt;
  failure = SaslFailure::kNone;
  stage_ = Stage::kDone;
  return "v=" + base64_encode(hmac(hash_, c.server_key, auth_message));
}

// ---------------------------------------------------------------------------------------------
// ScramClient

ScramClient::ScramClient(ScramHash h, std::string username, std::string password,
                         std::string client_nonce)
    : hash_(h), username_(std::move(username)), password_(saslprep(password).value_or(password)) {
  nonce_ = client_nonce.empty() ? base64_encode(random_bytes(18)) : std::move(client_nonce);
  client_first_bare_ = "n=" + encode_saslname(username_) + ",r=" + nonce_;
}

std::string ScramClient::client_first() const { return gs2_header_ + client_first_bare_; }

void ScramClient::set_channel_binding(std::string type, std::string data) {
  if (type.empty()) {
    gs2_header_ = "y,,";
    cb_data_.clear();
  } else {
    gs2_header_ = "p=" + type + ",,";
    cb_data_ = std::move(data);
  }
}

std::optional<std::string> ScramClient::client_final(std::string_view server_first) {
  expected_server_signature_.clear();
  auto attrs = split_attrs(server_first);
  if (!attrs || attrs->size() < 3) return std::nullopt;
  // A mandatory extension we do not understand (RFC 5802 §5.1).
  if ((*attrs)[0].name == 'm') return std::nullopt;
  if ((*attrs)[0].name != 'r' || (*attrs)[1].name != 's' || (*attrs)[2].name != 'i') {
    return std::nullopt;
  }
  const std::string_view nonce = (*attrs)[0].value;
  // The server's nonce must extend ours (§5.1), with something of its own.
  if (!valid_nonce(nonce) || nonce.size() <= nonce_.size() || !nonce.starts_with(nonce_)) {
    return std::nullopt;
  }
  auto salt = base64_decode((*attrs)[1].value);
  auto iterations = parse_iterations((*attrs)[2].value);
  if (!salt || salt->empty() || !iterations) return std::nullopt;
  if (*iterations < kMinIterations || *iterations > kMaxIterations) return std::nullopt;

  const std::string sp = salted_password(hash_, password_, *salt, *iterations);
  const std::string client_key = hmac(hash_, sp, "Client Key");
  const std::string stored_key = hash(hash_, client_key);
  const std::string server_key = hmac(hash_, sp, "Server Key");
  const std::string without_proof =
      "c=" + base64_encode(gs2_header_ + cb_data_) + ",r=" + std::string(nonce);
  const std::string auth_message =
      client_first_bare_ + "," + std::string(server_first) + "," + without_proof;
  const std::string proof = xor_bytes(client_key, hmac(hash_, stored_key, auth_message));
  expected_server_signature_ = hmac(hash_, server_key, auth_message);
  return without_proof + ",p=" + base64_encode(proof);
}

bool ScramClient::verify_server_final(std::string_view server_final) const {
  if (expected_server_signature_.empty()) return false;
  auto attrs = split_attrs(server_final);
  // "e=" carries a server error; anything but a leading verifier is a failure.
  if (!attrs || (*attrs)[0].name != 'v') return false;
  auto sig = base64_decode((*attrs)[0].value);
  return sig && equal_ct(*sig, expected_server_signature_);
}

// ---------------------------------------------------------------------------------------------
// PLAIN

std::optional<PlainCredentials> parse_plain(std::string_view msg) {
  // RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd, each at most 255 octets.
  const std::size_t n1 = msg.find('\0');
  if (n1 == std::string_view::npos) return std::nullopt;
  const std::size_t n2 = msg.find('\0', n1 + 1);
  if (n2 == std::string_view::npos) return std::nullopt;
  if (msg.find('\0', n2 + 1) != std::string_view::npos) return std::nullopt;
  PlainCredentials c;
  c.authzid = std::string(msg.substr(0, n1));
  c.authcid = std::string(msg.substr(n1 + 1, n2 - n1 - 1));
  c.password = std::string(msg.substr(n2 + 1));
  if (c.authcid.empty() || c.password.empty()) return std::nullopt;
  if (c.authzid.size() > 255 || c.authcid.size() > 255 || c.password.size() > 255) {
    return std::nullopt;
  }
  if (!valid_utf8(c.authzid) || !valid_utf8(c.authcid) || !valid_utf8(c.password)) {
    return std::nullopt;
  }
  return c;
}

}  // namespace kabar::xmpp
