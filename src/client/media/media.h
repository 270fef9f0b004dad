// The seam between a call's signalling (Jingle RTP, XEP-0166/0167/0176/0320, driven by the
// client session) and its media (ICE with libnice, DTLS-SRTP with OpenSSL and libsrtp2, Opus).
// The signalling side speaks only these types; the media side never sees XML. One MediaSession
// is one call: one ICE stream with rtcp-mux, every content BUNDLEd on it (XEP-0338), one DTLS
// association keyed for SRTP (RFC 5764).
//
// Threads: a MediaSession runs its own thread (libnice's GLib main loop, the packet timers).
// Its callbacks are called on that thread: the caller posts them to its own executor. Every
// method may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kabar::client::media {

// RFC 8445 candidate, as XEP-0176 §5 carries it.
struct IceCandidate {
  std::string foundation;
  int component = 1;  // 1: RTP (and RTCP, rtcp-mux); 2 is never gathered here
  std::string protocol = "udp";
  std::uint32_t priority = 0;
  std::string ip;
  std::uint16_t port = 0;
  std::string type;  // host, srflx, prflx, relay
  std::string rel_addr;
  std::uint16_t rel_port = 0;
  std::string id;      // XEP-0176 id; may be empty from a peer
  int generation = 0;  // may be absent from a peer: 0
};

struct IceCredentials {
  std::string ufrag;
  std::string pwd;
};

// XEP-0320 <fingerprint/>: the DTLS certificate's hash.
struct Fingerprint {
  std::string hash = "sha-256";
  std::string setup;  // actpass (offer), active or passive (answer)
  std::string value;  // upper-case hex pairs joined by ':'
};

// XEP-0167 <payload-type/> with XEP-0293 <rtcp-fb/>.
struct Codec {
  int payload_type = 0;
  std::string name;  // opus, VP8, rtx, ...
  std::uint32_t clockrate = 0;
  int channels = 1;
  std::vector<std::pair<std::string, std::string>> params;   // name, value
  std::vector<std::pair<std::string, std::string>> rtcp_fb;  // type, subtype
};

enum class MediaKind { kAudio, kVideo };

// One negotiated content: the codecs both sides have, in the offerer's order, and the SSRC
// each side sends with (XEP-0339), 0 when not signalled. `send` false: the content's senders
// (XEP-0166) leave us out, so nothing of this kind is sent; what the peer sends is still taken.
struct Stream {
  MediaKind kind = MediaKind::kAudio;
  std::string mid;  // content name ("0", "1" from browsers; "audio", "video" from kabar)
  std::vector<Codec> codecs;
  std::uint32_t local_ssrc = 0;
  std::uint32_t remote_ssrc = 0;
  bool send = true;
};

// A STUN or TURN server (XEP-0215), TURN with the credentials kabard handed out.
struct IceServer {
  std::string type;  // stun, turn
  std::string host;
  std::uint16_t port = 3478;
  std::string transport = "udp";
  std::string username;
  std::string password;
};

struct Config {
  bool controlling = false;  // the initiator controls ICE (RFC 8445 §6.1.1)
  std::vector<IceServer> ice_servers;
  // Gather host candidates on these addresses only (tests: {"127.0.0.1"}); empty: every
  // interface.
  std::vector<std::string> host_addresses;
  bool relay_only = false;  // offer relayed candidates only (tests of the TURN path)
  // Our RTCP CNAME (RFC 3550 §6.5.1), as the signalling announces it (XEP-0339); empty: the
  // engine picks one.
  std::string cname;
  // Files instead of devices (scripts and tests). Empty: the sound device below.
  std::string audio_in;   // WAV, 48 kHz (other rates are resampled), mono or stereo
  std::string audio_out;  // WAV, 48 kHz mono, written as it is played
  // The ALSA PCM ("default", "hw:1", ...) that captures what we send when there is no audio_in
  // and plays what we hear when there is no audio_out; opened when media start. Empty: no
  // device (silence is sent, nothing is played). One that cannot be opened does not end the
  // call: Callbacks::warning says so and the call goes on without it.
  std::string audio_device;
  std::string video_in;   // Y4M
  std::string video_out;  // Y4M
  // Instrumentation for benchmarks (bench/call_media --latency); empty, nothing is measured.
  // Called on the engine's thread with the steady clock's time: each audio frame as it is taken
  // from the input to be sent and as it is handed to the output (file or device), with the index
  // of its first sample in the input sent so far or in the output played so far.
  using FrameTimer =
      std::function<void(std::uint64_t first_sample, std::chrono::steady_clock::time_point at)>;
  FrameTimer audio_taken;
  FrameTimer audio_played;
};

struct Stats {
  double seconds = 0;  // since media started flowing
  std::uint64_t rtp_sent = 0;
  std::uint64_t rtp_received = 0;
  std::uint64_t rtp_lost = 0;  // from sequence gaps
  std::uint64_t audio_frames_concealed = 0;
  std::uint64_t video_frames_decoded = 0;
  double jitter_ms = 0;
};

struct Callbacks {
  std::function<void(const IceCandidate&)> local_candidate;  // trickle: send a transport-info
  std::function<void()> gathering_done;
  std::function<void()> connected;                     // ICE and DTLS done, media flowing
  std::function<void(const std::string& why)> failed;  // ICE or DTLS failed; the call is over
  // Something the user should know that does not end the call (a sound device that cannot be
  // opened). May be empty.
  std::function<void(const std::string& what)> warning;
};

class Session {
 public:
  virtual ~Session() = default;
  // Our ICE credentials, certificate fingerprint (setup as given to set_remote, or actpass
  // before it) and the codecs we offer per kind, with payload types of our choosing.
  virtual IceCredentials local_credentials() const = 0;
  virtual Fingerprint local_fingerprint() const = 0;
  virtual std::vector<Codec> supported_codecs(MediaKind kind) const = 0;
  // Starts gathering; candidates arrive through Callbacks::local_candidate.
  virtual void gather() = 0;
  // The peer's side, once known. `remote.setup` decides our DTLS role (RFC 5763 §5): the peer's
  // actpass makes us active, active makes us passive. The DTLS handshake fails when the peer's
  // certificate does not match `remote`.
  virtual void set_remote(const IceCredentials& credentials, const Fingerprint& remote,
                          std::vector<Stream> streams) = 0;
  // Trickled candidates, before or after set_remote (kept until it comes).
  virtual void add_remote_candidate(const IceCandidate& candidate) = 0;
  virtual void remote_gathering_done() = 0;
  virtual Stats stats() const = 0;
  // Stops media and closes the files; idempotent. The destructor calls it.
  virtual void stop() = 0;
};

// The real engine (libnice, OpenSSL DTLS 1.2, libsrtp2, libopus): media/engine.cc.
std::unique_ptr<Session> make_session(Config config, Callbacks callbacks);

}  // namespace kabar::client::media
