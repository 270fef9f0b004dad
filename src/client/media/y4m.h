// Y4M (YUV4MPEG2) files for video calls driven by scripts and tests: 4:2:0 only, read a frame at
// a time, written as frames are decoded.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace kabar::client::media {

// An I420 picture: the Y plane, then U and V at half resolution (rounded up), no padding.
struct VideoFrame {
  int width = 0;
  int height = 0;
  std::vector<std::uint8_t> data;
  static std::size_t size(int width, int height) {
    std::size_t chroma = std::size_t((width + 1) / 2) * std::size_t((height + 1) / 2);
    return std::size_t(width) * std::size_t(height) + 2 * chroma;
  }
};

class Y4mReader {
 public:
  bool open(const std::string& path, std::string& error);
  // The next frame; false at the end of the file (or a truncated frame).
  bool read(VideoFrame& frame);
  int width() const { return width_; }
  int height() const { return height_; }
  int fps_num() const { return fps_num_; }
  int fps_den() const { return fps_den_; }

 private:
  std::ifstream in_;
  int width_ = 0;
  int height_ = 0;
  int fps_num_ = 30;
  int fps_den_ = 1;
};

class Y4mWriter {
 public:
  bool open(const std::string& path, std::string& error);
  // The header is written with the first frame (its size is not known before).
  void write(int width, int height, const std::uint8_t* const planes[3], const int strides[3]);
  void close() { out_.close(); }
  std::uint64_t frames() const { return frames_; }

 private:
  std::ofstream out_;
  int width_ = 0;
  int height_ = 0;
  std::uint64_t frames_ = 0;
};

// A whole Y4M file (header and frames) for tests and tools.
std::string make_y4m(int width, int height, int fps, const std::vector<VideoFrame>& frames);

}  // namespace kabar::client::media
