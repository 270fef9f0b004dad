// WAV files for calls driven by scripts and tests: PCM16 in (any rate, mono or stereo, brought to
// 48 kHz mono), PCM16 48 kHz mono out, written as it is played.
#pragma once

#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

namespace kabar::client::media {

struct WavAudio {
  std::uint32_t sample_rate = 0;
  std::vector<std::int16_t> samples;  // mono
};

// Reads a PCM16 WAV (RIFF "WAVE", format 1 or WAVE_FORMAT_EXTENSIBLE with PCM), downmixes to
// mono and resamples to `rate` (linear interpolation: enough for scripted test media). Returns
// false with `error` set for anything else.
bool read_wav(const std::string& path, std::uint32_t rate, WavAudio& out, std::string& error);

// Same, from bytes already in memory (the tests, and read_wav itself).
bool parse_wav(std::span<const std::uint8_t> bytes, std::uint32_t rate, WavAudio& out,
               std::string& error);

// A mono PCM16 WAV written as samples come; the RIFF and data sizes are fixed up by close().
class WavWriter {
 public:
  WavWriter() = default;
  WavWriter(const WavWriter&) = delete;
  WavWriter& operator=(const WavWriter&) = delete;
  ~WavWriter() { close(); }

  bool open(const std::string& path, std::uint32_t rate, std::string& error);
  bool is_open() const { return file_ != nullptr; }
  void write(std::span<const std::int16_t> samples);
  void close();
  std::uint64_t samples_written() const { return samples_; }

 private:
  std::FILE* file_ = nullptr;
  std::uint64_t samples_ = 0;
  std::uint32_t rate_ = 0;
};

// A whole WAV (header and data) for tests and tools.
std::vector<std::uint8_t> make_wav(std::uint32_t rate, int channels,
                                   std::span<const std::int16_t> interleaved);

}  // namespace kabar::client::media
