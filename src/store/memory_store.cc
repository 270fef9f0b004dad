// The in-memory backend of Store, for unit tests: the same contract as SqliteStore (the store
// tests run against both), with nothing on disk. Not thread-safe: one thread at a time, as the
// server's storage thread uses a store.
#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <utility>

#include "store/store.h"

namespace kabar::store {
namespace {

class MemoryStore final : public Store {
 public:
  // Accounts.

  bool create_account(const Account& a) override { return accounts_.emplace(a.username, a).second; }

  std::optional<Account> account(std::string_view username) override {
    auto it = accounts_.find(username);
    if (it == accounts_.end()) return std::nullopt;
    return it->second;
  }

  bool set_credentials(const Account& a) override {
    auto it = accounts_.find(a.username);
    if (it == accounts_.end()) return false;
    it->second.sha1 = a.sha1;
    it->second.sha256 = a.sha256;  // the creation time is not a credential
    return true;
  }

  bool delete_account(std::string_view username) override {
    const bool existed = accounts_.erase(std::string(username)) == 1;
    // Like SqliteStore: everything under the name goes, with or without an account row.
    rosters_.erase(std::string(username));
    versions_.erase(std::string(username));
    offline_.erase(std::string(username));
    std::erase_if(in_flight_,
                  [username](const auto& kv) { return kv.second.username == username; });
    vcards_.erase(std::string(username));
    last_.erase(std::string(username));
    blocklists_.erase(std::string(username));
    pep_.erase(std::string(username));
    private_.erase(std::string(username));
    archives_.erase(std::string(username));
    archive_prefs_.erase(std::string(username));
    push_.erase(std::string(username));
    return existed;
  }

  std::vector<std::string> list_accounts() override {
    std::vector<std::string> names;
    names.reserve(accounts_.size());
    for (const auto& [name, a] : accounts_) names.push_back(name);
    return names;  // std::map: sorted as std::string's operator< sorts
  }

  // Rosters.

  std::vector<RosterItem> roster(std::string_view username) override {
    std::vector<RosterItem> items;
    auto it = rosters_.find(username);
    if (it == rosters_.end()) return items;
    for (const auto& [contact, item] : it->second) items.push_back(item);
    return items;
  }

  std::optional<RosterItem> roster_item(std::string_view username,
                                        std::string_view contact) override {
    auto it = rosters_.find(username);
    if (it == rosters_.end()) return std::nullopt;
    auto item = it->second.find(contact);
    if (item == it->second.end()) return std::nullopt;
    return item->second;
  }

  std::int64_t put_roster_item(std::string_view username, const RosterItem& item) override {
    RosterItem stored = item;
    // Duplicate groups collapse, order kept (RFC 6121 §2.1.2.2), as SqliteStore stores them.
    std::set<std::string> seen;
    std::erase_if(stored.groups, [&seen](const std::string& g) { return !seen.insert(g).second; });
    rosters_[std::string(username)].insert_or_assign(item.jid, std::move(stored));
    return bump_version(username);
  }

  std::optional<std::int64_t> remove_roster_item(std::string_view username,
                                                 std::string_view contact) override {
    auto it = rosters_.find(username);
    if (it == rosters_.end()) return std::nullopt;
    auto item = it->second.find(contact);
    if (item == it->second.end()) return std::nullopt;
    it->second.erase(item);
    return bump_version(username);
  }

  std::int64_t roster_version(std::string_view username) override {
    auto it = versions_.find(username);
    return it == versions_.end() ? 0 : it->second;
  }

  // Offline messages.

  std::size_t offline_count(std::string_view username) override {
    auto it = offline_.find(username);
    return it == offline_.end() ? 0 : it->second.size();
  }

  OfflinePush push_offline_from(std::string_view username, std::string_view sender,
                                std::string_view stanza, std::int64_t stamp_ms,
                                const OfflineLimits& limits) override {
    auto& queue = offline_[std::string(username)];
    std::size_t bytes = 0;
    std::size_t from_sender = 0;
    for (const OfflineMessage& m : queue) {
      bytes += m.stanza.size();
      if (m.sender == sender) ++from_sender;
    }
    OfflinePush r;
    if (queue.size() >= limits.messages) {
      r.full = OfflinePush::Full::kMessages;
    } else if (stanza.size() > limits.bytes || bytes > limits.bytes - stanza.size()) {
      r.full = OfflinePush::Full::kBytes;
    } else if (from_sender >= limits.per_sender) {
      r.full = OfflinePush::Full::kSender;
    } else {
      queue.push_back(
          OfflineMessage{++last_offline_id_, std::string(stanza), stamp_ms, std::string(sender)});
      r.id = last_offline_id_;
    }
    return r;
  }

  std::vector<OfflineMessage> offline_messages(std::string_view username) override {
    auto it = offline_.find(username);
    if (it == offline_.end()) return {};
    return it->second;
  }

  std::vector<OfflineMessage> offline_page(std::string_view username, std::int64_t after_id,
                                           std::size_t max_count, std::size_t max_bytes) override {
    std::vector<OfflineMessage> out;
    auto it = offline_.find(username);
    if (it == offline_.end()) return out;
    std::size_t bytes = 0;
    for (const OfflineMessage& m : it->second) {
      if (m.id <= after_id) continue;
      if (out.size() >= max_count || (!out.empty() && bytes >= max_bytes)) break;
      bytes += m.stanza.size();
      out.push_back(m);
    }
    return out;
  }

  OfflineSummary offline_summary(std::string_view username) override {
    OfflineSummary sum;
    auto it = offline_.find(username);
    if (it == offline_.end()) return sum;
    std::map<std::string, std::size_t> by_sender;
    for (const OfflineMessage& m : it->second) {
      sum.oldest_ms = sum.count == 0 ? m.stamp_ms : std::min(sum.oldest_ms, m.stamp_ms);
      sum.newest_ms = sum.count == 0 ? m.stamp_ms : std::max(sum.newest_ms, m.stamp_ms);
      ++sum.count;
      sum.bytes += m.stanza.size();
      ++by_sender[m.sender];
    }
    sum.senders.assign(by_sender.begin(), by_sender.end());
    std::stable_sort(sum.senders.begin(), sum.senders.end(),
                     [](const auto& a, const auto& b) { return a.second > b.second; });
    return sum;
  }

  void delete_offline(std::string_view username, const std::vector<std::int64_t>& ids) override {
    auto it = offline_.find(username);
    if (it == offline_.end()) return;
    const std::set<std::int64_t> gone(ids.begin(), ids.end());
    std::erase_if(it->second, [&gone](const OfflineMessage& m) { return gone.contains(m.id); });
  }

  std::size_t clear_offline(std::string_view username) override {
    auto it = offline_.find(username);
    if (it == offline_.end()) return 0;
    const std::size_t n = it->second.size();
    offline_.erase(it);
    return n;
  }

  void log_in_flight(std::vector<InFlightMessage>& added,
                     const std::vector<InFlightChange>& changed) override {
    for (InFlightMessage& m : added) {
      m.id = ++last_offline_id_;
      if (m.offline) {
        to_offline(m);
      } else {
        in_flight_.emplace(m.id, m);
      }
    }
    for (const InFlightChange& c : changed) {
      auto it = in_flight_.find(c.id);
      if (it == in_flight_.end() || it->second.username != c.username) {
        // An offline message delivered is removed the same way.
        if (!c.to_offline) delete_offline(c.username, {c.id});
        continue;
      }
      if (c.to_offline) to_offline(it->second);
      in_flight_.erase(it);
    }
  }

  std::size_t release_in_flight() override {
    const std::size_t n = in_flight_.size();
    for (auto& [id, m] : in_flight_) to_offline(m);
    in_flight_.clear();
    return n;
  }

  // vcard-temp and last activity.

  std::optional<std::string> vcard(std::string_view username) override {
    auto it = vcards_.find(username);
    if (it == vcards_.end()) return std::nullopt;
    return it->second;
  }

  void set_vcard(std::string_view username, std::string_view vcard_xml) override {
    vcards_.insert_or_assign(std::string(username), std::string(vcard_xml));
  }

  std::optional<LastActivity> last_activity(std::string_view username) override {
    auto it = last_.find(username);
    if (it == last_.end()) return std::nullopt;
    return it->second;
  }

  void set_last_activity(std::string_view username, const LastActivity& last) override {
    last_.insert_or_assign(std::string(username), last);
  }

  // Blocklists.

  std::vector<std::string> blocklist(std::string_view username) override {
    auto it = blocklists_.find(username);
    if (it == blocklists_.end()) return {};
    return {it->second.begin(), it->second.end()};
  }

  std::vector<std::string> block(std::string_view username,
                                 const std::vector<std::string>& jids) override {
    std::set<std::string> added;
    auto& list = blocklists_[std::string(username)];
    for (const auto& j : jids) {
      if (list.insert(j).second) added.insert(j);
    }
    if (list.empty()) blocklists_.erase(std::string(username));
    return {added.begin(), added.end()};
  }

  std::vector<std::string> unblock(std::string_view username,
                                   const std::vector<std::string>& jids) override {
    auto it = blocklists_.find(username);
    if (it == blocklists_.end()) return {};
    std::set<std::string> removed;
    for (const auto& j : jids) {
      if (it->second.erase(j) == 1) removed.insert(j);
    }
    if (it->second.empty()) blocklists_.erase(it);
    return {removed.begin(), removed.end()};
  }

  std::vector<std::string> unblock_all(std::string_view username) override {
    auto it = blocklists_.find(username);
    if (it == blocklists_.end()) return {};
    std::vector<std::string> all(it->second.begin(), it->second.end());
    blocklists_.erase(it);
    return all;
  }

  std::vector<std::pair<std::string, std::vector<std::string>>> all_blocklists() override {
    std::vector<std::pair<std::string, std::vector<std::string>>> out;
    for (const auto& [user, list] : blocklists_) {
      out.emplace_back(user, std::vector<std::string>(list.begin(), list.end()));
    }
    return out;
  }

  // Push registrations.

  std::vector<PushRegistration> push_registrations(std::string_view username) override {
    auto it = push_.find(username);
    if (it == push_.end()) return {};
    std::vector<PushRegistration> out;
    for (const auto& [key, r] : it->second) out.push_back(r);
    return out;
  }

  void put_push_registration(std::string_view username, const PushRegistration& r) override {
    push_[std::string(username)][{r.jid, r.node}] = r;
  }

  std::size_t delete_push_registrations(std::string_view username, std::string_view jid,
                                        std::optional<std::string_view> node) override {
    auto it = push_.find(username);
    if (it == push_.end()) return 0;
    const std::size_t n = std::erase_if(it->second, [&](const auto& kv) {
      return kv.first.first == jid && (!node || kv.first.second == *node);
    });
    if (it->second.empty()) push_.erase(it);
    return n;
  }

  std::vector<std::pair<std::string, std::vector<PushRegistration>>> all_push_registrations()
      override {
    std::vector<std::pair<std::string, std::vector<PushRegistration>>> out;
    for (const auto& [user, regs] : push_) {
      out.emplace_back(user, std::vector<PushRegistration>());
      for (const auto& [key, r] : regs) out.back().second.push_back(r);
    }
    return out;
  }

  // Personal eventing.

  std::vector<PepNode> pep_nodes(std::string_view username) override {
    std::vector<PepNode> out;
    auto it = pep_.find(username);
    if (it == pep_.end()) return out;
    for (const auto& [name, n] : it->second) out.push_back(n.node);
    return out;
  }

  std::optional<PepNode> pep_node(std::string_view username, std::string_view node) override {
    const PepNodeData* n = find_node(username, node);
    if (n == nullptr) return std::nullopt;
    return n->node;
  }

  void put_pep_node(std::string_view username, const PepNode& node) override {
    PepNodeData& n = pep_[std::string(username)][node.name];
    n.node = node;
    std::sort(n.node.subscribers.begin(), n.node.subscribers.end());
    trim(n.items, node.config.max_items);
  }

  bool delete_pep_node(std::string_view username, std::string_view node) override {
    auto it = pep_.find(username);
    if (it == pep_.end()) return false;
    const bool existed = it->second.erase(std::string(node)) == 1;
    if (it->second.empty()) pep_.erase(it);
    return existed;
  }

  std::vector<std::string> publish_pep_item(std::string_view username, std::string_view node,
                                            const PepItem& item, std::size_t max_items) override {
    auto& n = pep_[std::string(username)][std::string(node)];
    if (n.node.name.empty()) n.node.name = std::string(node);
    std::erase_if(n.items, [&item](const PepItem& i) { return i.id == item.id; });
    n.items.insert(n.items.begin(), item);
    return trim(n.items, max_items);
  }

  std::vector<PepItem> pep_items(std::string_view username, std::string_view node) override {
    const PepNodeData* n = find_node(username, node);
    if (n == nullptr) return {};
    return n->items;
  }

  bool retract_pep_item(std::string_view username, std::string_view node,
                        std::string_view id) override {
    auto it = pep_.find(username);
    if (it == pep_.end()) return false;
    auto n = it->second.find(node);
    if (n == it->second.end()) return false;
    return std::erase_if(n->second.items, [id](const PepItem& i) { return i.id == id; }) > 0;
  }

  // Private XML storage.

  std::optional<std::string> private_xml(std::string_view username, std::string_view name,
                                         std::string_view xmlns) override {
    auto it = private_.find(username);
    if (it == private_.end()) return std::nullopt;
    auto x = it->second.find(std::string(name) + ' ' + std::string(xmlns));
    if (x == it->second.end()) return std::nullopt;
    return x->second;
  }

  void set_private_xml(std::string_view username, std::string_view name, std::string_view xmlns,
                       std::string_view xml) override {
    private_[std::string(username)].insert_or_assign(std::string(name) + ' ' + std::string(xmlns),
                                                     std::string(xml));
  }

  // Message archives.

  void archive_append(std::vector<ArchivedMessage>& batch) override {
    for (ArchivedMessage& m : batch) {
      m.seq = m.seq > last_archive_seq_ ? m.seq : last_archive_seq_ + 1;
      last_archive_seq_ = m.seq;
      archives_[m.username].push_back(m);
    }
  }

  std::int64_t archive_last_seq() override { return last_archive_seq_; }

  std::optional<std::int64_t> archive_seq(std::string_view username, std::string_view id) override {
    auto it = archives_.find(username);
    if (it == archives_.end()) return std::nullopt;
    for (const auto& m : it->second) {
      if (m.id == id) return m.seq;
    }
    return std::nullopt;
  }

  std::vector<ArchivedMessage> archive_query(std::string_view username, const ArchiveFilter& f,
                                             std::size_t limit, bool newest) override {
    std::vector<ArchivedMessage> out;
    auto it = archives_.find(username);
    if (it == archives_.end() || limit == 0) return out;
    // The list is in seq order: the seq bounds are found by bisection, then walked from the
    // end the page starts at (a page of an archive of 100,000 costs a page, not the archive).
    const auto& list = it->second;
    auto by_seq = [](const ArchivedMessage& m, std::int64_t seq) { return m.seq < seq; };
    auto lo = std::lower_bound(list.begin(), list.end(),
                               f.after_seq == INT64_MAX ? f.after_seq : f.after_seq + 1, by_seq);
    auto hi = std::lower_bound(list.begin(), list.end(), f.before_seq, by_seq);
    auto take = [&](const ArchivedMessage& m) {
      if (!archive_matches(f, m)) return;
      if (!f.seqs.empty() && std::find(f.seqs.begin(), f.seqs.end(), m.seq) == f.seqs.end()) {
        return;
      }
      out.push_back(m);
    };
    if (newest) {
      for (auto at = hi; at != lo && out.size() < limit;) take(*--at);
      std::reverse(out.begin(), out.end());
    } else {
      for (auto at = lo; at < hi && out.size() < limit; ++at) take(*at);
    }
    return out;
  }

  std::size_t archive_count(std::string_view username, const ArchiveFilter& f) override {
    return selected(username, f).size();
  }

  std::size_t archive_expire(std::int64_t before_ms, std::size_t limit) override {
    // Per account, everything up to its newest message that is too old; of those, the oldest
    // `limit` (by seq: each account still loses a prefix).
    std::vector<std::pair<std::int64_t, std::string>> doomed;  // seq, account
    for (const auto& [user, list] : archives_) {
      std::size_t cut = 0;
      for (std::size_t i = 0; i < list.size(); ++i) {
        if (list[i].stamp_ms < before_ms) cut = i + 1;
      }
      for (std::size_t i = 0; i < cut; ++i) doomed.emplace_back(list[i].seq, user);
    }
    std::sort(doomed.begin(), doomed.end());
    if (doomed.size() > limit) doomed.resize(limit);
    std::map<std::string, std::size_t, std::less<>> per_user;
    for (const auto& [seq, user] : doomed) ++per_user[user];
    for (const auto& [user, k] : per_user) {
      auto& list = archives_.find(user)->second;
      list.erase(list.begin(), list.begin() + static_cast<std::ptrdiff_t>(k));
    }
    return doomed.size();
  }

  std::size_t archive_clear(std::string_view username) override {
    auto it = archives_.find(username);
    if (it == archives_.end()) return 0;
    const std::size_t n = it->second.size();
    archives_.erase(it);
    return n;
  }

  std::optional<ArchivePrefs> archive_prefs(std::string_view username) override {
    auto it = archive_prefs_.find(username);
    if (it == archive_prefs_.end()) return std::nullopt;
    return it->second;
  }

  void set_archive_prefs(std::string_view username, const ArchivePrefs& prefs) override {
    archive_prefs_.insert_or_assign(std::string(username), prefs);
  }

  int schema_version() override { return 0; }

 private:
  // The messages of the account's archive `f` selects, oldest first.
  std::vector<const ArchivedMessage*> selected(std::string_view username, const ArchiveFilter& f) {
    std::vector<const ArchivedMessage*> out;
    auto it = archives_.find(username);
    if (it == archives_.end()) return out;
    for (const auto& m : it->second) {
      if (!archive_matches(f, m)) continue;
      if (!f.seqs.empty() && std::find(f.seqs.begin(), f.seqs.end(), m.seq) == f.seqs.end()) {
        continue;
      }
      out.push_back(&m);
    }
    return out;
  }

  std::int64_t bump_version(std::string_view username) {
    // One sequence for every user, never reset: see RosterStore.
    versions_.insert_or_assign(std::string(username), ++last_version_);
    return last_version_;
  }

  // A message in flight joins its account's queue, in id order.
  void to_offline(const InFlightMessage& m) {
    auto& queue = offline_[m.username];
    auto at = std::find_if(queue.begin(), queue.end(),
                           [&m](const OfflineMessage& o) { return o.id > m.id; });
    queue.insert(at, OfflineMessage{m.id, m.stanza, m.stamp_ms, m.sender});
  }

  template <typename V>
  using ByName = std::map<std::string, V, std::less<>>;

  struct PepNodeData {
    PepNode node;
    std::vector<PepItem> items;  // newest first
  };

  const PepNodeData* find_node(std::string_view username, std::string_view node) const {
    auto it = pep_.find(username);
    if (it == pep_.end()) return nullptr;
    auto n = it->second.find(node);
    return n == it->second.end() ? nullptr : &n->second;
  }

  // Keeps the newest `max` items; returns the ids of those removed.
  static std::vector<std::string> trim(std::vector<PepItem>& items, std::size_t max) {
    std::vector<std::string> gone;
    while (items.size() > max) {
      gone.push_back(items.back().id);
      items.pop_back();
    }
    return gone;
  }

  ByName<Account> accounts_;
  ByName<ByName<RosterItem>> rosters_;  // sorted by contact, as SqliteStore returns them
  ByName<std::int64_t> versions_;
  ByName<std::vector<OfflineMessage>> offline_;
  std::map<std::int64_t, InFlightMessage> in_flight_;  // by id
  ByName<std::string> vcards_;
  ByName<LastActivity> last_;
  ByName<std::set<std::string>> blocklists_;  // never holds an empty set
  ByName<ByName<PepNodeData>> pep_;
  ByName<ByName<std::string>> private_;            // by "name namespace"
  ByName<std::vector<ArchivedMessage>> archives_;  // oldest first
  ByName<ArchivePrefs> archive_prefs_;
  // By (jid, node): sorted as SqliteStore returns them; never holds an empty map.
  ByName<std::map<std::pair<std::string, std::string>, PushRegistration>> push_;
  std::int64_t last_archive_seq_ = 0;
  std::int64_t last_version_ = 0;
  std::int64_t last_offline_id_ = 0;
};

}  // namespace

std::unique_ptr<Store> make_memory_store() { return std::make_unique<MemoryStore>(); }

}  // namespace kabar::store
