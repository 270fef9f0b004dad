// Jingle file-transfer payloads: a round trip through build and parse, the bounds on hostile
// input, the SOCKS5 address hash and the sanitizing of offered file names.
#include <gtest/gtest.h>

#include <string>

#include "xml/chars.h"
#include "xmpp/jingle.h"

namespace kabar::xmpp::jingle {
namespace {

TEST(Jingle, InitiateRoundTrip) {
  Action a;
  a.action = "session-initiate";
  a.sid = "s1";
  a.initiator = "a@x/r";
  a.content_name = "file";
  a.file = File{"photo.jpg", 12345, std::string(32, '\x07'), "image/jpeg", std::nullopt};
  a.transport.kind = Transport::Kind::kS5b;
  a.transport.sid = "t1";
  a.transport.candidates.push_back({"c1", "10.0.0.1", 5000, "a@x/r", "direct", 8257536});
  std::string why;
  auto p = parse(build(a), why);
  ASSERT_TRUE(p) << why;
  EXPECT_EQ(p->action, "session-initiate");
  ASSERT_TRUE(p->file);
  EXPECT_EQ(p->file->name, "photo.jpg");
  EXPECT_EQ(p->file->size, 12345u);
  EXPECT_EQ(p->file->sha256, std::string(32, '\x07'));
  EXPECT_EQ(p->transport.kind, Transport::Kind::kS5b);
  ASSERT_EQ(p->transport.candidates.size(), 1u);
  EXPECT_EQ(p->transport.candidates[0].port, 5000);
  EXPECT_EQ(p->transport.candidates[0].priority, 8257536u);
}

TEST(Jingle, RangeAndIbbAndReason) {
  Action a;
  a.action = "transport-replace";
  a.sid = "s1";
  a.content_name = "file";
  a.file = File{"", 10, "", "", 5};
  a.transport.kind = Transport::Kind::kIbb;
  a.transport.sid = "i1";
  a.transport.block_size = 70000;  // clamped to 65535 on parse
  a.reason = "success";
  std::string why;
  auto p = parse(build(a), why);
  ASSERT_TRUE(p) << why;
  EXPECT_EQ(p->transport.kind, Transport::Kind::kIbb);
  EXPECT_EQ(p->transport.block_size, 65535u);
  ASSERT_TRUE(p->file && p->file->range_offset);
  EXPECT_EQ(*p->file->range_offset, 5u);
  EXPECT_EQ(p->reason, "success");
}

TEST(Jingle, RefusesHostileValues) {
  auto with_candidate = [](std::string port, std::string prio) {
    xml::Element j("jingle", kJingle);
    j.set_attr("action", "session-initiate").set_attr("sid", "s");
    auto& t = j.add_child("content", kJingle).set_attr("name", "f").add_child("transport", kS5b);
    t.set_attr("sid", "t");
    t.add_child("candidate", kS5b)
        .set_attr("cid", "c")
        .set_attr("host", "h")
        .set_attr("jid", "j")
        .set_attr("port", port)
        .set_attr("priority", prio);
    return j;
  };
  std::string why;
  EXPECT_FALSE(parse(with_candidate("70000", "1"), why));
  EXPECT_FALSE(parse(with_candidate("0", "1"), why));
  EXPECT_FALSE(parse(with_candidate("-1", "1"), why));
  EXPECT_FALSE(parse(with_candidate("5", "99999999999"), why));
  EXPECT_TRUE(parse(with_candidate("5", "1"), why)) << why;

  xml::Element j("jingle", kJingle);
  j.set_attr("action", "session-initiate").set_attr("sid", "bad sid");
  EXPECT_FALSE(parse(j, why));
  xml::Element k("jingle", kJingle);
  k.set_attr("action", "session-initiate").set_attr("sid", "s");
  auto& f = k.add_child("content", kJingle)
                .set_attr("name", "f")
                .add_child("description", kFileTransfer)
                .add_child("file", kFileTransfer);
  f.add_child("size", kFileTransfer).add_text("12x");
  EXPECT_FALSE(parse(k, why));
  xml::Element nameless("jingle", kJingle);
  nameless.set_attr("action", "session-initiate").set_attr("sid", "s");
  nameless.add_child("content", kJingle);
  EXPECT_FALSE(parse(nameless, why));  // XEP-0166: a content has a name
}

TEST(Jingle, Socks5Hash) {
  // XEP-0065 §5.3.2's example shape: SHA-1 hex of sid + requester + target.
  EXPECT_EQ(socks5_dst("", "", ""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  EXPECT_EQ(socks5_dst("a", "b", "c").size(), 40u);
  EXPECT_NE(socks5_dst("s", "a", "b"), socks5_dst("s", "b", "a"));
}

TEST(Jingle, SafeFileName) {
  EXPECT_EQ(safe_file_name("photo.jpg"), "photo.jpg");
  EXPECT_EQ(safe_file_name("../../etc/passwd"), "passwd");
  EXPECT_EQ(safe_file_name("..\\..\\boot.ini"), "boot.ini");
  EXPECT_EQ(safe_file_name(".."), "file");
  EXPECT_EQ(safe_file_name(""), "file");
  EXPECT_EQ(safe_file_name("/"), "file");
  EXPECT_EQ(safe_file_name(".bashrc"), "bashrc");
  EXPECT_EQ(safe_file_name(std::string("a\nb\0c", 5)), "abc");
  std::string longname(1000, 'x');
  EXPECT_EQ(safe_file_name(longname + ".png").size(), kMaxNameBytes);
  EXPECT_EQ(safe_file_name(longname + ".png").substr(kMaxNameBytes - 4), ".png");
}

// What every sanitized name must be, whatever was offered.
void ExpectSafe(const std::string& n) {
  ASSERT_FALSE(n.empty());
  EXPECT_LE(n.size(), kMaxNameBytes);
  EXPECT_TRUE(kabar::xml::valid_xml_text(n)) << n;  // valid UTF-8 (and nothing XML forbids)
  EXPECT_EQ(n.find_first_of("/\\:"), std::string::npos) << n;
  EXPECT_NE(n.front(), '.') << n;
  EXPECT_NE(n.front(), ' ') << n;
  EXPECT_NE(n.back(), '.') << n;
  EXPECT_NE(n.back(), ' ') << n;
  for (std::size_t i = 0; i < n.size();) {
    auto c = kabar::xml::decode_utf8(n, i);
    ASSERT_TRUE(c.valid);
    EXPECT_FALSE(kabar::xml::is_control(c.value)) << n;
    EXPECT_FALSE(kabar::xml::is_bidi_control(c.value)) << n;
    i += c.length;
  }
  EXPECT_EQ(safe_file_name(n), n);
}

TEST(Jingle, SafeFileNameLongNameOfContinuationBytesIsNotHidden) {
  // The cut used to step back over the continuation bytes to nothing and keep only ".bashrc".
  const std::string n = safe_file_name(std::string(300, '\xaf') + ".bashrc");
  ExpectSafe(n);
  EXPECT_NE(n, ".bashrc");
  EXPECT_NE(n, "bashrc");
  EXPECT_EQ(n, std::string(kMaxNameBytes - 7, '_') + ".bashrc");
}

TEST(Jingle, SafeFileNameInvalidUtf8IsReplaced) {
  EXPECT_EQ(safe_file_name("a\xaf"
                           "b.txt"),
            "a_b.txt");
  EXPECT_EQ(safe_file_name("\xc0\xaf.txt"), "__.txt");              // overlong '/'
  EXPECT_EQ(safe_file_name("x\xed\xa0\x80.txt"), "x___.txt");       // a surrogate: three subparts
  EXPECT_EQ(safe_file_name("x\xe2\x82.txt"), "x_.txt");             // truncated sequence
  EXPECT_EQ(safe_file_name("caf\xc3\xa9.txt"), "caf\xc3\xa9.txt");  // valid: kept
  ExpectSafe(safe_file_name("\xff\xfe\xf5\x80"));
}

TEST(Jingle, SafeFileNameControlsAndBidi) {
  EXPECT_EQ(safe_file_name("a\x1b[31mb\x7f.txt"), "a[31mb.txt");
  EXPECT_EQ(safe_file_name("a\xc2\x9b"
                           "31mb.txt"),
            "a31mb.txt");  // U+009B CSI
  // U+202E RIGHT-TO-LEFT OVERRIDE would show "photo\u202Egpj.exe" as "photoexe.jpg".
  EXPECT_EQ(safe_file_name("photo\xe2\x80\xaegpj.exe"), "photogpj.exe");
  EXPECT_EQ(safe_file_name("a\xe2\x81\xa6"
                           "b\xe2\x81\xa9.sh"),
            "ab.sh");  // U+2066, U+2069
  EXPECT_EQ(safe_file_name("c:evil"), "cevil");
}

TEST(Jingle, SafeFileNameSpecialNames) {
  EXPECT_EQ(safe_file_name("."), "file");
  EXPECT_EQ(safe_file_name(" . . "), "file");
  EXPECT_EQ(safe_file_name("name. "), "name");
  EXPECT_EQ(safe_file_name("name..."), "name");
  EXPECT_EQ(safe_file_name(" name"), "name");
  EXPECT_EQ(safe_file_name("\xe2\x80\xae.bashrc"), "bashrc");  // the override goes, then the dot
  EXPECT_EQ(safe_file_name("a/b/\x1b."), "file");
}

TEST(Jingle, SafeFileNameCut) {
  // The cut never splits a UTF-8 sequence: 200 two-byte characters cut to 127 of them.
  std::string e(200 * 2, ' ');
  for (std::size_t i = 0; i < 200; ++i) e.replace(2 * i, 2, "\xc3\xa9");
  ExpectSafe(safe_file_name(e));
  EXPECT_EQ(safe_file_name(e).size(), 254u);
  ExpectSafe(safe_file_name(e + ".jpeg"));
  EXPECT_EQ(safe_file_name(e + ".jpeg").substr(safe_file_name(e + ".jpeg").size() - 5), ".jpeg");
  // A stem that ends in dots or spaces at the cut loses them; the name never ends in one.
  ExpectSafe(safe_file_name(std::string(250, 'a') + std::string(20, ' ') + "z"));
  ExpectSafe(safe_file_name("a" + std::string(300, '.') + "png"));
  EXPECT_EQ(safe_file_name("a" + std::string(300, ' ') + ".png"), "a.png");
  // An extension longer than 16 bytes is not kept, and nothing is left hidden.
  const std::string n = safe_file_name(std::string(300, 'x') + "." + std::string(40, 'y'));
  ExpectSafe(n);
  EXPECT_EQ(n, std::string(kMaxNameBytes, 'x'));
  // A name that is only an extension after the cut gets no extension.
  ExpectSafe(safe_file_name(std::string(300, '\x1b') + ".bashrc"));
  EXPECT_EQ(safe_file_name(std::string(300, '\x1b') + ".bashrc"), "bashrc");
}

TEST(StreamInitiation, OfferAcceptAndStreamhosts) {
  SiOffer o{"sid1", "a.txt", 42, "0123abcd", "text/plain", {kBytestreams, kIbb}};
  std::string why;
  auto p = parse_si_offer(build_si_offer(o), why);
  ASSERT_TRUE(p) << why;
  EXPECT_EQ(p->sid, "sid1");
  EXPECT_EQ(p->name, "a.txt");
  EXPECT_EQ(p->size, 42u);
  EXPECT_EQ(p->md5, "0123abcd");
  EXPECT_EQ(p->methods, (std::vector<std::string>{kBytestreams, kIbb}));
  EXPECT_EQ(parse_si_accept(build_si_accept(kIbb)), kIbb);

  xml::Element bad = build_si_offer(o);
  bad.set_attr("profile", "urn:other");
  EXPECT_FALSE(parse_si_offer(bad, why));
  xml::Element nosize = build_si_offer(o);
  nosize.child("file", kSiFileTransfer)->set_attr("size", "lots");
  EXPECT_FALSE(parse_si_offer(nosize, why));

  BytestreamQuery q{"s", {{"a@x/r", "10.0.0.1", 1234}, {"proxy.x", "10.0.0.2", 7777}}, ""};
  xml::Element qe = build_bytestreams(q);
  qe.add_child("streamhost", kBytestreams).set_attr("jid", "z").set_attr("port", "99999");
  auto pq = parse_bytestreams(qe, why);
  ASSERT_TRUE(pq) << why;
  ASSERT_EQ(pq->hosts.size(), 2u);  // the one with a bad port is skipped
  EXPECT_EQ(pq->hosts[1].port, 7777);
  auto used = parse_bytestreams(build_bytestreams({"s", {}, "proxy.x"}), why);
  ASSERT_TRUE(used);
  EXPECT_EQ(used->used, "proxy.x");
}

}  // namespace
}  // namespace kabar::xmpp::jingle
