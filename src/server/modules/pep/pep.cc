// Personal eventing (XEP-0163) on the part of XEP-0060 it needs: publish (with publish-options
// preconditions and auto-create), retract, items, create, configure, delete, affiliations
// (the whitelist), subscribe and unsubscribe, with notifications to the owner's resources and to
// contacts with a presence subscription whose entity capabilities (XEP-0115) ask for the node,
// and the last item at a resource's initial presence.
#include "server/modules/pep/pep.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <charconv>

#include "server/c2s_session.h"
#include "server/features.h"
#include "xml/serializer.h"
#include "xml/stream_parser.h"
#include "xmpp/caps.h"
#include "xmpp/hex.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

namespace kabar::server {

namespace ns = xmpp::ns;
using xmpp::ErrorType;

namespace pep {

namespace {

std::optional<bool> parse_bool(std::string_view v) {
  if (v == "1" || v == "true") return true;
  if (v == "0" || v == "false") return false;
  return std::nullopt;
}

std::optional<std::size_t> parse_max_items(std::string_view v) {
  if (v == "max") return store::kPepMaxItems;
  std::size_t n = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || ptr != v.data() + v.size() || n == 0) return std::nullopt;
  return std::min(n, store::kPepMaxItems);
}

bool known_access_model(std::string_view v) {
  return v == "presence" || v == "open" || v == "whitelist";
}

bool known_send_last(std::string_view v) {
  return v == "never" || v == "on_sub" || v == "on_sub_and_presence";
}

// Fields kabard does not let a node change, with the one value each has here; a client that
// states that value (a precondition, or a configuration form sent back whole) is answered as
// for any known field.
struct FixedField {
  std::string_view var;
  std::string_view value;
};
constexpr FixedField kFixed[] = {
    {"pubsub#publish_model", "publishers"},  {"pubsub#notification_type", "headline"},
    {"pubsub#notify_config", "0"},           {"pubsub#notify_sub", "0"},
    {"pubsub#presence_based_delivery", "0"}, {"pubsub#purge_offline", "0"},
};

std::optional<bool> fixed_matches(const FormField& f) {
  for (const auto& fx : kFixed) {
    if (f.var != fx.var) continue;
    if (f.values.size() != 1) return false;
    if (auto b = parse_bool(fx.value)) return parse_bool(f.values[0]) == b;
    return f.values[0] == fx.value;
  }
  return std::nullopt;
}

}  // namespace

std::optional<SubmittedForm> read_form(const xml::Element& x) {
  if (!x.is("x", ns::kDataForms) || x.attr("type") != "submit") return std::nullopt;
  SubmittedForm form;
  for (const xml::Element* field : x.children("field", ns::kDataForms)) {
    FormField f;
    f.var = std::string(field->attr("var"));
    for (const xml::Element* v : field->children("value", ns::kDataForms)) {
      f.values.push_back(v->text());
    }
    if (f.var == "FORM_TYPE") {
      if (!f.values.empty()) form.form_type = f.values.front();
      continue;
    }
    form.fields.push_back(std::move(f));
  }
  return form;
}

bool apply_config_field(store::PepNodeConfig& c, const FormField& f) {
  if (auto fixed = fixed_matches(f)) return *fixed;
  if (f.values.size() > 1) return false;
  const std::string v = f.values.empty() ? std::string() : f.values[0];
  auto set_bool = [&v](bool& field) {
    auto b = parse_bool(v);
    if (!b) return false;
    field = *b;
    return true;
  };
  if (f.var == "pubsub#access_model") {
    if (!known_access_model(v)) return false;
    c.access_model = v;
    return true;
  }
  if (f.var == "pubsub#max_items") {
    auto n = parse_max_items(v);
    if (!n) return false;
    c.max_items = *n;
    return true;
  }
  if (f.var == "pubsub#persist_items") return set_bool(c.persist_items);
  if (f.var == "pubsub#notify_retract") return set_bool(c.notify_retract);
  if (f.var == "pubsub#notify_delete") return set_bool(c.notify_delete);
  if (f.var == "pubsub#deliver_notifications") return set_bool(c.deliver_notifications);
  if (f.var == "pubsub#deliver_payloads") return set_bool(c.deliver_payloads);
  if (f.var == "pubsub#send_last_published_item") {
    if (!known_send_last(v)) return false;
    c.send_last_published_item = v;
    return true;
  }
  if (f.var == "pubsub#title") {
    c.title = v;
    return true;
  }
  return false;
}

std::optional<bool> meets_precondition(const store::PepNodeConfig& c, const FormField& f) {
  // A field kabard fixes: met when it states that value. Otherwise a precondition the node
  // could not have at all (an unknown field, a value the field cannot take) is a bad request,
  // not a conflict.
  if (auto fixed = fixed_matches(f)) return *fixed;
  store::PepNodeConfig wanted = c;
  if (!apply_config_field(wanted, f)) return std::nullopt;
  return wanted.access_model == c.access_model && wanted.max_items == c.max_items &&
         wanted.persist_items == c.persist_items && wanted.notify_retract == c.notify_retract &&
         wanted.notify_delete == c.notify_delete &&
         wanted.deliver_notifications == c.deliver_notifications &&
         wanted.deliver_payloads == c.deliver_payloads &&
         wanted.send_last_published_item == c.send_last_published_item && wanted.title == c.title;
}

xml::Element config_form(const store::PepNodeConfig& c) {
  xml::Element x("x", ns::kDataForms);
  x.set_attr("type", "form");
  auto field = [&x](std::string_view var, std::string_view type, std::string_view value) {
    xml::Element& f = x.add_child("field", ns::kDataForms);
    f.set_attr("var", var);
    f.set_attr("type", type);
    f.add_child("value", ns::kDataForms).add_text(value);
    return &f;
  };
  auto option = [](xml::Element* f, std::string_view v) {
    f->add_child("option", ns::kDataForms).add_child("value", ns::kDataForms).add_text(v);
  };
  field("FORM_TYPE", "hidden", kNodeConfig);
  field("pubsub#title", "text-single", c.title);
  xml::Element* access = field("pubsub#access_model", "list-single", c.access_model);
  for (auto v : {"presence", "open", "whitelist"}) option(access, v);
  field("pubsub#max_items", "text-single",
        c.max_items >= store::kPepMaxItems ? "max" : std::to_string(c.max_items));
  field("pubsub#persist_items", "boolean", c.persist_items ? "1" : "0");
  field("pubsub#deliver_notifications", "boolean", c.deliver_notifications ? "1" : "0");
  field("pubsub#deliver_payloads", "boolean", c.deliver_payloads ? "1" : "0");
  field("pubsub#notify_retract", "boolean", c.notify_retract ? "1" : "0");
  field("pubsub#notify_delete", "boolean", c.notify_delete ? "1" : "0");
  xml::Element* last =
      field("pubsub#send_last_published_item", "list-single", c.send_last_published_item);
  for (auto v : {"never", "on_sub", "on_sub_and_presence"}) option(last, v);
  for (const auto& fx : kFixed) field(fx.var, "fixed", fx.value);
  return x;
}

xml::Element pubsub_error(const xml::Element& iq, ErrorType type, std::string_view condition,
                          std::string_view pubsub_condition, std::string_view feature) {
  xml::Element e = xmpp::make_error_reply(iq, type, condition);
  if (!pubsub_condition.empty()) {
    if (xml::Element* err = e.child("error", ns::kClient)) {
      xml::Element& app = err->add_child(std::string(pubsub_condition), kPubsubErrors);
      if (!feature.empty()) app.set_attr("feature", feature);
    }
  }
  return e;
}

std::optional<AccessDenied> check_access(const store::PepNode& node, std::string_view requester,
                                         bool has_presence_sub) {
  for (const auto& [jid, aff] : node.affiliations) {
    if (jid == requester && aff == "outcast") {
      return AccessDenied{ErrorType::kAuth, "forbidden", ""};
    }
  }
  const std::string& model = node.config.access_model;
  if (model == "open") return std::nullopt;
  if (model == "whitelist") {
    for (const auto& [jid, aff] : node.affiliations) {
      if (jid == requester && (aff == "member" || aff == "publisher")) return std::nullopt;
    }
    // XEP-0060 §6.1.3.4, §6.5.9.
    return AccessDenied{ErrorType::kCancel, "not-allowed", "closed-node"};
  }
  if (has_presence_sub) return std::nullopt;
  // §6.1.3.2: the presence access model.
  return AccessDenied{ErrorType::kAuth, "not-authorized", "presence-subscription-required"};
}

CapsCache::Features CapsCache::by_ver(const std::string& ver) const {
  std::lock_guard lock(mu_);
  auto it = vers_.find(ver);
  return it == vers_.end() ? nullptr : it->second;
}

void CapsCache::put_ver(const std::string& ver, Features f) {
  std::lock_guard lock(mu_);
  if (vers_.insert_or_assign(ver, std::move(f)).second) order_.push_back(ver);
  while (vers_.size() > kMaxVers) {
    vers_.erase(order_.front());
    order_.pop_front();
  }
}

CapsCache::Features CapsCache::by_jid(const std::string& full) const {
  std::lock_guard lock(mu_);
  auto it = jids_.find(full);
  return it == jids_.end() ? nullptr : it->second;
}

void CapsCache::put_jid(const std::string& full, Features f) {
  std::lock_guard lock(mu_);
  jids_.insert_or_assign(full, std::move(f));
}

void CapsCache::forget_jid(const std::string& full) {
  std::lock_guard lock(mu_);
  jids_.erase(full);
}

std::size_t CapsCache::size() const {
  std::lock_guard lock(mu_);
  return vers_.size() + jids_.size();
}

}  // namespace pep

namespace {

using pep::CapsCache;
using pep::kPubsub;
using pep::kPubsubEvent;
using pep::kPubsubOwner;
using pep::pubsub_error;

bool has_from(const store::RosterItem& item) {
  return item.state.sub == xmpp::Subscription::kFrom || item.state.sub == xmpp::Subscription::kBoth;
}

// What a session's entity capabilities told the PEP service (session->ext<PepSession>()).
struct PepSession {
  std::string ver;               // of the last available presence with caps; empty: none
  CapsCache::Features features;  // its +notify features, once known
  std::string query_id;          // the disco#info request in flight, if any
  std::string query_ver, query_hash;
  CapsCache::Features before;  // what was known before the presence that asked
  bool query_initial = false;  // that presence was initial
};

// A node with what notifications need to know: its owner's contacts with a presence
// subscription (bare JIDs) and its explicit subscribers.
struct NodeAudience {
  bool exists = false;
  store::PepNode node;
  std::vector<std::string> contacts;
};

// A stored payload is the serialized children of the published <item/>; it is parsed back into
// elements (kabard wrote it, so it parses).
class PayloadReader final : public xml::StreamHandler {
 public:
  explicit PayloadReader(xml::Element& into) : into_(into) {}
  void on_stream_open(const xml::Element&, std::string_view) override {}
  void on_element(xml::Element&& e) override { into_.add_child(std::move(e)); }
  void on_stream_close() override {}

 private:
  xml::Element& into_;
};

void parse_item_payload(const std::string& payload, xml::Element& into) {
  PayloadReader reader(into);
  // Whatever size the stanza that brought it was allowed.
  xml::StreamLimits limits;
  limits.max_stanza_bytes = std::size_t{1} << 30;
  xml::StreamParser parser(reader, limits);
  parser.feed("<s xmlns='jabber:client'>");
  parser.feed(payload);
}

// The <item/> of a notification or a result: the stored payload spliced in.
xml::Element item_element(const store::PepItem& item, bool with_payload) {
  xml::Element el("item", kPubsub);
  el.set_attr("id", item.id);
  if (with_payload) parse_item_payload(item.payload, el);
  return el;
}

std::string serialize_payload(const xml::Element& item) {
  std::string out;
  for (const xml::Element* c : item.children()) out += xml::serialize(*c, ns::kClient);
  return out;
}

class PepModule final : public Module, public PepService {
 public:
  std::string_view name() const override { return "pep"; }

  void setup(ModuleContext& ctx) override {
    s_ = &ctx.server();
    ctx.provide<PepService>(*this);
    // XEP-0163 §8.1: the account's bare JID is a pubsub/pep service.
    ctx.disco_identity({"pubsub", "pep", ""}, kToAccount);
    for (const char* f : {"http://jabber.org/protocol/pubsub#access-presence",
                          "http://jabber.org/protocol/pubsub#access-open",
                          "http://jabber.org/protocol/pubsub#access-whitelist",
                          "http://jabber.org/protocol/pubsub#auto-create",
                          "http://jabber.org/protocol/pubsub#auto-subscribe",
                          "http://jabber.org/protocol/pubsub#config-node",
                          "http://jabber.org/protocol/pubsub#create-and-configure",
                          "http://jabber.org/protocol/pubsub#create-nodes",
                          "http://jabber.org/protocol/pubsub#delete-items",
                          "http://jabber.org/protocol/pubsub#delete-nodes",
                          "http://jabber.org/protocol/pubsub#filtered-notifications",
                          "http://jabber.org/protocol/pubsub#last-published",
                          "http://jabber.org/protocol/pubsub#item-ids",
                          "http://jabber.org/protocol/pubsub#modify-affiliations",
                          "http://jabber.org/protocol/pubsub#member-affiliation",
                          "http://jabber.org/protocol/pubsub#outcast-affiliation",
                          "http://jabber.org/protocol/pubsub#persistent-items",
                          "http://jabber.org/protocol/pubsub#presence-notifications",
                          "http://jabber.org/protocol/pubsub#publish",
                          "http://jabber.org/protocol/pubsub#publish-options",
                          "http://jabber.org/protocol/pubsub#purge-nodes",
                          "http://jabber.org/protocol/pubsub#retract-items",
                          "http://jabber.org/protocol/pubsub#retrieve-affiliations",
                          "http://jabber.org/protocol/pubsub#retrieve-default",
                          "http://jabber.org/protocol/pubsub#retrieve-items",
                          "http://jabber.org/protocol/pubsub#retrieve-subscriptions",
                          "http://jabber.org/protocol/pubsub#subscribe"}) {
      ctx.disco_feature(f, kToAccount);
    }
    ctx.disco_feature(kPubsub, kToAccount);
    ctx.iq(kPubsub, [this](SessionPtr from, xml::Element iq) {
      return handle_pubsub(std::move(from), std::move(iq));
    });
    ctx.iq(kPubsubOwner, [this](SessionPtr from, xml::Element iq) {
      return handle_owner(std::move(from), std::move(iq));
    });
    // Before the presence module's processing (order 1000): the caps of a resource's presence.
    ctx.hook(
        Hook::kPresenceOut,
        [this](SessionPtr from, xml::Element& p) -> awaitable<HookResult> {
          co_await on_presence(from, p);
          co_return HookResult::kContinue;
        },
        100);
    // The answers to the disco#info requests sent for caps.
    ctx.hook(
        Hook::kIqOut,
        [this](SessionPtr from, xml::Element& iq) -> awaitable<HookResult> {
          std::string_view type = iq.attr("type");
          if ((type != "result" && type != "error") || !iq.attr("id").starts_with(kQueryPrefix) ||
              (iq.has_attr("to") && iq.attr("to") != s_->config().domain)) {
            co_return HookResult::kContinue;
          }
          co_await on_caps_answer(from, iq);
          co_return HookResult::kStop;
        },
        50);
    ctx.on(SessionEvent::kClosed, [this](SessionPtr who) -> awaitable<void> {
      caps_.forget_jid(who->jid_str());
      co_return;
    });
  }

  // PepService.

  awaitable<std::vector<std::string>> visible_nodes(std::string owner,
                                                    std::string requester) override {
    auto op = [owner, requester](store::Store& st) {
      std::pair<std::vector<store::PepNode>, bool> r;
      r.first = st.pep_nodes(owner);
      auto item = st.roster_item(owner, requester);
      r.second = item && has_from(*item);
      return r;
    };
    auto [nodes, sub] = co_await s_->db(std::move(op));
    const bool is_owner = requester == owner + "@" + s_->config().domain;
    std::vector<std::string> out;
    for (const auto& n : nodes) {
      if (is_owner || !pep::check_access(n, requester, sub)) out.push_back(n.name);
    }
    co_return out;
  }

  awaitable<std::optional<xml::Element>> node_info(std::string owner, std::string node,
                                                   std::string requester) override {
    auto op = [owner, node, requester](store::Store& st) {
      std::pair<std::optional<store::PepNode>, bool> r;
      r.first = st.pep_node(owner, node);
      auto item = st.roster_item(owner, requester);
      r.second = item && has_from(*item);
      return r;
    };
    auto [n, sub] = co_await s_->db(std::move(op));
    const bool is_owner = requester == owner + "@" + s_->config().domain;
    if (!n || (!is_owner && pep::check_access(*n, requester, sub))) co_return std::nullopt;
    // XEP-0060 §5.3: a leaf node.
    xml::Element q("query", ns::kDiscoInfo);
    q.set_attr("node", node);
    xml::Element& id = q.add_child("identity", ns::kDiscoInfo);
    id.set_attr("category", "pubsub");
    id.set_attr("type", "leaf");
    q.add_child("feature", ns::kDiscoInfo).set_attr("var", kPubsub);
    co_return q;
  }

  awaitable<void> notify(std::string owner, std::string node, std::vector<store::PepItem> published,
                         std::vector<std::string> retracted) override {
    NodeAudience a = co_await audience(owner, node);
    if (!a.exists) co_return;
    for (const auto& item : published) send_event(owner, a, item_event(node, item, a), true);
    if (a.node.config.notify_retract) {
      for (const auto& id : retracted) send_event(owner, a, retract_event(node, id), false);
    }
  }

 private:
  static constexpr std::string_view kQueryPrefix = "kabar-caps-";

  std::string owner_bare(const std::string& user) const { return user + "@" + s_->config().domain; }

  // The account an IQ addresses (its 'to', else the sender's own); nullopt when it addresses
  // the domain itself, which has no pubsub service.
  std::optional<std::string> target_user(const SessionPtr& from, const xml::Element& iq) const {
    if (!iq.has_attr("to")) return from->username();
    auto to = xmpp::Jid::parse(iq.attr("to"));
    if (!to || to->local().empty()) return std::nullopt;
    return to->local();
  }

  // --- requests -------------------------------------------------------------------------

  awaitable<void> handle_pubsub(SessionPtr from, xml::Element iq) {
    auto user = target_user(from, iq);
    if (!user) {
      from->send(xmpp::make_error_reply(iq, ErrorType::kCancel, "service-unavailable"));
      co_return;
    }
    const xml::Element* ps = iq.first_child();
    const bool set = iq.attr("type") == "set";
    const xml::Element* action = nullptr;
    for (const xml::Element* c : ps->children()) {
      if (c->xmlns() != kPubsub) continue;
      if (c->name() == "publish-options" || (c->name() == "configure" && set)) continue;
      if (action != nullptr) {
        from->send(xmpp::make_error_reply(iq, ErrorType::kModify, "bad-request"));
        co_return;
      }
      action = c;
    }
    if (action == nullptr) {
      from->send(xmpp::make_error_reply(iq, ErrorType::kModify, "bad-request"));
      co_return;
    }
    if (!co_await account_exists(*user)) {
      from->send(xmpp::make_error_reply(iq, ErrorType::kCancel, "service-unavailable"));
      co_return;
    }
    const bool owner = *user == from->username();
    const std::string& what = action->name();
    if (set && what == "publish") {
      if (!owner) co_return from->send(pubsub_error(iq, ErrorType::kAuth, "forbidden"));
      co_await publish(from, iq, *action, ps->child("publish-options", kPubsub));
    } else if (set && what == "retract") {
      if (!owner) co_return from->send(pubsub_error(iq, ErrorType::kAuth, "forbidden"));
      co_await retract(from, iq, *action);
    } else if (set && what == "create") {
      if (!owner) co_return from->send(pubsub_error(iq, ErrorType::kAuth, "forbidden"));
      co_await create(from, iq, *action, ps->child("configure", kPubsub));
    } else if (set && what == "subscribe") {
      co_await subscribe(from, iq, *user, *action);
    } else if (set && what == "unsubscribe") {
      co_await unsubscribe(from, iq, *user, *action);
    } else if (!set && what == "items") {
      co_await items(from, iq, *user, *action);
    } else if (!set && (what == "subscriptions" || what == "affiliations")) {
      co_await own_relations(from, iq, *user, *action);
    } else {
      from->send(
          pubsub_error(iq, ErrorType::kCancel, "feature-not-implemented", "unsupported", what));
    }
  }

  awaitable<bool> account_exists(const std::string& user) {
    auto op = [user](store::Store& st) { return st.account(user).has_value(); };
    co_return co_await s_->db(std::move(op));
  }

  awaitable<void> publish(SessionPtr from, xml::Element iq, const xml::Element& pub,
                          const xml::Element* options) {
    const std::string node(pub.attr("node"));
    if (node.empty()) {
      from->send(pubsub_error(iq, ErrorType::kModify, "bad-request", "nodeid-required"));
      co_return;
    }
    auto items = pub.children("item", kPubsub);
    // XEP-0060 §7.1.3.6: a persistent node needs an item, and an item one payload.
    if (items.empty()) {
      from->send(pubsub_error(iq, ErrorType::kModify, "bad-request", "item-required"));
      co_return;
    }
    if (items.size() > 1) {
      from->send(pubsub_error(iq, ErrorType::kModify, "bad-request", "invalid-payload"));
      co_return;
    }
    const auto payload = items[0]->children();
    if (payload.empty()) {
      from->send(pubsub_error(iq, ErrorType::kModify, "bad-request", "payload-required"));
      co_return;
    }
    if (payload.size() > 1) {
      from->send(pubsub_error(iq, ErrorType::kModify, "bad-request", "invalid-payload"));
      co_return;
    }
    std::vector<pep::FormField> preconditions;
    if (options != nullptr) {
      // §7.1.5: a form of FORM_TYPE publish-options, every field a known precondition.
      const xml::Element* x = options->child("x", ns::kDataForms);
      auto form = x ? pep::read_form(*x) : std::nullopt;
      if (!form || form->form_type != pep::kPublishOptions) {
        from->send(xmpp::make_error_reply(iq, ErrorType::kModify, "bad-request"));
        co_return;
      }
      store::PepNodeConfig defaults;
      for (const auto& f : form->fields) {
        if (!pep::meets_precondition(defaults, f)) {
          from->send(xmpp::make_error_reply(iq, ErrorType::kModify, "bad-request",
                                            "unknown publish option or value: " + f.var));
          co_return;
        }
      }
      preconditions = std::move(form->fields);
    }
    store::PepItem item;
    item.id = std::string(items[0]->attr("id"));
    if (item.id.empty()) item.id = xmpp::to_hex(s_->random().bytes(16));  // §7.1.2: generated
    item.payload = serialize_payload(*items[0]);
    item.publisher = from->jid_str();
    item.stamp_ms = s_->now_ms();
    const std::string user = from->username();
    struct Published {
      bool conflict = false;
      NodeAudience audience;
    };
    auto op = [user, node, item, preconditions](store::Store& st) {
      Published r;
      auto existing = st.pep_node(user, node);
      store::PepNode n;
      if (existing) {
        for (const auto& f : preconditions) {
          if (!pep::meets_precondition(existing->config, f).value_or(false)) {
            r.conflict = true;
            return r;
          }
        }
        n = std::move(*existing);
      } else {
        // §7.1.4 auto-create, with the preconditions as its configuration (§7.1.5).
        n.name = node;
        for (const auto& f : preconditions) pep::apply_config_field(n.config, f);
        st.put_pep_node(user, n);
      }
      st.publish_pep_item(user, node, item, n.config.persist_items ? n.config.max_items : 1);
      r.audience = load_audience(st, user, std::move(n));
      return r;
    };
    Published r = co_await s_->db(std::move(op));
    if (r.conflict) {
      from->send(pubsub_error(iq, ErrorType::kCancel, "conflict", "precondition-not-met"));
      co_return;
    }
    xml::Element reply = xmpp::make_iq_result(iq);
    xml::Element& p = reply.add_child("pubsub", kPubsub);
    xml::Element& pe = p.add_child("publish", kPubsub);
    pe.set_attr("node", node);
    pe.add_child("item", kPubsub).set_attr("id", item.id);
    from->send(reply);
    send_event(user, r.audience, item_event(node, item, r.audience), true);
  }

  awaitable<void> retract(SessionPtr from, xml::Element iq, const xml::Element& r) {
    const std::string node(r.attr("node"));
    auto items = r.children("item", kPubsub);
    if (node.empty()) {
      from->send(pubsub_error(iq, ErrorType::kModify, "bad-request", "nodeid-required"));
      co_return;
    }
    if (items.size() != 1 || items[0]->attr("id").empty()) {
      from->send(pubsub_error(iq, ErrorType::kModify, "bad-request", "item-required"));
      co_return;
    }
    const std::string id(items[0]->attr("id"));
    const std::string user = from->username();
    auto op = [user, node, id](store::Store& st) {
      std::pair<int, NodeAudience> out{0, {}};  // 0 no node, 1 no item, 2 retracted
      auto n = st.pep_node(user, node);
      if (!n) return out;
      if (!st.retract_pep_item(user, node, id)) {
        out.first = 1;
        return out;
      }
      out.first = 2;
      out.second = load_audience(st, user, std::move(*n));
      return out;
    };
    auto [what, a] = co_await s_->db(std::move(op));
    if (what != 2) {
      from->send(xmpp::make_error_reply(iq, ErrorType::kCancel, "item-not-found"));
      co_return;
    }
    from->send(xmpp::make_iq_result(iq));
    // §7.2.2.1: subscribers hear of it when the request asks.
    std::string_view notify = r.attr("notify");
    if (notify == "true" || notify == "1") send_event(user, a, retract_event(node, id), false);
  }

  awaitable<void> create(SessionPtr from, xml::Element iq, const xml::Element& c,
                         const xml::Element* configure) {
    const std::string node(c.attr("node"));
    if (node.empty()) {
      // §8.1.2 instant nodes are not supported.
      from->send(pubsub_error(iq, ErrorType::kModify, "not-acceptable", "nodeid-required"));
      co_return;
    }
    store::PepNode n;
    n.name = node;
    if (configure != nullptr) {
      if (const xml::Element* x = configure->child("x", ns::kDataForms)) {
        auto form = pep::read_form(*x);
        if (!form || (!form->form_type.empty() && form->form_type != pep::kNodeConfig)) {
          from->send(xmpp::make_error_reply(iq, ErrorType::kModify, "bad-request"));
          co_return;
        }
        for (const auto& f : form->fields) {
          if (!pep::apply_config_field(n.config, f)) {
            from->send(xmpp::make_error_reply(iq, ErrorType::kModify, "not-acceptable",
                                              "unknown node option or value: " + f.var));
            co_return;
          }
        }
      }
    }
    const std::string user = from->username();
    auto op = [user, n](store::Store& st) {
      if (st.pep_node(user, n.name)) return false;
      st.put_pep_node(user, n);
      return true;
    };
    if (!co_await s_->db(std::move(op))) {
      from->send(xmpp::make_error_reply(iq, ErrorType::kCancel, "conflict"));
      co_return;
    }
    from->send(xmpp::make_iq_result(iq));
  }

  // The node and whether `requester` (bare) has a presence subscription to `user`.
  struct NodeAccess {
    std::optional<store::PepNode> node;
    bool presence_sub = false;
    std::vector<store::PepItem> items;
  };

  awaitable<NodeAccess> load_access(const std::string& user, const std::string& node,
                                    const std::string& requester, bool with_items) {
    auto op = [user, node, requester, with_items](store::Store& st) {
      NodeAccess a;
      a.node = st.pep_node(user, node);
      if (!a.node) return a;
      auto item = st.roster_item(user, requester);
      a.presence_sub = item && has_from(*item);
      if (with_items) a.items = st.pep_items(user, node);
      return a;
    };
    co_return co_await s_->db(std::move(op));
  }

  // Sends the access error for `requester` and returns true, or returns false when it may.
  bool refuse(const SessionPtr& from, const xml::Element& iq, const NodeAccess& a,
              const std::string& user, const std::string& requester) {
    if (requester == owner_bare(user)) return false;
    auto denied = pep::check_access(*a.node, requester, a.presence_sub);
    if (!denied) return false;
    from->send(pubsub_error(iq, denied->type, denied->condition, denied->pubsub_condition));
    return true;
  }

  awaitable<void> items(SessionPtr from, xml::Element iq, std::string user,
                        const xml::Element& req) {
    const std::string node(req.attr("node"));
    if (node.empty()) {
      from->send(pubsub_error(iq, ErrorType::kModify, "bad-request", "nodeid-required"));
      co_return;
    }
    std::optional<std::size_t> max;
    if (req.has_attr("max_items")) {
      std::string_view v = req.attr("max_items");
      std::size_t n = 0;
      auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
      if (ec != std::errc() || ptr != v.data() + v.size()) {
        from->send(xmpp::make_error_reply(iq, ErrorType::kModify, "bad-request"));
        co_return;
      }
      max = n;
    }
    const std::string requester = from->jid().bare_str();
    NodeAccess a = co_await load_access(user, node, requester, true);
    if (!a.node) {
      from->send(xmpp::make_error_reply(iq, ErrorType::kCancel, "item-not-found"));
      co_return;
    }
    if (refuse(from, iq, a, user, requester)) co_return;
    xml::Element reply = xmpp::make_iq_result(iq);
    xml::Element& out = reply.add_child("pubsub", kPubsub).add_child("items", kPubsub);
    out.set_attr("node", node);
    auto wanted = req.children("item", kPubsub);
    if (!wanted.empty()) {
      // §6.5.8: particular items, those that exist.
      for (const xml::Element* w : wanted) {
        for (const auto& it : a.items) {
          if (it.id == w->attr("id")) out.add_child(item_element(it, true));
        }
      }
    } else {
      // §6.5.7: the most recent max_items, oldest first (the order of publication).
      std::size_t n = std::min(a.items.size(), max.value_or(a.items.size()));
      for (std::size_t i = n; i-- > 0;) out.add_child(item_element(a.items[i], true));
    }
    from->send(reply);
  }

  awaitable<void> subscribe(SessionPtr from, xml::Element iq, std::string user,
                            const xml::Element& req) {
    const std::string node(req.attr("node"));
    auto jid = xmpp::Jid::parse(req.attr("jid"));
    // §6.1.3.1: one subscribes oneself only.
    if (!jid || jid->bare_str() != from->jid().bare_str()) {
      from->send(pubsub_error(iq, ErrorType::kModify, "bad-request", "invalid-jid"));
      co_return;
    }
    if (node.empty()) {
      from->send(pubsub_error(iq, ErrorType::kModify, "bad-request", "nodeid-required"));
      co_return;
    }
    const std::string requester = from->jid().bare_str();
    NodeAccess a = co_await load_access(user, node, requester, true);
    if (!a.node) {
      from->send(xmpp::make_error_reply(iq, ErrorType::kCancel, "item-not-found"));
      co_return;
    }
    if (refuse(from, iq, a, user, requester)) co_return;
    const std::string sub = jid->str();
    auto op = [user, node, sub](store::Store& st) {
      auto n = st.pep_node(user, node);
      if (!n) return;
      if (std::find(n->subscribers.begin(), n->subscribers.end(), sub) == n->subscribers.end()) {
        n->subscribers.push_back(sub);
        st.put_pep_node(user, *n);
      }
    };
    co_await s_->db(std::move(op));
    xml::Element reply = xmpp::make_iq_result(iq);
    xml::Element& s = reply.add_child("pubsub", kPubsub).add_child("subscription", kPubsub);
    s.set_attr("node", node);
    s.set_attr("jid", sub);
    s.set_attr("subscription", "subscribed");
    from->send(reply);
    // §6.1.7: the last published item.
    if (!a.items.empty() && a.node->config.send_last_published_item != "never") {
      NodeAudience one;
      one.exists = true;
      one.node = *a.node;
      xml::Element m = event_message(owner_bare(user), sub, item_event(node, a.items[0], one));
      xmpp::add_delay(m, owner_bare(user), a.items[0].stamp_ms);
      co_await s_->deliver(std::move(m));
    }
  }

  awaitable<void> unsubscribe(SessionPtr from, xml::Element iq, std::string user,
                              const xml::Element& req) {
    const std::string node(req.attr("node"));
    auto jid = xmpp::Jid::parse(req.attr("jid"));
    if (!jid || jid->bare_str() != from->jid().bare_str()) {
      from->send(pubsub_error(iq, ErrorType::kModify, "bad-request", "invalid-jid"));
      co_return;
    }
    const std::string sub = jid->str();
    auto op = [user, node, sub](store::Store& st) {
      auto n = st.pep_node(user, node);
      if (!n) return 0;
      auto it = std::find(n->subscribers.begin(), n->subscribers.end(), sub);
      if (it == n->subscribers.end()) return 1;
      n->subscribers.erase(it);
      st.put_pep_node(user, *n);
      return 2;
    };
    const int r = co_await s_->db(std::move(op));
    if (r == 0) {
      from->send(xmpp::make_error_reply(iq, ErrorType::kCancel, "item-not-found"));
    } else if (r == 1) {
      // §6.2.3.2.
      from->send(pubsub_error(iq, ErrorType::kCancel, "unexpected-request", "not-subscribed"));
    } else {
      from->send(xmpp::make_iq_result(iq));
    }
  }

  // §5.6, §5.7: the requester's own subscriptions and affiliations at this service.
  awaitable<void> own_relations(SessionPtr from, xml::Element iq, std::string user,
                                const xml::Element& req) {
    auto op = [user](store::Store& st) { return st.pep_nodes(user); };
    auto nodes = co_await s_->db(std::move(op));
    const std::string me = from->jid().bare_str();
    const bool owner = me == owner_bare(user);
    const bool subs = req.name() == "subscriptions";
    std::string_view only = req.attr("node");
    xml::Element reply = xmpp::make_iq_result(iq);
    xml::Element& out = reply.add_child("pubsub", kPubsub).add_child(req.name(), kPubsub);
    for (const auto& n : nodes) {
      if (!only.empty() && n.name != only) continue;
      if (subs) {
        for (const auto& j : n.subscribers) {
          auto jid = xmpp::Jid::parse(j);
          if (!jid || jid->bare_str() != me) continue;
          xml::Element& s = out.add_child("subscription", kPubsub);
          s.set_attr("node", n.name);
          s.set_attr("jid", j);
          s.set_attr("subscription", "subscribed");
        }
      } else if (owner) {
        xml::Element& a = out.add_child("affiliation", kPubsub);
        a.set_attr("node", n.name);
        a.set_attr("affiliation", "owner");
      } else {
        for (const auto& [j, aff] : n.affiliations) {
          if (j != me) continue;
          xml::Element& a = out.add_child("affiliation", kPubsub);
          a.set_attr("node", n.name);
          a.set_attr("affiliation", aff);
        }
      }
    }
    from->send(reply);
  }

  // --- owner requests -------------------------------------------------------------------

  awaitable<void> handle_owner(SessionPtr from, xml::Element iq) {
    auto user = target_user(from, iq);
    if (!user) {
      from->send(xmpp::make_error_reply(iq, ErrorType::kCancel, "service-unavailable"));
      co_return;
    }
    const xml::Element* ps = iq.first_child();
    auto actions = ps->children({}, kPubsubOwner);
    if (actions.size() != 1) {
      from->send(xmpp::make_error_reply(iq, ErrorType::kModify, "bad-request"));
      co_return;
    }
    if (*user != from->username()) {
      // §8: only the owner configures, deletes and manages.
      if (!co_await account_exists(*user)) {
        from->send(xmpp::make_error_reply(iq, ErrorType::kCancel, "service-unavailable"));
      } else {
        from->send(pubsub_error(iq, ErrorType::kAuth, "forbidden"));
      }
      co_return;
    }
    const xml::Element& a = *actions[0];
    const bool set = iq.attr("type") == "set";
    const std::string node(a.attr("node"));
    if (!set && a.name() == "default") {
      // §8.3: the default configuration.
      xml::Element reply = xmpp::make_iq_result(iq);
      reply.add_child("pubsub", kPubsubOwner)
          .add_child("default", kPubsubOwner)
          .add_child(pep::config_form(store::PepNodeConfig{}));
      from->send(reply);
      co_return;
    }
    if (a.name() != "configure" && a.name() != "delete" && a.name() != "purge" &&
        a.name() != "affiliations") {
      from->send(
          pubsub_error(iq, ErrorType::kCancel, "feature-not-implemented", "unsupported", a.name()));
      co_return;
    }
    if (node.empty()) {
      from->send(pubsub_error(iq, ErrorType::kModify, "bad-request", "nodeid-required"));
      co_return;
    }
    const std::string u = *user;
    auto op = [u, node](store::Store& st) { return st.pep_node(u, node); };
    std::optional<store::PepNode> n = co_await s_->db(std::move(op));
    if (!n) {
      from->send(xmpp::make_error_reply(iq, ErrorType::kCancel, "item-not-found"));
      co_return;
    }
    if (a.name() == "configure") {
      if (!set) {
        xml::Element reply = xmpp::make_iq_result(iq);
        xml::Element& c =
            reply.add_child("pubsub", kPubsubOwner).add_child("configure", kPubsubOwner);
        c.set_attr("node", node);
        c.add_child(pep::config_form(n->config));
        from->send(reply);
        co_return;
      }
      const xml::Element* x = a.child("x", ns::kDataForms);
      if (x != nullptr && x->attr("type") == "cancel") {
        from->send(xmpp::make_iq_result(iq));  // §8.2.5: nothing changes
        co_return;
      }
      auto form = x ? pep::read_form(*x) : std::nullopt;
      if (!form || (!form->form_type.empty() && form->form_type != pep::kNodeConfig)) {
        from->send(xmpp::make_error_reply(iq, ErrorType::kModify, "bad-request"));
        co_return;
      }
      for (const auto& f : form->fields) {
        if (!pep::apply_config_field(n->config, f)) {
          // §8.2.5.3 (form processing failed).
          from->send(xmpp::make_error_reply(iq, ErrorType::kModify, "not-acceptable",
                                            "unknown node option or value: " + f.var));
          co_return;
        }
      }
      store::PepNode changed = *n;
      auto op2 = [u, changed](store::Store& st) { st.put_pep_node(u, changed); };
      co_await s_->db(std::move(op2));
      from->send(xmpp::make_iq_result(iq));
      co_return;
    }
    if (a.name() == "affiliations") {
      if (!set) {
        xml::Element reply = xmpp::make_iq_result(iq);
        xml::Element& out =
            reply.add_child("pubsub", kPubsubOwner).add_child("affiliations", kPubsubOwner);
        out.set_attr("node", node);
        xml::Element& own = out.add_child("affiliation", kPubsubOwner);
        own.set_attr("jid", owner_bare(u));
        own.set_attr("affiliation", "owner");
        for (const auto& [j, aff] : n->affiliations) {
          xml::Element& e = out.add_child("affiliation", kPubsubOwner);
          e.set_attr("jid", j);
          e.set_attr("affiliation", aff);
        }
        from->send(reply);
        co_return;
      }
      // §8.9.2: members (the whitelist), outcasts, or none.
      for (const xml::Element* e : a.children("affiliation", kPubsubOwner)) {
        auto j = xmpp::Jid::parse(e->attr("jid"));
        std::string_view aff = e->attr("affiliation");
        if (!j || j->bare_str() == owner_bare(u) ||
            (aff != "member" && aff != "outcast" && aff != "none" && aff != "publisher")) {
          from->send(xmpp::make_error_reply(iq, ErrorType::kModify, "not-acceptable"));
          co_return;
        }
        const std::string bare = j->bare_str();
        std::erase_if(n->affiliations, [&bare](const auto& p) { return p.first == bare; });
        if (aff != "none") n->affiliations.emplace_back(bare, std::string(aff));
      }
      store::PepNode changed = *n;
      auto op3 = [u, changed](store::Store& st) { st.put_pep_node(u, changed); };
      co_await s_->db(std::move(op3));
      from->send(xmpp::make_iq_result(iq));
      co_return;
    }
    if (!set) {
      from->send(xmpp::make_error_reply(iq, ErrorType::kModify, "bad-request"));
      co_return;
    }
    if (a.name() == "purge") {
      // §8.5: every item goes; subscribers hear of it when retractions are announced.
      auto op4 = [u, node](store::Store& st) {
        std::pair<std::vector<store::PepItem>, NodeAudience> r;
        r.first = st.pep_items(u, node);
        for (const auto& it : r.first) st.retract_pep_item(u, node, it.id);
        if (auto n2 = st.pep_node(u, node)) r.second = load_audience(st, u, std::move(*n2));
        return r;
      };
      auto [gone, aud] = co_await s_->db(std::move(op4));
      from->send(xmpp::make_iq_result(iq));
      if (aud.exists && aud.node.config.notify_retract) {
        xml::Element ev("event", kPubsubEvent);
        ev.add_child("purge", kPubsubEvent).set_attr("node", node);
        send_event(u, aud, ev, false);
      }
      co_return;
    }
    // §8.4 delete: the node, its items, and a notification to the subscribers.
    auto op5 = [u, node](store::Store& st) {
      NodeAudience aud;
      if (auto n2 = st.pep_node(u, node)) aud = load_audience(st, u, std::move(*n2));
      st.delete_pep_node(u, node);
      return aud;
    };
    NodeAudience aud = co_await s_->db(std::move(op5));
    from->send(xmpp::make_iq_result(iq));
    if (aud.exists && aud.node.config.notify_delete) {
      xml::Element ev("event", kPubsubEvent);
      ev.add_child("delete", kPubsubEvent).set_attr("node", node);
      send_event(u, aud, ev, false);
    }
  }

  // --- notifications --------------------------------------------------------------------

  static NodeAudience load_audience(store::Store& st, const std::string& user, store::PepNode n) {
    NodeAudience a;
    a.exists = true;
    a.node = std::move(n);
    for (const auto& item : st.roster(user)) {
      if (has_from(item)) a.contacts.push_back(item.jid);
    }
    return a;
  }

  awaitable<NodeAudience> audience(const std::string& user, const std::string& node) {
    auto op = [user, node](store::Store& st) {
      auto n = st.pep_node(user, node);
      return n ? load_audience(st, user, std::move(*n)) : NodeAudience{};
    };
    co_return co_await s_->db(std::move(op));
  }

  xml::Element item_event(const std::string& node, const store::PepItem& item,
                          const NodeAudience& a) const {
    xml::Element ev("event", kPubsubEvent);
    xml::Element& items = ev.add_child("items", kPubsubEvent);
    items.set_attr("node", node);
    xml::Element it = item_element(item, a.node.config.deliver_payloads);
    it.set_xmlns(kPubsubEvent);
    // §7.1.2.3: the publisher, as the owner's resource.
    if (!item.publisher.empty()) it.set_attr("publisher", item.publisher);
    items.add_child(std::move(it));
    return ev;
  }

  static xml::Element retract_event(const std::string& node, const std::string& id) {
    xml::Element ev("event", kPubsubEvent);
    xml::Element& items = ev.add_child("items", kPubsubEvent);
    items.set_attr("node", node);
    items.add_child("retract", kPubsubEvent).set_attr("id", id);
    return ev;
  }

  static xml::Element event_message(const std::string& from, const std::string& to,
                                    const xml::Element& event) {
    // XEP-0163 §4.3.1: from the owner's bare JID; headline, so never stored offline.
    xml::Element m("message", ns::kClient);
    m.set_attr("from", from);
    m.set_attr("to", to);
    m.set_attr("type", "headline");
    m.add_child(event);
    return m;
  }

  // The +notify features of one resource (its caps), or null.
  CapsCache::Features features_of(const ResourceView& r) const {
    if (!r.presence) return nullptr;
    auto caps = xmpp::caps_of(*r.presence);
    if (!caps) return nullptr;
    if (!caps->hash.empty()) {
      if (auto f = caps_.by_ver(caps->ver)) return f;
    }
    return caps_.by_jid(r.session->jid_str());
  }

  // XEP-0163 §4.3: to the owner's available resources and to the contacts with a presence
  // subscription the access model lets in, each resource whose caps ask for node+notify; and
  // to the explicit subscribers (§4.3.3: a full JID once, a bare JID at its resources).
  void send_event(const std::string& user, const NodeAudience& a, const xml::Element& event,
                  bool filtered_by_deliver) {
    if (!a.exists) return;
    if (filtered_by_deliver && !a.node.config.deliver_notifications) return;
    const std::string owner = owner_bare(user);
    const std::string notify = a.node.name + "+notify";
    const BlockingView* blocking = s_->modules().service<BlockingView>();
    auto owner_jid = xmpp::Jid::parse(owner);
    std::set<std::string> sent;
    auto to_resources = [&](const std::string& bare, bool need_caps) {
      for (const auto& r : s_->resources_of(bare)) {
        if (!r.available || r.session->closed()) continue;
        if (need_caps) {
          auto f = features_of(r);
          if (!f || !f->contains(notify)) continue;
        }
        const std::string& full = r.session->jid_str();
        if (!sent.insert(full).second) continue;
        Server::send_to(r.session, event_message(owner, full, event));
      }
    };
    to_resources(owner, true);
    for (const auto& contact : a.contacts) {
      auto jid = xmpp::Jid::parse(contact);
      if (!jid || !s_->is_local(*jid)) continue;
      if (pep::check_access(a.node, contact, true)) continue;
      // §4.3.4: nothing to someone the owner blocks (or who blocks the owner).
      if (blocking != nullptr && owner_jid && blocking->blocked_either_way(*owner_jid, *jid)) {
        continue;
      }
      to_resources(contact, true);
    }
    for (const auto& sub : a.node.subscribers) {
      auto jid = xmpp::Jid::parse(sub);
      if (!jid || !s_->is_local(*jid)) continue;
      if (pep::check_access(a.node, jid->bare_str(), true) &&
          std::find(a.contacts.begin(), a.contacts.end(), jid->bare_str()) == a.contacts.end()) {
        // Access changed since it subscribed (an open node now closed): no more events.
        if (a.node.config.access_model != "open") continue;
      }
      if (jid->is_bare()) {
        to_resources(sub, false);
      } else if (sent.insert(sub).second) {
        if (auto target = s_->bound_session(*jid)) {
          Server::send_to(target, event_message(owner, sub, event));
        }
      }
    }
  }

  // --- entity capabilities and the last items at presence --------------------------------

  awaitable<void> on_presence(SessionPtr from, xml::Element& p) {
    if (p.has_attr("to")) co_return;  // directed presence sets no interest (XEP-0163 §4.1)
    std::string_view type = p.attr("type");
    auto& st = from->ext<PepSession>();
    if (type == "unavailable") {
      st = PepSession{};
      caps_.forget_jid(from->jid_str());
      co_return;
    }
    if (!type.empty()) co_return;
    const bool initial = !from->available;
    auto caps = xmpp::caps_of(p);
    const std::string ver = caps ? caps->ver : std::string();
    if (!initial && ver == st.ver) co_return;  // §4.3.2: no new notification
    CapsCache::Features before = initial ? nullptr : st.features;
    st.ver = ver;
    st.features = nullptr;
    if (!caps) co_return;
    if (!caps->hash.empty()) {
      if (auto f = caps_.by_ver(ver)) {
        st.features = f;
        co_await send_last_items(from, f, before);
        co_return;
      }
    }
    // XEP-0115 §6.2: ask the client once for what its hash stands for.
    st.query_id = std::string(kQueryPrefix) + std::to_string(next_query_.fetch_add(1));
    st.query_ver = ver;
    st.query_hash = caps->hash;
    st.before = before;
    st.query_initial = initial;
    xml::Element iq("iq", ns::kClient);
    iq.set_attr("type", "get");
    iq.set_attr("id", st.query_id);
    iq.set_attr("from", s_->config().domain);
    iq.set_attr("to", from->jid_str());
    iq.add_child("query", ns::kDiscoInfo).set_attr("node", caps->node + "#" + ver);
    from->send(iq);
  }

  awaitable<void> on_caps_answer(SessionPtr from, const xml::Element& iq) {
    auto& st = from->ext<PepSession>();
    if (iq.attr("id") != st.query_id) co_return;  // stale, or not ours
    st.query_id.clear();
    if (iq.attr("type") != "result") co_return;
    const xml::Element* q = iq.child("query", ns::kDiscoInfo);
    if (q == nullptr || st.query_ver != st.ver || !from->available) co_return;
    auto features = std::make_shared<std::set<std::string>>();
    for (const xml::Element* f : q->children("feature", ns::kDiscoInfo)) {
      std::string_view var = f->attr("var");
      if (var.ends_with("+notify")) features->insert(std::string(var));
    }
    CapsCache::Features shared = std::move(features);
    const bool verified = xmpp::caps_verify(st.query_hash, st.query_ver, *q);
    // §5.4: only a verified answer stands for every client with that hash.
    if (verified) {
      caps_.put_ver(st.query_ver, shared);
    } else {
      caps_.put_jid(from->jid_str(), shared);
    }
    st.features = shared;
    CapsCache::Features before = st.query_initial ? nullptr : st.before;
    co_await send_last_items(from, shared, before);
  }

  // XEP-0163 §4.3.2, §4.3.5: a resource newly available (or newly interested) gets the last
  // item of every node it may see and asks for (`features`, not already in `before`): its own
  // account's and those of the contacts whose presence it is subscribed to.
  awaitable<void> send_last_items(SessionPtr to, CapsCache::Features features,
                                  CapsCache::Features before) {
    if (!features || features->empty()) co_return;
    const std::string user = to->username();
    const std::string me = to->jid().bare_str();
    const std::string domain = s_->config().domain;
    struct Last {
      std::string owner;  // bare JID
      store::PepNode node;
      store::PepItem item;
    };
    auto op = [user, me, domain, features, before](store::Store& st) {
      std::vector<Last> out;
      auto add_from = [&](const std::string& owner_user, bool is_self) {
        for (auto& n : st.pep_nodes(owner_user)) {
          const std::string notify = n.name + "+notify";
          if (!features->contains(notify) || (before && before->contains(notify))) continue;
          if (n.config.send_last_published_item != "on_sub_and_presence") continue;
          if (!is_self && pep::check_access(n, me, true)) continue;
          auto items = st.pep_items(owner_user, n.name);
          if (items.empty()) continue;
          out.push_back(Last{owner_user + "@" + domain, std::move(n), std::move(items[0])});
        }
      };
      add_from(user, true);
      for (const auto& item : st.roster(user)) {
        // The contacts whose presence `user` sees: their roster has `user` with 'from'.
        if (item.state.sub != xmpp::Subscription::kTo &&
            item.state.sub != xmpp::Subscription::kBoth) {
          continue;
        }
        auto jid = xmpp::Jid::parse(item.jid);
        if (!jid || jid->domain() != domain || jid->local().empty()) continue;
        add_from(jid->local(), false);
      }
      return out;
    };
    std::vector<Last> last = co_await s_->db(std::move(op));
    const BlockingView* blocking = s_->modules().service<BlockingView>();
    for (const auto& l : last) {
      auto owner = xmpp::Jid::parse(l.owner);
      if (owner && owner->bare_str() != me && blocking != nullptr &&
          blocking->blocked_either_way(*owner, to->jid())) {
        continue;
      }
      NodeAudience a;
      a.exists = true;
      a.node = l.node;
      xml::Element m = event_message(l.owner, to->jid_str(), item_event(l.node.name, l.item, a));
      xmpp::add_delay(m, l.owner, l.item.stamp_ms);
      to->send(m);
    }
  }

  Server* s_ = nullptr;
  CapsCache caps_;
  std::atomic<std::uint64_t> next_query_{0};
};

}  // namespace

std::unique_ptr<Module> make_pep_module() { return std::make_unique<PepModule>(); }

}  // namespace kabar::server
