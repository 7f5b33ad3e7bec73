// StoreImpl's takes: which pending job a take gets (in dispatch order, through the caller's filter, with what the
// store remembers per take class: TakeMemo) and its lease.
#include <algorithm>

#include "store/store_impl.h"

namespace comfymq {

uint64_t StoreImpl::WalkForTakeLocked(const TakeOptions& o, const JobCheck& accepts, const JobCheck& skip) {
  uint64_t chosen = 0;
  size_t scanned = 0;
  table_.ForEachPending(
      [&](uint64_t id) {
        if (skip && skip(id)) return true;
        if (o.max_scan != 0 && scanned++ >= o.max_scan) return false;  // (owners at their running limit: not offered)
        if (!accepts(id)) return true;
        chosen = id;
        return false;
      },
      /*with_limits=*/true);
  return chosen;
}

uint64_t StoreImpl::ChooseForClassLocked(const TakeOptions& o, const JobCheck& could_run, const JobCheck& accepts) {
  ClassMemo& c = take_memo_.For(o.take_class);
  const ArrivalLog& arrivals = table_.arrivals();
  if (c.dense) {
    const uint64_t chosen = WalkForTakeLocked(o, accepts);
    if (chosen == 0) {  // nothing for it now: what it can run is learnt again, from the start
      c.dense = false;
      c.through = 0;
    }
    return chosen;
  }
  // What arrived since the class last looked: each job is looked at once per class (at most max_scan of them a take).
  bool complete = true, added = false;
  size_t looked = 0;
  const uint64_t last = arrivals.last();
  arrivals.ForEachAfter(c.through, [&](uint64_t seq, uint64_t id) {
    if (o.max_scan != 0 && looked >= o.max_scan) {
      complete = false;
      return false;
    }
    ++looked;
    if (could_run(id)) {
      c.runnable.push_back(id);
      added = true;
    }
    c.through = seq;
    return true;
  });
  if (complete) c.through = last;
  if (added) {  // (a job looked at again after it came back is listed once)
    std::sort(c.runnable.begin(), c.runnable.end());
    c.runnable.erase(std::unique(c.runnable.begin(), c.runnable.end()), c.runnable.end());
  }
  c.runnable.erase(std::remove_if(c.runnable.begin(), c.runnable.end(),
                                  [&](uint64_t id) { return arrivals.SeqOf(id) == 0; }),  // no longer ready
                   c.runnable.end());
  if (c.runnable.size() > TakeMemo::kMaxRunnable) {
    c.runnable.clear();
    c.runnable.shrink_to_fit();
    c.dense = true;
    return WalkForTakeLocked(o, accepts);
  }
  const auto listed = [&](uint64_t id) { return std::binary_search(c.runnable.begin(), c.runnable.end(), id); };
  if (!complete) {  // some arrivals are not looked at yet: the walk passes over what the class is known not to run
    const uint64_t through = c.through;
    return WalkForTakeLocked(o, accepts, [&](uint64_t id) { return arrivals.SeqOf(id) <= through && !listed(id); });
  }
  if (c.runnable.empty()) return 0;
  if (c.runnable.size() > kChooseByTurnMax) {
    return WalkForTakeLocked(o, accepts, [&](uint64_t id) { return !listed(id); });
  }
  // Few jobs: taken in the order the walk would meet them (priority, then turn, then id), owners at their running
  // limit left out as the walk leaves them out.
  struct Candidate {
    int32_t priority = 0;
    uint64_t turn = 0, id = 0;
  };
  std::vector<Candidate> order;
  order.reserve(c.runnable.size());
  for (uint64_t id : c.runnable) {
    const JobMeta* m = table_.Find(id);
    Candidate k;
    k.id = id;
    if (m == nullptr || table_.AtRunningLimit(m->owner) || !table_.DispatchTurn(id, &k.priority, &k.turn)) continue;
    order.push_back(k);
  }
  std::sort(order.begin(), order.end(), [](const Candidate& a, const Candidate& b) {
    if (a.priority != b.priority) return a.priority > b.priority;
    return a.turn != b.turn ? a.turn < b.turn : a.id < b.id;
  });
  for (const Candidate& k : order) {
    if (accepts(k.id)) return k.id;
  }
  return 0;
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
  const auto load_for = [&](uint64_t id) -> PromptLoader {
    return [&, id](std::string* out) {
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
  };
  const JobCheck accepts = [&](uint64_t id) {
    if (std::find(unreadable.begin(), unreadable.end(), id) != unreadable.end()) return false;
    return !o.filter || o.filter(id, load_for(id));
  };
  const JobCheck could_run = [&](uint64_t id) { return o.could_run(id, load_for(id)); };
  const bool by_class = o.take_class != 0 && o.could_run;
  for (;;) {
    chosen = by_class ? ChooseForClassLocked(o, could_run, accepts) : WalkForTakeLocked(o, accepts);
    if (chosen == 0) return Status::OK();
    m = *table_.Find(chosen);
    Status rs = loaded == chosen ? Status::OK() : ReadPayloadLocked(m.job_loc, log::RecordType::kJob, &job_payload);
    if (rs.ok()) rs = records::DecodeJob(job_payload, &jv);
    if (rs.ok() && unpacked == chosen) {
      rs =
          records::UnpackText(jv.workflow, records::kMaxTextBytes, &workflow).WithContext("job " + FormatJobId(chosen));
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
  table_.Took(m);  // the owner's turn, while the job is still queued
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
  Commit(&b).IgnoreError();  // the item's status says the same
  return s;
}

}  // namespace comfymq
