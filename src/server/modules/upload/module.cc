// The upload module: HTTP File Upload (upload.h) as the component upload.<domain> when an HTTP
// listener is configured; sweeps expired files and unused slots once a minute.
#include <spdlog/spdlog.h>

#include "server/features.h"
#include "server/modules/upload/upload.h"

namespace kabar::server {
namespace {

class UploadModule final : public Module, public Component {
 public:
  std::string_view name() const override { return "upload"; }
  void setup(ModuleContext&) override {}

  void start(ModuleContext& ctx) override {
    Server& s = ctx.server();
    if (s.http() == nullptr || s.config().http.empty()) return;  // not on HTTPS alone
    server_ = &s;
    upload_ = std::make_unique<Upload>(s, *s.http());
    ctx.component(*this);
    timer_ = std::make_unique<asio::steady_timer>(s.io());
    asio::co_spawn(s.io(), sweep_loop(), asio::detached);
  }
  void stop() override {
    stopping_ = true;
    if (timer_) timer_->cancel();
  }

  // Component
  const std::string& jid() const override { return upload_->jid(); }
  std::string_view disco_name() const override { return "HTTP File Upload"; }
  awaitable<void> handle(SessionPtr from, xml::Element stanza) override {
    Upload* u = upload_.get();
    co_await serve_iq_only(
        *server_, std::move(from), std::move(stanza),
        [u](SessionPtr f, xml::Element iq) { return u->handle_iq(std::move(f), std::move(iq)); });
  }

 private:
  // On shard 0, where the upload component lives.
  awaitable<void> sweep_loop() {
    while (!stopping_) {
      timer_->expires_after(std::chrono::seconds(60));
      boost::system::error_code ec;
      co_await timer_->async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (stopping_) co_return;
      upload_->sweep(server_->now_ms());
    }
  }

  Server* server_ = nullptr;
  std::unique_ptr<Upload> upload_;
  std::unique_ptr<asio::steady_timer> timer_;
  bool stopping_ = false;
};

}  // namespace

std::unique_ptr<Module> make_upload_module() { return std::make_unique<UploadModule>(); }

}  // namespace kabar::server
