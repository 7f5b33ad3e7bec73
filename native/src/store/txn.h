// Txn: the changes one commit group makes, applied to the JobTable at once (so later operations in the
// group see earlier ones) and recorded for undo: if the group's write or sync fails, RollbackAll restores the
// table exactly; if one operation fails, RollbackTo(mark) takes back just its changes.
// Used by the group leader only, with the store's state lock held exclusively.
#pragma once

#include <optional>
#include <vector>

#include "comfymq/store.h"
#include "store/doc_table.h"
#include "store/job_table.h"
#include "store/record_sink.h"

namespace comfymq {

class Txn {
 public:
  Txn(JobTable* table, DocTable* docs, RecordSink* sink, bool* paused, int64_t now_ms)
      : table_(table), docs_(docs), sink_(sink), paused_(paused), now_ms_(now_ms) {}

  int64_t now_ms() const { return now_ms_; }
  // The group's clock moves on (never back): its late ops apply at the time they are applied.
  void AdvanceClock(int64_t now_ms) { now_ms_ = now_ms > now_ms_ ? now_ms : now_ms_; }
  JobTable& table() { return *table_; }
  RecordSink& sink() { return *sink_; }

  log::RecordLoc Append(log::RecordType type, std::string_view payload) { return sink_->Add(type, payload); }

  void Insert(const JobMeta& m);
  // Also: a job with a notify/ document that moves into a finished state gets an outbox/ document
  // (doc_table.h) in this same change, so its ending is never committed without it.
  void Replace(const JobMeta& m);
  // Also removes the job's notify/ document.
  void Erase(uint64_t id);
  // Documents (doc_table.h): the change, its kDoc record and its undo.
  void PutDoc(const std::string& key, std::string value);
  void EraseDoc(const std::string& key);  // no-op when absent
  const DocTable& docs() const { return *docs_; }
  void SetRun(uint64_t id, std::optional<RunInfo> run);
  void SetPaused(bool paused);
  // The batch's index, interning a new name (taken back on rollback, so an undone group leaves none behind).
  uint32_t InternBatch(std::string_view name);
  void Event(StoreEvent e) { events_.push_back(std::move(e)); }
  // A job moved from one state to another (from == to for a new job), with the run's worker if it had one.
  void JobChanged(uint64_t id, JobState from, JobState to, std::string reason, std::string worker_id = {}) {
    StoreEvent e;
    e.job_id = id;
    e.from = from;
    e.to = to;
    e.reason = std::move(reason);
    e.worker_id = std::move(worker_id);
    events_.push_back(std::move(e));
  }

  struct Mark {
    size_t undo = 0;
    size_t events = 0;
    size_t sink = log::kRecordHeaderSize;
  };
  Mark mark() const { return Mark{undo_.size(), events_.size(), sink_->mark()}; }
  void RollbackTo(const Mark& m);
  void RollbackAll() { RollbackTo(Mark{}); }

  std::vector<StoreEvent>& events() { return events_; }

  // Once the sink is finalized: gives every job this group touched its records' real locations. The
  // undo entries keep their "before" values, so a rollback afterwards still restores the table exactly.
  void ResolveLocations();

 private:
  struct Undo {
    enum class Kind { kInserted, kReplaced, kErased, kRun, kPaused, kBatchName, kDoc } kind = Kind::kInserted;
    uint64_t id = 0;
    std::string doc_key;                    // kDoc
    std::optional<std::string> doc_before;  // kDoc: nullopt = it was absent
    JobMeta before;
    std::optional<RunInfo> run_before;
    bool paused_before = false;
  };

  JobTable* table_;
  DocTable* docs_;
  RecordSink* sink_;
  bool* paused_;
  int64_t now_ms_;
  std::vector<Undo> undo_;
  std::vector<StoreEvent> events_;
};

}  // namespace comfymq
