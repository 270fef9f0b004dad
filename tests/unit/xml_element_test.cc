#include <gtest/gtest.h>

#include "xml/element.h"

namespace kabar::xml {
namespace {

TEST(XmlElement, NameNamespaceAndIs) {
  Element e("message", "jabber:client");
  EXPECT_EQ(e.name(), "message");
  EXPECT_EQ(e.xmlns(), "jabber:client");
  EXPECT_TRUE(e.is("message", "jabber:client"));
  EXPECT_FALSE(e.is("message", "jabber:server"));
  EXPECT_FALSE(e.is("iq", "jabber:client"));
  e.set_name("iq");
  e.set_xmlns("jabber:server");
  EXPECT_TRUE(e.is("iq", "jabber:server"));
  EXPECT_TRUE(Element().name().empty());
}

TEST(XmlElement, Attributes) {
  Element e("iq", "jabber:client");
  EXPECT_FALSE(e.has_attr("id"));
  EXPECT_EQ(e.attr("id"), "");
  e.set_attr("id", "1").set_attr("type", "get");
  EXPECT_TRUE(e.has_attr("id"));
  EXPECT_EQ(e.attr("id"), "1");
  e.set_attr("id", "2");
  ASSERT_EQ(e.attributes().size(), 2u);
  EXPECT_EQ(e.attributes()[0].name, "id");
  EXPECT_EQ(e.attributes()[0].value, "2");
  e.set_attr("empty", "");
  EXPECT_TRUE(e.has_attr("empty"));
  e.remove_attr("id");
  EXPECT_FALSE(e.has_attr("id"));
  EXPECT_EQ(e.attributes().size(), 2u);
  e.remove_attr("absent");
  EXPECT_EQ(e.attributes().size(), 2u);
}

TEST(XmlElement, ChildrenLookup) {
  Element iq("iq", "jabber:client");
  Element& q = iq.add_child("query", "jabber:iq:roster");
  q.add_child("item", "jabber:iq:roster").set_attr("jid", "a@b");
  q.add_child("item", "jabber:iq:roster").set_attr("jid", "c@d");
  q.add_child("item", "urn:other");
  iq.add_child(Element("error", "jabber:client"));

  EXPECT_EQ(iq.child("query", "jabber:iq:roster"), &q);
  EXPECT_EQ(iq.child("query"), &q);
  EXPECT_EQ(iq.child("query", "urn:other"), nullptr);
  EXPECT_EQ(iq.first_child(), &q);
  EXPECT_EQ(q.children("item").size(), 3u);
  EXPECT_EQ(q.children("item", "jabber:iq:roster").size(), 2u);
  EXPECT_EQ(q.children({}, "urn:other").size(), 1u);
  EXPECT_EQ(iq.children().size(), 2u);
  EXPECT_EQ(q.children("item")[1]->attr("jid"), "c@d");

  const Element& cq = q;
  EXPECT_EQ(cq.child("item")->attr("jid"), "a@b");
  EXPECT_EQ(cq.children("item", "jabber:iq:roster").size(), 2u);

  // Mutable access through child().
  q.child("item", "urn:other")->set_attr("x", "y");
  EXPECT_EQ(q.children({}, "urn:other")[0]->attr("x"), "y");
  EXPECT_EQ(Element("a").first_child(), nullptr);
}

TEST(XmlElement, ChildReferencesStayValidWhenMoreAreAdded) {
  Element parent("p");
  Element& first = parent.add_child("c", "");
  for (int i = 0; i < 100; ++i) parent.add_child("c", "");
  first.set_attr("k", "v");
  EXPECT_EQ(parent.first_child()->attr("k"), "v");
}

TEST(XmlElement, TextNodesMergeAndKeepOrder) {
  Element p("p");
  p.add_text("a").add_text("b");
  p.add_text("");
  p.add_child("br", "");
  p.add_text("c");
  ASSERT_EQ(p.nodes().size(), 3u);
  EXPECT_EQ(std::get<std::string>(p.nodes()[0]), "ab");
  EXPECT_EQ(p.text(), "abc");
  p.remove_children("br");
  ASSERT_EQ(p.nodes().size(), 1u);
  EXPECT_EQ(p.text(), "abc");
}

TEST(XmlElement, SetTextReplacesChildren) {
  Element body("body");
  body.add_child("x", "");
  body.add_text("old");
  body.set_text("new");
  ASSERT_EQ(body.nodes().size(), 1u);
  EXPECT_EQ(body.text(), "new");
  body.set_text("");
  EXPECT_TRUE(body.nodes().empty());
}

TEST(XmlElement, ChildText) {
  Element m("message", "jabber:client");
  m.add_child("body", "jabber:client").add_text("hello");
  EXPECT_EQ(m.child_text("body"), "hello");
  EXPECT_EQ(m.child_text("body", "jabber:client"), "hello");
  EXPECT_EQ(m.child_text("subject"), "");
  EXPECT_EQ(m.child_text("body", "urn:x"), "");
}

TEST(XmlElement, RemoveChildrenFilters) {
  Element e("e");
  e.add_child("a", "urn:1");
  e.add_child("a", "urn:2");
  e.add_child("b", "urn:1");
  e.remove_children("a", "urn:1");
  EXPECT_EQ(e.children().size(), 2u);
  e.remove_children({}, "urn:1");
  ASSERT_EQ(e.children().size(), 1u);
  EXPECT_TRUE(e.first_child()->is("a", "urn:2"));
  e.add_text("t");
  e.remove_children();
  EXPECT_TRUE(e.children().empty());
  EXPECT_EQ(e.text(), "t");
  e.clear_children();
  EXPECT_TRUE(e.nodes().empty());
}

TEST(XmlElement, CopyIsDeep) {
  Element a("iq", "jabber:client");
  a.set_attr("id", "1");
  a.add_child("query", "urn:q").add_text("x");
  Element b(a);
  b.child("query")->set_text("y");
  b.set_attr("id", "2");
  EXPECT_EQ(a.child_text("query"), "x");
  EXPECT_EQ(b.child_text("query"), "y");
  EXPECT_EQ(a.attr("id"), "1");

  Element c("other");
  c = a;
  EXPECT_NE(c.child("query"), a.child("query"));
  EXPECT_EQ(c.child_text("query"), "x");
  EXPECT_TRUE(c.is("iq", "jabber:client"));
  const Element& same = c;
  c = same;
  EXPECT_EQ(c.child_text("query"), "x");
}

TEST(XmlElement, MoveKeepsChildAddresses) {
  Element a("iq", "jabber:client");
  Element* q = &a.add_child("query", "urn:q");
  Element b(std::move(a));
  EXPECT_EQ(b.child("query"), q);
  Element c;
  c = std::move(b);
  EXPECT_EQ(c.child("query"), q);
}

}  // namespace
}  // namespace kabar::xml
