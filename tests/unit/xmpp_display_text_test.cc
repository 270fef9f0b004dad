// Text from the network shown on a terminal or in a JSON line: nothing a terminal acts on gets
// through raw.
#include <gtest/gtest.h>

#include <string>

#include "xmpp/display_text.h"

namespace kabar::xmpp {
namespace {

TEST(TerminalText, PrintableTextIsKept) {
  EXPECT_EQ(terminal_text(""), "");
  EXPECT_EQ(terminal_text("hello, world ~!"), "hello, world ~!");
  EXPECT_EQ(terminal_text("caf\xc3\xa9 \xf0\x9f\x98\x80 \xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d"),
            "caf\xc3\xa9 \xf0\x9f\x98\x80 \xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d");
  EXPECT_EQ(terminal_text("C:\\path"), "C:\\path");
  EXPECT_EQ(terminal_text("\xc2\xa0nbsp"), "\xc2\xa0nbsp");  // U+00A0 is past the C1 block
}

TEST(TerminalText, ControlsAreEscaped) {
  EXPECT_EQ(terminal_text("\x1b[2J\x1b]0;title\x07"), "\\x1b[2J\\x1b]0;title\\x07");
  EXPECT_EQ(terminal_text(std::string("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(terminal_text("line\nfake: line\r\t"), "line\\nfake: line\\r\\t");
  EXPECT_EQ(terminal_text("del\x7f"), "del\\x7f");
  EXPECT_EQ(terminal_text("\xc2\x9b"
                          "31m"),
            "\\u009b31m");  // U+009B CSI
  EXPECT_EQ(terminal_text("\xc2\x80\xc2\x9f"), "\\u0080\\u009f");
}

TEST(TerminalText, BidiControlsAreEscaped) {
  EXPECT_EQ(terminal_text("evil\xe2\x80\xaegpj.exe"), "evil\\u202egpj.exe");
  EXPECT_EQ(terminal_text("\xe2\x80\xaa\xe2\x80\xad\xe2\x81\xa6\xe2\x81\xa9"),
            "\\u202a\\u202d\\u2066\\u2069");
}

TEST(TerminalText, IllFormedUtf8IsShownByteByByte) {
  EXPECT_EQ(terminal_text("a\xff"
                          "b"),
            "a\\xffb");
  EXPECT_EQ(terminal_text("\xe2\x82"), "\\xe2\\x82");           // truncated: one subpart
  EXPECT_EQ(terminal_text("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // a surrogate
}

TEST(TerminalText, IsIdempotent) {
  for (std::string s : {"\x1b[1m\xc2\x9b\xe2\x80\xae\xff\n", "plain", "\\x1b"})
    EXPECT_EQ(terminal_text(terminal_text(s)), terminal_text(s)) << s;
}

TEST(JsonQuoted, EscapesWhatJsonAndTerminalsNeed) {
  EXPECT_EQ(json_quoted(""), "\"\"");
  EXPECT_EQ(json_quoted("say \"hi\" \\o/"), "\"say \\\"hi\\\" \\\\o/\"");
  EXPECT_EQ(json_quoted("a\nb\tc\rd"), "\"a\\nb\\tc\\rd\"");
  EXPECT_EQ(json_quoted("\x1b[2J\x01\x7f"), "\"\\u001b[2J\\u0001\\u007f\"");
  EXPECT_EQ(json_quoted("\xc2\x9b\xe2\x80\xae\xe2\x80\xa8"), "\"\\u009b\\u202e\\u2028\"");
  EXPECT_EQ(json_quoted("caf\xc3\xa9 \xf0\x9f\x98\x80"), "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"");
  // JSON text is UTF-8 (RFC 8259 §8.1): ill-formed input cannot pass through.
  EXPECT_EQ(json_quoted("a\xff\xe2\x82"
                        "b"),
            "\"a\\ufffd\\ufffdb\"");
}

}  // namespace
}  // namespace kabar::xmpp
