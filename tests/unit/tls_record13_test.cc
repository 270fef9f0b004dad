// Record13 against a real OpenSSL client over a socketpair: OpenSSL does the handshake on both
// ends, the server side is handed over (tls/handover.h), then data, KeyUpdate, alerts and closes.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "tls/handover.h"
#include "tls/record13.h"

namespace kabar::tls {
namespace {

struct Ctx {
  SSL_CTX* server = nullptr;
  SSL_CTX* client = nullptr;
  Ctx(const char* suites, bool tls12 = false) {
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* cert = X509_new();
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("test"), -1, -1, 0);
    X509_set_issuer_name(cert, name);
    X509_sign(cert, key, EVP_sha256());
    server = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate(server, cert);
    SSL_CTX_use_PrivateKey(server, key);
    SSL_CTX_set_min_proto_version(server, TLS1_2_VERSION);
    SSL_CTX_set_mode(server, SSL_MODE_RELEASE_BUFFERS);
    enable_handover(server);
    X509_free(cert);
    EVP_PKEY_free(key);
    client = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_mode(client, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (suites != nullptr) SSL_CTX_set_ciphersuites(client, suites);
    if (tls12) SSL_CTX_set_max_proto_version(client, TLS1_2_VERSION);
  }
  ~Ctx() {
    SSL_CTX_free(server);
    SSL_CTX_free(client);
  }
};

// One connection: an OpenSSL client and, after the handshake, Record13 on the server's socket.
struct Conn {
  SSL* client = nullptr;
  int sfd = -1;
  int cfd = -1;
  std::unique_ptr<Record13> rec;
  std::string s_out;    // server ciphertext not yet written
  std::string s_plain;  // what the server opened
  std::string c_plain;  // what the client read
  std::string c_out;    // what the client has yet to SSL_write
  Record13::Status status = Record13::Status::kOk;
  int c_error = 0;             // the client's SSL_get_error once it failed
  unsigned long c_reason = 0;  // and its ERR reason
  bool c_closed = false;       // the client read our close_notify

  explicit Conn(Ctx& ctx) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    sfd = sv[0];
    cfd = sv[1];
    fcntl(sfd, F_SETFL, O_NONBLOCK);
    fcntl(cfd, F_SETFL, O_NONBLOCK);
    SSL* server = SSL_new(ctx.server);
    SSL_set_fd(server, sfd);
    SSL_set_accept_state(server);
    EXPECT_TRUE(arm_handover(server));
    client = SSL_new(ctx.client);
    SSL_set_fd(client, cfd);
    SSL_set_connect_state(client);
    int a = 0;
    int b = 0;
    for (int i = 0; i < 1000 && (a != 1 || b != 1); ++i) {
      if (a != 1) a = SSL_do_handshake(server);
      if (b != 1) b = SSL_do_handshake(client);
    }
    EXPECT_EQ(a, 1);
    EXPECT_EQ(b, 1);
    rec = take_over(server);
    SSL_free(server);  // no SSL_shutdown: the connection goes on without OpenSSL
  }
  ~Conn() {
    SSL_free(client);
    close(sfd);
    close(cfd);
  }

  // One round of I/O on both ends; true if anything moved.
  bool step() {
    bool moved = false;
    if (!s_out.empty()) {
      ssize_t n = write(sfd, s_out.data(), s_out.size());
      if (n > 0) {
        s_out.erase(0, static_cast<std::size_t>(n));
        moved = true;
      }
    }
    if (!c_out.empty() && c_error == 0) {
      int n = SSL_write(client, c_out.data(),
                        static_cast<int>(std::min<std::size_t>(c_out.size(), 65536)));
      if (n > 0) {
        c_out.erase(0, static_cast<std::size_t>(n));
        moved = true;
      } else {
        note_client_error(n);
      }
    }
    while (c_error == 0 && !c_closed) {
      char buf[20000];
      int n = SSL_read(client, buf, sizeof buf);
      if (n > 0) {
        c_plain.append(buf, static_cast<std::size_t>(n));
        moved = true;
        continue;
      }
      note_client_error(n);
      break;
    }
    for (;;) {
      char buf[7001];  // an odd size: records straddle reads
      ssize_t n = read(sfd, buf, sizeof buf);
      if (n <= 0) break;
      moved = true;
      status = rec->open(std::string_view(buf, static_cast<std::size_t>(n)), s_plain, s_out);
    }
    return moved;
  }
  void note_client_error(int r) {
    int e = SSL_get_error(client, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
    if (e == SSL_ERROR_ZERO_RETURN) {
      c_closed = true;
      return;
    }
    c_error = e;
    c_reason = ERR_GET_REASON(ERR_peek_last_error());
    ERR_clear_error();
  }
  void pump() {
    for (int idle = 0; idle < 3;) idle = step() ? 0 : idle + 1;
  }
  // The bytes the client has written, read raw off the server's socket.
  std::string raw_from_client() {
    std::string wire;
    char buf[65536];
    ssize_t n;
    while ((n = read(sfd, buf, sizeof buf)) > 0) wire.append(buf, static_cast<std::size_t>(n));
    return wire;
  }
  void write_raw_to_server_peer(const std::string& bytes) {
    ASSERT_EQ(write(cfd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }
};

std::string pattern(std::size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + seed * 7) % 251);
  return s;
}

class SuiteTest : public ::testing::TestWithParam<const char*> {};

TEST_P(SuiteTest, DataBothWaysInManySizes) {
  Ctx ctx(GetParam());
  Conn c(ctx);
  ASSERT_NE(c.rec, nullptr);
  const char* expected = GetParam();
  EXPECT_EQ(std::string(SSL_get_cipher_name(c.client)), std::string(expected));
  std::string to_client;
  std::string to_server;
  unsigned seed = 1;
  for (std::size_t size : {std::size_t{1}, std::size_t{16383}, std::size_t{16384},
                           std::size_t{16385}, std::size_t{1} << 20}) {
    std::string a = pattern(size, seed++);
    std::string b = pattern(size, seed++);
    ASSERT_TRUE(c.rec->seal(a, c.s_out));
    to_client += a;
    c.c_out += b;
    to_server += b;
    c.pump();
    ASSERT_EQ(c.status, Record13::Status::kOk);
    ASSERT_EQ(c.c_error, 0) << c.c_reason;
    ASSERT_EQ(c.c_plain.size(), to_client.size());
    ASSERT_EQ(c.c_plain, to_client);
    ASSERT_EQ(c.s_plain.size(), to_server.size());
    ASSERT_EQ(c.s_plain, to_server);
  }
  // Idle: the cipher contexts go, and come back on use.
  c.rec->hibernate();
  ASSERT_TRUE(c.rec->seal("after hibernation", c.s_out));
  c.c_out += "and back";
  c.pump();
  EXPECT_TRUE(c.c_plain.ends_with("after hibernation"));
  EXPECT_TRUE(c.s_plain.ends_with("and back"));
}

INSTANTIATE_TEST_SUITE_P(AllSuites, SuiteTest,
                         ::testing::Values("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                           "TLS_CHACHA20_POLY1305_SHA256"));

TEST(Record13, SplitAtEveryByte) {
  Ctx ctx("TLS_AES_128_GCM_SHA256");
  std::string wire;
  {
    Conn c(ctx);
    ASSERT_NE(c.rec, nullptr);
    SSL_write(c.client, "<message>hi</message>", 21);
    SSL_write(c.client, "x", 1);
    wire = c.raw_from_client();
  }
  ASSERT_GT(wire.size(), 40u);
  for (std::size_t split = 0; split <= wire.size(); ++split) {
    Conn c(ctx);
    ASSERT_NE(c.rec, nullptr);
    SSL_write(c.client, "<message>hi</message>", 21);
    SSL_write(c.client, "x", 1);
    std::string w = c.raw_from_client();
    ASSERT_EQ(w.size(), wire.size());
    std::string plain;
    std::string out;
    ASSERT_EQ(c.rec->open(std::string_view(w).substr(0, split), plain, out), Record13::Status::kOk);
    ASSERT_EQ(c.rec->open(std::string_view(w).substr(split), plain, out), Record13::Status::kOk);
    EXPECT_EQ(plain, "<message>hi</message>x") << "split at " << split;
    EXPECT_EQ(c.rec->buffered(), 0u);
  }
  // And one byte at a time.
  Conn c(ctx);
  SSL_write(c.client, "<message>hi</message>", 21);
  SSL_write(c.client, "x", 1);
  std::string w = c.raw_from_client();
  std::string plain;
  std::string out;
  for (char ch : w) {
    ASSERT_EQ(c.rec->open(std::string_view(&ch, 1), plain, out), Record13::Status::kOk);
  }
  EXPECT_EQ(plain, "<message>hi</message>x");
}

TEST(Record13, ClientKeyUpdateRequested) {
  Ctx ctx(nullptr);
  Conn c(ctx);
  ASSERT_NE(c.rec, nullptr);
  c.c_out = "before";
  c.pump();
  ASSERT_EQ(c.s_plain, "before");
  ASSERT_EQ(SSL_key_update(c.client, SSL_KEY_UPDATE_REQUESTED), 1);
  c.c_out = "after the update";
  c.pump();
  EXPECT_EQ(c.s_plain, "beforeafter the update");
  EXPECT_EQ(c.rec->read_sequence(), 1u);   // new read key: only the data record under it
  EXPECT_EQ(c.rec->write_sequence(), 0u);  // we answered with a KeyUpdate of our own
  ASSERT_TRUE(c.rec->seal("reply", c.s_out));
  c.pump();
  EXPECT_EQ(c.c_plain, "reply");
  EXPECT_EQ(c.c_error, 0) << c.c_reason;
  // The client can read our records under our new key and rekey again, not requested.
  ASSERT_EQ(SSL_key_update(c.client, SSL_KEY_UPDATE_NOT_REQUESTED), 1);
  c.c_out = "again";
  c.pump();
  EXPECT_EQ(c.s_plain, "beforeafter the updateagain");
  EXPECT_EQ(c.rec->write_sequence(), 1u);  // no answer to update_not_requested
  ASSERT_TRUE(c.rec->seal("more", c.s_out));
  c.pump();
  EXPECT_EQ(c.c_plain, "replymore");
  EXPECT_EQ(c.status, Record13::Status::kOk);
}

TEST(Record13, OurKeyUpdate) {
  Ctx ctx(nullptr);
  Conn c(ctx);
  ASSERT_NE(c.rec, nullptr);
  ASSERT_TRUE(c.rec->seal_key_update(true, c.s_out));
  ASSERT_TRUE(c.rec->seal("x", c.s_out));
  c.c_out = "y";
  c.pump();
  c.c_out = "z";
  c.pump();
  EXPECT_EQ(c.c_plain, "x");
  EXPECT_EQ(c.s_plain, "yz");
  EXPECT_EQ(c.c_error, 0) << c.c_reason;
}

TEST(Record13, ClientCloseNotify) {
  Ctx ctx(nullptr);
  Conn c(ctx);
  ASSERT_NE(c.rec, nullptr);
  c.c_out = "last words";
  c.pump();
  SSL_shutdown(c.client);
  c.pump();
  EXPECT_EQ(c.status, Record13::Status::kClosed);
  EXPECT_EQ(c.s_plain, "last words");
  // Half-closed: we may still write, then close in turn.
  ASSERT_TRUE(c.rec->seal("bye", c.s_out));
  ASSERT_TRUE(c.rec->seal_close_notify(c.s_out));
  EXPECT_FALSE(c.rec->seal("late", c.s_out));
  c.pump();
  EXPECT_EQ(c.c_plain, "bye");
  EXPECT_TRUE(c.c_closed);
}

TEST(Record13, FlippedCiphertextByteIsBadRecordMac) {
  Ctx ctx(nullptr);
  for (std::size_t at :
       {std::size_t{0}, std::size_t{4}, std::size_t{5}, std::size_t{12}, std::size_t{5 + 6 + 16}}) {
    Conn c(ctx);
    ASSERT_NE(c.rec, nullptr);
    SSL_write(c.client, "secret", 6);
    std::string w = c.raw_from_client();
    ASSERT_EQ(w.size(), 5u + 6 + 1 + 16);
    if (at >= w.size()) at = w.size() - 1;
    w[at] = static_cast<char>(w[at] ^ 0x01);
    std::string plain;
    std::string out;
    EXPECT_EQ(c.rec->open(w, plain, out), Record13::Status::kError) << at;
    EXPECT_EQ(plain, "") << at;
    if (at == 0) {
      EXPECT_EQ(c.rec->alert(), Alert::kUnexpectedMessage);  // outer type no longer 23
      continue;
    }
    EXPECT_EQ(c.rec->alert(), Alert::kBadRecordMac) << at;
    c.s_out = out;
    c.pump();
    EXPECT_EQ(c.c_error, SSL_ERROR_SSL);
    EXPECT_EQ(c.c_reason, static_cast<unsigned long>(SSL_R_SSLV3_ALERT_BAD_RECORD_MAC));
    // Nothing more is opened or sealed.
    EXPECT_EQ(c.rec->open("x", plain, out), Record13::Status::kError);
    EXPECT_FALSE(c.rec->seal("x", out));
  }
}

TEST(Record13, OversizedRecordIsRecordOverflow) {
  Ctx ctx(nullptr);
  Conn c(ctx);
  ASSERT_NE(c.rec, nullptr);
  const std::size_t len = kMaxCiphertext + 1;
  std::string header = {23, 3, 3, static_cast<char>(len >> 8), static_cast<char>(len & 0xff)};
  std::string plain;
  std::string out;
  // The header alone is enough to refuse it: nothing that long is buffered.
  EXPECT_EQ(c.rec->open(header, plain, out), Record13::Status::kError);
  EXPECT_EQ(c.rec->alert(), Alert::kRecordOverflow);
  c.s_out = out;
  c.pump();
  EXPECT_EQ(c.c_error, SSL_ERROR_SSL);
  EXPECT_EQ(c.c_reason, static_cast<unsigned long>(SSL_R_TLSV1_ALERT_RECORD_OVERFLOW));
}

TEST(Record13, ChangeCipherSpecAfterHandshakeIsUnexpected) {
  Ctx ctx(nullptr);
  Conn c(ctx);
  ASSERT_NE(c.rec, nullptr);
  std::string plain;
  std::string out;
  EXPECT_EQ(c.rec->open(std::string("\x14\x03\x03\x00\x01\x01", 6), plain, out),
            Record13::Status::kError);
  EXPECT_EQ(c.rec->alert(), Alert::kUnexpectedMessage);
  c.s_out = out;
  c.pump();
  EXPECT_EQ(c.c_reason, static_cast<unsigned long>(SSL_R_SSLV3_ALERT_UNEXPECTED_MESSAGE));
}

TEST(Record13, Tls12StaysOnOpenSsl) {
  Ctx ctx(nullptr, /*tls12=*/true);
  Conn c(ctx);
  EXPECT_EQ(c.rec, nullptr);
}

// Two Record13s facing each other (no OpenSSL): inner-plaintext rules a real client never breaks.
TEST(Record13, PairSealsAndOpens) {
  std::vector<unsigned char> a(32, 0x11);
  std::vector<unsigned char> b(32, 0x22);
  auto server = Record13::make(Suite::kAes128GcmSha256, a, b);
  auto client = Record13::make(Suite::kAes128GcmSha256, b, a);
  ASSERT_NE(server, nullptr);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(Record13::make(Suite::kAes128GcmSha256, std::vector<unsigned char>(48, 1), b), nullptr);
  std::string wire;
  ASSERT_TRUE(client->seal("", wire));  // no record for nothing
  EXPECT_EQ(wire, "");
  ASSERT_TRUE(client->seal("abc", wire));
  ASSERT_TRUE(client->seal_key_update(true, wire));
  ASSERT_TRUE(client->seal("def", wire));
  std::string plain;
  std::string out;
  EXPECT_EQ(server->open(wire, plain, out), Record13::Status::kOk);
  EXPECT_EQ(plain, "abcdef");
  // The answer, a KeyUpdate(update_not_requested), moves the client's read key along.
  ASSERT_FALSE(out.empty());
  ASSERT_TRUE(server->seal("ghi", out));
  std::string back;
  std::string none;
  EXPECT_EQ(client->open(out, back, none), Record13::Status::kOk);
  EXPECT_EQ(back, "ghi");
  EXPECT_EQ(none, "");
  EXPECT_EQ(client->read_sequence(), 1u);
}

// Records sealed by hand (AES-128-GCM, key and IV from `secret` by §7.3), with any inner
// plaintext: the §5.4 rules a real client never breaks.
std::string seal_inner(std::span<const unsigned char> secret, std::uint64_t seq,
                       const std::string& inner) {
  unsigned char key[16];
  unsigned char iv[12];
  EXPECT_TRUE(hkdf_expand_label(Suite::kAes128GcmSha256, secret, "key", key));
  EXPECT_TRUE(hkdf_expand_label(Suite::kAes128GcmSha256, secret, "iv", iv));
  for (int i = 0; i < 8; ++i) iv[11 - i] ^= static_cast<unsigned char>(seq >> (8 * i));
  const std::size_t len = inner.size() + kTagSize;
  std::string rec = {23, 3, 3, static_cast<char>(len >> 8), static_cast<char>(len & 0xff)};
  rec.resize(kHeaderSize + len);
  auto* r = reinterpret_cast<unsigned char*>(rec.data());
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  int n = 0;
  EXPECT_EQ(EVP_EncryptInit_ex(ctx, EVP_aes_128_gcm(), nullptr, key, iv), 1);
  EXPECT_EQ(EVP_EncryptUpdate(ctx, nullptr, &n, r, kHeaderSize), 1);
  EXPECT_EQ(EVP_EncryptUpdate(ctx, r + kHeaderSize, &n,
                              reinterpret_cast<const unsigned char*>(inner.data()),
                              static_cast<int>(inner.size())),
            1);
  EXPECT_EQ(EVP_EncryptFinal_ex(ctx, r + kHeaderSize + inner.size(), &n), 1);
  EXPECT_EQ(
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, kTagSize, r + kHeaderSize + inner.size()), 1);
  EVP_CIPHER_CTX_free(ctx);
  return rec;
}

struct InnerCase {
  std::string inner;
  Record13::Status status;
  Alert alert;
  std::string plain;
};

TEST(Record13, InnerPlaintextRules) {
  const std::vector<unsigned char> client(32, 0x33);
  const std::vector<unsigned char> server(32, 0x44);
  const std::string big(kMaxPlaintext, 'b');
  const std::vector<InnerCase> cases = {
      {std::string("hi\x17", 3), Record13::Status::kOk, Alert::kCloseNotify, "hi"},
      {std::string("hi\x17\0\0\0", 6), Record13::Status::kOk, Alert::kCloseNotify, "hi"},
      {std::string("\x17", 1), Record13::Status::kOk, Alert::kCloseNotify, ""},
      {big + "\x17" + std::string(200, '\0'), Record13::Status::kOk, Alert::kCloseNotify, big},
      {std::string(40, '\0'), Record13::Status::kError, Alert::kUnexpectedMessage, ""},
      {big + "b\x17", Record13::Status::kError, Alert::kRecordOverflow, ""},
      {std::string("hi\x18", 3), Record13::Status::kError, Alert::kUnexpectedMessage, ""},
      {std::string("\x01\x14", 2), Record13::Status::kError, Alert::kUnexpectedMessage, ""},
      {std::string("\x01\x00\x00\x15", 4), Record13::Status::kError, Alert::kDecodeError, ""},
      {std::string("\x02\x28\x15", 3), Record13::Status::kError, Alert(40),
       ""},  // handshake_failure
      {std::string("\x01\x00\x15", 3), Record13::Status::kClosed, Alert::kCloseNotify, ""},
      {std::string("\x16", 1), Record13::Status::kError, Alert::kUnexpectedMessage, ""},
      {std::string("\x04\x00\x00\x01\x00\x16", 6), Record13::Status::kError,
       Alert::kUnexpectedMessage, ""},  // NewSessionTicket-like: not from a client
      {std::string("\x18\x00\x00\x02\x00\x00\x16", 7), Record13::Status::kError,
       Alert::kDecodeError, ""},
      {std::string("\x18\x00\x00\x01\x02\x16", 6), Record13::Status::kError,
       Alert::kIllegalParameter, ""},
      {std::string("\x18\x00\x00\x01\x00\x17\x16", 7), Record13::Status::kError,
       Alert::kUnexpectedMessage, ""},  // a byte after the KeyUpdate in its record
  };
  for (const auto& c : cases) {
    auto rec = Record13::make(Suite::kAes128GcmSha256, client, server);
    ASSERT_NE(rec, nullptr);
    std::string plain;
    std::string out;
    const auto status = rec->open(seal_inner(client, 0, c.inner), plain, out);
    EXPECT_EQ(status, c.status) << c.inner.size();
    EXPECT_EQ(plain, c.plain) << c.inner.size();
    if (status == Record13::Status::kError) {
      EXPECT_EQ(rec->alert(), c.alert) << c.inner.size();
      // We answer with an alert unless the peer's own alert ended it.
      EXPECT_EQ(out.empty(), rec->peer_alerted());
    }
  }
}

TEST(Record13, KeyUpdateSplitAcrossRecords) {
  const std::vector<unsigned char> client(32, 0x55);
  const std::vector<unsigned char> server(32, 0x66);
  auto rec = Record13::make(Suite::kAes128GcmSha256, client, server);
  ASSERT_NE(rec, nullptr);
  std::vector<unsigned char> next(32);
  ASSERT_TRUE(hkdf_expand_label(Suite::kAes128GcmSha256, client, "traffic upd", next));
  std::string wire = seal_inner(client, 0, std::string("\x18\x00\x00\x16", 4)) +
                     seal_inner(client, 1, std::string("\x01\x01\x16", 3)) +
                     seal_inner(next, 0, std::string("ok\x17", 3));
  std::string plain;
  std::string out;
  EXPECT_EQ(rec->open(wire, plain, out), Record13::Status::kOk);
  EXPECT_EQ(plain, "ok");
  EXPECT_FALSE(out.empty());  // our KeyUpdate(update_not_requested)
  EXPECT_EQ(rec->write_sequence(), 0u);
  // Application data between the two halves of a handshake message is refused.
  auto rec2 = Record13::make(Suite::kAes128GcmSha256, client, server);
  std::string wire2 = seal_inner(client, 0, std::string("\x18\x00\x16", 3)) +
                      seal_inner(client, 1, std::string("x\x17", 2));
  plain.clear();
  EXPECT_EQ(rec2->open(wire2, plain, out), Record13::Status::kError);
  EXPECT_EQ(rec2->alert(), Alert::kUnexpectedMessage);
  EXPECT_EQ(plain, "");
  // A record under a stale sequence number (a replay) fails its tag.
  auto rec3 = Record13::make(Suite::kAes128GcmSha256, client, server);
  std::string one = seal_inner(client, 0, std::string("a\x17", 2));
  plain.clear();
  EXPECT_EQ(rec3->open(one + one, plain, out), Record13::Status::kError);
  EXPECT_EQ(rec3->alert(), Alert::kBadRecordMac);
  EXPECT_EQ(plain, "a");
}

}  // namespace
}  // namespace kabar::tls
