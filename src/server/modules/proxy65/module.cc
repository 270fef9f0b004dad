// The proxy65 module: runs the SOCKS5 bytestreams proxy (proxy65.h) as the component
// proxy.<domain> when a [proxy65] listener is configured, and provides it to extdisco.
#include "server/features.h"
#include "server/modules/proxy65/proxy65.h"

namespace kabar::server {
namespace {

class Proxy65Module final : public Module, public Component {
 public:
  std::string_view name() const override { return "proxy65"; }
  void setup(ModuleContext&) override {}

  void start(ModuleContext& ctx) override {
    if (ctx.config().proxy65.empty()) return;
    proxy_ = std::make_unique<Proxy65>(ctx.server());
    proxy_->start();
    server_ = &ctx.server();
    ctx.component(*this);
    ctx.provide(*proxy_);
  }
  void stop() override {
    if (proxy_) proxy_->stop();
  }

  // Component
  const std::string& jid() const override { return proxy_->jid(); }
  std::string_view disco_name() const override { return "SOCKS5 Bytestreams Service"; }
  awaitable<void> handle(SessionPtr from, xml::Element stanza) override {
    Proxy65* p = proxy_.get();
    co_await serve_iq_only(
        *server_, std::move(from), std::move(stanza),
        [p](SessionPtr f, xml::Element iq) { return p->handle_iq(std::move(f), std::move(iq)); });
  }

 private:
  std::unique_ptr<Proxy65> proxy_;
  Server* server_ = nullptr;
};

}  // namespace

std::unique_ptr<Module> make_proxy65_module() { return std::make_unique<Proxy65Module>(); }

}  // namespace kabar::server
