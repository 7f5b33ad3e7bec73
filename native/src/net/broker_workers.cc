// The broker's workers (see broker_impl.h): who may say HELLO as whom, bindings of ids to CURVE keys, liveness and
// lease renewal, leaving, drain and capability refreshes, and the file chunks of results.
#include <sstream>

#include "net/broker_impl.h"

namespace comfymq {
namespace net {
namespace {

bool StartsPaused(const std::string& info_json) {
  if (info_json.find("start_paused") == std::string::npos) return false;  // (most HELLOs: no parse)
  const json info = json::parse(info_json, nullptr, false);
  if (!info.is_object()) return false;
  auto it = info.find("start_paused");
  return it != info.end() && it->is_boolean() && it->get<bool>();
}

}  // namespace

void BrokerImpl::HandleHello(const std::string& rid, const std::string& user_id, proto::Message& m, int64_t now) {
  // Every check first: a refused HELLO changes nothing.
  const std::string refusal = IdentityRefusal(rid, user_id, m, now);
  if (!refusal.empty()) {
    Count([](BrokerCounters& c) { c.refused++; });
    Log("warning", "hello:" + m.worker_id,
        "refused a HELLO as worker " + m.worker_id + (user_id.empty() ? "" : " (key " + user_id + ")") + ": " +
            refusal);
    Refuse(rid, refusal);
    return;
  }
  std::shared_ptr<const Capabilities> caps;
  uint64_t caps_class = 0;
  Status cs = caps_pool_.Intern(m.caps_json, &caps, &caps_class);
  if (!cs.ok()) {
    Count([](BrokerCounters& c) { c.refused++; });
    Refuse(rid, cs.IsBusy() ? "busy: " + cs.message() : "bad capabilities: " + cs.message());
    return;
  }
  if (!user_id.empty()) BindKey(m.worker_id, user_id);
  // A new connection of a known worker replaces the old one (it proved to be that worker).
  WorkerState* existing = nullptr;
  {
    auto it = workers_.find(m.worker_id);
    if (it != workers_.end()) existing = &it->second;
  }
  if (existing != nullptr && existing->online && existing->rid != rid) rid_to_worker_.erase(existing->rid);
  // A worker saying HELLO sends its files again from their start: what its old connection was sending is
  // dropped, so no answer meant for it reaches the new one.
  transfers_->AbortWorker(m.worker_id);

  // What does this worker really hold? What it says it holds, if the store agrees.
  std::map<uint64_t, uint64_t> kept;
  proto::Message welcome;
  welcome.cmd = proto::Cmd::kWelcome;
  for (const proto::Held& h : m.held) {
    Job j;
    if (store_->Get(h.job_id, false, &j).ok() && j.state == JobState::kRunning && j.lease_token == h.token &&
        store_->Heartbeat(h.job_id, h.token, lease_ms_, nullptr).ok()) {
      kept[h.job_id] = h.token;
      welcome.held.push_back(h);
    } else {
      welcome.dropped.push_back(h);
    }
  }
  // Jobs the store gave this worker that it no longer has (it restarted): they go back to the queue.
  ListQuery q;
  q.state_mask = 1u << static_cast<int>(JobState::kRunning);
  q.limit = 1000;
  for (;;) {
    ListPage page;
    if (!store_->List(q, &page).ok()) break;
    for (const Job& j : page.jobs) {
      if (j.worker_id == m.worker_id && kept.count(j.id) == 0) {
        releases_.push_back(
            PendingRelease{j.id, j.lease_token, "worker " + m.worker_id + " restarted without it", true});
      }
    }
    if (page.next_cursor == 0) break;
    q.cursor = page.next_cursor;
  }

  // A worker started paused (its own start_paused, in its first HELLO of a process) is drained as from the panel.
  if (StartsPaused(m.info_json) && drained_ids_.insert(m.worker_id).second) KeepDrained();
  WorkerState fresh;
  WorkerState& w = existing != nullptr ? *existing : fresh;
  {
    std::lock_guard<std::mutex> l(mu_);
    w.id = m.worker_id;
    w.name = m.name.empty() ? m.worker_id : m.name;
    w.plugin_version = m.plugin_version;
    w.comfyui_version = m.comfyui_version;
    w.info_json = m.info_json.empty() ? "{}" : m.info_json;
    w.key = user_id;
    w.rid = rid;
    w.instance = m.instance;
    w.install = m.install;
    w.caps = caps;
    w.caps_class = caps_class;
    w.capacity = static_cast<int>(m.capacity);
    w.epoch = ++next_epoch_;
    w.input_unread.clear();  // a new connection: its chunks in flight went with the old one
    w.input_reserved = 0;
    w.input_sent = 0;
    w.held = kept;
    w.connected_ms = w.last_seen_ms = w.last_renew_ms = now;
    w.online = true;
    w.draining = drained_ids_.count(m.worker_id) != 0;  // a drain outlasts reconnects and host restarts
    w.left_ms = 0;
    w.left_reason.clear();
    if (existing == nullptr) workers_[m.worker_id] = w;
  }
  rid_to_worker_[rid] = m.worker_id;
  ForgetOldestGone();
  WorkerState& stored = workers_[m.worker_id];
  {
    std::lock_guard<std::mutex> l(credit_mu_);
    slots_[stored.id] = Slot{0,
                             stored.epoch,
                             stored.draining,
                             stored.caps,
                             stored.caps_class,
                             speed_.Factor(stored.id),
                             speed_.Runs(stored.id)};
  }
  SetCandidate(stored, true);
  welcome.heartbeat_ms = static_cast<uint32_t>(opt_.heartbeat_ms);
  welcome.liveness = static_cast<uint32_t>(opt_.liveness);
  welcome.session = session_;
  Send(stored, welcome);
  dispatch_dirty_ = true;
  Emit({{"type", "worker"}, {"event", existing != nullptr ? "rejoined" : "joined"}, {"worker", WorkerJson(stored)}});
}

std::string BrokerImpl::IdentityRefusal(const std::string& rid, const std::string& key, const proto::Message& m,
                                        int64_t now) {
  if (WorkerState* owner = ByRid(rid); owner != nullptr && owner->id != m.worker_id) {
    return "this connection already belongs to worker " + owner->id;
  }
  if (m.info_json.size() > kMaxInfoBytes)
    return "worker info is too large (at most " + std::to_string(kMaxInfoBytes) + " bytes)";
  if (workers_.find(m.worker_id) == workers_.end() || !workers_.at(m.worker_id).online) {
    size_t online = 0;
    for (const auto& [id, w] : workers_) online += w.online;
    if (online >= opt_.max_workers) {
      return "busy: this broker already serves " + std::to_string(online) + " workers (at most " +
             std::to_string(opt_.max_workers) + ")";
    }
  }
  if (!key.empty() && allowed_keys_.count(key) == 0) {
    // (ZAP admitted the connection while the key was allowed: it no longer is. SetAllowedKeys)
    return "this worker's key is no longer allowed on this host (it was removed): pair it again";
  }
  if (!key.empty()) {
    // CURVE: the id is the key's. Another key naming it is refused, online or not.
    auto bound = bound_keys_.find(m.worker_id);
    if (bound != bound_keys_.end() && bound->second != key && allowed_keys_.count(bound->second)) {
      return "worker id " + m.worker_id + " belongs to another worker's key (" + bound->second.substr(0, 8) +
             "...): give this worker its own worker_id (COMFYMQ_WORKER_ID), or, if its key was replaced, take the "
             "old key off the host's allowed worker keys";
    }
    // A key past its number of ids makes room by forgetting one of its ids that is not online (BindKey); only
    // when all of them are online is a new one refused.
    size_t ids = 0, online = 0;
    for (const auto& [id, k] : bound_keys_) {
      if (k != key || id == m.worker_id) continue;
      ids++;
      auto w = workers_.find(id);
      online += w != workers_.end() && w->second.online;
    }
    if (ids >= kMaxIdsPerKey && online >= kMaxIdsPerKey) {
      return "this key already speaks for " + std::to_string(ids) + " online worker ids (at most " +
             std::to_string(kMaxIdsPerKey) + ")";
    }
  }
  // Another link of this id is online. The same process reconnecting (same instance) takes its place, as does a
  // HELLO naming every lease the live link holds (tokens nobody else can know). Another installation under the
  // same id is a clash: refused for good (until the live link is gone), saying what to do. Otherwise a link
  // heard from within two heartbeats is live, and the HELLO is refused for now ("busy:", tried again soon);
  // under CURVE a link silent for longer is its key's holder restarted, and the new link takes over; in plain
  // text it waits until the broker lets the old link go.
  auto it = workers_.find(m.worker_id);
  if (it == workers_.end() || !it->second.online || it->second.rid == rid) return "";
  const WorkerState& live = it->second;
  if (!m.instance.empty() && m.instance == live.instance) return "";
  if (!live.held.empty()) {
    std::set<uint64_t> proven;  // distinct leases: naming one twice proves nothing more
    for (const proto::Held& h : m.held) {
      if (Holds(live, h.job_id, h.token)) proven.insert(h.job_id);
    }
    if (proven.size() == live.held.size()) return "";
  }
  const int64_t silent = now - live.last_seen_ms;
  const bool fresh = silent <= 2 * static_cast<int64_t>(opt_.heartbeat_ms);
  if (!m.install.empty() && !live.install.empty() && m.install != live.install) {
    // The same words every time (no times in them): the worker says a standing refusal once.
    return "id clash: worker id " + m.worker_id + " is in use by another running worker ('" + live.name +
           "'). Two ComfyUIs share this id: a copied ComfyUI folder or disk image carries its "
           "user/comfymq/worker_id file, or both set the same COMFYMQ_WORKER_ID. Give this one its own id: set "
           "another COMFYMQ_WORKER_ID (or worker_id in comfymq.toml), or delete its worker_id file and restart it";
  }
  if (!fresh && !key.empty()) return "";
  return "busy: worker " + m.worker_id + " is connected on another link (heard from " + std::to_string(silent) +
         " ms ago); if that link was this worker's, try again once the broker has let it go; else give this "
         "worker its own worker_id";
}

bool BrokerImpl::Holds(const WorkerState& w, uint64_t job, uint64_t token) {
  auto held = w.held.find(job);
  return held != w.held.end() && held->second == token;
}

void BrokerImpl::RefuseForeign(const WorkerState& w, const proto::Message& m) {
  Count([](BrokerCounters& c) { c.foreign_lease_messages++; });
  Log("warning", "foreign:" + w.id,
      std::string("refused a ") + proto::CmdName(m.cmd) + " about job " + FormatJobId(m.job_id) + " from worker " +
          w.id + (w.key.empty() ? "" : " (key " + w.key + ")") + ": that connection does not hold the job's lease");
}

void BrokerImpl::LoadBoundKeys() {
  if (opt_.worker_keys_path.empty()) return;
  std::string text;
  if (!Env::Default()->ReadFileToString(opt_.worker_keys_path, &text).ok()) return;  // none yet
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const size_t tab = line.find('\t');
    if (tab == std::string::npos || tab == 0 || tab + 1 >= line.size()) continue;
    bound_keys_[line.substr(tab + 1)] = line.substr(0, tab);  // "key<TAB>worker id"
  }
}

void BrokerImpl::LoadDrained() {
  if (opt_.drained_path.empty()) return;
  std::string text;
  if (!Env::Default()->ReadFileToString(opt_.drained_path, &text).ok()) return;  // none yet
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line) && drained_ids_.size() < 2 * opt_.max_workers) {
    if (!line.empty()) drained_ids_.insert(line);
  }
}

void BrokerImpl::KeepDrained() {
  if (opt_.drained_path.empty()) return;
  std::string text;
  for (const std::string& id : drained_ids_) text += id + "\n";
  // A drain is rare: a small synced write on the loop. Should it fail, the drain holds until the host restarts.
  Status s = Env::Default()->WriteFileAtomically(opt_.drained_path, text);
  if (!s.ok())
    Log("warning", "drained", "could not keep the drained workers in " + opt_.drained_path + ": " + s.ToString());
}

void BrokerImpl::BindKey(const std::string& worker_id, const std::string& key) {
  auto it = bound_keys_.find(worker_id);
  if (it != bound_keys_.end() && it->second == key) return;
  for (auto b = bound_keys_.begin(); b != bound_keys_.end();) {  // void bindings go
    b = allowed_keys_.count(b->second) ? std::next(b) : bound_keys_.erase(b);
  }
  // At its limit, the key forgets the id it used least lately (not online: IdentityRefusal made sure one is).
  std::vector<std::pair<int64_t, std::string>> offline;
  size_t ids = 0;
  for (const auto& [id, k] : bound_keys_) {
    if (k != key || id == worker_id) continue;
    ids++;
    auto w = workers_.find(id);
    if (w == workers_.end())
      offline.emplace_back(0, id);
    else if (!w->second.online)
      offline.emplace_back(w->second.left_ms, id);
  }
  std::sort(offline.begin(), offline.end());
  for (size_t i = 0; i < offline.size() && ids >= kMaxIdsPerKey; ++i, --ids) bound_keys_.erase(offline[i].second);
  bound_keys_[worker_id] = key;
  if (opt_.worker_keys_path.empty()) return;
  std::string text;
  for (const auto& [id, k] : bound_keys_) text += k + "\t" + id + "\n";
  // A new worker id (rare): a small synced write on the loop. Should it fail, the binding holds in memory.
  Status s = Env::Default()->WriteFileAtomically(opt_.worker_keys_path, text);
  if (!s.ok())
    Log("warning", "bindings", "could not keep worker identities in " + opt_.worker_keys_path + ": " + s.ToString());
}

void BrokerImpl::ForgetOldestGone() {
  const size_t most = 2 * opt_.max_workers;  // online, and gone within the hour
  if (workers_.size() <= most) return;
  std::vector<std::pair<int64_t, std::string>> gone;
  for (const auto& [id, w] : workers_) {
    if (!w.online) gone.emplace_back(w.left_ms, id);
  }
  std::sort(gone.begin(), gone.end());
  bool undrained = false;  // a forgotten worker's drain goes with it
  {
    std::lock_guard<std::mutex> l(mu_);
    for (size_t i = 0; i < gone.size() && workers_.size() > most; ++i) {
      workers_.erase(gone[i].second);
      speed_.Forget(gone[i].second);
      undrained |= drained_ids_.erase(gone[i].second) != 0;
    }
  }
  if (undrained) KeepDrained();
}

void BrokerImpl::Ended(WorkerState& w, uint64_t job, uint64_t token) {
  w.ended.emplace_back(job, token);
  if (w.ended.size() > kEndedRunsKept) w.ended.pop_front();
}

bool BrokerImpl::RecentlyEnded(const WorkerState& w, uint64_t job, uint64_t token) {
  return std::find(w.ended.begin(), w.ended.end(), std::make_pair(job, token)) != w.ended.end();
}

void BrokerImpl::HandleChunk(WorkerState& w, const proto::Message& m) {
  proto::Message ack;
  auto held = w.held.find(m.job_id);
  if (held == w.held.end() || held->second != m.token) {
    RefuseForeign(w, m);
    ack.cmd = proto::Cmd::kChunkAck;
    ack.job_id = m.job_id;
    ack.token = m.token;
    ack.file_index = m.file_index;
    ack.chunk_status = proto::ChunkStatus::kRefused;  // not this worker's run any more
  } else {
    bool retry = false;
    const net::Transfers::Reply reply = transfers_->OnChunk(w.id, m, &ack, &retry);
    Count([&](BrokerCounters& c) {
      c.chunks++;
      if (retry) c.chunk_retries++;
    });
    // Queued for writing: the ack follows once it is written (HandleChunkDone). None: the rest of a window
    // the worker sent before it heard to start again.
    if (reply != net::Transfers::Reply::kNow) return;
  }
  Send(w, ack);
}

void BrokerImpl::HandleChunkDone(const net::Transfers::Done& d) {
  std::string worker;
  proto::Message ack;
  uint64_t written = 0;
  bool retry = false;
  // False: the transfer was dropped (its run is over, or its worker gone) or started over since: no answer.
  if (!transfers_->Completed(d, &worker, &ack, &written, &retry)) return;
  Count([&](BrokerCounters& c) {
    c.bytes_received += written;
    if (retry) c.chunk_retries++;
  });
  auto it = workers_.find(worker);
  if (it != workers_.end() && it->second.online) Send(it->second, ack);
}

void BrokerImpl::Timers(int64_t now) {
  const int64_t hb = opt_.heartbeat_ms;
  const int64_t window = hb * opt_.liveness;
  const int64_t horizon = now - caught_up_ms_ > kForceLivenessFactor * window ? now : caught_up_ms_;
  for (auto& [id, w] : workers_) {
    if (!w.online) continue;
    if (horizon - w.last_seen_ms > window) {
      Count([](BrokerCounters& c) { c.workers_lost++; });
      LoseWorker(
          w, "worker " + w.id + " stopped answering (no message for " + std::to_string(now - w.last_seen_ms) + " ms)",
          true, now);
      continue;
    }
    if (now - w.last_sent_ms >= hb) {
      proto::Message ping;
      ping.cmd = proto::Cmd::kPing;
      Send(w, ping);
    }
    if (now - w.last_renew_ms >= hb) {
      w.last_renew_ms = now;
      std::vector<uint64_t> gone;
      for (const auto& [job, token] : w.held) {
        if (finishing_.count(job)) continue;  // its result is on its way into the store
        if (!store_->Heartbeat(job, token, lease_ms_, nullptr).ok()) gone.push_back(job);
      }
      for (uint64_t job : gone) {
        // The store ended this run (cancelled, timed out): the worker must stop.
        proto::Message cancel;
        cancel.cmd = proto::Cmd::kCancel;
        cancel.job_id = job;
        cancel.token = w.held[job];
        cancel.reason = "the job is no longer this worker's";
        Send(w, cancel);
        transfers_->AbortRun(job, cancel.token);  // its files will not be wanted
        Ended(w, job, cancel.token);
        std::lock_guard<std::mutex> l(mu_);
        w.held.erase(job);
      }
    }
  }
  // Forget workers gone for an hour.
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto it = workers_.begin(); it != workers_.end();) {
      it = !it->second.online && now - it->second.left_ms > 3600 * 1000 ? workers_.erase(it) : std::next(it);
    }
  }
  if (now - last_stats_ms_ >= 1000) {
    last_stats_ms_ = now;
    dispatch_dirty_ = true;  // a safety net: look for work once a second even without news
    StoreStats st;
    if (store_->Stats(&st).ok()) {
      int online = 0, busy = 0;
      for (const auto& [id, w] : workers_) {
        online += w.online;
        busy += w.online && !w.held.empty();
      }
      json counts;
      for (int i = 0; i < kNumJobStates; ++i) counts[JobStateName(static_cast<JobState>(i))] = st.counts[i];
      json e = {{"type", "stats"},
                {"counts", counts},
                {"paused", st.paused},
                {"workers_online", online},
                {"workers_busy", busy},
                {"finished_last_minute", st.finished_last_minute},
                {"oldest_pending_age", st.oldest_pending_age_ms / 1000.0}};
      std::string text = Dump(e);
      if (text != last_stats_) {
        last_stats_ = text;
        events_.Push(text);
      }
    }
  }
}

void BrokerImpl::LoseWorker(WorkerState& w, const std::string& reason, bool count_attempts, int64_t now) {
  for (const auto& [job, token] : w.held) releases_.push_back(PendingRelease{job, token, reason, count_attempts});
  transfers_->AbortWorker(w.id);
  rid_to_worker_.erase(w.rid);
  {
    std::lock_guard<std::mutex> l(credit_mu_);
    slots_.erase(w.id);
  }
  RemoveCandidate(w.id);
  {
    std::lock_guard<std::mutex> l(mu_);
    w.held.clear();
    w.online = false;
    w.left_ms = now;
    w.left_reason = reason;
    // What it could run is kept as counts only (the view shows them): its capabilities go back to the pool.
    w.classes_seen = w.caps->node_classes();
    w.inputs_seen = w.caps->combo_inputs();
    w.choices_seen = w.caps->combo_choices();
    w.models_seen = w.caps->model_files();
    w.caps = std::make_shared<Capabilities>();
    w.caps_class = 0;
  }
  dispatch_dirty_ = true;
  Emit({{"type", "worker"}, {"event", "left"}, {"reason", reason}, {"worker", WorkerJson(w)}});
}

Status BrokerImpl::Drain(const std::string& worker_id, bool drain) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (workers_.find(worker_id) == workers_.end()) return Status::NotFound("no worker " + worker_id);
  }
  Post([this, worker_id, drain] {
    auto it = workers_.find(worker_id);
    if (it == workers_.end()) return;
    {
      std::lock_guard<std::mutex> l(mu_);
      it->second.draining = drain;
    }
    UpdateSlot(worker_id, [drain](Slot& s) { s.draining = drain; });
    if (drain ? drained_ids_.insert(worker_id).second : drained_ids_.erase(worker_id) != 0) KeepDrained();
    if (it->second.online) SetCandidate(it->second);
    dispatch_dirty_ = true;
    Emit({{"type", "worker"}, {"event", "changed"}, {"worker", WorkerJson(it->second)}});
  });
  return Status::OK();
}

Status BrokerImpl::SetAllowedKeys(const std::vector<std::string>& keys) {
  if (zap_ == nullptr) return Status::InvalidArgument("this broker runs without CURVE: it has no allow-list");
  CMQ_RETURN_IF_ERROR(zap_->SetAllowed(keys));  // new connections: at once
  std::set<std::string> next(keys.begin(), keys.end());
  Post([this, next = std::move(next)] {
    allowed_keys_ = next;
    const int64_t now = NowMs();
    for (auto& [id, w] : workers_) {
      if (!w.online || w.key.empty() || allowed_keys_.count(w.key) != 0) continue;
      const std::string reason = proto::kKeyRemoved;
      Log("warning", "keys", "worker " + id + " dropped: " + reason);
      Refuse(w.rid, reason);  // its connection hears why; any HELLO on it is refused (IdentityRefusal)
      LoseWorker(w, reason, /*count_attempts=*/false, now);
    }
  });
  return Status::OK();
}

Status BrokerImpl::RefreshCapabilities(const std::string& worker_id) {
  if (!worker_id.empty()) {
    std::lock_guard<std::mutex> l(mu_);
    if (workers_.find(worker_id) == workers_.end()) return Status::NotFound("no worker " + worker_id);
  }
  Post([this, worker_id] {
    proto::Message req;
    req.cmd = proto::Cmd::kCapsRequest;
    for (auto& [id, w] : workers_) {
      if (w.online && (worker_id.empty() || id == worker_id)) Send(w, req);
    }
  });
  return Status::OK();
}

}  // namespace net

}  // namespace comfymq
