// One direction of SRTP and SRTCP (libsrtp2) keyed from DTLS, AES_CM_128_HMAC_SHA1_80.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "client/media/dtls.h"

struct srtp_ctx_t_;

namespace kabar::client::media {

class Srtp {
 public:
  Srtp() = default;
  ~Srtp();
  Srtp(const Srtp&) = delete;
  Srtp& operator=(const Srtp&) = delete;

  // `outbound`: we protect with it; else we unprotect (any SSRC).
  bool init(const SrtpKey& key, bool outbound, std::string& error);
  bool ready() const { return session_ != nullptr; }
  // In place; the packet grows by the authentication tag (and SRTCP index).
  bool protect(std::vector<std::uint8_t>& packet, bool rtcp);
  // In place; false when authentication fails or it is a replay.
  bool unprotect(std::vector<std::uint8_t>& packet, bool rtcp);

 private:
  srtp_ctx_t_* session_ = nullptr;
};

}  // namespace kabar::client::media
