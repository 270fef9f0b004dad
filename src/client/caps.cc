// XEP-0115 entity capabilities in the client: our own <c/> (the sha-1 of our disco#info, in every
// broadcast presence, and the disco#info of node#ver answered), and the contacts': a ver not yet
// known is asked once with disco#info of node#ver, verified (§5.1, §5.4) and cached, in memory
// and in Options::caps_cache.
#include "xmpp/caps.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "client/client_impl.h"
#include "kabar/private_file.h"

namespace kabar::client {

namespace {
constexpr std::size_t kCapsCacheMax = 2000;  // hashes kept in the file (each a client version)

bool caps_cacheable(std::string_view s) {
  return !s.empty() && s.find_first_of("\t\n\r ") == std::string_view::npos;
}
}  // namespace

xml::Element Client::Impl::own_disco_info() const {
  xml::Element info("query", ns::kDiscoInfo);
  info.add_child("identity", ns::kDiscoInfo)
      .set_attr("category", "client")
      .set_attr("type", "console")
      .set_attr("name", "kabar");
  for (const char* f : {ns::kDiscoInfo, ns::kPing, kReceipts, kChatStates, xmpp::kCaps})
    info.add_child("feature", ns::kDiscoInfo).set_attr("var", f);
  for (const auto& f : extra_features) {
    if (f == ns::kDiscoInfo || f == ns::kPing || f == kReceipts || f == kChatStates ||
        f == xmpp::kCaps)
      continue;  // §5.4: a feature listed twice would make our own ver untrustworthy
    info.add_child("feature", ns::kDiscoInfo).set_attr("var", f);
  }
  return info;
}

std::string Client::Impl::own_caps_ver() const {
  return xmpp::caps_ver(own_disco_info()).value_or(std::string());
}

void Client::Impl::announce_presence() {
  if (!own_presence) return;
  xml::Element p = *own_presence;
  if (std::string ver = own_caps_ver(); !ver.empty())
    p.add_child(xmpp::caps_element(Client::kCapsNode, ver));
  last_presence = xml::serialize(p);
  send(p);
}

const std::vector<std::string>* Client::Impl::known_caps(const std::string& full_jid) const {
  auto j = caps_of_jid.find(full_jid);
  if (j == caps_of_jid.end()) return nullptr;
  auto v = caps_by_ver.find(j->second);
  return v == caps_by_ver.end() ? nullptr : &v->second;
}

void Client::Impl::note_caps(const std::string& from, const xml::Element& presence) {
  if (from == bound) return;  // our own presence, reflected: we know what we support
  auto c = xmpp::caps_of(presence);
  // Legacy caps (no hash, XEP-0115 §1.2) cannot be verified: that client is asked directly.
  // A ver with white space is no base64 hash (and would not fit the cache file's lines).
  if (!c || c->hash.empty() || !xmpp::caps_hash(c->hash, "") || !caps_cacheable(c->ver)) {
    caps_of_jid.erase(from);
    return;
  }
  load_caps();
  std::string key = c->hash + ' ' + c->ver;
  caps_of_jid[from] = key;
  if (caps_by_ver.count(key) || caps_asking.count(key) || caps_bad.count(key + ' ' + from)) return;
  auto done = std::make_shared<asio::steady_timer>(io);
  done->expires_after(opt.timeout + std::chrono::seconds(1));
  caps_asking[key] = done;
  asio::co_spawn(io, learn_caps(shared_from_this(), from, key, c->node + '#' + c->ver),
                 asio::detached);
}

// `self` keeps the session alive until the answer (or the timeout).
awaitable<void> Client::Impl::learn_caps(std::shared_ptr<Impl> self, std::string from,
                                         std::string key, std::string node) {
  xml::Element q("iq", ns::kClient);
  q.set_attr("type", "get").set_attr("to", from);
  q.add_child("query", ns::kDiscoInfo).set_attr("node", node);
  std::optional<xml::Element> r = co_await self->iq(std::move(q));
  if (auto a = self->caps_asking.find(key); a != self->caps_asking.end()) {
    a->second->cancel();
    self->caps_asking.erase(a);
  }
  const xml::Element* info = nullptr;
  if (r && r->attr("type") == "result") info = r->child("query", ns::kDiscoInfo);
  const std::size_t space = key.find(' ');
  const std::string algo = key.substr(0, space);
  const std::string ver = key.substr(space + 1);
  if (info == nullptr || !xmpp::caps_verify(algo, ver, *info)) {
    // §5.4: not what the hash stands for (or no answer): nothing is cached under it, and this
    // resource is not asked again for it; features_of() asks it plainly.
    if (self->caps_bad.size() >= kCapsCacheMax) self->caps_bad.clear();
    self->caps_bad.insert(key + ' ' + from);
    co_return;
  }
  std::vector<std::string> features;
  for (const xml::Element* f : info->children("feature", ns::kDiscoInfo))
    features.emplace_back(f->attr("var"));
  std::sort(features.begin(), features.end());
  // Bounded: a contact could announce ver after ver (each a few features).
  if (self->caps_by_ver.size() >= kCapsCacheMax) self->caps_by_ver.erase(self->caps_by_ver.begin());
  self->caps_by_ver[key] = std::move(features);
  self->save_caps();
}

// The file: one line per hash, "HASH VER" then each feature, separated by tabs.
void Client::Impl::load_caps() {
  if (caps_loaded) return;
  caps_loaded = true;
  if (opt.caps_cache.empty()) return;
  std::ifstream f(opt.caps_cache);
  std::string line;
  while (caps_by_ver.size() < kCapsCacheMax && std::getline(f, line)) {
    std::stringstream ss(line);
    std::string key, feature;
    if (!std::getline(ss, key, '\t') || key.find(' ') == std::string::npos) continue;
    std::vector<std::string> features;
    while (std::getline(ss, feature, '\t'))
      if (!feature.empty()) features.push_back(feature);
    caps_by_ver[key] = std::move(features);
  }
}

void Client::Impl::save_caps() const {
  if (opt.caps_cache.empty()) return;
  std::string out;
  std::size_t n = 0;
  for (const auto& [key, features] : caps_by_ver) {
    if (n == kCapsCacheMax) break;
    if (!std::all_of(features.begin(), features.end(), caps_cacheable)) continue;
    out += key;
    for (const auto& f : features) out += '\t' + f;
    out += '\n';
    ++n;
  }
  // 0600, like the roster cache: it tells which clients the user's contacts run.
  write_private_file(opt.caps_cache, out);
}

awaitable<std::optional<std::vector<std::string>>> Client::features_of(std::string jid) {
  auto self = impl_;
  std::optional<std::vector<std::string>> out;
  // Its caps are being asked about (its presence just came): the answer is near.
  std::shared_ptr<asio::steady_timer> asking;
  if (auto j = self->caps_of_jid.find(jid); j != self->caps_of_jid.end()) {
    if (auto a = self->caps_asking.find(j->second); a != self->caps_asking.end())
      asking = a->second;
  }
  if (asking) {
    boost::system::error_code ec;
    co_await asking->async_wait(asio::redirect_error(use_awaitable, ec));
  }
  if (const auto* known = self->known_caps(jid)) {
    out = *known;
    co_return out;
  }
  xml::Element q("iq", ns::kClient);
  q.set_attr("type", "get").set_attr("to", jid);
  q.add_child("query", ns::kDiscoInfo);
  std::optional<xml::Element> r = co_await self->iq(std::move(q));
  const xml::Element* info = nullptr;
  if (r && r->attr("type") == "result") info = r->child("query", ns::kDiscoInfo);
  if (info != nullptr) {
    out.emplace();
    for (const xml::Element* f : info->children("feature", ns::kDiscoInfo))
      out->emplace_back(f->attr("var"));
  }
  co_return out;
}

awaitable<std::optional<bool>> Client::supports(std::string jid, std::string feature) {
  std::optional<std::vector<std::string>> f = co_await features_of(std::move(jid));
  std::optional<bool> out;
  if (f) out = std::find(f->begin(), f->end(), feature) != f->end();
  co_return out;
}

const std::vector<std::string>* Client::caps_features(const std::string& full_jid) const {
  return impl_->known_caps(full_jid);
}

std::string Client::caps_ver() const { return impl_->own_caps_ver(); }

}  // namespace kabar::client
