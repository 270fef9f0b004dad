// Feeds arbitrary bytes to the SOCKS5 parsers kabard's file-transfer proxy runs on what clients
// send (greeting, then CONNECT request), whole and split at the first byte's offset, and checks
// that a split never changes the outcome, that nothing is consumed past the input, and that a
// parsed domain-name request encodes back to the same bytes.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "xmpp/socks5.h"

namespace {

namespace s5 = kabar::xmpp::socks5;

// Parses greeting then request the way the proxy does: with more bytes only on kNeedMore.
std::string run(std::string_view a, std::string_view b) {
  std::string in(a);
  bool fed_b = false;
  std::size_t used = 0;
  s5::Greeting g;
  s5::Parse r;
  while ((r = s5::parse_greeting(in, g, used)) == s5::Parse::kNeedMore) {
    if (fed_b) return "greeting: need more";
    in.append(b);
    fed_b = true;
  }
  if (used > in.size()) __builtin_trap();
  if (r == s5::Parse::kBad) return "greeting: bad";
  std::string out = g.no_auth ? "greeting: no-auth;" : "greeting: auth;";
  in.erase(0, used);
  s5::Request req;
  while ((r = s5::parse_request(in, req, used)) == s5::Parse::kNeedMore) {
    if (fed_b) return out + " request: need more";
    in.append(b);
    fed_b = true;
  }
  if (used > in.size()) __builtin_trap();
  if (r == s5::Parse::kBad) return out + " request: bad";
  if (req.address_type == 3) {
    if (req.host.empty() || req.host.size() > 255) __builtin_trap();
    if (s5::encode_request(req.host, req.port) != in.substr(0, used) && req.command == 1) {
      __builtin_trap();
    }
  }
  return out + " request: " + std::to_string(req.command) + "/" + std::to_string(req.address_type) +
         "/" + req.host + "/" + std::to_string(req.port);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  const std::size_t cut = input.size() * data[0] / 256;
  if (run(input, {}) != run(input.substr(0, cut), input.substr(cut))) {
    // Whole input is never "need more" where the split one finished, and vice versa.
    __builtin_trap();
  }
  (void)s5::encode_reply(data[0], input.substr(0, 300), 0);
  return 0;
}
