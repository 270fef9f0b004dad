#include "client/media/wav.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>

namespace kabar::client::media {
namespace {

std::uint32_t le32(const std::uint8_t* p) {
  return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 |
         std::uint32_t(p[3]) << 24;
}
std::uint16_t le16(const std::uint8_t* p) { return std::uint16_t(p[0] | p[1] << 8); }

void put32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = std::uint8_t(v >> (8 * i));
}
void put16(std::uint8_t* p, std::uint16_t v) {
  p[0] = std::uint8_t(v);
  p[1] = std::uint8_t(v >> 8);
}

constexpr std::size_t kHeaderSize = 44;

void fill_header(std::uint8_t* h, std::uint32_t rate, int channels, std::uint64_t data_bytes) {
  // A WAV cannot say more than 4 GiB: the sizes saturate (players read to the end of the file).
  auto data = std::uint32_t(std::min<std::uint64_t>(data_bytes, 0xFFFFFFFFu - 36));
  std::memcpy(h, "RIFF", 4);
  put32(h + 4, 36 + data);
  std::memcpy(h + 8, "WAVEfmt ", 8);
  put32(h + 16, 16);
  put16(h + 20, 1);  // PCM
  put16(h + 22, std::uint16_t(channels));
  put32(h + 24, rate);
  put32(h + 28, rate * 2 * std::uint32_t(channels));
  put16(h + 32, std::uint16_t(2 * channels));
  put16(h + 34, 16);
  std::memcpy(h + 36, "data", 4);
  put32(h + 40, data);
}

}  // namespace

bool parse_wav(std::span<const std::uint8_t> b, std::uint32_t rate, WavAudio& out,
               std::string& error) {
  if (b.size() < 12 || std::memcmp(b.data(), "RIFF", 4) != 0 ||
      std::memcmp(b.data() + 8, "WAVE", 4) != 0) {
    error = "not a RIFF/WAVE file";
    return false;
  }
  std::uint16_t format = 0, channels = 0, bits = 0;
  std::uint32_t file_rate = 0;
  const std::uint8_t* data = nullptr;
  std::size_t data_size = 0;
  std::size_t pos = 12;
  while (pos + 8 <= b.size()) {
    const std::uint8_t* chunk = b.data() + pos;
    std::size_t size = le32(chunk + 4);
    std::size_t avail = b.size() - pos - 8;
    if (std::memcmp(chunk, "fmt ", 4) == 0) {
      if (size < 16 || size > avail) {
        error = "bad fmt chunk";
        return false;
      }
      format = le16(chunk + 8);
      channels = le16(chunk + 10);
      file_rate = le32(chunk + 12);
      bits = le16(chunk + 22);
      // WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the format code.
      if (format == 0xFFFE && size >= 40) format = le16(chunk + 32);
    } else if (std::memcmp(chunk, "data", 4) == 0) {
      data = chunk + 8;
      data_size = std::min(size, avail);  // a writer killed mid-call leaves the size unset
      break;
    }
    pos += 8 + size + (size & 1);
  }
  if (format != 1 || bits != 16) {
    error = "only 16-bit PCM WAV is supported";
    return false;
  }
  if (channels < 1 || channels > 2) {
    error = "only mono or stereo WAV is supported";
    return false;
  }
  if (file_rate < 8000 || file_rate > 192000) {
    error = "unsupported sample rate " + std::to_string(file_rate);
    return false;
  }
  if (data == nullptr) {
    error = "no data chunk";
    return false;
  }
  std::size_t frames = data_size / (2u * channels);
  std::vector<std::int16_t> mono(frames);
  for (std::size_t i = 0; i < frames; ++i) {
    const std::uint8_t* f = data + i * 2 * channels;
    int sum = std::int16_t(le16(f));
    if (channels == 2) sum = (sum + std::int16_t(le16(f + 2))) / 2;
    mono[i] = std::int16_t(sum);
  }
  out.sample_rate = rate;
  if (file_rate == rate || frames == 0) {
    out.samples = std::move(mono);
    return true;
  }
  std::size_t n = std::size_t(double(frames) * rate / file_rate);
  out.samples.resize(n);
  double step = double(file_rate) / rate;
  for (std::size_t i = 0; i < n; ++i) {
    double x = i * step;
    auto j = std::size_t(x);
    double frac = x - double(j);
    double a = mono[std::min(j, frames - 1)];
    double c = mono[std::min(j + 1, frames - 1)];
    out.samples[i] = std::int16_t(a + (c - a) * frac);
  }
  return true;
}

bool read_wav(const std::string& path, std::uint32_t rate, WavAudio& out, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = path + ": cannot open";
    return false;
  }
  std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
  if (!parse_wav(bytes, rate, out, error)) {
    error = path + ": " + error;
    return false;
  }
  return true;
}

bool WavWriter::open(const std::string& path, std::uint32_t rate, std::string& error) {
  close();
  file_ = std::fopen(path.c_str(), "wb");
  if (file_ == nullptr) {
    error = path + ": cannot create";
    return false;
  }
  std::uint8_t header[kHeaderSize];
  fill_header(header, rate, 1, 0);
  std::fwrite(header, 1, sizeof header, file_);
  samples_ = 0;
  rate_ = rate;
  return true;
}

void WavWriter::write(std::span<const std::int16_t> samples) {
  if (file_ == nullptr) return;
  std::uint8_t buf[2 * 960];
  while (!samples.empty()) {
    std::size_t n = std::min<std::size_t>(samples.size(), sizeof buf / 2);
    for (std::size_t i = 0; i < n; ++i) put16(buf + 2 * i, std::uint16_t(samples[i]));
    std::fwrite(buf, 2, n, file_);
    samples_ += n;
    samples = samples.subspan(n);
  }
}

void WavWriter::close() {
  if (file_ == nullptr) return;
  std::uint8_t header[kHeaderSize];
  fill_header(header, rate_, 1, samples_ * 2);
  std::fseek(file_, 0, SEEK_SET);
  std::fwrite(header, 1, sizeof header, file_);
  std::fclose(file_);
  file_ = nullptr;
}

std::vector<std::uint8_t> make_wav(std::uint32_t rate, int channels,
                                   std::span<const std::int16_t> interleaved) {
  std::vector<std::uint8_t> out(kHeaderSize + interleaved.size() * 2);
  fill_header(out.data(), rate, channels, interleaved.size() * 2);
  for (std::size_t i = 0; i < interleaved.size(); ++i)
    put16(out.data() + kHeaderSize + 2 * i, std::uint16_t(interleaved[i]));
  return out;
}

}  // namespace kabar::client::media
