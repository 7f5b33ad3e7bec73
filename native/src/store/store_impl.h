// StoreImpl: the Store. Split over store_impl.cc (state changes), store_take.cc (takes), store_commit.cc (group commit,
// batches, the dispatch hook), store_reads.cc (records, jobs, lists, stats), store_recovery.cc (open and replay) and
// store_maintenance.cc (lease expiry, checkpoints, compaction, the background thread).
//
// Locks, in the order they may be taken:
//   checkpoint_mu_  one checkpoint or compaction at a time
//   commit_mu_      held by a group leader while it applies, through its turn coming (CommitOrder: the group
//                   before may still be syncing meanwhile) and its late ops, until its group is placed; and by
//                   checkpoints while they roll the log (they wait for the groups in flight to end:
//                   order_.WaitIdle). The committer's queue lock (take_late) is taken under it, never around it.
//   state_mu_       the in-memory index (shared for readers, exclusive for the leader's apply and undo)
//   files_mu_       the cache of open segment files and their sizes
//   health_mu_, bg_mu_, close_mu_ are taken last and briefly; events have their own (EventQueue), and so
//   does order_ (CommitOrder), which a group waits on with or without commit_mu_ but never while holding
//   state_mu_ or files_mu_.
// The log tail (tail_*) is changed only in a group's turn, or under commit_mu_ with no group in flight.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "comfymq/store.h"
#include "store/commit_order.h"
#include "store/doc_table.h"
#include "store/event_queue.h"
#include "store/group_commit.h"
#include "store/job_table.h"
#include "store/record_sink.h"
#include "store/records.h"
#include "store/segment_prep.h"
#include "store/status_doc.h"
#include "store/store_batch.h"
#include "store/take_memo.h"
#include "store/token_codec.h"
#include "store/txn.h"

namespace comfymq {

// Limits on what callers hand the store (the prompt's own limit is StoreOptions::max_prompt_bytes).
inline constexpr size_t kMaxIdBytes = 256;
inline constexpr size_t kMaxProgressBytes = 256u << 10;
inline constexpr size_t kMaxOutputsBytes = 64u << 20;
inline constexpr size_t kMaxArtifactsBytes = 16u << 20;
inline constexpr size_t kMaxBatchBytes = 1u << 30;  // one EnqueueMany: one commit, one segment at most this big
inline constexpr int64_t kMaxTimeoutMs = 30ll * 24 * 3600 * 1000;

// The JSON of a JobError {type, message}, as the store records it on a job it fails or cancels itself.
std::string ErrorJsonOf(const char* type, const std::string& message);

class StoreImpl final : public Store {
 public:
  StoreImpl(const StoreOptions& options, std::string dir);
  ~StoreImpl() override;

  Status Recover(RecoveryReport* report);
  void StartBackground();

  Status Enqueue(const NewJob& job, EnqueueResult* result) override;
  Status EnqueueMany(const std::vector<NewJob>& jobs, std::vector<EnqueueResult>* results) override;
  Status Get(uint64_t id, bool with_prompt, Job* job) override;
  Status GetByPromptId(const std::string& prompt_id, bool with_prompt, Job* job) override;
  Status List(const ListQuery& query, ListPage* page) override;
  Status Stats(StoreStats* stats) override;
  Status QueuePosition(uint64_t id, uint64_t* position) override;
  Status SetOwnerPolicies(const OwnerPolicy& fallback, const std::map<std::string, OwnerPolicy>& by_owner) override;
  Status OwnerStats(std::vector<OwnerCounts>* owners) override;
  Status Take(const TakeOptions& options, std::unique_ptr<Lease>* lease) override;
  Status Heartbeat(uint64_t id, uint64_t token, int64_t lease_ms, int64_t* expires_ms) override;
  Status Progress(uint64_t id, uint64_t token, const std::string& progress_json) override;
  Status Complete(uint64_t id, uint64_t token, const std::string& outputs_json,
                  const std::vector<Artifact>& artifacts) override;
  Status Fail(uint64_t id, uint64_t token, const JobError& error, bool retryable) override;
  // StoreBatch / CommitBatch (store_batch.h).
  Status Commit(StoreBatch* batch);
  Status Cancel(uint64_t id, const std::string& reason) override;
  Status CancelBatch(const std::string& batch_id, const std::string& reason, std::vector<uint64_t>* cancelled) override;
  Status Retry(uint64_t id) override;
  Status Delete(uint64_t id) override;
  Status SetPaused(bool paused) override;
  bool paused() override;
  Status ExpireLeases(int* expired) override;
  Status Purge(int64_t finished_before_ms, uint64_t* removed) override;
  Status Checkpoint() override;
  Status Compact() override;
  // Documents (store_docs.cc).
  Status PutDoc(const std::string& key, const std::string& value, bool only_if_absent) override;
  Status DeleteDoc(const std::string& key) override;
  Status GetDoc(const std::string& key, std::string* value) override;
  Status ListDocs(const std::string& prefix, const std::string& after, size_t limit, bool keys_only,
                  std::vector<std::pair<std::string, std::string>>* out) override;
  void SetListener(StoreListener listener) override;
  // SetDispatchHook (store_batch.h).
  void SetDispatchHook(DispatchHook hook);
  Status Close() override;
  Status health() override;

 private:
  // A job prepared for enqueue outside any lock, in the caller's thread: validated, its texts compressed
  // where that pays, encoded with id 0.
  struct PreparedJob {
    std::string payload;
    std::string prompt_id;
    uint64_t prompt_id_hash = 0;
    int32_t priority = 0;
    uint16_t max_attempts = 0;
    std::string batch_id;
    std::string owner;
    std::vector<uint64_t> after;  // sorted, unique
    bool notify = false;
  };
  // A record copied by compaction: applied only if the job still points at `from`.
  struct Relocation {
    uint64_t id = 0;
    bool is_status = false;
    log::RecordLoc from;
    log::RecordType type = log::RecordType::kJob;
    std::string payload;
  };

  // --- group commit (store_commit.cc) ---
  Status Run(const std::function<Status()>& apply, size_t bytes_hint);
  // One commit group (GroupCommitter's group function); see store_commit.cc.
  void ProcessGroup(std::vector<PendingOp*>& group, const std::function<void()>& next_may_start,
                    const std::function<size_t()>& take_late);
  // With commit_mu_ and state_mu_ held: applies group[from..] in `txn` (an op that fails is undone alone),
  // then lets the dispatch hook lease what they made pending. False (all of them undone and failed) when the
  // group would grow past what one group record may hold.
  bool ApplyOpsLocked(std::vector<PendingOp*>& group, size_t from, Txn* txn, RecordSink* sink,
                      std::vector<std::unique_ptr<Lease>>* dispatched);
  static void RunAppliedCallbacks(const std::vector<PendingOp*>& group, size_t from);
  Status WriteSink(const RecordSink& sink);
  void KickBackground();  // wakes the background thread now
  Status Usable();
  void SetFailed(const Status& s);
  int64_t NowMs() { return env_->NowMicros() / 1000; }
  static int64_t SteadyMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  uint64_t NextId(int64_t now_ms);

  // --- reading records (state_mu_ held, shared or exclusive) ---
  std::shared_ptr<RandomAccessFile> SegmentFile(uint32_t segment, Status* s);
  Status ReadPayloadLocked(const log::RecordLoc& loc, log::RecordType want, std::string* payload);
  void RecoverOwnersLocked();  // (store_recovery.cc)
  // With state_mu_ held: the framed bytes of a record of a group applied but not yet written.
  bool FindInflightLocked(const log::RecordLoc& loc, std::string_view* framed) const;
  Status LoadStatusLocked(const JobMeta& m, StatusDoc* doc);
  StatusDoc LoadStatusOrRebuildLocked(const JobMeta& m);
  static Status MissingSegment(const log::RecordLoc& loc, const Status& s);
  // A job's records captured under the lock and read after it is released.
  struct PendingRead {
    JobMeta meta;
    std::optional<RunInfo> run;
    std::string job_framed, status_framed;  // copied from the in-flight group, if there
    std::shared_ptr<RandomAccessFile> job_file, status_file;
  };
  Status CaptureLocked(const JobMeta& m, PendingRead* r);
  Status Materialize(PendingRead& r, bool with_prompt, Job* job);

  // InvalidArgument unless value is at most max bytes without control characters; `what` names it.
  static Status CheckText(const std::string& value, const char* what, size_t max);

  // --- apply functions: run by the leader inside a group (state_mu_ exclusive, txn_ set) ---
  Status PrepareJob(const NewJob& in, int64_t now_ms, PreparedJob* out);
  // Enqueue and EnqueueMany: the n jobs at `jobs` (not copied), checked and compressed here, then one commit.
  Status EnqueueJobs(const NewJob* jobs, size_t n, std::vector<EnqueueResult>* results);
  Status ApplyEnqueue(std::vector<PreparedJob>& jobs, std::vector<EnqueueResult>* results);
  Status FindByPromptIdLocked(const std::string& prompt_id, uint64_t hash, uint64_t* id);
  Status CheckLeaseLocked(uint64_t id, uint64_t token, const JobMeta** meta, const RunInfo** run);
  void WriteStatus(const JobMeta& before, const StatusDoc& doc);
  // Ends the current run of a running job: the run goes into the job's history with `outcome`, the job
  // moves to `to` (error_json recorded, empty = none), the lease ends, and listeners hear `reason`.
  void EndRunLocked(const JobMeta& before, const RunInfo& run, StatusDoc d, JobState to, const char* outcome,
                    const std::string& error_json, const std::string& reason);
  // Within a group: pending | running -> cancelled (Cancel and CancelBatch).
  Status CancelLocked(uint64_t id, const std::string& reason);
  // Within a group, after an op applied: the jobs that wait for a job that failed, was cancelled or deleted by
  // the events from `first_event` on (or that went back to pending with such a job among those they wait for)
  // are cancelled, saying which, and so on down the chain, in the op's own changes; past
  // options_.max_cancels_per_commit the rest go to orphan_checks_ for SweepOrphans.
  Status CancelOrphansLocked(size_t first_event);
  // Cancels, a commit of at most max_cancels_per_commit at a time, the jobs orphan_checks_ holds that still wait
  // for a job that cannot succeed (and theirs).
  Status SweepOrphans();
  // Within a group: cancels `id` when it is pending and waits for a job that cannot succeed; counts it.
  Status CancelIfOrphanLocked(uint64_t id, const std::string& why, size_t* cancels);
  // "" when every job `id` waits for is there and has not failed or been cancelled; else why not.
  std::string DeadWaitLocked(uint64_t id) const;
  // Fills *job from the index and the job record, without prompt and workflow.
  static void FillJob(const JobMeta& m, const records::JobView& jv, Job* job);
  // The record's prompt and workflow as text (decompressed if need be); Corruption names the job.
  static Status UnpackTexts(const records::JobView& jv, std::string* prompt, std::string* workflow);
  Status ApplyTake(const TakeOptions& options, std::unique_ptr<Lease>* lease, bool* early);
  // --- choosing a take's job (store_take.cc; state_mu_ held). `accepts` is the take's filter. ---
  using JobCheck = std::function<bool(uint64_t id)>;
  // The first ready pending job `accepts` takes, in dispatch order, owners at their running limit left out; 0 when
  // none. options.max_scan bounds the jobs `accepts` is asked about; those `skip` (optional, cheap) passes over are
  // not counted.
  uint64_t WalkForTakeLocked(const TakeOptions& options, const JobCheck& accepts, const JobCheck& skip = nullptr);
  // The same job, for a take of a class (TakeOptions::take_class), looking only at what arrived since the class
  // last took and at the jobs it can run (TakeMemo); `could_run` is the class's TakeOptions::could_run.
  uint64_t ChooseForClassLocked(const TakeOptions& options, const JobCheck& could_run, const JobCheck& accepts);
  // Up to this many jobs a class can run are ordered by their turns; past it, a walk that passes over the others.
  static constexpr size_t kChooseByTurnMax = 512;
  Status ApplyComplete(uint64_t id, uint64_t token, const std::string& outputs_json, const std::string& artifacts_json);
  Status ApplyFail(uint64_t id, uint64_t token, const std::string& error_json, bool retryable);
  Status ApplyRelease(uint64_t id, uint64_t token, const std::string& reason, bool count_attempt);
  // After a lease check failed: AlreadyExists when run `token` already ended the job in `state` (a resend).
  Status ResendOrLeaseLost(uint64_t id, uint64_t token, std::initializer_list<JobState> ended, Status lease_lost);
  // Checks a batch item's input and turns it into an op; a bad item gets its status and no op.
  bool PrepareItem(StoreBatch::Item& item, PendingOp* op);
  Status ApplyExpire(int* expired);
  Status ApplyRelocate(std::vector<Relocation>& items);

  // --- recovery (store_recovery.cc) ---
  Status ReplayRecord(log::RecordType type, std::string_view payload, const log::RecordLoc& loc,
                      RecoveryReport* report);

  // --- maintenance (store_maintenance.cc) ---
  Status CheckpointLocked();  // checkpoint_mu_ held
  Status RollLocked();        // commit_mu_ held: seal the tail, start a new segment
  // commit_mu_ held: the capacity the next segment gets (each may be twice the last, up to segment_bytes).
  uint64_t NextSegmentCapacityLocked() const { return NextSegmentCapacity(tail_capacity_); }
  // The size of the segment after one of `capacity` bytes.
  uint64_t NextSegmentCapacity(uint64_t capacity) const;
  // commit_mu_ held: makes segment `seg` of at least `capacity` bytes, adopting the prepared one when it fits.
  // *zeroed: the segment is a prepared one, written with zeros throughout (else its space is only reserved).
  Status NewSegmentLocked(uint32_t seg, uint64_t capacity, std::unique_ptr<WritableFile>* out, uint64_t* made,
                          bool* zeroed);
  // In a group's turn, before its sync: when the written part of the segment ends less than kZeroAheadLow past
  // `end` (the group's records end), writes zeros from there to kZeroAheadChunk past `end` (never past
  // `capacity`, the space reserved for the segment), covered by the same sync. The next groups' records then
  // land on written blocks: on ext4 a sync of blocks only reserved also commits their conversion in the
  // journal (here ~100 us more per small sync). Best effort: a failed write of zeros is not the group's
  // failure (it only sets *written_to to `capacity`, so this segment gets no more). Updates *written_to.
  void ZeroAheadLocked(WritableFile* f, uint64_t end, uint64_t capacity, uint64_t* written_to);
  void DeleteDeadSegments(uint32_t before_segment);
  bool NeedsCompaction();
  void BackgroundLoop();
  int64_t NextExpiryMs();

  const StoreOptions options_;
  Env* const env_;
  const std::string dir_;
  std::unique_ptr<FileLock> lock_;

  GroupCommitter committer_;
  std::mutex checkpoint_mu_;
  std::mutex commit_mu_;
  // The log tail: changed only in a group's turn (one at a time, CommitOrder), or under commit_mu_ once
  // no group is in flight (checkpoint rolls, Close).
  std::unique_ptr<WritableFile> tail_file_;
  uint32_t tail_segment_ = 0;
  uint64_t tail_offset_ = 0;
  uint64_t tail_capacity_ = 0;
  uint64_t tail_written_to_ = 0;  // the tail's bytes below this are written (records or zeros), not only reserved
  // Changed only in a group's turn, like the tail: the size of recent groups as written (a moving average).
  // Also read by the next group's leader to size its buffer (hence atomic; a hint only).
  std::atomic<uint64_t> group_bytes_avg_{0};
  std::array<std::atomic<uint64_t>, kSyncBuckets> sync_counts_{};  // WriteSink's syncs by duration (StoreStats)
  std::atomic<uint64_t> sync_micros_{0};
  // Zeros ahead (ZeroAheadLocked): written kZeroAheadChunk past a group's end once fewer than kZeroAheadLow
  // are left, while groups average under kZeroAheadMaxGroup. Measured on this project's disk (ext4, virtio):
  // a 10 KB write + fdatasync takes ~165 us on written blocks, ~265 us on reserved ones; zeros cost ~3 ms of
  // disk per MiB, so they pay for groups up to about 32 KB (a lone caller), not for the big groups of many.
  static constexpr uint64_t kZeroAheadLow = 48u << 10, kZeroAheadChunk = 128u << 10;
  static constexpr uint64_t kZeroAheadMaxGroup = 32u << 10;
  // Guarded by commit_mu_: where the next group goes, after the groups applied but not yet written.
  // Equal to the tail when no group is in flight (ResetPlanLocked).
  uint32_t plan_segment_ = 0;
  uint64_t plan_offset_ = 0;
  uint64_t plan_capacity_ = 0;
  void ResetPlanLocked() {
    plan_segment_ = tail_segment_;
    plan_offset_ = tail_offset_;
    plan_capacity_ = tail_capacity_;
  }
  CommitOrder order_;  // overlapping groups: turns, undo order, draining after a failure
  std::atomic<uint64_t> bytes_since_checkpoint_{0};
  std::atomic<uint32_t> checkpoint_segment_{0};

  std::shared_mutex state_mu_;
  // Guarded by state_mu_.
  JobTable table_;
  DocTable docs_;
  bool paused_ = false;
  uint64_t last_id_ = 0;
  uint64_t next_token_ = 1;
  // Tokens below token_reserve_ are covered by a durable reservation (a kTokens record, or a checkpoint's
  // next_token): recovery starts next_token_ at or above it, so none is handed out twice even if the take
  // that used it never became durable. A take whose token is below it is early (StoreBatch::Take). A group that
  // takes when fewer than kTokenReserveStep / 2 covered tokens are left appends a new reservation; it counts
  // once that group is durable.
  uint64_t token_reserve_ = 1;
  static constexpr uint64_t kTokenReserveStep = 1u << 20;
  // The counters above are what the store keeps; callers see and give tokens through this (set at open).
  TokenCodec tokens_;
  TakeMemo take_memo_;  // what each take class can run (soft state)
  Txn* txn_ = nullptr;  // the group being applied
  // Jobs that may wait for a job that cannot succeed, left for SweepOrphans: what a change did not cancel itself
  // (past max_cancels_per_commit), and what recovery finds. Checked again when swept (an entry of a change that
  // was rolled back is harmless). Memory only: recovery finds them again.
  std::set<uint64_t> orphan_checks_;
  std::atomic<bool> orphans_deferred_{false};  // set with an entry: the group's end wakes the background thread
  // The groups applied but not yet written (at most two: one writing, one applied behind it); readers look
  // for a record's bytes here before the log.
  std::vector<const RecordSink*> inflight_;
  std::array<uint32_t, 3600> finished_per_second_{};  // ring by second, for throughput
  int64_t finished_ring_second_ = 0;

  std::mutex files_mu_;
  // Guarded by files_mu_.
  std::map<uint32_t, std::shared_ptr<RandomAccessFile>> files_;
  std::map<uint32_t, uint64_t> segment_used_;  // bytes up to the end of the last record

  std::mutex health_mu_;
  Status failed_;  // guarded by health_mu_
  std::atomic<bool> closed_{false};
  std::string last_background_error_;  // guarded by health_mu_

  std::unique_ptr<EventQueue> events_;  // delivery to the listener, in commit order
  DispatchHook dispatch_hook_;          // set under commit_mu_ with no group in flight (order_.WaitIdle)

  log::SegmentPreparer preparer_;            // the next segment, zero-filled by the background thread
  std::atomic<bool> stop_preparing_{false};  // set by Close
  std::atomic<int64_t> last_commit_ms_{0};   // when a group last wrote to the log (steady clock)
  std::atomic<bool> log_writing_{false};     // a group is writing or syncing right now

  std::mutex bg_mu_;
  std::condition_variable bg_cv_;
  bool bg_stop_ = false;
  bool bg_kick_ = false;
  std::thread bg_thread_;
  uint64_t log_bytes_after_compaction_ = 0;  // guarded by checkpoint_mu_

  std::mutex close_mu_;
  std::condition_variable close_cv_;
  enum class CloseState { kOpen, kClosing, kClosed } close_state_ = CloseState::kOpen;  // guarded by close_mu_
  bool opened_ = false;                                                                 // set once Recover succeeded
};

}  // namespace comfymq
