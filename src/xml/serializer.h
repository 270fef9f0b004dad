// Serializes elements to UTF-8 XML text with correct escaping.
#pragma once

#include <string>
#include <string_view>

#include "xml/chars.h"  // valid_xml_text()
#include "xml/element.h"

namespace kabar::xml {

// Text and attribute values: the serializer never writes a character XML 1.0 forbids (§2.2 Char)
// nor ill-formed UTF-8, whatever the element holds. Each such character (a C0 control other than
// TAB, LF and CR, U+FFFE, U+FFFF, an ill-formed sequence: one per maximal subpart) is written
// as U+FFFD REPLACEMENT CHARACTER. That is a last line of defence, so that one bad string cannot
// make the peer end the stream: code that puts a person's text into a stanza checks it first
// with valid_xml_text() (xml/chars.h) and refuses it with an error the person sees (the client
// library's send_message_checked does).

// Escapes character data: & < > (and \r as &#13; so it survives a round trip).
void escape_text(std::string_view in, std::string& out);
// Escapes an attribute value for single- or double-quoted output: & < > ' " and \t \n \r.
void escape_attr(std::string_view in, std::string& out);

// Appends `el` to `out`. An xmlns attribute is written only where the element's namespace differs
// from the one in scope (`parent_xmlns` for the top element). Namespaced attributes in Clark form
// get a prefix declared on the element that carries them; "xml:lang" is written as is.
// Elements without children are written self-closed. Element and attribute names are written as
// they are: they come from the parser (which checked them) or from the code, never from a person.
// Beware: serialize(el, some_std_string) picks the first overload (appending to that string);
// pass a namespace held in a std::string as std::string_view(ns).
void serialize(const Element& el, std::string& out,
               std::string_view parent_xmlns = "jabber:client");
std::string serialize(const Element& el, std::string_view parent_xmlns = "jabber:client");

}  // namespace kabar::xml
