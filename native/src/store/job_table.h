// JobTable: the store's in-memory index. Holds 64 bytes of metadata per job (prompts stay on disk) plus the
// derived indexes: dispatch order of pending jobs, prompt_id hashes, counts per state, live bytes per log
// segment, the run (lease) of every running job, and which jobs wait for which (NewJob::after).
//
// Dispatch order (FairQueue: priority, then owners in weighted turns) holds a pending job only when it is ready: every
// job it waits for is there and has succeeded. A job's waits are set once, before it is inserted (SetWaits); a change
// of state of a job others wait for moves them in or out of the dispatch order in the same call.
//
// Every change goes through Insert / Replace / Erase / SetRun, which keep the derived indexes in step, so
// the inverse call undoes a change exactly (the store's group commit relies on that to roll back).
// Not thread-safe: the store guards it with its state lock.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "comfymq/job.h"
#include "comfymq/store.h"
#include "store/arrival_log.h"
#include "store/fair_queue.h"
#include "store/log_segment.h"
#include "util/flat_multimap.h"

namespace comfymq {

struct JobMeta {
  uint64_t id = 0;
  uint64_t prompt_id_hash = 0;
  log::RecordLoc job_loc;     // the job as enqueued (prompt, workflow, ...)
  log::RecordLoc status_loc;  // the latest status; invalid for a job never run or changed
  int64_t updated_ms = 0;
  int32_t priority = 0;
  uint32_t batch = 0;  // interned batch id; 0 = none
  uint16_t attempts = 0;
  uint16_t max_attempts = 0;
  JobState state = JobState::kPending;
  bool erased = false;  // slot kept until the next Compact() so an undo can revive it
  uint16_t owner = 0;   // interned owner name (JobTable::InternOwner); 0 = none
};
static_assert(sizeof(JobMeta) <= 64, "JobMeta must stay small: one per job in memory");

// The current run of a running job.
struct RunInfo {
  uint64_t token = 0;
  int64_t expires_ms = 0;
  int64_t deadline_ms = 0;  // 0 = no timeout
  int64_t started_ms = 0;
  std::string worker_id;
  std::string progress;  // JSON text, memory only
};

class JobTable {
 public:
  const JobMeta* Find(uint64_t id) const;
  // Adds a job (or revives an erased slot with the same id).
  void Insert(const JobMeta& meta);
  // Replaces the job with meta.id, which must exist.
  void Replace(const JobMeta& meta);
  // Removes the job, which must exist.
  void Erase(uint64_t id);

  const RunInfo* Run(uint64_t id) const;
  RunInfo* MutableRun(uint64_t id);  // for in-memory-only fields (expiry, progress)
  void SetRun(uint64_t id, std::optional<RunInfo> run);
  const std::unordered_map<uint64_t, RunInfo>& runs() const { return runs_; }
  std::unordered_map<uint64_t, RunInfo>& mutable_runs() { return runs_; }  // in-memory fields only

  // The jobs `id` waits for (sorted, unique); set before Insert, kept until CompactSlots drops an erased job.
  void SetWaits(uint64_t id, std::vector<uint64_t> after);
  const std::vector<uint64_t>* Waits(uint64_t id) const;
  const std::unordered_map<uint64_t, std::vector<uint64_t>>& waits() const { return waits_; }
  // The live jobs that wait for `id` (in no order); fn returns false to stop.
  void ForEachDependent(uint64_t id, const std::function<bool(uint64_t dependent)>& fn) const;
  // Every job `id` waits for is live and has succeeded (true for a job that waits for none).
  bool Ready(uint64_t id) const;
  // Pending jobs that wait (not ready).
  uint64_t waiting() const { return counts_[static_cast<int>(JobState::kPending)] - pending_.size(); }

  // The place of a ready pending job in dispatch order (0 = first); false when it is not one, or when more than
  // kMaxPositionLevels priorities have pending jobs (the walk over them would hold the state lock too long).
  static constexpr size_t kMaxPositionLevels = 4096;
  bool PendingPosition(uint64_t id, uint64_t* position) const;
  // Pending jobs in dispatch order (priority high to low, then owners' turns, each owner's oldest first), ready
  // ones only; with_limits leaves out the owners at their running limit. fn returns false to stop.
  void ForEachPending(const std::function<bool(uint64_t id)>& fn, bool with_limits = false) const;
  // The ready pending jobs in the order they became ready (TakeMemo's view of what arrived).
  const ArrivalLog& arrivals() const { return arrivals_; }
  // Where a ready pending job comes in dispatch order: by *priority (higher first), then *turn, then id
  // (FairQueue::Turn); false when it is not one.
  bool DispatchTurn(uint64_t id, int32_t* priority, uint64_t* turn) const;
  // Counts a take of this pending job against its owner's turn (FairQueue::Took).
  void Took(const JobMeta& m) { pending_.Took(m.priority, m.owner); }

  // Owners: names interned to small indexes (0 = ""), kept for the store's life (and in checkpoints). Past
  // kMaxOwners names, later owners share the last index (their jobs take one turn between them).
  static constexpr uint32_t kMaxOwners = 65535;
  uint16_t InternOwner(std::string_view name);
  const std::string& OwnerName(uint16_t index) const;
  const std::vector<std::string>& owner_names() const { return owner_names_; }
  void SetOwnerNames(std::vector<std::string> names);  // for checkpoint load, before any job; index 0 must be ""
  // Weights and running limits per owner name (memory only; the caller sets them again after each open).
  void SetOwnerPolicies(const OwnerPolicy& fallback, const std::map<std::string, OwnerPolicy>& by_owner);
  const OwnerPolicy& PolicyOf(uint16_t owner) const;
  // Pending (ready or waiting) and running jobs per owner index.
  uint64_t OwnerPending(uint16_t owner) const { return owner < owner_pending_.size() ? owner_pending_[owner] : 0; }
  uint64_t OwnerRunning(uint16_t owner) const { return owner < owner_running_.size() ? owner_running_[owner] : 0; }
  bool AtRunningLimit(uint16_t owner) const;
  // Jobs whose prompt_id hashes to `hash`.
  void FindByPromptHash(uint64_t hash, std::vector<uint64_t>* ids) const;
  // Walks live jobs by id starting after `cursor` (0 = from the end in that direction), within
  // [lo_id, hi_id); fn returns false to stop.
  void Scan(uint64_t cursor, bool descending, uint64_t lo_id, uint64_t hi_id,
            const std::function<bool(const JobMeta&)>& fn) const;
  void ForEach(const std::function<void(const JobMeta&)>& fn) const;

  uint32_t InternBatch(std::string_view name);  // 0 for ""
  void DropLastBatch();                         // undoes the newest InternBatch that added a name
  bool FindBatch(std::string_view name, uint32_t* index) const;
  const std::string& BatchName(uint32_t index) const;
  const std::vector<std::string>& batch_names() const { return batch_names_; }
  void SetBatchNames(std::vector<std::string> names);  // for checkpoint load; index 0 must be ""

  uint64_t count(JobState s) const { return counts_[static_cast<int>(s)]; }
  uint64_t size() const { return live_; }
  uint64_t oldest_pending_id() const;  // 0 when none
  uint64_t SegmentLiveBytes(uint32_t segment) const;
  uint64_t total_live_bytes() const { return total_live_; }
  const std::map<uint32_t, uint64_t>& segment_live_bytes() const { return segment_live_; }
  uint64_t max_id() const { return jobs_.empty() ? 0 : jobs_.back().id; }

  // Drops erased slots. Only between groups (no undo may still refer to them).
  void CompactSlots();
  void Reserve(size_t jobs) { prompt_index_.Reserve(jobs); }

 private:
  size_t LowerBound(uint64_t id) const;
  JobMeta* FindSlot(uint64_t id);
  void Index(const JobMeta& m);
  void Unindex(const JobMeta& m);
  // What follows the job's state and status record: its state's count, its status bytes, the pending queue.
  void IndexState(const JobMeta& m);
  void UnindexState(const JobMeta& m);
  void AddReady(const JobMeta& m);  // into the dispatch order and the arrival log
  void RemoveReady(const JobMeta& m);
  void AddLive(const log::RecordLoc& loc, int64_t sign);
  void CountOwner(const JobMeta& m, int64_t sign);
  void ApplyPolicy(uint16_t owner);
  // The dependents of a succeeded job `m` that are pending and ready, as `m` is now.
  void ForEachReadyDependent(const JobMeta& m, const std::function<void(const JobMeta&)>& fn) const;

  std::deque<JobMeta> jobs_;  // sorted by id, erased slots included
  uint64_t live_ = 0;
  uint64_t erased_ = 0;
  FairQueue pending_;                                               // ready ones only
  ArrivalLog arrivals_;                                             // the same jobs, by when they became ready
  std::unordered_map<uint64_t, std::vector<uint64_t>> waits_;       // job -> the jobs it waits for
  std::unordered_map<uint64_t, std::vector<uint64_t>> dependents_;  // job -> the jobs that wait for it
  FlatMultiMap64 prompt_index_;
  std::array<uint64_t, kNumJobStates> counts_{};
  std::map<uint32_t, uint64_t> segment_live_;
  uint64_t total_live_ = 0;
  std::unordered_map<uint64_t, RunInfo> runs_;
  std::vector<std::string> batch_names_{""};
  std::unordered_map<std::string, uint32_t> batch_index_;
  std::vector<std::string> owner_names_{""};
  std::unordered_map<std::string, uint16_t> owner_index_;
  std::vector<uint64_t> owner_pending_, owner_running_;  // by owner index
  std::vector<OwnerPolicy> owner_policies_;              // by owner index, resolved from the two below
  OwnerPolicy fallback_policy_;
  std::map<std::string, OwnerPolicy> policies_;
};

}  // namespace comfymq
