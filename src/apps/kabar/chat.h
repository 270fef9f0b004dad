// `kabar chat`: the full-screen terminal chat (ncurses).
#pragma once

#include "common.h"

namespace kabar::cli {

// `accept_dir`: where accepted files go (each offer asks first: /accept or /decline).
awaitable<int> chat_main(asio::io_context& io, client::Options options, std::string accept_dir);

}  // namespace kabar::cli
