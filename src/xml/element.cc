#include "xml/element.h"

#include <algorithm>

namespace kabar::xml {

namespace {

// Empty `name` or `xmlns` in a filter matches anything.
bool matches(const Element& el, std::string_view name, std::string_view xmlns) {
  return (name.empty() || el.name() == name) && (xmlns.empty() || el.xmlns() == xmlns);
}

}  // namespace

Element::Element(std::string name, std::string xmlns)
    : name_(std::move(name)), xmlns_(std::move(xmlns)) {}

Element::Element(const Element& other)
    : name_(other.name_), xmlns_(other.xmlns_), attrs_(other.attrs_) {
  nodes_.reserve(other.nodes_.size());
  for (const Node& node : other.nodes_) {
    if (const auto* child = std::get_if<std::unique_ptr<Element>>(&node)) {
      nodes_.emplace_back(std::make_unique<Element>(**child));
    } else {
      nodes_.emplace_back(std::get<std::string>(node));
    }
  }
}

Element& Element::operator=(const Element& other) {
  if (this != &other) {
    Element copy(other);
    *this = std::move(copy);
  }
  return *this;
}

std::string_view Element::attr(std::string_view name) const {
  for (const Attribute& a : attrs_) {
    if (a.name == name) return a.value;
  }
  return {};
}

bool Element::has_attr(std::string_view name) const {
  return std::any_of(attrs_.begin(), attrs_.end(),
                     [&](const Attribute& a) { return a.name == name; });
}

Element& Element::set_attr(std::string_view name, std::string_view value) {
  for (Attribute& a : attrs_) {
    if (a.name == name) {
      a.value.assign(value);
      return *this;
    }
  }
  attrs_.push_back(Attribute{std::string(name), std::string(value)});
  return *this;
}

void Element::remove_attr(std::string_view name) {
  std::erase_if(attrs_, [&](const Attribute& a) { return a.name == name; });
}

Element& Element::add_child(Element child) {
  auto& slot = nodes_.emplace_back(std::make_unique<Element>(std::move(child)));
  return *std::get<std::unique_ptr<Element>>(slot);
}

Element& Element::add_child(std::string name, std::string xmlns) {
  return add_child(Element(std::move(name), std::move(xmlns)));
}

Element& Element::add_text(std::string_view text) {
  if (text.empty()) return *this;
  if (!nodes_.empty()) {
    if (auto* last = std::get_if<std::string>(&nodes_.back())) {
      last->append(text);
      return *this;
    }
  }
  nodes_.emplace_back(std::string(text));
  return *this;
}

const Element* Element::child(std::string_view name, std::string_view xmlns) const {
  for (const Node& node : nodes_) {
    if (const auto* c = std::get_if<std::unique_ptr<Element>>(&node)) {
      if (matches(**c, name, xmlns)) return c->get();
    }
  }
  return nullptr;
}

Element* Element::child(std::string_view name, std::string_view xmlns) {
  return const_cast<Element*>(std::as_const(*this).child(name, xmlns));
}

std::vector<const Element*> Element::children(std::string_view name, std::string_view xmlns) const {
  std::vector<const Element*> out;
  for (const Node& node : nodes_) {
    if (const auto* c = std::get_if<std::unique_ptr<Element>>(&node)) {
      if (matches(**c, name, xmlns)) out.push_back(c->get());
    }
  }
  return out;
}

std::vector<Element*> Element::children(std::string_view name, std::string_view xmlns) {
  std::vector<Element*> out;
  for (Node& node : nodes_) {
    if (auto* c = std::get_if<std::unique_ptr<Element>>(&node)) {
      if (matches(**c, name, xmlns)) out.push_back(c->get());
    }
  }
  return out;
}

const Element* Element::first_child() const { return child({}, {}); }

void Element::remove_children(std::string_view name, std::string_view xmlns) {
  std::erase_if(nodes_, [&](const Node& node) {
    const auto* c = std::get_if<std::unique_ptr<Element>>(&node);
    return c != nullptr && matches(**c, name, xmlns);
  });
  // Removing an element can leave two text runs adjacent; keep the "merged" invariant.
  for (std::size_t i = 1; i < nodes_.size();) {
    auto* prev = std::get_if<std::string>(&nodes_[i - 1]);
    auto* cur = std::get_if<std::string>(&nodes_[i]);
    if (prev != nullptr && cur != nullptr) {
      prev->append(*cur);
      nodes_.erase(nodes_.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
}

std::string Element::text() const {
  std::string out;
  for (const Node& node : nodes_) {
    if (const auto* s = std::get_if<std::string>(&node)) out += *s;
  }
  return out;
}

void Element::set_text(std::string_view text) {
  nodes_.clear();
  add_text(text);
}

std::string Element::child_text(std::string_view name, std::string_view xmlns) const {
  const Element* c = child(name, xmlns);
  return c != nullptr ? c->text() : std::string();
}

}  // namespace kabar::xml
