// Two engines in one process calling each other over 127.0.0.1: ICE, DTLS-SRTP and Opus for
// real, the signalling done by hand (what the Jingle side does over XMPP).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "client/media/media.h"
#include "client/media/wav.h"
#include "client/media/y4m.h"
#include "media_test_util.h"

namespace kabar::client::media {
namespace {

using namespace std::chrono_literals;

// Generous: a loaded two-core machine runs four builds beside this test.
constexpr auto kTimeout = 30s;

// What a peer's callbacks saw.
struct Events {
  std::mutex mutex;
  std::condition_variable changed;
  bool connected = false;
  bool gathered = false;
  std::vector<std::string> failures;
  std::vector<std::string> warnings;

  template <class Pred>
  bool wait(Pred pred) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, kTimeout, [&] { return pred(*this); });
  }
  void update(const std::function<void(Events&)>& f) {
    {
      std::lock_guard lock(mutex);
      f(*this);
    }
    changed.notify_all();
  }
};

std::filesystem::path temp_file(const std::string& name) {
  return std::filesystem::temp_directory_path() /
         ("kabar-media-" + std::to_string(::getpid()) + "-" + name);
}

void write_file(const std::filesystem::path& path, const std::vector<std::uint8_t>& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

struct Call {
  Events a_events, b_events;
  std::mutex candidates_mutex;
  std::vector<IceCandidate> a_candidates;  // what a offered
  std::unique_ptr<Session> a, b;           // a offers and controls, b answers

  Call(Config a_config, Config b_config) {
    a_config.controlling = true;
    b_config.controlling = false;
    a_config.host_addresses = b_config.host_addresses = {"127.0.0.1"};
    Callbacks a_callbacks = callbacks(a_events, b);
    a_callbacks.local_candidate = [this](const IceCandidate& c) {
      {
        std::lock_guard lock(candidates_mutex);
        a_candidates.push_back(c);
      }
      b->add_remote_candidate(c);
    };
    a = make_session(a_config, a_callbacks);
    b = make_session(b_config, callbacks(b_events, a));
  }
  ~Call() {
    // Both stop before either goes: a callback of one calls into the other.
    a->stop();
    b->stop();
  }

  // The peer's callbacks forward candidates to `other`, as transport-info would.
  static Callbacks callbacks(Events& events, std::unique_ptr<Session>& other) {
    Callbacks cb;
    cb.local_candidate = [&other](const IceCandidate& c) { other->add_remote_candidate(c); };
    cb.gathering_done = [&events, &other] {
      other->remote_gathering_done();
      events.update([](Events& e) { e.gathered = true; });
    };
    cb.connected = [&events] { events.update([](Events& e) { e.connected = true; }); };
    cb.failed = [&events](const std::string& why) {
      events.update([&](Events& e) { e.failures.push_back(why); });
    };
    cb.warning = [&events](const std::string& what) {
      events.update([&](Events& e) { e.warnings.push_back(what); });
    };
    return cb;
  }

  // session-initiate, then session-accept; `tamper` spoils what a learns of b's certificate.
  void signal(bool tamper = false, bool video = false) {
    std::vector<Stream> streams(video ? 2 : 1);
    streams[0].mid = "audio";
    streams[0].codecs = a->supported_codecs(MediaKind::kAudio);
    ASSERT_FALSE(streams[0].codecs.empty());
    if (video) {
      streams[1].kind = MediaKind::kVideo;
      streams[1].mid = "video";
      streams[1].codecs = a->supported_codecs(MediaKind::kVideo);
      ASSERT_FALSE(streams[1].codecs.empty());
    }
    Fingerprint offer = a->local_fingerprint();
    EXPECT_EQ(offer.setup, "actpass");
    EXPECT_EQ(offer.value.size(), 32u * 3 - 1);
    a->gather();
    b->gather();
    b->set_remote(a->local_credentials(), offer, streams);
    Fingerprint answer = b->local_fingerprint();
    EXPECT_EQ(answer.setup, "active");
    if (tamper) answer.value[0] = answer.value[0] == 'A' ? 'B' : 'A';
    a->set_remote(b->local_credentials(), answer, streams);
    EXPECT_EQ(a->local_fingerprint().setup, "passive");
  }
};

TEST(MediaEngine, SweepsGoBothWays) {
  auto a_in = temp_file("a-in.wav"), b_in = temp_file("b-in.wav");
  auto a_out = temp_file("a-out.wav"), b_out = temp_file("b-out.wav");
  write_file(a_in, make_wav(kRate, 1, sweep(300, 3000)));
  write_file(b_in, make_wav(kRate, 1, sweep(2500, 400)));
  {
    Config ac, bc;
    ac.audio_in = a_in;
    ac.audio_out = a_out;
    bc.audio_in = b_in;
    bc.audio_out = b_out;
    Call call(ac, bc);
    call.signal();
    ASSERT_TRUE(call.a_events.wait([](Events& e) { return e.connected || !e.failures.empty(); }));
    ASSERT_TRUE(call.b_events.wait([](Events& e) { return e.connected || !e.failures.empty(); }));
    ASSERT_TRUE(call.a_events.failures.empty()) << call.a_events.failures[0];
    ASSERT_TRUE(call.b_events.failures.empty()) << call.b_events.failures[0];
    // The sweep and a second of the silence after it, each way (polled: stats have no event).
    auto deadline = std::chrono::steady_clock::now() + kTimeout;
    const std::uint64_t enough = std::uint64_t(kSweepSeconds * 50) + 50;
    while ((call.a->stats().rtp_received < enough || call.b->stats().rtp_received < enough) &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(20ms);
    Stats as = call.a->stats(), bs = call.b->stats();
    EXPECT_GE(as.rtp_received, enough);
    EXPECT_GE(bs.rtp_received, enough);
    EXPECT_GE(as.rtp_sent, as.rtp_received - 10);
    EXPECT_LE(as.rtp_lost, 5u);
    EXPECT_LE(bs.rtp_lost, 5u);
    // A loaded machine (sanitizers, parallel builds) stalls a sender now and then: a frame
    // late for its turn is concealed. The sweep's track below is the real check.
    EXPECT_LE(as.audio_frames_concealed, as.rtp_received / 10);
    EXPECT_LE(bs.audio_frames_concealed, bs.rtp_received / 10);
    EXPECT_GT(as.seconds, kSweepSeconds);
    EXPECT_TRUE(call.a_events.gathered && call.b_events.gathered);
  }  // stop() fixes up the WAV headers
  WavAudio at_a, at_b;
  std::string error;
  ASSERT_TRUE(read_wav(a_out, kRate, at_a, error)) << error;
  ASSERT_TRUE(read_wav(b_out, kRate, at_b, error)) << error;
  Track to_b = follow_sweep(at_b.samples, 300, 3000);
  Track to_a = follow_sweep(at_a.samples, 2500, 400);
  EXPECT_GE(to_b.windows, 45) << "offset " << to_b.offset;
  EXPECT_GE(to_a.windows, 45) << "offset " << to_a.offset;
  EXPECT_GE(to_b.matching, to_b.windows * 9 / 10) << "offset " << to_b.offset;
  EXPECT_GE(to_a.matching, to_a.windows * 9 / 10) << "offset " << to_a.offset;
  for (const auto& p : {a_in, b_in, a_out, b_out}) std::filesystem::remove(p);
}

TEST(MediaEngine, AWrongFingerprintEndsTheCallWithoutMedia) {
  auto a_out = temp_file("fp-a-out.wav"), b_out = temp_file("fp-b-out.wav");
  {
    Config ac, bc;
    ac.audio_out = a_out;
    bc.audio_out = b_out;
    Call call(ac, bc);
    call.signal(/*tamper=*/true);
    // a is the DTLS server (b answered active) and checks b's certificate.
    ASSERT_TRUE(call.a_events.wait([](Events& e) { return !e.failures.empty(); }));
    EXPECT_EQ(call.a_events.failures, std::vector<std::string>{"fingerprint mismatch"});
    EXPECT_FALSE(call.a_events.connected);
    // b hears the alert and gives up too; it never gets keys either way.
    call.b_events.wait([](Events& e) { return !e.failures.empty(); });
    EXPECT_FALSE(call.b_events.connected);
    EXPECT_EQ(call.a->stats().rtp_received, 0u);
    EXPECT_EQ(call.b->stats().rtp_received, 0u);
  }
  WavAudio audio;
  std::string error;
  ASSERT_TRUE(read_wav(a_out, kRate, audio, error)) << error;
  EXPECT_TRUE(audio.samples.empty());
  ASSERT_TRUE(read_wav(b_out, kRate, audio, error)) << error;
  EXPECT_TRUE(audio.samples.empty());
  std::filesystem::remove(a_out);
  std::filesystem::remove(b_out);
}

TEST(MediaEngine, ASoundDeviceThatCannotBeOpenedIsAWarningNotTheEndOfTheCall) {
  auto b_out = temp_file("nodev-b-out.wav");
  {
    Config ac, bc;
    ac.audio_device = "kabar-no-such-pcm";  // a sends from it and plays to it: neither opens
    bc.audio_out = b_out;
    Call call(ac, bc);
    call.signal();
    ASSERT_TRUE(call.a_events.wait([](Events& e) { return !e.warnings.empty(); }));
    ASSERT_TRUE(call.b_events.wait([](Events& e) { return e.connected; }));
    // The call goes on: b keeps receiving a's packets (silence).
    auto deadline = std::chrono::steady_clock::now() + kTimeout;
    while (call.b->stats().rtp_received < 25 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(20ms);  // a poll interval: stats have no event
    EXPECT_GE(call.b->stats().rtp_received, 25u);
    std::lock_guard lock(call.a_events.mutex);
    EXPECT_TRUE(call.a_events.failures.empty());
    ASSERT_EQ(call.a_events.warnings.size(), 1u);  // once, for both directions
    EXPECT_NE(call.a_events.warnings[0].find("sound device 'kabar-no-such-pcm': cannot open"),
              std::string::npos)
        << call.a_events.warnings[0];
    EXPECT_NE(call.a_events.warnings[0].find("without sound"), std::string::npos);
  }
  std::filesystem::remove(b_out);
}

TEST(MediaEngine, TimesEachAudioFrameTakenAndPlayedWhenAsked) {
  auto b_out = temp_file("timed-b-out.wav");
  using Times = std::vector<std::pair<std::uint64_t, std::chrono::steady_clock::time_point>>;
  Times taken, played;  // read after stop(), which joins the engines' threads
  {
    Config ac, bc;
    ac.audio_taken = [&taken](std::uint64_t first, std::chrono::steady_clock::time_point t) {
      taken.emplace_back(first, t);
    };
    bc.audio_out = b_out;
    bc.audio_played = [&played](std::uint64_t first, std::chrono::steady_clock::time_point t) {
      played.emplace_back(first, t);
    };
    Call call(ac, bc);
    call.signal();
    ASSERT_TRUE(call.b_events.wait([](Events& e) { return e.connected || !e.failures.empty(); }));
    auto deadline = std::chrono::steady_clock::now() + kTimeout;
    while (call.b->stats().rtp_received < 25 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(20ms);  // a poll interval: stats have no event
    call.a->stop();
    call.b->stop();
  }
  ASSERT_GE(taken.size(), 25u);
  ASSERT_GE(played.size(), 10u);
  for (const Times* times : {&taken, &played})
    for (std::size_t i = 0; i < times->size(); ++i) {
      EXPECT_EQ((*times)[i].first, i * 960) << i;  // one 20 ms frame after another
      if (i > 0) {
        EXPECT_GE((*times)[i].second, (*times)[i - 1].second) << i;
      }
    }
  // Played no earlier than taken: the first frame b played left a after a's first was taken.
  EXPECT_GT(played.front().second, taken.front().second);
  WavAudio heard;
  std::string error;
  ASSERT_TRUE(read_wav(b_out, kRate, heard, error)) << error;
  EXPECT_EQ(heard.samples.size(), played.size() * 960);
  std::filesystem::remove(b_out);
}

// A moving gradient with a bright square crossing it: every frame differs from the last.
std::vector<VideoFrame> test_pattern(int w, int h, int frames) {
  std::vector<VideoFrame> out;
  for (int k = 0; k < frames; ++k) {
    VideoFrame f{w, h, std::vector<std::uint8_t>(VideoFrame::size(w, h), 128)};
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        bool square = x >= 4 * k % w && x < 4 * k % w + 24 && y >= 40 && y < 64;
        f.data[std::size_t(y * w + x)] = square ? 235 : std::uint8_t(16 + (x + y + 2 * k) % 200);
      }
    out.push_back(std::move(f));
  }
  return out;
}

double luma_psnr(const VideoFrame& a, const VideoFrame& b) {
  double se = 0;
  std::size_t n = std::size_t(a.width) * std::size_t(a.height);
  for (std::size_t i = 0; i < n; ++i) {
    double d = double(a.data[i]) - double(b.data[i]);
    se += d * d;
  }
  if (se == 0) return 99;
  return 10 * std::log10(255.0 * 255.0 * double(n) / se);
}

TEST(MediaEngine, VideoGoesThrough) {
  constexpr int kW = 160, kH = 120, kFrames = 30;
  auto sent = test_pattern(kW, kH, kFrames);
  auto in = temp_file("in.y4m"), out = temp_file("out.y4m");
  {
    std::string y4m = make_y4m(kW, kH, 15, sent);
    write_file(in, std::vector<std::uint8_t>(y4m.begin(), y4m.end()));
  }
  {
    Config ac, bc;
    ac.video_in = in;
    bc.video_out = out;
    Call call(ac, bc);
    call.signal(/*tamper=*/false, /*video=*/true);
    auto deadline = std::chrono::steady_clock::now() + kTimeout;
    while (call.b->stats().video_frames_decoded < kFrames && call.a_events.failures.empty() &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(20ms);
    ASSERT_TRUE(call.a_events.failures.empty()) << call.a_events.failures[0];
    EXPECT_EQ(call.b->stats().video_frames_decoded, std::uint64_t(kFrames));
    EXPECT_EQ(call.a->stats().video_frames_decoded, 0u);  // b has no camera (no video_in)
  }
  Y4mReader reader;
  std::string error;
  ASSERT_TRUE(reader.open(out, error)) << error;
  ASSERT_EQ(reader.width(), kW);
  ASSERT_EQ(reader.height(), kH);
  // Frames come in order; should the first be lost, the others still match by their position.
  std::vector<VideoFrame> received;
  VideoFrame f;
  while (reader.read(f)) received.push_back(f);
  ASSERT_GE(received.size(), std::size_t(kFrames - 2));
  double best = 0;
  for (std::size_t offset = 0; offset <= 2; ++offset) {
    double sum = 0;
    std::size_t n = std::min(received.size(), sent.size() - offset);
    for (std::size_t i = 0; i < n; ++i) sum += luma_psnr(received[i], sent[i + offset]);
    best = std::max(best, sum / double(n));
  }
  EXPECT_GE(best, 30.0);
  std::filesystem::remove(in);
  std::filesystem::remove(out);
}

// A free UDP port on 127.0.0.1 (free a moment ago: the server started next takes it).
std::uint16_t free_udp_port() {
  int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// Debian's coturn on loopback with one static user, for as long as the test runs.
struct Coturn {
  pid_t pid = -1;
  std::uint16_t port = 0;
  explicit Coturn(const std::filesystem::path& dir) {
    port = free_udp_port();
    std::string port_s = std::to_string(port), min_s = std::to_string(port + 1),
                max_s = std::to_string(port + 200), log = (dir / "turn.log").string();
    std::vector<std::string> args = {"turnserver", "-n",
                                     "--no-cli",   "--no-tls",
                                     "--no-dtls",  "-L",
                                     "127.0.0.1",  "-E",
                                     "127.0.0.1",  "-p",
                                     port_s,       "--min-port",
                                     min_s,        "--max-port",
                                     max_s,        "--allow-loopback-peers",
                                     "-a",         "-f",
                                     "-r",         "kabar",
                                     "-u",         "alice:secret",
                                     "--log-file", log,
                                     "--pidfile",  (dir / "turn.pid").string(),
                                     "--userdb",   (dir / "turn.db").string()};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // Its chatter (stdout, stderr) would drown the test's.
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    if (posix_spawn(&pid, "/usr/bin/turnserver", &actions, nullptr, argv.data(), environ) != 0)
      pid = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~Coturn() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

TEST(MediaEngine, RelayOnlyGoesThroughTurn) {
  if (!std::filesystem::exists("/usr/bin/turnserver")) GTEST_SKIP() << "no coturn";
  auto dir = temp_file("turn");
  std::filesystem::create_directories(dir);
  Coturn turn(dir);
  ASSERT_GT(turn.pid, 0);
  {
    Config ac, bc;
    IceServer server{"turn", "127.0.0.1", turn.port, "udp", "alice", "secret"};
    ac.ice_servers = bc.ice_servers = {server};
    ac.relay_only = bc.relay_only = true;
    Call call(ac, bc);
    call.signal();
    ASSERT_TRUE(call.a_events.wait([](Events& e) { return e.connected || !e.failures.empty(); }));
    ASSERT_TRUE(call.b_events.wait([](Events& e) { return e.connected || !e.failures.empty(); }));
    ASSERT_TRUE(call.a_events.failures.empty()) << call.a_events.failures[0];
    ASSERT_TRUE(call.b_events.failures.empty()) << call.b_events.failures[0];
    auto deadline = std::chrono::steady_clock::now() + kTimeout;
    while (call.b->stats().rtp_received < 25 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(20ms);
    EXPECT_GE(call.b->stats().rtp_received, 25u);
    EXPECT_GE(call.a->stats().rtp_received, 1u);
    std::lock_guard lock(call.candidates_mutex);
    EXPECT_FALSE(call.a_candidates.empty());
    for (const auto& c : call.a_candidates) {
      EXPECT_EQ(c.type, "relay");
      EXPECT_EQ(c.ip, "127.0.0.1");
      EXPECT_NE(c.port, turn.port);
    }
  }
  std::filesystem::remove_all(dir);
}

TEST(MediaEngine, ABadInputFileIsReported) {
  Config config;
  config.audio_in = temp_file("missing.wav");
  Events events;
  Callbacks cb;
  cb.failed = [&events](const std::string& why) {
    events.update([&](Events& e) { e.failures.push_back(why); });
  };
  auto session = make_session(config, cb);
  session->gather();
  ASSERT_TRUE(events.wait([](Events& e) { return !e.failures.empty(); }));
  EXPECT_NE(events.failures[0].find("audio-in"), std::string::npos);
}

}  // namespace
}  // namespace kabar::client::media
