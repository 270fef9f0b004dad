// A tiny incremental scanner that cuts an XMPP stream into its top-level pieces (the stream
// header, each stanza or nonza, the stream close) without building anything. It is enough for a
// load tool that only looks at a few names and attributes of what a server sends, and it keeps
// no state between reads beyond the stream level: an incomplete piece is re-scanned from its
// start when more bytes arrive. It trusts its peer (a server under test), so it does not check
// well-formedness; servers do not send comments, CDATA or DTDs on a stream (RFC 6120 §11.1).
#pragma once

#include <cstddef>
#include <cstring>
#include <string_view>

namespace kabar::bench {

enum class Piece { kNeedMore, kStreamOpen, kStreamClose, kElement };

// Index just past the '>' ending the tag that starts at p[i] == '<' (quotes respected), or 0
// when the tag is not complete in p[0, n).
inline std::size_t tag_end(const char* p, std::size_t n, std::size_t i) {
  char quote = 0;
  for (std::size_t j = i + 1; j < n; ++j) {
    char c = p[j];
    if (quote) {
      if (c == quote) quote = 0;
    } else if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == '>') {
      return j + 1;
    }
  }
  return 0;
}

// Scans from `pos`; on a piece, sets `out` to its bytes and moves `pos` past it. `level` is 0
// before the stream header and 1 inside the stream; the caller resets it to 0 on a stream
// restart (after TLS or SASL success). Text between stanzas (whitespace keepalives) is skipped.
inline Piece next_piece(const char* p, std::size_t n, std::size_t& pos, int& level,
                        std::string_view& out) {
  for (;;) {
    const void* lt = pos < n ? std::memchr(p + pos, '<', n - pos) : nullptr;
    if (lt == nullptr) {
      pos = n;
      return Piece::kNeedMore;
    }
    std::size_t start = static_cast<const char*>(lt) - p;
    pos = start;
    std::size_t end = tag_end(p, n, start);
    if (end == 0) return Piece::kNeedMore;
    if (start + 1 < n && (p[start + 1] == '?' || p[start + 1] == '!')) {
      pos = end;  // XML declaration
      continue;
    }
    if (p[start + 1] == '/') {
      pos = end;
      level = 0;
      out = std::string_view(p + start, end - start);
      return Piece::kStreamClose;
    }
    if (level == 0) {
      pos = end;
      level = 1;
      out = std::string_view(p + start, end - start);
      return Piece::kStreamOpen;
    }
    // A top-level element: follow nested tags until the depth comes back to zero.
    int depth = 0;
    std::size_t i = start;
    for (;;) {
      bool closing = p[i + 1] == '/';
      bool empty = p[end - 2] == '/';
      if (closing) {
        --depth;
      } else if (!empty) {
        ++depth;
      }
      if (depth == 0) {
        pos = end;
        out = std::string_view(p + start, end - start);
        return Piece::kElement;
      }
      const void* next = std::memchr(p + end, '<', n - end);
      if (next == nullptr) return Piece::kNeedMore;
      i = static_cast<const char*>(next) - p;
      end = tag_end(p, n, i);
      if (end == 0) return Piece::kNeedMore;
    }
  }
}

// The local name of the element whose text starts at `el` ("stream:features" -> "features").
inline std::string_view local_name(std::string_view el) {
  std::size_t i = 1;
  while (i < el.size() && el[i] != ' ' && el[i] != '>' && el[i] != '/' && el[i] != '\t' &&
         el[i] != '\n' && el[i] != '\r')
    ++i;
  std::string_view name = el.substr(1, i - 1);
  std::size_t colon = name.find(':');
  return colon == std::string_view::npos ? name : name.substr(colon + 1);
}

// The value of attribute `name` in the start tag of `el` (raw, not unescaped), or empty.
inline std::string_view attribute(std::string_view el, std::string_view name) {
  std::size_t end = tag_end(el.data(), el.size(), 0);
  std::string_view tag = el.substr(0, end ? end : el.size());
  std::size_t from = 0;
  while (true) {
    std::size_t at = tag.find(name, from);
    if (at == std::string_view::npos) return {};
    std::size_t after = at + name.size();
    char before = tag[at - 1];
    if ((before == ' ' || before == '\t' || before == '\n' || before == '\r') &&
        after + 1 < tag.size() && tag[after] == '=' &&
        (tag[after + 1] == '\'' || tag[after + 1] == '"')) {
      char q = tag[after + 1];
      std::size_t close = tag.find(q, after + 2);
      if (close == std::string_view::npos) return {};
      return tag.substr(after + 2, close - after - 2);
    }
    from = after;
  }
}

// The text of the first child element named `name` (by local name, any prefix), or empty.
inline std::string_view child_text(std::string_view el, std::string_view name) {
  std::size_t from = 1;
  while (true) {
    std::size_t at = el.find(name, from);
    if (at == std::string_view::npos || at == 0) return {};
    from = at + name.size();
    char before = el[at - 1];
    if (before != '<' && before != ':') continue;
    char after = from < el.size() ? el[from] : '\0';
    if (after != '>' && after != ' ' && after != '/') continue;
    std::size_t gt = el.find('>', at);
    if (gt == std::string_view::npos) return {};
    if (el[gt - 1] == '/') return {};
    std::size_t lt = el.find('<', gt);
    if (lt == std::string_view::npos) return {};
    return el.substr(gt + 1, lt - gt - 1);
  }
}

}  // namespace kabar::bench
