// The durable message log behind acknowledgements (XEP-0198 acks that mean durable): messages
// delivered live are written as messages in flight (OfflineStore::log_in_flight()) by group
// commit, removed once their delivery is certain, made offline messages when it failed.
//
// Any thread queues operations; the store's thread runs them. Everything queued while the store
// thread was busy goes into one transaction (run()): one commit per batch, not one per message.
// A message removed in the same batch that would write it (its recipient acknowledged it, or had
// it written, before the store thread came to it) is never written at all.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "store/store.h"

namespace kabar::store {

// One message's entry in the log. Its fields are the store thread's.
struct LogRecord {
  std::string username;    // the recipient's account
  std::int64_t id = 0;     // its row once written; 0 before, or when it never was
  std::int32_t slot = -1;  // run(): its place in the batch being written
  bool settled = false;    // removed or made offline
};

class MessageLog {
 public:
  // Runs on the store's thread after the commit of the batch that holds the operation: `ok`
  // false when that transaction failed (nothing of it is durable).
  using Done = std::function<void(bool ok)>;
  // `schedule` asks for run() on the store's thread; called (outside the lock) when an
  // operation is queued while none waits. `prepare` turns a stanza into what is stored (the
  // server adds its delay stamp), on the store's thread.
  // `schedule_lazy` (empty: `schedule`) asks for a run(store, true) that may come later: what
  // archive() queues waits for it, so that archive records gather into large commits (each
  // commit rewrites the pages it touches). The runs that other operations ask for leave the
  // archive records queued, unless a barrier() with a waiter or a full gather (kArchiveGatherMax)
  // wants them. `schedule_now` (empty: `schedule`) asks for a run() without the gathering
  // `schedule` may wait for: a barrier() has a waiter (an archive query) and nothing to gather.
  MessageLog(std::function<void()> schedule,
             std::function<std::string(std::string stanza, std::int64_t stamp_ms)> prepare,
             std::function<void()> schedule_lazy = {}, std::function<void()> schedule_now = {});

  // Writes a message in flight for `rec->username`; `done` (may be empty) once committed.
  void add(std::shared_ptr<LogRecord> rec, std::string sender, std::string stanza,
           std::int64_t stamp_ms, Done done);
  // Its delivery is certain: the record goes.
  void remove(std::shared_ptr<LogRecord> rec);
  // It was not delivered: it becomes an offline message (delivered at the next login).
  void release(std::shared_ptr<LogRecord> rec);
  // Appends a message to its account's archive (XEP-0313) in a later group commit (a lazy one
  // unless something else is queued; barrier() makes it come at once); `done` (may be empty)
  // once committed.
  void archive(ArchivedMessage m, Done done = {});
  // archive() for a new message whose seq the log gives: `fill(record, seq)` fills the record in
  // under the log's lock (its archive UID names the seq: archive_id()), so records reach the
  // store in the order of their seqs. Seqs are the microseconds since the epoch at which they
  // were given (one more than the last when that is not larger): never handed out twice, across
  // restarts too, without the store's help (set_archive_seq_floor() covers a clock set back).
  // The record comes empty, but may be one an earlier run wrote: its strings keep their buffers
  // (assigning to them allocates nothing when they fit), so `fill` sets every field it needs.
  template <class Fill>
  void archive_new(Fill&& fill) {
    bool schedule = false;
    bool lazy = false;
    {
      std::lock_guard lock(mu_);
      if (closed_) return;
      ArchivedMessage& a = archive_queue_.emplace_back(spare_record());
      try {
        fill(a, next_archive_seq());
      } catch (...) {
        archive_queue_.pop_back();  // nothing half filled in reaches the store
        throw;
      }
      queued_archive(schedule, lazy);
    }
    if (schedule) schedule_();
    if (lazy) schedule_lazy_();
  }
  // Archive records queued before a run is asked for at once, whatever the gather: memory stays
  // bounded, and so does the commit that an archive query's barrier and the messages in flight
  // may wait behind (16,384 records at 16,000 msg/s held the store thread for tens of ms).
  static constexpr std::size_t kArchiveGatherMax = 4096;
  // A written record is reused (archive_new()) when its stanza's buffer is at most this large.
  static constexpr std::size_t kRecycledStanzaMax = 1024;
  // Seqs given from now on are larger than `seq` (the store's newest, at start).
  void set_archive_seq_floor(std::int64_t seq);
  // `done` once everything queued before it is committed: with `now`, in a run that comes at once
  // (someone waits: an archive query). Without, in the next gathered run, and archive records
  // are not waited for (they keep gathering for their lazy run).
  void barrier(Done done, bool now = true);
  // No more operations are taken (the server is going; what is in flight stays in flight and
  // becomes offline at the next start).
  void close();

  // On the store's thread: everything queued, in one transaction, then the completions. The
  // archive records only when `lazy` (the run schedule_lazy asked for) or when something wants
  // them now (see the constructor). The store's error message when the transaction failed.
  std::optional<std::string> run(Store& store, bool lazy = false);

  // Totals since start (tests, logs): batches committed, messages written, messages removed
  // before they were written.
  struct Counts {
    std::uint64_t batches = 0;
    std::uint64_t written = 0;
    std::uint64_t never_written = 0;
    std::uint64_t archived = 0;
  };
  Counts counts() const;

 private:
  enum class Kind { kAdd, kRemove, kRelease, kBarrier };
  struct Op {
    Kind kind;
    std::shared_ptr<LogRecord> rec;
    std::string sender;
    std::string stanza;
    std::int64_t stamp_ms = 0;
    Done done;
  };
  void push(Op op);
  // Under mu_: after a record joined archive_queue_, whether a run must be asked for.
  void queued_archive(bool& schedule, bool& lazy);
  std::int64_t next_archive_seq();  // under mu_
  // Under mu_: an empty record for archive_new(), written before if one is spare.
  ArchivedMessage spare_record();
  // The records a run wrote, kept for archive_new() to fill again: records are made on the
  // shards and written on the store thread, so each string of each record was a malloc on one
  // thread and a free on another (glibc hands such a free to the other thread's arena, under
  // its lock). Records whose stanza needed a large buffer are not kept.
  void recycle(std::vector<ArchivedMessage>& written);

  std::function<void()> schedule_;
  std::function<void()> schedule_lazy_;
  std::function<void()> schedule_now_;
  std::function<std::string(std::string, std::int64_t)> prepare_;
  mutable std::mutex mu_;
  std::vector<Op> queue_;  // guarded by mu_
  // Archive records, apart from the other operations: one per archived message on the fast
  // path, moved in as they are (no Op around each). Appended in this order.
  std::vector<ArchivedMessage> archive_queue_;  // guarded by mu_
  std::vector<Done> archive_done_;              // guarded by mu_: the records' non-empty dones
  std::vector<ArchivedMessage> spare_;          // guarded by mu_: recycle()d records
  bool scheduled_ = false;                      // guarded by mu_: a run() will take queue_ soon
  bool lazy_scheduled_ = false;                 // guarded by mu_: a run() will take queue_ later
  bool archive_due_ = false;  // guarded by mu_: the next run() takes the archive records too
  bool closed_ = false;       // guarded by mu_
  std::int64_t last_archive_seq_ = 0;  // guarded by mu_
  Counts counts_;                      // guarded by mu_
};

}  // namespace kabar::store
