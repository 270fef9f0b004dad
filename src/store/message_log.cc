#include "store/message_log.h"

#include <algorithm>
#include <utility>

#include "store/archive_index.h"

namespace kabar::store {

MessageLog::MessageLog(std::function<void()> schedule,
                       std::function<std::string(std::string, std::int64_t)> prepare,
                       std::function<void()> schedule_lazy, std::function<void()> schedule_now)
    : schedule_(std::move(schedule)),
      schedule_lazy_(std::move(schedule_lazy)),
      schedule_now_(std::move(schedule_now)),
      prepare_(std::move(prepare)) {}

void MessageLog::push(Op op) {
  bool schedule = false;
  bool taken = false;
  {
    std::lock_guard lock(mu_);
    if (!closed_) {
      queue_.push_back(std::move(op));
      taken = true;
      schedule = !std::exchange(scheduled_, true);  // nothing here waits for a gather
    }
  }
  if (schedule) schedule_();
  if (!taken && op.done) op.done(false);  // closed: nothing more is committed
}

void MessageLog::add(std::shared_ptr<LogRecord> rec, std::string sender, std::string stanza,
                     std::int64_t stamp_ms, Done done) {
  push(Op{Kind::kAdd, std::move(rec), std::move(sender), std::move(stanza), stamp_ms,
          std::move(done)});
}

void MessageLog::remove(std::shared_ptr<LogRecord> rec) {
  push(Op{Kind::kRemove, std::move(rec), {}, {}, 0, {}});
}

void MessageLog::release(std::shared_ptr<LogRecord> rec) {
  push(Op{Kind::kRelease, std::move(rec), {}, {}, 0, {}});
}

void MessageLog::queued_archive(bool& schedule, bool& lazy) {
  if (!schedule_lazy_ || archive_queue_.size() >= kArchiveGatherMax) {
    archive_due_ = true;
    schedule = !std::exchange(scheduled_, true);
  } else {
    // A run for other operations may come first; it leaves the archive records to this one.
    lazy = !std::exchange(lazy_scheduled_, true);
  }
}

std::int64_t MessageLog::next_archive_seq() {
  last_archive_seq_ = store::next_archive_seq(last_archive_seq_);
  return last_archive_seq_;
}

ArchivedMessage MessageLog::spare_record() {
  if (spare_.empty()) return {};
  ArchivedMessage a = std::move(spare_.back());
  spare_.pop_back();
  return a;
}

void MessageLog::recycle(std::vector<ArchivedMessage>& written) {
  std::size_t kept = 0;
  for (ArchivedMessage& a : written) {
    if (a.stanza.capacity() > kRecycledStanzaMax) continue;
    ArchivedMessage& k = written[kept++];
    if (&k != &a) k = std::move(a);
    k.username.clear();
    k.seq = 0;
    k.id.clear();
    k.with.clear();
    k.with_resource.clear();
    k.stamp_ms = 0;
    k.stanza.clear();
  }
  written.resize(kept);
  std::lock_guard lock(mu_);
  // One run's worth at most (what the next gather takes): the store thread frees the rest.
  if (spare_.size() < written.size()) spare_.swap(written);
  if (spare_.size() > kArchiveGatherMax) spare_.resize(kArchiveGatherMax);
}

void MessageLog::set_archive_seq_floor(std::int64_t seq) {
  std::lock_guard lock(mu_);
  last_archive_seq_ = std::max(last_archive_seq_, seq);
}

void MessageLog::archive(ArchivedMessage m, Done done) {
  bool schedule = false;
  bool lazy = false;
  bool taken = false;
  {
    std::lock_guard lock(mu_);
    if (!closed_) {
      archive_queue_.push_back(std::move(m));
      if (done) archive_done_.push_back(std::move(done));
      taken = true;
      queued_archive(schedule, lazy);
    }
  }
  if (schedule) schedule_();
  if (lazy) schedule_lazy_();
  if (!taken && done) done(false);  // closed: nothing more is committed
}

void MessageLog::barrier(Done done, bool now) {
  bool schedule = false;
  bool run_now = false;
  bool taken = false;
  {
    std::lock_guard lock(mu_);
    if (!closed_) {
      queue_.push_back(Op{Kind::kBarrier, nullptr, {}, {}, 0, std::move(done)});
      taken = true;
      if (now) archive_due_ = true;  // its waiter reads the archive
      if (now && schedule_now_) {
        // Its waiter is a person paging their archive: the run comes now, not after a gather
        // (one scheduled already finds an empty queue, or what came after this run).
        scheduled_ = true;
        run_now = true;
      } else {
        schedule = !std::exchange(scheduled_, true);
      }
    }
  }
  if (run_now) schedule_now_();
  if (schedule) schedule_();
  if (!taken && done) done(false);  // closed: nothing more is committed
}

void MessageLog::close() {
  std::lock_guard lock(mu_);
  closed_ = true;
}

MessageLog::Counts MessageLog::counts() const {
  std::lock_guard lock(mu_);
  return counts_;
}

std::optional<std::string> MessageLog::run(Store& store, bool lazy) {
  std::vector<Op> ops;
  std::vector<ArchivedMessage> archived;
  std::vector<Done> archived_done;
  {
    std::lock_guard lock(mu_);
    ops.swap(queue_);
    scheduled_ = false;
    // Messages in flight commit every few milliseconds; the archive records they would carry
    // along gather for their own lazy run (with stream management on, taking them in every
    // run doubled the store thread's time: each commit rewrote their pages).
    if (lazy || archive_due_ || !schedule_lazy_) {
      archived.swap(archive_queue_);
      // The next gather fills a vector of about this one's size without regrowing it (each
      // regrowth moved every record gathered so far, on the shard).
      archive_queue_.reserve(archived.size());
      archived_done.swap(archive_done_);
      archive_due_ = false;
      lazy_scheduled_ = false;  // a lazy run still to come finds what is queued after this one
    }
  }
  if (ops.empty() && archived.empty()) return std::nullopt;
  // Operations on one record come in order (its add is queued before the message is sent, so
  // before anything can remove or release it).
  std::vector<InFlightMessage> added;
  std::vector<LogRecord*> added_recs;
  std::vector<bool> keep;  // per added: still to be written
  std::vector<InFlightChange> changed;
  std::uint64_t never_written = 0;
  for (Op& op : ops) {
    LogRecord* rec = op.rec.get();
    switch (op.kind) {
      case Kind::kAdd:
        rec->slot = static_cast<std::int32_t>(added.size());
        added.push_back(InFlightMessage{rec->username, std::move(op.sender),
                                        prepare_(std::move(op.stanza), op.stamp_ms), op.stamp_ms});
        added_recs.push_back(rec);
        keep.push_back(true);
        break;
      case Kind::kRemove:
      case Kind::kRelease:
        if (rec->settled) break;
        rec->settled = true;
        if (rec->slot >= 0) {
          // Queued in this batch: removed, it is not written at all; released, it is written
          // as an offline message straight away.
          if (op.kind == Kind::kRemove) {
            keep[static_cast<std::size_t>(rec->slot)] = false;
            ++never_written;
          } else {
            added[static_cast<std::size_t>(rec->slot)].offline = true;
          }
        } else if (rec->id != 0) {
          changed.push_back(InFlightChange{rec->username, rec->id, op.kind == Kind::kRelease});
        }
        break;
      case Kind::kBarrier:
        break;
    }
  }
  std::vector<InFlightMessage> to_write;
  std::vector<LogRecord*> written_recs;
  for (std::size_t i = 0; i < added.size(); ++i) {
    if (!keep[i]) continue;
    to_write.push_back(std::move(added[i]));
    written_recs.push_back(added_recs[i]);
  }
  std::optional<std::string> error;
  try {
    store.log_in_flight(to_write, changed);
    for (std::size_t i = 0; i < to_write.size(); ++i) written_recs[i]->id = to_write[i].id;
    store.archive_append(archived);
  } catch (const StoreError& e) {
    error = e.what();
  }
  for (LogRecord* rec : added_recs) rec->slot = -1;
  {
    std::lock_guard lock(mu_);
    if (!error) {
      ++counts_.batches;
      counts_.written += to_write.size();
      counts_.never_written += never_written;
      counts_.archived += archived.size();
    }
  }
  for (Op& op : ops) {
    if (op.done) op.done(!error);
  }
  for (Done& done : archived_done) done(!error);
  recycle(archived);
  return error;
}

}  // namespace kabar::store
