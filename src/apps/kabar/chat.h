// `kabar chat`: the full-screen terminal chat (ncurses).
#pragma once

#include "common.h"

namespace kabar::cli {

// `accept_dir`: where accepted files go (each offer asks first: /accept or /decline). `call`:
// the media of calls (/call, /answer, /reject, /hangup).
awaitable<int> chat_main(asio::io_context& io, client::Options options, std::string accept_dir,
                         CallFlags call);

}  // namespace kabar::cli
