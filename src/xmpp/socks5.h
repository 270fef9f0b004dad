// SOCKS5 (RFC 1928) as XEP-0065 uses it, without I/O: parse what a client sends (the method
// greeting, then the CONNECT request), build the server's replies. Incremental: a parser given
// too few bytes says so and consumes nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kabar::xmpp::socks5 {

enum class Parse { kNeedMore, kDone, kBad };

// RFC 1928 §3: VER=5, NMETHODS (1..255), METHODS.
struct Greeting {
  bool no_auth = false;  // method 0x00 offered
};
Parse parse_greeting(std::string_view in, Greeting& out, std::size_t& used);

// RFC 1928 §4: VER=5, CMD, RSV=0, ATYP, DST.ADDR, DST.PORT. Only ATYP 3 (a domain name: what
// XEP-0065 uses) is parsed; other address types are kDone with an empty `host` so the caller can
// answer "address type not supported".
struct Request {
  std::uint8_t command = 0;       // 1: CONNECT
  std::uint8_t address_type = 0;  // 3: domain name
  std::string host;               // ATYP 3: the name (for XEP-0065 the hex SHA-1)
  std::uint16_t port = 0;
};
Parse parse_request(std::string_view in, Request& out, std::size_t& used);
// A CONNECT request for `host`, as a client sends it (tests, the fuzzer, the client library).
std::string encode_request(std::string_view host, std::uint16_t port);

// Reply codes (RFC 1928 §6).
inline constexpr std::uint8_t kSucceeded = 0x00;
inline constexpr std::uint8_t kGeneralFailure = 0x01;
inline constexpr std::uint8_t kNotAllowed = 0x02;
inline constexpr std::uint8_t kCommandNotSupported = 0x07;
inline constexpr std::uint8_t kAddressNotSupported = 0x08;
// The server's reply; BND.ADDR is `host` as a domain name (XEP-0065 echoes DST.ADDR), or
// 0.0.0.0 when empty.
std::string encode_reply(std::uint8_t code, std::string_view host, std::uint16_t port);

// The client's side (XEP-0065 §5.3.2, the target or requester connecting to a streamhost).
// Greeting offering only "no authentication".
inline constexpr std::string_view kClientGreeting{"\x05\x01\x00", 3};
// The method selection: kDone with `no_auth` true when the server chose method 0.
Parse parse_method_reply(std::string_view in, bool& no_auth, std::size_t& used);
// The reply to CONNECT has the request's layout; its code lands in `out.command`.
Parse parse_reply(std::string_view in, Request& out, std::size_t& used);

}  // namespace kabar::xmpp::socks5
