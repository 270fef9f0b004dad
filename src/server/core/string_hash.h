// A hash for maps and sets keyed by std::string that are looked up by std::string_view too
// (with std::equal_to<>): no string is built per lookup on the message path.
#pragma once

#include <cstddef>
#include <functional>
#include <string_view>

namespace kabar::server {

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

}  // namespace kabar::server
