#include <gtest/gtest.h>
#include <stringprep.h>

#include <cstring>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "xmpp/jid.h"

namespace kabar::xmpp {
namespace {

struct ValidCase {
  const char* input;
  const char* local;
  const char* domain;
  const char* resource;
};

// RFC 7622 §3.5.1 examples of valid JIDs, with the parts stringprep (RFC 6122 profiles, as
// Prosody uses) produces.
const ValidCase kRfc7622Valid[] = {
    {"juliet@example.com", "juliet", "example.com", ""},
    {"juliet@example.com/foo", "juliet", "example.com", "foo"},
    {"juliet@example.com/foo bar", "juliet", "example.com", "foo bar"},
    {"juliet@example.com/foo@bar", "juliet", "example.com", "foo@bar"},
    {"foo\\20bar@example.com", "foo\\20bar", "example.com", ""},
    {"fussball@example.com", "fussball", "example.com", ""},
    // Nodeprep case-folds U+00DF to "ss" (RFC 3454 B.2); PRECIS (RFC 7622) would keep it.
    {"fu\xC3\x9F"
     "ball@example.com",
     "fussball", "example.com", ""},
    {"\xCF\x80@example.com", "\xCF\x80", "example.com", ""},
    // GREEK CAPITAL SIGMA folds to small sigma.
    {"\xCE\xA3@example.com", "\xCF\x83", "example.com", ""},
    {"\xCF\x83@example.com", "\xCF\x83", "example.com", ""},
    // Final sigma: RFC 7622 keeps it distinct; stringprep's B.2 folds it to sigma.
    {"\xCF\x82@example.com", "\xCF\x83", "example.com", ""},
    {"king@example.com/\xE2\x99\x9A", "king", "example.com", "\xE2\x99\x9A"},
    {"example.com", "", "example.com", ""},
    {"example.com/foobar", "", "example.com", "foobar"},
    {"a.example.com/b@example.net", "", "a.example.com", "b@example.net"},
};

TEST(Jid, Rfc7622ValidExamples) {
  for (const auto& c : kRfc7622Valid) {
    SCOPED_TRACE(c.input);
    auto j = Jid::parse(c.input);
    ASSERT_TRUE(j.has_value());
    EXPECT_EQ(j->local(), c.local);
    EXPECT_EQ(j->domain(), c.domain);
    EXPECT_EQ(j->resource(), c.resource);
    auto again = Jid::parse(j->str());
    ASSERT_TRUE(again.has_value());
    EXPECT_EQ(*again, *j);
  }
}

// RFC 7622 §3.5.2 examples of invalid JIDs that stringprep rejects too.
TEST(Jid, Rfc7622InvalidExamples) {
  const char* kInvalid[] = {
      "\"juliet\"@example.com",  // quotation marks in the localpart
      "foo bar@example.com",     // space in the localpart
      "@example.com/",           // zero-length localpart and resourcepart
      "juliet@",                 // zero-length domainpart
      "/foobar",                 // zero-length domainpart
  };
  for (const char* in : kInvalid) {
    SCOPED_TRACE(in);
    EXPECT_FALSE(Jid::parse(in).has_value());
  }
}

// The RFC 7622 §3.5.2 examples that rely on PRECIS rules stringprep does not have. We follow
// RFC 6122 (as Prosody does), so these are accepted and normalized; pinned here so a change of
// profile is a visible decision.
TEST(Jid, Rfc7622InvalidExamplesStringprepAccepts) {
  // Leading space in the resourcepart: Resourceprep allows ASCII space anywhere.
  auto r = Jid::parse("juliet@example.com/ foo");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->resource(), " foo");
  // ROMAN NUMERAL FOUR: Nodeprep's NFKC turns it into "iv".
  auto h = Jid::parse("henry\xE2\x85\xA3@example.com");
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->local(), "henryiv");
  // BLACK CHESS KING in the localpart: symbols are not prohibited by Nodeprep.
  auto k = Jid::parse("\xE2\x99\x9A@example.com");
  ASSERT_TRUE(k.has_value());
  EXPECT_EQ(k->local(), "\xE2\x99\x9A");
}

TEST(Jid, NodeprepProhibitedCharacters) {
  for (const char* in : {"a\"b@x.example", "a&b@x.example", "a'b@x.example", "a:b@x.example",
                         "a<b@x.example", "a>b@x.example", "a b@x.example"}) {
    SCOPED_TRACE(in);
    EXPECT_FALSE(Jid::parse(in).has_value());
  }
  // '@' and '/' can never reach Nodeprep through parse(), but from_parts must refuse them.
  EXPECT_FALSE(Jid::from_parts("a@b", "x.example").has_value());
  EXPECT_FALSE(Jid::from_parts("a/b", "x.example").has_value());
  EXPECT_FALSE(nodeprep("a@b").has_value());
  EXPECT_EQ(nodeprep("Juliet"), "juliet");
}

TEST(Jid, CaseFolding) {
  auto j = Jid::parse("JuLiEt@EXAMPLE.Com/Balcony");
  ASSERT_TRUE(j.has_value());
  EXPECT_EQ(j->local(), "juliet");
  EXPECT_EQ(j->domain(), "example.com");
  EXPECT_EQ(j->resource(), "Balcony");  // Resourceprep keeps case
  EXPECT_EQ(j->str(), "juliet@example.com/Balcony");
  EXPECT_EQ(*j, *Jid::parse("juliet@example.com/Balcony"));
  EXPECT_NE(*j, *Jid::parse("juliet@example.com/balcony"));
}

TEST(Jid, SeparatorRules) {
  // RFC 7622 §3.1: the first '/' starts the resourcepart; the first '@' before it ends the
  // localpart, so '@' and '/' are ordinary characters in the resourcepart.
  auto j = Jid::parse("a@b.example/c@d/e");
  ASSERT_TRUE(j.has_value());
  EXPECT_EQ(j->local(), "a");
  EXPECT_EQ(j->domain(), "b.example");
  EXPECT_EQ(j->resource(), "c@d/e");
  auto d = Jid::parse("b.example/c@d");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->local(), "");
  EXPECT_EQ(d->resource(), "c@d");
  EXPECT_FALSE(Jid::parse("a@b@c.example").has_value());  // second '@' lands in the domain
  EXPECT_FALSE(Jid::parse("a@b.example/").has_value());
  EXPECT_FALSE(Jid::parse("@b.example").has_value());
  EXPECT_FALSE(Jid::parse("").has_value());
  EXPECT_FALSE(Jid::parse("/").has_value());
  EXPECT_FALSE(Jid::parse("@").has_value());
}

TEST(Jid, Domainpart) {
  EXPECT_EQ(Jid::parse("example.com.")->domain(), "example.com");  // one trailing dot removed
  EXPECT_FALSE(Jid::parse("example.com..").has_value());
  EXPECT_FALSE(Jid::parse("example..com").has_value());
  EXPECT_FALSE(Jid::parse(".example.com").has_value());
  EXPECT_FALSE(Jid::parse(".").has_value());
  EXPECT_FALSE(Jid::parse("exa mple.com").has_value());
  EXPECT_FALSE(Jid::parse("exa<mple.com").has_value());
  EXPECT_EQ(Jid::parse("192.0.2.1")->domain(), "192.0.2.1");
  EXPECT_EQ(Jid::parse("u@[2001:DB8::1]/r")->domain(), "[2001:db8::1]");
  EXPECT_FALSE(Jid::parse("[2001:db8::1").has_value());
  EXPECT_FALSE(Jid::parse("[not-an-address]").has_value());
  EXPECT_FALSE(Jid::parse("[]").has_value());
  // Found by fuzzing: inet_pton stops at an embedded NUL, so "[28::\0junk]" must be refused.
  EXPECT_FALSE(Jid::parse(std::string("u@[28::\0\0001]", 11)).has_value());
  EXPECT_FALSE(Jid::parse("[::1%eth0]").has_value());
  // IDN: Nameprep lower-cases non-ASCII letters too.
  EXPECT_EQ(Jid::parse("\xC3\x84XAMPLE.com")->domain(), "\xC3\xA4xample.com");
  // IDEOGRAPHIC FULL STOP separates labels (RFC 3490 §3.1).
  EXPECT_EQ(Jid::parse("example\xE3\x80\x82"
                       "com")
                ->domain(),
            "example.com");
  EXPECT_FALSE(Jid::parse(std::string(64, 'a') + ".example").has_value());
  EXPECT_TRUE(Jid::parse(std::string(63, 'a') + ".example").has_value());
}

TEST(Jid, LengthLimits) {
  const std::string local1023(1023, 'a');
  const std::string local1024(1024, 'a');
  EXPECT_TRUE(Jid::parse(local1023 + "@example.com").has_value());
  EXPECT_FALSE(Jid::parse(local1024 + "@example.com").has_value());
  EXPECT_TRUE(Jid::parse("example.com/" + std::string(1023, 'r')).has_value());
  EXPECT_FALSE(Jid::parse("example.com/" + std::string(1024, 'r')).has_value());
  // Domain: 16 labels of 63 characters and separators = 1023 octets.
  std::string domain;
  for (int i = 0; i < 16; ++i) domain += (i ? "." : "") + std::string(63, 'd');
  ASSERT_EQ(domain.size(), 1023u);
  EXPECT_TRUE(Jid::parse(domain).has_value());
  EXPECT_FALSE(Jid::parse(domain + "d").has_value());
  auto full = Jid::parse(local1023 + "@" + domain + "/" + std::string(1023, 'r'));
  ASSERT_TRUE(full.has_value());
  EXPECT_EQ(full->str().size(), 3071u);
  // Preparation may lengthen a part: 512 sharp s become 1024 octets of "ss".
  std::string sharp_s;
  for (int i = 0; i < 512; ++i) sharp_s += "\xC3\x9F";
  EXPECT_FALSE(Jid::parse(sharp_s + "@example.com").has_value());
}

TEST(Jid, RejectsBadEncodingAndControls) {
  EXPECT_FALSE(Jid::parse("ju\xFFliet@example.com").has_value());
  EXPECT_FALSE(Jid::parse("juliet@example.com/\xC0\xAF").has_value());      // overlong '/'
  EXPECT_FALSE(Jid::parse("juliet@example.com/\xED\xA0\x80").has_value());  // surrogate
  EXPECT_FALSE(Jid::parse(std::string("jul\0iet@example.com", 19)).has_value());
  EXPECT_FALSE(Jid::parse("juliet@example.com/a\x01z").has_value());  // control character
  // A localpart that Nodeprep maps to nothing (SOFT HYPHEN) is empty, hence invalid.
  EXPECT_FALSE(Jid::parse("\xC2\xAD@example.com").has_value());
  // Unassigned in Unicode 3.2 (U+0221) is refused for stored strings.
  EXPECT_FALSE(Jid::parse("\xC8\xA1@example.com").has_value());
}

TEST(Jid, BareFullAndAccessors) {
  auto j = Jid::parse("romeo@montague.example/orchard");
  ASSERT_TRUE(j.has_value());
  EXPECT_FALSE(j->is_bare());
  EXPECT_FALSE(j->is_domain());
  EXPECT_FALSE(j->empty());
  EXPECT_EQ(j->str(), "romeo@montague.example/orchard");
  EXPECT_EQ(j->bare_str(), "romeo@montague.example");
  Jid b = j->bare();
  EXPECT_TRUE(b.is_bare());
  EXPECT_EQ(b.str(), "romeo@montague.example");
  EXPECT_EQ(b.with_resource("garden").str(), "romeo@montague.example/garden");
  EXPECT_EQ(b.with_resource("orchard"), *j);

  auto d = Jid::parse("montague.example");
  ASSERT_TRUE(d.has_value());
  EXPECT_TRUE(d->is_domain());
  EXPECT_TRUE(d->is_bare());
  EXPECT_EQ(d->bare_str(), "montague.example");

  Jid empty;
  EXPECT_TRUE(empty.empty());
  EXPECT_EQ(empty.str(), "");

  std::unordered_set<Jid> set{*j, b, *Jid::parse("ROMEO@Montague.Example/orchard")};
  EXPECT_EQ(set.size(), 2u);
}

TEST(Jid, FromParts) {
  auto j = Jid::from_parts("Juliet", "Capulet.Example", "Balcony");
  ASSERT_TRUE(j.has_value());
  EXPECT_EQ(j->str(), "juliet@capulet.example/Balcony");
  EXPECT_EQ(*j, *Jid::parse("juliet@capulet.example/Balcony"));
  auto bare = Jid::from_parts("juliet", "capulet.example");
  ASSERT_TRUE(bare.has_value());
  EXPECT_TRUE(bare->is_bare());
  auto domain = Jid::from_parts("", "capulet.example");
  ASSERT_TRUE(domain.has_value());
  EXPECT_TRUE(domain->is_domain());
  // The resource may hold '/' and '@' through from_parts as through parse().
  EXPECT_EQ(Jid::from_parts("a", "b.example", "x/y@z")->str(), "a@b.example/x/y@z");
  EXPECT_FALSE(Jid::from_parts("a", "").has_value());
  EXPECT_FALSE(Jid::from_parts("a b", "b.example").has_value());
  EXPECT_FALSE(Jid::from_parts("a", "b..example").has_value());
  EXPECT_FALSE(Jid::from_parts("a", "b.example", "\xC2\xAD").has_value());
}

TEST(Jid, PrepFunctions) {
  EXPECT_EQ(nameprep("EXAMPLE.COM"), "example.com");
  EXPECT_EQ(resourceprep("Foo"), "Foo");
  EXPECT_FALSE(nodeprep("").has_value());
  EXPECT_FALSE(nameprep("").has_value());
  EXPECT_FALSE(resourceprep("").has_value());
}

}  // namespace
}  // namespace kabar::xmpp

namespace kabar::xmpp {
// The ASCII fast path in jid.cc must give exactly what libidn's profiles give.
namespace {
std::optional<std::string> libidn_profile(const std::string& in, const Stringprep_profile* p) {
  std::string buf(in.size() + 64, '\0');
  std::memcpy(buf.data(), in.data(), in.size());
  if (stringprep(buf.data(), buf.size(), STRINGPREP_NO_UNASSIGNED, p) != STRINGPREP_OK) {
    return std::nullopt;
  }
  buf.resize(std::strlen(buf.c_str()));
  if (buf.empty()) return std::nullopt;
  return buf;
}
}  // namespace

TEST(JidTest, AsciiFastPathMatchesLibidn) {
  for (int c = 0x20; c <= 0x7E; ++c) {
    for (const std::string& in : {std::string(1, static_cast<char>(c)),
                                  "Ab" + std::string(1, static_cast<char>(c)) + "Yz"}) {
      SCOPED_TRACE(in);
      auto node = libidn_profile(in, stringprep_xmpp_nodeprep);
      if (node && node->find_first_of("\"&'/:<>@ ") != std::string::npos) node.reset();
      EXPECT_EQ(nodeprep(in), node);
      EXPECT_EQ(resourceprep(in), libidn_profile(in, stringprep_xmpp_resourceprep));
      // nameprep() adds the DNS label rules on top; compare where libidn's result passes them.
      auto name = libidn_profile(in, stringprep_nameprep);
      auto ours = nameprep(in);
      if (ours) {
        EXPECT_EQ(ours, name);
      }
      if (name &&
          name->find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-_") == std::string::npos) {
        EXPECT_EQ(ours, name);
      }
    }
  }
}

// canonical_jid() promises: what it splits, Jid::parse() accepts and gives back unchanged, with
// the same parts. Every string of up to four characters from an alphabet of the interesting
// bytes (separators, case, prohibited and non-ASCII bytes), and some longer ones.
TEST(JidTest, CanonicalJidIsWhatParseGivesBack) {
  const std::string alphabet("aZ@/.-_ \"\x01\x80:", 12);
  std::vector<std::string> inputs{"u1@bench.localhost",
                                  "u1@bench.localhost/kb 1",
                                  "bench.localhost",
                                  "bench.localhost/r",
                                  "a@b/c@d/e",
                                  "a@b.",
                                  "a@[::1]",
                                  "a@" + std::string(63, 'x') + ".example",
                                  "a@" + std::string(64, 'x') + ".example",
                                  std::string(1023, 'l') + "@d/" + std::string(1023, 'r'),
                                  std::string(1024, 'l') + "@d"};
  std::vector<std::string> level{""};
  for (int len = 1; len <= 4; ++len) {
    std::vector<std::string> next;
    for (const auto& prefix : level) {
      for (char c : alphabet) next.push_back(prefix + c);
    }
    inputs.insert(inputs.end(), next.begin(), next.end());
    level = std::move(next);
  }
  std::size_t canonical = 0;
  for (const auto& in : inputs) {
    const auto view = canonical_jid(in);
    const auto jid = Jid::parse(in);
    if (!view) {
      // Declining is always allowed; but printable lower-case ASCII that parses to itself is
      // exactly what canonical_jid() is for.
      if (jid && jid->str() == in && in.find_first_of("\x01\x80") == std::string::npos &&
          in.find('Z') == std::string::npos && jid->domain().find('[') == std::string::npos &&
          in.size() <= 4) {
        ADD_FAILURE() << "declined " << in;
      }
      continue;
    }
    ++canonical;
    SCOPED_TRACE(in);
    ASSERT_TRUE(jid.has_value());
    EXPECT_EQ(jid->str(), in);
    EXPECT_EQ(view->local, jid->local());
    EXPECT_EQ(view->domain, jid->domain());
    EXPECT_EQ(view->resource, jid->resource());
    EXPECT_EQ(view->bare, jid->bare_str());
  }
  EXPECT_GT(canonical, 500u);  // 706 of the strings above
  EXPECT_TRUE(canonical_jid("u1@bench.localhost/kb 1").has_value());
  EXPECT_FALSE(canonical_jid("U1@bench.localhost").has_value());  // parse() folds it
  EXPECT_FALSE(canonical_jid("a@b.").has_value());                // parse() drops the dot
  EXPECT_FALSE(canonical_jid("a@[::1]").has_value());             // left to parse()
}

// bare_part()/resource_part(): a valid JID's text split at its first '/', the rest of the
// resource kept whole.
TEST(JidTest, BareAndResourcePartsSplitAtTheFirstSlash) {
  EXPECT_EQ(bare_part("alice@example.com/phone/2"), "alice@example.com");
  EXPECT_EQ(resource_part("alice@example.com/phone/2"), "phone/2");
  EXPECT_EQ(bare_part("alice@example.com"), "alice@example.com");
  EXPECT_EQ(resource_part("alice@example.com"), "");
  EXPECT_EQ(bare_part("example.com/r"), "example.com");
  EXPECT_EQ(resource_part("example.com/"), "");
}

}  // namespace kabar::xmpp
