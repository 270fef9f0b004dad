// `kabar chat`: the full-screen terminal chat (ncurses).
#pragma once

#include "common.h"

namespace kabar::cli {

awaitable<int> chat_main(asio::io_context& io, client::Options options);

}  // namespace kabar::cli
