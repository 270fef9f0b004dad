#include <gtest/gtest.h>

#include <string>

#include "xmpp/scram.h"

namespace kabar::xmpp {
namespace {

using namespace std::string_literals;

ScramCredentials creds_from_b64_salt(ScramHash h, const char* password, const char* salt_b64,
                                     int iterations) {
  auto salt = base64_decode(salt_b64);
  EXPECT_TRUE(salt.has_value());
  return derive_credentials(h, password, salt.value_or(""), iterations);
}

// RFC 5802 §5: the SCRAM-SHA-1 example exchange, byte for byte, both directions.
TEST(Scram, Rfc5802Sha1Example) {
  const ScramHash h = ScramHash::kSha1;
  ScramClient client(h, "user", "pencil", "fyko+d2lbbFgONRv9qkxdawL");
  ScramServer server(h);
  server.set_server_nonce_for_test("3rfcNHYJY1ZVvWVs7j");

  const std::string c1 = client.client_first();
  EXPECT_EQ(c1, "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL");
  SaslFailure f = SaslFailure::kNone;
  auto user = server.client_first(c1, f);
  ASSERT_TRUE(user.has_value());
  EXPECT_EQ(*user, "user");
  EXPECT_EQ(server.authzid(), "");

  const std::string s1 =
      server.server_first(creds_from_b64_salt(h, "pencil", "QSXCR+Q6sek8bf92", 4096));
  EXPECT_EQ(s1, "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096");

  auto c2 = client.client_final(s1);
  ASSERT_TRUE(c2.has_value());
  EXPECT_EQ(*c2,
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=");

  auto s2 = server.client_final(*c2, f);
  ASSERT_TRUE(s2.has_value());
  EXPECT_EQ(f, SaslFailure::kNone);
  EXPECT_EQ(*s2, "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
  EXPECT_TRUE(client.verify_server_final(*s2));
  EXPECT_FALSE(client.verify_server_final("v=rmF9pqV8S7suAoZWja4dJRkFsKQ"));
  EXPECT_FALSE(client.verify_server_final("v=AAAAAAAAAAAAAAAAAAAAAAAAAAA="));
  EXPECT_FALSE(client.verify_server_final("e=other-error"));
}

// RFC 7677 §3: the SCRAM-SHA-256 example exchange.
TEST(Scram, Rfc7677Sha256Example) {
  const ScramHash h = ScramHash::kSha256;
  ScramClient client(h, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
  ScramServer server(h);
  server.set_server_nonce_for_test("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");

  const std::string c1 = client.client_first();
  EXPECT_EQ(c1, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
  SaslFailure f = SaslFailure::kNone;
  ASSERT_EQ(server.client_first(c1, f), "user");

  const std::string s1 =
      server.server_first(creds_from_b64_salt(h, "pencil", "W22ZaJ0SNY7soEsUEjb6gQ==", 4096));
  EXPECT_EQ(s1,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,"
            "i=4096");

  auto c2 = client.client_final(s1);
  ASSERT_TRUE(c2.has_value());
  EXPECT_EQ(*c2,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
            "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");

  auto s2 = server.client_final(*c2, f);
  ASSERT_TRUE(s2.has_value());
  EXPECT_EQ(*s2, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
  EXPECT_TRUE(client.verify_server_final(*s2));
}

// Server side fed the RFC 5802 client messages directly, so a client bug cannot mask one.
TEST(Scram, ServerAcceptsRfcClientMessages) {
  const ScramHash h = ScramHash::kSha1;
  ScramServer server(h);
  server.set_server_nonce_for_test("3rfcNHYJY1ZVvWVs7j");
  SaslFailure f;
  ASSERT_TRUE(server.client_first("n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL", f));
  server.server_first(creds_from_b64_salt(h, "pencil", "QSXCR+Q6sek8bf92", 4096));
  EXPECT_EQ(
      server.client_final(
          "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", f),
      "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
}

TEST(Scram, WrongPasswordIsNotAuthorized) {
  for (ScramHash h : {ScramHash::kSha1, ScramHash::kSha256}) {
    ScramClient client(h, "juliet", "wrong");
    ScramServer server(h);
    SaslFailure f;
    ASSERT_TRUE(server.client_first(client.client_first(), f));
    auto c2 = client.client_final(server.server_first(make_credentials(h, "right")));
    ASSERT_TRUE(c2.has_value());
    EXPECT_FALSE(server.client_final(*c2, f).has_value());
    EXPECT_EQ(f, SaslFailure::kNotAuthorized);
  }
}

TEST(Scram, RightPasswordWithRandomNonces) {
  for (ScramHash h : {ScramHash::kSha1, ScramHash::kSha256}) {
    ScramClient client(h, "juliet", "r0m30");
    ScramServer server(h);
    SaslFailure f;
    ASSERT_TRUE(server.client_first(client.client_first(), f));
    auto c2 = client.client_final(server.server_first(make_credentials(h, "r0m30")));
    ASSERT_TRUE(c2.has_value());
    auto s2 = server.client_final(*c2, f);
    ASSERT_TRUE(s2.has_value());
    EXPECT_TRUE(client.verify_server_final(*s2));
  }
}

TEST(Scram, UnknownUserFailsAtTheEndWithStableFakeSalt) {
  const ScramHash h = ScramHash::kSha256;
  auto run_first = [&](const std::string& user) {
    ScramServer server(h);
    SaslFailure f;
    EXPECT_TRUE(server.client_first("n,,n=" + user + ",r=abc", f));
    std::string s1 = server.server_first(std::nullopt);
    return s1.substr(s1.find(",s="));  // salt and iterations, without the random nonce
  };
  EXPECT_EQ(run_first("ghost"), run_first("ghost"));
  EXPECT_NE(run_first("ghost"), run_first("phantom"));
  EXPECT_NE(run_first("ghost").find(",i=4096"), std::string::npos);

  ScramClient client(h, "ghost", "anything", "abc");
  ScramServer server(h);
  SaslFailure f;
  ASSERT_TRUE(server.client_first(client.client_first(), f));
  auto c2 = client.client_final(server.server_first(std::nullopt));
  ASSERT_TRUE(c2.has_value());  // indistinguishable from a real account so far
  EXPECT_FALSE(server.client_final(*c2, f).has_value());
  EXPECT_EQ(f, SaslFailure::kNotAuthorized);
}

TEST(Scram, Gs2HeaderAndAuthzid) {
  const ScramHash h = ScramHash::kSha1;
  {
    ScramServer s(h);
    SaslFailure f;
    EXPECT_EQ(s.client_first("y,,n=user,r=abc", f), "user");
  }
  {
    ScramServer s(h);
    SaslFailure f;
    EXPECT_EQ(s.client_first("n,a=admin=40example.com,n=user,r=abc", f), std::nullopt);
    EXPECT_EQ(f, SaslFailure::kMalformedRequest);  // '=' followed by something else than 2C/3D
  }
  {
    ScramServer s(h);
    SaslFailure f;
    EXPECT_EQ(s.client_first("n,a=ro=2Cme=3Do@example.com,n=us=3Der=2C1,r=abc", f), "us=er,1");
    EXPECT_EQ(s.authzid(), "ro,me=o@example.com");
  }
  {
    // The channel-binding data must be the exact gs2 header of the first message.
    ScramClient client(h, "user", "pencil", "abc");
    ScramServer server(h);
    SaslFailure f;
    ASSERT_TRUE(server.client_first("y,,n=user,r=abc", f));
    auto s1 = server.server_first(make_credentials(h, "pencil"));
    auto c2 = client.client_final(s1);  // computes c=biws ("n,,"): does not match "y,,"
    ASSERT_TRUE(c2.has_value());
    EXPECT_FALSE(server.client_final(*c2, f).has_value());
    EXPECT_EQ(f, SaslFailure::kMalformedRequest);
  }
}

TEST(Scram, MalformedClientFirst) {
  const char* kBad[] = {
      "",
      "n,,",
      "p=tls-unique,,n=user,r=abc",  // channel binding requested; we offer no -PLUS
      "x,,n=user,r=abc",             // unknown cbind flag
      "n,n=user,r=abc",              // gs2 header missing a comma
      "n,b=x,n=user,r=abc",          // authzid must be "a="
      "n,a=,n=user,r=abc",           // empty authzid
      "n,,m=ext,n=user,r=abc",       // unknown mandatory extension
      "n,,n=user",                   // missing nonce
      "n,,r=abc",                    // missing username
      "n,,r=abc,n=user",             // wrong order
      "n,,n=,r=abc",                 // empty username
      "n,,n=us=er,r=abc",            // bad saslname escape
      "n,,n=us=2,r=abc",             // truncated escape
      "n,,n=user,r=",                // empty nonce
      "n,,n=user,r=a\x01",           // unprintable nonce
      "n,,n=user,r=abc,",            // empty trailing attribute
      "n,,n=user,r=abc,m=x",         // 'm' only allowed first
      "n,,n=user,r=abc,1=x",         // attribute names are letters
      "n,,n=us\xFFr,r=abc",          // not UTF-8
  };
  for (const char* msg : kBad) {
    SCOPED_TRACE(msg);
    ScramServer s(ScramHash::kSha256);
    SaslFailure f = SaslFailure::kNone;
    EXPECT_FALSE(s.client_first(msg, f).has_value());
    EXPECT_EQ(f, SaslFailure::kMalformedRequest);
  }
  // An extension after the nonce is ignored.
  ScramServer s(ScramHash::kSha256);
  SaslFailure f;
  EXPECT_EQ(s.client_first("n,,n=user,r=abc,x=whatever", f), "user");
}

TEST(Scram, MalformedClientFinal) {
  const ScramHash h = ScramHash::kSha1;
  const std::string good =
      "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=";
  struct Case {
    std::string msg;
    SaslFailure expected;
  };
  const Case kCases[] = {
      {"", SaslFailure::kMalformedRequest},
      {"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j", SaslFailure::kMalformedRequest},
      // Nonce not the combined one.
      {"c=biws,r=fyko+d2lbbFgONRv9qkxdawL,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
       SaslFailure::kMalformedRequest},
      // Channel binding of "y,," instead of "n,,".
      {"c=eSws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
       SaslFailure::kMalformedRequest},
      // Bad base64 in the proof and in c=.
      {"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts",
       SaslFailure::kMalformedRequest},
      {"c=bi*s,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
       SaslFailure::kMalformedRequest},
      // Attributes out of order.
      {"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,c=biws,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
       SaslFailure::kMalformedRequest},
      // Proof of the wrong length, and a wrong proof.
      {"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=AAAA", SaslFailure::kNotAuthorized},
      {"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Tt=",
       SaslFailure::kMalformedRequest},  // non-zero padding bits: not canonical base64
      {"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Tg=",
       SaslFailure::kNotAuthorized},
  };
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.msg);
    ScramServer server(h);
    server.set_server_nonce_for_test("3rfcNHYJY1ZVvWVs7j");
    SaslFailure f;
    ASSERT_TRUE(server.client_first("n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL", f));
    server.server_first(creds_from_b64_salt(h, "pencil", "QSXCR+Q6sek8bf92", 4096));
    EXPECT_FALSE(server.client_final(c.msg, f).has_value());
    EXPECT_EQ(f, c.expected);
    // The exchange is over after a failure: even the right message is refused now.
    EXPECT_FALSE(server.client_final(good, f).has_value());
  }
}

TEST(Scram, ServerStepsOutOfOrder) {
  ScramServer server(ScramHash::kSha1);
  SaslFailure f;
  EXPECT_FALSE(server.client_final("c=biws,r=abc,p=AAAA", f).has_value());
  EXPECT_EQ(f, SaslFailure::kMalformedRequest);
  ScramServer twice(ScramHash::kSha1);
  ASSERT_TRUE(twice.client_first("n,,n=user,r=abc", f));
  EXPECT_FALSE(twice.client_first("n,,n=user,r=abc", f).has_value());
}

TEST(Scram, ClientRejectsBadServerFirst) {
  const char* kBad[] = {
      "",
      "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92",         // no i=
      "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4095",  // too few
      "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=-4096",
      "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=04096",
      "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=99999999999",
      "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf9,i=4096",   // bad base64
      "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=,i=4096",                  // empty salt
      "r=XXXX+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",  // not our nonce
      "r=fyko+d2lbbFgONRv9qkxdawL,s=QSXCR+Q6sek8bf92,i=4096",                    // no server part
      "m=ext,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
      "s=QSXCR+Q6sek8bf92,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,i=4096",
  };
  for (const char* msg : kBad) {
    SCOPED_TRACE(msg);
    ScramClient client(ScramHash::kSha1, "user", "pencil", "fyko+d2lbbFgONRv9qkxdawL");
    EXPECT_FALSE(client.client_final(msg).has_value());
    EXPECT_FALSE(client.verify_server_final("v=rmF9pqV8S7suAoZWja4dJRkFsKQ="));
  }
}

TEST(Scram, ClientEscapesUsernameAndMakesRandomNonce) {
  ScramClient a(ScramHash::kSha1, "a,b=c", "p");
  ScramClient b(ScramHash::kSha1, "a,b=c", "p");
  const std::string first = a.client_first();
  EXPECT_TRUE(first.starts_with("n,,n=a=2Cb=3Dc,r=")) << first;
  EXPECT_NE(first, b.client_first());
  ScramServer s(ScramHash::kSha1);
  SaslFailure f;
  EXPECT_EQ(s.client_first(first, f), "a,b=c");
}

TEST(Scram, DeriveAndVerifyPassword) {
  // RFC 5802 §5 values: SaltedPassword's keys for "pencil".
  const ScramCredentials c =
      creds_from_b64_salt(ScramHash::kSha1, "pencil", "QSXCR+Q6sek8bf92", 4096);
  EXPECT_EQ(c.iterations, 4096);
  EXPECT_EQ(c.stored_key.size(), 20u);
  EXPECT_EQ(c.server_key.size(), 20u);
  EXPECT_TRUE(verify_password(ScramHash::kSha1, c, "pencil"));
  EXPECT_FALSE(verify_password(ScramHash::kSha1, c, "pencil "));
  EXPECT_FALSE(verify_password(ScramHash::kSha1, c, ""));

  const ScramCredentials m = make_credentials(ScramHash::kSha256, "secret");
  EXPECT_EQ(m.salt.size(), 16u);
  EXPECT_EQ(m.iterations, 4096);
  EXPECT_EQ(m.stored_key.size(), 32u);
  EXPECT_TRUE(verify_password(ScramHash::kSha256, m, "secret"));
  EXPECT_FALSE(verify_password(ScramHash::kSha256, m, "Secret"));
  EXPECT_NE(make_credentials(ScramHash::kSha256, "secret").salt, m.salt);
  EXPECT_FALSE(verify_password(ScramHash::kSha256, ScramCredentials{}, "secret"));
}

TEST(Scram, Base64) {
  // RFC 4648 §10 test vectors.
  const std::pair<const char*, const char*> kVectors[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [raw, enc] : kVectors) {
    EXPECT_EQ(base64_encode(raw), enc);
    EXPECT_EQ(base64_decode(enc), raw);
  }
  EXPECT_EQ(base64_decode("AP8="), "\x00\xff"s);
  const char* kBad[] = {"Zg=",  "Zg",   "Zg===",    "Z===", "====", "Zm9v\n", " Zm9v",
                        "Zm-v", "Zm_v", "Zg==Zg==", "Zh==", "Zm9=", "Z=9v"};
  for (const char* b : kBad) {
    SCOPED_TRACE(b);
    EXPECT_FALSE(base64_decode(b).has_value());
  }
}

TEST(Scram, Names) {
  EXPECT_EQ(mechanism_name(ScramHash::kSha1), "SCRAM-SHA-1");
  EXPECT_EQ(mechanism_name(ScramHash::kSha256), "SCRAM-SHA-256");
  EXPECT_EQ(failure_name(SaslFailure::kNotAuthorized), "not-authorized");
  EXPECT_EQ(failure_name(SaslFailure::kMalformedRequest), "malformed-request");
  EXPECT_EQ(failure_name(SaslFailure::kInvalidAuthzid), "invalid-authzid");
  EXPECT_EQ(failure_name(SaslFailure::kTemporaryAuthFailure), "temporary-auth-failure");
  EXPECT_EQ(failure_name(SaslFailure::kAccountDisabled), "account-disabled");
}

TEST(Plain, Parse) {
  auto p = parse_plain("\0juliet\0r0m30"s);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->authzid, "");
  EXPECT_EQ(p->authcid, "juliet");
  EXPECT_EQ(p->password, "r0m30");
  auto z = parse_plain("admin@example.com\0juliet\0pass word"s);
  ASSERT_TRUE(z.has_value());
  EXPECT_EQ(z->authzid, "admin@example.com");
  EXPECT_EQ(z->password, "pass word");

  EXPECT_FALSE(parse_plain("").has_value());
  EXPECT_FALSE(parse_plain("juliet"s).has_value());
  EXPECT_FALSE(parse_plain("\0juliet"s).has_value());
  EXPECT_FALSE(parse_plain("\0\0pass"s).has_value());            // empty authcid
  EXPECT_FALSE(parse_plain("\0juliet\0"s).has_value());          // empty password
  EXPECT_FALSE(parse_plain("\0juliet\0pa\0ss"s).has_value());    // extra NUL
  EXPECT_FALSE(parse_plain("\0jul\xFFiet\0pass"s).has_value());  // not UTF-8
  EXPECT_FALSE(parse_plain("\0juliet\0"s + std::string(256, 'p')).has_value());
  EXPECT_TRUE(parse_plain("\0juliet\0"s + std::string(255, 'p')).has_value());
}

}  // namespace
}  // namespace kabar::xmpp

// ---------------------------------------------------------------------------------------------
// Channel binding (RFC 5802 §6): -PLUS exchanges and downgrade protection.

namespace kabar::xmpp {
namespace {

struct CbOutcome {
  bool first_ok = false;
  bool final_ok = false;
  bool server_verified = false;
};

CbOutcome run_exchange(ScramServer& server, ScramClient& client, ScramHash h) {
  CbOutcome out;
  SaslFailure failure = SaslFailure::kNone;
  auto user = server.client_first(client.client_first(), failure);
  if (!user) return out;
  out.first_ok = true;
  auto creds = derive_credentials(h, "pencil", "salt-of-sixteen!", 4096);
  auto final_msg = client.client_final(server.server_first(creds));
  if (!final_msg) return out;
  auto server_final = server.client_final(*final_msg, failure);
  if (!server_final) return out;
  out.final_ok = true;
  out.server_verified = client.verify_server_final(*server_final);
  return out;
}

TEST(ScramChannelBinding, PlusExchangeWithMatchingDataSucceeds) {
  for (ScramHash h : {ScramHash::kSha1, ScramHash::kSha256}) {
    ScramServer server(h);
    server.set_channel_binding(true, true, "tls-unique", std::string("\x01\x02\x00\x03", 4));
    ScramClient client(h, "user", "pencil");
    client.set_channel_binding("tls-unique", std::string("\x01\x02\x00\x03", 4));
    EXPECT_EQ(client.client_first().substr(0, 15), "p=tls-unique,,n");
    auto r = run_exchange(server, client, h);
    EXPECT_TRUE(r.final_ok);
    EXPECT_TRUE(r.server_verified);
  }
}

TEST(ScramChannelBinding, OtherConnectionsDataFails) {
  // A man in the middle relays the exchange over its own TLS connection: the data differ.
  ScramServer server(ScramHash::kSha256);
  server.set_channel_binding(true, true, "tls-unique", "server-side-finished");
  ScramClient client(ScramHash::kSha256, "user", "pencil");
  client.set_channel_binding("tls-unique", "attacker-side-finished");
  auto r = run_exchange(server, client, ScramHash::kSha256);
  EXPECT_TRUE(r.first_ok);
  EXPECT_FALSE(r.final_ok);
}

TEST(ScramChannelBinding, WrongTypeIsRefused) {
  ScramServer server(ScramHash::kSha256);
  server.set_channel_binding(true, true, "tls-unique", "x");
  ScramClient client(ScramHash::kSha256, "user", "pencil");
  client.set_channel_binding("tls-exporter", "x");
  EXPECT_FALSE(run_exchange(server, client, ScramHash::kSha256).first_ok);
}

TEST(ScramChannelBinding, PlusMechanismWithoutBindingIsRefused) {
  ScramServer server(ScramHash::kSha256);
  server.set_channel_binding(true, true, "tls-unique", "x");
  ScramClient client(ScramHash::kSha256, "user", "pencil");  // sends "n,,"
  EXPECT_FALSE(run_exchange(server, client, ScramHash::kSha256).first_ok);
}

TEST(ScramChannelBinding, BindingInsideAPlainMechanismIsRefused) {
  ScramServer server(ScramHash::kSha256);
  server.set_channel_binding(true, false, "tls-unique", "x");
  ScramClient client(ScramHash::kSha256, "user", "pencil");
  client.set_channel_binding("tls-unique", "x");
  EXPECT_FALSE(run_exchange(server, client, ScramHash::kSha256).first_ok);
}

TEST(ScramChannelBinding, YFlagIsADowngradeWhenPlusWasOffered) {
  ScramServer offered(ScramHash::kSha256);
  offered.set_channel_binding(true, false, "tls-unique", "x");
  ScramClient client(ScramHash::kSha256, "user", "pencil");
  client.set_channel_binding("", "");  // "y": the client saw no -PLUS
  EXPECT_FALSE(run_exchange(offered, client, ScramHash::kSha256).first_ok);

  ScramServer not_offered(ScramHash::kSha256);  // e.g. TLS 1.3 here: no -PLUS advertised
  ScramClient client2(ScramHash::kSha256, "user", "pencil");
  client2.set_channel_binding("", "");
  auto r = run_exchange(not_offered, client2, ScramHash::kSha256);
  EXPECT_TRUE(r.final_ok);
  EXPECT_TRUE(r.server_verified);
}

}  // namespace
}  // namespace kabar::xmpp
