#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <stdexcept>
#include <thread>
#include <utility>  // before Asio: Boost 1.74 awaitable.hpp uses std::exchange

#include "server/core/cpu_pool.h"
#include "xmpp/scram.h"

namespace kabar::server {
namespace {

namespace asio = boost::asio;

TEST(CpuPool, RunsOffTheCallersThreadAndResumesOnIt) {
  asio::io_context io;
  CpuPool pool(1);
  const auto caller = std::this_thread::get_id();
  std::thread::id worker;
  std::thread::id resumed;
  bool ok = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto creds = xmpp::make_credentials(xmpp::ScramHash::kSha256, "secret", 4096);
        auto verify = [&worker, creds] {
          worker = std::this_thread::get_id();
          return xmpp::verify_password(xmpp::ScramHash::kSha256, creds, "secret");
        };
        ok = co_await pool.run(std::move(verify));
        resumed = std::this_thread::get_id();
      },
      asio::detached);
  io.run();
  EXPECT_TRUE(ok);
  EXPECT_NE(worker, caller);
  EXPECT_EQ(resumed, caller);
}

TEST(CpuPool, RethrowsInTheCaller) {
  asio::io_context io;
  CpuPool pool(1);
  std::string what;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto fail = []() -> int { throw std::runtime_error("boom"); };
        try {
          co_await pool.run(std::move(fail));
        } catch (const std::runtime_error& e) {
          what = e.what();
        }
      },
      asio::detached);
  io.run();
  EXPECT_EQ(what, "boom");
}

}  // namespace
}  // namespace kabar::server
