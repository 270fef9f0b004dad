// Time and randomness as the server and its modules see them: interfaces, so unit tests run on a
// fixed clock and a predictable generator (ARCHITECTURE.md: tests are deterministic).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "xmpp/scram.h"

namespace kabar::server {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::int64_t now_ms() const = 0;  // Unix time, milliseconds
};

class Random {
 public:
  virtual ~Random() = default;
  virtual std::string bytes(std::size_t n) = 0;  // for secrets: must be unpredictable
};

class SystemClock final : public Clock {
 public:
  std::int64_t now_ms() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

// OpenSSL's generator, drawn from in blocks: each RAND_bytes call costs about a microsecond in a
// tight loop and more in the server (its DRBG locks and sets its cipher up again, cold in cache;
// a 512-byte block was 3% of the shard's time at 4,000 msg/s), and the archive asks for 6 bytes
// per message on the hot path. Each thread keeps the rest of a 4 KiB block and hands it out in
// order; a byte is never handed out twice, and the bytes are the generator's output as they
// came. kabard does not fork.
class SystemRandom final : public Random {
 public:
  std::string bytes(std::size_t n) override;
};

}  // namespace kabar::server
