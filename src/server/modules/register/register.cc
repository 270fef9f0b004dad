// In-band registration (XEP-0077): account creation before authentication (when enabled),
// password change and account removal after it.
#include "server/modules/register/register.h"

#include <spdlog/spdlog.h>

#include "server/c2s_session.h"
#include "server/features.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

namespace kabar::server {

namespace ns = xmpp::ns;

namespace {

store::Account make_account(const std::string& user, const std::string& password, int iterations,
                            std::int64_t now_s) {
  store::Account a;
  a.username = user;
  a.sha1 = xmpp::make_credentials(xmpp::ScramHash::kSha1, password, iterations);
  a.sha256 = xmpp::make_credentials(xmpp::ScramHash::kSha256, password, iterations);
  a.created_unix = now_s;
  return a;
}

}  // namespace

bool RegistrationLimit::take(std::string_view address, std::int64_t now_ms) {
  const std::string key = address_key(address);
  std::lock_guard lock(mu_);
  if (by_address_.size() >= kMaxKeys && by_address_.find(key) == by_address_.end()) {
    // A flood from this many addresses: forgetting them all beats growing without bound.
    by_address_.clear();
  }
  auto& q = by_address_[key];
  while (!q.empty() && q.front() <= now_ms - kWindowMs) q.pop_front();
  if (static_cast<int>(q.size()) >= per_hour_) return false;
  q.push_back(now_ms);
  return true;
}

void RegistrationLimit::give_back(std::string_view address, std::int64_t taken_ms) {
  const std::string key = address_key(address);
  std::lock_guard lock(mu_);
  auto it = by_address_.find(key);
  if (it == by_address_.end()) return;
  auto& q = it->second;
  for (auto t = q.begin(); t != q.end(); ++t) {
    if (*t == taken_ms) {
      q.erase(t);
      break;
    }
  }
  if (q.empty()) by_address_.erase(it);
}

awaitable<xml::Element> handle_register_preauth(Server& s, const xml::Element& iq,
                                                std::string_view peer_address) {
  const xml::Element* q = iq.child("query", ns::kRegister);
  if (iq.attr("type") == "get") {
    xml::Element reply = xmpp::make_iq_result(iq);
    xml::Element& query = reply.add_child("query", ns::kRegister);
    query.add_child("instructions", ns::kRegister)
        .add_text("Choose a username and password for use with this service.");
    query.add_child("username", ns::kRegister);
    query.add_child("password", ns::kRegister);
    co_return reply;
  }
  if (iq.attr("type") != "set") {
    co_return xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request");
  }
  std::string username = q->child_text("username", ns::kRegister);
  std::string password = q->child_text("password", ns::kRegister);
  if (username.empty() || password.empty()) {
    // XEP-0077 §3.1: required information missing.
    co_return xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "not-acceptable");
  }
  auto prepared = xmpp::nodeprep(username);
  if (!prepared) {
    co_return xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "jid-malformed");
  }
  auto prepared_password = xmpp::saslprep(password);
  if (!prepared_password) {
    co_return xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "not-acceptable",
                                     "the password has characters SASLprep does not allow");
  }
  password = *prepared_password;
  std::string user = *prepared;
  // Checked before the costly derivation, so that a flood over the limit costs nothing.
  RegistrationLimit* limit = s.modules().service<RegistrationLimit>();
  const std::int64_t taken_ms = s.now_ms();
  if (limit != nullptr && !limit->take(peer_address, taken_ms)) {
    spdlog::info("registration from {} refused: {} accounts in the last hour", peer_address,
                 s.config().registrations_per_address);
    // XEP-0077 §3.1.1: a server MAY answer <not-acceptable/> to an entity that registers too
    // many times; of type wait (RFC 6120 §8.3.2: retry later), as the limit is per hour.
    co_return xmpp::make_error_reply(iq, xmpp::ErrorType::kWait, "not-acceptable",
                                     "too many accounts registered from your address; try later");
  }
  int iterations = s.config().scram_iterations;
  std::int64_t now_s = s.now_ms() / 1000;
  // PBKDF2 twice (SHA-1 and SHA-256 keys) on the CPU pool, not on the store's thread, which
  // serves every roster and offline read meanwhile.
  auto derive = [user, password, iterations, now_s] {
    return make_account(user, password, iterations, now_s);
  };
  store::Account account = co_await s.cpu().run(std::move(derive));
  auto op = [account = std::move(account)](store::Store& st) {
    if (st.account(account.username)) return false;
    return st.create_account(account);
  };
  bool created = co_await s.db(std::move(op));
  if (!created && limit != nullptr) limit->give_back(peer_address, taken_ms);
  if (!created) {
    co_return xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "conflict");
  }
  spdlog::info("registered {}@{}", user, s.config().domain);
  co_return xmpp::make_iq_result(iq);
}

void register_register(ModuleContext& ctx) {
  Server& s = ctx.server();
  // XEP-0077 §8: announced only where in-band registration is on.
  if (ctx.config().allow_registration) ctx.disco_feature(ns::kRegister);
  ctx.iq(ns::kRegister, [&s](SessionPtr from, xml::Element iq) -> awaitable<void> {
    std::string_view to = iq.attr("to");
    if (!to.empty() && to != s.config().domain) {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
      co_return;
    }
    const std::string user = from->username();
    const xml::Element* q = iq.first_child();
    if (iq.attr("type") == "get") {
      xml::Element reply = xmpp::make_iq_result(iq);
      xml::Element& query = reply.add_child("query", ns::kRegister);
      query.add_child("registered", ns::kRegister);
      query.add_child("username", ns::kRegister).add_text(user);
      query.add_child("password", ns::kRegister);
      from->send(reply);
      co_return;
    }
    if (q->child("remove", ns::kRegister) != nullptr) {
      // XEP-0077 §3.2: remove the account, answer, and end the account's sessions.
      BlockingView* blocking = s.modules().service<BlockingView>();
      ArchiveView* archive = s.modules().service<ArchiveView>();
      PushView* push = s.modules().service<PushView>();
      // Its messages still on their way to the archive are written first, then go with it.
      co_await s.log_committed();
      auto op2 = [user, blocking, archive, push](store::Store& st) {
        st.delete_account(user);
        if (blocking != nullptr) blocking->forget(user);  // its blocklist went with it
        if (archive != nullptr) archive->forget(user);
        if (push != nullptr) push->forget(user);
      };
      co_await s.db(std::move(op2));
      spdlog::info("account {}@{} removed by its owner", user, s.config().domain);
      from->send(xmpp::make_iq_result(iq));
      for (auto& session : s.sessions_of(from->jid().bare_str())) {
        session->stream_error("not-authorized", "account removed");
      }
      co_return;
    }
    std::string username = q->child_text("username", ns::kRegister);
    std::string password = q->child_text("password", ns::kRegister);
    auto prepared = xmpp::nodeprep(username);
    auto prepared_password = xmpp::saslprep(password);
    if (!prepared_password || !prepared) {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request"));
      co_return;
    }
    if (*prepared != user) {
      from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kAuth, "not-authorized"));
      co_return;
    }
    // XEP-0077 §3.3: password change.
    int iterations = s.config().scram_iterations;
    std::int64_t now_s = s.now_ms() / 1000;
    password = *prepared_password;
    auto derive = [user, password, iterations, now_s] {
      return make_account(user, password, iterations, now_s);
    };
    store::Account account = co_await s.cpu().run(std::move(derive));
    auto op3 = [account = std::move(account)](store::Store& st) { st.set_credentials(account); };
    co_await s.db(std::move(op3));
    spdlog::info("password changed for {}@{}", user, s.config().domain);
    from->send(xmpp::make_iq_result(iq));
  });
}

namespace {

class RegisterModule final : public Module {
 public:
  std::string_view name() const override { return "register"; }
  void setup(ModuleContext& ctx) override {
    limit_ = std::make_unique<RegistrationLimit>(ctx.config().registrations_per_address);
    ctx.provide(*limit_);
    register_register(ctx);
  }

 private:
  std::unique_ptr<RegistrationLimit> limit_;
};

}  // namespace

std::unique_ptr<Module> make_register_module() { return std::make_unique<RegisterModule>(); }

}  // namespace kabar::server
