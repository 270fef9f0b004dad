// SOCKS5 parsing for the XEP-0065 proxy: whole messages, every split, the refusals.
#include <gtest/gtest.h>

#include <string>

#include "xmpp/socks5.h"

namespace kabar::xmpp::socks5 {
namespace {

TEST(Socks5, GreetingNeedsAllMethodsAndFindsNoAuth) {
  const std::string g("\x05\x02\x02\x00", 4);
  for (std::size_t n = 0; n < g.size(); ++n) {
    Greeting out;
    std::size_t used = 99;
    EXPECT_EQ(parse_greeting(g.substr(0, n), out, used), Parse::kNeedMore) << n;
    EXPECT_EQ(used, 0u);
  }
  Greeting out;
  std::size_t used = 0;
  ASSERT_EQ(parse_greeting(g + "extra", out, used), Parse::kDone);
  EXPECT_TRUE(out.no_auth);
  EXPECT_EQ(used, 4u);
  ASSERT_EQ(parse_greeting(std::string("\x05\x01\x02", 3), out, used), Parse::kDone);
  EXPECT_FALSE(out.no_auth);
  EXPECT_EQ(parse_greeting("GET / HTTP/1.0", out, used), Parse::kBad);
  EXPECT_EQ(parse_greeting(std::string("\x05\x00", 2), out, used), Parse::kBad);
}

TEST(Socks5, ConnectRequestRoundTripsAtEverySplit) {
  const std::string host = "9e1fa6cd3d6bcf7c36e8c2b4d7b96c3d2f4a6b3e";
  const std::string req = encode_request(host, 0);
  ASSERT_EQ(req.size(), 5 + host.size() + 2);
  for (std::size_t n = 0; n < req.size(); ++n) {
    Request out;
    std::size_t used = 0;
    EXPECT_EQ(parse_request(req.substr(0, n), out, used), Parse::kNeedMore) << n;
  }
  Request out;
  std::size_t used = 0;
  ASSERT_EQ(parse_request(req, out, used), Parse::kDone);
  EXPECT_EQ(out.command, 1);
  EXPECT_EQ(out.address_type, 3);
  EXPECT_EQ(out.host, host);
  EXPECT_EQ(out.port, 0);
  EXPECT_EQ(used, req.size());
}

TEST(Socks5, OtherAddressTypesParseWithoutAHostAndJunkIsBad) {
  Request out;
  std::size_t used = 0;
  const std::string v4("\x05\x01\x00\x01\x7f\x00\x00\x01\x1f\x90", 10);
  ASSERT_EQ(parse_request(v4, out, used), Parse::kDone);
  EXPECT_EQ(out.address_type, 1);
  EXPECT_TRUE(out.host.empty());
  EXPECT_EQ(out.port, 8080);
  EXPECT_EQ(parse_request(std::string("\x04\x01\x00\x03", 4), out, used), Parse::kBad);
  EXPECT_EQ(parse_request(std::string("\x05\x01\x01\x03", 4), out, used), Parse::kBad);
  EXPECT_EQ(parse_request(std::string("\x05\x01\x00\x09\x00", 5), out, used), Parse::kBad);
  EXPECT_EQ(parse_request(std::string("\x05\x01\x00\x03\x00\x00\x00", 7), out, used), Parse::kBad);
}

TEST(Socks5, RepliesEchoTheAddressOrCarryZeroes) {
  EXPECT_EQ(encode_reply(kSucceeded, "ab", 0), std::string("\x05\x00\x00\x03\x02"
                                                           "ab\x00\x00",
                                                           9));
  EXPECT_EQ(encode_reply(kNotAllowed, {}, 0),
            std::string("\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00", 10));
}

TEST(Socks5, ClientSideParsesMethodReplyAndConnectReply) {
  bool no_auth = false;
  std::size_t used = 0;
  EXPECT_EQ(parse_method_reply(std::string_view("\x05", 1), no_auth, used), Parse::kNeedMore);
  EXPECT_EQ(parse_method_reply(std::string_view("\x05\x00", 2), no_auth, used), Parse::kDone);
  EXPECT_TRUE(no_auth);
  EXPECT_EQ(parse_method_reply(std::string_view("\x05\xff", 2), no_auth, used), Parse::kDone);
  EXPECT_FALSE(no_auth);
  EXPECT_EQ(parse_method_reply(std::string_view("\x04\x00", 2), no_auth, used), Parse::kBad);
  const std::string ok = encode_reply(kSucceeded, "abc", 0);
  for (std::size_t n = 0; n < ok.size(); ++n) {
    Request r;
    EXPECT_EQ(parse_reply(ok.substr(0, n), r, used), Parse::kNeedMore) << n;
  }
  Request r;
  EXPECT_EQ(parse_reply(ok, r, used), Parse::kDone);
  EXPECT_EQ(r.command, kSucceeded);
  EXPECT_EQ(r.host, "abc");
  EXPECT_EQ(used, ok.size());
  EXPECT_EQ(parse_reply(encode_reply(kNotAllowed, {}, 0), r, used), Parse::kDone);
  EXPECT_EQ(r.command, kNotAllowed);
}

}  // namespace
}  // namespace kabar::xmpp::socks5
