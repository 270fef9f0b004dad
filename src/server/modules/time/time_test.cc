#include "server/modules/time/time.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "server/modules/testing/module_test.h"
#include "server/server.h"
#include "xml/serializer.h"
#include "xmpp/namespaces.h"

namespace kabar::server {
namespace {

xml::Element time_get(std::string_view to) {
  xml::Element iq("iq", xmpp::ns::kClient);
  iq.set_attr("type", "get");
  iq.set_attr("id", "t1");
  iq.set_attr("from", "alice@example.com/phone");
  if (!to.empty()) iq.set_attr("to", to);
  iq.add_child("time", kTimeNs);
  return iq;
}

TEST(EntityTime, TimeZoneDesignatorIsXep0082Tzd) {
  EXPECT_EQ(time_zone_designator(0), "Z");
  EXPECT_EQ(time_zone_designator(3600), "+01:00");
  EXPECT_EQ(time_zone_designator(-6 * 3600), "-06:00");
  EXPECT_EQ(time_zone_designator(5 * 3600 + 30 * 60), "+05:30");
  EXPECT_EQ(time_zone_designator(-(9 * 3600 + 30 * 60)), "-09:30");
}

TEST(EntityTime, ResultCarriesUtcAndOffset) {
  // XEP-0202 §3's example instant: 2006-12-19T17:58:35Z, six hours west of UTC.
  const std::int64_t now_ms = 1166551115000;
  xml::Element reply = entity_time_result(time_get("example.com"), now_ms, -6 * 3600);
  EXPECT_EQ(reply.attr("type"), "result");
  EXPECT_EQ(reply.attr("id"), "t1");
  EXPECT_EQ(reply.attr("to"), "alice@example.com/phone");
  EXPECT_EQ(reply.attr("from"), "example.com");
  const xml::Element* t = reply.child("time", kTimeNs);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->child_text("tzo", kTimeNs), "-06:00");
  EXPECT_EQ(t->child_text("utc", kTimeNs), "2006-12-19T17:58:35.000Z");
}

TEST(EntityTime, RegistersAGetToTheServerAndItsDiscoFeature) {
  asio::io_context io;
  Config cfg;
  cfg.domain = "example.com";
  Server server(io, cfg);
  const ModuleRegistry& reg = server.modules();
  EXPECT_NE(reg.iq_handler(kTimeNs, "get", kToServer), nullptr);
  // Not a set (the router answers service-unavailable), not for an account's bare JID.
  EXPECT_EQ(reg.iq_handler(kTimeNs, "set", kToServer), nullptr);
  EXPECT_EQ(reg.iq_handler(kTimeNs, "get", kToAccount), nullptr);
  const auto server_features = reg.disco_features(kToServer);
  EXPECT_NE(std::find(server_features.begin(), server_features.end(), kTimeNs),
            server_features.end());
  const auto account_features = reg.disco_features(kToAccount);
  EXPECT_EQ(std::find(account_features.begin(), account_features.end(), kTimeNs),
            account_features.end());
}

class EntityTimeSession : public testing::ModuleTest {};

TEST_F(EntityTimeSession, TheServerAnswersWithItsClock) {
  auto& alice = connect("alice@example.com/phone");
  send(alice, "<iq type='get' id='t1' to='example.com'><time xmlns='urn:xmpp:time'/></iq>");
  auto got = alice.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].attr("type"), "result");
  const xml::Element* t = got[0].child("time", kTimeNs);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->child_text("utc", kTimeNs), "2006-12-19T17:58:35.000Z");
  EXPECT_FALSE(t->child_text("tzo", kTimeNs).empty());
}

TEST_F(EntityTimeSession, ASetIsNotServed) {
  auto& alice = connect("alice@example.com/phone");
  send(alice, "<iq type='set' id='t2'><time xmlns='urn:xmpp:time'/></iq>");
  auto got = alice.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].attr("type"), "error");
  EXPECT_NE(got[0].child("error")->child("service-unavailable"), nullptr);
}

}  // namespace
}  // namespace kabar::server
