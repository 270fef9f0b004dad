// Entity capabilities (XEP-0115): the verification string and hash, checked against the XEP's
// own examples, and the answers §5.4 says not to trust.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "xmpp/caps.h"
#include "xmpp/stanza.h"

namespace kabar::xmpp {
namespace {

xml::Element parse(std::string_view bytes) {
  auto e = xmpp::parse_stanza(bytes);
  EXPECT_TRUE(e.has_value()) << bytes;
  return e ? std::move(*e) : xml::Element();
}

// XEP-0115 §5.2, the simple generation example.
constexpr std::string_view kSimple =
    "<query xmlns='http://jabber.org/protocol/disco#info'>"
    "<identity category='client' name='Exodus 0.9.1' type='pc'/>"
    "<feature var='http://jabber.org/protocol/muc'/>"
    "<feature var='http://jabber.org/protocol/disco#info'/>"
    "<feature var='http://jabber.org/protocol/disco#items'/>"
    "<feature var='http://jabber.org/protocol/caps'/></query>";

TEST(Caps, SimpleExampleOfTheXep) {
  auto s = caps_verification_string(parse(kSimple));
  ASSERT_TRUE(s);
  EXPECT_EQ(*s,
            "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<"
            "http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<"
            "http://jabber.org/protocol/muc<");
  EXPECT_EQ(caps_hash("sha-1", *s), "QgayPKawpkPSDYmwT/WM94uAlu0=");
  EXPECT_FALSE(caps_hash("md4", *s));
}

TEST(Caps, IdentitiesByLanguageAndFormsSorted) {
  auto s = caps_verification_string(parse(
      "<query xmlns='http://jabber.org/protocol/disco#info'>"
      "<identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>"
      "<identity xml:lang='el' category='client' name='P 0.11' type='pc'/>"
      "<feature var='http://jabber.org/protocol/caps'/>"
      "<x xmlns='jabber:x:data' type='result'>"
      "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>"
      "<field var='os'><value>Mac</value></field>"
      "<field var='ip_version'><value>ipv6</value><value>ipv4</value></field>"
      "</x></query>"));
  ASSERT_TRUE(s);
  EXPECT_EQ(*s,
            "client/pc/el/P 0.11<client/pc/en/Psi 0.11<http://jabber.org/protocol/caps<"
            "urn:xmpp:dataforms:softwareinfo<ip_version<ipv4<ipv6<os<Mac<");
}

TEST(Caps, UntrustworthyAnswers) {
  // §5.4: duplicate features, a FORM_TYPE that is not hidden, two forms of one FORM_TYPE.
  EXPECT_FALSE(caps_verification_string(parse(
      "<query xmlns='http://jabber.org/protocol/disco#info'><feature var='a'/><feature var='a'/>"
      "</query>")));
  EXPECT_FALSE(caps_verification_string(
      parse("<query xmlns='http://jabber.org/protocol/disco#info'><x xmlns='jabber:x:data' "
            "type='result'><field var='FORM_TYPE'><value>urn:a</value></field></x></query>")));
  const std::string form =
      "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>"
      "<value>urn:a</value></field></x>";
  EXPECT_FALSE(caps_verification_string(
      parse("<query xmlns='http://jabber.org/protocol/disco#info'>" + form + form + "</query>")));
}

TEST(Caps, CapsOfPresence) {
  auto c = caps_of(
      parse("<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://n' "
            "ver='v='/></presence>"));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->hash, "sha-1");
  EXPECT_EQ(c->node, "http://n");
  EXPECT_EQ(c->ver, "v=");
  EXPECT_FALSE(caps_of(parse("<presence/>")));
}

}  // namespace
}  // namespace kabar::xmpp
