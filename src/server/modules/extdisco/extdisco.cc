// External service discovery (XEP-0215): the STUN/TURN servers a client should use for calls and
// file transfer, and the server's SOCKS5 proxy. TURN credentials are made per request by the
// shared-secret scheme coturn's use-auth-secret checks (draft-uberti-behave-turn-rest): the
// username is "EXPIRY:BAREJID" (EXPIRY in Unix seconds), the password base64(HMAC-SHA1(secret,
// username)), so kabard never has to talk to the TURN server.
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "server/c2s_session.h"
#include "server/features.h"
#include "server/modules/proxy65/proxy65.h"
#include "xmpp/scram.h"
#include "xmpp/stanza.h"

namespace kabar::server {

namespace {

constexpr const char* kExtdisco = "urn:xmpp:extdisco:2";

std::string hmac_sha1_base64(std::string_view key, std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha1(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), md, &len);
  return xmpp::base64_encode(std::string_view(reinterpret_cast<const char*>(md), len));
}

void add_service(Server& s, xml::Element& parent, const ExternalService& svc,
                 const std::string& user_bare) {
  xml::Element& e = parent.add_child("service", kExtdisco);
  e.set_attr("type", svc.type);
  e.set_attr("host", svc.host);
  e.set_attr("port", std::to_string(svc.port));
  e.set_attr("transport", svc.transport);
  if (svc.type != "stun" && !s.config().turn_secret.empty()) {
    const std::int64_t expiry_s = s.now_ms() / 1000 + s.config().turn_credential_ttl_s;
    const std::string username = std::to_string(expiry_s) + ":" + user_bare;
    e.set_attr("username", username);
    e.set_attr("password", hmac_sha1_base64(s.config().turn_secret, username));
    e.set_attr("expires", xmpp::format_datetime(expiry_s * 1000));
    e.set_attr("restricted", "1");
  }
}

awaitable<void> services(Server& s, SessionPtr from, xml::Element iq) {
  const xml::Element* q = iq.first_child();
  if (iq.attr("type") != "get") {
    from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "bad-request"));
    co_return;
  }
  auto to = iq.has_attr("to") ? xmpp::Jid::parse(iq.attr("to")) : std::optional<xmpp::Jid>();
  if (to && !to->is_domain()) {
    from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
    co_return;
  }
  const std::string user = from->jid().bare_str();
  xml::Element reply = xmpp::make_iq_result(iq);
  if (q->name() == "services") {
    // §3.1, with the optional type filter of §3.2.
    const std::string_view want = q->attr("type");
    xml::Element& out = reply.add_child("services", kExtdisco);
    if (!want.empty()) out.set_attr("type", want);
    for (const auto& svc : s.config().external_services) {
      if (want.empty() || want == svc.type) add_service(s, out, svc, user);
    }
    if (const Proxy65* p = s.modules().service<Proxy65>();
        p != nullptr && (want.empty() || want == "socks5")) {
      xml::Element& e = out.add_child("service", kExtdisco);
      e.set_attr("type", "socks5");
      e.set_attr("host", p->host());
      e.set_attr("port", std::to_string(p->port()));
      e.set_attr("transport", "tcp");
      e.set_attr("name", p->jid());
    }
    from->send(reply);
    co_return;
  }
  if (q->name() == "credentials") {
    // §3.3: fresh credentials for one service, named by host (and type).
    const xml::Element* want = q->child("service", kExtdisco);
    xml::Element& out = reply.add_child("credentials", kExtdisco);
    bool found = false;
    for (const auto& svc : s.config().external_services) {
      if (want != nullptr && want->attr("host") == svc.host &&
          (want->attr("type").empty() || want->attr("type") == svc.type)) {
        add_service(s, out, svc, user);
        found = true;
        break;
      }
    }
    if (!found) {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "item-not-found"));
      co_return;
    }
    from->send(reply);
    co_return;
  }
  from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
}

}  // namespace

void register_extdisco(ModuleContext& ctx) {
  Server& s = ctx.server();
  ctx.disco_feature(kExtdisco);
  ctx.iq(kExtdisco, [&s](SessionPtr from, xml::Element iq) {
    return services(s, std::move(from), std::move(iq));
  });
}

namespace {

class ExtdiscoModule final : public Module {
 public:
  std::string_view name() const override { return "extdisco"; }
  void setup(ModuleContext& ctx) override { register_extdisco(ctx); }
};

}  // namespace

std::unique_ptr<Module> make_extdisco_module() { return std::make_unique<ExtdiscoModule>(); }

}  // namespace kabar::server
