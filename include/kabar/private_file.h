// Writing a file only its owner may read (mode 0600 from its creation, never readable by others
// even for a moment), replaced whole: written to PATH.tmp, then renamed over PATH.
#pragma once

#include <string>
#include <string_view>

namespace kabar::client {

// False when it could not be written (nothing is left behind then).
bool write_private_file(const std::string& path, std::string_view content);

}  // namespace kabar::client
