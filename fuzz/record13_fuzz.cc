// Drives Record13::open() (kabard's TLS 1.3 record layer after the handover) with a wire made by
// a script: records a peer sealed intact (application data, KeyUpdate, close_notify), records
// with one byte flipped, and raw bytes; the wire is then fed in chunks of a size the input picks.
// Checks: never a crash; the plaintext returned is always a prefix of what the intact records
// before the first damaged byte carried (no plaintext from a record whose tag failed); with no
// damage, exactly all of it, and nothing left buffered; what the server sends back (KeyUpdate
// answers, alerts) opens at the peer unless the server failed.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tls/record13.h"

namespace {

using kabar::tls::Record13;
using kabar::tls::Suite;

struct Reader {
  const std::uint8_t* p;
  std::size_t n;
  bool empty() const { return n == 0; }
  std::uint8_t byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  std::string_view take(std::size_t k) {
    k = std::min(k, n);
    std::string_view s(reinterpret_cast<const char*>(p), k);
    p += k;
    n -= k;
    return s;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Reader in{data, size};
  const std::uint8_t setup = in.byte();
  const Suite suites[] = {Suite::kAes128GcmSha256, Suite::kAes256GcmSha384,
                          Suite::kChacha20Poly1305Sha256};
  const Suite suite = suites[setup % 3];
  const std::size_t hash_len = suite == Suite::kAes256GcmSha384 ? 48 : 32;
  const std::vector<unsigned char> client_secret(hash_len, 0x5a);
  const std::vector<unsigned char> server_secret(hash_len, 0xa5);
  auto server = Record13::make(suite, client_secret, server_secret);
  auto client = Record13::make(suite, server_secret, client_secret);
  if (!server || !client) __builtin_trap();

  std::string wire;
  std::string trusted;  // application data of intact records before any damage or close
  bool damaged = false;
  bool closed = false;
  while (!in.empty() && wire.size() < 100000) {
    const std::uint8_t op = in.byte();
    switch (op % 6) {
      case 0: {  // application data, intact
        const std::string_view text = in.take(in.byte());
        if (closed) break;  // nothing is sealed after close_notify
        if (!client->seal(text, wire)) __builtin_trap();
        if (!damaged && !closed) trusted += text;
        break;
      }
      case 1:  // KeyUpdate
        if (closed) break;
        if (!client->seal_key_update((op & 0x80) != 0, wire)) __builtin_trap();
        break;
      case 2:  // close_notify: nothing after it counts
        if (client->seal_close_notify(wire)) closed = true;
        break;
      case 3: {  // raw bytes
        const std::string_view raw = in.take(in.byte() % 64);
        if (!raw.empty()) damaged = true;
        wire += raw;
        break;
      }
      case 4: {  // a record with one byte flipped
        std::string rec;
        const std::string_view text = in.take(in.byte() % 32);
        if (!client->seal(text, rec) || rec.empty()) break;
        const std::size_t at = in.byte() % rec.size();
        rec[at] = static_cast<char>(rec[at] ^ (1 | in.byte()));
        damaged = true;
        wire += rec;
        break;
      }
      case 5: {  // a full-size record, or one past it in two records
        const std::string big(
            (op & 0x80) != 0 ? kabar::tls::kMaxPlaintext + 1 : kabar::tls::kMaxPlaintext,
            static_cast<char>(op));
        if (closed) break;
        if (!client->seal(big, wire)) __builtin_trap();
        if (!damaged && !closed) trusted += big;
        break;
      }
    }
  }

  // Feed in chunks: all at once; 1..8 bytes for a small wire; else 2..17 pieces (so the run
  // stays fast with full-size records).
  std::size_t chunk = wire.size() + 1;
  if (setup >= 16) {
    chunk = wire.size() < 4096 ? 1 + setup % 8 : wire.size() / (2 + setup % 16) + 1;
  }
  std::string plain;
  std::string out;
  Record13::Status status = Record13::Status::kOk;
  for (std::size_t off = 0; off < wire.size(); off += chunk) {
    const std::size_t before = plain.size();
    status = server->open(std::string_view(wire).substr(off, chunk), plain, out);
    if (plain.size() > trusted.size() ||
        trusted.compare(before, plain.size() - before, plain, before) != 0) {
      __builtin_trap();  // plaintext nobody sealed, or sealed after damage
    }
    if (status != Record13::Status::kOk) break;
  }
  if (!damaged) {
    if (status == Record13::Status::kError) __builtin_trap();
    if (plain != trusted) __builtin_trap();
    if (closed != (status == Record13::Status::kClosed)) __builtin_trap();
    if (!closed && server->buffered() != 0) __builtin_trap();
  }
  std::string back;
  std::string ignored;
  const auto peer = client->open(out, back, ignored);
  if (!back.empty()) __builtin_trap();  // the server sent no application data
  if (status != Record13::Status::kError && peer == Record13::Status::kError) __builtin_trap();
  server->hibernate();
  return 0;
}
