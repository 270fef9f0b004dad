// DTLS-SRTP (RFC 5763, RFC 5764) over the ICE component: OpenSSL DTLS 1.2 with a fresh
// self-signed ECDSA P-256 certificate per call, the peer's certificate checked against the
// fingerprint it signalled (XEP-0320), and the SRTP master keys exported when the handshake is
// done. No I/O: datagrams go in through receive() and out through the `send` function.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

namespace kabar::client::media {

// AES_CM_128_HMAC_SHA1_80: a 16-byte master key followed by a 14-byte master salt.
using SrtpKey = std::array<std::uint8_t, 30>;

class Dtls {
 public:
  enum class State { kIdle, kHandshaking, kConnected, kFailed };

  // Generates the certificate: nullptr with `error` set when OpenSSL cannot.
  static std::unique_ptr<Dtls> create(std::string& error);
  ~Dtls();
  Dtls(const Dtls&) = delete;
  Dtls& operator=(const Dtls&) = delete;

  // "AB:CD:..." of our certificate's SHA-256.
  const std::string& fingerprint() const { return fingerprint_; }

  // Datagrams to send to the peer.
  std::function<void(std::span<const std::uint8_t>)> send;

  // Starts the handshake as client (active) or server (passive), accepting only a peer
  // certificate with this SHA-256 fingerprint (any case, with or without ':').
  State start(bool client, const std::string& peer_fingerprint);
  State receive(std::span<const std::uint8_t> datagram);
  // How long until on_timeout() must be called, while handshaking (RFC 6347 §4.2.4).
  std::optional<std::chrono::milliseconds> timeout() const;
  State on_timeout();
  // Sends close_notify when connected (the call is over); nothing more happens afterwards.
  void close();

  State state() const { return state_; }
  // OpenSSL's objects; public only so the BIO and verify callbacks in dtls.cc can reach them.
  struct Impl;

  bool is_client() const { return client_; }
  const std::string& error() const { return error_; }
  // Valid once kConnected (RFC 5764 §4.2: client key, server key, client salt, server salt).
  const SrtpKey& local_key() const { return local_key_; }
  const SrtpKey& remote_key() const { return remote_key_; }

 private:
  Dtls() = default;
  State advance();
  State fail(std::string why);
  void flush();

  std::unique_ptr<Impl> impl_;
  std::string fingerprint_;
  bool client_ = false;
  State state_ = State::kIdle;
  std::string error_;
  SrtpKey local_key_{};
  SrtpKey remote_key_{};
};

// "ab:cd" or "ABCD" -> "ABCD", for comparison.
std::string normalize_fingerprint(const std::string& value);

}  // namespace kabar::client::media
