#include "chat.h"
namespace kabar::cli {
awaitable<int> chat_main(asio::io_context& io, client::Options options) { co_return 1; }
}  // namespace kabar::cli
