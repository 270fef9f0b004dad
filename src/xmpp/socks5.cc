#include "xmpp/socks5.h"

namespace kabar::xmpp::socks5 {
namespace {

std::uint8_t byte(std::string_view in, std::size_t i) { return static_cast<std::uint8_t>(in[i]); }

}  // namespace

Parse parse_greeting(std::string_view in, Greeting& out, std::size_t& used) {
  used = 0;
  if (in.size() < 2) return in.empty() || byte(in, 0) == 5 ? Parse::kNeedMore : Parse::kBad;
  if (byte(in, 0) != 5 || byte(in, 1) == 0) return Parse::kBad;
  const std::size_t n = byte(in, 1);
  if (in.size() < 2 + n) return Parse::kNeedMore;
  out = Greeting{};
  for (std::size_t i = 0; i < n; ++i) {
    if (byte(in, 2 + i) == 0) out.no_auth = true;
  }
  used = 2 + n;
  return Parse::kDone;
}

Parse parse_request(std::string_view in, Request& out, std::size_t& used) {
  used = 0;
  if (!in.empty() && byte(in, 0) != 5) return Parse::kBad;
  if (in.size() >= 3 && byte(in, 2) != 0) return Parse::kBad;  // RSV
  if (in.size() < 5) return Parse::kNeedMore;
  out = Request{};
  out.command = byte(in, 1);
  out.address_type = byte(in, 3);
  std::size_t addr_len = 0;
  std::size_t addr_start = 4;
  switch (out.address_type) {
    case 1:
      addr_len = 4;
      break;
    case 3:
      addr_len = byte(in, 4);
      addr_start = 5;
      if (addr_len == 0) return Parse::kBad;
      break;
    case 4:
      addr_len = 16;
      break;
    default:
      return Parse::kBad;
  }
  const std::size_t total = addr_start + addr_len + 2;
  if (in.size() < total) return Parse::kNeedMore;
  if (out.address_type == 3) out.host.assign(in.substr(addr_start, addr_len));
  out.port = static_cast<std::uint16_t>(byte(in, addr_start + addr_len) << 8 |
                                        byte(in, addr_start + addr_len + 1));
  used = total;
  return Parse::kDone;
}

std::string encode_request(std::string_view host, std::uint16_t port) {
  std::string out = {5, 1, 0, 3, static_cast<char>(host.size() & 0xFF)};
  out.append(host.substr(0, 255));
  out += static_cast<char>(port >> 8);
  out += static_cast<char>(port & 0xFF);
  return out;
}

std::string encode_reply(std::uint8_t code, std::string_view host, std::uint16_t port) {
  std::string out = {5, static_cast<char>(code), 0};
  if (host.empty()) {
    out += std::string_view("\x01\x00\x00\x00\x00", 5);
  } else {
    out += '\x03';
    out += static_cast<char>(host.size() & 0xFF);
    out.append(host.substr(0, 255));
  }
  out += static_cast<char>(port >> 8);
  out += static_cast<char>(port & 0xFF);
  return out;
}

Parse parse_method_reply(std::string_view in, bool& no_auth, std::size_t& used) {
  if (in.size() < 2) return Parse::kNeedMore;
  if (in[0] != 5) return Parse::kBad;
  no_auth = in[1] == 0;
  used = 2;
  return Parse::kDone;
}

Parse parse_reply(std::string_view in, Request& out, std::size_t& used) {
  return parse_request(in, out, used);
}

}  // namespace kabar::xmpp::socks5
