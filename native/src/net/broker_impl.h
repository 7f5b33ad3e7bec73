// The broker's implementation, shared by the files that hold its parts (comfymq/broker.h is the interface):
//   broker.cc           start and stop, the loop, reading and routing messages, sending, logging
//   broker_workers.cc   workers: HELLO and who may be whom (ids, keys, leases as proof), liveness and lease
//                       renewal, leaving, drain, capability refreshes, file chunks
//   broker_dispatch.cc  commit passes (results, releases, dispatches in one sync), dispatch on arrival (the
//                       store's hook), sending jobs, credits, the retry-elsewhere preference, job requirements
//   broker_views.cc     what others read: the workers view, why a job waits, store events turned into events
//   broker_inputs.cc    inputs workers fetch (FETCH checked against the lease and the job's prompt; INPUT chunks)
//
// One thread (the loop) owns the ROUTER socket and every WorkerState; other threads reach it through the command
// queue (store events, drain, capability refreshes) and read snapshots under mu_. Credits live under credit_mu_,
// which the store's dispatch hook takes inside the store's lock: nothing may call the store holding it.
// retry_mu_ is a leaf lock (taken inside the store's lock and credit_mu_, takes nothing else).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "comfymq/artifact_writer.h"
#include "comfymq/broker.h"
#include "comfymq/capabilities.h"
#include "net/capabilities_pool.h"
#include "net/commit_pipeline.h"
#include "net/event_buffer.h"
#include "net/input_files.h"
#include "net/output_refs.h"
#include "net/protocol.h"
#include "net/transfers.h"
#include "net/wakeup_posix.h"
#include "net/worker_speed.h"
#include "net/zap_handler.h"
#include "store/store_batch.h"
#include "util/siphash.h"

namespace comfymq::net {

using json = nlohmann::json;

inline int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

inline std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

constexpr size_t kMaxIdsPerKey = 64;         // worker ids one CURVE key may speak for
constexpr size_t kEndedRunsKept = 64;        // runs per worker whose late messages are stale, not foreign
constexpr size_t kMaxInfoBytes = 64u << 10;  // one worker's host facts

// A worker as the loop knows it: written by the loop thread only (under mu_, so views can read it).
struct WorkerState {
  std::string id;    // the worker id it said HELLO with (under CURVE, bound to `key`)
  std::string name;  // for display; the id when it gave none
  std::string plugin_version, comfyui_version;
  std::string info_json;  // host and GPU facts from its HELLO, for display
  std::string key;        // its CURVE public key (Z85) on the current connection; empty in plain text
  std::string rid;        // ROUTER routing id of the current connection
  std::string instance;   // its HELLO's process and installation ids (empty from older workers): a HELLO as
  std::string install;    //   this id from another link proves a reconnect (same instance) or tells a clash
  std::shared_ptr<const Capabilities> caps = std::make_shared<Capabilities>();  // what it can run
  uint64_t caps_class = 0;            // names caps (CapabilitiesPool::Intern): the store's take class of its takes
  int capacity = 1;                   // jobs it runs at once (credit never exceeds it)
  uint64_t epoch = 0;                 // which connection: a lease chosen for an older one is not sent to a newer one
  std::map<uint64_t, uint64_t> held;  // the leases this connection holds: job -> token
  // Inputs sent on this connection (broker_inputs.cc): receipts of chunks it has not shown it read, chunks asked
  // for and not yet sent, and the count that makes each receipt.
  std::deque<uint64_t> input_unread;
  uint32_t input_reserved = 0;
  uint64_t input_sent = 0;
  std::deque<std::pair<uint64_t, uint64_t>> ended;  // its last runs that ended (job, token): late news is stale
  size_t classes_seen = 0, inputs_seen = 0, choices_seen = 0,
         models_seen = 0;     // its capabilities' counts, kept once it left
  int64_t connected_ms = 0;   // when the current connection said HELLO
  int64_t last_seen_ms = 0;   // the last message from it (liveness)
  int64_t last_sent_ms = 0;   // the last message to it (PING when idle)
  int64_t last_renew_ms = 0;  // the last renewal of its leases in the store
  int64_t left_ms = 0;        // when it went offline (kept for an hour, for the workers view)
  bool online = false;
  bool draining = false;  // takes no new jobs, finishes what it runs
  std::string left_reason;
};

struct PendingResult {
  std::string worker_id;
  proto::Message msg;  // RESULT or FAIL
};

struct PendingRelease {
  uint64_t job = 0, token = 0;
  std::string reason;
  bool count_attempt = true;
};

// A run the broker fails itself before sending it: the job cannot run anywhere (an output it takes as input
// cannot be found); failed without a retry.
struct PendingFailure {
  uint64_t job = 0, token = 0;
  JobError error;
};

// A pass: every result, failure and lease release that came in, plus the dispatches workers have credit
// for, committed together by the pipeline (one sync), then answered by FinishPass on the loop thread.
struct BrokerPass final : CommitPass {
  struct ResultItem {
    PendingResult r;
    std::vector<Artifact> published;
    Status status;
  };
  struct DispatchItem {
    std::string worker;
    uint64_t epoch = 0;
    std::unique_ptr<Lease> lease;
    Status status;
    bool early = false;  // the take may be shown before its commit is durable (StoreBatch::Take)
    bool sent = false;   // went out once applied, before the commit was durable
  };
  std::deque<ResultItem> results;
  std::vector<PendingRelease> releases;
  std::deque<Status> release_status;
  std::vector<PendingFailure> failures;
  std::deque<Status> failure_status;
  std::deque<DispatchItem> dispatches;
};

// What a worker may be given, read by the loop and by the dispatch hook (under credit_mu_). Only online
// workers have one.
struct Slot {
  int credit = 0;
  uint64_t epoch = 0;
  bool draining = false;
  std::shared_ptr<const Capabilities> caps;
  uint64_t caps_class = 0;  // WorkerState::caps_class
  double speed = 1.0;       // WorkerSpeed::Factor: lower is faster, and is offered work first
  uint64_t speed_runs = 0;  // runs that measure it
};

// Lets the store's listener reach the broker only while it is alive.
struct ListenerGate {
  std::mutex mu;
  bool alive = true;
};

class BrokerImpl final : public Broker {
 public:
  BrokerImpl(Store* store, const BrokerOptions& o)
      : store_(store), opt_(o), router_(ctx_, zmq::socket_type::router), events_(o.max_events) {}
  ~BrokerImpl() override { Stop().IgnoreError(); }

  Status Init();

  bool NextEvent(int timeout_ms, std::string* event_json) override { return events_.Next(timeout_ms, event_json); }
  std::string WorkersJson() override;
  Status Explain(uint64_t job_id, std::vector<std::string>* reasons) override;
  Status ExplainPrompt(const std::string& prompt_json, std::vector<std::string>* reasons) override;
  Status Drain(const std::string& worker_id, bool drain) override;
  Status SetAllowedKeys(const std::vector<std::string>& keys_z85) override;
  Status RefreshCapabilities(const std::string& worker_id) override;
  BrokerCounters Counters() override {
    std::lock_guard<std::mutex> l(mu_);
    BrokerCounters c = counters_;
    c.events_dropped = events_.total_dropped();
    c.zap_denied = zap_denied_.load();
    return c;
  }
  std::string endpoint() override { return endpoint_; }
  std::string public_key() override { return public_key_; }
  Status Stop() override;

 private:
  // loop
  void Loop();
  void HandleMessage(const std::vector<std::string>& frames, const std::string& user_id, int64_t now);
  void HandleHello(const std::string& rid, const std::string& user_id, proto::Message& m, int64_t now);
  void HandleChunkDone(const Transfers::Done& d);  // a queued chunk was written (or not)
  void HandleChunk(WorkerState& w, const proto::Message& m);
  void HandleFetch(WorkerState& w, const proto::Message& m);
  void HandleInputRead(InputFiles::Chunk c);  // a chunk the input reader read (or a refusal): sent on
  // Whether run (job, token) may fetch input `sha256`: its prompt names it, or it is the output of a job it
  // waits for that one of its references names; *path is where it lies ("" = the input store).
  bool GrantedInput(uint64_t job, uint64_t token, const std::string& sha256, std::string* path);
  // The prompt a run is sent with: output references (net/output_refs.h) made stored forms, and their files.
  Status SendablePrompt(const Job& job, std::string* prompt, std::vector<UpstreamFile>* files);
  void StartPass();  // hands the next pass to the pipeline unless one is in flight
  void SendApplied(BrokerPass& pass, int64_t now);
  void FinishPass(std::unique_ptr<CommitPass> pass, int64_t now);
  void Finishing(uint64_t job_id, int delta);
  void SendOutbox(int64_t now);
  bool SendJob(WorkerState& w, const Lease& l, int64_t now);
  void UnsendJob(const BrokerPass::DispatchItem& d, const std::string& reason);
  // A take for a worker: its filter (what it can run, the retry-elsewhere and input-holder preferences) and its take
  // class (the store remembers per class which pending jobs those capabilities can run: a backlog no idle worker can
  // run costs their takes nothing, however many they are).
  TakeOptions TakeFor(const std::string& worker_id, const Slot& slot);
  void ChooseOnArrival(DispatchContext& ctx);
  // The one walk both dispatch paths take (credit_mu_ held): every online, not draining worker's credit, one
  // unit at a time, highest priority jobs first as the store orders takes. take(worker, slot) spends the unit
  // when it returns true (a take reserved for the pass, or a lease made in the enqueuer's group); false leaves
  // the worker's credit as it is and moves on. The paths differ only in when the take happens: the loop's pass
  // reserves credit now and takes when the store applies the pass (unused credit comes back, ReturnCredit);
  // the store's hook takes at once, inside the enqueuer's commit group, with the store's lock held.
  template <typename Take>
  // Offers work to the workers with credit, fastest first (speed-aware dispatch; equal ones in id order).
  void SpendCredit(Take&& take) {
    std::vector<std::pair<const std::string*, Slot*>> free;
    for (auto& [id, slot] : slots_) {
      if (!slot.draining && slot.credit > 0) free.emplace_back(&id, &slot);
    }
    std::stable_sort(free.begin(), free.end(),
                     [](const auto& a, const auto& b) { return a.second->speed < b.second->speed; });
    for (auto& [id, slot] : free) {
      while (slot->credit > 0 && take(*id, static_cast<const Slot&>(*slot))) slot->credit--;
    }
  }
  void ReturnCredit(const std::string& worker_id, uint64_t epoch);
  void UpdateSlot(const std::string& worker_id, const std::function<void(Slot&)>& fn);
  void Timers(int64_t now);
  // The last moment the loop found its inbox empty: every message sent before it has been read. A worker's
  // silence is judged up to here, so heartbeats waiting behind others' messages (a flood, a burst of large ones)
  // do not make a live worker look gone; only an inbox that stays full for kForceLivenessFactor liveness windows
  // has silence judged up to now after all.
  int64_t caught_up_ms_ = 0;
  static constexpr int kForceLivenessFactor = 20;
  void LoseWorker(WorkerState& w, const std::string& reason, bool count_attempts, int64_t now);
  // Lease-bound messages are taken only from the connection that holds the lease (held); anything else is
  // refused by RefuseForeign: counted, logged with the sender, nothing changed.
  static bool Holds(const WorkerState& w, uint64_t job, uint64_t token);
  void RefuseForeign(const WorkerState& w, const proto::Message& m);
  // HELLO: why this connection may not be worker m.worker_id ("" = it may). Changes nothing.
  std::vector<std::string> ReasonsNoneCanRun(const Requirements& req);
  std::string IdentityRefusal(const std::string& rid, const std::string& key, const proto::Message& m, int64_t now);
  // Under CURVE: worker id -> the key it belongs to, kept in opt_.worker_keys_path. A binding whose key is no
  // longer allowed is void (a worker whose key was replaced binds again).
  void LoadBoundKeys();
  // Keeps workers_ within twice opt_.max_workers by forgetting the workers that left longest ago.
  void ForgetOldestGone();
  void BindKey(const std::string& worker_id, const std::string& key);

  // Retries go elsewhere first: a pending job that a worker was sent before (so that run ended without a
  // result: failed and retried, lease lost, timed out) is not given to that worker again while another online
  // worker that has not run it can. Runs are marked when sent (SetTried), before any later take can see the job
  // pending again; a job's marks go when it finishes. Filters consult this under the store's lock (and the
  // hook's credit_mu_): retry_mu_ is a leaf lock.
  bool PreferOthers(const std::string& worker_id, uint64_t job_id, const Requirements& req);
  // Inputs travel, but a worker that keeps a job's inputs already is preferred: a job naming inputs this worker
  // lacks is left to another online worker that keeps them all, asks for work now and can run it. (Same lock.)
  bool PreferHolder(const std::string& worker_id, uint64_t job_id, const Requirements& req);
  void SetCandidateInputs(const std::string& worker_id, std::vector<std::string> inputs);
  // Marks (or unmarks) a worker as having been sent a job; true when this call changed the mark.
  bool SetTried(uint64_t job_id, const std::string& worker_id, bool tried);
  void SetCandidate(const WorkerState& w, bool new_connection = false);
  void RemoveCandidate(const std::string& worker_id);
  void AddAsking(const std::string& worker_id, int delta);
  // A run of w ended (its lease erased from held): late messages about it are stale, not foreign.
  static void Ended(WorkerState& w, uint64_t job, uint64_t token);
  static bool RecentlyEnded(const WorkerState& w, uint64_t job, uint64_t token);
  void RunCommands();
  void Post(std::function<void()> fn);

  // sending
  bool Send(WorkerState& w, const proto::Message& m);
  bool SendTo(const std::string& rid, const proto::Message& m);
  void Refuse(const std::string& rid, const std::string& reason);

  // routing
  std::shared_ptr<const Requirements> RequirementsOf(uint64_t job_id, const PromptLoader* load);
  void ForgetRequirements(uint64_t job_id);

  // events
  void OnStoreEvents(const std::vector<StoreEvent>& events);
  void Emit(const json& e) { events_.Push(Dump(e)); }
  void Log(const std::string& level, const std::string& key, const std::string& message);
  // norm: SpeedNorm() (computed here when < 0; a caller showing many workers computes it once).
  json WorkerJson(const WorkerState& w, double norm = -1);
  // The mean speed factor of the online workers measured so far (1.0 when none): the views show each worker's factor
  // against it, so the farm's average worker shows 1.0 whatever the farm's history (dispatch needs only the order).
  double SpeedNorm();
  int CreditOf(const WorkerState& w, double* speed, uint64_t* speed_runs);  // and its Slot's speed
  WorkerState* ByRid(const std::string& rid);
  template <typename Fn>
  void Count(Fn fn) {
    std::lock_guard<std::mutex> l(mu_);
    fn(counters_);
  }

  Store* const store_;
  const BrokerOptions opt_;
  int64_t lease_ms_ = 0;
  zmq::context_t ctx_;
  std::unique_ptr<ZapHandler> zap_;
  zmq::socket_t router_;
  std::unique_ptr<ArtifactWriter> artifacts_;
  std::unique_ptr<Transfers> transfers_;
  std::unique_ptr<InputFiles> inputs_;
  // Loop thread only: the inputs each run's prompt names, (job, token) -> sha256 -> where it lies ("" = the input
  // store, else a path under the artifact root), read from the store at its first FETCH; bounded (cleared when it
  // grows past kMaxGrants: read again on demand).
  std::map<std::pair<uint64_t, uint64_t>, std::map<std::string, std::string>> input_grants_;
  static constexpr size_t kMaxGrants = 4096;
  // Input chunks a worker may have sent to it and not shown it read, plus asked for: two windows (two fetches at
  // once run at full speed; more wait their turn).
  static constexpr uint32_t kMaxUnreadInputChunks = 2 * proto::kChunkWindow;
  SipKey receipt_key_;  // receipts are SipHash(key, connection epoch, chunk count): not guessable by a worker
  Wakeup wake_;
  EventBuffer events_;
  std::shared_ptr<ListenerGate> gate_ = std::make_shared<ListenerGate>();
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> zap_denied_{0};
  std::string session_, endpoint_, public_key_;

  std::mutex mu_;  // workers_ (written by the loop only), counters_
  std::map<std::string, WorkerState> workers_;
  BrokerCounters counters_;

  // Loop thread only.
  std::unordered_map<std::string, std::string> rid_to_worker_;
  std::vector<PendingResult> results_;
  std::vector<PendingResult> waiting_results_;  // RESULTs whose files are still being written
  std::vector<PendingRelease> releases_;
  std::vector<PendingFailure> failures_;
  // Jobs whose result or failure is queued or being committed: their leases are not renewed meanwhile (a
  // renewal would fail once the result is in, and look like the store taking the job back).
  std::unordered_map<uint64_t, int> finishing_;
  bool dispatch_dirty_ = true;
  int64_t last_stats_ms_ = 0;
  std::string last_stats_;
  std::map<std::string, int64_t> last_log_;  // rate limit per key

  std::mutex cmd_mu_;
  std::deque<std::function<void()>> commands_;

  std::mutex req_mu_;
  std::unordered_map<uint64_t, std::shared_ptr<const Requirements>> reqs_;
  WorkerSpeed speed_;  // loop thread only; each online worker's factor is copied to its Slot

  // Taken inside the store's state lock by the dispatch hook: never call the store while holding it.
  std::mutex credit_mu_;
  std::map<std::string, Slot> slots_;                  // online workers
  std::unordered_map<uint64_t, uint64_t> hook_epoch_;  // job leased by the hook -> the worker's epoch then
  uint64_t next_epoch_ = 0;                            // loop thread only

  std::mutex outbox_mu_;
  std::vector<std::unique_ptr<Lease>> outbox_;  // leased by the hook, durable, not yet sent

  // Loop thread only: worker id -> CURVE key (see BindKey).
  std::map<std::string, std::string> bound_keys_;
  // Drained worker ids (loop thread), kept in opt_.drained_path: a worker joining is drained if listed.
  std::set<std::string> drained_ids_;
  void LoadDrained();
  void KeepDrained();
  std::set<std::string> allowed_keys_;

  struct Candidate {
    std::shared_ptr<const Capabilities> caps;
    bool draining = false;
    int asking = 0;  // jobs it asked for (READY) and was not sent yet: it would take a job now
    std::shared_ptr<const std::set<std::string>> inputs;  // the inputs it keeps (INPUTS), or none said
  };
  std::mutex retry_mu_;  // leaf: taken inside the store's lock and credit_mu_, takes nothing else
  std::unordered_map<uint64_t, std::vector<std::string>> tried_;  // unfinished job -> workers it was sent to
  std::map<std::string, Candidate> candidates_;                   // online workers

  // Commits passes while the loop keeps receiving; wakes the loop when one is done. Made by Init.
  std::unique_ptr<CommitPipeline> pipeline_;

  CapabilitiesPool caps_pool_{opt_.max_capabilities_bytes, opt_.capabilities_budget_bytes};  // loop thread
};

}  // namespace comfymq::net
