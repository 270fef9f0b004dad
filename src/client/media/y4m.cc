#include "client/media/y4m.h"

#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace kabar::client::media {

bool Y4mReader::open(const std::string& path, std::string& error) {
  in_.open(path, std::ios::binary);
  if (!in_) {
    error = path + ": cannot open";
    return false;
  }
  std::string header;
  if (!std::getline(in_, header) || header.rfind("YUV4MPEG2 ", 0) != 0) {
    error = path + ": not a YUV4MPEG2 file";
    return false;
  }
  std::istringstream tokens(header.substr(10));
  std::string t;
  while (tokens >> t) {
    switch (t[0]) {
      case 'W':
        width_ = std::atoi(t.c_str() + 1);
        break;
      case 'H':
        height_ = std::atoi(t.c_str() + 1);
        break;
      case 'F':
        if (std::sscanf(t.c_str() + 1, "%d:%d", &fps_num_, &fps_den_) != 2 || fps_num_ <= 0 ||
            fps_den_ <= 0) {
          error = path + ": bad frame rate " + t;
          return false;
        }
        break;
      case 'C':
        if (t.rfind("C420", 0) != 0) {
          error = path + ": only 4:2:0 Y4M is supported, not " + t.substr(1);
          return false;
        }
        break;
      default:
        break;  // interlacing, aspect ratio, comments: irrelevant here
    }
  }
  if (width_ <= 0 || height_ <= 0 || width_ > 4096 || height_ > 4096) {
    error = path + ": bad frame size";
    return false;
  }
  return true;
}

bool Y4mReader::read(VideoFrame& frame) {
  std::string line;
  if (!std::getline(in_, line) || line.rfind("FRAME", 0) != 0) return false;
  frame.width = width_;
  frame.height = height_;
  frame.data.resize(VideoFrame::size(width_, height_));
  in_.read(reinterpret_cast<char*>(frame.data.data()), std::streamsize(frame.data.size()));
  return std::size_t(in_.gcount()) == frame.data.size();
}

bool Y4mWriter::open(const std::string& path, std::string& error) {
  out_.open(path, std::ios::binary | std::ios::trunc);
  if (!out_) {
    error = path + ": cannot create";
    return false;
  }
  return true;
}

void Y4mWriter::write(int width, int height, const std::uint8_t* const planes[3],
                      const int strides[3]) {
  if (!out_.is_open()) return;
  if (frames_ == 0) {
    width_ = width;
    height_ = height;
    // The sender's frame rate is not signalled: 30 is what players assume for a call.
    out_ << "YUV4MPEG2 W" << width << " H" << height << " F30:1 Ip A1:1 C420jpeg\n";
  } else if (width != width_ || height != height_) {
    return;  // a Y4M file has one size; a peer changing resolution mid-call is not recorded
  }
  out_ << "FRAME\n";
  for (int p = 0; p < 3; ++p) {
    int w = p == 0 ? width : (width + 1) / 2;
    int h = p == 0 ? height : (height + 1) / 2;
    for (int y = 0; y < h; ++y)
      out_.write(reinterpret_cast<const char*>(planes[p] + std::ptrdiff_t(y) * strides[p]), w);
  }
  out_.flush();
  ++frames_;
}

std::string make_y4m(int width, int height, int fps, const std::vector<VideoFrame>& frames) {
  std::string out = "YUV4MPEG2 W" + std::to_string(width) + " H" + std::to_string(height) + " F" +
                    std::to_string(fps) + ":1 Ip A1:1 C420jpeg\n";
  for (const auto& f : frames) {
    out += "FRAME\n";
    out.append(reinterpret_cast<const char*>(f.data.data()), f.data.size());
  }
  return out;
}

}  // namespace kabar::client::media
