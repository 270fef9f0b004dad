#include "xml/serializer.h"

#include <array>
#include <cstdint>
#include <vector>

#include "xml/chars.h"

namespace kabar::xml {

namespace {

constexpr std::string_view kXmlnsNamespace = "http://www.w3.org/2000/xmlns/";

// Splits a Clark-form name "{uri}local"; false when `name` is not in that form. A URI may
// itself contain '}' but an XML local name cannot, so the last '}' is the separator.
bool split_clark(std::string_view name, std::string_view& uri, std::string_view& local) {
  if (name.size() < 3 || name.front() != '{') return false;
  const std::size_t close = name.rfind('}');
  if (close == std::string_view::npos || close + 1 == name.size()) return false;
  uri = name.substr(1, close - 1);
  local = name.substr(close + 1);
  return true;
}

void append_attr(std::string& out, std::string_view name, std::string_view value) {
  out += ' ';
  out += name;
  out += "='";
  escape_attr(value, out);
  out += '\'';
}

}  // namespace

namespace {

// The entity or character reference for `c`, or empty when `c` is written as is. Character data
// needs & < > (">" so "]]>" never appears, XML 1.0 §2.4) and CR (a literal one would be
// normalized away, §2.11); attribute values also need both quotes and TAB/LF, which would
// otherwise be normalized to spaces (§3.3.3).
constexpr std::string_view reference_for(char c, bool attribute) {
  switch (c) {
    case '&':
      return "&amp;";
    case '<':
      return "&lt;";
    case '>':
      return "&gt;";
    case '\r':
      return "&#13;";
    default:
      break;
  }
  if (!attribute) return {};
  switch (c) {
    case '\'':
      return "&apos;";
    case '"':
      return "&quot;";
    case '\t':
      return "&#9;";
    case '\n':
      return "&#10;";
    default:
      return {};
  }
}

constexpr std::uint8_t kInText = 1;       // needs a reference in character data
constexpr std::uint8_t kInAttribute = 2;  // needs a reference in an attribute value
constexpr std::uint8_t kCheck = 4;        // a C0 control XML forbids, or the start of a UTF-8
                                          // sequence that must be checked

constexpr std::array<std::uint8_t, 256> kSpecial = [] {
  std::array<std::uint8_t, 256> t{};
  for (int c = 0; c < 256; ++c) {
    const char ch = static_cast<char>(c);
    t[static_cast<std::size_t>(c)] = static_cast<std::uint8_t>(
        (reference_for(ch, false).empty() ? 0 : kInText) |
        (reference_for(ch, true).empty() ? 0 : kInAttribute) |
        (c >= 0x80 || !is_xml_char(static_cast<char32_t>(c)) ? kCheck : 0));
  }
  return t;
}();

// Runs of bytes that need no reference are appended whole: most text has none at all. ASCII
// costs one table look-up a byte; a multi-byte sequence is decoded and checked.
void escape(std::string_view in, std::string& out, bool attribute) {
  const std::uint8_t mask = attribute ? kInAttribute : kInText;
  out.reserve(out.size() + in.size());
  std::size_t done = 0;
  for (std::size_t i = 0; i < in.size();) {
    const std::uint8_t kind = kSpecial[static_cast<unsigned char>(in[i])];
    if ((kind & (mask | kCheck)) == 0) {
      ++i;
      continue;
    }
    if (kind & mask) {
      out.append(in.substr(done, i - done));
      out += reference_for(in[i], attribute);
      done = ++i;
      continue;
    }
    const CodePoint c = decode_utf8(in, i);
    if (c.valid && is_xml_char(c.value)) {
      i += c.length;
      continue;
    }
    // XML 1.0 §2.2: a document holds only Chars, and no reference can carry the others either
    // (WFC: Legal Character, §4.1). A peer would end the stream on it (RFC 6120 §11.1
    // not-well-formed), so what cannot be written becomes U+FFFD.
    out.append(in.substr(done, i - done));
    append_utf8(kReplacementCharacter, out);
    i += c.length;
    done = i;
  }
  out.append(in.substr(done));
}

}  // namespace

void escape_text(std::string_view in, std::string& out) { escape(in, out, false); }

void escape_attr(std::string_view in, std::string& out) { escape(in, out, true); }

void serialize(const Element& el, std::string& out, std::string_view parent_xmlns) {
  // The XML namespace is bound to the prefix "xml" and must not be declared as a default
  // (Namespaces in XML §3): an element in it keeps that prefix, and the default in scope passes
  // through to its children unchanged.
  const bool xml_prefixed = el.xmlns() == kXmlNamespace;
  const std::string_view child_scope = xml_prefixed ? parent_xmlns : el.xmlns();
  out += '<';
  if (xml_prefixed) out += "xml:";
  out += el.name();
  if (!xml_prefixed && el.xmlns() != parent_xmlns) append_attr(out, "xmlns", el.xmlns());

  // Prefixes for Clark-form attributes, declared on this element only, so they cannot clash with
  // anything in scope: elements themselves are always written unprefixed.
  std::vector<std::string_view> prefixed_uris;
  for (const Attribute& a : el.attributes()) {
    std::string_view uri;
    std::string_view local;
    if (split_clark(a.name, uri, local)) {
      // The xmlns namespace cannot carry ordinary attributes (Namespaces in XML §3).
      if (uri == kXmlnsNamespace) continue;
      if (uri.empty()) {
        append_attr(out, local, a.value);
        continue;
      }
      if (uri == kXmlNamespace) {
        append_attr(out, "xml:" + std::string(local), a.value);
        continue;
      }
      std::size_t index = 0;
      while (index < prefixed_uris.size() && prefixed_uris[index] != uri) ++index;
      const std::string prefix = "ns" + std::to_string(index);
      if (index == prefixed_uris.size()) {
        prefixed_uris.push_back(uri);
        append_attr(out, "xmlns:" + prefix, uri);
      }
      append_attr(out, prefix + ":" + std::string(local), a.value);
    } else if (a.name == "xmlns" || a.name.starts_with("xmlns:")) {
      // Namespace declarations come from the element's namespace, never from attributes; writing
      // them would duplicate or contradict the xmlns emitted above.
      continue;
    } else {
      append_attr(out, a.name, a.value);
    }
  }

  if (el.nodes().empty()) {
    out += "/>";
    return;
  }
  out += '>';
  for (const Element::Node& node : el.nodes()) {
    if (const auto* child = std::get_if<std::unique_ptr<Element>>(&node)) {
      serialize(**child, out, child_scope);
    } else {
      escape_text(std::get<std::string>(node), out);
    }
  }
  out += "</";
  if (xml_prefixed) out += "xml:";
  out += el.name();
  out += '>';
}

std::string serialize(const Element& el, std::string_view parent_xmlns) {
  std::string out;
  serialize(el, out, parent_xmlns);
  return out;
}

}  // namespace kabar::xml
