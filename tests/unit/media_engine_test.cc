// Two engines in one process calling each other over 127.0.0.1: ICE, DTLS-SRTP and Opus for
// real, the signalling done by hand (what the Jingle side does over XMPP).
#include <gtest/gtest.h>
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

namespace kabar::client::media {
namespace {

using namespace std::chrono_literals;

constexpr int kRate = 48000;
constexpr double kSweepSeconds = 3.0;
// Generous: a loaded two-core machine runs four builds beside this test.
constexpr auto kTimeout = 30s;

// What a peer's callbacks saw.
struct Events {
  std::mutex mutex;
  std::condition_variable changed;
  bool connected = false;
  bool gathered = false;
  std::vector<std::string> failures;

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

// A linear sweep from f0 to f1 Hz.
std::vector<std::int16_t> sweep(double f0, double f1) {
  std::size_t n = std::size_t(kSweepSeconds * kRate);
  std::vector<std::int16_t> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    double t = double(i) / kRate;
    double phase = 2 * M_PI * (f0 * t + (f1 - f0) * t * t / (2 * kSweepSeconds));
    out[i] = std::int16_t(12000 * std::sin(phase));
  }
  return out;
}

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

// The frequency of a window from its upward zero crossings (interpolated); 0 when too few.
double frequency(const std::int16_t* s, std::size_t n) {
  double first = -1, last = -1;
  int crossings = 0;
  for (std::size_t i = 1; i < n; ++i) {
    if (s[i - 1] < 0 && s[i] >= 0) {
      double x = double(i - 1) + double(-s[i - 1]) / double(s[i] - s[i - 1]);
      if (first < 0) first = x;
      last = x;
      ++crossings;
    }
  }
  if (crossings < 3) return 0;
  return double(crossings - 1) * kRate / (last - first);
}

// How many 50 ms windows of `received` follow the sweep f0 -> f1 within 5% (+10 Hz), with the
// received audio shifted by the best offset into the sweep (the first packets may be lost).
struct Track {
  int windows = 0;
  int matching = 0;
  double offset = 0;
};
Track follow_sweep(const std::vector<std::int16_t>& received, double f0, double f1) {
  constexpr std::size_t kWindow = kRate / 20;
  Track best;
  for (double offset = -0.2; offset <= 1.0; offset += 0.005) {
    Track t;
    t.offset = offset;
    // Windows wholly inside the sweep, away from its ends.
    for (double start = 0.05; start + 0.05 <= kSweepSeconds - 0.05; start += 0.05) {
      double at = start - offset;  // the window's start in the received audio
      if (at < 0) continue;
      auto i = std::size_t(at * kRate);
      if (i + kWindow > received.size()) break;
      ++t.windows;
      double expected = f0 + (f1 - f0) * (start + 0.025) / kSweepSeconds;
      double got = frequency(received.data() + i, kWindow);
      if (std::abs(got - expected) <= 0.05 * expected + 10) ++t.matching;
    }
    if (t.matching > best.matching) best = t;
  }
  return best;
}

struct Call {
  Events a_events, b_events;
  std::unique_ptr<Session> a, b;  // a offers and controls, b answers

  Call(Config a_config, Config b_config) {
    a_config.controlling = true;
    b_config.controlling = false;
    a_config.host_addresses = b_config.host_addresses = {"127.0.0.1"};
    a = make_session(a_config, callbacks(a_events, b));
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
    EXPECT_LE(as.audio_frames_concealed, 15u);
    EXPECT_LE(bs.audio_frames_concealed, 15u);
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
