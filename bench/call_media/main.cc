// kabar-call-bench: two media engines call each other over 127.0.0.1 for a while; prints the
// process's user+system CPU per minute of call. Both ends run here, so a real call costs each
// side about half.
//
//   kabar-call-bench [--seconds N] [--video WxH@FPS]
//
// Audio is a tone from a WAV each way (Opus, 20 ms frames); with --video a generated test
// pattern goes each way too (VP8). Setup (certificates, ICE, DTLS) is left out of the figure.
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>

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
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--seconds") && i + 1 < argc) {
      seconds = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--video") && i + 1 < argc) {
      if (std::sscanf(argv[++i], "%dx%d@%d", &w, &h, &fps) != 3 || w <= 0 || h <= 0 || fps <= 0) {
        std::fprintf(stderr, "--video WxH@FPS, e.g. 640x480@30\n");
        return 2;
      }
    } else {
      std::fprintf(stderr, "usage: %s [--seconds N] [--video WxH@FPS]\n", argv[0]);
      return 2;
    }
  }
  if (seconds <= 0) return 2;
  auto dir =
      std::filesystem::temp_directory_path() / ("kabar-call-bench-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto wav = dir / "tone.wav";
  {
    std::vector<std::int16_t> tone(std::size_t(48000) * std::size_t(seconds + 2));
    for (std::size_t i = 0; i < tone.size(); ++i)
      tone[i] = std::int16_t(8000 * std::sin(2 * M_PI * 440 * double(i) / 48000));
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
  a = media::make_session(config, callbacks(b));
  config.controlling = false;
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
