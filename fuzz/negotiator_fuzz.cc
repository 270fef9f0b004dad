// The server's stream negotiator fed hostile bytes through the real XML stream parser: a client
// that can say anything before it is authenticated. Questions are answered at once (one account,
// alice/pencil; every other bind refused); a STARTTLS handshake "succeeds" and the stream
// restarts. Checks that the negotiator never writes after closing and never binds without
// authenticating.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "xmpp/scram.h"
#include "xmpp/stream/negotiator.h"

namespace {

namespace stream = kabar::xmpp::stream;
using kabar::xmpp::ScramHash;

const kabar::xmpp::ScramCredentials& creds(ScramHash h) {
  static const auto sha1 =
      kabar::xmpp::derive_credentials(ScramHash::kSha1, "pencil", "salt", 4096);
  static const auto sha256 =
      kabar::xmpp::derive_credentials(ScramHash::kSha256, "pencil", "salt", 4096);
  return h == ScramHash::kSha1 ? sha1 : sha256;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t control = data[0];
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);

  stream::ServerOptions options;
  options.domain = "example.com";
  options.allow_plaintext = (control & 1) != 0;
  options.allow_registration = (control & 2) != 0;
  unsigned counter = 0;
  options.random = [&counter](std::size_t n) {
    std::string out;
    for (std::size_t i = 0; i < n; ++i) out += static_cast<char>(counter++);
    return out;
  };
  stream::ServerNegotiator server(options);
  if (control & 4) server.tls_established("tls-unique", (control & 8) ? "finished" : "");
  stream::ParsedInput parser(server);
  bool closed = false;
  int binds = 0;
  auto drain = [&] {
    while (server.has_events()) {
      for (stream::Event& ev : server.take_events()) {
        if (closed) __builtin_trap();  // nothing after the end
        switch (ev.kind) {
          case stream::Event::Kind::kStartTls:
            server.tls_established("tls-unique", "finished");
            break;
          case stream::Event::Kind::kRestartStream:
            parser.restart();
            break;
          case stream::Event::Kind::kNeedScramCredentials:
            if (ev.user == "alice") {
              server.scram_credentials(creds(ev.hash));
            } else {
              server.scram_credentials(std::nullopt);
            }
            break;
          case stream::Event::Kind::kVerifyPlain:
            server.plain_result(ev.user == "alice" && ev.password == "pencil");
            break;
          case stream::Event::Kind::kBindRequest:
            if (!server.authenticated()) __builtin_trap();
            if (++binds % 2 == 0) {
              server.bind_refused("conflict");
            } else {
              server.bind_accepted();
            }
            break;
          case stream::Event::Kind::kBound:
            if (!server.authenticated()) __builtin_trap();
            break;
          case stream::Event::Kind::kClosed:
            closed = true;
            break;
          default:
            break;
        }
      }
    }
  };
  // Two reads, cut where the control byte says.
  const std::size_t cut = input.empty() ? 0 : (control >> 4) * input.size() / 16;
  parser.feed(input.substr(0, cut));
  drain();
  parser.feed(input.substr(cut));
  drain();
  return 0;
}
