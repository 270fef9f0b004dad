// Feeds arbitrary bytes to the SASL parsers a client can reach before it is authenticated
// (PLAIN, SCRAM client-first and client-final, base64, SASLprep) and to the ones our client
// library runs on a server's answers (SCRAM server-first and server-final). Checks that base64
// round-trips and that nothing but a clean refusal comes out of garbage.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "xmpp/scram.h"

namespace {

using kabar::xmpp::SaslFailure;
using kabar::xmpp::ScramHash;

// The client derives keys with the server's iteration count (up to 10 million): skip inputs that
// would make one execution take seconds.
bool cheap_iterations(std::string_view s) {
  for (std::size_t p = s.find("i="); p != std::string_view::npos; p = s.find("i=", p + 1)) {
    std::size_t digits = 0;
    while (p + 2 + digits < s.size() && s[p + 2 + digits] >= '0' && s[p + 2 + digits] <= '9') {
      ++digits;
    }
    if (digits > 4) return false;
  }
  return true;
}

const kabar::xmpp::ScramCredentials& creds(ScramHash h) {
  static const auto sha1 = kabar::xmpp::derive_credentials(ScramHash::kSha1, "pencil", "salt", 1);
  static const auto sha256 =
      kabar::xmpp::derive_credentials(ScramHash::kSha256, "pencil", "salt", 1);
  return h == ScramHash::kSha1 ? sha1 : sha256;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t control = data[0];
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  const ScramHash h = (control & 1) ? ScramHash::kSha1 : ScramHash::kSha256;

  (void)kabar::xmpp::parse_plain(input);
  (void)kabar::xmpp::saslprep(input);
  if (auto raw = kabar::xmpp::base64_decode(input)) {
    auto again = kabar::xmpp::base64_decode(kabar::xmpp::base64_encode(*raw));
    if (!again || *again != *raw) __builtin_trap();
  }

  // Server side: client-first, then (after a NUL in the input) client-final.
  const std::size_t cut = input.find('\0');
  const std::string_view first = input.substr(0, cut);
  const std::string_view final_msg =
      cut == std::string_view::npos ? std::string_view() : input.substr(cut + 1);
  kabar::xmpp::ScramServer server(h);
  if (control & 2) server.set_channel_binding(true, (control & 4) != 0, "tls-unique", "cbdata");
  SaslFailure failure = SaslFailure::kNone;
  if (server.client_first(first, failure)) {
    (void)server.server_first(creds(h));
    SaslFailure f2 = SaslFailure::kNone;
    if (server.client_final(final_msg, f2) && f2 != SaslFailure::kNone) __builtin_trap();
  } else if (failure == SaslFailure::kNone) {
    __builtin_trap();  // a refusal always says why
  }

  // Client side: a hostile server's server-first and server-final.
  if (cheap_iterations(input)) {
    kabar::xmpp::ScramClient client(h, "user", "pencil", "fyko+d2lbbFgONRv9qkxdawL");
    (void)client.client_first();
    if (client.client_final(first)) (void)client.verify_server_final(final_msg);
  }
  return 0;
}
