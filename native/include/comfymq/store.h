// Store: the durable job queue and result store, one engine on an append-only, checksummed log.
//
// Durability contract: every call that changes state returns OK only after the change is on stable
// storage (fdatasync of the log; fsync of the directory after creating or renaming files). Concurrent
// callers share syncs (group commit). Reads may observe a change whose committing call has not returned
// yet; a change a caller was told about by an OK return is never lost.
//
// Failure contract: bad input -> InvalidArgument, nothing changed. Illegal transition -> Conflict, stale
// fencing token -> LeaseLost, nothing changed. Disk full -> NoSpace, nothing changed, later calls work once
// space frees. Any other write or sync failure -> IOError and the handle is unusable ("failed"): the outcome
// of the failed call is unknown, no later call is acknowledged, and reopening the store recovers.
//
// Thread safety: all methods are thread-safe. Listener callbacks run on the committing thread after the
// commit, with no store lock held; they must not block for long and may call back into the store.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comfymq/env.h"
#include "comfymq/job.h"
#include "comfymq/status.h"

namespace comfymq {

struct StoreOptions {
  Env* env = nullptr;                                // nullptr = Env::Default()
  uint64_t segment_bytes = 64ull << 20;              // largest reserved size of a log segment (they grow to it)
  uint64_t checkpoint_every_bytes = 256ull << 20;    // write a checkpoint after this much log
  uint64_t compact_min_garbage_bytes = 64ull << 20;  // compact when dead bytes exceed this ...
  double compact_garbage_ratio = 0.5;                // ... and this share of the log
  int64_t reopen_lease_grace_ms = 30000;             // running jobs found at open keep their lease this long
  int64_t default_lease_ms = 30000;
  bool background_thread = true;  // expire leases, checkpoint and compact by itself
  // The background thread zero-fills the next log segment ahead only once no group has committed for this
  // long (zeros written beside a busy log slow its syncs a great deal); 0 = whenever one is wanted.
  int64_t prepare_when_quiet_ms = 50;
  // The thread whose group has its turn runs at a raised priority from then until its sync returns, where
  // the process may raise it (CAP_SYS_NICE or RLIMIT_NICE; see util/thread_priority.h): every waiting caller
  // waits on that thread, and on a busy machine it otherwise queues for a CPU behind their work.
  bool raise_log_writer_priority = true;
  size_t max_history_entries = 50;
  // Jobs one change may cancel because a job they wait for ended (NewJob::after): the rest, should a change leave
  // more, are cancelled by later commits of the background thread's (or ExpireLeases'), so no change grows past
  // what one commit may hold however many jobs wait. Until then they stay pending and are never dispatched.
  size_t max_cancels_per_commit = 10000;
  size_t max_prompt_bytes = 64u << 20;
  // Documents (Store::PutDoc): what all of them may hold together (keys and values), and how many there may be.
  // The store's own outbox documents are not refused by these (they are bounded by the jobs that make them).
  uint64_t max_doc_bytes = 256u << 20;
  size_t max_docs = 200000;
};

struct RecoveryReport {
  uint32_t checkpoint_segment = 0;  // 0 = no checkpoint was used (full replay)
  uint64_t segments_replayed = 0;
  uint64_t records_replayed = 0;
  uint64_t jobs = 0;
  uint64_t torn_tail_bytes = 0;  // cut off the end of the log
  struct BadRegion {
    std::string file;
    uint64_t begin = 0, end = 0;
  };
  std::vector<BadRegion> bad_regions;  // skipped in the middle of the log
  std::vector<std::string> warnings;   // anything else worth a log line
  int64_t open_micros = 0;
  std::string ToString() const;
};

struct ListQuery {
  uint32_t state_mask = 0;  // bit (1 << JobState); 0 = every state
  std::string batch_id;     // empty = any
  int64_t since_ms = 0;     // enqueue time lower bound (inclusive); 0 = none
  int64_t until_ms = 0;     // enqueue time upper bound (exclusive); 0 = none
  uint64_t cursor = 0;      // continue after this id (exclusive); 0 = from the start
  size_t limit = 100;       // 1..1000
  bool newest_first = true;
  bool with_prompt = false;
};

struct ListPage {
  std::vector<Job> jobs;
  uint64_t next_cursor = 0;  // 0 = no more
};

// How long the log's syncs (one fdatasync per commit group) took: counts per bucket, upper bounds in microseconds,
// the last bucket past every bound.
constexpr int64_t kSyncBoundsMicros[] = {100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000};
constexpr size_t kSyncBuckets = sizeof(kSyncBoundsMicros) / sizeof(kSyncBoundsMicros[0]) + 1;

struct StoreStats {
  uint64_t counts[kNumJobStates] = {0, 0, 0, 0, 0};
  uint64_t total = 0;
  uint64_t waiting = 0;               // of the pending ones, how many wait for other jobs (NewJob::after)
  int64_t oldest_pending_age_ms = 0;  // 0 when nothing ready to run is pending
  uint64_t finished_last_minute = 0;  // succeeded + failed + cancelled ended in the last 60 s
  uint64_t finished_last_hour = 0;
  bool paused = false;
  uint64_t log_bytes = 0;   // bytes of log segments holding records
  uint64_t live_bytes = 0;  // bytes of records still referenced
  uint64_t segments = 0;
  uint32_t checkpoint_segment = 0;
  uint64_t docs = 0;                        // documents (Store::PutDoc)
  uint64_t doc_bytes = 0;                   // their keys and values
  uint64_t outbox = 0;                      // of them, outbox/ documents not yet removed
  std::string background_error;             // the last failure of the background thread (checkpoint, compaction)
  uint64_t sync_counts[kSyncBuckets] = {};  // commit groups' syncs since open, by duration (kSyncBoundsMicros)
  uint64_t sync_micros_total = 0;
};

// Fair share for one owner (NewJob::owner): memory only, set again after each open (Store::SetOwnerPolicies).
struct OwnerPolicy {
  uint32_t weight = 1;       // turns among pending jobs of equal priority, relative to other owners: 1..1000
  uint32_t max_running = 0;  // jobs of this owner running at once; 0 = no limit
};

struct OwnerCounts {
  std::string owner;     // "" = jobs with no owner
  uint64_t pending = 0;  // ready or waiting
  uint64_t running = 0;
  OwnerPolicy policy;
  bool at_running_limit = false;
};

constexpr size_t kMaxDocKeyBytes = 256;
constexpr size_t kMaxDocValueBytes = 16u << 20;

struct EnqueueResult {
  uint64_t id = 0;
  bool existed = false;  // true when the prompt_id was already queued: id is the existing job's
};

// Reads the prompt of the job a filter is looking at (from disk; only when the filter needs it).
using PromptLoader = std::function<Status(std::string* prompt)>;
// Chooses among pending jobs in dispatch order (priority, then owners' turns, then age); called with the store's lock
// held, so it must be quick, must not call into the store, and should call `load` only when it has to.
using JobFilter = std::function<bool(uint64_t job_id, const PromptLoader& load)>;

struct TakeOptions {
  std::string worker_id;  // required
  int64_t lease_ms = 0;   // 0 = StoreOptions::default_lease_ms
  // The longest the run may take when the job sets no timeout of its own; 0 = none. Past it the run ends like
  // one past the job's timeout (back to pending, or failed past max attempts).
  int64_t default_timeout_ms = 0;
  JobFilter filter;     // optional
  size_t max_scan = 0;  // stop looking after this many candidates; 0 = no limit
  bool ignore_pause = false;
  // Takes of one class share what the store learns about which pending jobs they could ever run. A caller that
  // sets take_class (non-zero) and could_run promises that could_run's answer for a job depends only on the class
  // and the job (never on time, other jobs or other state) and that `filter` accepts no job could_run refuses. The
  // store then asks could_run about each job once per class, as the job becomes ready (again, if it comes back to
  // the queue), and a take of the class looks only at what arrived since and at the jobs the class can run: a
  // backlog the class cannot run costs its takes nothing. The job taken is the one a walk would take; when the class
  // can run few pending jobs (up to 512) it is found wherever it lies, max_scan bounding only what is looked at anew.
  uint64_t take_class = 0;
  JobFilter could_run;
};

// What happened, for listeners (the broker; the plugin's event stream).
struct StoreEvent {
  enum class Kind { kJobChanged, kJobRemoved, kPausedChanged, kPoliciesChanged };
  Kind kind = Kind::kJobChanged;
  uint64_t job_id = 0;
  JobState from = JobState::kPending;
  JobState to = JobState::kPending;
  std::string worker_id;  // the run's worker, when the job was or is running
  std::string reason;     // e.g. "lease expired", "cancelled", "completed"
};
using StoreListener = std::function<void(const std::vector<StoreEvent>&)>;

class Store {
 public:
  // Opens (creating if missing) the store in `dir`. Busy when another process has it open.
  static Status Open(const StoreOptions& options, const std::string& dir, std::unique_ptr<Store>* store,
                     RecoveryReport* report = nullptr);
  virtual ~Store() = default;  // closes

  // Adds a job. A prompt_id that is already in the store returns that job (existed = true), unchanged.
  virtual Status Enqueue(const NewJob& job, EnqueueResult* result) = 0;
  // Adds many jobs with one sync. All are validated first; one bad job fails the call and adds none.
  virtual Status EnqueueMany(const std::vector<NewJob>& jobs, std::vector<EnqueueResult>* results) = 0;

  virtual Status Get(uint64_t id, bool with_prompt, Job* job) = 0;
  virtual Status GetByPromptId(const std::string& prompt_id, bool with_prompt, Job* job) = 0;
  virtual Status List(const ListQuery& query, ListPage* page) = 0;
  virtual Status Stats(StoreStats* stats) = 0;
  // How many jobs dispatch takes before this pending job (0: it is next), by priority then age, ready jobs only.
  // NotFound when it is not a pending job that is ready to run (one that waits for others has no place yet), or
  // when pending jobs are spread over more than 4096 priorities (the place is not worth that walk).
  virtual Status QueuePosition(uint64_t id, uint64_t* position) = 0;
  // Fair share: weights and running limits per owner, `fallback` for owners not named (FairQueue: among ready
  // jobs of one priority, owners take turns in proportion to their weights). Memory only. A job whose owner is
  // at its running limit stays pending (dispatch passes over it) until one of that owner's runs ends.
  virtual Status SetOwnerPolicies(const OwnerPolicy& fallback, const std::map<std::string, OwnerPolicy>& by_owner) = 0;
  // The owners with pending or running jobs, with their counts and policies, by name.
  virtual Status OwnerStats(std::vector<OwnerCounts>* owners) = 0;

  // Leases the first pending job (in dispatch order) that `filter` accepts. *lease is cleared and OK is
  // returned when there is none (or dispatch is paused).
  virtual Status Take(const TakeOptions& options, std::unique_ptr<Lease>* lease) = 0;
  // Extends a lease to now + lease_ms (in memory: leases found at reopen get a grace period instead).
  virtual Status Heartbeat(uint64_t id, uint64_t token, int64_t lease_ms, int64_t* expires_ms) = 0;
  // Records node-level progress (JSON text) of a run, in memory only.
  virtual Status Progress(uint64_t id, uint64_t token, const std::string& progress_json) = 0;
  // running -> succeeded. outputs_json: object (or empty). AlreadyExists when this lease already completed
  // the job (a result sent again after a reconnect): it was recorded once, and stays as it was.
  virtual Status Complete(uint64_t id, uint64_t token, const std::string& outputs_json,
                          const std::vector<Artifact>& artifacts) = 0;
  // running -> failed, or -> pending when retryable and attempts remain. AlreadyExists as for Complete.
  virtual Status Fail(uint64_t id, uint64_t token, const JobError& error, bool retryable) = 0;

  // pending | running -> cancelled. A running job's lease ends; its worker must be told (see listener).
  virtual Status Cancel(uint64_t id, const std::string& reason) = 0;
  // Cancels every pending or running job of a batch in one commit: all of them or (on an error) none.
  // *cancelled gets their ids, oldest first; empty when the batch has nothing left to cancel.
  virtual Status CancelBatch(const std::string& batch_id, const std::string& reason,
                             std::vector<uint64_t>* cancelled) = 0;
  // failed | cancelled -> pending, with a fresh count of attempts.
  virtual Status Retry(uint64_t id) = 0;
  // Removes a finished job (succeeded | failed | cancelled).
  virtual Status Delete(uint64_t id) = 0;

  virtual Status SetPaused(bool paused) = 0;
  virtual bool paused() = 0;

  // Returns jobs whose lease or timeout ran out to pending (or failed past max attempts).
  virtual Status ExpireLeases(int* expired) = 0;
  // Removes finished jobs that ended before `finished_before_ms`.
  virtual Status Purge(int64_t finished_before_ms, uint64_t* removed) = 0;
  // Writes a checkpoint now (open then replays only the log written after it).
  virtual Status Checkpoint() = 0;
  // Moves live records out of old segments and deletes segments that hold nothing live.
  virtual Status Compact() = 0;

  // Documents: small named values kept beside the jobs (templates, ...): changed in commit groups like jobs, durable
  // once the call returns, held in memory and in every checkpoint. Keys: 1..kMaxDocKeyBytes bytes, no control
  // characters; a value at most kMaxDocValueBytes. Keys under "notify/" and "outbox/" belong to the store
  // (doc_table.h): a caller may read and remove them but not set them. A job enqueued with NewJob::notify gets, in the
  // commit that ends it (succeeded, failed, cancelled; again after a retry), an outbox/ document naming it, its state
  // and when; the caller removes it once it has acted on it. only_if_absent: AlreadyExists when the key is there
  // (nothing changes). ResourceExhausted past StoreOptions::max_doc_bytes / max_docs.
  virtual Status PutDoc(const std::string& key, const std::string& value, bool only_if_absent) = 0;
  virtual Status DeleteDoc(const std::string& key) = 0;                   // NotFound when absent
  virtual Status GetDoc(const std::string& key, std::string* value) = 0;  // NotFound when absent
  // Keys starting with `prefix` after `after` (byte order), at most `limit`, with their values unless keys_only.
  virtual Status ListDocs(const std::string& prefix, const std::string& after, size_t limit, bool keys_only,
                          std::vector<std::pair<std::string, std::string>>* out) = 0;

  virtual void SetListener(StoreListener listener) = 0;
  // Checkpoints (when healthy) and releases the directory lock. Later calls fail. Idempotent.
  virtual Status Close() = 0;
  // OK, or the error that made the handle unusable.
  virtual Status health() = 0;
};

}  // namespace comfymq
