// What others read of the broker (see broker_impl.h): the workers view, why a pending job waits, and the store's
// events turned into the broker's (and the runs the store ended stopped on their workers).
#include <cmath>

#include "net/broker_impl.h"
#include "util/json_text.h"

namespace comfymq {
namespace net {

Status BrokerImpl::Explain(uint64_t job_id, std::vector<std::string>* reasons) {
  reasons->clear();
  Job j;
  CMQ_RETURN_IF_ERROR(store_->Get(job_id, false, &j));
  if (j.state != JobState::kPending) return Status::OK();
  // A job that waits for others waits for them first (and its other reasons may change meanwhile).
  for (uint64_t dep : j.after) {
    Job d;
    Status s = store_->Get(dep, false, &d);
    if (s.ok() && d.state == JobState::kSucceeded) continue;
    reasons->push_back("waits for job " + FormatJobId(dep) +
                       (s.ok() ? std::string(" (") + JobStateName(d.state) + ") to succeed" : " (gone)"));
  }
  if (!reasons->empty()) return Status::OK();
  auto req = RequirementsOf(job_id, nullptr);
  if (req == nullptr) return Status::Corruption("cannot read the prompt of job " + FormatJobId(job_id));
  *reasons = ReasonsNoneCanRun(*req);
  return Status::OK();
}

Status BrokerImpl::ExplainPrompt(const std::string& prompt_json, std::vector<std::string>* reasons) {
  reasons->clear();
  Requirements req;
  CMQ_RETURN_IF_ERROR(ExtractRequirements(prompt_json, &req));
  *reasons = ReasonsNoneCanRun(req);
  return Status::OK();
}

// Empty when an online worker that is not draining can run req (the job waits its turn). Else every reason:
// none has joined, none is online, and per online worker what it lacks, or that it is draining.
std::vector<std::string> BrokerImpl::ReasonsNoneCanRun(const Requirements& req) {
  struct Seen {
    std::string name;
    bool draining;
    std::shared_ptr<const Capabilities> caps;
  };
  std::vector<Seen> online;
  std::vector<std::string> offline;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [id, w] : workers_) {
      std::string name = w.name == w.id ? w.id : w.name + " (" + w.id + ")";
      if (w.online)
        online.push_back({std::move(name), w.draining, w.caps});
      else
        offline.push_back(std::move(name));
    }
  }
  std::vector<std::string> why;
  if (online.empty()) {
    if (offline.empty()) {
      why.push_back("no worker has joined this host yet: start one (a ComfyUI with ComfyMQ in role worker or both)");
    } else {
      std::string names;
      for (size_t i = 0; i < offline.size() && i < 3; ++i) names += (i ? ", " : "") + offline[i];
      if (offline.size() > 3) names += " and " + std::to_string(offline.size() - 3) + " more";
      why.push_back("no worker is online (offline: " + names + ")");
    }
    return why;
  }
  for (const Seen& w : online) {
    auto miss = Mismatches(*w.caps, req);
    if (miss.empty() && !w.draining) return {};  // someone can run it: it waits its turn
    std::string line = "worker " + w.name + ": ";
    if (miss.empty()) {
      line += "draining (it takes no new jobs until it is undrained)";
    } else {
      for (size_t i = 0; i < miss.size(); ++i) line += (i ? "; " : "") + miss[i];
      if (w.draining) line += "; and it is draining";
    }
    why.push_back(std::move(line));
  }
  return why;
}

// Runs on the store's event thread: events go out to Python; what concerns workers goes to the loop.
void BrokerImpl::OnStoreEvents(const std::vector<StoreEvent>& events) {
  bool dispatch = false;
  std::vector<std::tuple<uint64_t, std::string, std::string>> stop_runs;  // job, worker, reason
  for (const StoreEvent& e : events) {
    // Written as text, not built as a document: one of these goes out for every state change.
    JsonObjectText j;
    switch (e.kind) {
      case StoreEvent::Kind::kJobChanged:
        j.Str("type", "job").Str("job_id", FormatJobId(e.job_id)).Str("state", JobStateName(e.to));
        j.Str("from", JobStateName(e.from)).Str("reason", e.reason);
        if (!e.worker_id.empty()) j.Str("worker", e.worker_id);
        // A job that can run; or a run that ended, which may bring its owner under a running limit.
        if (e.to == JobState::kPending || e.from == JobState::kRunning) dispatch = true;
        if (e.to != JobState::kPending) ForgetRequirements(e.job_id);
        if (IsFinished(e.to)) {
          std::lock_guard<std::mutex> l(retry_mu_);
          tried_.erase(e.job_id);
        }
        // A run ended by the store itself (a cancel, a timeout, an expired lease) must stop on its worker.
        if (e.from == JobState::kRunning && !e.worker_id.empty() &&
            (e.to == JobState::kCancelled || e.reason == "timeout" || e.reason == "lease expired")) {
          stop_runs.emplace_back(e.job_id, e.worker_id,
                                 e.to == JobState::kCancelled ? "cancelled: " + e.reason : e.reason);
        }
        break;
      case StoreEvent::Kind::kJobRemoved:
        j.Str("type", "job").Str("job_id", FormatJobId(e.job_id)).Bool("removed", true).Str("reason", e.reason);
        ForgetRequirements(e.job_id);
        {
          std::lock_guard<std::mutex> l(retry_mu_);
          tried_.erase(e.job_id);
        }
        break;
      case StoreEvent::Kind::kPausedChanged:
        j.Str("type", "queue").Bool("paused", e.reason == "paused");
        dispatch = true;
        break;
      case StoreEvent::Kind::kPoliciesChanged: dispatch = true; continue;  // nothing for the event stream
    }
    events_.Push(j.Done());
  }
  if (!dispatch && stop_runs.empty()) return;
  Post([this, dispatch, stop_runs] {
    if (dispatch) dispatch_dirty_ = true;
    for (const auto& [job, worker, reason] : stop_runs) {
      auto it = workers_.find(worker);
      if (it == workers_.end()) continue;
      WorkerState& w = it->second;
      auto held = w.held.find(job);
      if (held == w.held.end()) continue;
      proto::Message cancel;
      cancel.cmd = proto::Cmd::kCancel;
      cancel.job_id = job;
      cancel.token = held->second;
      cancel.reason = reason;
      if (w.online) Send(w, cancel);
      transfers_->AbortRun(job, held->second);
      Ended(w, job, held->second);
      std::lock_guard<std::mutex> l(mu_);
      w.held.erase(held);
    }
  });
}

int BrokerImpl::CreditOf(const WorkerState& w, double* speed, uint64_t* speed_runs) {
  std::lock_guard<std::mutex> l(credit_mu_);
  auto it = slots_.find(w.id);
  const bool here = w.online && it != slots_.end();
  *speed = here ? it->second.speed : 1.0;
  *speed_runs = here ? it->second.speed_runs : 0;
  return here ? it->second.credit : 0;
}

double BrokerImpl::SpeedNorm() {
  std::lock_guard<std::mutex> l(credit_mu_);
  double sum = 0;
  size_t n = 0;
  for (const auto& [id, slot] : slots_) {
    if (slot.speed_runs == 0) continue;
    sum += slot.speed;
    n++;
  }
  return n == 0 || sum <= 0 ? 1.0 : sum / static_cast<double>(n);
}

json BrokerImpl::WorkerJson(const WorkerState& w, double norm) {
  json running = json::array();
  for (const auto& [job, token] : w.held) running.push_back(FormatJobId(job));
  json info = json::parse(w.info_json.empty() ? "{}" : w.info_json, nullptr, false);
  double speed = 1.0;
  uint64_t speed_runs = 0;
  const int credit = CreditOf(w, &speed, &speed_runs);
  if (speed_runs != 0) speed /= norm < 0 ? SpeedNorm() : norm;
  json j = {
      {"id", w.id},
      {"name", w.name},
      {"online", w.online},
      {"draining", w.draining},
      {"capacity", w.capacity},
      {"credit", credit},
      {"speed", std::round(speed * 1000) / 1000},  // run time against the online workers' mean: 0.5 = twice as fast
      {"speed_runs", speed_runs},
      {"running", running},
      {"plugin_version", w.plugin_version},
      {"comfyui_version", w.comfyui_version},
      {"info", info.is_discarded() ? json::object() : info},
      {"connected_at", w.connected_ms},
      {"last_seen", w.last_seen_ms},
      {"node_classes", w.online ? w.caps->node_classes() : w.classes_seen},
      {"combo_inputs", w.online ? w.caps->combo_inputs() : w.inputs_seen},
      {"models", w.online ? w.caps->model_files() : w.models_seen},  // model files, not every choice
      {"combo_choices", w.online ? w.caps->combo_choices() : w.choices_seen},
      {"key", w.key.empty() ? json(nullptr) : json(w.key)}};
  if (!w.online) {
    j["left_at"] = w.left_ms;
    j["left_reason"] = w.left_reason;
  }
  return j;
}

std::string BrokerImpl::WorkersJson() {
  std::lock_guard<std::mutex> l(mu_);
  json arr = json::array();
  const double norm = SpeedNorm();
  for (const auto& [id, w] : workers_) arr.push_back(WorkerJson(w, norm));
  return Dump(arr);
}

}  // namespace net

}  // namespace comfymq
