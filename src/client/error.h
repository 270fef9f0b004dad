// The client library's error values, built in one place.
#pragma once

#include <string>
#include <utility>

#include "kabar/client.h"

namespace kabar::client {

inline Error err(Errc c, std::string msg) { return Error{c, std::move(msg)}; }

}  // namespace kabar::client
