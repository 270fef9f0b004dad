#include "client/media/srtp.h"

#include <srtp2/srtp.h>

#include <cstring>
#include <mutex>

namespace kabar::client::media {
namespace {

// libsrtp2 keeps process-wide state (its crypto kernel): initialised once, never shut down, as
// other users of the library in the process may still hold sessions.
bool init_library() {
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] { ok = srtp_init() == srtp_err_status_ok; });
  return ok;
}

}  // namespace

Srtp::~Srtp() {
  if (session_ != nullptr) srtp_dealloc(session_);
}

bool Srtp::init(const SrtpKey& key, bool outbound, std::string& error) {
  if (!init_library()) {
    error = "srtp_init failed";
    return false;
  }
  srtp_policy_t policy;
  std::memset(&policy, 0, sizeof policy);
  srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy.rtp);
  srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy.rtcp);
  policy.ssrc.type = outbound ? ssrc_any_outbound : ssrc_any_inbound;
  unsigned char master[30];
  std::memcpy(master, key.data(), key.size());
  policy.key = master;
  policy.window_size = 1024;
  policy.allow_repeat_tx = 0;
  policy.next = nullptr;
  srtp_t session = nullptr;
  auto status = srtp_create(&session, &policy);
  std::memset(master, 0, sizeof master);
  if (status != srtp_err_status_ok) {
    error = "srtp_create failed (" + std::to_string(int(status)) + ")";
    return false;
  }
  session_ = session;
  return true;
}

bool Srtp::protect(std::vector<std::uint8_t>& packet, bool rtcp) {
  if (session_ == nullptr) return false;
  int len = int(packet.size());
  packet.resize(packet.size() + SRTP_MAX_TRAILER_LEN + 4);
  auto status = rtcp ? srtp_protect_rtcp(session_, packet.data(), &len)
                     : srtp_protect(session_, packet.data(), &len);
  if (status != srtp_err_status_ok) return false;
  packet.resize(std::size_t(len));
  return true;
}

bool Srtp::unprotect(std::vector<std::uint8_t>& packet, bool rtcp) {
  if (session_ == nullptr) return false;
  int len = int(packet.size());
  auto status = rtcp ? srtp_unprotect_rtcp(session_, packet.data(), &len)
                     : srtp_unprotect(session_, packet.data(), &len);
  if (status != srtp_err_status_ok) return false;
  packet.resize(std::size_t(len));
  return true;
}

}  // namespace kabar::client::media
