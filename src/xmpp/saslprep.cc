#include <stringprep.h>

#include <cstdlib>

#include "xmpp/scram.h"

namespace kabar::xmpp {

std::optional<std::string> saslprep(std::string_view password) {
  std::string in(password);
  if (in.find('\0') != std::string::npos) return std::nullopt;
  char* prepared = nullptr;
  int rc = stringprep_profile(in.c_str(), &prepared, "SASLprep", STRINGPREP_NO_UNASSIGNED);
  if (rc != STRINGPREP_OK || prepared == nullptr) {
    std::free(prepared);
    return std::nullopt;
  }
  std::string out(prepared);
  std::free(prepared);
  if (out.empty()) return std::nullopt;
  return out;
}

}  // namespace kabar::xmpp
