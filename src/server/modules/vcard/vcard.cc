// vcard-temp (XEP-0054): one's own vCard is read and written; others' are read.
#include "server/c2s_session.h"
#include "server/features.h"
#include "xml/serializer.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

namespace kabar::server {

namespace ns = xmpp::ns;

void register_vcard(ModuleContext& ctx) {
  Server& s = ctx.server();
  ctx.disco_feature(ns::kVcard, kToServerOrAccount);
  ctx.iq(ns::kVcard, [&s](SessionPtr from, xml::Element iq) -> awaitable<void> {
    auto to = iq.has_attr("to") ? xmpp::Jid::parse(iq.attr("to")) : std::optional<xmpp::Jid>();
    if (to && to->is_domain()) {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
      co_return;
    }
    std::string user = to ? to->local() : from->username();
    if (iq.attr("type") == "set") {
      if (user != from->username()) {
        from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kAuth, "forbidden"));
        co_return;
      }
      std::string bytes = xml::serialize(*iq.first_child(), ns::kClient);
      auto op = [user, bytes](store::Store& st) { st.set_vcard(user, bytes); };
      co_await s.db(std::move(op));
      from->send(xmpp::make_iq_result(iq));
      co_return;
    }
    struct Answer {
      bool exists = false;
      std::optional<std::string> vcard;
    };
    auto op2 = [user](store::Store& st) {
      Answer r;
      r.exists = st.account(user).has_value();
      if (r.exists) r.vcard = st.vcard(user);
      return r;
    };
    Answer a = co_await s.db(std::move(op2));
    if (!a.exists) {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
      co_return;
    }
    // The stored vCard is sent as stored; an account without one gets an empty vCard
    // (XEP-0054 §3.1).
    xml::Element reply = xmpp::make_iq_result(iq);
    if (!a.vcard) reply.add_child("vCard", ns::kVcard);
    std::string bytes = xml::serialize(reply, ns::kClient);
    if (a.vcard) {
      // Splice the stored element in before the closing tag.
      std::size_t pos = bytes.size() - 2;  // "/>" of a childless <iq/>
      bytes = bytes.substr(0, pos) + ">" + *a.vcard + "</iq>";
    }
    from->send_raw(std::move(bytes));
  });
}

namespace {

class VcardModule final : public Module {
 public:
  std::string_view name() const override { return "vcard"; }
  void setup(ModuleContext& ctx) override { register_vcard(ctx); }
};

}  // namespace

std::unique_ptr<Module> make_vcard_module() { return std::make_unique<VcardModule>(); }

}  // namespace kabar::server
