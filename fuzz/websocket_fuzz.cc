// Feeds arbitrary bytes to the WebSocket frame parser (RFC 6455, as a client's frames reach
// kabard) whole and split at an offset taken from the first byte, and checks that the split
// never changes what comes out; every text message then goes through the RFC 7395 translation
// to the session's stream, and the same bytes, as the session's output, through the framer
// that cuts the stream into frames (whose output must parse back as the frames it wrote).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "net/websocket_codec.h"

namespace {

namespace ws = kabar::net::ws;

struct Recorder final : ws::FrameSink {
  std::string log;
  bool on_text(std::string_view m) override {
    log += "T";
    log += std::to_string(m.size());
    log += ':';
    log.append(m);
    std::string stream;
    if (ws::client_message_to_stream(m, stream)) {
      log += "|ok:";
      log += stream;
    } else {
      log += "|bad";
    }
    return true;
  }
  bool on_ping(std::string_view p) override {
    log += "P";
    log.append(p);
    return true;
  }
  bool on_close(std::uint16_t code, std::string_view reason) override {
    log += "C" + std::to_string(code);
    log.append(reason);
    return true;
  }
};

std::string run(std::string_view a, std::string_view b) {
  ws::FrameParser p(4096);
  Recorder r;
  auto st = p.feed(a, r);
  if (st == ws::FrameParser::Status::kOk && !b.empty()) st = p.feed(b, r);
  if (st == ws::FrameParser::Status::kError) r.log += "E" + std::to_string(p.error_code());
  return r.log;
}

// Server frames as a client reads them (unmasked, FIN).
struct Unframed {
  std::string joined;
  bool ok = true;
};
Unframed unframe(std::string_view f) {
  Unframed u;
  std::size_t i = 0;
  while (i < f.size()) {
    if (i + 2 > f.size()) return {{}, false};
    const auto b0 = static_cast<unsigned char>(f[i]);
    std::uint64_t len = static_cast<unsigned char>(f[i + 1]) & 0x7f;
    i += 2;
    if (b0 != 0x81) return {{}, false};
    if (len == 126 || len == 127) {
      const int n = len == 126 ? 2 : 8;
      if (i + n > f.size()) return {{}, false};
      len = 0;
      for (int k = 0; k < n; ++k) len = (len << 8) | static_cast<unsigned char>(f[i + k]);
      i += n;
    }
    if (len > f.size() - i) return {{}, false};
    const std::string_view payload = f.substr(i, len);
    if (!payload.starts_with('<')) return {{}, false};
    u.joined.append(payload);
    i += len;
  }
  return u;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const std::size_t cut = size == 0 ? 0 : static_cast<std::size_t>(data[0]) % (size + 1);
  if (run(in, {}) != run(in.substr(0, cut), in.substr(cut))) __builtin_trap();
  // The outbound framer: whatever it takes, it frames as whole text frames of items.
  std::string frames;
  std::size_t items = 0;
  const std::size_t took = ws::frame_stream(in, frames, [&](std::size_t, std::size_t) { ++items; });
  if (took > in.size()) __builtin_trap();
  if (!unframe(frames).ok) __builtin_trap();
  (void)items;
  return 0;
}
