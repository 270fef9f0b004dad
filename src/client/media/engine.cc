// The media engine behind media.h: libnice for ICE, dtls.h and srtp.h for DTLS-SRTP, libopus,
// the jitter buffer, WAV files and the sound devices (audio_device.h).
//
// Threads: each Session owns one thread running a GMainLoop on its own GMainContext. libnice's
// agent, its sockets and timers, the DTLS and SRTP state, the codec and the 10 ms media tick all
// live on that thread, so none of them needs a lock; the public methods post closures to it and
// only the few values they read back (credentials, fingerprint, stats) sit behind a mutex. A
// thread per call rather than one shared media thread: a client has one call at a time, the
// sessions stay independent (a stuck peer or a slow file cannot delay another call's audio), and
// stop() can end a session by joining its thread, which makes the lifetime of everything the
// callbacks touch plain.
#include <arpa/inet.h>
#include <netdb.h>
#include <nice/agent.h>
#include <openssl/rand.h>
#include <vpx/vp8cx.h>
#include <vpx/vp8dx.h>
#include <vpx/vpx_decoder.h>
#include <vpx/vpx_encoder.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>

#include "client/media/audio_device.h"
#include "client/media/dtls.h"
#include "client/media/media.h"
#include "client/media/opus_audio.h"
#include "client/media/rtp.h"
#include "client/media/srtp.h"
#include "client/media/vp8.h"
#include "client/media/wav.h"
#include "client/media/y4m.h"

namespace kabar::client::media {
namespace {

constexpr int kRate = kOpusRate;
constexpr int kFrame = kOpusFrame;
constexpr gint64 kFrameUs = 20000;             // one frame, in g_get_monotonic_time() units
constexpr gint64 kPlayoutDelayUs = 40000;      // the jitter buffer's delay to start with
constexpr gint64 kMaxPlayoutDelayUs = 200000;  // what late packets can raise it to
constexpr guint kTickMs = 10;                  // media clock granularity
constexpr int kDefaultOpusPayloadType = 111;   // what browsers use; ours when nothing is signalled
constexpr int kDefaultVp8PayloadType = 96;
constexpr int kVideoClock = 90000;
constexpr gint64 kPliIntervalUs = 300000;  // at most this often, while frames stay undecodable
constexpr std::size_t kMaxEarlyDtls = 8;
// RFC 3550 §6.2 allows a shorter interval than 5 s for a two-party call; browsers report about
// once a second.
constexpr gint64 kRtcpIntervalUs = 2000000;
// Seconds from the NTP epoch (1900) to the Unix epoch.
constexpr std::uint64_t kNtpUnixOffset = 2208988800u;

std::uint64_t ntp_now() {
  gint64 us = g_get_real_time();
  std::uint64_t seconds = std::uint64_t(us / 1000000) + kNtpUnixOffset;
  std::uint64_t fraction = (std::uint64_t(us % 1000000) << 32) / 1000000;
  return seconds << 32 | fraction;
}

std::uint32_t random32() {
  std::uint32_t v = 0;
  RAND_bytes(reinterpret_cast<unsigned char*>(&v), sizeof v);
  return v;
}

bool iequals(const std::string& a, const char* b) {
  std::size_t n = std::strlen(b);
  if (a.size() != n) return false;
  for (std::size_t i = 0; i < n; ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != b[i]) return false;
  return true;
}

// A numeric address for libnice, which takes no host names. Blocking: called once per server
// when gathering starts.
std::string resolve(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || res == nullptr) return {};
  char buf[INET6_ADDRSTRLEN] = {};
  if (getnameinfo(res->ai_addr, res->ai_addrlen, buf, sizeof buf, nullptr, 0, NI_NUMERICHOST) != 0)
    buf[0] = 0;
  freeaddrinfo(res);
  return buf;
}

const char* type_name(NiceCandidateType type) {
  switch (type) {
    case NICE_CANDIDATE_TYPE_HOST:
      return "host";
    case NICE_CANDIDATE_TYPE_SERVER_REFLEXIVE:
      return "srflx";
    case NICE_CANDIDATE_TYPE_PEER_REFLEXIVE:
      return "prflx";
    case NICE_CANDIDATE_TYPE_RELAYED:
      return "relay";
  }
  return "host";
}

std::optional<NiceCandidateType> type_from_name(const std::string& name) {
  if (iequals(name, "host")) return NICE_CANDIDATE_TYPE_HOST;
  if (iequals(name, "srflx")) return NICE_CANDIDATE_TYPE_SERVER_REFLEXIVE;
  if (iequals(name, "prflx")) return NICE_CANDIDATE_TYPE_PEER_REFLEXIVE;
  if (iequals(name, "relay")) return NICE_CANDIDATE_TYPE_RELAYED;
  return std::nullopt;
}

class Engine final : public Session {
 public:
  Engine(Config config, Callbacks callbacks);
  ~Engine() override;

  IceCredentials local_credentials() const override {
    std::lock_guard lock(mutex_);
    return credentials_;
  }
  Fingerprint local_fingerprint() const override {
    std::lock_guard lock(mutex_);
    return Fingerprint{"sha-256", setup_, fingerprint_};
  }
  std::vector<Codec> supported_codecs(MediaKind kind) const override;
  void gather() override {
    post([this] { start_gathering(); });
  }
  void set_remote(const IceCredentials& credentials, const Fingerprint& remote,
                  std::vector<Stream> streams) override;
  void add_remote_candidate(const IceCandidate& candidate) override {
    post([this, candidate] {
      if (remote_set_) {
        add_candidate(candidate);
      } else {
        early_candidates_.push_back(candidate);
      }
    });
  }
  void remote_gathering_done() override {
    post([this] {
      remote_done_ = true;
      if (remote_set_) nice_agent_peer_candidate_gathering_done(agent_, stream_id_);
    });
  }
  Stats stats() const override {
    std::lock_guard lock(mutex_);
    return stats_;
  }
  void stop() override;

 private:
  void post(std::function<void()> fn);
  bool on_loop_thread() const { return std::this_thread::get_id() == thread_.get_id(); }

  // All below: the loop thread only.
  void start_gathering();
  void apply_remote(IceCredentials credentials, Fingerprint remote, std::vector<Stream> streams);
  void add_candidate(const IceCandidate& candidate);
  void start_dtls_client();
  void on_dtls(Dtls::State state);
  void on_datagram(std::span<const std::uint8_t> datagram);
  void on_media(std::span<const std::uint8_t> datagram);
  void tick();
  void send_frame();
  void send_rtcp(gint64 now);
  bool start_video_encoder();
  void send_video_frame();
  void on_video(const RtpPacket& rtp, gint64 now);
  void request_keyframe(gint64 now);
  void send_packet(std::vector<std::uint8_t> packet, bool rtcp);
  void play_frame();
  void open_sound_devices(gint64 now);
  void publish_stats(gint64 now);
  void fail(const std::string& why);
  void shutdown();
  void finish();

  static void on_new_candidate(NiceAgent*, NiceCandidate* candidate, gpointer self);
  static void on_gathering_done(NiceAgent*, guint, gpointer self);
  static void on_state_changed(NiceAgent*, guint, guint, guint state, gpointer self);
  static void on_receive(NiceAgent*, guint, guint, guint len, gchar* buf, gpointer self);

  Config config_;
  Callbacks callbacks_;
  GMainContext* context_ = nullptr;
  GMainLoop* loop_ = nullptr;
  NiceAgent* agent_ = nullptr;
  guint stream_id_ = 0;
  GSource* tick_source_ = nullptr;
  std::thread thread_;

  mutable std::mutex mutex_;
  IceCredentials credentials_;
  std::string fingerprint_;
  std::string setup_ = "actpass";
  Stats stats_;
  bool stopping_ = false;

  // The loop thread's state.
  std::string init_error_;
  bool closed_ = false;
  bool failed_ = false;
  bool remote_set_ = false;
  bool remote_done_ = false;
  bool ice_connected_ = false;
  std::vector<IceCandidate> early_candidates_;
  std::vector<std::vector<std::uint8_t>> early_dtls_;
  unsigned candidate_count_ = 0;
  std::unique_ptr<Dtls> dtls_;
  bool dtls_client_ = false;
  std::string remote_fingerprint_;
  Srtp srtp_out_;
  Srtp srtp_in_;
  bool media_ = false;  // DTLS done, SRTP keyed
  gint64 media_started_ = 0;

  bool audio_enabled_ = false;
  bool audio_send_ = true;  // the audio content's senders include us
  int payload_type_ = kDefaultOpusPayloadType;
  std::uint32_t ssrc_ = 0;
  std::uint16_t sequence_ = 0;
  std::uint32_t timestamp_ = 0;
  bool first_packet_ = true;
  gint64 next_send_ = 0;
  OpusSender opus_out_;
  OpusReceiver opus_in_;
  WavAudio input_;
  std::size_t input_pos_ = 0;
  WavWriter output_;
  std::unique_ptr<AudioCapture> capture_;    // when there is no input file
  std::unique_ptr<AudioPlayback> playback_;  // when there is no output file
  std::uint64_t samples_taken_ = 0;          // for Config::audio_taken
  std::uint64_t samples_played_ = 0;         // for Config::audio_played
  ReceiveStats receive_stats_;
  gint64 playout_start_ = -1;
  gint64 playout_delay_ = kPlayoutDelayUs;
  std::uint64_t played_ = 0;
  std::uint64_t sent_ = 0;
  std::uint64_t audio_sent_ = 0;
  std::uint64_t octets_sent_ = 0;  // audio payload
  std::uint32_t remote_ssrc_ = 0;
  bool remote_ssrc_known_ = false;
  std::uint32_t last_sr_ = 0;  // middle 32 bits of the peer's last SR
  gint64 last_sr_at_ = 0;
  gint64 next_rtcp_ = 0;
  std::string cname_;

  // Video (VP8), when both sides have it.
  bool video_enabled_ = false;
  bool video_send_ = true;  // the video content's senders include us
  int video_pt_ = kDefaultVp8PayloadType;
  std::uint32_t video_ssrc_ = 0;
  std::uint16_t video_sequence_ = 0;
  std::uint32_t video_timestamp_ = 0;  // of the first frame
  Y4mReader video_in_;
  bool video_in_open_ = false;
  bool video_sending_ = false;
  Y4mWriter video_out_;
  vpx_codec_ctx_t video_encoder_{};
  bool video_encoder_ready_ = false;
  vpx_codec_ctx_t video_decoder_{};
  bool video_decoder_ready_ = false;
  gint64 next_video_ = 0;
  gint64 video_interval_us_ = 33333;
  std::uint64_t video_frames_sent_ = 0;
  bool force_keyframe_ = false;
  Vp8Assembler assembler_;
  std::uint64_t assembler_dropped_ = 0;
  bool waiting_keyframe_ = true;
  gint64 last_pli_ = 0;
  std::uint32_t video_remote_ssrc_ = 0;
  ReceiveStats video_receive_stats_;
  std::uint64_t video_decoded_ = 0;
};

Engine::Engine(Config config, Callbacks callbacks)
    : config_(std::move(config)), callbacks_(std::move(callbacks)) {
  context_ = g_main_context_new();
  loop_ = g_main_loop_new(context_, FALSE);
  // RFC 8445 full ICE with trickle (RFC 8838); regular nomination is libnice's default for
  // RFC 5245 compatibility when the option is not given.
  agent_ = nice_agent_new_full(context_, NICE_COMPATIBILITY_RFC5245, NICE_AGENT_OPTION_ICE_TRICKLE);
  // No UPnP: libnice would ask the LAN's router for port mappings from threads of its own.
  g_object_set(agent_, "controlling-mode", gboolean(config_.controlling), "ice-tcp", FALSE,
               "force-relay", gboolean(config_.relay_only), "upnp", FALSE, nullptr);
  for (const auto& address : config_.host_addresses) {
    NiceAddress a;
    nice_address_init(&a);
    if (nice_address_set_from_string(&a, address.c_str())) nice_agent_add_local_address(agent_, &a);
  }
  stream_id_ = nice_agent_add_stream(agent_, 1);
  gchar* ufrag = nullptr;
  gchar* pwd = nullptr;
  if (stream_id_ != 0 && nice_agent_get_local_credentials(agent_, stream_id_, &ufrag, &pwd)) {
    credentials_ = {ufrag, pwd};
  } else {
    init_error_ = "ICE: cannot create the stream";
  }
  g_free(ufrag);
  g_free(pwd);
  g_signal_connect(agent_, "new-candidate-full", G_CALLBACK(on_new_candidate), this);
  g_signal_connect(agent_, "candidate-gathering-done", G_CALLBACK(on_gathering_done), this);
  g_signal_connect(agent_, "component-state-changed", G_CALLBACK(on_state_changed), this);
  if (stream_id_ != 0) nice_agent_attach_recv(agent_, stream_id_, 1, context_, on_receive, this);

  std::string error;
  dtls_ = Dtls::create(error);
  if (dtls_ == nullptr) {
    init_error_ = error;
  } else {
    fingerprint_ = dtls_->fingerprint();
    dtls_->send = [this](std::span<const std::uint8_t> d) {
      nice_agent_send(agent_, stream_id_, 1, guint(d.size()),
                      reinterpret_cast<const gchar*>(d.data()));
    };
  }
  cname_ = config_.cname;
  if (cname_.empty()) {
    char cname[17];
    std::snprintf(cname, sizeof cname, "%08x%08x", random32(), random32());
    cname_ = cname;
  }
  if (!opus_out_.ok() || !opus_in_.ok()) init_error_ = "opus: cannot create the codec";
  // Without files the sound device is opened when media start (open_sound_devices): not while
  // the call rings.
  if (!config_.audio_in.empty() && !read_wav(config_.audio_in, kRate, input_, error))
    init_error_ = "audio-in: " + error;
  if (!config_.audio_out.empty() && !output_.open(config_.audio_out, kRate, error))
    init_error_ = "audio-out: " + error;
  // Without a file the camera would be read here; without one this side sends no video.
  if (!config_.video_in.empty()) {
    if (video_in_.open(config_.video_in, error)) {
      video_in_open_ = true;
      video_interval_us_ = gint64(1000000) * video_in_.fps_den() / video_in_.fps_num();
    } else {
      init_error_ = "video-in: " + error;
    }
  }
  if (!config_.video_out.empty() && !video_out_.open(config_.video_out, error))
    init_error_ = "video-out: " + error;

  tick_source_ = g_timeout_source_new(kTickMs);
  // Below the sockets: after a stall the packets already queued are read before the frames they
  // carry are due for playout (or found missing and concealed).
  g_source_set_priority(tick_source_, G_PRIORITY_DEFAULT + 10);
  g_source_set_callback(
      tick_source_,
      [](gpointer self) -> gboolean {
        static_cast<Engine*>(self)->tick();
        return G_SOURCE_CONTINUE;
      },
      this, nullptr);
  g_source_attach(tick_source_, context_);

  thread_ = std::thread([this] {
    g_main_context_push_thread_default(context_);
    g_main_loop_run(loop_);
    g_main_context_pop_thread_default(context_);
  });
}

Engine::~Engine() {
  stop();
  if (thread_.joinable()) thread_.join();
  // The loop has stopped: what is left in the context (posted closures nobody will run) is freed
  // with it, which runs their destroy notifiers.
  if (tick_source_ != nullptr) {
    g_source_destroy(tick_source_);
    g_source_unref(tick_source_);
  }
  if (agent_ != nullptr) g_object_unref(agent_);
  g_main_loop_unref(loop_);
  g_main_context_unref(context_);
  if (video_encoder_ready_) vpx_codec_destroy(&video_encoder_);
  if (video_decoder_ready_) vpx_codec_destroy(&video_decoder_);
}

void Engine::post(std::function<void()> fn) {
  // An idle source rather than g_main_context_invoke(): that one runs the closure right here
  // when the context happens to be free, which would put agent calls on the caller's thread.
  // After shutdown() nothing runs, though the loop may still dispatch this iteration's sources.
  auto* closure = new std::function<void()>([this, fn = std::move(fn)] {
    if (!closed_) fn();
  });
  GSource* source = g_idle_source_new();
  g_source_set_priority(source, G_PRIORITY_DEFAULT);
  g_source_set_callback(
      source,
      [](gpointer data) -> gboolean {
        (*static_cast<std::function<void()>*>(data))();
        return G_SOURCE_REMOVE;
      },
      closure, [](gpointer data) { delete static_cast<std::function<void()>*>(data); });
  g_source_attach(source, context_);
  g_source_unref(source);
}

void Engine::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  post([this] { shutdown(); });
  // From a callback (the loop thread) the loop ends after this closure; the destructor joins.
  if (!on_loop_thread() && thread_.joinable()) thread_.join();
}

void Engine::shutdown() {
  closed_ = true;
  media_ = false;
  if (dtls_ != nullptr) dtls_->close();  // RFC 5764 §4.1: the peer learns the call is over
  output_.close();
  capture_.reset();
  playback_.reset();
  video_out_.close();
  if (tick_source_ != nullptr) {
    g_source_destroy(tick_source_);
    g_source_unref(tick_source_);
    tick_source_ = nullptr;
  }
  // TURN allocations are released (RFC 8656 §7: a refresh with lifetime 0) before the agent
  // goes, within a second: a server that does not answer does not hold up stop().
  nice_agent_close_async(
      agent_, [](GObject*, GAsyncResult*, gpointer self) { static_cast<Engine*>(self)->finish(); },
      this);
  GSource* timeout = g_timeout_source_new(1000);
  g_source_set_callback(
      timeout,
      [](gpointer self) -> gboolean {
        static_cast<Engine*>(self)->finish();
        return G_SOURCE_REMOVE;
      },
      this, nullptr);
  g_source_attach(timeout, context_);
  g_source_unref(timeout);
}

void Engine::finish() {
  if (agent_ == nullptr) return;
  // Unreferenced here, on its own thread, so its sockets and timers leave the context now.
  g_object_unref(agent_);
  agent_ = nullptr;
  g_main_loop_quit(loop_);
}

std::vector<Codec> Engine::supported_codecs(MediaKind kind) const {
  if (kind == MediaKind::kVideo) {
    Codec vp8;
    vp8.payload_type = kDefaultVp8PayloadType;
    vp8.name = "VP8";
    vp8.clockrate = kVideoClock;
    // A lost frame is answered with a key frame on request; no retransmission (NACK).
    vp8.rtcp_fb = {{"nack", "pli"}, {"ccm", "fir"}};
    return {vp8};
  }
  // RFC 7587 §7: Opus is always signalled as 48000/2, whatever is sent.
  Codec opus;
  opus.payload_type = kDefaultOpusPayloadType;
  opus.name = "opus";
  opus.clockrate = 48000;
  opus.channels = 2;
  opus.params = {{"minptime", "10"}, {"useinbandfec", "1"}};
  return {opus};
}

void Engine::start_gathering() {
  if (closed_ || failed_) return;
  if (!init_error_.empty()) return fail(init_error_);
  bool stun_set = false;
  for (const auto& server : config_.ice_servers) {
    std::string ip = resolve(server.host);
    if (ip.empty()) continue;  // an unreachable server only costs its candidates
    if (iequals(server.type, "stun") && !stun_set) {
      // libnice takes one STUN server.
      g_object_set(agent_, "stun-server", ip.c_str(), "stun-server-port", guint(server.port),
                   nullptr);
      stun_set = true;
    } else if (iequals(server.type, "turn") || iequals(server.type, "turns")) {
      NiceRelayType type = iequals(server.type, "turns")      ? NICE_RELAY_TYPE_TURN_TLS
                           : iequals(server.transport, "tcp") ? NICE_RELAY_TYPE_TURN_TCP
                                                              : NICE_RELAY_TYPE_TURN_UDP;
      nice_agent_set_relay_info(agent_, stream_id_, 1, ip.c_str(), server.port,
                                server.username.c_str(), server.password.c_str(), type);
    }
  }
  if (!nice_agent_gather_candidates(agent_, stream_id_)) fail("ICE: gathering failed");
}

void Engine::set_remote(const IceCredentials& credentials, const Fingerprint& remote,
                        std::vector<Stream> streams) {
  {
    // RFC 5763 §5: the offerer says actpass and the answerer picks; passive answers active.
    std::lock_guard lock(mutex_);
    setup_ = iequals(remote.setup, "active") ? "passive" : "active";
  }
  post([this, credentials, remote, streams = std::move(streams)]() mutable {
    apply_remote(std::move(credentials), std::move(remote), std::move(streams));
  });
}

void Engine::apply_remote(IceCredentials credentials, Fingerprint remote,
                          std::vector<Stream> streams) {
  if (closed_ || failed_ || remote_set_) return;
  if (!init_error_.empty()) return fail(init_error_);
  if (!iequals(remote.hash, "sha-256")) return fail("unsupported fingerprint hash " + remote.hash);
  bool audio_seen = false, video_seen = false;
  for (const auto& stream : streams) {
    bool audio = stream.kind == MediaKind::kAudio;
    if (audio ? audio_seen : video_seen) continue;  // one of each kind
    for (const auto& codec : stream.codecs) {
      if (audio && iequals(codec.name, "opus")) {
        audio_enabled_ = true;
        payload_type_ = codec.payload_type;
        break;
      }
      if (!audio && iequals(codec.name, "vp8")) {
        video_enabled_ = true;
        video_pt_ = codec.payload_type;
        break;
      }
    }
    (audio ? ssrc_ : video_ssrc_) = stream.local_ssrc;
    (audio ? audio_send_ : video_send_) = stream.send;
    (audio ? audio_seen : video_seen) = true;
  }
  if (ssrc_ == 0) ssrc_ = random32();
  if (video_ssrc_ == 0 || video_ssrc_ == ssrc_) video_ssrc_ = random32();
  video_sequence_ = std::uint16_t(random32());
  video_timestamp_ = random32();
  if (video_enabled_) {
    if (vpx_codec_dec_init(&video_decoder_, vpx_codec_vp8_dx(), nullptr, 0) != VPX_CODEC_OK)
      return fail("VP8: cannot create the decoder");
    video_decoder_ready_ = true;
    if (video_in_open_ && video_send_ && !start_video_encoder())
      return fail("VP8: cannot create the encoder");
  }
  sequence_ = std::uint16_t(random32());
  timestamp_ = random32();
  nice_agent_set_remote_credentials(agent_, stream_id_, credentials.ufrag.c_str(),
                                    credentials.pwd.c_str());
  remote_set_ = true;
  remote_fingerprint_ = remote.value;
  dtls_client_ = !iequals(remote.setup, "active");
  for (const auto& candidate : early_candidates_) add_candidate(candidate);
  early_candidates_.clear();
  if (remote_done_) nice_agent_peer_candidate_gathering_done(agent_, stream_id_);
  if (!dtls_client_) {
    // The server waits for the ClientHello, which may already be here.
    on_dtls(dtls_->start(false, remote_fingerprint_));
    auto early = std::move(early_dtls_);
    for (const auto& d : early) {
      if (failed_) break;
      on_dtls(dtls_->receive(d));
    }
  } else if (ice_connected_) {
    start_dtls_client();
  }
}

void Engine::add_candidate(const IceCandidate& c) {
  // XEP-0176 carries TCP candidates from browsers too: this agent speaks UDP only.
  if (!iequals(c.protocol, "udp") || c.component != 1) return;
  auto type = type_from_name(c.type);
  if (!type) return;
  NiceCandidate* nc = nice_candidate_new(*type);
  nc->transport = NICE_CANDIDATE_TRANSPORT_UDP;
  nc->stream_id = stream_id_;
  nc->component_id = 1;
  nc->priority = c.priority;
  g_strlcpy(nc->foundation, c.foundation.c_str(), NICE_CANDIDATE_MAX_FOUNDATION);
  // Host names (mDNS ".local" candidates from browsers) cannot be used without a resolver.
  if (nice_address_set_from_string(&nc->addr, c.ip.c_str())) {
    nice_address_set_port(&nc->addr, c.port);
    if (!c.rel_addr.empty() && nice_address_set_from_string(&nc->base_addr, c.rel_addr.c_str()))
      nice_address_set_port(&nc->base_addr, c.rel_port);
    GSList* list = g_slist_append(nullptr, nc);
    nice_agent_set_remote_candidates(agent_, stream_id_, 1, list);
    g_slist_free(list);
  }
  nice_candidate_free(nc);
}

void Engine::start_dtls_client() {
  if (dtls_->state() != Dtls::State::kIdle) return;
  on_dtls(dtls_->start(true, remote_fingerprint_));
}

void Engine::on_dtls(Dtls::State state) {
  if (failed_ || closed_) return;
  if (state == Dtls::State::kFailed) return fail(dtls_->error());
  if (state != Dtls::State::kConnected || media_) return;
  std::string error;
  if (!srtp_out_.init(dtls_->local_key(), true, error) ||
      !srtp_in_.init(dtls_->remote_key(), false, error))
    return fail("SRTP: " + error);
  media_ = true;
  media_started_ = g_get_monotonic_time();
  next_send_ = media_started_;
  next_rtcp_ = media_started_ + kRtcpIntervalUs / 2;
  next_video_ = media_started_;
  if (audio_enabled_) open_sound_devices(media_started_);
  if (callbacks_.connected) callbacks_.connected();
}

void Engine::on_datagram(std::span<const std::uint8_t> d) {
  if (closed_ || failed_) return;
  switch (classify(d)) {
    case PacketKind::kDtls:
      if (dtls_->state() == Dtls::State::kIdle) {
        if (early_dtls_.size() < kMaxEarlyDtls) early_dtls_.emplace_back(d.begin(), d.end());
      } else {
        on_dtls(dtls_->receive(d));
      }
      return;
    case PacketKind::kRtp:
      if (media_) on_media(d);
      return;
    default:
      return;  // STUN is libnice's; anything else is not ours
  }
}

void Engine::on_media(std::span<const std::uint8_t> d) {
  std::vector<std::uint8_t> packet(d.begin(), d.end());
  bool rtcp = is_rtcp(packet);
  if (!srtp_in_.unprotect(packet, rtcp)) return;
  gint64 now = g_get_monotonic_time();
  if (rtcp) {
    // Only the sender report's time is used (LSR/DLSR in ours, RFC 3550 §6.4.1).
    auto summary = parse_rtcp(packet);
    if (summary && summary->keyframe_request) force_keyframe_ = true;
    if (summary && summary->sender_ntp) {
      last_sr_ = std::uint32_t(*summary->sender_ntp >> 16);
      last_sr_at_ = now;
    }
    return;
  }
  auto rtp = parse_rtp(packet);
  if (!rtp) return;
  if (video_enabled_ && rtp->header.payload_type == video_pt_) return on_video(*rtp, now);
  if (!audio_enabled_ || rtp->header.payload_type != payload_type_) return;
  remote_ssrc_ = rtp->header.ssrc;
  remote_ssrc_known_ = true;
  receive_stats_.on_packet(rtp->header.sequence, rtp->header.timestamp,
                           std::uint32_t(now * (kRate / 1000) / 1000));
  if (playout_start_ < 0) playout_start_ = now + playout_delay_;
  // A packet after its turn (concealed already) says the delay is short for this path: the
  // playout pauses a frame, once per late packet, up to the ceiling.
  if (opus_in_.push(rtp->header.sequence, rtp->payload) == JitterBuffer::Push::kLate &&
      playout_delay_ + kFrameUs <= kMaxPlayoutDelayUs) {
    playout_delay_ += kFrameUs;
    playout_start_ += kFrameUs;
  }
}

void Engine::tick() {
  if (closed_ || failed_) return;
  if (dtls_ != nullptr && dtls_->state() == Dtls::State::kHandshaking) {
    auto left = dtls_->timeout();
    if (left && left->count() <= 0) on_dtls(dtls_->on_timeout());
  }
  if (!media_) return;
  gint64 now = g_get_monotonic_time();
  // Frames are due on the wall clock: a late tick (a loaded machine) sends and plays what it
  // owes at once, so neither side drifts.
  if (audio_enabled_) {
    while (now >= next_send_ && media_) {
      if (audio_send_) send_frame();
      next_send_ += kFrameUs;
    }
    while (playout_start_ >= 0 && now >= playout_start_ + gint64(played_) * kFrameUs) {
      play_frame();
      ++played_;
    }
  }
  if (video_sending_) {
    // Encoding is the costly part: after a stall, frames that are long overdue are skipped.
    if (now - next_video_ > 4 * video_interval_us_) next_video_ = now;
    while (video_sending_ && now >= next_video_) {
      send_video_frame();
      next_video_ += video_interval_us_;
    }
  }
  if (now >= next_rtcp_) {
    send_rtcp(now);
    next_rtcp_ = now + kRtcpIntervalUs;
  }
  publish_stats(now);
}

void Engine::send_rtcp(gint64 now) {
  std::optional<SenderInfo> sender;
  if (audio_sent_ > 0) {  // the report is the audio source's; video sends none
    // The RTP timestamp of the sample being captured now (the next frame's, less what is due).
    auto behind = std::uint32_t((next_send_ - now) * (kRate / 1000) / 1000);
    sender = SenderInfo{ntp_now(), timestamp_ - behind, std::uint32_t(audio_sent_),
                        std::uint32_t(octets_sent_)};
  }
  std::optional<ReportBlock> block;
  if (remote_ssrc_known_) {
    block = receive_stats_.report(remote_ssrc_);
    if (last_sr_at_ != 0) {
      block->last_sr = last_sr_;
      block->delay_since_sr = std::uint32_t((now - last_sr_at_) * 65536 / 1000000);
    }
  }
  send_packet(write_rtcp_report(ssrc_, sender, block, cname_), true);
}

void Engine::send_frame() {
  std::int16_t pcm[kFrame] = {};
  if (capture_ != nullptr) {
    capture_->read(pcm, g_get_monotonic_time());
  } else if (input_pos_ < input_.samples.size()) {
    std::size_t n = std::min<std::size_t>(kFrame, input_.samples.size() - input_pos_);
    std::copy_n(input_.samples.begin() + std::ptrdiff_t(input_pos_), n, pcm);
    input_pos_ += n;
  }
  if (config_.audio_taken) config_.audio_taken(samples_taken_, std::chrono::steady_clock::now());
  samples_taken_ += kFrame;
  auto payload = opus_out_.encode(std::span<const std::int16_t, kOpusFrame>(pcm, kFrame));
  if (payload.empty()) return;
  RtpHeader header;
  header.marker = first_packet_;  // RFC 3551 §4.1: the first packet of a talkspurt
  header.payload_type = std::uint8_t(payload_type_);
  header.sequence = sequence_++;
  header.timestamp = timestamp_;
  header.ssrc = ssrc_;
  timestamp_ += kFrame;
  first_packet_ = false;
  send_packet(write_rtp(header, payload), false);
  ++sent_;
  ++audio_sent_;
  octets_sent_ += payload.size();
}

void Engine::play_frame() {
  auto pcm = opus_in_.pull();
  if (config_.audio_played) config_.audio_played(samples_played_, std::chrono::steady_clock::now());
  samples_played_ += pcm.size();
  if (playback_ != nullptr) playback_->write(pcm);
  output_.write(pcm);
}

void Engine::open_sound_devices(gint64 now) {
  if (config_.audio_device.empty()) return;
  std::string capture_error, playback_error;
  if (config_.audio_in.empty())
    capture_ = AudioCapture::open(config_.audio_device, now, capture_error);
  if (config_.audio_out.empty())
    playback_ = AudioPlayback::open(config_.audio_device, playback_error);
  if (!callbacks_.warning) return;
  // Once per call, in one message when both directions fail alike (no sound card at all).
  if (!capture_error.empty() && capture_error == playback_error) {
    callbacks_.warning(capture_error + "; the call goes on without sound");
    return;
  }
  if (!capture_error.empty())
    callbacks_.warning(capture_error + " (capture); silence is sent instead");
  if (!playback_error.empty())
    callbacks_.warning(playback_error + " (playback); the contact is not heard");
}

void Engine::publish_stats(gint64 now) {
  std::lock_guard lock(mutex_);
  stats_.seconds = double(now - media_started_) / 1e6;
  stats_.rtp_sent = sent_;
  stats_.rtp_received = receive_stats_.received() + video_receive_stats_.received();
  stats_.rtp_lost = receive_stats_.lost() + video_receive_stats_.lost();
  stats_.video_frames_decoded = video_decoded_;
  stats_.audio_frames_concealed = opus_in_.concealed();
  stats_.jitter_ms = receive_stats_.jitter() / (kRate / 1000.0);
}

bool Engine::start_video_encoder() {
  vpx_codec_enc_cfg_t cfg;
  if (vpx_codec_enc_config_default(vpx_codec_vp8_cx(), &cfg, 0) != VPX_CODEC_OK) return false;
  cfg.g_w = unsigned(video_in_.width());
  cfg.g_h = unsigned(video_in_.height());
  cfg.g_timebase = {1, kVideoClock};
  // About 0.08 bit per pixel: 740 kbit/s for 640x480 at 30 fps.
  double kbps = 0.08 * cfg.g_w * cfg.g_h * 1e6 / double(video_interval_us_) / 1000;
  cfg.rc_target_bitrate = unsigned(std::clamp(kbps, 100.0, 2500.0));
  cfg.rc_end_usage = VPX_CBR;
  cfg.g_error_resilient = VPX_ERROR_RESILIENT_DEFAULT;
  cfg.g_lag_in_frames = 0;  // a call cannot wait for frames to come
  cfg.g_threads = 1;
  cfg.kf_max_dist = 300;  // and on request (PLI, FIR)
  if (vpx_codec_enc_init(&video_encoder_, vpx_codec_vp8_cx(), &cfg, 0) != VPX_CODEC_OK)
    return false;
  video_encoder_ready_ = true;
  vpx_codec_control(&video_encoder_, VP8E_SET_CPUUSED, 8);
  video_sending_ = true;
  return true;
}

void Engine::send_video_frame() {
  VideoFrame frame;
  if (!video_in_.read(frame)) {
    video_sending_ = false;  // the end of the file: the picture freezes at the peer
    return;
  }
  vpx_image_t image;
  vpx_img_wrap(&image, VPX_IMG_FMT_I420, unsigned(frame.width), unsigned(frame.height), 1,
               frame.data.data());
  auto pts = vpx_codec_pts_t(video_frames_sent_) * video_interval_us_ * kVideoClock / 1000000;
  ++video_frames_sent_;
  vpx_enc_frame_flags_t flags = force_keyframe_ ? VPX_EFLAG_FORCE_KF : 0;
  force_keyframe_ = false;
  if (vpx_codec_encode(&video_encoder_, &image, pts, 1, flags, VPX_DL_REALTIME) != VPX_CODEC_OK)
    return;
  vpx_codec_iter_t iter = nullptr;
  while (const vpx_codec_cx_pkt_t* pkt = vpx_codec_get_cx_data(&video_encoder_, &iter)) {
    if (pkt->kind != VPX_CODEC_CX_FRAME_PKT) continue;
    auto parts = packetize_vp8(std::span<const std::uint8_t>(
        static_cast<const std::uint8_t*>(pkt->data.frame.buf), pkt->data.frame.sz));
    for (std::size_t i = 0; i < parts.size(); ++i) {
      RtpHeader header;
      header.marker = i + 1 == parts.size();  // RFC 7741 §4.1: the frame's last packet
      header.payload_type = std::uint8_t(video_pt_);
      header.sequence = video_sequence_++;
      header.timestamp = video_timestamp_ + std::uint32_t(pkt->data.frame.pts);
      header.ssrc = video_ssrc_;
      send_packet(write_rtp(header, parts[i]), false);
      ++sent_;
    }
  }
}

void Engine::on_video(const RtpPacket& rtp, gint64 now) {
  video_receive_stats_.on_packet(rtp.header.sequence, rtp.header.timestamp,
                                 std::uint32_t(now * (kVideoClock / 1000) / 1000));
  video_remote_ssrc_ = rtp.header.ssrc;
  auto frame =
      assembler_.push(rtp.header.sequence, rtp.header.timestamp, rtp.header.marker, rtp.payload);
  if (assembler_.dropped() != assembler_dropped_) {
    // A frame went missing: what follows refers to it, so nothing decodes until a key frame.
    assembler_dropped_ = assembler_.dropped();
    waiting_keyframe_ = true;
  }
  if (!frame) return;
  if (waiting_keyframe_ && !is_vp8_keyframe(*frame)) return request_keyframe(now);
  if (vpx_codec_decode(&video_decoder_, frame->data(), unsigned(frame->size()), nullptr, 0) !=
      VPX_CODEC_OK) {
    waiting_keyframe_ = true;
    return request_keyframe(now);
  }
  waiting_keyframe_ = false;
  vpx_codec_iter_t iter = nullptr;
  while (vpx_image_t* image = vpx_codec_get_frame(&video_decoder_, &iter)) {
    ++video_decoded_;
    video_out_.write(int(image->d_w), int(image->d_h), image->planes, image->stride);
  }
}

void Engine::request_keyframe(gint64 now) {
  if (now - last_pli_ < kPliIntervalUs) return;
  last_pli_ = now;
  send_packet(write_rtcp_pli(video_ssrc_, video_remote_ssrc_), true);
}

void Engine::send_packet(std::vector<std::uint8_t> packet, bool rtcp) {
  if (!srtp_out_.protect(packet, rtcp)) return;
  nice_agent_send(agent_, stream_id_, 1, guint(packet.size()),
                  reinterpret_cast<const gchar*>(packet.data()));
}

void Engine::fail(const std::string& why) {
  if (failed_ || closed_) return;
  failed_ = true;
  media_ = false;
  if (callbacks_.failed) callbacks_.failed(why);
}

void Engine::on_new_candidate(NiceAgent*, NiceCandidate* nc, gpointer self) {
  auto* e = static_cast<Engine*>(self);
  if (e->closed_ || e->failed_ || nc->component_id != 1 ||
      nc->transport != NICE_CANDIDATE_TRANSPORT_UDP)
    return;
  IceCandidate c;
  c.foundation = nc->foundation;
  c.component = 1;
  c.protocol = "udp";
  c.priority = nc->priority;
  char ip[NICE_ADDRESS_STRING_LEN] = {};
  nice_address_to_string(&nc->addr, ip);
  c.ip = ip;
  c.port = std::uint16_t(nice_address_get_port(&nc->addr));
  c.type = type_name(nc->type);
  if (nc->type != NICE_CANDIDATE_TYPE_HOST) {
    char base[NICE_ADDRESS_STRING_LEN] = {};
    nice_address_to_string(&nc->base_addr, base);
    c.rel_addr = base;
    c.rel_port = std::uint16_t(nice_address_get_port(&nc->base_addr));
  }
  c.id = "k" + std::to_string(++e->candidate_count_);
  if (e->callbacks_.local_candidate) e->callbacks_.local_candidate(c);
}

void Engine::on_gathering_done(NiceAgent*, guint, gpointer self) {
  auto* e = static_cast<Engine*>(self);
  if (e->closed_ || e->failed_) return;
  if (e->callbacks_.gathering_done) e->callbacks_.gathering_done();
}

void Engine::on_state_changed(NiceAgent*, guint, guint component, guint state, gpointer self) {
  auto* e = static_cast<Engine*>(self);
  if (e->closed_ || e->failed_ || component != 1) return;
  if (state == NICE_COMPONENT_STATE_FAILED) return e->fail("ICE failed");
  if (state != NICE_COMPONENT_STATE_CONNECTED && state != NICE_COMPONENT_STATE_READY) return;
  e->ice_connected_ = true;
  if (e->remote_set_ && e->dtls_client_) e->start_dtls_client();
}

void Engine::on_receive(NiceAgent*, guint, guint, guint len, gchar* buf, gpointer self) {
  static_cast<Engine*>(self)->on_datagram(
      std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(buf), len));
}

}  // namespace

std::unique_ptr<Session> make_session(Config config, Callbacks callbacks) {
  return std::make_unique<Engine>(std::move(config), std::move(callbacks));
}

}  // namespace kabar::client::media
