// StoreImpl: operations, reads and group commit. Recovery and maintenance live in their own files.
#include "store/store_impl.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "util/checksum.h"
#include "util/json_checks.h"
#include "util/thread_priority.h"

namespace comfymq {
namespace {

constexpr size_t kMaxIdBytes = 256;
constexpr size_t kMaxProgressBytes = 256u << 10;
constexpr size_t kMaxOutputsBytes = 64u << 20;
constexpr size_t kMaxArtifactsBytes = 16u << 20;
constexpr size_t kMaxBatchBytes = 1u << 30;  // one EnqueueMany: one commit, one segment at most this big
constexpr int64_t kMaxTimeoutMs = 30ll * 24 * 3600 * 1000;

std::string NewUuid() {
  thread_local std::mt19937_64 rng(std::random_device{}() ^
                                   static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  uint64_t a = rng(), b = rng();
  a = (a & ~0xF000ull) | 0x4000ull;                                 // version 4
  b = (b & ~(0xC000000000000000ull)) | 0x8000000000000000ull;       // variant 1
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xffff),
                static_cast<unsigned>(b >> 48), static_cast<unsigned long long>(b & 0xffffffffffffull));
  return buf;
}

Status CheckText(const std::string& value, const char* what, size_t max) {
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

}  // namespace

std::string ErrorJsonOf(const char* type, const std::string& message) {
  JobError e;
  e.type = type;
  e.message = message;
  std::string out;
  ErrorToJson(e, &out);
  return out;
}

void StoreBatch::Take(const TakeOptions& options, std::unique_ptr<Lease>* lease, Status* status, bool* early) {
  items_.push_back(Item{TakeOp{options, lease, early}, status});
}

void StoreBatch::Complete(uint64_t id, uint64_t token, std::string outputs_json, std::vector<Artifact> artifacts,
                          Status* status) {
  items_.push_back(Item{CompleteOp{id, token, std::move(outputs_json), std::move(artifacts)}, status});
}

void StoreBatch::Fail(uint64_t id, uint64_t token, JobError error, bool retryable, Status* status) {
  items_.push_back(Item{FailOp{id, token, std::move(error), retryable}, status});
}

void StoreBatch::ReleaseLease(uint64_t id, uint64_t token, std::string reason, bool count_attempt, Status* status) {
  items_.push_back(Item{ReleaseOp{id, token, std::move(reason), count_attempt}, status});
}

Status CommitBatch(Store* store, StoreBatch* batch) {
  auto* impl = dynamic_cast<StoreImpl*>(store);
  if (impl == nullptr) return Status::InvalidArgument("CommitBatch needs a store made by Store::Open");
  return impl->Commit(batch);
}

void SetDispatchHook(Store* store, DispatchHook hook) {
  auto* impl = dynamic_cast<StoreImpl*>(store);
  if (impl != nullptr) impl->SetDispatchHook(std::move(hook));
}

StoreImpl::StoreImpl(const StoreOptions& options, std::string dir)
    : options_(options),
      env_(options.env != nullptr ? options.env : Env::Default()),
      dir_(std::move(dir)),
      committer_([this](std::vector<PendingOp*>& group, const std::function<void()>& next_may_start,
                        const std::function<size_t()>& take_late) { ProcessGroup(group, next_may_start, take_late); }),
      events_(std::make_unique<EventQueue>()),
      preparer_(env_, dir_) {}

StoreImpl::~StoreImpl() { Close(); }

Status StoreImpl::health() { return Usable(); }

Status StoreImpl::Usable() {
  if (closed_.load()) return Status::IOError("store " + dir_ + " is closed");
  std::lock_guard<std::mutex> l(health_mu_);
  return failed_;
}

void StoreImpl::SetFailed(const Status& s) {
  std::lock_guard<std::mutex> l(health_mu_);
  if (failed_.ok()) {
    failed_ = Status::IOError("store " + dir_ + " stopped after a failed write (reopen it to recover): " + s.ToString());
  }
}

uint64_t StoreImpl::NextId(int64_t now_ms) {
  uint64_t id = static_cast<uint64_t>(now_ms) << 16;
  if (id <= last_id_) id = last_id_ + 1;
  last_id_ = id;
  return id;
}

// ---------------------------------------------------------------------------------------------------------
// Group commit

Status StoreImpl::Run(const std::function<Status()>& apply, size_t bytes_hint) {
  CMQ_RETURN_IF_ERROR(Usable());
  PendingOp op;
  op.apply = apply;
  op.bytes_hint = bytes_hint;
  return committer_.Commit(&op);
}

// A group: applied in memory with commit_mu_ held, then (order_) its turn to write and sync, which comes once
// the group before is durable; the next group is applied meanwhile. When the turn comes, the ops that queued
// while this group waited for it join it (late ops: applied then, written with this group's sync; else they
// would wait a whole further sync). From its turn until its sync returns the leader runs at a raised
// priority where permitted (StoreOptions::raise_log_writer_priority). Nothing is answered before its own sync
// and every earlier group's are done.
void StoreImpl::ProcessGroup(std::vector<PendingOp*>& group, const std::function<void()>& next_may_start,
                             const std::function<size_t()>& take_late) {
  std::unique_lock<std::mutex> commit(commit_mu_);
  bool reset_tail = false;
  const uint64_t seq = order_.Begin(&reset_tail);
  if (reset_tail) ResetPlanLocked();  // groups planned after a failed one were never written
  auto fail_all = [&](const Status& s) {
    for (PendingOp* op : group) {
      if (op->status.ok()) op->status = s;
    }
  };
  Status usable = Usable();
  if (!usable.ok()) {
    for (PendingOp* op : group) op->status = usable;
    order_.Resolve(seq);
    order_.WaitTurn(seq);
    order_.EndTurn(seq);
    return;
  }
  const int64_t now = NowMs();
  RecordSink sink;
  try {  // room for what groups lately held: late ops then seldom grow (and copy) it in the turn
    sink.Reserve(std::min<uint64_t>(2 * group_bytes_avg_.load(std::memory_order_relaxed), 64u << 20));
  } catch (const std::bad_alloc&) {  // only a hint
  }
  Txn txn(&table_, &sink, &paused_, now);
  std::vector<std::unique_ptr<Lease>> dispatched;  // leased by the dispatch hook in this group
  uint64_t tokens_before;
  bool applied;  // false: refused as a whole (too big for one group record): no on_applied callbacks
  {
    std::unique_lock<std::shared_mutex> st(state_mu_);
    tokens_before = next_token_;
    inflight_.push_back(&sink);  // readers find its records by their provisional locations until it is placed
    applied = ApplyOpsLocked(group, 0, &txn, &sink, &dispatched);
  }
  if (applied) RunAppliedCallbacks(group, 0);

  ScopedPriorityBoost boost(options_.raise_log_writer_priority);
  // This group's turn: the groups before it are durable (or failed, and then this one fails too).
  Status ws = order_.WaitTurn(seq);
  const bool origin = ws.ok();  // a failure from here on starts with this group
  const size_t first_late = group.size();
  const bool late = ws.ok() && take_late() > 0;
  bool late_applied = false;
  uint64_t reserving = 0;  // a token reservation this group writes
  {
    std::unique_lock<std::shared_mutex> st(state_mu_);
    if (late) {
      txn.AdvanceClock(NowMs());  // they queued after the group began, up to a sync ago: ids and leases from now
      late_applied = ApplyOpsLocked(group, first_late, &txn, &sink, &dispatched);
    }
    if (!ws.ok() || sink.empty()) {
      // Nothing to write, or the group before failed: no group after this one has begun (commit_mu_), so
      // this one undoes itself first, then lets the failed ones undo theirs (Resolve).
      inflight_.erase(std::find(inflight_.begin(), inflight_.end(), &sink));
      if (!ws.ok()) txn.RollbackAll();
      st.unlock();
      boost.End();
      if (late_applied) RunAppliedCallbacks(group, first_late);
      order_.Resolve(seq);
      // What these ops read may be a change of the group before: durable now, or failed with it.
      if (!ws.ok()) fail_all(ws);
      order_.EndTurn(seq);
      return;
    }
    if (next_token_ != tokens_before && next_token_ + kTokenReserveStep / 2 > token_reserve_) {
      reserving = next_token_ + kTokenReserveStep;  // covers the next takes once this group is durable
      std::string payload;
      records::EncodeTokens(reserving, &payload);
      txn.Append(log::RecordType::kTokens, payload);
    }
    sink.Finalize(plan_segment_, plan_offset_, plan_capacity_, NextSegmentCapacity(plan_capacity_));
    txn.ResolveLocations();
  }
  if (late_applied) RunAppliedCallbacks(group, first_late);
  const RecordSink::Placement& placed = sink.placement();
  if (placed.new_segment) {
    plan_segment_ = placed.segment;
    plan_capacity_ = placed.capacity;
  }
  plan_offset_ = placed.offset + sink.size();
  commit.unlock();
  next_may_start();  // the next group applies while this one writes and syncs
  log_writing_ = true;  // the log is busy: the preparer keeps off the disk (and for a while after)
  if (ws.ok()) ws = WriteSink(sink);
  last_commit_ms_ = SteadyMs();
  log_writing_ = false;
  boost.End();
  if (!ws.ok()) {
    if (origin) {
      if (!ws.IsNoSpace()) SetFailed(ws);
      order_.Break(ws);
    }
    order_.EndTurn(seq);  // later groups take their turns, see the failure and undo themselves first
    order_.WaitTop(seq);
    {
      std::unique_lock<std::shared_mutex> st(state_mu_);
      inflight_.erase(std::find(inflight_.begin(), inflight_.end(), &sink));
      txn.RollbackAll();
    }
    order_.Resolve(seq);
    fail_all(ws);
    return;
  }
  {
    std::unique_lock<std::shared_mutex> st(state_mu_);
    inflight_.erase(std::find(inflight_.begin(), inflight_.end(), &sink));
    token_reserve_ = std::max(token_reserve_, reserving);
    const int64_t sec = now / 1000;
    for (const StoreEvent& e : txn.events()) {
      if (e.kind != StoreEvent::Kind::kJobChanged || !IsFinished(e.to) || IsFinished(e.from)) continue;
      if (sec > finished_ring_second_) {
        for (int64_t s = std::max(finished_ring_second_ + 1, sec - 3599); s <= sec; ++s) {
          finished_per_second_[static_cast<size_t>(s % 3600)] = 0;
        }
        finished_ring_second_ = sec;
      }
      if (sec > finished_ring_second_ - 3600) finished_per_second_[static_cast<size_t>(sec % 3600)]++;
    }
  }
  bytes_since_checkpoint_ += sink.size();
  if (!txn.events().empty()) events_->Push(std::move(txn.events()));
  if (!dispatched.empty() && dispatch_hook_.deliver) dispatch_hook_.deliver(std::move(dispatched));
  bool kick = bytes_since_checkpoint_.load() >= options_.checkpoint_every_bytes;
  if (options_.background_thread && tail_offset_ >= tail_capacity_ / 4) {  // the next segment, zeroed ahead
    preparer_.Request(NextSegmentCapacityLocked());
    kick |= preparer_.wanted();
  }
  order_.Resolve(seq);
  order_.EndTurn(seq);
  if (kick) KickBackground();
}

void StoreImpl::KickBackground() {
  std::lock_guard<std::mutex> l(bg_mu_);
  bg_kick_ = true;
  bg_cv_.notify_one();
}

bool StoreImpl::ApplyOpsLocked(std::vector<PendingOp*>& group, size_t from, Txn* txn, RecordSink* sink,
                               std::vector<std::unique_ptr<Lease>>* dispatched) {
  size_t hint = 0;
  for (size_t i = from; i < group.size(); ++i) hint += group[i]->bytes_hint + 64;  // 64: a record header and then some
  try {
    sink->Reserve(std::min<size_t>(hint, 64u << 20));
  } catch (const std::bad_alloc&) {  // only a hint; the ops' own appends fail cleanly if memory is short
  }
  txn_ = txn;
  const Txn::Mark first = txn->mark();
  const size_t events_before = txn->events().size();
  const size_t leased_before = dispatched->size();
  for (size_t i = from; i < group.size(); ++i) {
    PendingOp* op = group[i];
    Txn::Mark m = txn->mark();
    try {
      op->status = op->apply();
    } catch (const std::exception& e) {  // e.g. bad_alloc, or a caller's JobFilter throwing
      op->status = Status::IOError(std::string("internal error while applying a change: ") + e.what());
    }
    if (!op->status.ok()) txn->RollbackTo(m);
  }
  bool made_pending = false;
  for (size_t i = events_before; i < txn->events().size(); ++i) {
    const StoreEvent& e = txn->events()[i];
    made_pending |= e.kind == StoreEvent::Kind::kJobChanged && e.to == JobState::kPending;
  }
  if (dispatch_hook_.choose && made_pending) {
    // Lease what just arrived to idle workers in this very group: one sync for the job and its lease.
    struct Ctx final : DispatchContext {
      StoreImpl* store;
      std::vector<std::unique_ptr<Lease>>* out;
      const Lease* Take(const TakeOptions& o) override {
        std::unique_ptr<Lease> l;
        if (!store->ApplyTake(o, &l, nullptr).ok() || !l) return nullptr;
        out->push_back(std::move(l));
        return out->back().get();
      }
    } ctx;
    ctx.store = this;
    ctx.out = dispatched;
    Txn::Mark m = txn->mark();
    const size_t leased = dispatched->size();
    try {
      dispatch_hook_.choose(ctx);
    } catch (const std::exception&) {
      txn->RollbackTo(m);
      dispatched->resize(leased);
    }
  }
  txn_ = nullptr;
  if (sink->size() <= log::kMaxGroupBytes) return true;
  // The API's limits make this unreachable; refuse these ops rather than write a group that cannot be read.
  txn->RollbackTo(first);
  dispatched->resize(leased_before);
  for (size_t i = from; i < group.size(); ++i) {
    if (group[i]->status.ok()) group[i]->status = Status::InvalidArgument("change too large for one commit");
  }
  return false;
}

// A callback that throws loses only its own notice: the group is applied and goes on to be written, synced
// and answered (an exception escaping here would leave the group's turn open and every later caller waiting).
void StoreImpl::RunAppliedCallbacks(const std::vector<PendingOp*>& group, size_t from) {
  for (size_t i = from; i < group.size(); ++i) {
    PendingOp* op = group[i];
    if (!op->on_applied) continue;
    try {
      op->on_applied();
    } catch (...) {
    }
  }
}

Status StoreImpl::WriteSink(const RecordSink& sink) {
  const RecordSink::Placement& p = sink.placement();
  std::unique_ptr<WritableFile> created;
  uint64_t capacity = p.capacity;
  bool zeroed = false;
  if (p.new_segment) {
    // Make the segment first: a full disk fails here, before anything of the group is written.
    CMQ_RETURN_IF_ERROR(NewSegmentLocked(p.segment, p.capacity, &created, &capacity, &zeroed));
  }
  WritableFile* f = p.new_segment ? created.get() : tail_file_.get();
  // (The first group after opening sets the average: a store that starts with big groups gets no zeros.)
  const uint64_t avg = group_bytes_avg_.load(std::memory_order_relaxed);
  group_bytes_avg_.store(avg == 0 ? sink.size() : avg - avg / 8 + sink.size() / 8, std::memory_order_relaxed);
  uint64_t written_to = !p.new_segment ? tail_written_to_ : zeroed ? capacity : log::kSegmentHeaderSize;
  const uint64_t end = p.offset + sink.size();
  Status s = f->WriteAt(p.offset, sink.bytes());
  if (s.ok()) ZeroAheadLocked(f, end, p.new_segment ? capacity : tail_capacity_, &written_to);
  if (s.ok()) s = f->Sync();
  // Space was reserved when the segment was made, so any failure here leaves the log in an unknown state.
  if (!s.ok()) return s.IsNoSpace() ? Status::IOError(s.message()) : s;
  {
    std::lock_guard<std::mutex> l(files_mu_);
    segment_used_[p.segment] = end;
  }
  if (p.new_segment) {
    // Seal the old tail: give back its unused preallocated space.
    if (tail_offset_ >= log::kSegmentHeaderSize) tail_file_->Truncate(tail_offset_);
    tail_file_->Close();
    tail_file_ = std::move(created);
    tail_segment_ = p.segment;
    tail_capacity_ = capacity;
  }
  tail_offset_ = end;
  tail_written_to_ = std::max(written_to, end);
  return Status::OK();
}

void StoreImpl::ZeroAheadLocked(WritableFile* f, uint64_t end, uint64_t capacity, uint64_t* written_to) {
  if (*written_to >= end + kZeroAheadLow || *written_to >= capacity) return;
  // Big groups: the zeros cost more than they save.
  if (group_bytes_avg_.load(std::memory_order_relaxed) >= kZeroAheadMaxGroup) return;
  static const std::string kZeros(kZeroAheadChunk, '\0');
  const uint64_t from = std::max(*written_to, end);
  const uint64_t to = std::min(capacity, end + kZeroAheadChunk);
  if (to <= from) return;
  // Zeros over zeros (or reserved space that reads as zeros): a write that fails, even part way, changes no
  // byte anyone reads, so it costs the group nothing; this segment just gets no more of them.
  *written_to = f->WriteAt(from, std::string_view(kZeros.data(), static_cast<size_t>(to - from))).ok() ? to : capacity;
}

// ---------------------------------------------------------------------------------------------------------
// Reading records

std::shared_ptr<RandomAccessFile> StoreImpl::SegmentFile(uint32_t segment, Status* s) {
  std::lock_guard<std::mutex> l(files_mu_);
  auto it = files_.find(segment);
  if (it != files_.end()) return it->second;
  std::unique_ptr<RandomAccessFile> f;
  *s = env_->NewRandomAccessFile(JoinPath(dir_, log::SegmentFileName(segment)), &f);
  if (!s->ok()) return nullptr;
  std::shared_ptr<RandomAccessFile> shared(std::move(f));
  files_[segment] = shared;
  return shared;
}

// A segment a job points into could not be opened: that is damage to the store, not a missing job.
Status StoreImpl::MissingSegment(const log::RecordLoc& loc, const Status& s) {
  if (!s.IsNotFound()) return s;  // an I/O error stays an I/O error
  return Status::Corruption("log segment " + log::SegmentFileName(loc.segment) + " is missing: " + s.message());
}

StatusDoc StoreImpl::LoadStatusOrRebuildLocked(const JobMeta& m) {
  StatusDoc d;
  if (LoadStatusLocked(m, &d).ok()) return d;
  d = StatusDoc();  // the record is damaged: carry on from what the index knows (its history is lost)
  d.state = m.state;
  d.attempts = m.attempts;
  d.updated_ms = m.updated_ms;
  return d;
}

bool StoreImpl::FindInflightLocked(const log::RecordLoc& loc, std::string_view* framed) const {
  for (const RecordSink* sink : inflight_) {
    if (sink->Find(loc, framed)) return true;
  }
  return false;
}

Status StoreImpl::ReadPayloadLocked(const log::RecordLoc& loc, log::RecordType want, std::string* payload) {
  log::RecordType type;
  std::string_view framed;
  if (FindInflightLocked(loc, &framed)) {
    std::string_view p;
    CMQ_RETURN_IF_ERROR(log::ParseFramedRecord(framed, &type, &p));
    payload->assign(p.data(), p.size());
  } else {
    Status s;
    auto file = SegmentFile(loc.segment, &s);
    if (!file) return MissingSegment(loc, s);
    CMQ_RETURN_IF_ERROR(log::ReadRecord(*file, loc, &type, payload));
  }
  if (type != want) return Status::Corruption("record at " + log::SegmentFileName(loc.segment) + " offset " +
                                              std::to_string(loc.offset) + " has an unexpected type");
  return Status::OK();
}

Status StoreImpl::LoadStatusLocked(const JobMeta& m, StatusDoc* doc) {
  if (!m.status_loc.valid()) {
    *doc = StatusDoc();
    doc->state = m.state;
    doc->attempts = m.attempts;
    doc->updated_ms = m.updated_ms;
    return Status::OK();
  }
  std::string payload;
  CMQ_RETURN_IF_ERROR(ReadPayloadLocked(m.status_loc, log::RecordType::kStatus, &payload));
  records::StatusView v;
  CMQ_RETURN_IF_ERROR(records::DecodeStatus(payload, &v));
  *doc = StatusDoc::FromView(v);
  return Status::OK();
}

Status StoreImpl::CaptureLocked(const JobMeta& m, PendingRead* r) {
  r->meta = m;
  if (const RunInfo* run = table_.Run(m.id)) r->run = *run;
  auto capture = [&](const log::RecordLoc& loc, std::string* framed, std::shared_ptr<RandomAccessFile>* file) {
    if (!loc.valid()) return Status::OK();
    std::string_view v;
    if (FindInflightLocked(loc, &v)) {
      framed->assign(v.data(), v.size());
      return Status::OK();
    }
    Status s;
    *file = SegmentFile(loc.segment, &s);
    return *file ? Status::OK() : MissingSegment(loc, s);
  };
  CMQ_RETURN_IF_ERROR(capture(m.job_loc, &r->job_framed, &r->job_file));
  return capture(m.status_loc, &r->status_framed, &r->status_file);
}

Status StoreImpl::Materialize(PendingRead& r, bool with_prompt, Job* job) {
  auto payload_of = [](const log::RecordLoc& loc, const std::string& framed, const std::shared_ptr<RandomAccessFile>& f,
                       log::RecordType want, std::string* out) {
    log::RecordType type;
    if (!framed.empty()) {
      std::string_view p;
      CMQ_RETURN_IF_ERROR(log::ParseFramedRecord(framed, &type, &p));
      out->assign(p.data(), p.size());
    } else {
      CMQ_RETURN_IF_ERROR(log::ReadRecord(*f, loc, &type, out));
    }
    if (type != want) return Status::Corruption("record has an unexpected type");
    return Status::OK();
  };
  const JobMeta& m = r.meta;
  std::string job_payload;
  CMQ_RETURN_IF_ERROR(payload_of(m.job_loc, r.job_framed, r.job_file, log::RecordType::kJob, &job_payload)
                          .WithContext("job " + FormatJobId(m.id)));
  records::JobView jv;
  CMQ_RETURN_IF_ERROR(records::DecodeJob(job_payload, &jv));
  FillJob(m, jv, job);
  if (with_prompt) CMQ_RETURN_IF_ERROR(UnpackTexts(jv, &job->prompt, &job->workflow));
  if (m.status_loc.valid()) {
    std::string sp;
    CMQ_RETURN_IF_ERROR(payload_of(m.status_loc, r.status_framed, r.status_file, log::RecordType::kStatus, &sp)
                            .WithContext("status of job " + FormatJobId(m.id)));
    records::StatusView sv;
    CMQ_RETURN_IF_ERROR(records::DecodeStatus(sp, &sv));
    job->started_ms = sv.started_ms;
    job->finished_ms = sv.finished_ms;
    job->worker_id = sv.worker_id;
    job->outputs = sv.outputs;
    job->artifacts = sv.artifacts;
    job->error = sv.error;
    job->history = sv.history;
  }
  if (r.run) {
    job->lease_token = tokens_.External(r.run->token);
    job->lease_expires_ms = r.run->expires_ms;
    job->worker_id = r.run->worker_id;
    job->started_ms = r.run->started_ms;
    job->progress = r.run->progress;
  }
  return Status::OK();
}

Status StoreImpl::UnpackTexts(const records::JobView& jv, std::string* prompt, std::string* workflow) {
  // Bounded by the largest limit a store can have, not this open's max_prompt_bytes: a store reopened with a
  // lower limit still reads the jobs it accepted before.
  Status s = records::UnpackText(jv.prompt, records::kMaxTextBytes, prompt);
  if (s.ok()) s = records::UnpackText(jv.workflow, records::kMaxTextBytes, workflow);
  return s.ok() ? s : s.WithContext("job " + FormatJobId(jv.id));
}

void StoreImpl::FillJob(const JobMeta& m, const records::JobView& jv, Job* job) {
  *job = Job();
  job->id = m.id;
  job->state = m.state;
  job->priority = m.priority;
  job->attempts = m.attempts;
  job->max_attempts = m.max_attempts;
  job->updated_ms = m.updated_ms;
  job->timeout_ms = jv.timeout_ms;
  job->prompt_id = jv.prompt_id;
  job->create_time_ms = jv.create_time_ms;
  job->enqueued_ms = JobIdMillis(m.id);
  job->batch_id = jv.batch_id;
  job->owner = jv.owner;
}

Status StoreImpl::FindByPromptIdLocked(const std::string& prompt_id, uint64_t hash, uint64_t* id) {
  *id = 0;
  std::vector<uint64_t> candidates;
  table_.FindByPromptHash(hash, &candidates);
  for (uint64_t c : candidates) {
    const JobMeta* m = table_.Find(c);
    if (m == nullptr) continue;
    std::string payload;
    CMQ_RETURN_IF_ERROR(ReadPayloadLocked(m->job_loc, log::RecordType::kJob, &payload));
    records::JobView jv;
    CMQ_RETURN_IF_ERROR(records::DecodeJob(payload, &jv));
    if (jv.prompt_id == prompt_id) {
      *id = c;
      return Status::OK();
    }
  }
  return Status::OK();
}

Status StoreImpl::Get(uint64_t id, bool with_prompt, Job* job) {
  if (closed_.load()) return Status::IOError("store " + dir_ + " is closed");
  PendingRead r;
  {
    std::shared_lock<std::shared_mutex> st(state_mu_);
    const JobMeta* m = table_.Find(id);
    if (m == nullptr) return Status::NotFound("no job " + FormatJobId(id));
    CMQ_RETURN_IF_ERROR(CaptureLocked(*m, &r));
  }
  return Materialize(r, with_prompt, job);
}

Status StoreImpl::GetByPromptId(const std::string& prompt_id, bool with_prompt, Job* job) {
  if (closed_.load()) return Status::IOError("store " + dir_ + " is closed");
  PendingRead r;
  {
    std::shared_lock<std::shared_mutex> st(state_mu_);
    uint64_t id = 0;
    CMQ_RETURN_IF_ERROR(FindByPromptIdLocked(prompt_id, Hash64(prompt_id), &id));
    const JobMeta* m = id == 0 ? nullptr : table_.Find(id);
    if (m == nullptr) return Status::NotFound("no job with prompt_id '" + prompt_id + "'");
    CMQ_RETURN_IF_ERROR(CaptureLocked(*m, &r));
  }
  return Materialize(r, with_prompt, job);
}

Status StoreImpl::List(const ListQuery& q, ListPage* page) {
  if (closed_.load()) return Status::IOError("store " + dir_ + " is closed");
  if (q.limit < 1 || q.limit > 1000) return Status::InvalidArgument("limit must be between 1 and 1000");
  if (q.state_mask >= (1u << kNumJobStates)) return Status::InvalidArgument("state filter names an unknown state");
  if (q.since_ms < 0 || q.until_ms < 0) return Status::InvalidArgument("time bounds must not be negative");
  page->jobs.clear();
  page->next_cursor = 0;
  std::vector<PendingRead> reads;
  bool more = false;
  {
    std::shared_lock<std::shared_mutex> st(state_mu_);
    uint32_t batch = 0;
    if (!q.batch_id.empty() && !table_.FindBatch(q.batch_id, &batch)) return Status::OK();
    const uint64_t lo = static_cast<uint64_t>(q.since_ms) << 16;
    const uint64_t hi = static_cast<uint64_t>(q.until_ms) << 16;
    Status s;
    table_.Scan(q.cursor, q.newest_first, lo, hi, [&](const JobMeta& m) {
      if (q.state_mask != 0 && (q.state_mask & (1u << static_cast<int>(m.state))) == 0) return true;
      if (batch != 0 && m.batch != batch) return true;
      if (reads.size() == q.limit) {
        more = true;
        return false;
      }
      reads.emplace_back();
      s = CaptureLocked(m, &reads.back());
      return s.ok();
    });
    CMQ_RETURN_IF_ERROR(s);
  }
  page->jobs.resize(reads.size());
  for (size_t i = 0; i < reads.size(); ++i) {
    CMQ_RETURN_IF_ERROR(Materialize(reads[i], q.with_prompt, &page->jobs[i]));
  }
  if (more) page->next_cursor = reads.back().meta.id;
  return Status::OK();
}

Status StoreImpl::Stats(StoreStats* out) {
  if (closed_.load()) return Status::IOError("store " + dir_ + " is closed");
  *out = StoreStats();
  const int64_t now = NowMs();
  {
    std::shared_lock<std::shared_mutex> st(state_mu_);
    for (int i = 0; i < kNumJobStates; ++i) out->counts[i] = table_.count(static_cast<JobState>(i));
    out->total = table_.size();
    uint64_t oldest = table_.oldest_pending_id();
    if (oldest != 0) out->oldest_pending_age_ms = std::max<int64_t>(0, now - JobIdMillis(oldest));
    const int64_t sec = now / 1000;
    for (int64_t s = sec - 3599; s <= sec; ++s) {
      if (s > finished_ring_second_ || s <= finished_ring_second_ - 3600) continue;
      uint32_t n = finished_per_second_[static_cast<size_t>(s % 3600)];
      out->finished_last_hour += n;
      if (s > sec - 60) out->finished_last_minute += n;
    }
    out->paused = paused_;
    out->live_bytes = table_.total_live_bytes();
  }
  {
    std::lock_guard<std::mutex> l(files_mu_);
    for (const auto& [seg, used] : segment_used_) out->log_bytes += used;
    out->segments = segment_used_.size();
  }
  out->checkpoint_segment = checkpoint_segment_.load();
  std::lock_guard<std::mutex> l(health_mu_);
  out->background_error = last_background_error_;
  return Status::OK();
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
  out->prompt_id = in.prompt_id.empty() ? NewUuid() : in.prompt_id;
  out->prompt_id_hash = Hash64(out->prompt_id);
  if (out->prompt_id_hash == 0) out->prompt_id_hash = 1;
  out->priority = in.priority;
  out->max_attempts = static_cast<uint16_t>(in.max_attempts);
  out->batch_id = in.batch_id;
  records::JobView v;
  v.priority = in.priority;
  v.max_attempts = out->max_attempts;
  v.timeout_ms = in.timeout_ms;
  v.create_time_ms = in.create_time_ms != 0 ? in.create_time_ms : now_ms;
  v.prompt_id = out->prompt_id;
  v.batch_id = in.batch_id;
  v.owner = in.owner;
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
    const uint64_t id = NextId(txn_->now_ms());
    records::PatchJobId(&pj.payload, id);
    JobMeta m;
    m.id = id;
    m.prompt_id_hash = pj.prompt_id_hash;
    m.job_loc = txn_->Append(log::RecordType::kJob, pj.payload);
    m.updated_ms = txn_->now_ms();
    m.priority = pj.priority;
    m.batch = txn_->InternBatch(pj.batch_id);
    m.max_attempts = pj.max_attempts;
    m.state = JobState::kPending;
    txn_->Insert(m);
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

void StoreImpl::EndRunLocked(const JobMeta& before, const RunInfo& run, StatusDoc d, JobState to,
                             const char* outcome, const std::string& error_json, const std::string& reason) {
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

Status StoreImpl::ApplyTake(const TakeOptions& o, std::unique_ptr<Lease>* lease, bool* early) {
  lease->reset();
  if (paused_ && !o.ignore_pause) return Status::OK();
  std::vector<uint64_t> unreadable;
  uint64_t chosen = 0;
  JobMeta m;
  std::string job_payload, prompt, workflow;
  uint64_t loaded = 0;    // the job whose record job_payload holds (the filter's loader read it)
  uint64_t unpacked = 0;  // the job whose prompt `prompt` holds (the loader unpacked it)
  records::JobView jv;
  for (;;) {
    chosen = 0;
    size_t scanned = 0;
    table_.ForEachPending([&](uint64_t id) {
      if (o.max_scan != 0 && scanned++ >= o.max_scan) return false;
      if (std::find(unreadable.begin(), unreadable.end(), id) != unreadable.end()) return true;
      if (o.filter) {
        const PromptLoader load = [&](std::string* out) {
          loaded = unpacked = 0;
          CMQ_RETURN_IF_ERROR(ReadPayloadLocked(table_.Find(id)->job_loc, log::RecordType::kJob, &job_payload));
          loaded = id;
          records::JobView v;
          CMQ_RETURN_IF_ERROR(records::DecodeJob(job_payload, &v));
          CMQ_RETURN_IF_ERROR(
              records::UnpackText(v.prompt, records::kMaxTextBytes, &prompt).WithContext("job " + FormatJobId(id)));
          unpacked = id;
          *out = prompt;  // kept: if this job is chosen, its prompt is not unpacked again
          return Status::OK();
        };
        if (!o.filter(id, load)) return true;
      }
      chosen = id;
      return false;
    });
    if (chosen == 0) return Status::OK();
    m = *table_.Find(chosen);
    Status rs = loaded == chosen ? Status::OK() : ReadPayloadLocked(m.job_loc, log::RecordType::kJob, &job_payload);
    if (rs.ok()) rs = records::DecodeJob(job_payload, &jv);
    if (rs.ok() && unpacked == chosen) {
      rs = records::UnpackText(jv.workflow, records::kMaxTextBytes, &workflow).WithContext("job " + FormatJobId(chosen));
    } else if (rs.ok()) {
      rs = UnpackTexts(jv, &prompt, &workflow);
    }
    if (rs.ok()) break;
    // A job whose record cannot be read can never run: fail it, with the reason, instead of letting it
    // block every later take.
    unreadable.push_back(chosen);
    StatusDoc bad = LoadStatusOrRebuildLocked(m);
    bad.state = JobState::kFailed;
    bad.finished_ms = bad.updated_ms = txn_->now_ms();
    bad.error = ErrorJsonOf("corruption", "the job's record is damaged and cannot be run: " + rs.ToString());
    WriteStatus(m, bad);
    txn_->JobChanged(chosen, JobState::kPending, JobState::kFailed, "damaged");
  }
  StatusDoc d = LoadStatusOrRebuildLocked(m);
  const int64_t now = txn_->now_ms();
  const int64_t lease_ms = o.lease_ms > 0 ? o.lease_ms : options_.default_lease_ms;
  d.state = JobState::kRunning;
  d.attempts = static_cast<uint16_t>(m.attempts + 1);
  d.token = next_token_++;
  d.lease_expires_ms = now + lease_ms;
  const int64_t run_limit_ms = jv.timeout_ms > 0 ? jv.timeout_ms : std::max<int64_t>(0, o.default_timeout_ms);
  d.deadline_ms = run_limit_ms > 0 ? now + run_limit_ms : 0;
  d.started_ms = now;
  d.finished_ms = 0;
  d.updated_ms = now;
  d.worker_id = o.worker_id;
  d.outputs.clear();
  d.artifacts.clear();
  d.error.clear();
  WriteStatus(m, d);
  RunInfo run;
  run.token = d.token;
  run.expires_ms = d.lease_expires_ms;
  run.deadline_ms = d.deadline_ms;
  run.started_ms = now;
  run.worker_id = o.worker_id;
  txn_->SetRun(chosen, run);
  txn_->JobChanged(chosen, JobState::kPending, JobState::kRunning, "leased", o.worker_id);

  auto l = std::make_unique<Lease>();
  l->job_id = chosen;
  l->token = tokens_.External(d.token);
  l->attempt = d.attempts;
  l->expires_ms = d.lease_expires_ms;
  l->deadline_ms = d.deadline_ms;
  FillJob(*table_.Find(chosen), jv, &l->job);  // the index now says running, attempt counted
  l->job.prompt = std::move(prompt);
  l->job.workflow = std::move(workflow);
  l->job.started_ms = now;
  l->job.worker_id = o.worker_id;
  l->job.lease_token = l->token;
  l->job.lease_expires_ms = d.lease_expires_ms;
  l->job.history = d.history;
  if (early != nullptr) *early = d.token < token_reserve_;
  *lease = std::move(l);
  return Status::OK();
}

Status StoreImpl::Take(const TakeOptions& o, std::unique_ptr<Lease>* lease) {
  lease->reset();
  StoreBatch b;
  Status s;
  b.Take(o, lease, &s);
  Commit(&b);
  return s;
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

bool StoreImpl::PrepareItem(StoreBatch::Item& item, PendingOp* op) {
  Status s;
  if (auto* take = std::get_if<StoreBatch::TakeOp>(&item.op)) {
    if (take->options.worker_id.empty()) s = Status::InvalidArgument("worker_id is required");
    if (s.ok()) s = CheckText(take->options.worker_id, "worker_id", kMaxIdBytes);
    if (s.ok() && take->options.lease_ms < 0) s = Status::InvalidArgument("lease must not be negative");
    if (s.ok()) {
      take->lease->reset();
      op->apply = [this, take] { return ApplyTake(take->options, take->lease, take->early); };
      op->bytes_hint = 256;
      return true;
    }
  } else if (auto* done = std::get_if<StoreBatch::CompleteOp>(&item.op)) {
    std::string artifacts_json;
    if (done->outputs_json.size() > kMaxOutputsBytes) s = Status::InvalidArgument("outputs are too large (at most 64 MiB)");
    if (s.ok() && !done->outputs_json.empty()) s = ValidateJsonObject(done->outputs_json, "outputs");
    if (s.ok()) s = ArtifactsToJson(done->artifacts, &artifacts_json);
    if (s.ok() && artifacts_json.size() > kMaxArtifactsBytes) s = Status::InvalidArgument("artifact list is too large");
    if (s.ok()) {
      op->bytes_hint = done->outputs_json.size() + artifacts_json.size() + 256;
      op->apply = [this, done, aj = std::move(artifacts_json)] {
        return ApplyComplete(done->id, done->token, done->outputs_json, aj);
      };
      return true;
    }
  } else if (auto* fail = std::get_if<StoreBatch::FailOp>(&item.op)) {
    std::string error_json;
    s = ErrorToJson(fail->error, &error_json);
    if (s.ok()) {
      op->bytes_hint = error_json.size() + 256;
      op->apply = [this, fail, ej = std::move(error_json)] { return ApplyFail(fail->id, fail->token, ej, fail->retryable); };
      return true;
    }
  } else if (auto* release = std::get_if<StoreBatch::ReleaseOp>(&item.op)) {
    s = CheckText(release->reason, "reason", 1024);
    if (s.ok()) {
      op->bytes_hint = 256;
      op->apply = [this, release] {
        return ApplyRelease(release->id, release->token, release->reason, release->count_attempt);
      };
      return true;
    }
  }
  *item.status = s;
  return false;
}

Status StoreImpl::Commit(StoreBatch* batch) {
  auto& items = batch->items();
  Status usable = Usable();
  if (!usable.ok()) {
    for (auto& it : items) *it.status = usable;
    return usable;
  }
  std::vector<PendingOp> ops(items.size());
  std::vector<PendingOp*> queued;
  std::vector<size_t> index;
  for (size_t i = 0; i < items.size(); ++i) {
    if (PrepareItem(items[i], &ops[i])) {
      queued.push_back(&ops[i]);
      index.push_back(i);
    }
  }
  if (queued.empty()) return Status::OK();
  queued.back()->on_applied = batch->on_applied();  // ops apply in queue order: the last one closes the batch
  committer_.CommitMany(queued);
  for (size_t k = 0; k < queued.size(); ++k) *items[index[k]].status = queued[k]->status;
  Status after = Usable();
  return after;
}

Status StoreImpl::Complete(uint64_t id, uint64_t token, const std::string& outputs_json,
                           const std::vector<Artifact>& artifacts) {
  StoreBatch b;
  Status s;
  b.Complete(id, token, outputs_json, artifacts, &s);
  Commit(&b);
  return s;
}

Status StoreImpl::Fail(uint64_t id, uint64_t token, const JobError& error, bool retryable) {
  StoreBatch b;
  Status s;
  b.Fail(id, token, error, retryable, &s);
  Commit(&b);
  return s;
}

Status StoreImpl::Cancel(uint64_t id, const std::string& reason) {
  CMQ_RETURN_IF_ERROR(CheckText(reason, "reason", 1024));
  return Run([&] { return CancelLocked(id, reason); }, 256);
}

Status StoreImpl::CancelBatch(const std::string& batch_id, const std::string& reason, std::vector<uint64_t>* cancelled) {
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

Status StoreImpl::Retry(uint64_t id) {
  return Run(
      [&] {
        const JobMeta* m = table_.Find(id);
        if (m == nullptr) return Status::NotFound("no job " + FormatJobId(id));
        if (m->state != JobState::kFailed && m->state != JobState::kCancelled) {
          return Status::Conflict("job " + FormatJobId(id) + " is " + JobStateName(m->state) +
                                  "; only failed or cancelled jobs can be retried");
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

void StoreImpl::SetDispatchHook(DispatchHook hook) {
  std::lock_guard<std::mutex> commit(commit_mu_);
  order_.WaitIdle();  // no group is using the old hook after this
  dispatch_hook_ = std::move(hook);
}

}  // namespace comfymq
