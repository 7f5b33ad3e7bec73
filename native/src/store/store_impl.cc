// StoreImpl: its state changes (enqueue, results, cancel, retry, delete, pause). Takes are in store_take.cc, group
// commit in store_commit.cc, reads in store_reads.cc, recovery in store_recovery.cc, maintenance in
// store_maintenance.cc.
#include "store/store_impl.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "util/checksum.h"
#include "util/json_checks.h"

namespace comfymq {
namespace {

std::string NewUuid() {
  thread_local std::mt19937_64 rng(std::random_device{}() ^
                                   static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  uint64_t a = rng(), b = rng();
  a = (a & ~0xF000ull) | 0x4000ull;                            // version 4
  b = (b & ~(0xC000000000000000ull)) | 0x8000000000000000ull;  // variant 1
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xffff),
                static_cast<unsigned>(b >> 48), static_cast<unsigned long long>(b & 0xffffffffffffull));
  return buf;
}

}  // namespace

Status StoreImpl::CheckText(const std::string& value, const char* what, size_t max) {
  if (value.size() > max) {
    return Status::InvalidArgument(std::string(what) + " is too long (" + std::to_string(value.size()) +
                                   " bytes, at most " + std::to_string(max) + ")");
  }
  for (char c : value) {
    if (static_cast<unsigned char>(c) < 0x20) {
      return Status::InvalidArgument(std::string(what) + " must not contain control characters");
    }
  }
  return Status::OK();
}

std::string ErrorJsonOf(const char* type, const std::string& message) {
  JobError e;
  e.type = type;
  e.message = message;
  std::string out;
  ErrorToJson(e, &out).IgnoreError();  // type and message only: nothing to refuse
  return out;
}

StoreImpl::StoreImpl(const StoreOptions& options, std::string dir)
    : options_(options),
      env_(options.env != nullptr ? options.env : Env::Default()),
      dir_(std::move(dir)),
      committer_([this](std::vector<PendingOp*>& group, const std::function<void()>& next_may_start,
                        const std::function<size_t()>& take_late) { ProcessGroup(group, next_may_start, take_late); }),
      events_(std::make_unique<EventQueue>()),
      preparer_(env_, dir_) {}

StoreImpl::~StoreImpl() { Close().IgnoreError(); }

Status StoreImpl::health() { return Usable(); }

Status StoreImpl::Usable() {
  if (closed_.load()) return Status::IOError("store " + dir_ + " is closed");
  std::lock_guard<std::mutex> l(health_mu_);
  return failed_;
}

void StoreImpl::SetFailed(const Status& s) {
  std::lock_guard<std::mutex> l(health_mu_);
  if (failed_.ok()) {
    failed_ =
        Status::IOError("store " + dir_ + " stopped after a failed write (reopen it to recover): " + s.ToString());
  }
}

uint64_t StoreImpl::NextId(int64_t now_ms) {
  uint64_t id = static_cast<uint64_t>(now_ms) << 16;
  if (id <= last_id_) id = last_id_ + 1;
  last_id_ = id;
  return id;
}

// ---------------------------------------------------------------------------------------------------------
// Changes

Status StoreImpl::PrepareJob(const NewJob& in, int64_t now_ms, PreparedJob* out) {
  if (in.prompt.size() > options_.max_prompt_bytes) {
    return Status::InvalidArgument("prompt is too large (" + std::to_string(in.prompt.size()) + " bytes, at most " +
                                   std::to_string(options_.max_prompt_bytes) + ")");
  }
  CMQ_RETURN_IF_ERROR(ValidatePromptJson(in.prompt));
  if (!in.workflow.empty()) {
    if (in.workflow.size() > options_.max_prompt_bytes) return Status::InvalidArgument("workflow is too large");
    CMQ_RETURN_IF_ERROR(ValidateJsonObject(in.workflow, "workflow"));
  }
  if (in.max_attempts < 1 || in.max_attempts > 100) {
    return Status::InvalidArgument("max_attempts must be between 1 and 100, got " + std::to_string(in.max_attempts));
  }
  if (in.timeout_ms < 0 || in.timeout_ms > kMaxTimeoutMs) {
    return Status::InvalidArgument("timeout must be between 0 (none) and 30 days");
  }
  if (in.create_time_ms < 0) return Status::InvalidArgument("create_time must not be negative");
  CMQ_RETURN_IF_ERROR(CheckText(in.prompt_id, "prompt_id", kMaxIdBytes));
  CMQ_RETURN_IF_ERROR(CheckText(in.batch_id, "batch_id", kMaxIdBytes));
  CMQ_RETURN_IF_ERROR(CheckText(in.owner, "owner", kMaxIdBytes));
  if (in.after.size() > kMaxAfter) {
    return Status::InvalidArgument("a job may wait for at most " + std::to_string(kMaxAfter) + " jobs, not " +
                                   std::to_string(in.after.size()));
  }
  out->after = in.after;
  std::sort(out->after.begin(), out->after.end());
  out->after.erase(std::unique(out->after.begin(), out->after.end()), out->after.end());
  if (!out->after.empty() && out->after.front() == 0) return Status::InvalidArgument("after: 0 is not a job id");
  out->prompt_id = in.prompt_id.empty() ? NewUuid() : in.prompt_id;
  out->prompt_id_hash = Hash64(out->prompt_id);
  if (out->prompt_id_hash == 0) out->prompt_id_hash = 1;
  out->priority = in.priority;
  out->max_attempts = static_cast<uint16_t>(in.max_attempts);
  out->batch_id = in.batch_id;
  out->owner = in.owner;
  out->notify = in.notify;
  records::JobView v;
  v.priority = in.priority;
  v.max_attempts = out->max_attempts;
  v.timeout_ms = in.timeout_ms;
  v.create_time_ms = in.create_time_ms != 0 ? in.create_time_ms : now_ms;
  v.prompt_id = out->prompt_id;
  v.batch_id = in.batch_id;
  v.owner = in.owner;
  v.after = out->after;
  if (!in.labels.empty()) {
    if (in.labels.size() > kMaxLabelsBytes) {
      return Status::InvalidArgument("labels are too large (at most " + std::to_string(kMaxLabelsBytes) + " bytes)");
    }
    CMQ_RETURN_IF_ERROR(ValidateJsonObject(in.labels, "labels"));
    v.labels = in.labels;
  }
  // Compressed here, in the caller's thread: the group leader only copies the bytes.
  std::string prompt_block, workflow_block;
  v.prompt = records::PackText(in.prompt, &prompt_block);
  v.workflow = records::PackText(in.workflow, &workflow_block);
  out->payload.reserve(64 + v.prompt.bytes.size() + v.workflow.bytes.size() + out->prompt_id.size() +
                       in.batch_id.size() + in.owner.size());
  records::EncodeJob(v, &out->payload);
  if (out->payload.size() > log::kMaxRecordPayload) {  // only when both texts are near the limit and incompressible
    return Status::InvalidArgument("prompt and workflow together are too large for one job record (" +
                                   std::to_string(out->payload.size()) + " bytes once encoded, at most " +
                                   std::to_string(log::kMaxRecordPayload) + ")");
  }
  return Status::OK();
}

Status StoreImpl::ApplyEnqueue(std::vector<PreparedJob>& jobs, std::vector<EnqueueResult>* results) {
  results->clear();
  for (PreparedJob& pj : jobs) {
    uint64_t existing = 0;
    CMQ_RETURN_IF_ERROR(FindByPromptIdLocked(pj.prompt_id, pj.prompt_id_hash, &existing));
    if (existing != 0) {
      results->push_back(EnqueueResult{existing, true});
      continue;
    }
    for (uint64_t dep : pj.after) {  // here, in the commit: what it waits for cannot end unseen meanwhile
      const JobMeta* d = table_.Find(dep);
      if (d == nullptr) {
        return Status::InvalidArgument("after: no job " + FormatJobId(dep) + " to wait for (it is not in the store)");
      }
      if (d->state == JobState::kFailed || d->state == JobState::kCancelled) {
        return Status::InvalidArgument("after: job " + FormatJobId(dep) + " is " + JobStateName(d->state) +
                                       ": it will not succeed, so nothing can wait for it (retry it first)");
      }
    }
    const uint64_t id = NextId(txn_->now_ms());
    records::PatchJobId(&pj.payload, id);
    JobMeta m;
    m.id = id;
    m.prompt_id_hash = pj.prompt_id_hash;
    m.job_loc = txn_->Append(log::RecordType::kJob, pj.payload);
    m.updated_ms = txn_->now_ms();
    m.priority = pj.priority;
    m.batch = txn_->InternBatch(pj.batch_id);
    m.owner = table_.InternOwner(pj.owner);  // (not undone: a name kept that no job has is harmless)
    m.max_attempts = pj.max_attempts;
    m.state = JobState::kPending;
    table_.SetWaits(id, pj.after);  // before Insert: it joins the dispatch order once ready
    txn_->Insert(m);
    if (pj.notify) txn_->PutDoc(DocTable::NotifyKey(id), {});
    txn_->JobChanged(id, JobState::kPending, JobState::kPending, "enqueued");
    results->push_back(EnqueueResult{id, false});
  }
  return Status::OK();
}

Status StoreImpl::Enqueue(const NewJob& job, EnqueueResult* result) {
  std::vector<EnqueueResult> results;
  CMQ_RETURN_IF_ERROR(EnqueueJobs(&job, 1, &results));
  *result = results[0];
  return Status::OK();
}

Status StoreImpl::EnqueueMany(const std::vector<NewJob>& jobs, std::vector<EnqueueResult>* results) {
  if (jobs.empty()) return Status::InvalidArgument("no jobs to enqueue");
  return EnqueueJobs(jobs.data(), jobs.size(), results);
}

Status StoreImpl::EnqueueJobs(const NewJob* jobs, size_t n, std::vector<EnqueueResult>* results) {
  std::vector<PreparedJob> prepared(n);
  const int64_t now = NowMs();
  size_t bytes = 0;
  for (size_t i = 0; i < n; ++i) {
    Status s = PrepareJob(jobs[i], now, &prepared[i]);
    if (!s.ok()) return n == 1 ? s : s.WithContext("job " + std::to_string(i));
    bytes += prepared[i].payload.size();
    if (bytes > kMaxBatchBytes) {
      return Status::InvalidArgument(
          "batch is too large (more than 1 GiB of records once encoded); split it into smaller batches");
    }
  }
  std::vector<EnqueueResult> out;
  CMQ_RETURN_IF_ERROR(Run([&] { return ApplyEnqueue(prepared, &out); }, bytes));
  *results = std::move(out);
  return Status::OK();
}

void StoreImpl::WriteStatus(const JobMeta& before, const StatusDoc& doc) {
  std::string payload;
  records::EncodeStatus(doc.View(before.id), &payload);
  JobMeta m = before;
  m.state = doc.state;
  m.attempts = doc.attempts;
  m.status_loc = txn_->Append(log::RecordType::kStatus, payload);
  m.updated_ms = doc.updated_ms;
  txn_->Replace(m);
}

void StoreImpl::EndRunLocked(const JobMeta& before, const RunInfo& run, StatusDoc d, JobState to, const char* outcome,
                             const std::string& error_json, const std::string& reason) {
  const int64_t now = txn_->now_ms();
  RunOutcome ro{before.attempts, run.worker_id, run.started_ms, now, outcome, error_json};
  d.history = AppendHistory(d.history, ro, options_.max_history_entries);
  d.state = to;
  d.token = run.token;  // which run ended it: a resend of the same result is recognised (AlreadyExists)
  d.lease_expires_ms = 0;
  d.deadline_ms = 0;
  d.started_ms = run.started_ms;
  d.finished_ms = IsFinished(to) ? now : 0;
  d.updated_ms = now;
  d.worker_id = run.worker_id;
  d.error = error_json;
  WriteStatus(before, d);
  txn_->SetRun(before.id, std::nullopt);
  txn_->JobChanged(before.id, JobState::kRunning, to, reason, run.worker_id);
}

// `token` is a caller's (TokenCodec::External). Messages never show a token: a stale caller must not learn the
// current one.
Status StoreImpl::CheckLeaseLocked(uint64_t id, uint64_t token, const JobMeta** meta, const RunInfo** run) {
  const JobMeta* m = table_.Find(id);
  if (m == nullptr) return Status::NotFound("no job " + FormatJobId(id));
  if (m->state != JobState::kRunning) {
    return Status::LeaseLost("job " + FormatJobId(id) + " is " + JobStateName(m->state) +
                             ", not running: this lease is no longer valid");
  }
  const RunInfo* r = table_.Run(id);
  if (r == nullptr || r->token != tokens_.Internal(token)) {
    return Status::LeaseLost("job " + FormatJobId(id) + " is now leased to another run; this lease is stale");
  }
  *meta = m;
  *run = r;
  return Status::OK();
}

Status StoreImpl::Heartbeat(uint64_t id, uint64_t token, int64_t lease_ms, int64_t* expires_ms) {
  CMQ_RETURN_IF_ERROR(Usable());
  if (lease_ms < 0) return Status::InvalidArgument("lease must not be negative");
  std::unique_lock<std::shared_mutex> st(state_mu_);
  const JobMeta* m;
  const RunInfo* r;
  CMQ_RETURN_IF_ERROR(CheckLeaseLocked(id, token, &m, &r));
  RunInfo* run = table_.MutableRun(id);
  run->expires_ms = NowMs() + (lease_ms > 0 ? lease_ms : options_.default_lease_ms);
  if (expires_ms != nullptr) *expires_ms = run->expires_ms;
  return Status::OK();
}

Status StoreImpl::Progress(uint64_t id, uint64_t token, const std::string& progress_json) {
  CMQ_RETURN_IF_ERROR(Usable());
  if (progress_json.size() > kMaxProgressBytes) return Status::InvalidArgument("progress is too large");
  if (!progress_json.empty()) CMQ_RETURN_IF_ERROR(ValidateJsonValue(progress_json, "progress"));
  std::unique_lock<std::shared_mutex> st(state_mu_);
  const JobMeta* m;
  const RunInfo* r;
  CMQ_RETURN_IF_ERROR(CheckLeaseLocked(id, token, &m, &r));
  table_.MutableRun(id)->progress = progress_json;
  return Status::OK();
}

Status StoreImpl::ResendOrLeaseLost(uint64_t id, uint64_t token, std::initializer_list<JobState> ended,
                                    Status lease_lost) {
  const JobMeta* m = table_.Find(id);
  if (m == nullptr || token == 0) return lease_lost;
  bool in_state = false;
  for (JobState s : ended) in_state |= m->state == s;
  if (!in_state || !m->status_loc.valid()) return lease_lost;
  StatusDoc d;
  if (!LoadStatusLocked(*m, &d).ok() || d.token != tokens_.Internal(token)) return lease_lost;
  return Status::AlreadyExists("job " + FormatJobId(id) + ": this lease's result was already recorded");
}

Status StoreImpl::ApplyComplete(uint64_t id, uint64_t token, const std::string& outputs_json,
                                const std::string& artifacts_json) {
  const JobMeta* m;
  const RunInfo* r;
  Status s = CheckLeaseLocked(id, token, &m, &r);
  if (!s.ok()) return s.IsLeaseLost() ? ResendOrLeaseLost(id, token, {JobState::kSucceeded}, s) : s;
  const JobMeta before = *m;
  const RunInfo run = *r;
  StatusDoc d = LoadStatusOrRebuildLocked(before);
  d.outputs = outputs_json;
  d.artifacts = artifacts_json;
  EndRunLocked(before, run, std::move(d), JobState::kSucceeded, "succeeded", "", "completed");
  return Status::OK();
}

Status StoreImpl::ApplyFail(uint64_t id, uint64_t token, const std::string& error_json, bool retryable) {
  const JobMeta* m;
  const RunInfo* r;
  Status s = CheckLeaseLocked(id, token, &m, &r);
  if (!s.ok()) return s.IsLeaseLost() ? ResendOrLeaseLost(id, token, {JobState::kFailed, JobState::kPending}, s) : s;
  const JobMeta before = *m;
  const RunInfo run = *r;
  const bool again = retryable && before.attempts < before.max_attempts;
  EndRunLocked(before, run, LoadStatusOrRebuildLocked(before), again ? JobState::kPending : JobState::kFailed, "failed",
               error_json, again ? "failed, will retry" : "failed");
  return Status::OK();
}

Status StoreImpl::ApplyRelease(uint64_t id, uint64_t token, const std::string& reason, bool count_attempt) {
  const JobMeta* m;
  const RunInfo* r;
  CMQ_RETURN_IF_ERROR(CheckLeaseLocked(id, token, &m, &r));
  const JobMeta before = *m;
  const RunInfo run = *r;
  StatusDoc d = LoadStatusOrRebuildLocked(before);
  if (!count_attempt) {
    // Never reached its worker: as if it had not been taken.
    JobMeta adjusted = before;
    adjusted.attempts = static_cast<uint16_t>(before.attempts > 0 ? before.attempts - 1 : 0);
    d.state = JobState::kPending;
    d.attempts = adjusted.attempts;
    d.token = 0;
    d.lease_expires_ms = d.deadline_ms = d.started_ms = 0;
    d.updated_ms = txn_->now_ms();
    d.worker_id.clear();
    WriteStatus(adjusted, d);
    txn_->SetRun(id, std::nullopt);
    txn_->JobChanged(id, JobState::kRunning, JobState::kPending, reason, run.worker_id);
    return Status::OK();
  }
  const bool again = before.attempts < before.max_attempts;
  std::string message = reason;
  if (!again) message = "gave up after " + std::to_string(before.attempts) + " attempts; last: " + message;
  EndRunLocked(before, run, std::move(d), again ? JobState::kPending : JobState::kFailed, "lease_lost",
               ErrorJsonOf("lease_lost", message), reason);
  return Status::OK();
}

Status StoreImpl::Complete(uint64_t id, uint64_t token, const std::string& outputs_json,
                           const std::vector<Artifact>& artifacts) {
  StoreBatch b;
  Status s;
  b.Complete(id, token, outputs_json, artifacts, &s);
  Commit(&b).IgnoreError();  // the item's status says the same
  return s;
}

Status StoreImpl::Fail(uint64_t id, uint64_t token, const JobError& error, bool retryable) {
  StoreBatch b;
  Status s;
  b.Fail(id, token, error, retryable, &s);
  Commit(&b).IgnoreError();  // the item's status says the same
  return s;
}

Status StoreImpl::Cancel(uint64_t id, const std::string& reason) {
  CMQ_RETURN_IF_ERROR(CheckText(reason, "reason", 1024));
  return Run([&] { return CancelLocked(id, reason); }, 256);
}

Status StoreImpl::CancelBatch(const std::string& batch_id, const std::string& reason,
                              std::vector<uint64_t>* cancelled) {
  CMQ_RETURN_IF_ERROR(CheckText(reason, "reason", 1024));
  CMQ_RETURN_IF_ERROR(CheckText(batch_id, "batch_id", kMaxIdBytes));
  if (batch_id.empty()) return Status::InvalidArgument("batch_id must not be empty");
  std::vector<uint64_t> ids;
  Status s = Run(
      [&] {
        ids.clear();
        uint32_t batch = 0;
        if (!table_.FindBatch(batch_id, &batch)) return Status::OK();
        table_.ForEach([&](const JobMeta& m) {
          if (m.batch == batch && (m.state == JobState::kPending || m.state == JobState::kRunning)) ids.push_back(m.id);
        });
        // An error part way leaves the group to roll this op back whole.
        for (uint64_t id : ids) CMQ_RETURN_IF_ERROR(CancelLocked(id, reason));
        return Status::OK();
      },
      4096);
  if (s.ok()) *cancelled = std::move(ids);
  return s;
}

// With the group applying: pending | running -> cancelled.
Status StoreImpl::CancelLocked(uint64_t id, const std::string& reason) {
  const JobMeta* m = table_.Find(id);
  if (m == nullptr) return Status::NotFound("no job " + FormatJobId(id));
  if (m->state != JobState::kPending && m->state != JobState::kRunning) {
    return Status::Conflict("job " + FormatJobId(id) + " is " + JobStateName(m->state) +
                            "; only pending or running jobs can be cancelled");
  }
  const JobMeta before = *m;
  const std::string message = reason.empty() ? "cancelled" : reason;
  const std::string error_json = ErrorJsonOf("cancelled", message);
  StatusDoc d = LoadStatusOrRebuildLocked(before);
  if (const RunInfo* r = table_.Run(id)) {
    const RunInfo run = *r;  // the worker must be told: listeners hear it with the run's worker id
    EndRunLocked(before, run, std::move(d), JobState::kCancelled, "cancelled", error_json, message);
    return Status::OK();
  }
  d.state = JobState::kCancelled;
  d.finished_ms = d.updated_ms = txn_->now_ms();
  d.error = error_json;
  WriteStatus(before, d);
  txn_->JobChanged(id, before.state, JobState::kCancelled, message);
  return Status::OK();
}

std::string StoreImpl::DeadWaitLocked(uint64_t id) const {
  const std::vector<uint64_t>* after = table_.Waits(id);
  if (after == nullptr) return "";
  for (uint64_t dep : *after) {
    const JobMeta* d = table_.Find(dep);
    if (d == nullptr) return "it waits for job " + FormatJobId(dep) + ", which was deleted";
    if (d->state == JobState::kFailed) return "it waits for job " + FormatJobId(dep) + ", which failed";
    if (d->state == JobState::kCancelled) return "it waits for job " + FormatJobId(dep) + ", which was cancelled";
  }
  return "";
}

Status StoreImpl::CancelIfOrphanLocked(uint64_t id, const std::string& why, size_t* cancels) {
  const JobMeta* m = table_.Find(id);
  if (m == nullptr || m->state != JobState::kPending) return Status::OK();
  const std::string dead = why.empty() ? DeadWaitLocked(id) : why;
  if (dead.empty()) return Status::OK();
  if (*cancels >= options_.max_cancels_per_commit) {
    orphan_checks_.insert(id);  // a later commit's (SweepOrphans)
    orphans_deferred_ = true;
    return Status::OK();
  }
  ++*cancels;
  return CancelLocked(id, dead);
}

Status StoreImpl::CancelOrphansLocked(size_t first_event) {
  if (table_.waits().empty()) return Status::OK();
  size_t cancels = 0;
  // (The events grow as jobs are cancelled: each one's own dependents are reached in turn.)
  for (size_t i = first_event; i < txn_->events().size(); ++i) {
    const StoreEvent e = txn_->events()[i];
    const bool removed = e.kind == StoreEvent::Kind::kJobRemoved;
    const bool ended = e.kind == StoreEvent::Kind::kJobChanged &&
                       (e.to == JobState::kFailed || e.to == JobState::kCancelled) && e.from != e.to;
    if (removed || ended) {
      const std::string why = "it waits for job " + FormatJobId(e.job_id) + ", which " +
                              (removed                     ? "was deleted"
                               : e.to == JobState::kFailed ? "failed"
                                                           : "was cancelled");
      std::vector<uint64_t> orphans;
      table_.ForEachDependent(e.job_id, [&](uint64_t d) {
        orphans.push_back(d);
        return true;
      });
      for (uint64_t d : orphans) CMQ_RETURN_IF_ERROR(CancelIfOrphanLocked(d, why, &cancels));
    } else if (e.kind == StoreEvent::Kind::kJobChanged && e.to == JobState::kPending && e.from != e.to) {
      // back in the queue (a retryable failure, a lost lease) while a job it waits for cannot succeed any more
      CMQ_RETURN_IF_ERROR(CancelIfOrphanLocked(e.job_id, "", &cancels));
    }
  }
  return Status::OK();
}

Status StoreImpl::SweepOrphans() {
  for (;;) {
    {
      std::shared_lock<std::shared_mutex> st(state_mu_);
      if (orphan_checks_.empty()) return Status::OK();
    }
    std::vector<uint64_t> taken;
    Status s = Run(
        [&] {
          taken.clear();
          size_t cancels = 0;
          while (!orphan_checks_.empty() && cancels < options_.max_cancels_per_commit) {
            const uint64_t id = *orphan_checks_.begin();
            orphan_checks_.erase(orphan_checks_.begin());
            taken.push_back(id);
            CMQ_RETURN_IF_ERROR(CancelIfOrphanLocked(id, "", &cancels));
          }
          return Status::OK();
        },
        4096);
    if (!s.ok()) {  // not committed: they are checked again next time
      std::unique_lock<std::shared_mutex> st(state_mu_);
      orphan_checks_.insert(taken.begin(), taken.end());
      return s;
    }
  }
}

Status StoreImpl::Retry(uint64_t id) {
  return Run(
      [&] {
        const JobMeta* m = table_.Find(id);
        if (m == nullptr) return Status::NotFound("no job " + FormatJobId(id));
        if (m->state != JobState::kFailed && m->state != JobState::kCancelled) {
          return Status::Conflict("job " + FormatJobId(id) + " is " + JobStateName(m->state) +
                                  "; only failed or cancelled jobs can be retried");
        }
        const std::string dead = DeadWaitLocked(id);
        if (!dead.empty()) {
          const bool gone = dead.find("was deleted") != std::string::npos;
          return Status::Conflict(
              "job " + FormatJobId(id) + " cannot run again: " + dead +
              (gone ? " (that job is gone: queue this one anew instead)" : " (retry that one first)"));
        }
        const JobMeta before = *m;
        StatusDoc d = LoadStatusOrRebuildLocked(before);
        StatusDoc fresh;
        fresh.state = JobState::kPending;
        fresh.updated_ms = txn_->now_ms();
        fresh.history = d.history;
        WriteStatus(before, fresh);
        txn_->JobChanged(id, before.state, JobState::kPending, "retried");
        return Status::OK();
      },
      256);
}

Status StoreImpl::Delete(uint64_t id) {
  return Run(
      [&] {
        const JobMeta* m = table_.Find(id);
        if (m == nullptr) return Status::NotFound("no job " + FormatJobId(id));
        if (!IsFinished(m->state)) {
          return Status::Conflict("job " + FormatJobId(id) + " is " + JobStateName(m->state) +
                                  "; only finished jobs can be deleted (cancel it first)");
        }
        StoreEvent e;
        e.kind = StoreEvent::Kind::kJobRemoved;
        e.job_id = id;
        e.from = e.to = m->state;
        e.reason = "deleted";
        std::string payload;
        records::EncodeErase(txn_->now_ms(), &id, 1, &payload);
        txn_->Append(log::RecordType::kErase, payload);
        txn_->Erase(id);
        txn_->Event(std::move(e));
        return Status::OK();
      },
      64);
}

Status StoreImpl::SetPaused(bool paused) {
  return Run(
      [&] {
        if (paused_ == paused) return Status::OK();
        std::string payload;
        records::EncodeMeta(paused, &payload);
        txn_->Append(log::RecordType::kMeta, payload);
        txn_->SetPaused(paused);
        StoreEvent e;
        e.kind = StoreEvent::Kind::kPausedChanged;
        e.reason = paused ? "paused" : "resumed";
        txn_->Event(std::move(e));
        return Status::OK();
      },
      16);
}

bool StoreImpl::paused() {
  std::shared_lock<std::shared_mutex> st(state_mu_);
  return paused_;
}

void StoreImpl::SetListener(StoreListener listener) { events_->SetListener(std::move(listener)); }

}  // namespace comfymq
