// Serializes elements to UTF-8 XML text with correct escaping.
#pragma once

#include <string>
#include <string_view>

#include "xml/element.h"

namespace kabar::xml {

// Escapes character data: & < > (and \r as &#13; so it survives a round trip).
void escape_text(std::string_view in, std::string& out);
// Escapes an attribute value for single- or double-quoted output: & < > ' " and \t \n \r.
void escape_attr(std::string_view in, std::string& out);

// Appends `el` to `out`. An xmlns attribute is written only where the element's namespace differs
// from the one in scope (`parent_xmlns` for the top element). Namespaced attributes in Clark form
// get a prefix declared on the element that carries them; "xml:lang" is written as is.
// Elements without children are written self-closed.
// Beware: serialize(el, some_std_string) picks the first overload (appending to that string);
// pass a namespace held in a std::string as std::string_view(ns).
void serialize(const Element& el, std::string& out,
               std::string_view parent_xmlns = "jabber:client");
std::string serialize(const Element& el, std::string_view parent_xmlns = "jabber:client");

}  // namespace kabar::xml
