// libFuzzer target: any bytes as a JID. Whatever parses must re-parse from its string form to an
// equal JID (normalization is idempotent) and stay within the RFC 7622 length limits.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "xmpp/jid.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto jid = kabar::xmpp::Jid::parse(text);
  // What canonical_jid() splits, parse() accepts and gives back unchanged, with the same parts.
  if (const auto view = kabar::xmpp::canonical_jid(text)) {
    if (!jid || jid->str() != text || view->local != jid->local() ||
        view->domain != jid->domain() || view->resource != jid->resource() ||
        view->bare != jid->bare_str()) {
      std::abort();
    }
  }
  if (!jid) return 0;
  if (jid->domain().empty() || jid->local().size() > 1023 || jid->domain().size() > 1023 ||
      jid->resource().size() > 1023) {
    std::abort();
  }
  const std::string s = jid->str();
  const auto again = kabar::xmpp::Jid::parse(s);
  if (!again || !(*again == *jid) || again->str() != s) std::abort();
  const auto parts = kabar::xmpp::Jid::from_parts(jid->local(), jid->domain(), jid->resource());
  if (!parts || !(*parts == *jid)) std::abort();
  if (jid->bare().str() != jid->bare_str()) std::abort();
  return 0;
}
