#include "xml/stream_parser.h"

#include <expat.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "xml/parser_arena.h"
#include "xml/serializer.h"

namespace kabar::xml {

namespace {

// Separates namespace URI and local name in names expat reports. U+0001 is not allowed in XML 1.0
// documents, so it can never be part of a URI (expat >= 2.4.5 rejects that case anyway).
constexpr char kNsSeparator = '\x01';

// feed() hands expat at most this much at once, then checks the stanza size limit: expat buffers
// an incomplete token (a huge start tag) without any callback, so the limit must also be checked
// between calls, and bounded calls keep what expat copies small.
constexpr std::size_t kSliceBytes = 16 * 1024;

void split_expat_name(const XML_Char* raw, std::string& xmlns, std::string& local) {
  const std::string_view name(raw);
  const std::size_t sep = name.find(kNsSeparator);
  if (sep == std::string_view::npos) {
    xmlns.clear();
    local.assign(name);
  } else {
    xmlns.assign(name.substr(0, sep));
    local.assign(name.substr(sep + 1));
  }
}

// Attribute names as Attribute documents them: local, "xml:lang", or Clark "{uri}local".
std::string attribute_name(const XML_Char* raw) {
  const std::string_view name(raw);
  const std::size_t sep = name.find(kNsSeparator);
  if (sep == std::string_view::npos) return std::string(name);
  const std::string_view uri = name.substr(0, sep);
  const std::string_view local = name.substr(sep + 1);
  if (uri == kXmlNamespace && local == "lang") return "xml:lang";
  std::string out;
  out.reserve(uri.size() + local.size() + 2);
  out += '{';
  out += uri;
  out += '}';
  out += local;
  return out;
}

// The head of an element being taken as bytes lives here while the feed() that began it runs:
// one per thread, so that neither an idle connection nor a message costs an allocation for it.
// A parser whose element outlasts that feed() copies it (StreamParser::Impl::held_head).
struct ScratchHead {
  ElementHead head;
  const void* owner = nullptr;  // the parser whose element it is
};

ScratchHead& scratch_head() {
  thread_local ScratchHead scratch;
  return scratch;
}

bool iequals_ascii(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; };
           return lower(x) == lower(y);
         });
}

}  // namespace

struct StreamParser::Impl {
  Impl(StreamHandler& h, StreamLimits l) : handler(h), limits(l) { create_parser(); }
  ~Impl() { free_parser(); }

  StreamHandler& handler;
  StreamLimits limits;
  XML_Parser parser = nullptr;
  std::unique_ptr<ParserArena> arena;  // the parser's memory (parser_arena.h)

  // Per-stream state; create_parser() resets all of it.
  int depth = 0;                    // open elements, the stream root included
  std::unique_ptr<Element> stanza;  // the top-level element being built
  std::vector<Element*> open;       // its open elements, innermost last
  std::string default_xmlns;        // default namespace declared on the stream root
  int pending_ns_decls = 0;         // namespace declarations of the next start tag
  std::int64_t fed = 0;             // bytes given to this expat parser
  std::int64_t stanza_start = 0;    // offset of the current top-level element's start tag
  std::int64_t boundary = 0;        // end of the last event outside any top-level element
  std::int64_t event_end = 0;       // end of the event whose handler callback is running
  bool stopped = false;             // expat told to stop: ignore any trailing callbacks
  bool reset_pending = false;       // reset() called from a handler callback

  bool in_feed = false;
  Result error;  // sticky once status is kError

  // Kept bytes (element_bytes()). The slice being parsed and where it starts in the stream; the
  // bytes of an element that began in an earlier slice wait in `carry` (only then), from stream
  // offset `carry_start`.
  std::string_view slice_now;
  std::int64_t slice_base = 0;
  std::string carry;
  std::int64_t carry_start = 0;
  bool keep = false;          // the current top-level element's bytes may be kept
  bool light = false;         // wants_bytes(): nothing of the element is built
  bool light_prefix = false;  // ... and a part of it relies on a prefix of the root
  // The head of a light element whose feed() returned before its end (else scratch_head()).
  std::unique_ptr<ElementHead> held_head;
  int root_prefixes = 0;  // namespace prefixes the root declares (in root_ns)
  std::string joined;     // an element spanning slices, put together
  std::string_view kept;  // what element_bytes() returns

  // Hibernation (an idle stream between stanzas gives its expat parser back; see hibernate()).
  std::vector<std::pair<std::string, std::string>> root_ns;  // prefix, URI declared on the root
  std::string root_xmlns, root_name;                         // the root's expanded name
  bool hibernating = false;
  bool replaying = false;  // feeding the synthetic root after hibernation: no events
  bool in_cdata = false;   // inside <![CDATA[ ... ]]>: expat state no replay could restore

  void create_parser() {
    free_parser();
    arena = std::make_unique<ParserArena>();
    ArenaScope scope(*arena);
    // The encoding is forced: RFC 6120 §11.6 allows only UTF-8, whatever a declaration says.
    parser = XML_ParserCreate_MM("UTF-8", ParserArena::suite(), &kNsSeparator);
    if (parser == nullptr) {
      error = Result{Status::kError, ParseError::kPolicyViolation, "out of memory"};
      return;
    }
    XML_SetUserData(parser, this);
    XML_SetElementHandler(parser, &Impl::on_start, &Impl::on_end);
    XML_SetCharacterDataHandler(parser, &Impl::on_text);
    XML_SetCdataSectionHandler(parser, &Impl::on_cdata_start, &Impl::on_cdata_end);
    XML_SetStartNamespaceDeclHandler(parser, &Impl::on_namespace_decl);
    XML_SetXmlDeclHandler(parser, &Impl::on_xml_decl);
    // RFC 6120 §11.1: none of these may appear in an XMPP stream.
    XML_SetStartDoctypeDeclHandler(parser, &Impl::on_doctype);
    XML_SetEntityDeclHandler(parser, &Impl::on_entity_decl);
    XML_SetProcessingInstructionHandler(parser, &Impl::on_pi);
    XML_SetCommentHandler(parser, &Impl::on_comment);
    XML_SetParamEntityParsing(parser, XML_PARAM_ENTITY_PARSING_NEVER);
#if XML_MAJOR_VERSION > 2 || (XML_MAJOR_VERSION == 2 && XML_MINOR_VERSION >= 6)
    // Deferral would hold back complete stanzas until more bytes arrive, which stalls an
    // interactive protocol; kSliceBytes and the stanza limit bound the re-parsing cost instead.
    XML_SetReparseDeferralEnabled(parser, XML_FALSE);
#endif
    depth = 0;
    stanza.reset();
    open.clear();
    open.shrink_to_fit();
    default_xmlns.clear();
    pending_ns_decls = 0;
    fed = stanza_start = boundary = event_end = 0;
    stopped = false;
    reset_pending = false;
    root_ns.clear();
    root_xmlns.clear();
    root_name.clear();
    hibernating = false;
    in_cdata = false;
    slice_now = {};
    slice_base = 0;
    std::string().swap(carry);
    carry_start = 0;
    keep = false;
    light = false;
    light_prefix = false;
    held_head.reset();
    root_prefixes = 0;
    std::string().swap(joined);
    kept = {};
  }

  void free_parser() {
    if (parser != nullptr) {
      ArenaScope scope(*arena);
      XML_ParserFree(parser);
      parser = nullptr;
    }
    arena.reset();  // its pages go back to the system
  }

  // After an error nothing of the stream is needed any more.
  void release_stream() {
    free_parser();
    stanza.reset();
    held_head.reset();
    open.clear();
    open.shrink_to_fit();
    std::string().swap(carry);
  }

  static Impl& self(void* user_data) { return *static_cast<Impl*>(user_data); }

  // Inside a top-level element (built, or taken as bytes).
  bool in_element() const { return stanza != nullptr || light; }

  void fail(ParseError kind, std::string message) {
    if (stopped) return;
    error = Result{Status::kError, kind, std::move(message)};
    stop();
  }

  void stop() {
    stopped = true;
    XML_StopParser(parser, XML_FALSE);
  }

  std::int64_t current_event_end() const {
    return XML_GetCurrentByteIndex(parser) + XML_GetCurrentByteCount(parser);
  }

  bool over_stanza_limit(std::int64_t end) {
    if (end - stanza_start <= static_cast<std::int64_t>(limits.max_stanza_bytes)) return false;
    fail(ParseError::kPolicyViolation,
         "stanza exceeds " + std::to_string(limits.max_stanza_bytes) + " bytes");
    return true;
  }

  // `spare`: room for attributes added later (the 'from' the server stamps on a stanza), so that
  // the vector is allocated once.
  void build_attributes(Element& el, const XML_Char** atts, std::size_t spare = 0) {
    std::size_t n = 0;
    for (const XML_Char** a = atts; *a != nullptr; a += 2) ++n;
    if (n > 0) el.reserve_attributes(n + spare);
    // Expat has rejected duplicates (also by expanded name), so no search for an existing one.
    for (const XML_Char** a = atts; *a != nullptr; a += 2) {
      el.add_new_attr(attribute_name(a[0]), a[1]);
    }
  }

  static void on_namespace_decl(void* user_data, const XML_Char* prefix, const XML_Char* uri) {
    Impl& p = self(user_data);
    if (p.stopped) return;
    ++p.pending_ns_decls;
    if (p.depth == 0) {
      if (prefix == nullptr) p.default_xmlns = uri != nullptr ? uri : "";
      if (!p.replaying) p.root_ns.emplace_back(prefix != nullptr ? prefix : "", uri ? uri : "");
      if (prefix != nullptr) ++p.root_prefixes;
    }
  }

  static void on_start(void* user_data, const XML_Char* raw_name, const XML_Char** atts) {
    Impl& p = self(user_data);
    if (p.stopped) return;
    // Namespace declarations count as attributes: they cost the same to process.
    int attr_count = p.pending_ns_decls;
    p.pending_ns_decls = 0;
    for (const XML_Char** a = atts; *a != nullptr; a += 2) ++attr_count;
    if (attr_count > p.limits.max_attributes) {
      p.fail(ParseError::kPolicyViolation,
             "more than " + std::to_string(p.limits.max_attributes) + " attributes");
      return;
    }
    if (p.depth == 0 && p.replaying) {
      p.depth = 1;
      p.event_end = p.boundary = p.current_event_end();
      return;
    }
    if (p.depth == 0) {
      // The prolog and stream header are held like a stanza and limited the same way; checked
      // here too so the outcome does not depend on how the bytes were split.
      p.stanza_start = 0;
      if (p.over_stanza_limit(p.current_event_end())) return;
      std::string xmlns;
      std::string name;
      split_expat_name(raw_name, xmlns, name);
      p.root_xmlns = xmlns;
      p.root_name = name;
      Element header(std::move(name), std::move(xmlns));
      p.build_attributes(header, atts);
      p.depth = 1;
      p.event_end = p.boundary = p.current_event_end();
      p.handler.on_stream_open(header, p.default_xmlns);
      return;
    }
    // The new element sits `depth` levels below the stream root.
    if (p.depth > p.limits.max_depth) {
      p.fail(ParseError::kPolicyViolation,
             "elements nested deeper than " + std::to_string(p.limits.max_depth));
      return;
    }
    if (p.depth == 1) {
      p.stanza_start = XML_GetCurrentByteIndex(p.parser);
      p.keep = p.limits.max_kept_bytes > 0;
      p.light = p.light_prefix = false;
    }
    if (p.over_stanza_limit(p.current_event_end())) return;
    const bool prefixed =
        (p.keep || p.light) && p.root_prefixes > 0 && p.uses_root_prefix(raw_name, atts);
    if (p.light) {
      // Below the head of an element taken as bytes nothing is built; the limits above apply.
      // Its children's names go into its head (a message tap reads them).
      p.light_prefix = p.light_prefix || prefixed;
      if (p.depth == 2) {
        ScratchHead& scratch = scratch_head();
        ElementHead* head = p.held_head           ? p.held_head.get()
                            : scratch.owner == &p ? &scratch.head
                                                  : nullptr;
        if (head != nullptr) {
          const std::string_view child(raw_name);
          const std::size_t sep = child.find(kNsSeparator);
          if (sep == std::string_view::npos) {
            head->add_child(child, {});
          } else {
            head->add_child(child.substr(sep + 1), child.substr(0, sep));
          }
        }
      }
      ++p.depth;
      return;
    }
    if (prefixed) p.keep = false;
    if (p.depth == 1 && p.keep && p.start_tag_kept() && p.offer_bytes(raw_name, atts)) {
      p.light = true;
      ++p.depth;
      return;
    }

    std::string xmlns;
    std::string name;
    split_expat_name(raw_name, xmlns, name);
    Element el(std::move(name), std::move(xmlns));
    p.build_attributes(el, atts, p.depth == 1 ? 1 : 0);
    if (p.depth == 1) {
      p.stanza = std::make_unique<Element>(std::move(el));
      p.open.push_back(p.stanza.get());
    } else {
      p.open.push_back(&p.open.back()->add_child(std::move(el)));
    }
    ++p.depth;
  }

  // A top-level element's start tag: its head goes into scratch_head() and the handler is asked
  // whether it takes the element as bytes.
  bool offer_bytes(const XML_Char* raw_name, const XML_Char** atts) {
    ScratchHead& scratch = scratch_head();
    const std::string_view name(raw_name);
    const std::size_t sep = name.find(kNsSeparator);
    if (sep == std::string_view::npos) {
      scratch.head.reset(name, {});
    } else {
      scratch.head.reset(name.substr(sep + 1), name.substr(0, sep));
    }
    for (const XML_Char** a = atts; *a != nullptr; a += 2) {
      if (std::strchr(a[0], kNsSeparator) == nullptr) {
        scratch.head.add_attr(a[0], a[1]);
      } else {
        scratch.head.add_attr(attribute_name(a[0]), a[1]);
      }
    }
    scratch.owner = this;
    held_head.reset();
    return handler.wants_bytes(scratch.head);
  }

  // Whether an element of the stanza is in, or has an attribute in, a namespace the root binds
  // to a prefix: its bytes may then rely on that binding. (Conservative: the stanza may bind the
  // same namespace itself.)
  bool uses_root_prefix(const XML_Char* raw_name, const XML_Char** atts) const {
    if (bound_by_root(raw_name)) return true;
    for (const XML_Char** a = atts; *a != nullptr; a += 2) {
      if (bound_by_root(a[0])) return true;
    }
    return false;
  }

  // Whether an expat name ("uri\x01local", or "local" without a namespace) is in a namespace the
  // root binds to a prefix.
  bool bound_by_root(const XML_Char* raw) const {
    const char* sep = std::strchr(raw, kNsSeparator);
    if (sep == nullptr) return false;
    const std::string_view uri(raw, static_cast<std::size_t>(sep - raw));
    for (const auto& [prefix, declared] : root_ns) {
      if (!prefix.empty() && declared == uri) return true;
    }
    return false;
  }

  // Whether the bytes of the start tag being reported are at hand: in this slice or carried.
  bool start_tag_kept() const {
    return stanza_start >= slice_base ||
           (carry_start <= stanza_start &&
            carry_start + static_cast<std::int64_t>(carry.size()) == slice_base);
  }

  // The bytes of the top-level element that ends at `end`, when kept (whatever their size when
  // only its head was built: they are all there is of it).
  std::string_view element_range(std::int64_t end) {
    const std::int64_t start = stanza_start;
    if (!keep) return {};
    if (!light && end - start > static_cast<std::int64_t>(limits.max_kept_bytes)) return {};
    if (end < slice_base || end > slice_base + static_cast<std::int64_t>(slice_now.size())) {
      return {};
    }
    if (start >= slice_base) {
      return slice_now.substr(static_cast<std::size_t>(start - slice_base),
                              static_cast<std::size_t>(end - start));
    }
    if (carry_start > start ||
        carry_start + static_cast<std::int64_t>(carry.size()) != slice_base) {
      return {};
    }
    joined.assign(carry, static_cast<std::size_t>(start - carry_start));
    joined.append(slice_now.substr(0, static_cast<std::size_t>(end - slice_base)));
    return joined;
  }

  // After a slice: what belongs to an element not yet complete (its start tag may not even be
  // reported yet) is copied, if it may be kept, for element_range() to find later.
  void carry_over(std::string_view slice, std::int64_t base) {
    const std::int64_t from = in_element() ? (keep ? stanza_start : fed) : boundary;
    const bool any_size = light;  // bounded by max_stanza_bytes instead
    if (from >= fed ||
        (!any_size && fed - from > static_cast<std::int64_t>(limits.max_kept_bytes))) {
      if (in_element()) keep = false;
      if (carry.capacity() > 0) std::string().swap(carry);
      return;
    }
    if (from < base) {
      if (carry_start > from || carry_start + static_cast<std::int64_t>(carry.size()) != base) {
        if (in_element()) keep = false;
        std::string().swap(carry);
        return;
      }
      carry.erase(0, static_cast<std::size_t>(from - carry_start));
    } else {
      carry.clear();
    }
    carry.append(slice.substr(static_cast<std::size_t>(std::max(from, base) - base)));
    carry_start = from;
  }

  // The end of an element taken as bytes: offered to the handler as such, else built from them.
  void finish_bytes_only(std::int64_t end) {
    const std::string_view bytes = element_range(end);
    light = false;
    // The head is in the scratch unless this element outlasted a feed() (then it was copied).
    const std::unique_ptr<ElementHead> held = std::move(held_head);
    ScratchHead& scratch = scratch_head();
    const ElementHead* head = held ? held.get() : scratch.owner == this ? &scratch.head : nullptr;
    const bool forwardable =
        head != nullptr && !bytes.empty() && !light_prefix && bytes.size() <= limits.max_kept_bytes;
    kept = forwardable ? bytes : std::string_view();
    const bool taken = forwardable && handler.on_element_bytes(*head, bytes);
    if (!held) scratch.owner = nullptr;
    if (!taken) {
      std::optional<Element> whole = rebuild(bytes);
      if (!whole) {
        fail(ParseError::kPolicyViolation, "cannot rebuild a stanza from its bytes");
      } else {
        handler.on_element(std::move(*whole));
      }
    }
    forget_element_bytes();
  }

  // After a top-level element: none of its bytes are held any more.
  void forget_element_bytes() {
    kept = {};
    keep = false;
    if (carry.capacity() > 0) std::string().swap(carry);
    if (joined.capacity() > 0) std::string().swap(joined);
  }

  // Parses an element's bytes again, alone, inside a root declaring what the stream root does.
  std::optional<Element> rebuild(std::string_view bytes) const {
    struct Collector : StreamHandler {
      std::optional<Element> element;
      void on_stream_open(const Element&, std::string_view) override {}
      void on_element(Element&& e) override { element = std::move(e); }
      void on_stream_close() override {}
    } collector;
    if (bytes.empty()) return std::nullopt;
    std::string head = "<kabar-rebuild";
    for (const auto& [prefix, uri] : root_ns) {
      head += prefix.empty() ? " xmlns='" : " xmlns:" + prefix + "='";
      escape_attr(uri, head);
      head += '\'';
    }
    head += '>';
    StreamParser again(collector, StreamLimits{limits.max_stanza_bytes, limits.max_depth,
                                               limits.max_attributes, 0});
    if (again.feed(head).status != Status::kOk || again.feed(bytes).status != Status::kOk) {
      return std::nullopt;
    }
    return std::move(collector.element);
  }

  static void on_end(void* user_data, const XML_Char* /*name*/) {
    Impl& p = self(user_data);
    if (p.stopped) return;
    --p.depth;
    if (p.depth == 0) {
      p.event_end = p.boundary = p.current_event_end();
      p.handler.on_stream_close();
      return;
    }
    if (p.light) {
      if (p.depth > 1) return;
    } else {
      p.open.pop_back();
      if (!p.open.empty()) return;
    }
    const std::int64_t end = p.current_event_end();
    if (p.over_stanza_limit(end)) return;
    p.event_end = p.boundary = end;
    if (p.light) {
      p.finish_bytes_only(end);
      return;
    }
    p.kept = p.element_range(end);
    // Moved out first so no per-stanza memory is held once the handler returns.
    std::unique_ptr<Element> done = std::move(p.stanza);
    p.handler.on_element(std::move(*done));
    p.forget_element_bytes();
  }

  static void on_text(void* user_data, const XML_Char* s, int len) {
    Impl& p = self(user_data);
    if (p.stopped) return;
    if (p.depth >= 2) {
      if (p.over_stanza_limit(p.current_event_end())) return;
      if (!p.light) p.open.back()->add_text(std::string_view(s, static_cast<std::size_t>(len)));
    } else {
      // Whitespace keepalives between top-level elements carry no meaning.
      p.boundary = p.current_event_end();
    }
  }

  static void on_cdata_start(void* user_data) { self(user_data).in_cdata = true; }
  static void on_cdata_end(void* user_data) {
    Impl& p = self(user_data);
    p.in_cdata = false;
    if (!p.stopped && p.depth == 1) p.boundary = p.current_event_end();
  }

  static void on_xml_decl(void* user_data, const XML_Char* /*version*/, const XML_Char* encoding,
                          int /*standalone*/) {
    Impl& p = self(user_data);
    if (p.stopped) return;
    // ParseError has no <unsupported-encoding/> (RFC 6120 §4.9.3.22); the declaration is
    // unusable for us, so it is reported as not-well-formed.
    if (encoding != nullptr && !iequals_ascii(encoding, "UTF-8")) {
      p.fail(ParseError::kNotWellFormed, std::string("unsupported encoding ") + encoding);
    }
  }

  static void on_doctype(void* user_data, const XML_Char*, const XML_Char*, const XML_Char*, int) {
    self(user_data).fail(ParseError::kRestrictedXml, "DTD not allowed");
  }
  static void on_entity_decl(void* user_data, const XML_Char*, int, const XML_Char*, int,
                             const XML_Char*, const XML_Char*, const XML_Char*, const XML_Char*) {
    self(user_data).fail(ParseError::kRestrictedXml, "entity declaration not allowed");
  }
  static void on_pi(void* user_data, const XML_Char*, const XML_Char*) {
    self(user_data).fail(ParseError::kRestrictedXml, "processing instruction not allowed");
  }
  static void on_comment(void* user_data, const XML_Char*) {
    self(user_data).fail(ParseError::kRestrictedXml, "comment not allowed");
  }

  Result feed(std::string_view bytes) {
    if (error.status == Status::kError) return error;
    if (in_feed) {
      // Re-entrant feed() from a handler; not sticky, the outer feed() is unaffected.
      return Result{Status::kError, ParseError::kNotWellFormed, "feed() called from a handler"};
    }
    if (hibernating && !bytes.empty() && !wake()) return error;
    in_feed = true;
    // A slice never exceeds the stanza limit by more than a byte, so that what expat buffers of
    // an unfinished element stays within the limit too (a small limit before authentication).
    const std::size_t slice_bytes = std::min(kSliceBytes, limits.max_stanza_bytes + 1);
    while (!bytes.empty() && error.status == Status::kOk) {
      const std::string_view slice = bytes.substr(0, slice_bytes);
      const std::int64_t base = fed;
      fed += static_cast<std::int64_t>(slice.size());
      slice_now = slice;
      slice_base = base;
      XML_Status status;
      {
        ArenaScope scope(*arena);
        status = XML_Parse(parser, slice.data(), static_cast<int>(slice.size()), XML_FALSE);
      }
      slice_now = {};
      if (reset_pending) {
        // A handler asked for a stream restart: what follows the handled event starts the new
        // stream. Only now, outside expat's callbacks, may the old parser be freed.
        const std::int64_t consumed =
            std::clamp<std::int64_t>(event_end - base, 0, static_cast<std::int64_t>(slice.size()));
        bytes.remove_prefix(static_cast<std::size_t>(consumed));
        create_parser();
        continue;
      }
      if (error.status == Status::kError) break;
      if (status != XML_STATUS_OK) {
        const XML_Error code = XML_GetErrorCode(parser);
        error = Result{Status::kError, ParseError::kNotWellFormed,
                       std::string(XML_ErrorString(code)) + " at line " +
                           std::to_string(XML_GetCurrentLineNumber(parser)) + " column " +
                           std::to_string(XML_GetCurrentColumnNumber(parser))};
        break;
      }
      // Everything fed since the stanza started (or since the last event outside a stanza, for
      // a start tag still in expat's buffer) belongs to one top-level element.
      const std::int64_t since = fed - (in_element() ? stanza_start : boundary);
      if (since > static_cast<std::int64_t>(limits.max_stanza_bytes)) {
        error = Result{Status::kError, ParseError::kPolicyViolation,
                       "stanza exceeds " + std::to_string(limits.max_stanza_bytes) + " bytes"};
        break;
      }
      if (limits.max_kept_bytes > 0) carry_over(slice, base);
      bytes.remove_prefix(slice.size());
    }
    in_feed = false;
    if (error.status == Status::kError) {
      release_stream();
      return error;
    }
    // An element taken as bytes continues in a later feed(): its head leaves the scratch, which
    // other parsers on this thread use meanwhile.
    if (light && !held_head) {
      ScratchHead& scratch = scratch_head();
      if (scratch.owner == this) {
        held_head = std::make_unique<ElementHead>(scratch.head);
        scratch.owner = nullptr;
      }
    }
    return Result{};
  }

  // Between stanzas, with nothing of the next one received, the only state a stream has is its
  // root's namespace declarations: the expat parser (about 10 KiB with its buffers) can go and be
  // made again when bytes arrive, by replaying a root start tag with the same declarations.
  bool hibernate() {
    if (parser == nullptr || hibernating || in_feed || error.status != Status::kOk) return false;
    if (depth != 1 || in_element() || fed != boundary || pending_ns_decls != 0 || in_cdata) {
      return false;
    }
    if (!root_qname()) return false;
    free_parser();
    open.shrink_to_fit();
    std::string().swap(carry);
    hibernating = true;
    return true;
  }

  // The root's qualified name as the peer wrote it, which its end tag must repeat: the prefix
  // bound to its namespace (or none if that is the default). Unknown when ambiguous.
  std::optional<std::string> root_qname() const {
    std::optional<std::string> prefix;
    for (const auto& [p, uri] : root_ns) {
      if (uri != root_xmlns) continue;
      if (prefix) return std::nullopt;  // two bindings of the same URI: do not guess
      prefix = p;
    }
    if (!prefix) return root_xmlns.empty() ? std::optional<std::string>(root_name) : std::nullopt;
    return prefix->empty() ? root_name : *prefix + ":" + root_name;
  }

  bool wake() {
    auto qname = root_qname();
    auto decls = std::move(root_ns);
    auto rxmlns = std::move(root_xmlns);
    auto rname = std::move(root_name);
    create_parser();
    if (parser == nullptr || !qname) {
      error = Result{Status::kError, ParseError::kPolicyViolation, "cannot resume the stream"};
      return false;
    }
    std::string head = "<" + *qname;
    for (const auto& [p, uri] : decls) {
      head += p.empty() ? " xmlns='" : " xmlns:" + p + "='";
      escape_attr(uri, head);
      head += '\'';
    }
    head += '>';
    replaying = true;
    XML_Status status;
    {
      ArenaScope scope(*arena);
      status = XML_Parse(parser, head.data(), static_cast<int>(head.size()), XML_FALSE);
    }
    replaying = false;
    root_ns = std::move(decls);
    root_xmlns = std::move(rxmlns);
    root_name = std::move(rname);
    fed = static_cast<std::int64_t>(head.size());
    if (status != XML_STATUS_OK || depth != 1) {
      error = Result{Status::kError, ParseError::kPolicyViolation, "cannot resume the stream"};
      release_stream();
      return false;
    }
    pending_ns_decls = 0;
    return true;
  }

  void reset() {
    error = Result{};
    if (in_feed && parser != nullptr) {
      reset_pending = true;
      if (!stopped) stop();
    } else {
      create_parser();
    }
  }

  std::size_t pending_bytes() const {
    if (parser == nullptr || hibernating) return 0;
    const std::int64_t since = fed - (in_element() ? stanza_start : boundary);
    return since > 0 ? static_cast<std::size_t>(since) : 0;
  }
};

void ElementHead::add_piece(std::string_view s) {
  text_.append(s);
  ends_.push_back(text_.size());
}

void ElementHead::reset(std::string_view name, std::string_view xmlns) {
  text_.clear();
  ends_.clear();
  children_.clear();
  add_piece(name);
  add_piece(xmlns);
}

void ElementHead::add_attr(std::string_view name, std::string_view value) {
  add_piece(name);
  add_piece(value);
}

void ElementHead::add_child(std::string_view name, std::string_view xmlns) {
  children_.append(xmlns);
  children_ += kNsSeparator;
  children_.append(name);
  children_ += '\x02';
}

bool ElementHead::has_child(std::string_view name, std::string_view xmlns) const {
  const std::string_view all(children_);
  for (std::size_t at = 0; at < all.size();) {
    const std::size_t end = all.find('\x02', at);
    const std::string_view one = all.substr(at, end - at);
    const std::size_t sep = one.find(kNsSeparator);
    if (one.substr(0, sep) == xmlns && one.substr(sep + 1) == name) return true;
    at = end + 1;
  }
  return false;
}

std::string_view ElementHead::attr(std::string_view name) const {
  for (std::size_t i = 0; i < attribute_count(); ++i) {
    if (attribute_name(i) == name) return attribute_value(i);
  }
  return {};
}

StreamParser::StreamParser(StreamHandler& handler, StreamLimits limits)
    : impl_(std::make_unique<Impl>(handler, limits)) {}

StreamParser::~StreamParser() = default;

StreamParser::Result StreamParser::feed(std::string_view bytes) { return impl_->feed(bytes); }

void StreamParser::reset() { impl_->reset(); }

void StreamParser::set_max_kept_bytes(std::size_t bytes) { impl_->limits.max_kept_bytes = bytes; }

void StreamParser::set_max_stanza_bytes(std::size_t bytes) {
  impl_->limits.max_stanza_bytes = bytes;
}

std::string_view StreamParser::element_bytes() const { return impl_->kept; }

std::size_t StreamParser::pending_bytes() const { return impl_->pending_bytes(); }

bool StreamParser::hibernate() { return impl_->hibernate(); }

bool StreamParser::hibernating() const { return impl_->hibernating; }

}  // namespace kabar::xml
