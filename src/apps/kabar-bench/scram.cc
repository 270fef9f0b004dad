#include <openssl/hmac.h>

#include "apps/kabar-bench/bench.h"

namespace kabar::bench {

const EVP_MD* md_of(bool sha256) { return sha256 ? EVP_sha256() : EVP_sha1(); }

std::string hmac(bool sha256, std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(md_of(sha256), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string digest(bool sha256, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, md_of(sha256), nullptr);
  return std::string(reinterpret_cast<char*>(out), len);
}

}  // namespace kabar::bench
