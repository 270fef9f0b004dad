// The storage interfaces, one per feature. Backends: SQLite (embedded default,
// store/sqlite_store.*), in memory for unit tests (store/memory_store.cc); PostgreSQL later.
// Calls are synchronous and may block: the server calls them on its storage threads, never on a
// shard's I/O thread. Backend failures (disk full, corrupt file) throw StoreError.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "xmpp/scram.h"
#include "xmpp/subscription.h"

namespace kabar::store {

class StoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Account {
  std::string username;  // nodeprep'ed localpart
  xmpp::ScramCredentials sha1;
  xmpp::ScramCredentials sha256;
  std::int64_t created_unix = 0;
};

struct RosterItem {
  std::string jid;  // bare JID of the contact, normalized
  std::string name;
  xmpp::SubState state;
  std::vector<std::string> groups;
  // The last subscription request received while pending_in, kept to redeliver it at login
  // (RFC 6121 §3.1.3) — the serialized <presence type='subscribe'/> stanza, or empty.
  std::string pending_in_stanza;
  // False for an entry kept only to remember a contact's pending subscription request: such an
  // entry is not part of the roster the user sees (RFC 6121 §3.1.3 creates no roster item).
  bool in_roster = true;
};

struct OfflineMessage {
  std::int64_t id = 0;        // increasing in arrival order
  std::string stanza;         // serialized <message/>, as routed
  std::int64_t stamp_ms = 0;  // arrival time, Unix milliseconds
  std::string sender;         // bare JID of the sender; empty when not known
};

// The limits on one recipient's offline queue. A message is stored only if, with it, the queue
// holds at most `messages` messages and `bytes` bytes of stanzas, and at most `per_sender`
// messages from its sender (so that one sender cannot fill someone's queue alone).
struct OfflineLimits {
  std::size_t messages = SIZE_MAX;
  std::size_t bytes = SIZE_MAX;
  std::size_t per_sender = SIZE_MAX;
};

// What push_offline_from() did: stored (`id`), or which limit refused the message.
struct OfflinePush {
  enum class Full { kNone, kMessages, kBytes, kSender };
  std::optional<std::int64_t> id;
  Full full = Full::kNone;
};

// A message delivered live and logged until its delivery is certain (OfflineStore::
// log_in_flight()). `stanza` is stored as it would be as an offline message (with its delay).
struct InFlightMessage {
  std::string username;
  std::string sender;  // bare JID; empty when not known
  std::string stanza;
  std::int64_t stamp_ms = 0;
  // Written straight as an offline message (its delivery failed before it was written).
  bool offline = false;
  std::int64_t id = 0;  // set when written
};

// What becomes of a message in flight: removed (delivered), or an offline message (not). An
// offline message delivered may be removed the same way, by its id.
struct InFlightChange {
  std::string username;
  std::int64_t id = 0;
  bool to_offline = false;
};

// An account's offline queue at a glance (kabarctl user offline).
struct OfflineSummary {
  std::size_t count = 0;
  std::size_t bytes = 0;
  std::int64_t oldest_ms = 0;  // stamps of the oldest and newest message; 0 when empty
  std::int64_t newest_ms = 0;
  // Messages per sender (bare JID; empty: not known), most first, then by sender.
  std::vector<std::pair<std::string, std::size_t>> senders;
};

struct LastActivity {
  std::int64_t logout_unix = 0;
  std::string status;
};

// One interface per feature, so a module (and its unit test) names only the storage it uses.
// Every time the store records is passed in by the caller (created_unix, stamp_ms, logout_unix):
// the store reads no clock, so a test's fake clock decides every stamp.

// Accounts and their SCRAM credentials.
class AccountStore {
 public:
  virtual ~AccountStore() = default;
  virtual bool create_account(const Account& a) = 0;  // false: the username is taken
  virtual std::optional<Account> account(std::string_view username) = 0;
  virtual bool set_credentials(const Account& a) = 0;  // false: no such account
  // Removes the account and everything it owns (roster, offline queue, vcard, last activity,
  // blocklist, PEP nodes and items, private XML, message archive and its preferences, push
  // registrations).
  virtual bool delete_account(std::string_view username) = 0;
  virtual std::vector<std::string> list_accounts() = 0;  // sorted
};

// Rosters with a version (XEP-0237) that changes on every change to the user's roster. Versions
// come from one sequence for all users and are never handed out twice, even to an account
// deleted and registered again (its clients may still cache the old roster and version).
class RosterStore {
 public:
  virtual ~RosterStore() = default;
  virtual std::vector<RosterItem> roster(std::string_view username) = 0;  // sorted by contact
  virtual std::optional<RosterItem> roster_item(std::string_view username,
                                                std::string_view contact) = 0;
  // Adds or replaces; returns the roster's new version.
  virtual std::int64_t put_roster_item(std::string_view username, const RosterItem& item) = 0;
  // Returns the roster's new version, or nullopt if there was no such item.
  virtual std::optional<std::int64_t> remove_roster_item(std::string_view username,
                                                         std::string_view contact) = 0;
  virtual std::int64_t roster_version(std::string_view username) = 0;
};

// Offline messages (XEP-0160), kept in arrival order; ids increase and are never reused.
class OfflineStore {
 public:
  virtual ~OfflineStore() = default;
  virtual std::size_t offline_count(std::string_view username) = 0;
  // Stores one message from `sender` (a bare JID; empty: not known) within `limits`. The checks
  // and the insert are atomic: concurrent pushes cannot together pass a limit.
  virtual OfflinePush push_offline_from(std::string_view username, std::string_view sender,
                                        std::string_view stanza, std::int64_t stamp_ms,
                                        const OfflineLimits& limits) = 0;
  // Stores one message unless the user already has `limit` stored; nullopt when full.
  std::optional<std::int64_t> push_offline(std::string_view username, std::string_view stanza,
                                           std::int64_t stamp_ms, std::size_t limit) {
    OfflineLimits limits;
    limits.messages = limit;
    return push_offline_from(username, {}, stanza, stamp_ms, limits).id;
  }
  // Every stored message, in order (tests and small queues; delivery reads offline_page()).
  virtual std::vector<OfflineMessage> offline_messages(std::string_view username) = 0;
  // The next messages after id `after_id` (0: from the start), in order: at most `max_count`,
  // and no more once they reach `max_bytes` of stanzas (but at least one, however large).
  virtual std::vector<OfflineMessage> offline_page(std::string_view username, std::int64_t after_id,
                                                   std::size_t max_count,
                                                   std::size_t max_bytes) = 0;
  virtual OfflineSummary offline_summary(std::string_view username) = 0;
  // Deletes the given messages (after their delivery is certain).
  virtual void delete_offline(std::string_view username, const std::vector<std::int64_t>& ids) = 0;
  // Deletes the whole queue; returns how many messages it held.
  virtual std::size_t clear_offline(std::string_view username) = 0;

  // Messages in flight: the durable log behind acknowledgements (XEP-0198 acks that mean
  // durable, store/message_log.h). A message delivered live to a session is also written here,
  // invisible to the queries above (count, page, summary, limits), until its delivery is certain
  // (then removed) or has failed (then it becomes an offline message). After a crash every
  // message still in flight becomes an offline message (release_in_flight(), at start).
  // Writes `added` (their ids are set) and applies `changed`, in one transaction.
  virtual void log_in_flight(std::vector<InFlightMessage>& added,
                             const std::vector<InFlightChange>& changed) = 0;
  // Every message in flight becomes an offline message; returns how many there were.
  virtual std::size_t release_in_flight() = 0;
};

// vcard-temp (XEP-0054): the serialized <vCard/> element, or nullopt.
class VcardStore {
 public:
  virtual ~VcardStore() = default;
  virtual std::optional<std::string> vcard(std::string_view username) = 0;
  virtual void set_vcard(std::string_view username, std::string_view vcard_xml) = 0;
};

// Last activity (XEP-0012).
class LastActivityStore {
 public:
  virtual ~LastActivityStore() = default;
  virtual std::optional<LastActivity> last_activity(std::string_view username) = 0;
  virtual void set_last_activity(std::string_view username, const LastActivity& last) = 0;
};

// Blocklists (XEP-0191): the JIDs an account blocks, as prepared JID strings (bare, full or a
// domain), sorted.
class BlockingStore {
 public:
  virtual ~BlockingStore() = default;
  virtual std::vector<std::string> blocklist(std::string_view username) = 0;
  // Adds `jids`; returns those that were not in the list before (sorted).
  virtual std::vector<std::string> block(std::string_view username,
                                         const std::vector<std::string>& jids) = 0;
  // Removes `jids`; returns those that were in the list (sorted).
  virtual std::vector<std::string> unblock(std::string_view username,
                                           const std::vector<std::string>& jids) = 0;
  // Empties the list; returns what it held (sorted).
  virtual std::vector<std::string> unblock_all(std::string_view username) = 0;
  // Every account's non-empty blocklist, by username (the server keeps them in memory).
  virtual std::vector<std::pair<std::string, std::vector<std::string>>> all_blocklists() = 0;
};

// A personal eventing (XEP-0163) node's configuration: the XEP-0060 node options kabard keeps.
struct PepNodeConfig {
  std::string access_model = "presence";  // presence, open or whitelist
  std::size_t max_items = 1;              // kPepMaxItems stands for "max"
  bool persist_items = true;
  bool notify_retract = true;
  bool notify_delete = true;
  bool deliver_notifications = true;
  bool deliver_payloads = true;
  std::string send_last_published_item = "on_sub_and_presence";  // never, on_sub, ...
  std::string title;
};
// The most items a node keeps (also what max_items "max" means).
inline constexpr std::size_t kPepMaxItems = 256;

struct PepNode {
  std::string name;
  PepNodeConfig config;
  // Affiliations other than the owner's (XEP-0060 §8.9): bare JID -> "member", "outcast", ...
  std::vector<std::pair<std::string, std::string>> affiliations;
  // Explicit subscriptions (XEP-0060 §6.1), by the JID subscribed (bare or full), sorted.
  std::vector<std::string> subscribers;
};

struct PepItem {
  std::string id;
  std::string payload;    // the serialized payload element(s) of the <item/>
  std::string publisher;  // full JID of the publishing resource
  std::int64_t stamp_ms = 0;
};

// Personal eventing (XEP-0163): each account's nodes and their items.
class PepStore {
 public:
  virtual ~PepStore() = default;
  virtual std::vector<PepNode> pep_nodes(std::string_view username) = 0;  // sorted by name
  virtual std::optional<PepNode> pep_node(std::string_view username, std::string_view node) = 0;
  // Creates the node or replaces its configuration, affiliations and subscribers; items beyond
  // the new max_items go (the oldest first).
  virtual void put_pep_node(std::string_view username, const PepNode& node) = 0;
  // Removes the node and its items; false if there was no such node.
  virtual bool delete_pep_node(std::string_view username, std::string_view node) = 0;
  // Adds `item` as the newest of the node (an item with its id is replaced), then keeps the
  // newest `max_items`; returns the ids of the items that went to make room.
  virtual std::vector<std::string> publish_pep_item(std::string_view username,
                                                    std::string_view node, const PepItem& item,
                                                    std::size_t max_items) = 0;
  // The node's items, newest first.
  virtual std::vector<PepItem> pep_items(std::string_view username, std::string_view node) = 0;
  // Removes one item; false if there was no such item.
  virtual bool retract_pep_item(std::string_view username, std::string_view node,
                                std::string_view id) = 0;
};

// Private XML storage (XEP-0049): one serialized element per account and (name, namespace).
class PrivateStore {
 public:
  virtual ~PrivateStore() = default;
  virtual std::optional<std::string> private_xml(std::string_view username, std::string_view name,
                                                 std::string_view xmlns) = 0;
  virtual void set_private_xml(std::string_view username, std::string_view name,
                               std::string_view xmlns, std::string_view xml) = 0;
};

// One message in an account's archive (XEP-0313): what it sent or received, as routed.
// MessageLog::recycle() empties each field for reuse: a field added here is emptied there too.
struct ArchivedMessage {
  std::string username;  // the account whose archive holds it
  // Its place in the archive (increasing, never reused): given by the message log
  // (MessageLog::archive_new()), or by the store when 0.
  std::int64_t seq = 0;
  // Its archive UID (XEP-0313 §3, the XEP-0359 stanza-id): unpredictable, unique in the archive.
  // One of archive_id()'s form (store/archive_index.h) that names `seq` is found without an
  // index; any other is kept in an index of ids.
  std::string id;
  std::string with;           // the other side's bare JID (the account's own for a note to self)
  std::string with_resource;  // and its resource, if the message named one
  std::int64_t stamp_ms = 0;  // when the server sent (outgoing) or received (incoming) it
  std::string stanza;         // the serialized <message/>, with its xmlns
};

// Which messages of an archive a query selects (XEP-0313 §4.1): each bound is optional.
struct ArchiveFilter {
  std::string with;                      // a bare JID; empty: every correspondent
  std::string with_resource;             // with a full JID in 'with': its resource must match too
  std::optional<std::int64_t> start_ms;  // stamp_ms >= start_ms
  std::optional<std::int64_t> end_ms;    // stamp_ms <= end_ms
  std::int64_t after_seq = 0;            // seq > after_seq
  std::int64_t before_seq = INT64_MAX;   // seq < before_seq
  std::vector<std::int64_t> seqs;        // not empty: only these
};

// Whether `filter` selects `m` (its seqs list aside): the backends' rule, in one place.
inline bool archive_matches(const ArchiveFilter& f, const ArchivedMessage& m) {
  if (!f.with.empty() && m.with != f.with) return false;
  if (!f.with.empty() && !f.with_resource.empty() && m.with_resource != f.with_resource) {
    return false;
  }
  if (f.start_ms && m.stamp_ms < *f.start_ms) return false;
  if (f.end_ms && m.stamp_ms > *f.end_ms) return false;
  return m.seq > f.after_seq && m.seq < f.before_seq;
}

// How an account wants its messages archived (XEP-0441, in urn:xmpp:mam:2 <prefs/>).
struct ArchivePrefs {
  std::string default_mode;         // "always", "never" or "roster"
  std::vector<std::string> always;  // bare JIDs always archived, sorted
  std::vector<std::string> never;   // bare JIDs never archived, sorted
};

// Message archives (XEP-0313), one per account.
class ArchiveStore {
 public:
  virtual ~ArchiveStore() = default;
  // Appends the messages in one transaction, in order; gives each one with seq 0 its seq. A
  // given seq must be larger than any before it.
  virtual void archive_append(std::vector<ArchivedMessage>& batch) = 0;
  // The largest seq the archive has held (0: none); new seqs must be larger.
  virtual std::int64_t archive_last_seq() = 0;
  // The seq of the message with archive UID `id` in the account's archive, if it is there.
  virtual std::optional<std::int64_t> archive_seq(std::string_view username,
                                                  std::string_view id) = 0;
  // At most `limit` messages that `filter` selects, oldest first: the oldest of them, or with
  // `newest` the newest of them (the last page).
  virtual std::vector<ArchivedMessage> archive_query(std::string_view username,
                                                     const ArchiveFilter& filter, std::size_t limit,
                                                     bool newest) = 0;
  virtual std::size_t archive_count(std::string_view username, const ArchiveFilter& filter) = 0;
  // Deletes the oldest messages, at most `limit` of them, up to the newest one stamped before
  // `before_ms` (in the order they were written: a message among them stamped a little later
  // goes too), so that each account loses the older part of its archive (XEP-0313 §3.2: no
  // holes); returns how many went. Called again until it returns less than `limit`.
  virtual std::size_t archive_expire(std::int64_t before_ms, std::size_t limit) = 0;
  // Empties the account's archive; returns how many messages it held (seqs are not reused).
  virtual std::size_t archive_clear(std::string_view username) = 0;
  // nullopt: the account never set any (the server's default applies).
  virtual std::optional<ArchivePrefs> archive_prefs(std::string_view username) = 0;
  virtual void set_archive_prefs(std::string_view username, const ArchivePrefs& prefs) = 0;
};

// A push notification registration (XEP-0357 §5): an account asked for notifications to be
// published to `node` at the push service `jid`, with these publish-options.
struct PushRegistration {
  std::string jid;              // the push service (app server), a prepared JID
  std::string node;             // the node to publish to there
  std::string options;          // the serialized publish-options form (jabber:x:data), or empty
  std::int64_t created_ms = 0;  // when it was last enabled
};

// Push notification registrations (XEP-0357), one per account, push service and node.
class PushStore {
 public:
  virtual ~PushStore() = default;
  // The account's registrations, sorted by (jid, node).
  virtual std::vector<PushRegistration> push_registrations(std::string_view username) = 0;
  // Adds the registration, or replaces the one with its jid and node (§5: the last request's
  // publish options win).
  virtual void put_push_registration(std::string_view username, const PushRegistration& r) = 0;
  // Removes the registration of `jid` and `node`, or with `node` nullopt every registration of
  // `jid` (§6); returns how many went.
  virtual std::size_t delete_push_registrations(std::string_view username, std::string_view jid,
                                                std::optional<std::string_view> node) = 0;
  // Every account's registrations, by username, sorted (the server keeps them in memory).
  virtual std::vector<std::pair<std::string, std::vector<PushRegistration>>>
  all_push_registrations() = 0;
};

// Everything a backend provides. The server hands modules this (Server::db()); a module that
// needs only a part names only that interface in its own functions.
class Store : public AccountStore,
              public RosterStore,
              public OfflineStore,
              public VcardStore,
              public LastActivityStore,
              public BlockingStore,
              public PepStore,
              public PrivateStore,
              public ArchiveStore,
              public PushStore {
 public:
  ~Store() override = default;
  // Schema version applied (migrations run at open); 0 for a backend without a schema.
  virtual int schema_version() = 0;
};

// Opens (creating if needed) `data_dir/kabar.db` in WAL mode and applies pending migrations.
// Throws StoreError on failure. The archive's newest index entries live in the memory of one
// store (SqliteStore's tails): the first one opened with `archive_owner` on a file holds them
// (kabard), with the journal of messages in flight (store/inflight_journal.h); any other reads
// the tails from the database at each archive query, and appends nothing to the archive or the
// journal (kabarctl opens its store so, never taking them from a kabard starting).
std::unique_ptr<Store> open_sqlite_store(const std::filesystem::path& data_dir,
                                         bool archive_owner = true);
// An in-memory backend with the same behaviour (store/memory_store.cc), for unit tests: nothing
// persists, and it may be used from one thread at a time.
std::unique_ptr<Store> make_memory_store();

}  // namespace kabar::store
