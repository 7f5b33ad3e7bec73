// The broker's dispatch (see broker_impl.h): one commit pass per loop turn (results, failures, lease releases and
// the takes workers have credit for, one sync), what goes out when a pass is applied and when it is durable,
// dispatch on arrival as the store's hook, credits, the retry-elsewhere preference, and jobs' requirements.
#include "net/broker_impl.h"
#include "util/json_text.h"

namespace comfymq {
namespace net {

namespace {

JobError ParseError(const std::string& text) {
  JobError e;
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) {
    e.type = "error";
    e.message = text;
    return e;
  }
  auto str = [&](const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string(); };
  e.type = str("type");
  e.message = str("message");
  e.node_id = str("node_id");
  e.traceback = str("traceback");
  if (j.contains("details") && !j["details"].is_null()) e.details = Dump(j["details"]);
  return e;
}

}  // namespace

void BrokerImpl::StartPass() {
  if (!pipeline_->accepting()) return;  // the next pass starts once the newest one is applied
  auto pass = std::make_unique<BrokerPass>();
  StoreBatch& batch = pass->batch;
  // Results held back last time (a file still being written) come in again.
  for (PendingResult& r : waiting_results_) {
    Finishing(r.msg.job_id, +1);
    results_.push_back(std::move(r));
  }
  waiting_results_.clear();
  for (PendingResult& r : results_) {
    const proto::Message& m = r.msg;
    if (m.cmd == proto::Cmd::kResult) {
      // Files are published only for the run that owns the job now; a resend or a stale run publishes none.
      std::vector<Artifact> published;
      Job j;
      if (!m.files.empty() && store_->Get(m.job_id, false, &j).ok() && j.state == JobState::kRunning &&
          j.lease_token == m.token) {
        Status ps = transfers_->Publish(m.job_id, m.token, m.files, &published);
        if (ps.IsBusy()) {          // a file's last chunk is still being written: the result waits for it
          Finishing(m.job_id, -1);  // its lease is renewed meanwhile
          waiting_results_.push_back(std::move(r));
          continue;
        }
        if (ps.IsNotFound()) {  // some file is missing (a broker restart in between): send them again
          auto w = workers_.find(r.worker_id);
          if (w != workers_.end()) {
            proto::Message ack;
            ack.cmd = proto::Cmd::kAck;
            ack.job_id = m.job_id;
            ack.token = m.token;
            ack.ack = proto::AckKind::kResendFiles;
            Send(w->second, ack);
          }
          Finishing(m.job_id, -1);  // still running: its lease is kept alive again
          continue;
        }
        if (!ps.ok()) {
          Log("error", "publish", "could not store the files of job " + FormatJobId(m.job_id) + ": " + ps.ToString());
          JobError e;
          e.type = "host_error";
          e.message = "the host could not store the job's output files: " + ps.message();
          pass->results.push_back(BrokerPass::ResultItem{std::move(r), {}, Status()});
          batch.Fail(m.job_id, m.token, e, true, &pass->results.back().status);
          continue;
        }
      }
      pass->results.push_back(BrokerPass::ResultItem{std::move(r), std::move(published), Status()});
      BrokerPass::ResultItem& item = pass->results.back();
      batch.Complete(item.r.msg.job_id, item.r.msg.token, item.r.msg.json, item.published, &item.status);
    } else {
      pass->results.push_back(BrokerPass::ResultItem{std::move(r), {}, Status()});
      BrokerPass::ResultItem& item = pass->results.back();
      batch.Fail(item.r.msg.job_id, item.r.msg.token, ParseError(item.r.msg.json), item.r.msg.retryable, &item.status);
    }
  }
  results_.clear();
  pass->releases.swap(releases_);
  pass->release_status.resize(pass->releases.size());
  for (size_t i = 0; i < pass->releases.size(); ++i) {
    const PendingRelease& r = pass->releases[i];
    batch.ReleaseLease(r.job, r.token, r.reason, r.count_attempt, &pass->release_status[i]);
  }
  pass->failures.swap(failures_);
  pass->failure_status.resize(pass->failures.size());
  for (size_t i = 0; i < pass->failures.size(); ++i) {
    const PendingFailure& f = pass->failures[i];
    batch.Fail(f.job, f.token, f.error, /*retryable=*/false, &pass->failure_status[i]);
  }
  // With no job pending (or the queue paused) no take can find one: no credit is reserved for takes, so the hook
  // keeps every idle worker's credit for the next arrival, and an idle farm's passes cost no take per idle
  // worker. A job that becomes pending later (this pass's releases and retries included) is a store event that
  // makes the dispatch dirty again.
  StoreStats st;
  if (dispatch_dirty_ && pass->releases.empty() && store_->Stats(&st).ok() &&
      (st.paused || st.counts[static_cast<int>(JobState::kPending)] == 0)) {
    dispatch_dirty_ = false;
  }
  if (dispatch_dirty_) {
    dispatch_dirty_ = false;
    // Credits are reserved now (the hook may spend them meanwhile) and given back for takes that find nothing.
    std::vector<TakeOptions> takes;
    {
      std::lock_guard<std::mutex> l(credit_mu_);
      SpendCredit([&](const std::string& id, const Slot& slot) {
        takes.push_back(TakeFor(id, slot));
        pass->dispatches.push_back(BrokerPass::DispatchItem{id, slot.epoch, nullptr, Status()});
        return true;  // reserved: the take runs when the store applies the pass
      });
    }
    for (size_t i = 0; i < takes.size(); ++i) {
      BrokerPass::DispatchItem& d = pass->dispatches[i];
      batch.Take(std::move(takes[i]), &d.lease, &d.status, &d.early);
    }
  }
  if (batch.empty()) return;
  pipeline_->Submit(std::move(pass));
}

// The pass's batch is applied, its commit not yet durable: the leases the store marked early go out now, so a
// worker starts while the sync runs (and can send its result in time for the next pass).
void BrokerImpl::SendApplied(BrokerPass& pass, int64_t now) {
  for (BrokerPass::DispatchItem& d : pass.dispatches) {
    if (!d.lease || !d.early) continue;
    auto wit = workers_.find(d.worker);
    if (wit == workers_.end() || !wit->second.online || wit->second.epoch != d.epoch) continue;  // FinishPass
    d.sent = true;  // a failed send queues the lease's release itself
    if (SendJob(wit->second, *d.lease, now))
      Count([](BrokerCounters& c) {
        c.dispatched++;
        c.dispatched_early++;
      });
  }
}

void BrokerImpl::FinishPass(std::unique_ptr<net::CommitPass> done, int64_t now) {
  auto& pass = static_cast<BrokerPass&>(*done);
  if (!pass.status.ok()) Log("error", "store", "the store refused the broker's commit: " + pass.status.ToString());
  for (BrokerPass::ResultItem& item : pass.results) {
    const proto::Message& m = item.r.msg;
    Finishing(m.job_id, -1);
    auto wit = workers_.find(item.r.worker_id);
    WorkerState* w = wit == workers_.end() ? nullptr : &wit->second;
    proto::Message reply;
    reply.job_id = m.job_id;
    reply.token = m.token;
    if (item.status.ok() || item.status.IsAlreadyExists()) {
      reply.cmd = proto::Cmd::kAck;
      reply.ack = item.status.ok() ? proto::AckKind::kRecorded : proto::AckKind::kDuplicate;
      Count([&](BrokerCounters& c) { item.status.ok() ? c.results++ : c.duplicates++; });
      if (item.status.ok()) {
        transfers_->Settle(item.published);
        std::string who;
        if (speed_.Ended(m.job_id, m.cmd == proto::Cmd::kResult, now, &who)) {
          UpdateSlot(who, [&](Slot& s) {
            s.speed = speed_.Factor(who);
            s.speed_runs = speed_.Runs(who);
          });
        }
      } else {
        transfers_->Unpublish(item.published);
      }
    } else {
      reply.cmd = proto::Cmd::kNack;
      reply.reason = item.status.IsLeaseLost() || item.status.IsNotFound()
                         ? "result refused: " + item.status.message()
                         : "the host could not record the result: " + item.status.message();
      transfers_->Unpublish(item.published);
      Count([](BrokerCounters& c) { c.stale_results++; });
    }
    transfers_->AbortRun(m.job_id, m.token);
    if (w != nullptr) {
      auto held = w->held.find(m.job_id);
      if (held != w->held.end() && held->second == m.token) {
        Ended(*w, m.job_id, m.token);
        std::lock_guard<std::mutex> l(mu_);
        w->held.erase(held);
      }
      if (w->online) Send(*w, reply);
    }
  }
  Count([&](BrokerCounters& c) { c.leases_released += pass.releases.size(); });
  for (size_t i = 0; i < pass.failures.size(); ++i) {
    if (!pass.failure_status[i].ok()) {
      Log("warning", "dispatch",
          "could not fail job " + FormatJobId(pass.failures[i].job) + ": " + pass.failure_status[i].ToString());
    }
  }
  for (BrokerPass::DispatchItem& d : pass.dispatches) {
    if (d.sent) {
      if (!d.status.ok()) UnsendJob(d, "the host could not record the lease: " + d.status.message());
      continue;
    }
    if (!d.status.ok() || !d.lease) {
      ReturnCredit(d.worker, d.epoch);
      continue;
    }
    auto wit = workers_.find(d.worker);
    const Lease& l = *d.lease;
    if (wit == workers_.end() || !wit->second.online || wit->second.epoch != d.epoch) {
      ForgetRequirements(l.job_id);
      releases_.push_back(PendingRelease{l.job_id, l.token, "worker " + d.worker + " went away", false});
      continue;
    }
    if (SendJob(wit->second, l, now)) Count([](BrokerCounters& c) { c.dispatched++; });
  }
  if (!releases_.empty()) dispatch_dirty_ = true;
}

void BrokerImpl::Finishing(uint64_t job_id, int delta) {
  int& n = finishing_[job_id];
  n += delta;
  if (n <= 0) finishing_.erase(job_id);
}

// Sends what the dispatch hook leased on arrival.
void BrokerImpl::SendOutbox(int64_t now) {
  std::vector<std::unique_ptr<Lease>> leases;
  {
    std::lock_guard<std::mutex> l(outbox_mu_);
    if (outbox_.empty()) return;
    leases.swap(outbox_);
  }
  std::vector<uint64_t> epochs(leases.size());
  {
    std::lock_guard<std::mutex> l(credit_mu_);
    for (size_t i = 0; i < leases.size(); ++i) {
      auto it = hook_epoch_.find(leases[i]->job_id);
      if (it != hook_epoch_.end()) {
        epochs[i] = it->second;
        hook_epoch_.erase(it);
      }
    }
  }
  for (size_t i = 0; i < leases.size(); ++i) {
    const Lease& l = *leases[i];
    auto wit = workers_.find(l.job.worker_id);
    if (wit == workers_.end() || !wit->second.online || wit->second.epoch != epochs[i]) {
      ForgetRequirements(l.job_id);
      releases_.push_back(PendingRelease{l.job_id, l.token, "worker " + l.job.worker_id + " went away", false});
      dispatch_dirty_ = true;
      continue;
    }
    if (SendJob(wit->second, l, now))
      Count([](BrokerCounters& c) {
        c.dispatched++;
        c.dispatched_on_arrival++;
      });
  }
}

// Sends one leased job (its credit already spent). A job that cannot be sent goes back to the queue
// without counting an attempt.
bool BrokerImpl::SendJob(WorkerState& w, const Lease& l, int64_t now) {
  uint64_t shape = 0;  // (for the run's time: WorkerSpeed)
  {
    std::unique_lock<std::mutex> lk(req_mu_);
    auto it = reqs_.find(l.job_id);
    if (it != reqs_.end()) {
      shape = it->second->shape;
    } else {
      lk.unlock();
      Requirements req;
      if (ExtractRequirements(l.job.prompt, &req).ok()) shape = req.shape;
    }
  }
  ForgetRequirements(l.job_id);
  std::string prompt;
  std::vector<UpstreamFile> outputs;
  Status ready = SendablePrompt(l.job, &prompt, &outputs);
  if (!ready.ok() && !ready.IsInvalidArgument()) {
    // The store could not be read just now: the job goes back to the queue as if never taken.
    Log("warning", "dispatch",
        "job " + FormatJobId(l.job_id) + ": " + ready.ToString() + "; it goes back to the queue");
    releases_.push_back(PendingRelease{
        l.job_id, l.token, "could not read what job " + FormatJobId(l.job_id) + " takes as input: " + ready.message(),
        false});
    ReturnCredit(w.id, w.epoch);
    dispatch_dirty_ = true;
    return false;
  }
  if (!ready.ok()) {
    // The job cannot run anywhere (an output it takes is not there as named): it fails, and the worker's credit
    // goes to the next job.
    JobError e;
    e.type = "input_error";
    e.message = "the output this job takes as input cannot be found: " + ready.message();
    Log("warning", "dispatch", "job " + FormatJobId(l.job_id) + ": " + e.message);
    failures_.push_back(PendingFailure{l.job_id, l.token, std::move(e)});
    ReturnCredit(w.id, w.epoch);
    dispatch_dirty_ = true;
    return false;
  }
  {
    proto::Message job;
    job.cmd = proto::Cmd::kJob;
    job.job_id = l.job_id;
    job.token = l.token;
    job.attempt = static_cast<uint32_t>(l.attempt);
    job.timeout_ms = l.deadline_ms ? std::max<int64_t>(1, l.deadline_ms - now) : 0;
    if (!outputs.empty()) {
      // What this run may fetch, from the prompt it is sent with (read once here, not again at its first FETCH).
      Requirements req;
      std::map<std::string, std::string> granted;
      if (ExtractRequirements(prompt, &req).ok()) {
        for (const std::string& sha : req.inputs) granted.emplace(sha, "");
      }
      for (const UpstreamFile& f : outputs) granted[f.sha256] = artifacts_->root() + "/" + f.path;
      if (input_grants_.size() >= kMaxGrants) input_grants_.clear();
      input_grants_[{l.job_id, l.token}] = std::move(granted);
    }
    job.prompt_json = std::move(prompt);
    job.workflow_json = l.job.workflow;
    JsonObjectText extra;
    if (!l.job.batch_id.empty()) extra.Str("batch_id", l.job.batch_id);
    extra.Int("create_time", l.job.create_time_ms).Int("enqueued_at", l.job.enqueued_ms);
    extra.Int("max_attempts", l.job.max_attempts);
    if (!l.job.owner.empty()) extra.Str("owner", l.job.owner);
    extra.Int("priority", l.job.priority).Str("prompt_id", l.job.prompt_id);
    job.extra_json = extra.Done();
    {
      std::lock_guard<std::mutex> lk(mu_);
      w.held[l.job_id] = l.token;
    }
    const bool marked = SetTried(l.job_id, w.id, true);
    if (Send(w, job)) {
      AddAsking(w.id, -1);
      speed_.Started(l.job_id, w.id, shape, now);
      return true;
    }
    if (marked) SetTried(l.job_id, w.id, false);  // it never reached the worker
  }
  std::lock_guard<std::mutex> lk(mu_);
  w.held.erase(l.job_id);
  releases_.push_back(PendingRelease{l.job_id, l.token, "could not deliver the job to worker " + w.id, false});
  dispatch_dirty_ = true;
  return false;
}

// An early-sent job whose lease's commit failed: the job is not the worker's after all; it must stop (it
// answers CANCELLED, which frees its slot).
void BrokerImpl::UnsendJob(const BrokerPass::DispatchItem& d, const std::string& reason) {
  Count([](BrokerCounters& c) { c.early_undone++; });
  auto wit = workers_.find(d.worker);
  if (wit == workers_.end() || !wit->second.online || wit->second.epoch != d.epoch) return;  // it left anyway
  WorkerState& w = wit->second;
  auto held = w.held.find(d.lease->job_id);
  if (held == w.held.end() || held->second != d.lease->token) return;
  proto::Message cancel;
  cancel.cmd = proto::Cmd::kCancel;
  cancel.job_id = d.lease->job_id;
  cancel.token = d.lease->token;
  cancel.reason = reason;
  Send(w, cancel);
  transfers_->AbortRun(cancel.job_id, cancel.token);
  Ended(w, cancel.job_id, cancel.token);
  std::lock_guard<std::mutex> l(mu_);
  w.held.erase(held);
}

TakeOptions BrokerImpl::TakeFor(const std::string& worker_id, const Slot& slot) {
  TakeOptions o;
  o.worker_id = worker_id;
  o.lease_ms = lease_ms_;
  o.max_scan = opt_.max_scan;
  o.default_timeout_ms = opt_.default_run_timeout_ms;
  std::shared_ptr<const Capabilities> caps = slot.caps;
  o.filter = [this, caps, worker_id](uint64_t job, const PromptLoader& load) {
    auto req = RequirementsOf(job, &load);
    return req != nullptr && CanRun(*caps, *req) && !PreferOthers(worker_id, job, *req) &&
           !PreferHolder(worker_id, job, *req);
  };
  // The class's verdict depends on the capabilities and the prompt alone (the preferences are the filter's, asked
  // at each take). A prompt that cannot be read now is not ruled out: the filter is asked about it each time.
  o.take_class = slot.caps_class;
  o.could_run = [this, caps](uint64_t job, const PromptLoader& load) {
    auto req = RequirementsOf(job, &load);
    return req == nullptr || CanRun(*caps, *req);
  };
  return o;
}

// The dispatch hook's choice, inside an enqueuer's commit group with the store's lock held: every idle
// worker takes what it can run, highest priority first, as the loop's own dispatch would.
void BrokerImpl::ChooseOnArrival(DispatchContext& ctx) {
  std::lock_guard<std::mutex> l(credit_mu_);
  // A take of a class (the workers with the same capabilities) that was offered no pending job at all means no
  // later take of this walk of that class is offered one either (takes only remove jobs, and the store offers a
  // class only the jobs it can run): its other workers are skipped, so an arrival costs a take per job and per
  // class, not one per idle worker.
  std::set<uint64_t> nothing_for;
  SpendCredit([&](const std::string& id, const Slot& slot) {
    if (nothing_for.count(slot.caps_class) != 0) return false;
    bool offered = false;
    TakeOptions o = TakeFor(id, slot);
    o.filter = [&offered, filter = std::move(o.filter)](uint64_t job, const PromptLoader& load) {
      offered = true;
      return filter(job, load);
    };
    o.could_run = [&offered, could_run = std::move(o.could_run)](uint64_t job, const PromptLoader& load) {
      offered = true;
      return could_run(job, load);
    };
    const Lease* lease = ctx.Take(o);
    if (lease == nullptr) {  // nothing this worker can run: its credit stays
      if (!offered) nothing_for.insert(slot.caps_class);
      return false;
    }
    hook_epoch_[lease->job_id] = slot.epoch;
    return true;
  });
}

void BrokerImpl::ReturnCredit(const std::string& worker_id, uint64_t epoch) {
  std::lock_guard<std::mutex> l(credit_mu_);
  auto it = slots_.find(worker_id);
  if (it != slots_.end() && it->second.epoch == epoch) it->second.credit++;
}

void BrokerImpl::UpdateSlot(const std::string& worker_id, const std::function<void(Slot&)>& fn) {
  std::lock_guard<std::mutex> l(credit_mu_);
  auto it = slots_.find(worker_id);
  if (it != slots_.end()) fn(it->second);
}

bool BrokerImpl::PreferOthers(const std::string& worker_id, uint64_t job_id, const Requirements& req) {
  std::lock_guard<std::mutex> l(retry_mu_);
  auto tried = tried_.find(job_id);
  if (tried == tried_.end()) return false;
  const auto& who = tried->second;
  if (std::find(who.begin(), who.end(), worker_id) == who.end()) return false;
  for (const auto& [id, c] : candidates_) {
    if (id == worker_id || c.draining || c.asking <= 0 || std::find(who.begin(), who.end(), id) != who.end()) {
      continue;
    }
    if (CanRun(*c.caps, req)) return true;  // that one asks for work and has not run it: it takes it
  }
  return false;
}

bool BrokerImpl::PreferHolder(const std::string& worker_id, uint64_t job_id, const Requirements& req) {
  if (req.inputs.empty()) return false;
  auto keeps_all = [&](const Candidate& c) {
    if (c.inputs == nullptr) return false;
    for (const std::string& sha : req.inputs) {
      if (c.inputs->count(sha) == 0) return false;
    }
    return true;
  };
  std::lock_guard<std::mutex> l(retry_mu_);
  auto me = candidates_.find(worker_id);
  if (me != candidates_.end() && keeps_all(me->second)) return false;
  auto tried = tried_.find(job_id);
  auto ran_it = [&](const std::string& id) {  // a retry goes elsewhere first: such a holder is not waited for
    return tried != tried_.end() && std::find(tried->second.begin(), tried->second.end(), id) != tried->second.end();
  };
  for (const auto& [id, c] : candidates_) {
    if (id == worker_id || c.draining || c.asking <= 0 || !keeps_all(c) || ran_it(id)) continue;
    if (CanRun(*c.caps, req)) return true;  // that one keeps them, asks for work and can run it: it takes it
  }
  return false;
}

void BrokerImpl::SetCandidateInputs(const std::string& worker_id, std::vector<std::string> inputs) {
  auto held = std::make_shared<const std::set<std::string>>(inputs.begin(), inputs.end());
  std::lock_guard<std::mutex> l(retry_mu_);
  auto it = candidates_.find(worker_id);
  if (it != candidates_.end()) it->second.inputs = std::move(held);
}

bool BrokerImpl::SetTried(uint64_t job_id, const std::string& worker_id, bool tried) {
  std::lock_guard<std::mutex> l(retry_mu_);
  auto& who = tried_[job_id];
  auto it = std::find(who.begin(), who.end(), worker_id);
  bool changed = false;
  if (tried && it == who.end()) {
    who.push_back(worker_id);
    changed = true;
  }
  if (!tried && it != who.end()) {
    who.erase(it);
    changed = true;
  }
  if (who.empty()) tried_.erase(job_id);
  return changed;
}

void BrokerImpl::AddAsking(const std::string& worker_id, int delta) {
  std::lock_guard<std::mutex> l(retry_mu_);
  auto it = candidates_.find(worker_id);
  if (it != candidates_.end()) it->second.asking = std::max(0, it->second.asking + delta);
}

void BrokerImpl::SetCandidate(const WorkerState& w, bool new_connection) {
  std::lock_guard<std::mutex> l(retry_mu_);
  Candidate& c = candidates_[w.id];
  c.caps = w.caps;
  c.draining = w.draining;
  if (new_connection) {
    c.asking = 0;      // its credit starts over
    c.inputs.reset();  // and it says again what it keeps
  }
}

void BrokerImpl::RemoveCandidate(const std::string& worker_id) {
  std::lock_guard<std::mutex> l(retry_mu_);
  candidates_.erase(worker_id);
}

std::shared_ptr<const Requirements> BrokerImpl::RequirementsOf(uint64_t job_id, const PromptLoader* load) {
  {
    std::lock_guard<std::mutex> l(req_mu_);
    auto it = reqs_.find(job_id);
    if (it != reqs_.end()) return it->second;
  }
  std::string prompt;
  if (load != nullptr) {
    if (!(*load)(&prompt).ok()) return nullptr;
  } else {
    Job j;
    if (!store_->Get(job_id, true, &j).ok()) return nullptr;
    prompt = std::move(j.prompt);
  }
  auto req = std::make_shared<Requirements>();
  if (!ExtractRequirements(prompt, req.get()).ok()) return nullptr;
  std::lock_guard<std::mutex> l(req_mu_);
  if (reqs_.size() > 200000) reqs_.clear();  // bounded: recomputed on demand
  reqs_[job_id] = req;
  return req;
}

void BrokerImpl::ForgetRequirements(uint64_t job_id) {
  std::lock_guard<std::mutex> l(req_mu_);
  reqs_.erase(job_id);
}

}  // namespace net

}  // namespace comfymq
