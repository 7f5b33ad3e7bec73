// StoreImpl's group commit: concurrent callers' operations applied by one leader per group and made durable
// with one sync, the next group applied while the one before syncs; batches (StoreBatch) and the dispatch hook.
#include <algorithm>
#include <chrono>
#include <stdexcept>

#include "store/store_impl.h"
#include "util/json_checks.h"
#include "util/thread_priority.h"

namespace comfymq {

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
    order_.WaitTurn(seq).IgnoreError();  // the group fails anyway: it only keeps its place in the order
    order_.EndTurn(seq);
    return;
  }
  const int64_t now = NowMs();
  RecordSink sink;
  try {  // room for what groups lately held: late ops then seldom grow (and copy) it in the turn
    sink.Reserve(std::min<uint64_t>(2 * group_bytes_avg_.load(std::memory_order_relaxed), 64u << 20));
  } catch (const std::bad_alloc&) {  // only a hint
  }
  Txn txn(&table_, &docs_, &sink, &paused_, now);
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
  next_may_start();     // the next group applies while this one writes and syncs
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
  kick |= orphans_deferred_.exchange(false);  // more jobs to cancel than one commit took (SweepOrphans)
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
      if (op->status.ok()) op->status = CancelOrphansLocked(m.events);  // the jobs left waiting for nothing
    } catch (const std::exception& e) {  // e.g. bad_alloc, or a caller's JobFilter throwing
      op->status = Status::IOError(std::string("internal error while applying a change: ") + e.what());
    }
    if (!op->status.ok()) txn->RollbackTo(m);
  }
  bool made_pending = false;
  for (size_t i = events_before; i < txn->events().size(); ++i) {
    const StoreEvent& e = txn->events()[i];
    made_pending |= e.kind == StoreEvent::Kind::kJobChanged && e.to == JobState::kPending;
    // a job that succeeded may have made jobs waiting for it ready to run
    if (!made_pending && e.kind == StoreEvent::Kind::kJobChanged && e.to == JobState::kSucceeded &&
        !table_.waits().empty()) {
      table_.ForEachDependent(e.job_id, [&](uint64_t) {
        made_pending = true;
        return false;
      });
    }
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
      // a take may fail a job whose record is damaged: the jobs waiting for it are cancelled with it
      if (!CancelOrphansLocked(m.events).ok()) throw std::runtime_error("could not cancel orphans");
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
    } catch (...) {}
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
  if (s.ok()) {
    const auto t0 = std::chrono::steady_clock::now();
    s = f->Sync();
    const auto us =
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
    const size_t bucket = std::lower_bound(std::begin(kSyncBoundsMicros), std::end(kSyncBoundsMicros), us) -
                          std::begin(kSyncBoundsMicros);
    sync_counts_[bucket].fetch_add(1, std::memory_order_relaxed);
    sync_micros_.fetch_add(static_cast<uint64_t>(us), std::memory_order_relaxed);
  }
  // Space was reserved when the segment was made, so any failure here leaves the log in an unknown state.
  if (!s.ok()) return s.IsNoSpace() ? Status::IOError(s.message()) : s;
  {
    std::lock_guard<std::mutex> l(files_mu_);
    segment_used_[p.segment] = end;
  }
  if (p.new_segment) {
    // Seal the old tail: give back its unused preallocated space.
    if (tail_offset_ >= log::kSegmentHeaderSize) tail_file_->Truncate(tail_offset_).IgnoreError();
    tail_file_->Close().IgnoreError();
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
    if (done->outputs_json.size() > kMaxOutputsBytes)
      s = Status::InvalidArgument("outputs are too large (at most 64 MiB)");
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
      op->apply = [this, fail, ej = std::move(error_json)] {
        return ApplyFail(fail->id, fail->token, ej, fail->retryable);
      };
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

void StoreImpl::SetDispatchHook(DispatchHook hook) {
  std::lock_guard<std::mutex> commit(commit_mu_);
  order_.WaitIdle();  // no group is using the old hook after this
  dispatch_hook_ = std::move(hook);
}

}  // namespace comfymq
