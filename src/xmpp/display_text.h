// Text that came from the network, made safe to show: names, bodies, status texts and JIDs from
// peers go through here before they reach a terminal or a JSON line. A peer must not be able to
// move the cursor, recolour or clear the screen, set the window title (ESC, or the C1 control
// U+009B CSI that many terminals act on like ESC [), nor reorder what is shown with Unicode's
// bidirectional overrides and isolates (a file "evil\u202Egpj.exe" shown as "evilexe.jpg").
#pragma once

#include <string>
#include <string_view>

namespace kabar::xmpp {

// `s` for a terminal, on one line: valid, printable UTF-8 is kept as it is; escaped are C0
// controls and DEL ("\n", "\t", "\r", else "\x1b"), C1 controls and bidi controls ("\u009b",
// "\u202e"), and each byte of ill-formed UTF-8 ("\xff"). A backslash is kept as it is: this is
// for display, not a format to read back. terminal_text(terminal_text(s)) == terminal_text(s).
std::string terminal_text(std::string_view s);

// `s` as a JSON string with its quotes (RFC 8259 §7) that is also safe to print: '"', '\\' and
// every control character escaped, DEL, C1 controls, bidi controls and U+2028/U+2029 escaped as
// \uXXXX, ill-formed UTF-8 replaced by \ufffd (JSON text is UTF-8, RFC 8259 §8.1). Decoding it
// gives `s` back whenever `s` is valid UTF-8.
std::string json_quoted(std::string_view s);

}  // namespace kabar::xmpp
