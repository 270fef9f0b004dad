// Private XML storage (XEP-0049): an account keeps any element (by name and namespace) on the
// server. Bookmarks in it (storage:bookmarks, XEP-0048) are kept in step with the PEP native
// bookmarks node (urn:xmpp:bookmarks:1, XEP-0402 §5.3): a private set publishes the rooms that
// changed and retracts those that went, a private get is built from the node's items.
#include <algorithm>
#include <map>

#include "server/c2s_session.h"
#include "server/features.h"
#include "xml/serializer.h"
#include "xml/stream_parser.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

namespace kabar::server {

namespace ns = xmpp::ns;
using xmpp::ErrorType;

namespace {

constexpr const char* kPrivate = "jabber:iq:private";
constexpr const char* kStorageBookmarks = "storage:bookmarks";
constexpr const char* kBookmarks = "urn:xmpp:bookmarks:1";

// The stored elements are serialized by kabard; parsed back the same way as PEP items.
class OneElement final : public xml::StreamHandler {
 public:
  void on_stream_open(const xml::Element&, std::string_view) override {}
  void on_element(xml::Element&& e) override { got = std::move(e); }
  void on_stream_close() override {}
  std::optional<xml::Element> got;
};

std::optional<xml::Element> parse_stored(const std::string& bytes) {
  OneElement h;
  xml::StreamLimits limits;
  limits.max_stanza_bytes = std::size_t{1} << 30;
  xml::StreamParser parser(h, limits);
  parser.feed("<s xmlns='jabber:client'>");
  parser.feed(bytes);
  return std::move(h.got);
}

// One XEP-0048 <conference/> as the XEP-0402 payload of the item whose id is its JID.
xml::Element native_bookmark(const xml::Element& legacy) {
  xml::Element c("conference", kBookmarks);
  if (legacy.has_attr("name")) c.set_attr("name", legacy.attr("name"));
  std::string_view autojoin = legacy.attr("autojoin");
  if (autojoin == "true" || autojoin == "1") c.set_attr("autojoin", "true");
  for (const char* child : {"nick", "password"}) {
    if (const xml::Element* e = legacy.child(child, kStorageBookmarks)) {
      c.add_child(child, kBookmarks).add_text(e->text());
    }
  }
  return c;
}

// XEP-0402 §5.3.1: a native bookmark cast back into storage:bookmarks, its JID from the item id.
xml::Element legacy_bookmark(const std::string& jid, const xml::Element& native) {
  xml::Element c("conference", kStorageBookmarks);
  c.set_attr("jid", jid);
  if (native.has_attr("name")) c.set_attr("name", native.attr("name"));
  std::string_view autojoin = native.attr("autojoin");
  c.set_attr("autojoin", autojoin == "true" || autojoin == "1" ? "true" : "false");
  for (const char* child : {"nick", "password"}) {
    if (const xml::Element* e = native.child(child, kBookmarks)) {
      c.add_child(child, kStorageBookmarks).add_text(e->text());
    }
  }
  return c;
}

store::PepNodeConfig bookmarks_config() {
  // XEP-0402 §5.1: private to the owner, every bookmark kept, never sent on presence.
  store::PepNodeConfig c;
  c.access_model = "whitelist";
  c.max_items = store::kPepMaxItems;
  c.send_last_published_item = "never";
  return c;
}

class PrivateModule final : public Module {
 public:
  std::string_view name() const override { return "private"; }

  void setup(ModuleContext& ctx) override {
    s_ = &ctx.server();
    ctx.disco_feature(kPrivate, kToAccount);
    ctx.disco_feature(std::string(kBookmarks) + "#compat", kToAccount);
    ctx.iq(kPrivate, [this](SessionPtr from, xml::Element iq) {
      return handle(std::move(from), std::move(iq));
    });
  }

 private:
  awaitable<void> handle(SessionPtr from, xml::Element iq) {
    if (iq.has_attr("to")) {
      auto to = xmpp::Jid::parse(iq.attr("to"));
      if (!to || to->bare_str() != from->jid().bare_str()) {
        // XEP-0049 §2.3: someone else's private data.
        from->send(xmpp::make_error_reply(iq, ErrorType::kCancel, "forbidden"));
        co_return;
      }
    }
    const xml::Element* q = iq.first_child();
    auto elements = q->children();
    // §2.3: at least one child in a namespace of its own; a get asks for one.
    const bool set = iq.attr("type") == "set";
    if (elements.empty() || (!set && elements.size() > 1)) {
      from->send(xmpp::make_error_reply(iq, ErrorType::kModify, "not-acceptable"));
      co_return;
    }
    for (const xml::Element* e : elements) {
      if (e->xmlns() == kPrivate || e->xmlns() == ns::kClient || e->xmlns().empty()) {
        from->send(xmpp::make_error_reply(iq, ErrorType::kModify, "not-acceptable"));
        co_return;
      }
    }
    const std::string user = from->username();
    if (set) {
      for (const xml::Element* e : elements) {
        std::string bytes = xml::serialize(*e, ns::kClient);
        std::string name = e->name(), xmlns = e->xmlns();
        auto op = [user, name, xmlns, bytes](store::Store& st) {
          st.set_private_xml(user, name, xmlns, bytes);
        };
        co_await s_->db(std::move(op));
        if (e->is("storage", kStorageBookmarks)) co_await bookmarks_to_pep(from, *e);
      }
      from->send(xmpp::make_iq_result(iq));
      co_return;
    }
    const xml::Element& want = *elements[0];
    std::string name = want.name(), xmlns = want.xmlns();
    struct Stored {
      std::optional<std::string> xml;
      std::vector<store::PepItem> bookmarks;
      bool node = false;
    };
    const bool is_bookmarks = want.is("storage", kStorageBookmarks);
    auto op = [user, name, xmlns, is_bookmarks](store::Store& st) {
      Stored r;
      r.xml = st.private_xml(user, name, xmlns);
      if (is_bookmarks && st.pep_node(user, kBookmarks)) {
        r.node = true;
        r.bookmarks = st.pep_items(user, kBookmarks);
      }
      return r;
    };
    Stored got = co_await s_->db(std::move(op));
    xml::Element reply = xmpp::make_iq_result(iq);
    xml::Element& out = reply.add_child("query", kPrivate);
    std::optional<xml::Element> stored = got.xml ? parse_stored(*got.xml) : std::nullopt;
    if (is_bookmarks && got.node) {
      // The rooms from the native node, the rest (<url/>s, ...) as stored.
      xml::Element storage("storage", kStorageBookmarks);
      for (auto it = got.bookmarks.rbegin(); it != got.bookmarks.rend(); ++it) {
        if (auto native = parse_stored(it->payload);
            native && native->is("conference", kBookmarks)) {
          storage.add_child(legacy_bookmark(it->id, *native));
        }
      }
      if (stored) {
        for (const xml::Element* c : stored->children()) {
          if (!c->is("conference", kStorageBookmarks)) storage.add_child(*c);
        }
      }
      out.add_child(std::move(storage));
    } else if (stored) {
      out.add_child(std::move(*stored));
    } else {
      out.add_child(xml::Element(name, xmlns));  // nothing stored: the element, empty
    }
    from->send(reply);
  }

  // XEP-0402 §5.3.2: a replacement list of bookmarks updates the native node item by item,
  // with notifications for the changed ones only.
  awaitable<void> bookmarks_to_pep(const SessionPtr& from, const xml::Element& storage) {
    std::map<std::string, std::string> wanted;  // room JID -> serialized native payload
    for (const xml::Element* c : storage.children("conference", kStorageBookmarks)) {
      auto jid = xmpp::Jid::parse(c->attr("jid"));
      if (!jid) continue;
      wanted[jid->str()] = xml::serialize(native_bookmark(*c), ns::kClient);
    }
    const std::string user = from->username();
    const std::string publisher = from->jid_str();
    const std::int64_t now = s_->now_ms();
    struct Changes {
      std::vector<store::PepItem> published;
      std::vector<std::string> retracted;
    };
    auto op = [user, wanted, publisher, now](store::Store& st) {
      Changes ch;
      auto node = st.pep_node(user, kBookmarks);
      if (!node) {
        if (wanted.empty()) return ch;
        node = store::PepNode{kBookmarks, bookmarks_config(), {}, {}};
        st.put_pep_node(user, *node);
      }
      std::map<std::string, std::string> have;
      for (auto& it : st.pep_items(user, kBookmarks)) have[it.id] = it.payload;
      for (const auto& [id, payload] : wanted) {
        auto h = have.find(id);
        if (h != have.end() && h->second == payload) continue;
        store::PepItem item{id, payload, publisher, now};
        st.publish_pep_item(user, kBookmarks, item, node->config.max_items);
        ch.published.push_back(std::move(item));
      }
      for (const auto& [id, payload] : have) {
        if (wanted.contains(id)) continue;
        st.retract_pep_item(user, kBookmarks, id);
        ch.retracted.push_back(id);
      }
      return ch;
    };
    Changes ch = co_await s_->db(std::move(op));
    PepService* pep = s_->modules().service<PepService>();
    if (pep != nullptr && (!ch.published.empty() || !ch.retracted.empty())) {
      co_await pep->notify(user, kBookmarks, std::move(ch.published), std::move(ch.retracted));
    }
  }

  Server* s_ = nullptr;
};

}  // namespace

std::unique_ptr<Module> make_private_module() { return std::make_unique<PrivateModule>(); }

}  // namespace kabar::server
