// Threads for CPU-heavy work (PBKDF2 of SASL PLAIN): never a shard's loop, which would stall
// every connection on it, nor the store's thread, which serves roster and offline reads.
#pragma once

#include <boost/asio.hpp>
#include <exception>
#include <memory>
#include <type_traits>
#include <utility>  // before Asio: Boost 1.74 awaitable.hpp uses std::exchange

namespace kabar::server {

class CpuPool {
 public:
  explicit CpuPool(std::size_t threads) : pool_(threads) {}
  ~CpuPool() { pool_.join(); }

  // Runs `f()` on the pool and resumes the caller on its own executor with the result; an
  // exception thrown by `f` is rethrown in the caller. As with Server::db(), pass a named
  // closure, never a lambda written inside the co_await expression (GCC 12 miscompiles a
  // closure temporary passed to a coroutine there).
  template <typename F>
  auto run(F f) -> boost::asio::awaitable<decltype(f())>;

 private:
  boost::asio::thread_pool pool_;
};

template <typename F>
auto CpuPool::run(F f) -> boost::asio::awaitable<decltype(f())> {
  namespace asio = boost::asio;
  using R = decltype(f());
  static_assert(!std::is_void_v<R>, "return a value");
  // The initiation holds only a pointer (Server::db(): GCC 12 and Boost 1.74 relocate the
  // initiation object bytewise); the callable lives on the heap, owned by the pool-side lambda.
  auto* fn = new F(std::move(f));
  co_return co_await asio::async_initiate<decltype(asio::use_awaitable),
                                          void(std::exception_ptr, R)>(
      [this, fn](auto handler) mutable {
        std::unique_ptr<F> owned(fn);
        auto ex = asio::get_associated_executor(handler);
        asio::post(pool_, [owned = std::move(owned), handler = std::move(handler), ex]() mutable {
          std::exception_ptr ep;
          R result{};
          try {
            result = (*owned)();
          } catch (...) {
            ep = std::current_exception();
          }
          asio::post(ex, [handler = std::move(handler), ep, result = std::move(result)]() mutable {
            std::move(handler)(ep, std::move(result));
          });
        });
      },
      asio::use_awaitable);
}

}  // namespace kabar::server
