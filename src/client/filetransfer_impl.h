// File transfer's private parts, one file per part its sections name: filetransfer.cc (the
// public class and small helpers), filetransfer_jingle.cc (Jingle stanzas and session steps),
// filetransfer_socks5.cc (SOCKS5 bytestreams and the proxy), filetransfer_send.cc,
// filetransfer_receive.cc, filetransfer_si.cc (stream initiation), filetransfer_upload.cc
// (HTTP upload). Not a public header.
#pragma once

#include <openssl/evp.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "client/error.h"
#include "kabar/filetransfer.h"
#include "xml/element.h"
#include "xmpp/hex.h"
#include "xmpp/jingle.h"
#include "xmpp/socks5.h"

namespace kabar::client {

namespace jingle = xmpp::jingle;
namespace socks5 = xmpp::socks5;
using asio::use_awaitable;
using asio::ip::tcp;
using boost::system::error_code;

inline constexpr std::size_t kChunk = 64 * 1024;
inline constexpr auto kConnectTimeout = std::chrono::seconds(5);
inline constexpr auto kStepTimeout = std::chrono::seconds(30);

using xmpp::to_hex;
std::string random_id();

// Incremental digest: SHA-256 (XEP-0300 sha-256) for Jingle, MD5 for XEP-0096's hash attribute.
class Digest {
 public:
  explicit Digest(const EVP_MD* md) : ctx_(EVP_MD_CTX_new()) {
    EVP_DigestInit_ex(ctx_, md, nullptr);
  }
  ~Digest() { EVP_MD_CTX_free(ctx_); }
  Digest(const Digest&) = delete;
  Digest& operator=(const Digest&) = delete;
  void update(const void* p, std::size_t n) { EVP_DigestUpdate(ctx_, p, n); }
  std::string final() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    return std::string(reinterpret_cast<char*>(md), len);
  }

 private:
  EVP_MD_CTX* ctx_;
};

// SHA-256 and MD5 of the bytes received, in one pass.
struct Hashes {
  Digest sha256{EVP_sha256()};
  Digest md5{EVP_md5()};
  void update(const void* p, std::size_t n) {
    sha256.update(p, n);
    md5.update(p, n);
  }
};

// A file descriptor closed on scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

bool write_all(int fd, const char* p, std::size_t n);

// The IPv4 addresses of this host's interfaces that are up; loopback last.
std::vector<std::string> local_addresses();

// Closes `s` when the timer fires: the bound on one connect or handshake.
struct Watchdog {
  asio::steady_timer timer;
  Watchdog(asio::io_context& io, tcp::socket& s, std::chrono::steady_clock::duration d)
      : timer(io, d) {
    timer.async_wait([&s](error_code e) {
      error_code ig;
      if (!e) s.close(ig);
    });
  }
  ~Watchdog() { timer.cancel(); }
};

// ---- SOCKS5 helpers (filetransfer_socks5.cc) ----

awaitable<bool> read_exact(tcp::socket& s, char* p, std::size_t n);
awaitable<bool> write_exact(tcp::socket& s, const std::string& data);
// Reads a SOCKS5 request or reply (same layout) byte-exactly, so no payload is consumed.
awaitable<std::optional<socks5::Request>> read_socks_message(tcp::socket& s);
// XEP-0065 §5.3.2 / §6.3.2: the client side of the SOCKS5 handshake to a streamhost.
awaitable<bool> socks5_client(tcp::socket& s, const std::string& dst);
// The server side, on our own listener (we are the streamhost for direct candidates).
awaitable<bool> socks5_server(tcp::socket& s, const std::string& expected_dst);

// Why a peer ended a session, in words, from its XEP-0166 §7.4 reason: "went offline",
// "cancelled it", ...
std::string stop_reason_text(const std::string& reason);

// One Jingle session, sending or receiving. Lives in Impl::sessions while it runs; the coroutine
// that drives it holds a shared_ptr, so it outlives every await in it.
struct Session {
  explicit Session(asio::io_context& io) : signal(io) {}
  std::string sid;
  std::string peer;  // full JID
  std::string initiator, responder;
  bool sending = false;
  std::string content_name = "file";
  jingle::File file;
  std::string s5b_sid, ibb_sid;
  std::deque<jingle::Action> actions;  // received from the peer, acknowledged already
  std::deque<xml::Element> iqs;        // IBB or bytestreams IQs not yet answered
  bool si = false;                     // XEP-0096 stream initiation, not Jingle
  asio::steady_timer signal;           // cancelled when something arrives
  // Sender side: our listener and the connection negotiated on it.
  std::unique_ptr<tcp::acceptor> acceptor;
  std::unique_ptr<tcp::socket> direct;
  tcp::socket* reading = nullptr;
  std::optional<bool> decision;  // receiving: the user's answer to an offer (OfferDecision::kAsk)
                                 // // receiving: the bytestream being read (closed on terminate)
  std::string direct_dst;
  int accepted = 0;
  bool closed = false;
  bool cancelled = false;  // by us (FileTransfer::cancel)

  void notify() { signal.cancel(); }
};
using SessionPtr = std::shared_ptr<Session>;

struct FileTransfer::Impl : std::enable_shared_from_this<Impl> {
  Impl(FileTransfer& o, Client& c) : owner(&o), client(&c), io(c.io_context()) {}
  FileTransfer* owner;
  Client* client;
  asio::io_context& io;
  std::map<std::string, SessionPtr> sessions;  // by Jingle sid
  std::optional<jingle::Candidate> proxy;      // discovered once
  std::set<std::string> parts_in_use;          // resumable .part files of running sessions
  bool proxy_looked_up = false;
  bool cancelled = false;                    // FileTransfer::cancel(): no further offers
  std::vector<HandlerToken> handler_tokens;  // our registrations on the client

  std::string me() const { return client->bound_jid(); }

  void progress(const Session& s, std::uint64_t done) {
    if (owner && owner->on_progress) owner->on_progress(s.sid, done, s.file.size);
  }

  // ---- stanzas in: filetransfer_jingle.cc ----

  // Claims a Jingle IQ that belongs to a file transfer: a session-initiate offering a file
  // (an XEP-0234 description), or an action on one of our sessions from its peer. Anything else
  // is left to the session's other Jingle handlers (calls), or to its unknown-session answer.
  bool on_jingle_iq(const xml::Element& iq);

  void handle_jingle_iq(const xml::Element& iq);

  void on_ibb_iq(const xml::Element& iq);

  // Waits until the session has something queued or `until` passes; false on timeout.
  awaitable<bool> wait(Session& s, std::chrono::steady_clock::time_point until);

  // The next Jingle action, or nullopt on timeout.
  awaitable<std::optional<jingle::Action>> next_action(Session& s, std::chrono::seconds timeout);

  awaitable<std::optional<xml::Element>> send_jingle(const Session& s, const jingle::Action& a);

  jingle::Action action(const Session& s, std::string name);

  void terminate(Session& s, const std::string& reason);

  void end(const SessionPtr& s);

  // ---- proxy discovery (XEP-0065 §4) and connecting to a streamhost: filetransfer_socks5.cc ----

  awaitable<void> discover_proxy();

  awaitable<std::unique_ptr<tcp::socket>> connect_streamhost(const jingle::Candidate& c,
                                                             std::string dst);
  // XEP-0065 §6.3.3: asks the proxy `proxy_jid` to activate bytestream `sid` towards `target`;
  // true when it answered with a result.
  awaitable<bool> activate_at_proxy(const std::string& proxy_jid, const std::string& sid,
                                    const std::string& target);

  // ---- sending: filetransfer_send.cc ----

  awaitable<void> accept_loop(SessionPtr s);

  awaitable<Error> stream_file(SessionPtr s, tcp::socket& sock, int fd, std::uint64_t offset);
  awaitable<Error> send_broke(SessionPtr s, std::string what, std::uint64_t done);

  awaitable<Error> send_ibb(SessionPtr s, int fd, std::uint32_t block, std::uint64_t offset = 0);

  // After the bytes: the receiver checks the hash and ends the session.
  // Once every byte is out, whichever the path: the receiver's verdict (its hash check) is the
  // outcome, recorded in `result` when it is a success.
  awaitable<Error> sent_all(SessionPtr s, TransferResult* result);

  awaitable<Error> wait_for_verdict(SessionPtr s);

  awaitable<Error> send_file(std::string to, std::string path, TransferResult* result);

  awaitable<Error> run_sender(SessionPtr s, int fd, TransferResult* result);

  // ---- receiving: filetransfer_receive.cc ----

  void start_receiving(const std::string& from, jingle::Action a);

  // A file name in `dir` that does not exist yet: name, then "name (1).ext", ...
  static std::string unused_path(const std::string& dir, const std::string& name);

  awaitable<void> receive(std::shared_ptr<Impl> self, SessionPtr s, jingle::Action init);

  // Whether to take an offer: nullopt to accept, else why not. With OfferDecision::kAsk the
  // answer comes later through decide(), or the offer times out.
  awaitable<std::optional<std::string>> decide_offer(SessionPtr s, FileOffer offer);

  awaitable<Error> run_receiver(SessionPtr s, jingle::Action init, TransferResult& res);

  awaitable<Error> receive_ibb(SessionPtr s, int fd, Hashes& hash, std::uint64_t& got);

  // ---- stream initiation (XEP-0095, XEP-0096): filetransfer_si.cc ----

  // Bytes from a SOCKS5 bytestream into the file until `size`.
  awaitable<Error> read_stream(SessionPtr s, tcp::socket& sock, int fd, Hashes& hash,
                               std::uint64_t& got);

  void on_bytestreams_iq(const xml::Element& iq);

  void on_si_iq(const xml::Element& iq);

  awaitable<void> receive_si(std::shared_ptr<Impl> self, SessionPtr s, FileOffer fo,
                             std::string md5, xml::Element iq, std::string method);

  awaitable<Error> run_si_receiver(SessionPtr s, std::string safe_name, std::string md5,
                                   TransferResult& res);

  awaitable<Error> run_si_sender(SessionPtr s, int fd, std::string md5, TransferResult* result);

  // ---- HTTP upload (XEP-0363), out-of-band data (XEP-0066): filetransfer_upload.cc ----

  awaitable<std::string> discover_upload();

  awaitable<Error> upload_and_send(std::string to, std::string path, std::string* url_out);
};

}  // namespace kabar::client
