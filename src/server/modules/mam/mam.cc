// Message Archive Management (XEP-0313, urn:xmpp:mam:2, with #extended), stanza ids (XEP-0359),
// result set management (XEP-0059) and archiving preferences (XEP-0441).
//
// Every account has an archive on its bare JID: each message it sends or receives that
// mam_archivable() accepts, unless its preferences say otherwise ([archive] default, then the
// account's <prefs/>). A received message is archived before delivery and carries its archive
// UID as <stanza-id by='account'/> to the recipient's resources, its carbons and its offline
// copy; a sent one is archived in the sender's archive (a note to self once, as received), and
// its archive UID goes only into the sender's own <sent/> carbons (XEP-0313 §3.5), never to the
// contact. Archive writes go into the message log's group commit (store/message_log.h), not one
// store call per message; a query waits for that commit first, so it sees everything archived
// before it.
//
// Where the ids travel: the kMessageIn hook stamps the message before the received carbons
// (100) copy it. The kMessageOut hook (-50) stamps the sender's message before the sent carbons
// (0) copy it, and a second one (50) takes that stamp off again before the message is routed.
//
// The hot path: a message to an online contact is archived from the bytes it is forwarded in
// (fast(), a Server message tap), the recipient's stanza-id spliced in. It makes no carbons: an
// account with carbons on (AccountFlag kCarbonsUser) has its messages take the full path.
//
// Threads: hooks and IQs run on the sender's shard; preferences are cached for all shards under
// a mutex; the store is reached through Server::db() and the message log.
#include "server/modules/mam/mam.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "server/c2s_session.h"
#include "server/config.h"
#include "server/core/string_hash.h"
#include "server/features.h"
#include "store/archive_index.h"
#include "xml/serializer.h"
#include "xmpp/jid.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

namespace kabar::server {

namespace ns = xmpp::ns;

namespace {

constexpr std::string_view kHintsNs = "urn:xmpp:hints";  // XEP-0334
constexpr std::string_view kRsmNs = "http://jabber.org/protocol/rsm";
constexpr std::string_view kDataNs = "jabber:x:data";
constexpr std::string_view kForwardNs = "urn:xmpp:forward:0";
constexpr std::string_view kCarbonsNs = "urn:xmpp:carbons:2";
constexpr std::string_view kValidateNs = "http://jabber.org/protocol/xdata-validate";
// A page holds this many results unless the client asks for fewer (or more, up to kMaxPage).
constexpr std::size_t kDefaultPage = 50;
constexpr std::size_t kMaxPage = 250;
constexpr std::size_t kMaxIds = 250;         // values of the 'ids' field in one query
constexpr std::size_t kMaxPrefsJids = 1000;  // JIDs in one account's always and never lists

// mam_archivable(), of a message or of the head the fast path reads (MessageView).
bool archivable(const MessageView& m) {
  if (m.name() != "message") return false;
  const std::string_view type = m.attr("type");
  if (!type.empty() && type != "normal" && type != "chat") return false;
  if (m.has_child("no-store", kHintsNs) || m.has_child("no-permanent-store", kHintsNs)) {
    return false;
  }
  if (m.has_child("sent", kCarbonsNs) || m.has_child("received", kCarbonsNs) ||
      m.has_child("result", kMamNs)) {
    return false;
  }
  return m.has_child("body", ns::kClient) || m.has_child("store", kHintsNs);
}

}  // namespace

bool mam_archivable(const xml::Element& m) { return archivable(MessageView(m)); }

void strip_stanza_ids(xml::Element& m, std::string_view archive) {
  bool any = false;
  std::vector<xml::Element> keep;
  for (const xml::Element* sid : std::as_const(m).children("stanza-id", kStanzaIdNs)) {
    auto by = xmpp::Jid::parse(sid->attr("by"));
    if (by && by->str() == archive) {
      any = true;
    } else {
      keep.push_back(*sid);
    }
  }
  if (!any) return;
  m.remove_children("stanza-id", kStanzaIdNs);
  for (auto& k : keep) m.add_child(std::move(k));
}

namespace {

// An account's preferences, as the archiving decision reads them.
struct Prefs {
  // Looked up by string_view (the fast path holds views of the JIDs).
  using JidSet = std::unordered_set<std::string, StringHash, std::equal_to<>>;
  std::string mode;  // always, never, roster
  JidSet always;
  JidSet never;
};

// A query, parsed (XEP-0313 §4.1, XEP-0059 §2).
struct Request {
  store::ArchiveFilter filter;
  std::string after_id;   // form 'after-id'
  std::string before_id;  // form 'before-id'
  std::vector<std::string> ids;
  std::size_t max = kDefaultPage;
  std::string rsm_after;
  std::string rsm_before;
  bool last_page = false;  // RSM <before/> given (empty: the last page)
  bool flip = false;
};

// What the store answered.
struct Outcome {
  bool missing = false;  // an id the query names is not in the archive
  std::vector<store::ArchivedMessage> items;
  bool complete = true;
  std::size_t count = 0;
  std::size_t first_index = 0;
};

xml::Element error(const xml::Element& iq, xmpp::ErrorType type, std::string_view condition,
                   std::string_view text = {}) {
  return xmpp::make_error_reply(iq, type, condition, text);
}

void append_attr(std::string& out, std::string_view name, std::string_view value) {
  out += ' ';
  out += name;
  out += "='";
  xml::escape_attr(value, out);
  out += '\'';
}

// A stored message as it goes inside <forwarded/>: with its own xmlns='jabber:client'. The fast
// path stores the bytes it forwarded, which take that namespace from the stream around them.
std::string with_client_ns(const std::string& stored) {
  if (stored.starts_with("<message xmlns='jabber:client'") ||
      stored.starts_with("<message xmlns=\"jabber:client\"")) {
    return stored;
  }
  auto m = xmpp::parse_stanza(stored);
  if (!m) {
    spdlog::error("archive: a stored message does not parse");
    return "<message xmlns='jabber:client'/>";
  }
  return xml::serialize(*m, "");
}

class MamModule final : public Module {
 public:
  std::string_view name() const override { return "mam"; }

  void setup(ModuleContext& ctx) override {
    const Config& cfg = ctx.config();
    if (!cfg.archive_enabled) return;
    server_ = &ctx.server();
    Server& s = *server_;
    s.set_message_tap([this](C2sSession& from, const MessageView& m,
                             const std::vector<SessionPtr>& targets,
                             std::string& bytes) { return fast(from, m, targets, bytes); });
    ctx.disco_feature(std::string(kMamNs), kToAccount);
    ctx.disco_feature(std::string(kMamExtendedNs), kToAccount);
    ctx.disco_feature(std::string(kStanzaIdNs), kToAccount);
    ctx.iq(
        std::string(kMamNs),
        [this](SessionPtr from, xml::Element iq) -> awaitable<void> {
          co_await handle_iq(std::move(from), std::move(iq));
        },
        kIqGetOrSet, kToServerOrAccount);
    // After blocking (-100: what it refuses is not archived), before carbons (0): the sender's
    // archive, and its stanza-id for the <sent/> carbons.
    ctx.hook(
        Hook::kMessageOut,
        [this](SessionPtr from, xml::Element& m) -> awaitable<HookResult> {
          co_await outgoing(from, m);
          co_return HookResult::kContinue;
        },
        -50);
    // After carbons, before routing: the contact may not read the sender's archive (XEP-0313
    // §3.5), so nothing in its name goes on.
    ctx.hook(
        Hook::kMessageOut,
        [](SessionPtr from, xml::Element& m) -> awaitable<HookResult> {
          if (from != nullptr && m.child("stanza-id", kStanzaIdNs) != nullptr) {
            strip_stanza_ids(m, from->jid().bare_str());
          }
          co_return HookResult::kContinue;
        },
        50);
    // After blocking, before the received carbons (100): they and the recipient's resources
    // get the stanza-id.
    ctx.hook(
        Hook::kMessageIn,
        [this](SessionPtr, xml::Element& m) -> awaitable<HookResult> {
          co_await incoming(m);
          co_return HookResult::kContinue;
        },
        50);
    // Both sides' preferences are in memory while they are online: the fast path reads them.
    ctx.on(SessionEvent::kBound,
           [this](SessionPtr who) -> awaitable<void> { co_await prefs_of(who->username()); });
    ctx.provide<ArchiveView>(view_);
    view_.module = this;
  }

  void start(ModuleContext& ctx) override {
    if (server_ == nullptr || ctx.config().archive_retention_days == 0) return;
    timer_ = std::make_unique<asio::steady_timer>(ctx.server().io());
    asio::co_spawn(ctx.server().io(), expire_loop(), asio::detached);
  }

  void stop() override {
    stopping_ = true;
    if (timer_) timer_->cancel();
  }

  bool prefs_cached(const std::string& user) {
    std::lock_guard lock(mu_);
    return prefs_.contains(user);
  }

  void forget(const std::string& user) {
    std::lock_guard lock(mu_);
    prefs_.erase(user);
  }

 private:
  struct View final : ArchiveView {
    MamModule* module = nullptr;
    void forget(const std::string& user) override { module->forget(user); }
  };

  // --- Archiving.

  awaitable<void> incoming(xml::Element& m) {
    auto to = xmpp::Jid::parse(m.attr("to"));
    if (!to || to->local().empty() || !server_->is_local(*to)) co_return;
    const std::string bare = to->bare_str();
    strip_stanza_ids(m, bare);  // whether or not this one is archived
    if (!mam_archivable(m)) co_return;
    auto from = xmpp::Jid::parse(m.attr("from"));
    if (!from) co_return;
    std::string user(to->local());
    // An account with a resource bound exists, and so does one whose preferences are cached
    // (only an account's are: forget() drops them with it); for any other, the store says (a
    // message to no account is bounced, not archived). A flood to an offline account costs no
    // store round trip per message here.
    if (server_->resources_of(bare).empty() && !prefs_cached(user)) {
      auto op = [user](store::Store& st) { return st.account(user).has_value(); };
      if (!co_await server_->db(std::move(op))) co_return;
    }
    if (!co_await wants(user, from->bare_str())) co_return;
    archive(user, *from, m, bare);
  }

  awaitable<void> outgoing(const SessionPtr& from, xml::Element& m) {
    if (from == nullptr) co_return;
    const std::string own = from->jid().bare_str();
    // XEP-0359 §3: an id in this archive's name is the server's to give, whether or not this
    // message is archived (the sent carbons copy what is left).
    strip_stanza_ids(m, own);
    auto to = xmpp::Jid::parse(m.attr("to"));
    if (!to || to->local().empty()) co_return;  // to a server or a service: no conversation
    // A note to self is archived once, as received.
    if (to->bare_str() == own) co_return;
    if (!mam_archivable(m)) co_return;
    if (!co_await wants(from->username(), to->bare_str())) co_return;
    // Archived as the contact gets it, without a stanza-id; then stamped for the <sent/>
    // carbons (XEP-0313 §3.5: "as a child of the forwarded message when using XEP-0280"). The
    // hook at 50 takes the stamp off before routing.
    const std::string id = archive(from->username(), *to, m, {});
    xml::Element& sid = m.add_child("stanza-id", std::string(kStanzaIdNs));
    sid.set_attr("by", own);
    sid.set_attr("id", id);
  }

  // The fast path (Server::route_message_now()): a message to an online contact, with the bytes
  // about to go out. Archived here when both sides' preferences are in memory and decide
  // without the store; the recipient's copy gets its stanza-id spliced in before the end tag.
  // Anything else (a stanza-id to strip, a preference in roster mode, bytes not ending in
  // </message>) returns false, untouched, for the full path.
  // No <sent/> carbon comes from here, so the sender's archive id goes nowhere: a sender with a
  // resource that has carbons on takes the full path (kCarbonsUser, Server::instant_targets()).
  bool fast(C2sSession& from, const MessageView& m, const std::vector<SessionPtr>& targets,
            std::string& bytes) {
    if (m.has_child("stanza-id", kStanzaIdNs)) return false;  // to strip (XEP-0359 §3)
    if (!archivable(m)) return true;                          // nothing to archive, nothing to add
    static constexpr std::string_view kEnd = "</message>";
    if (targets.empty() || !bytes.ends_with(kEnd)) return false;
    const C2sSession& to_session = *targets.front();  // one account's resources
    const std::string& to_user = to_session.username();
    const std::string& from_user = from.username();
    // Views of the cached full JIDs: nothing built per message but the records themselves.
    const std::string_view from_bare = xmpp::bare_part(from.jid_str());
    const std::string_view to_bare = xmpp::bare_part(to_session.jid_str());
    std::optional<bool> sender_keeps;
    std::optional<bool> recipient_keeps;
    {
      // Both decided under one lock, the preferences read in place: this runs for every message.
      std::lock_guard lock(mu_);
      auto f = prefs_.find(from_user);
      auto t = prefs_.find(to_user);
      if (f == prefs_.end() || t == prefs_.end()) return false;
      sender_keeps = decide(*f->second, to_bare);
      recipient_keeps = decide(*t->second, from_bare);
    }
    if (!sender_keeps || !recipient_keeps) return false;
    const bool self = from_user == to_user;  // a note to self: archived once, as received
    const std::int64_t now = server_->now_ms();
    if (*sender_keeps && !self) {
      // The fast path's `to` is nearly always in prepared form already: read, not parsed.
      std::string_view to_with;
      std::string_view to_resource;
      std::optional<xmpp::Jid> parsed;
      std::string parsed_bare;
      if (const auto view = xmpp::canonical_jid(m.attr("to"))) {
        to_with = view->bare;
        to_resource = view->resource;
      } else {
        parsed = xmpp::Jid::parse(m.attr("to"));
        if (!parsed) return false;
        parsed_bare = parsed->bare_str();
        to_with = parsed_bare;
        to_resource = parsed->resource();
      }
      const std::uint64_t random = random48();
      server_->archive_new([&](store::ArchivedMessage& a, std::int64_t seq) {
        fill_record(a, from_user, seq, random, to_with, to_resource, now);
        a.stanza = bytes;
      });
    }
    if (*recipient_keeps) {
      const std::uint64_t random = random48();
      server_->archive_new([&](store::ArchivedMessage& a, std::int64_t seq) {
        fill_record(a, to_user, seq, random, from_bare, xmpp::resource_part(from.jid_str()), now);
        // The bytes with the stanza-id before their end tag: kept, and sent.
        a.stanza.append(bytes, 0, bytes.size() - kEnd.size());
        a.stanza += "<stanza-id xmlns='urn:xmpp:sid:0'";
        append_attr(a.stanza, "by", to_bare);
        append_attr(a.stanza, "id", a.id);
        a.stanza += "/>";
        a.stanza += kEnd;
        bytes = a.stanza;
      });
    }
    return true;
  }

  // What `p` says of `other` without the store: nullopt in roster mode for a JID in neither list.
  static std::optional<bool> decide(const Prefs& p, std::string_view other) {
    if (p.never.contains(other)) return false;
    if (p.always.contains(other)) return true;
    if (p.mode == "always") return true;
    if (p.mode == "never") return false;
    return std::nullopt;
  }

  // Archives `m` for `user` and returns its archive UID; with `stamp_by` (the archive's JID)
  // the message gets its <stanza-id/> first.
  std::string archive(const std::string& user, const xmpp::Jid& with, xml::Element& m,
                      std::string_view stamp_by) {
    const std::uint64_t random = random48();
    const std::int64_t now = server_->now_ms();
    std::string id;
    server_->archive_new([&](store::ArchivedMessage& a, std::int64_t seq) {
      fill_record(a, user, seq, random, with.bare_str(), with.resource(), now);
      if (!stamp_by.empty()) {
        xml::Element& sid = m.add_child("stanza-id", std::string(kStanzaIdNs));
        sid.set_attr("by", stamp_by);
        sid.set_attr("id", a.id);
      }
      a.stanza = xml::serialize(m, "");
      id = a.id;
    });
    return id;
  }

  // Fills in a record of `user`'s archive, its UID naming its seq; the caller adds the stanza.
  // `a` comes empty (MessageLog::archive_new()), its strings perhaps with buffers to reuse.
  static void fill_record(store::ArchivedMessage& a, const std::string& user, std::int64_t seq,
                          std::uint64_t random, std::string_view with, std::string_view resource,
                          std::int64_t stamp_ms) {
    a.username = user;
    a.seq = seq;
    store::archive_id(seq, random, a.id);
    a.with = with;
    a.with_resource = resource;
    a.stamp_ms = stamp_ms;
  }

  // The random part of an archive UID (store::archive_id(): the seq, then 48 random bits).
  std::uint64_t random48() {
    const std::string r = server_->random().bytes(6);
    std::uint64_t v = 0;
    for (const char c : r) v = (v << 8) | static_cast<unsigned char>(c);
    return v;
  }

  awaitable<bool> wants(const std::string& user, const std::string& other) {
    std::shared_ptr<const Prefs> p = co_await prefs_of(user);
    if (auto known = decide(*p, other)) co_return *known;
    // roster: a contact in the roster.
    auto op = [user, other](store::Store& st) {
      auto item = st.roster_item(user, other);
      return item.has_value() && item->in_roster;
    };
    co_return co_await server_->db(std::move(op));
  }

  awaitable<std::shared_ptr<const Prefs>> prefs_of(const std::string& user) {
    {
      std::lock_guard lock(mu_);
      auto it = prefs_.find(user);
      if (it != prefs_.end()) co_return it->second;
    }
    auto op = [user](store::Store& st) { return st.archive_prefs(user); };
    std::optional<store::ArchivePrefs> stored = co_await server_->db(std::move(op));
    auto p = std::make_shared<Prefs>(to_prefs(stored));
    std::lock_guard lock(mu_);
    // Another shard may have set new preferences meanwhile: theirs win.
    auto [it, inserted] = prefs_.emplace(user, std::move(p));
    co_return it->second;
  }

  Prefs to_prefs(const std::optional<store::ArchivePrefs>& stored) const {
    Prefs p;
    p.mode = server_->config().archive_default;
    if (stored) {
      p.mode = stored->default_mode;
      p.always.insert(stored->always.begin(), stored->always.end());
      p.never.insert(stored->never.begin(), stored->never.end());
    }
    return p;
  }

  static constexpr std::size_t kExpireBite = 10'000;

  awaitable<void> expire_loop() {
    while (!stopping_) {
      const std::int64_t keep_ms =
          std::int64_t{server_->config().archive_retention_days} * 24 * 3600 * 1000;
      const std::int64_t before = server_->now_ms() - keep_ms;
      try {
        // In bites: between them the store serves the rest (logins, offline messages).
        std::size_t total = 0;
        for (;;) {
          auto op = [before](store::Store& st) { return st.archive_expire(before, kExpireBite); };
          const std::size_t n = co_await server_->db(std::move(op));
          total += n;
          if (n < kExpireBite || stopping_) break;
        }
        if (total > 0)
          spdlog::info("archive: {} messages past the retention period deleted", total);
      } catch (const store::StoreError& e) {
        spdlog::error("archive: expiring old messages: {}", e.what());
      }
      if (stopping_) break;  // stop() came while the store worked: no wait to cancel
      timer_->expires_after(std::chrono::hours(1));
      boost::system::error_code ec;
      co_await timer_->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  // --- The archive's IQs.

  awaitable<void> handle_iq(SessionPtr from, xml::Element iq) {
    const std::string own = from->jid().bare_str();
    if (iq.has_attr("to")) {
      auto to = xmpp::Jid::parse(iq.attr("to"));
      if (!to || to->is_domain()) {
        // The server itself keeps no archive of its own.
        from->send(error(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
        co_return;
      }
      if (to->bare_str() != own) {
        // §7: someone else's archive.
        from->send(error(iq, xmpp::ErrorType::kAuth, "forbidden"));
        co_return;
      }
    }
    const xml::Element* payload = iq.first_child();
    const bool get = iq.attr("type") == "get";
    if (payload == nullptr || payload->xmlns() != kMamNs) {
      from->send(error(iq, xmpp::ErrorType::kModify, "bad-request"));
    } else if (payload->name() == "query" && get) {
      from->send(form_reply(iq));
    } else if (payload->name() == "query") {
      co_await query(from, iq, *payload);
    } else if (payload->name() == "metadata" && get) {
      co_await metadata(from, iq);
    } else if (payload->name() == "prefs") {
      co_await prefs(from, iq, *payload, get);
    } else {
      from->send(error(iq, xmpp::ErrorType::kCancel, "feature-not-implemented"));
    }
  }

  // §4.1.3: the fields a query may use.
  static xml::Element form_reply(const xml::Element& iq) {
    xml::Element reply = xmpp::make_iq_result(iq);
    xml::Element& x =
        reply.add_child("query", std::string(kMamNs)).add_child("x", std::string(kDataNs));
    x.set_attr("type", "form");
    auto field = [&x](std::string_view var, std::string_view type) -> xml::Element& {
      xml::Element& f = x.add_child("field", std::string(kDataNs));
      f.set_attr("var", var);
      f.set_attr("type", type);
      return f;
    };
    field("FORM_TYPE", "hidden").add_child("value", std::string(kDataNs)).add_text(kMamNs);
    field("with", "jid-single");
    field("start", "text-single");
    field("end", "text-single");
    field("before-id", "text-single");
    field("after-id", "text-single");
    xml::Element& validate =
        field("ids", "list-multi").add_child("validate", std::string(kValidateNs));
    validate.set_attr("datatype", "xs:string");
    validate.add_child("open", std::string(kValidateNs));
    return reply;
  }

  // Parses the form and the RSM set of `q` into `r`; an error reply when they are not valid.
  static std::optional<xml::Element> parse(const xml::Element& iq, const xml::Element& q,
                                           Request& r) {
    auto bad = [&iq](std::string_view text) {
      return error(iq, xmpp::ErrorType::kModify, "bad-request", text);
    };
    if (const xml::Element* x = q.child("x", kDataNs)) {
      for (const xml::Element* f : x->children("field", kDataNs)) {
        const std::string_view var = f->attr("var");
        std::vector<std::string> values;
        for (const xml::Element* v : f->children("value", kDataNs)) values.push_back(v->text());
        const std::string one = values.empty() ? std::string() : values.front();
        if (var == "FORM_TYPE") {
          if (one != kMamNs) return bad("FORM_TYPE is not urn:xmpp:mam:2");
        } else if (var == "with") {
          if (one.empty()) continue;
          auto j = xmpp::Jid::parse(one);
          if (!j) return error(iq, xmpp::ErrorType::kModify, "jid-malformed");
          r.filter.with = j->bare_str();
          r.filter.with_resource = j->resource();
        } else if (var == "start" || var == "end") {
          if (one.empty()) continue;
          auto t = xmpp::parse_datetime(one);
          if (!t) return bad("'" + std::string(var) + "' is not a XEP-0082 date-time");
          (var == "start" ? r.filter.start_ms : r.filter.end_ms) = *t;
        } else if (var == "after-id") {
          r.after_id = one;
        } else if (var == "before-id") {
          r.before_id = one;
        } else if (var == "ids") {
          if (values.size() > kMaxIds) {
            return error(iq, xmpp::ErrorType::kModify, "policy-violation",
                         "at most 250 ids in one query");
          }
          for (auto& v : values) {
            if (!v.empty()) r.ids.push_back(std::move(v));
          }
        } else {
          // §4.1.3: a field the server does not know (include-groupchat is not offered).
          return error(iq, xmpp::ErrorType::kCancel, "feature-not-implemented",
                       "unknown field: " + std::string(var));
        }
      }
    }
    if (const xml::Element* set = q.child("set", kRsmNs)) {
      if (const xml::Element* max = set->child("max", kRsmNs)) {
        const std::string t = max->text();
        std::size_t n = 0;
        if (t.empty() || t.size() > 9 ||
            !std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; })) {
          return bad("<max/> is not a number");
        }
        n = static_cast<std::size_t>(std::stoul(t));
        r.max = std::min(n, kMaxPage);
      }
      if (const xml::Element* after = set->child("after", kRsmNs)) r.rsm_after = after->text();
      if (const xml::Element* before = set->child("before", kRsmNs)) {
        r.last_page = true;
        r.rsm_before = before->text();
      }
      if (set->child("index", kRsmNs) != nullptr) {
        return error(iq, xmpp::ErrorType::kCancel, "feature-not-implemented",
                     "paging by index is not supported; use after and before");
      }
    }
    r.flip = q.child("flip-page", kMamNs) != nullptr;
    return std::nullopt;
  }

  awaitable<void> query(SessionPtr from, xml::Element iq, const xml::Element& q) {
    Request r;
    if (auto err = parse(iq, q, r)) {
      from->send(*err);
      co_return;
    }
    const std::string queryid(q.attr("queryid"));
    // Everything archived before this query is in the store first.
    co_await server_->log_committed();
    const std::string user = from->username();
    auto op = [user, r](store::Store& st) {
      Outcome out;
      store::ArchiveFilter f = r.filter;
      auto bound = [&](const std::string& id, bool after) {
        auto seq = st.archive_seq(user, id);
        if (!seq) {
          out.missing = true;
        } else if (after) {
          f.after_seq = std::max(f.after_seq, *seq);
        } else {
          f.before_seq = std::min(f.before_seq, *seq);
        }
      };
      if (!r.after_id.empty()) bound(r.after_id, true);
      if (!r.before_id.empty()) bound(r.before_id, false);
      for (const auto& id : r.ids) {
        auto seq = st.archive_seq(user, id);
        if (!seq) {
          out.missing = true;
        } else {
          f.seqs.push_back(*seq);
        }
      }
      if (out.missing) return out;
      // The result set is what the form selects; the RSM bounds choose the page of it.
      const store::ArchiveFilter whole = f;
      if (!r.rsm_after.empty()) bound(r.rsm_after, true);
      if (!r.rsm_before.empty()) bound(r.rsm_before, false);
      if (out.missing) return out;
      out.count = st.archive_count(user, whole);
      if (r.max == 0) {
        out.complete = out.count == 0;
        return out;
      }
      out.items = st.archive_query(user, f, r.max + 1, r.last_page);
      if (out.items.size() > r.max) {
        out.complete = false;
        if (r.last_page) {
          out.items.erase(out.items.begin());
        } else {
          out.items.pop_back();
        }
      }
      if (!out.items.empty()) {
        store::ArchiveFilter before_first = whole;
        before_first.before_seq = std::min(before_first.before_seq, out.items.front().seq);
        out.first_index = st.archive_count(user, before_first);
      }
      return out;
    };
    Outcome out = co_await server_->db(std::move(op));
    if (out.missing) {
      // §4.1.2, §4.3: an id that is not in the archive.
      from->send(error(iq, xmpp::ErrorType::kCancel, "item-not-found"));
      co_return;
    }
    const std::string own = from->jid().bare_str();
    std::vector<const store::ArchivedMessage*> order;
    for (const auto& m : out.items) order.push_back(&m);
    if (r.flip) std::reverse(order.begin(), order.end());
    for (const store::ArchivedMessage* m : order) {
      // §4.2: the stored stanza (with its xmlns) inside <result><forwarded/>, as bytes.
      std::string bytes = "<message";
      append_attr(bytes, "to", from->jid_str());
      append_attr(bytes, "from", own);
      bytes += "><result xmlns='urn:xmpp:mam:2'";
      if (!queryid.empty()) append_attr(bytes, "queryid", queryid);
      append_attr(bytes, "id", m->id);
      bytes += "><forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay'";
      append_attr(bytes, "stamp", xmpp::format_datetime(m->stamp_ms));
      bytes += "/>";
      bytes += with_client_ns(m->stanza);
      bytes += "</forwarded></result></message>";
      from->send_raw(std::move(bytes));
    }
    xml::Element reply = xmpp::make_iq_result(iq);
    xml::Element& fin = reply.add_child("fin", std::string(kMamNs));
    if (out.complete) fin.set_attr("complete", "true");
    xml::Element& set = fin.add_child("set", std::string(kRsmNs));
    if (!out.items.empty()) {
      xml::Element& first = set.add_child("first", std::string(kRsmNs));
      first.set_attr("index", std::to_string(out.first_index));
      first.add_text(out.items.front().id);
      set.add_child("last", std::string(kRsmNs)).add_text(out.items.back().id);
    }
    set.add_child("count", std::string(kRsmNs)).add_text(std::to_string(out.count));
    from->send(reply);
  }

  // §5: the first and last message of the archive.
  awaitable<void> metadata(SessionPtr from, xml::Element iq) {
    co_await server_->log_committed();
    const std::string user = from->username();
    auto op = [user](store::Store& st) {
      std::vector<store::ArchivedMessage> ends;
      auto first = st.archive_query(user, {}, 1, false);
      auto last = st.archive_query(user, {}, 1, true);
      if (!first.empty() && !last.empty()) {
        ends.push_back(std::move(first.front()));
        ends.push_back(std::move(last.front()));
      }
      return ends;
    };
    auto ends = co_await server_->db(std::move(op));
    xml::Element reply = xmpp::make_iq_result(iq);
    xml::Element& md = reply.add_child("metadata", std::string(kMamNs));
    if (ends.size() == 2) {
      for (std::size_t i = 0; i < 2; ++i) {
        xml::Element& e = md.add_child(i == 0 ? "start" : "end", std::string(kMamNs));
        e.set_attr("id", ends[i].id);
        e.set_attr("timestamp", xmpp::format_datetime(ends[i].stamp_ms));
      }
    }
    from->send(reply);
  }

  // XEP-0441: the account's preferences, read or replaced.
  awaitable<void> prefs(SessionPtr from, xml::Element iq, const xml::Element& payload, bool get) {
    const std::string user = from->username();
    std::shared_ptr<const Prefs> current;
    if (get) {
      current = co_await prefs_of(user);
    } else {
      store::ArchivePrefs p;
      p.default_mode = std::string(payload.attr("default"));
      if (p.default_mode != "always" && p.default_mode != "never" && p.default_mode != "roster") {
        from->send(error(iq, xmpp::ErrorType::kModify, "bad-request",
                         "default must be always, never or roster"));
        co_return;
      }
      for (const auto& [list, into] :
           {std::pair{"always", &p.always}, std::pair{"never", &p.never}}) {
        const xml::Element* l = payload.child(list, kMamNs);
        if (l == nullptr) continue;
        for (const xml::Element* j : l->children("jid", kMamNs)) {
          auto jid = xmpp::Jid::parse(j->text());
          if (!jid) {
            from->send(error(iq, xmpp::ErrorType::kModify, "jid-malformed"));
            co_return;
          }
          into->push_back(jid->bare_str());
        }
      }
      if (p.always.size() + p.never.size() > kMaxPrefsJids) {
        from->send(error(iq, xmpp::ErrorType::kModify, "policy-violation",
                         "at most 1000 JIDs in the lists"));
        co_return;
      }
      for (auto* l : {&p.always, &p.never}) {
        std::sort(l->begin(), l->end());
        l->erase(std::unique(l->begin(), l->end()), l->end());
      }
      // A JID in both lists is never archived (the safer reading).
      std::erase_if(p.always, [&p](const std::string& j) {
        return std::binary_search(p.never.begin(), p.never.end(), j);
      });
      auto op = [user, p](store::Store& st) { st.set_archive_prefs(user, p); };
      co_await server_->db(std::move(op));
      auto fresh = std::make_shared<Prefs>(to_prefs(p));
      {
        std::lock_guard lock(mu_);
        prefs_.insert_or_assign(user, fresh);
      }
      current = fresh;
    }
    xml::Element reply = xmpp::make_iq_result(iq);
    xml::Element& out = reply.add_child("prefs", std::string(kMamNs));
    out.set_attr("default", current->mode);
    for (const auto& [list, from_set] :
         {std::pair{"always", &current->always}, std::pair{"never", &current->never}}) {
      xml::Element& l = out.add_child(list, std::string(kMamNs));
      std::vector<std::string> sorted(from_set->begin(), from_set->end());
      std::sort(sorted.begin(), sorted.end());
      for (const auto& j : sorted) l.add_child("jid", std::string(kMamNs)).add_text(j);
    }
    from->send(reply);
  }

  Server* server_ = nullptr;
  View view_;
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<const Prefs>> prefs_;  // guarded by mu_
  std::unique_ptr<asio::steady_timer> timer_;
  bool stopping_ = false;
};

}  // namespace

std::unique_ptr<Module> make_mam_module() { return std::make_unique<MamModule>(); }

}  // namespace kabar::server
