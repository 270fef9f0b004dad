// The default sound devices for calls without files: ALSA capture and playback, 48 kHz mono S16,
// one 20 ms frame per engine tick. ALSA's "default" PCM reaches PulseAudio or PipeWire through
// their ALSA plugins on a desktop, so this one seam covers all three.
//
// Both sides are non-blocking and bounded, so the engine's loop thread never waits on a device
// and a device never makes the call's delay grow without limit:
// - capture reads at most what the call's clock says the device can have produced (ReadPacer:
//   a device that hands samples out faster than real time, such as ALSA's null and file plugins,
//   is still read at 48 kHz) and at most what its CaptureRing of three frames has room for, and
//   hands out 960-sample frames: silence while a frame is not there yet. What piles up beyond
//   that (the engine stalled, or a device clock faster than ours) stays in the device's 60 ms
//   buffer until it overruns: it is prepared and started again, the oldest audio dropped;
// - playback writes each frame into a device buffer of 60 ms that starts playing once two frames
//   are in; a frame that does not fit is dropped, an underrun is recovered and the buffer refills.
// A device that goes away during a call (-ENODEV) is left be: silence is sent, nothing played.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "client/media/opus_audio.h"

struct _snd_pcm;

namespace kabar::client::media {

// What is asked of the devices, in samples at 48 kHz (ALSA may round them): a 10 ms period both
// ways (also what a captured sample waits at most for its period to be read), 60 ms of buffer
// (the bound of an overrun, and of what playback queues), playback starting once two frames are
// in (so each frame written waits behind about one: a cushion for the 10 ms media tick).
inline constexpr std::size_t kDevicePeriod = kOpusRate / 100;
inline constexpr std::size_t kCaptureBuffer = 3 * kOpusFrame;
inline constexpr std::size_t kPlaybackBuffer = 3 * kOpusFrame;
inline constexpr std::size_t kPlaybackStart = 2 * kOpusFrame;
// Captured samples wait for their frame in a ring of three frames; the read pacer lets 200 ms
// be caught up after a stall of the engine's thread (a real device holds less: it overruns).
inline constexpr std::size_t kCaptureRing = 3 * kOpusFrame;
inline constexpr std::size_t kCaptureBurst = 10 * kOpusFrame;

// Captured samples in, 20 ms frames out. No device in it: unit tested.
class CaptureRing {
 public:
  explicit CaptureRing(std::size_t max_samples = kCaptureRing);

  // Appends; past max_samples the oldest go (bounded latency; AudioCapture reads no more than
  // space(), so only a caller that does not is cut short).
  void push(std::span<const std::int16_t> samples);
  // The next frame: true with captured audio; false with silence when a whole frame is not here
  // yet (what is here stays for the next frame).
  bool pop(std::span<std::int16_t, kOpusFrame> frame);

  std::size_t size() const { return size_; }
  std::size_t space() const { return buffer_.size() - size_; }
  std::uint64_t dropped() const { return dropped_; }       // samples
  std::uint64_t silent_frames() const { return silent_; }  // frames popped as silence

 private:
  std::vector<std::int16_t> buffer_;  // circular
  std::size_t head_ = 0;              // the oldest sample
  std::size_t size_ = 0;
  std::uint64_t dropped_ = 0;
  std::uint64_t silent_ = 0;
};

// How many samples a capture device may be read by now, at `rate` from start(), with `burst`
// samples of credit at most (a token bucket; times in microseconds of one monotonic clock).
class ReadPacer {
 public:
  ReadPacer(int rate, std::size_t burst) : rate_(rate), burst_(burst) {}
  void start(std::int64_t now_us);
  std::size_t allowance(std::int64_t now_us);
  void took(std::size_t samples) { taken_ += samples; }

 private:
  int rate_;
  std::size_t burst_;
  std::int64_t start_us_ = 0;
  std::uint64_t taken_ = 0;  // counts what was forgiven too (credit above the burst)
};

// One ALSA PCM, opened non-blocking for 48 kHz mono S16_LE.
class AudioCapture {
 public:
  // Opens and starts `device` (an ALSA PCM name: "default", "hw:1", ...); nullptr with `error`.
  static std::unique_ptr<AudioCapture> open(const std::string& device, std::int64_t now_us,
                                            std::string& error);
  ~AudioCapture();
  AudioCapture(const AudioCapture&) = delete;
  AudioCapture& operator=(const AudioCapture&) = delete;

  // The next frame at `now_us`: false when it is silence (nothing captured yet, or the device
  // failed).
  bool read(std::span<std::int16_t, kOpusFrame> frame, std::int64_t now_us);
  std::int64_t period_us() const { return period_us_; }  // the device's granularity
  std::int64_t buffer_us() const { return buffer_us_; }
  const CaptureRing& ring() const { return ring_; }

 private:
  AudioCapture(_snd_pcm* pcm, std::int64_t now_us);
  _snd_pcm* pcm_;
  ReadPacer pacer_;
  CaptureRing ring_;
  std::vector<std::int16_t> chunk_;
  std::int64_t period_us_ = 0;
  std::int64_t buffer_us_ = 0;
  std::uint64_t recovered_ = 0;
};

class AudioPlayback {
 public:
  static std::unique_ptr<AudioPlayback> open(const std::string& device, std::string& error);
  ~AudioPlayback();
  AudioPlayback(const AudioPlayback&) = delete;
  AudioPlayback& operator=(const AudioPlayback&) = delete;

  // Queues samples to play; what does not fit in the device buffer is dropped.
  void write(std::span<const std::int16_t> samples);
  std::int64_t buffer_us() const { return buffer_us_; }
  // The device starts (and restarts after an underrun) with this much queued: what a frame
  // waits in the device at least.
  std::int64_t start_us() const { return start_us_; }
  std::uint64_t dropped() const { return dropped_; }  // samples that did not fit
  std::uint64_t underruns() const { return underruns_; }

 private:
  explicit AudioPlayback(_snd_pcm* pcm) : pcm_(pcm) {}
  _snd_pcm* pcm_;
  std::int64_t buffer_us_ = 0;
  std::int64_t start_us_ = 0;
  std::uint64_t dropped_ = 0;
  std::uint64_t underruns_ = 0;
};

}  // namespace kabar::client::media
