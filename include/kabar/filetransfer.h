// Peer-to-peer file transfer on a kabar::client::Client session: Jingle File Transfer (XEP-0166,
// XEP-0234) over SOCKS5 bytestreams (XEP-0260/XEP-0065: the sender's own addresses first, the
// server's proxy as fallback), then in-band bytestreams (XEP-0261/XEP-0047) by transport-replace
// when no SOCKS5 candidate works. The file's SHA-256 (XEP-0300) travels in the offer and is
// checked on arrival. The older stream initiation (XEP-0095/XEP-0096) over XEP-0065 or XEP-0047,
// both ways, for clients that only have that.
//
// Runs on the client's io_context like the client itself; not thread-safe. The FileTransfer must
// outlive every transfer it started (they hold a pointer to the client), and the client must
// outlive the FileTransfer (it unregisters its stanza handlers when destroyed).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "kabar/client.h"

namespace kabar::client {

struct FileOffer {
  std::string from;       // full JID of the sender
  std::string sid;        // the Jingle session id
  std::string name;       // the name as offered (untrusted)
  std::string safe_name;  // what it will be saved as (sanitized, inside the accept directory)
  std::uint64_t size = 0;
};

enum class OfferDecision { kAccept, kDecline, kAsk };

struct TransferResult {
  std::string peer;
  std::string path;       // receiving: where the file was saved
  std::string protocol;   // "jingle" (XEP-0234) or "si" (XEP-0096)
  std::string transport;  // "s5b-direct", "s5b-proxy" or "ibb"
  std::uint64_t bytes = 0;
  std::string sha256;              // hex
  std::uint64_t resumed_from = 0;  // XEP-0234 §8: the bytes the receiver already had
  int attempts = 1;                // sending: offers made (more than one after a break)
  // Jingle: the receiver compared the SHA-256 offered (and, sending, confirmed it). SI: the
  // receiver compared the MD5 the sender offered; a sender gets no confirmation.
  bool hash_checked = false;
  Error error;
};

struct TransferOptions {
  // kAuto: Jingle when the contact's disco#info announces it, else stream initiation (XEP-0096)
  // when it announces that.
  enum class Protocol { kAuto, kJingle, kSi };
  Protocol protocol = Protocol::kAuto;
  bool direct = true;  // offer our own addresses as SOCKS5 candidates
  bool proxy = true;   // offer the server's XEP-0065 proxy
  bool ibb = true;     // fall back to in-band bytestreams
  std::uint32_t ibb_block_size = 32768;
  std::chrono::seconds accept_timeout{120};  // how long the contact may take to accept
  int resume_attempts = 3;  // Jingle: new offers after the bytestream broke (the rest is sent)
};

class FileTransfer {
 public:
  explicit FileTransfer(Client& client);
  ~FileTransfer();
  FileTransfer(const FileTransfer&) = delete;
  FileTransfer& operator=(const FileTransfer&) = delete;

  // Sends the file at `path` to the full JID `to`; returns once the receiver has confirmed the
  // hash (session-terminate success) or the transfer failed.
  awaitable<Error> send_file(std::string to, std::string path, TransferResult* result = nullptr);

  // For a contact with no online resource (XEP-0363): finds the server's upload service, asks
  // for a slot, PUTs the file over HTTP(S) and sends the download URL to `to` in a message with
  // XEP-0066 out-of-band data (the URL is also the body). kNotFound when the server has no
  // upload service. `url` receives the download URL.
  awaitable<Error> upload_and_send(std::string to, std::string path, std::string* url = nullptr);

  TransferOptions options;

  // Receiving. Offers are declined unless accept_dir is set and on_offer (when set) says yes.
  // A Jingle transfer that breaks leaves its bytes in a hidden ".NAME.KEY.part" file there; the
  // same file offered again by the same account (name, size and SHA-256 equal) resumes from it.
  std::string accept_dir;
  std::uint64_t max_size = 0;  // 0: no limit
  // Called for each offer within the limits; kAsk leaves it waiting (up to
  // options.accept_timeout) for decide(offer.sid, yes). Unset: accept.
  std::function<OfferDecision(const FileOffer&)> on_offer;
  void decide(const std::string& sid, bool accept);
  // Stops every transfer under way, telling each peer (session-terminate <cancel/>); the senders'
  // send_file() returns Errc::kCancelled. A receiver keeps a resumable part.
  void cancel();
  std::function<void(const TransferResult&)> on_received;  // success or failure

  // Progress of any transfer, sending or receiving: bytes done of total.
  std::function<void(const std::string& sid, std::uint64_t done, std::uint64_t total)> on_progress;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace kabar::client
