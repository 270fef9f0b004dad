#include "client/media/audio_device.h"

#include <alsa/asoundlib.h>

#include <algorithm>
#include <mutex>

namespace kabar::client::media {
namespace {

constexpr unsigned kRate = kOpusRate;

std::int64_t to_us(snd_pcm_uframes_t frames) { return std::int64_t(frames) * 1000000 / kRate; }

// alsa-lib prints its errors to stderr by default ("cannot find card '0'" on a machine without
// sound); the engine says once, in its own words, that a device could not be opened. The handler
// is the process's: calls are the only ALSA user in kabar.
void quiet_alsa(const char*, int, const char*, int, const char*, ...) {}

std::string alsa_error(const std::string& device, const char* what, int err) {
  return "sound device '" + device + "': " + what + ": " + snd_strerror(err);
}

// Opens `device` non-blocking with 48 kHz mono S16_LE (ALSA's plug layer converts if the device
// does not have it) and the given period and buffer, near enough.
snd_pcm_t* open_pcm(const std::string& device, snd_pcm_stream_t stream, snd_pcm_uframes_t& period,
                    snd_pcm_uframes_t& buffer, std::string& error) {
  static std::once_flag quiet;
  std::call_once(quiet, [] { snd_lib_error_set_handler(quiet_alsa); });
  snd_pcm_t* pcm = nullptr;
  int err = snd_pcm_open(&pcm, device.c_str(), stream, SND_PCM_NONBLOCK);
  if (err < 0) {
    error = alsa_error(device, "cannot open", err);
    return nullptr;
  }
  snd_pcm_hw_params_t* hw = nullptr;
  snd_pcm_hw_params_alloca(&hw);
  const char* step = "no parameters";
  if ((err = snd_pcm_hw_params_any(pcm, hw)) >= 0 &&
      (step = "resampling", err = snd_pcm_hw_params_set_rate_resample(pcm, hw, 1)) >= 0 &&
      (step = "interleaved access",
       err = snd_pcm_hw_params_set_access(pcm, hw, SND_PCM_ACCESS_RW_INTERLEAVED)) >= 0 &&
      (step = "S16_LE", err = snd_pcm_hw_params_set_format(pcm, hw, SND_PCM_FORMAT_S16_LE)) >= 0 &&
      (step = "mono", err = snd_pcm_hw_params_set_channels(pcm, hw, 1)) >= 0 &&
      (step = "48000 Hz", err = snd_pcm_hw_params_set_rate(pcm, hw, kRate, 0)) >= 0 &&
      (step = "period", err = snd_pcm_hw_params_set_period_size_near(pcm, hw, &period, nullptr)) >=
          0 &&
      (step = "buffer", err = snd_pcm_hw_params_set_buffer_size_near(pcm, hw, &buffer)) >= 0 &&
      (step = "hardware parameters", err = snd_pcm_hw_params(pcm, hw)) >= 0) {
    snd_pcm_hw_params_get_period_size(hw, &period, nullptr);
    snd_pcm_hw_params_get_buffer_size(hw, &buffer);
    return pcm;
  }
  error = alsa_error(device, step, err);
  snd_pcm_close(pcm);
  return nullptr;
}

// After an xrun (-EPIPE) or a suspend (-ESTRPIPE): true when the PCM is prepared again.
// snd_pcm_recover() would do the same but sleeps a second at a time while a suspended device
// resumes, which the engine's thread cannot: here a device still resuming is tried again at the
// next frame.
bool recover(snd_pcm_t* pcm, int err) {
  if (err == -ESTRPIPE) {
    int r = snd_pcm_resume(pcm);
    if (r == -EAGAIN) return false;
    if (r == 0) return true;
  } else if (err != -EPIPE && err != -EINTR) {
    return false;  // gone (-ENODEV, a headset unplugged) or broken: silence from now on
  }
  return snd_pcm_prepare(pcm) == 0;
}

}  // namespace

// ---- CaptureRing ----

CaptureRing::CaptureRing(std::size_t max_samples)
    : buffer_(std::max(max_samples, std::size_t(kOpusFrame))) {}

void CaptureRing::push(std::span<const std::int16_t> samples) {
  if (samples.size() > buffer_.size()) {
    dropped_ += samples.size() - buffer_.size();
    samples = samples.last(buffer_.size());
  }
  if (std::size_t over = size_ + samples.size(); over > buffer_.size()) {
    over -= buffer_.size();
    head_ = (head_ + over) % buffer_.size();
    size_ -= over;
    dropped_ += over;
  }
  std::size_t tail = (head_ + size_) % buffer_.size();
  std::size_t first = std::min(samples.size(), buffer_.size() - tail);
  std::copy_n(samples.begin(), first, buffer_.begin() + std::ptrdiff_t(tail));
  std::copy(samples.begin() + std::ptrdiff_t(first), samples.end(), buffer_.begin());
  size_ += samples.size();
}

bool CaptureRing::pop(std::span<std::int16_t, kOpusFrame> frame) {
  if (size_ < frame.size()) {
    std::fill(frame.begin(), frame.end(), std::int16_t(0));
    ++silent_;
    return false;
  }
  std::size_t first = std::min(frame.size(), buffer_.size() - head_);
  std::copy_n(buffer_.begin() + std::ptrdiff_t(head_), first, frame.begin());
  std::copy_n(buffer_.begin(), frame.size() - first, frame.begin() + std::ptrdiff_t(first));
  head_ = (head_ + frame.size()) % buffer_.size();
  size_ -= frame.size();
  return true;
}

// ---- ReadPacer ----

void ReadPacer::start(std::int64_t now_us) {
  start_us_ = now_us;
  taken_ = 0;
}

std::size_t ReadPacer::allowance(std::int64_t now_us) {
  if (now_us <= start_us_) return 0;
  // From the start rather than from the last call: no rounding error adds up over a call.
  auto granted = std::uint64_t((now_us - start_us_) * rate_ / 1000000);
  if (granted <= taken_) return 0;
  if (granted - taken_ > burst_) taken_ = granted - burst_;  // unused credit does not pile up
  return std::size_t(granted - taken_);
}

// ---- AudioCapture ----

std::unique_ptr<AudioCapture> AudioCapture::open(const std::string& device, std::int64_t now_us,
                                                 std::string& error) {
  snd_pcm_uframes_t period = kDevicePeriod, buffer = kCaptureBuffer;
  snd_pcm_t* pcm = open_pcm(device, SND_PCM_STREAM_CAPTURE, period, buffer, error);
  if (pcm == nullptr) return nullptr;
  if (int err = snd_pcm_start(pcm); err < 0) {
    error = alsa_error(device, "cannot start capturing", err);
    snd_pcm_close(pcm);
    return nullptr;
  }
  std::unique_ptr<AudioCapture> capture(new AudioCapture(pcm, now_us));
  capture->period_us_ = to_us(period);
  capture->buffer_us_ = to_us(buffer);
  return capture;
}

AudioCapture::AudioCapture(snd_pcm_t* pcm, std::int64_t now_us)
    : pcm_(pcm), pacer_(kOpusRate, kCaptureBurst), ring_(kCaptureRing), chunk_(kCaptureRing) {
  pacer_.start(now_us);
}

AudioCapture::~AudioCapture() { snd_pcm_close(pcm_); }

bool AudioCapture::read(std::span<std::int16_t, kOpusFrame> frame, std::int64_t now_us) {
  // No more than the ring has room for: what it cannot take yet stays in the device, the
  // newest with the rest (the device's overrun bounds it).
  std::size_t want = std::min(pacer_.allowance(now_us), ring_.space());
  while (want > 0) {
    snd_pcm_sframes_t n = snd_pcm_readi(pcm_, chunk_.data(), want);
    if (n == -EAGAIN || n == 0) break;
    if (n < 0) {
      // An overrun (we were too slow: what the device held is lost) or a suspend: start again.
      if (!recover(pcm_, int(n))) break;
      ++recovered_;
      snd_pcm_start(pcm_);
      break;
    }
    ring_.push(std::span<const std::int16_t>(chunk_.data(), std::size_t(n)));
    pacer_.took(std::size_t(n));
    want -= std::size_t(n);
  }
  return ring_.pop(frame);
}

// ---- AudioPlayback ----

std::unique_ptr<AudioPlayback> AudioPlayback::open(const std::string& device, std::string& error) {
  snd_pcm_uframes_t period = kDevicePeriod, buffer = kPlaybackBuffer;
  snd_pcm_t* pcm = open_pcm(device, SND_PCM_STREAM_PLAYBACK, period, buffer, error);
  if (pcm == nullptr) return nullptr;
  snd_pcm_uframes_t start = std::min<snd_pcm_uframes_t>(kPlaybackStart, buffer);
  snd_pcm_sw_params_t* sw = nullptr;
  snd_pcm_sw_params_alloca(&sw);
  int err = snd_pcm_sw_params_current(pcm, sw);
  if (err >= 0) err = snd_pcm_sw_params_set_start_threshold(pcm, sw, start);
  if (err >= 0) err = snd_pcm_sw_params(pcm, sw);
  if (err < 0) {
    error = alsa_error(device, "software parameters", err);
    snd_pcm_close(pcm);
    return nullptr;
  }
  std::unique_ptr<AudioPlayback> playback(new AudioPlayback(pcm));
  playback->buffer_us_ = to_us(buffer);
  playback->start_us_ = to_us(start);
  return playback;
}

AudioPlayback::~AudioPlayback() { snd_pcm_close(pcm_); }

void AudioPlayback::write(std::span<const std::int16_t> samples) {
  for (int attempt = 0; attempt < 2 && !samples.empty(); ++attempt) {
    snd_pcm_sframes_t n = snd_pcm_writei(pcm_, samples.data(), samples.size());
    if (n >= 0) {
      samples = samples.subspan(std::size_t(n));
      break;
    }
    if (n == -EAGAIN) break;  // the buffer is full: the device is behind, this frame goes
    // An underrun (the device ran dry) or a suspend: prepare it again and write once more; it
    // starts when the buffer holds kPlaybackStart again.
    if (n == -EPIPE) ++underruns_;
    if (!recover(pcm_, int(n))) break;
  }
  dropped_ += samples.size();
}

}  // namespace kabar::client::media
