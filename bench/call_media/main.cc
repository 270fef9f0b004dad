// kabar-call-bench: two media engines call each other over 127.0.0.1 for a while; prints the
// process's user+system CPU per minute of call. Both ends run here, so a real call costs each
// side about half.
//
//   kabar-call-bench [--seconds N] [--video WxH@FPS] [--latency]
//
// Audio is a tone from a WAV each way (Opus, 20 ms frames); with --video a generated test
// pattern goes each way too (VP8). Setup (certificates, ICE, DTLS) is left out of the figure.
//
// --latency measures mouth-to-ear latency instead (issue 19's target: at most 100 ms on
// loopback). a sends markers, a 10 ms 1 kHz burst at every whole second and silence between, and
// b records what it plays; the engine's instrumentation (media::Config::audio_taken and
// audio_played, steady clock) says when each input frame was taken for sending and each output
// frame was handed to the output. A marker's latency is when the output frame holding its onset
// was played (plus the onset's place in it) less when its input frame was taken, plus the 20 ms
// a capture device needs to fill a frame before it can be taken. Counted: that frame, the media
// tick's phase on both sides, Opus (with its look-ahead), SRTP, UDP on loopback and the jitter
// buffer. Not counted, printed apart: what the ALSA devices add (audio_device.h's capture period
// and the playback queue ahead of each frame), and below them the sound server and the hardware.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "client/media/audio_device.h"
#include "client/media/media.h"
#include "client/media/wav.h"
#include "client/media/y4m.h"

namespace media = kabar::client::media;
using namespace std::chrono_literals;

namespace {

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// When each frame of a side's audio was taken or played: (its first sample's index, time).
struct FrameTimes {
  std::vector<std::pair<std::uint64_t, std::chrono::steady_clock::time_point>> frames;
  // The time of sample `index`, from the frame holding it at 48 kHz; nullopt outside them.
  std::optional<std::chrono::steady_clock::time_point> at(std::uint64_t index) const {
    auto it = std::upper_bound(frames.begin(), frames.end(), index,
                               [](std::uint64_t i, const auto& f) { return i < f.first; });
    if (it == frames.begin()) return std::nullopt;
    --it;
    if (index - it->first >= std::uint64_t(media::kOpusFrame) * 6) return std::nullopt;
    return it->second + std::chrono::microseconds((index - it->first) * 1000000 / 48000);
  }
};

constexpr std::uint64_t kMarkerEvery = 48000;  // a marker each second, on a frame's first sample
constexpr std::size_t kMarkerLength = 480;     // 10 ms
constexpr int kMarkerLevel = 16000;

// Where the markers begin in what was played: the first sample above a quarter of the marker's
// level after at least 200 ms below it.
std::vector<std::uint64_t> onsets(const std::vector<std::int16_t>& played) {
  std::vector<std::uint64_t> out;
  std::uint64_t quiet = 0;
  for (std::size_t i = 0; i < played.size(); ++i) {
    if (std::abs(int(played[i])) < kMarkerLevel / 4) {
      ++quiet;
      continue;
    }
    if (quiet >= 9600) out.push_back(i);
    quiet = 0;
  }
  return out;
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  std::size_t k = std::size_t(std::ceil(p * double(v.size())));
  return v[std::min(v.size() - 1, k == 0 ? 0 : k - 1)];
}

// Matches each onset b played with the last marker a took before it; prints per marker and
// the summary.
int report_latency(const std::filesystem::path& heard, const FrameTimes& taken,
                   const FrameTimes& played, double wall) {
  media::WavAudio audio;
  std::string error;
  if (!media::read_wav(heard, 48000, audio, error)) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 1;
  }
  // Markers whose frame was taken, with the time their first sample was captured (a real-time
  // source has it a frame before the frame is complete).
  std::vector<std::pair<std::uint64_t, std::chrono::steady_clock::time_point>> markers;
  for (const auto& [first, t] : taken.frames)
    if (first >= kMarkerEvery && first % kMarkerEvery == 0)
      markers.emplace_back(first, t - std::chrono::milliseconds(20));
  std::vector<double> ms;
  std::size_t unmatched = 0;
  std::printf("marker  input s  latency ms\n");
  for (std::uint64_t onset : onsets(audio.samples)) {
    auto out = played.at(onset);
    auto it = std::find_if(markers.rbegin(), markers.rend(),
                           [&](const auto& m) { return out && m.second < *out; });
    if (!out || it == markers.rend()) {
      ++unmatched;
      continue;
    }
    double l = std::chrono::duration<double, std::milli>(*out - it->second).count();
    ms.push_back(l);
    std::printf("%6zu  %7.1f  %10.1f\n", ms.size(), double(it->first) / 48000, l);
  }
  // Markers that should have been heard: taken at least half a second before the end.
  std::size_t expected = 0;
  if (!markers.empty())
    for (const auto& m : markers)
      if (m.second + std::chrono::milliseconds(500) < taken.frames.back().second) ++expected;
  std::printf("call: audio (Opus 20 ms) one way with markers, %.1f s, both ends in this process\n",
              wall);
  if (ms.empty()) {
    std::printf("no marker was heard (%zu onsets without a marker)\n", unmatched);
    return 1;
  }
  double sum = 0;
  for (double l : ms) sum += l;
  double p50 = percentile(ms, 0.5), p95 = percentile(ms, 0.95), max = percentile(ms, 1.0);
  std::printf(
      "mouth-to-ear latency, engine and network (%zu of %zu markers heard, %zu onsets "
      "unmatched): p50 %.1f ms, p95 %.1f ms, max %.1f ms, mean %.1f ms\n",
      ms.size(), expected, unmatched, p50, p95, max, sum / double(ms.size()));
  // What the ALSA devices of audio_device.h add on top: the capture period (a sample waits up
  // to one for its period to be read, half on average) and the frame queued ahead of each
  // frame written once playback has started.
  double capture_ms = double(media::kDevicePeriod) * 1000 / 48000;
  double playback_ms = double(media::kPlaybackStart - media::kOpusFrame) * 1000 / 48000;
  std::printf(
      "with ALSA devices (configured, not measured: capture period up to %.0f ms, %.0f ms "
      "queued for playback ahead of each frame): p50 about %.1f ms, max about %.1f ms\n",
      capture_ms, playback_ms, p50 + capture_ms / 2 + playback_ms, max + capture_ms + playback_ms);
  return 0;
}

struct Waiter {
  std::mutex m;
  std::condition_variable cv;
  int connected = 0;
  std::string failure;
};

}  // namespace

int main(int argc, char** argv) {
  int seconds = 20;
  int w = 0, h = 0, fps = 0;
  bool latency = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--latency")) {
      latency = true;
    } else if (!std::strcmp(argv[i], "--seconds") && i + 1 < argc) {
      seconds = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--video") && i + 1 < argc) {
      if (std::sscanf(argv[++i], "%dx%d@%d", &w, &h, &fps) != 3 || w <= 0 || h <= 0 || fps <= 0) {
        std::fprintf(stderr, "--video WxH@FPS, e.g. 640x480@30\n");
        return 2;
      }
    } else {
      std::fprintf(stderr, "usage: %s [--seconds N] [--video WxH@FPS] [--latency]\n", argv[0]);
      return 2;
    }
  }
  if (seconds <= 0 || (latency && w > 0)) return 2;
  auto dir =
      std::filesystem::temp_directory_path() / ("kabar-call-bench-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto wav = dir / "tone.wav";
  {
    std::vector<std::int16_t> tone(std::size_t(48000) * std::size_t(seconds + 2));
    for (std::size_t i = 0; i < tone.size(); ++i) {
      if (!latency) {
        tone[i] = std::int16_t(8000 * std::sin(2 * M_PI * 440 * double(i) / 48000));
      } else if (i >= kMarkerEvery && i % kMarkerEvery < kMarkerLength) {
        tone[i] = std::int16_t(kMarkerLevel * std::sin(2 * M_PI * 1000 * double(i) / 48000));
      }
    }
    auto bytes = media::make_wav(48000, 1, tone);
    std::ofstream(wav, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  }
  auto y4m = dir / "pattern.y4m";
  if (w > 0) {
    std::ofstream out(y4m, std::ios::binary);
    out << "YUV4MPEG2 W" << w << " H" << h << " F" << fps << ":1 Ip A1:1 C420jpeg\n";
    media::VideoFrame f{w, h, std::vector<std::uint8_t>(media::VideoFrame::size(w, h), 128)};
    for (int k = 0; k < fps * (seconds + 2); ++k) {
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
          f.data[std::size_t(y * w + x)] = std::uint8_t(16 + (x + y + 3 * k) % 200);
      out << "FRAME\n";
      out.write(reinterpret_cast<const char*>(f.data.data()), std::streamsize(f.data.size()));
    }
  }

  Waiter waiter;
  std::unique_ptr<media::Session> a, b;
  auto callbacks = [&waiter](std::unique_ptr<media::Session>& other) {
    media::Callbacks cb;
    cb.local_candidate = [&other](const media::IceCandidate& c) { other->add_remote_candidate(c); };
    cb.gathering_done = [&other] { other->remote_gathering_done(); };
    cb.connected = [&waiter] {
      std::lock_guard lock(waiter.m);
      ++waiter.connected;
      waiter.cv.notify_all();
    };
    cb.failed = [&waiter](const std::string& why) {
      std::lock_guard lock(waiter.m);
      waiter.failure = why;
      waiter.cv.notify_all();
    };
    return cb;
  };
  media::Config config;
  config.host_addresses = {"127.0.0.1"};
  config.audio_in = wav;
  if (w > 0) config.video_in = y4m;
  config.controlling = true;
  // --latency: a's input frames and b's output frames, timed; read once both have stopped.
  FrameTimes taken, played;
  auto heard = dir / "heard.wav";
  if (latency)
    config.audio_taken = [&taken](std::uint64_t first, std::chrono::steady_clock::time_point t) {
      taken.frames.emplace_back(first, t);
    };
  a = media::make_session(config, callbacks(b));
  config.controlling = false;
  if (latency) {
    config.audio_in.clear();  // b sends silence
    config.audio_out = heard;
    config.audio_taken = nullptr;
    config.audio_played = [&played](std::uint64_t first, std::chrono::steady_clock::time_point t) {
      played.frames.emplace_back(first, t);
    };
  }
  b = media::make_session(config, callbacks(a));

  std::vector<media::Stream> streams(w > 0 ? 2 : 1);
  streams[0].codecs = a->supported_codecs(media::MediaKind::kAudio);
  if (w > 0) {
    streams[1].kind = media::MediaKind::kVideo;
    streams[1].codecs = a->supported_codecs(media::MediaKind::kVideo);
  }
  a->gather();
  b->gather();
  b->set_remote(a->local_credentials(), a->local_fingerprint(), streams);
  a->set_remote(b->local_credentials(), b->local_fingerprint(), streams);
  {
    std::unique_lock lock(waiter.m);
    if (!waiter.cv.wait_for(lock, 30s,
                            [&] { return waiter.connected == 2 || !waiter.failure.empty(); }) ||
        !waiter.failure.empty()) {
      std::fprintf(stderr, "call failed: %s\n",
                   waiter.failure.empty() ? "timed out" : waiter.failure.c_str());
      a->stop();
      b->stop();
      std::filesystem::remove_all(dir);
      return 1;
    }
  }
  double cpu0 = cpu_seconds();
  auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  double cpu = cpu_seconds() - cpu0;
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  media::Stats sa = a->stats(), sb = b->stats();
  a->stop();
  b->stop();
  if (latency) {
    int rc = report_latency(heard, taken, played, wall);
    std::filesystem::remove_all(dir);
    return rc;
  }
  std::filesystem::remove_all(dir);
  double per_minute = cpu / wall * 60;
  std::printf("call: audio (Opus 20 ms)%s, %.1f s, both ends in this process\n",
              w > 0 ? (" + video (VP8 " + std::to_string(w) + "x" + std::to_string(h) + "@" +
                       std::to_string(fps) + ")")
                          .c_str()
                    : "",
              wall);
  std::printf("cpu (user+sys): %.3f s per call-minute for both ends, %.3f s per end\n", per_minute,
              per_minute / 2);
  std::printf(
      "rtp sent/received: a %llu/%llu, b %llu/%llu; lost a %llu b %llu; concealed a %llu "
      "b %llu; video frames decoded a %llu b %llu\n",
      (unsigned long long)sa.rtp_sent, (unsigned long long)sa.rtp_received,
      (unsigned long long)sb.rtp_sent, (unsigned long long)sb.rtp_received,
      (unsigned long long)sa.rtp_lost, (unsigned long long)sb.rtp_lost,
      (unsigned long long)sa.audio_frames_concealed, (unsigned long long)sb.audio_frames_concealed,
      (unsigned long long)sa.video_frames_decoded, (unsigned long long)sb.video_frames_decoded);
  return 0;
}
