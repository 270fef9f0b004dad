// XEP-0115 entity capabilities in the client session: a contact's <c/> is asked about once per
// ver (disco#info of node#ver), verified with §5.1 (the XEP's §5.2 and §5.3 examples as vectors)
// and cached only when it matches (§5.4); other resources announcing that ver reuse it; our own
// presence carries <c/> with the sha-1 of our disco#info, answered for node#ver. Driven through
// the session's dispatch() with no connection: what it sends stays in its write queue.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "client/client_impl.h"
#include "client_stanzas.h"
#include "xml/stream_parser.h"
#include "xmpp/caps.h"
#include "xmpp/jid.h"

namespace kabar::client {
namespace {

using testing::parse_stanzas;

// XEP-0115 §5.2: Exodus 0.9.1.
constexpr const char* kExodusNode = "http://code.google.com/p/exodus";
constexpr const char* kExodusVer = "QgayPKawpkPSDYmwT/WM94uAlu0=";
constexpr const char* kExodusInfo =
    "<query xmlns='http://jabber.org/protocol/disco#info'>"
    "<identity category='client' name='Exodus 0.9.1' type='pc'/>"
    "<feature var='http://jabber.org/protocol/caps'/>"
    "<feature var='http://jabber.org/protocol/disco#info'/>"
    "<feature var='http://jabber.org/protocol/disco#items'/>"
    "<feature var='http://jabber.org/protocol/muc'/></query>";

// XEP-0115 §5.3: Psi 0.11, two identities by language and a software-info form.
constexpr const char* kPsiNode = "http://psi-im.org";
constexpr const char* kPsiVer = "q07IKJEyjvHSyhy//CH0CxmKi8w=";
constexpr const char* kPsiInfo =
    "<query xmlns='http://jabber.org/protocol/disco#info'>"
    "<identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>"
    "<identity xml:lang='el' category='client' name='\xce\xa8 0.11' type='pc'/>"
    "<feature var='http://jabber.org/protocol/caps'/>"
    "<feature var='http://jabber.org/protocol/disco#info'/>"
    "<feature var='http://jabber.org/protocol/disco#items'/>"
    "<feature var='http://jabber.org/protocol/muc'/>"
    "<x xmlns='jabber:x:data' type='result'>"
    "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>"
    "<field var='ip_version' type='text-multi'><value>ipv4</value><value>ipv6</value></field>"
    "<field var='os'><value>Mac</value></field>"
    "<field var='os_version'><value>10.5.1</value></field>"
    "<field var='software'><value>Psi</value></field>"
    "<field var='software_version'><value>0.11</value></field>"
    "</x></query>";

constexpr const char* kMuc = "http://jabber.org/protocol/muc";

Options alice(const std::string& caps_cache = {}) {
  Options o;
  o.jid = "alice@example.org";
  o.caps_cache = caps_cache;
  return o;
}

bool has(const std::vector<std::string>* f, const std::string& var) {
  return f != nullptr && std::find(f->begin(), f->end(), var) != f->end();
}

// A bound session with no transport (as in client_carbons_test.cc).
class ClientCaps : public ::testing::Test {
 public:
  ClientCaps() : ClientCaps(std::string()) {}
  explicit ClientCaps(const std::string& cache) : session(io, alice(cache)) {}

  // Runs what is ready (an io_context that ran out of work stops until restarted).
  void poll() {
    io.restart();
    io.poll();
  }

  void receive(const std::string& xml) {
    session.dispatch(xml);
    poll();
  }

  // What the session sent since the last call.
  std::vector<xml::Element> sent() { return session.take(); }

  void presence(const std::string& from, const std::string& node, const std::string& ver) {
    receive("<presence from='" + from +
            "' to='alice@example.org/desk'><c xmlns='http://jabber.org/protocol/caps' "
            "hash='sha-1' node='" +
            node + "' ver='" + ver + "'/></presence>");
  }

  // The one disco#info of node#ver sent to `to`; its id ("" when there is not exactly one).
  std::string asked(const std::string& to, const std::string& node) {
    auto out = sent();
    if (out.size() != 1) return {};
    const xml::Element& iq = out.front();
    const xml::Element* q = iq.child("query", ns::kDiscoInfo);
    if (iq.attr("type") != "get" || iq.attr("to") != to || q == nullptr || q->attr("node") != node)
      return {};
    return std::string(iq.attr("id"));
  }

  void answer(const std::string& from, const std::string& id, const std::string& query) {
    receive("<iq from='" + from + "' to='alice@example.org/desk' type='result' id='" + id + "'>" +
            query + "</iq>");
  }

  asio::io_context io;
  testing::OfflineSession session;
  Client& client = session.client;
  Client::Impl& impl = session.impl;
};

TEST_F(ClientCaps, SimpleExampleOfTheXepIsAskedOnceVerifiedAndCached) {
  presence("bob@example.org/exodus", kExodusNode, kExodusVer);
  std::string id = asked("bob@example.org/exodus", std::string(kExodusNode) + "#" + kExodusVer);
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(client.caps_features("bob@example.org/exodus"), nullptr);  // not yet answered
  answer("bob@example.org/exodus", id, kExodusInfo);
  EXPECT_TRUE(has(client.caps_features("bob@example.org/exodus"), kMuc));
  // The same presence again asks nothing.
  presence("bob@example.org/exodus", kExodusNode, kExodusVer);
  EXPECT_TRUE(sent().empty());
}

TEST_F(ClientCaps, ComplexExampleOfTheXepWithFormsAndLanguages) {
  presence("bob@example.org/psi", kPsiNode, kPsiVer);
  std::string id = asked("bob@example.org/psi", std::string(kPsiNode) + "#" + kPsiVer);
  ASSERT_FALSE(id.empty());
  answer("bob@example.org/psi", id, kPsiInfo);
  EXPECT_TRUE(has(client.caps_features("bob@example.org/psi"), kMuc));
}

TEST_F(ClientCaps, ReusedAcrossResourcesAndContactsOncePerVer) {
  presence("bob@example.org/a", kExodusNode, kExodusVer);
  std::string id = asked("bob@example.org/a", std::string(kExodusNode) + "#" + kExodusVer);
  ASSERT_FALSE(id.empty());
  // Announced by another resource while the question is under way: not asked again.
  presence("bob@example.org/b", kExodusNode, kExodusVer);
  EXPECT_TRUE(sent().empty());
  answer("bob@example.org/a", id, kExodusInfo);
  presence("carol@example.org/x", kExodusNode, kExodusVer);
  EXPECT_TRUE(sent().empty());
  EXPECT_TRUE(has(client.caps_features("bob@example.org/b"), kMuc));
  EXPECT_TRUE(has(client.caps_features("carol@example.org/x"), kMuc));
  // Gone offline: its caps no longer count.
  receive("<presence from='bob@example.org/b' to='alice@example.org/desk' type='unavailable'/>");
  EXPECT_EQ(client.caps_features("bob@example.org/b"), nullptr);
}

TEST_F(ClientCaps, AnAnswerThatDoesNotMatchItsHashIsNotCached) {
  const std::string node = std::string(kExodusNode) + "#" + kExodusVer;
  presence("mallory@example.org/a", kExodusNode, kExodusVer);
  std::string id = asked("mallory@example.org/a", node);
  ASSERT_FALSE(id.empty());
  // One feature more than the hash stands for.
  std::string forged = kExodusInfo;
  forged.insert(forged.find("</query>"), "<feature var='urn:xmpp:jingle:apps:file-transfer:5'/>");
  answer("mallory@example.org/a", id, forged);
  EXPECT_EQ(client.caps_features("mallory@example.org/a"), nullptr);
  // That resource is not asked again for that ver...
  presence("mallory@example.org/a", kExodusNode, kExodusVer);
  EXPECT_TRUE(sent().empty());
  // ...another one announcing it is, and a true answer is cached.
  presence("bob@example.org/b", kExodusNode, kExodusVer);
  id = asked("bob@example.org/b", node);
  ASSERT_FALSE(id.empty());
  answer("bob@example.org/b", id, kExodusInfo);
  EXPECT_TRUE(has(client.caps_features("bob@example.org/b"), kMuc));
  EXPECT_FALSE(
      has(client.caps_features("bob@example.org/b"), "urn:xmpp:jingle:apps:file-transfer:5"));
}

TEST_F(ClientCaps, DuplicateFeaturesAreNotTrustedEvenWhenTheHashMatches) {
  // §5.4: an answer listing a feature twice is rejected, whatever its hash.
  std::string dup = kExodusInfo;
  dup.insert(dup.find("</query>"), "<feature var='http://jabber.org/protocol/muc'/>");
  auto q = parse_stanzas(dup);
  ASSERT_EQ(q.size(), 1u);
  EXPECT_FALSE(xmpp::caps_verification_string(q.front()));
  presence("bob@example.org/a", kExodusNode, kExodusVer);
  std::string id = asked("bob@example.org/a", std::string(kExodusNode) + "#" + kExodusVer);
  ASSERT_FALSE(id.empty());
  answer("bob@example.org/a", id, dup);
  EXPECT_EQ(client.caps_features("bob@example.org/a"), nullptr);
}

TEST_F(ClientCaps, LegacyCapsWithoutAHashAreNotAskedAbout) {
  receive(
      "<presence from='bob@example.org/old' to='alice@example.org/desk'><c "
      "xmlns='http://jabber.org/protocol/caps' node='http://old' ver='1.0'/></presence>");
  EXPECT_TRUE(sent().empty());
  EXPECT_EQ(client.caps_features("bob@example.org/old"), nullptr);
}

TEST_F(ClientCaps, FeaturesOfAnswersFromCapsWithoutAskingElseByDisco) {
  presence("bob@example.org/a", kExodusNode, kExodusVer);
  std::string id = asked("bob@example.org/a", std::string(kExodusNode) + "#" + kExodusVer);
  answer("bob@example.org/a", id, kExodusInfo);
  std::optional<bool> muc, ft;
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        muc = co_await client.supports("bob@example.org/a", kMuc);
        ft = co_await client.supports("bob@example.org/a", "urn:xmpp:jingle:apps:file-transfer:5");
      },
      asio::detached);
  poll();
  EXPECT_TRUE(sent().empty());  // from the caps: no question
  EXPECT_EQ(muc, std::optional<bool>(true));
  EXPECT_EQ(ft, std::optional<bool>(false));

  // No caps: a plain disco#info (no node) of that JID.
  std::optional<bool> other;
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> { other = co_await client.supports("carol@example.org/x", kMuc); },
      asio::detached);
  poll();
  id = asked("carol@example.org/x", "");
  ASSERT_FALSE(id.empty());
  EXPECT_FALSE(other);
  answer("carol@example.org/x", id, kExodusInfo);
  EXPECT_EQ(other, std::optional<bool>(true));
}

TEST_F(ClientCaps, FeaturesOfWaitsForTheCapsQuestionUnderWay) {
  presence("bob@example.org/a", kExodusNode, kExodusVer);
  std::string id = asked("bob@example.org/a", std::string(kExodusNode) + "#" + kExodusVer);
  ASSERT_FALSE(id.empty());
  std::optional<std::vector<std::string>> f;
  asio::co_spawn(
      io, [&]() -> awaitable<void> { f = co_await client.features_of("bob@example.org/a"); },
      asio::detached);
  poll();
  EXPECT_TRUE(sent().empty());  // no second question to the same client
  EXPECT_FALSE(f);
  answer("bob@example.org/a", id, kExodusInfo);
  poll();
  ASSERT_TRUE(f);
  EXPECT_TRUE(has(&*f, kMuc));
}

TEST_F(ClientCaps, FeaturesOfAsksPlainlyWhenTheCapsAnswerDoesNotVerify) {
  presence("mallory@example.org/a", kExodusNode, kExodusVer);
  std::string id = asked("mallory@example.org/a", std::string(kExodusNode) + "#" + kExodusVer);
  ASSERT_FALSE(id.empty());
  std::optional<std::vector<std::string>> f;
  asio::co_spawn(
      io, [&]() -> awaitable<void> { f = co_await client.features_of("mallory@example.org/a"); },
      asio::detached);
  poll();
  std::string forged = kExodusInfo;
  forged.insert(forged.find("</query>"), "<feature var='urn:xmpp:jingle:apps:file-transfer:5'/>");
  answer("mallory@example.org/a", id, forged);
  // Not trusted under the ver: its own disco#info, without a node, is what counts for it.
  id = asked("mallory@example.org/a", "");
  ASSERT_FALSE(id.empty());
  EXPECT_FALSE(f);
  answer("mallory@example.org/a", id, forged);
  ASSERT_TRUE(f);
  EXPECT_TRUE(has(&*f, "urn:xmpp:jingle:apps:file-transfer:5"));
  EXPECT_EQ(client.caps_features("mallory@example.org/a"), nullptr);
}

TEST_F(ClientCaps, OurOwnReflectedPresenceIsNotAskedAbout) {
  presence("alice@example.org/desk", kExodusNode, kExodusVer);
  EXPECT_TRUE(sent().empty());
}

TEST_F(ClientCaps, OwnVerIsTheSha1OfOurDiscoInfo) {
  // §5.1 by hand: one identity, the base features sorted.
  EXPECT_EQ(client.caps_ver(), "OQ1tLJm4S6YTj2OS5s5k92ieQls=");
  client.add_feature("urn:xmpp:jingle:apps:file-transfer:5");
  EXPECT_EQ(client.caps_ver(), "D3w5Ny83fWRE+bNgy4FeU0VbrK0=");
  client.add_feature(ns::kDiscoInfo);  // listed once only, or the ver would not be trusted
  EXPECT_EQ(client.caps_ver(), "D3w5Ny83fWRE+bNgy4FeU0VbrK0=");
}

TEST_F(ClientCaps, OwnPresenceCarriesCapsAndNewFeaturesAnnounceAgain) {
  client.send_presence("away", "", -1);
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  const xml::Element* c = out.front().child("c", xmpp::kCaps);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->attr("hash"), "sha-1");
  EXPECT_EQ(c->attr("node"), Client::kCapsNode);
  EXPECT_EQ(c->attr("ver"), client.caps_ver());
  EXPECT_EQ(out.front().child_text("show"), "away");
  // §4: a feature added later changes the ver, and the presence goes out again with it.
  client.add_feature("urn:xmpp:jingle:apps:file-transfer:5");
  client.add_feature("urn:xmpp:jingle:1");
  client.add_feature("urn:xmpp:jingle:apps:file-transfer:5");
  EXPECT_TRUE(sent().empty());  // once they are all added
  poll();
  out = sent();
  ASSERT_EQ(out.size(), 1u);  // one presence for the two new features
  c = out.front().child("c", xmpp::kCaps);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->attr("ver"), client.caps_ver());
  EXPECT_NE(c->attr("ver"), "OQ1tLJm4S6YTj2OS5s5k92ieQls=");
  EXPECT_EQ(out.front().child_text("priority"), "-1");
  // A new session announces the latest.
  EXPECT_NE(impl.last_presence.find(client.caps_ver()), std::string::npos);
}

TEST_F(ClientCaps, DiscoInfoOfOurNodeAnswersWithThatNodeAndVerifies) {
  client.add_feature("urn:xmpp:jingle:apps:file-transfer:5");
  const std::string node = std::string(Client::kCapsNode) + "#" + client.caps_ver();
  receive(
      "<iq from='bob@example.org/a' to='alice@example.org/desk' type='get' id='q1'>"
      "<query xmlns='http://jabber.org/protocol/disco#info' node='" +
      node + "'/></iq>");
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out.front().attr("type"), "result");
  const xml::Element* q = out.front().child("query", ns::kDiscoInfo);
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->attr("node"), node);
  EXPECT_TRUE(xmpp::caps_verify("sha-1", client.caps_ver(), *q));
  // A node that is not ours.
  receive(
      "<iq from='bob@example.org/a' to='alice@example.org/desk' type='get' id='q2'>"
      "<query xmlns='http://jabber.org/protocol/disco#info' node='" +
      std::string(Client::kCapsNode) + "#old='/></iq>");
  out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out.front().attr("type"), "error");
  // Without a node: the plain answer, whose caps feature is listed.
  receive(
      "<iq from='bob@example.org/a' to='alice@example.org/desk' type='get' id='q3'>"
      "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
  out = sent();
  ASSERT_EQ(out.size(), 1u);
  q = out.front().child("query", ns::kDiscoInfo);
  ASSERT_NE(q, nullptr);
  EXPECT_FALSE(q->has_attr("node"));
  EXPECT_TRUE(xmpp::caps_verify("sha-1", client.caps_ver(), *q));
}

TEST(ClientCapsCache, VerifiedCapsAreKeptInAPrivateFileForTheNextSession) {
  char dir[] = "/tmp/kabar-caps-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/caps";
  {
    struct First : ClientCaps {
      explicit First(const std::string& p) : ClientCaps(p) {}
      void TestBody() override {}
    } first(path);
    first.presence("bob@example.org/a", kExodusNode, kExodusVer);
    std::string id = first.asked("bob@example.org/a", std::string(kExodusNode) + "#" + kExodusVer);
    ASSERT_FALSE(id.empty());
    first.answer("bob@example.org/a", id, kExodusInfo);
  }
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  {
    struct Second : ClientCaps {
      explicit Second(const std::string& p) : ClientCaps(p) {}
      void TestBody() override {}
    } second(path);
    second.presence("bob@example.org/z", kExodusNode, kExodusVer);
    EXPECT_TRUE(second.sent().empty());  // known from the file: nothing asked
    EXPECT_TRUE(has(second.client.caps_features("bob@example.org/z"), kMuc));
  }
  std::remove(path.c_str());
  ::rmdir(dir);
}

}  // namespace
}  // namespace kabar::client
