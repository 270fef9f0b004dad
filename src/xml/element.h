// An XML element tree for XMPP stanzas: namespace-aware, copyable, with text and element children
// kept in document order.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace kabar::xml {

// The namespace the prefix `xml` is bound to (Namespaces in XML 1.0 §3).
inline constexpr std::string_view kXmlNamespace = "http://www.w3.org/XML/1998/namespace";

// An attribute as XMPP uses them. `name` is the local name for attributes without a namespace
// ("to", "type"); "xml:lang" for the XML namespace's lang; for any other namespaced attribute the
// Clark form "{uri}local".
struct Attribute {
  std::string name;
  std::string value;
};

class Element {
 public:
  // A child is either an element or a run of character data.
  using Node = std::variant<std::unique_ptr<Element>, std::string>;

  Element() = default;
  explicit Element(std::string name, std::string xmlns = {});
  Element(const Element& other);
  Element& operator=(const Element& other);
  Element(Element&&) noexcept = default;
  Element& operator=(Element&&) noexcept = default;
  ~Element() = default;

  const std::string& name() const { return name_; }
  // The element's namespace URI after namespace processing (empty if none).
  const std::string& xmlns() const { return xmlns_; }
  void set_name(std::string name) { name_ = std::move(name); }
  void set_xmlns(std::string xmlns) { xmlns_ = std::move(xmlns); }
  bool is(std::string_view name, std::string_view xmlns) const {
    return name_ == name && xmlns_ == xmlns;
  }

  // Attributes.
  const std::vector<Attribute>& attributes() const { return attrs_; }
  // The value, or an empty view when absent.
  std::string_view attr(std::string_view name) const;
  bool has_attr(std::string_view name) const;
  // Sets (adding or replacing) an attribute; returns *this for chaining.
  Element& set_attr(std::string_view name, std::string_view value);
  void remove_attr(std::string_view name);
  void reserve_attributes(std::size_t n) { attrs_.reserve(n); }
  // Adds an attribute the caller knows is not there yet (a parser whose input has unique names).
  void add_new_attr(std::string name, std::string value) {
    attrs_.push_back(Attribute{std::move(name), std::move(value)});
  }

  // Children.
  const std::vector<Node>& nodes() const { return nodes_; }
  // Appends a child element and returns a reference to it (stable until the next mutation of
  // this element's children... the pointee is heap allocated, so it stays valid until removed).
  Element& add_child(Element child);
  Element& add_child(std::string name, std::string xmlns);
  // Appends character data (merged with a preceding text node).
  Element& add_text(std::string_view text);
  // The first child element with this name and namespace, or nullptr. An empty xmlns matches any
  // namespace.
  const Element* child(std::string_view name, std::string_view xmlns = {}) const;
  Element* child(std::string_view name, std::string_view xmlns = {});
  // All child elements (optionally filtered by name and namespace; empty matches any).
  std::vector<const Element*> children(std::string_view name = {},
                                       std::string_view xmlns = {}) const;
  std::vector<Element*> children(std::string_view name = {}, std::string_view xmlns = {});
  // The first child element, whatever its name (nullptr if none).
  const Element* first_child() const;
  // Removes all child elements matching name and namespace (empty matches any).
  void remove_children(std::string_view name = {}, std::string_view xmlns = {});
  void clear_children() { nodes_.clear(); }
  // Concatenated character data of direct text children.
  std::string text() const;
  // Replaces all children with one text node.
  void set_text(std::string_view text);
  // Text of the first matching child element, or empty.
  std::string child_text(std::string_view name, std::string_view xmlns = {}) const;

 private:
  std::string name_;
  std::string xmlns_;
  std::vector<Attribute> attrs_;
  std::vector<Node> nodes_;
};

}  // namespace kabar::xml
