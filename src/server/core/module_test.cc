// The registry: what the router and disco read of the modules' registrations.
#include "server/core/module.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "server/core/session_ext.h"
#include "server/server.h"

namespace kabar::server {
namespace {

class RegistryTest : public ::testing::Test {
 protected:
  RegistryTest() : server_(io_, Config{}), ctx_(server_, reg_) {}
  asio::io_context io_;
  Server server_;
  ModuleRegistry reg_;  // empty: only what the test registers
  ModuleContext ctx_;
};

IqHandler noop() {
  return [](SessionPtr, xml::Element) -> awaitable<void> { co_return; };
}

TEST_F(RegistryTest, IqHandlersAreChosenByNamespaceTypeAndTarget) {
  ctx_.iq("urn:a", noop(), kIqGet, kToServer);
  ctx_.iq("urn:a", noop(), kIqSet, kToAccount);
  ctx_.iq("urn:b", noop());
  const IqHandler* get_server = reg_.iq_handler("urn:a", "get", kToServer);
  const IqHandler* set_account = reg_.iq_handler("urn:a", "set", kToAccount);
  ASSERT_NE(get_server, nullptr);
  ASSERT_NE(set_account, nullptr);
  EXPECT_NE(get_server, set_account);
  EXPECT_EQ(reg_.iq_handler("urn:a", "set", kToServer), nullptr);
  EXPECT_EQ(reg_.iq_handler("urn:a", "get", kToAccount), nullptr);
  EXPECT_EQ(reg_.iq_handler("urn:a", "result", kToServer), nullptr);
  EXPECT_NE(reg_.iq_handler("urn:b", "set", kToAccount), nullptr);
  EXPECT_EQ(reg_.iq_handler("urn:c", "get", kToServer), nullptr);
}

TEST_F(RegistryTest, HooksRunInOrderThenRegistrationOrder) {
  std::vector<int> ran;
  auto hook = [&ran](int id, HookResult r) -> StanzaHook {
    return [&ran, id, r](SessionPtr, xml::Element&) -> awaitable<HookResult> {
      ran.push_back(id);
      co_return r;
    };
  };
  ctx_.hook(Hook::kMessageIn, hook(1, HookResult::kContinue), 10);
  ctx_.hook(Hook::kMessageIn, hook(2, HookResult::kContinue), -5);
  ctx_.hook(Hook::kMessageIn, hook(3, HookResult::kStop), 10);
  ctx_.hook(Hook::kMessageIn, hook(4, HookResult::kContinue), 20);
  ctx_.hook(Hook::kPresenceIn, hook(5, HookResult::kContinue));
  ASSERT_EQ(reg_.hooks(Hook::kMessageIn).size(), 4u);
  bool stopped = false;
  xml::Element m("message", "jabber:client");
  asio::co_spawn(
      io_,
      [&]() -> awaitable<void> {
        for (const auto& h : reg_.hooks(Hook::kMessageIn)) {
          if (co_await h(nullptr, m) == HookResult::kStop) {
            stopped = true;
            break;
          }
        }
      },
      asio::detached);
  io_.run();
  // -5 first; the two at 10 in registration order; 3 stops, so 4 (at 20) never runs.
  EXPECT_EQ(ran, (std::vector<int>{2, 1, 3}));
  EXPECT_TRUE(stopped);
  EXPECT_EQ(reg_.hooks(Hook::kPresenceIn).size(), 1u);
  EXPECT_TRUE(reg_.hooks(Hook::kPresenceOut).empty());
}

TEST_F(RegistryTest, DiscoFeaturesByTargetOnceEach) {
  ctx_.disco_feature("urn:s", kToServer);
  ctx_.disco_feature("urn:both", kToServerOrAccount);
  ctx_.disco_feature("urn:s", kToServer);
  ctx_.disco_identity({"server", "im", "x"}, kToServer);
  EXPECT_EQ(reg_.disco_features(kToServer), (std::vector<std::string>{"urn:s", "urn:both"}));
  EXPECT_EQ(reg_.disco_features(kToAccount), std::vector<std::string>{"urn:both"});
  EXPECT_EQ(reg_.disco_identities(kToServer).size(), 1u);
  EXPECT_TRUE(reg_.disco_identities(kToAccount).empty());
}

TEST_F(RegistryTest, ServicesAreFoundByType) {
  struct Proxy {
    int port = 7777;
  };
  struct Other {};
  EXPECT_EQ(reg_.service<Proxy>(), nullptr);
  Proxy p;
  ctx_.provide(p);
  ASSERT_EQ(reg_.service<Proxy>(), &p);
  EXPECT_EQ(reg_.service<Proxy>()->port, 7777);
  EXPECT_EQ(reg_.service<Other>(), nullptr);
}

TEST(SessionExt, OneValuePerTypeMadeOnFirstUse) {
  struct A {
    int n = 0;
  };
  struct B {
    std::string s;
  };
  SessionExt ext;
  EXPECT_EQ(ext.find<A>(), nullptr);
  ext.get<A>().n = 5;
  ext.get<B>().s = "x";
  EXPECT_EQ(ext.get<A>().n, 5);
  ASSERT_NE(ext.find<B>(), nullptr);
  EXPECT_EQ(ext.find<B>()->s, "x");
  EXPECT_EQ(&ext.get<A>(), ext.find<A>());
}

}  // namespace
}  // namespace kabar::server
