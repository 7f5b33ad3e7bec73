// The broker (see comfymq/broker.h). One thread owns the ROUTER socket and every WorkerState; other threads
// reach it through the command queue (store events, drain, capability refreshes) and read snapshots under mu_.
//
// Each turn of the loop: poll (heartbeat as timeout); send the jobs of a pass the store has applied but not
// yet synced when their tokens are covered (an early take: the worker starts while the sync runs); once the
// newest pass is applied (the pipeline holds two), hand the pipeline the next one (every result, failure and
// lease release that came in plus the dispatches that workers have credit for: one sync for all of it; the
// store applies it while the one before syncs); answer each finished pass in order (acks, the jobs that could
// not go early, CANCEL for early ones whose commit failed); read what arrived, run queued commands; keep
// heartbeats. The loop never waits for the disk: a slow sync delays answers, not heartbeats.
//
// Dispatch on arrival: the broker is also the store's dispatch hook. When an enqueue makes a job pending
// and some worker has credit for it, the job is leased in the enqueuer's own commit group (one sync for the
// job and its lease), and the lease reaches the loop through the outbox to be sent. Credits therefore live
// under credit_mu_, which the hook takes inside the store's lock: nothing may call the store holding it.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "comfymq/artifact_writer.h"
#include "comfymq/broker.h"
#include "comfymq/capabilities.h"
#include "comfymq/curve.h"
#include "net/capabilities_pool.h"
#include "net/commit_pipeline.h"
#include "net/event_buffer.h"
#include "net/protocol.h"
#include "net/transfers.h"
#include "net/wakeup.h"
#include "net/zap_handler.h"
#include "net/zmq_frames.h"
#include "util/json_text.h"
#include "util/thread_name.h"

namespace comfymq {
namespace {

using json = nlohmann::json;
using net::EventBuffer;
using net::Wakeup;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

constexpr size_t kMaxIdsPerKey = 64;          // worker ids one CURVE key may speak for
constexpr size_t kEndedRunsKept = 64;                // runs per worker whose late messages are stale, not foreign
constexpr size_t kMaxInfoBytes = 64u << 10;    // one worker's host facts

// A worker as the loop knows it: written by the loop thread only (under mu_, so views can read it).
struct WorkerState {
  std::string id;               // the worker id it said HELLO with (under CURVE, bound to `key`)
  std::string name;             // for display; the id when it gave none
  std::string plugin_version, comfyui_version;
  std::string info_json;        // host and GPU facts from its HELLO, for display
  std::string key;              // its CURVE public key (Z85) on the current connection; empty in plain text
  std::string rid;              // ROUTER routing id of the current connection
  std::shared_ptr<const Capabilities> caps = std::make_shared<Capabilities>();  // what it can run
  int capacity = 1;             // jobs it runs at once (credit never exceeds it)
  uint64_t epoch = 0;           // which connection: a lease chosen for an older one is not sent to a newer one
  std::map<uint64_t, uint64_t> held;  // the leases this connection holds: job -> token
  std::deque<std::pair<uint64_t, uint64_t>> ended;  // its last runs that ended (job, token): late news is stale
  size_t classes_seen = 0, inputs_seen = 0, choices_seen = 0;  // its capabilities' counts, kept once it left
  int64_t connected_ms = 0;     // when the current connection said HELLO
  int64_t last_seen_ms = 0;     // the last message from it (liveness)
  int64_t last_sent_ms = 0;     // the last message to it (PING when idle)
  int64_t last_renew_ms = 0;    // the last renewal of its leases in the store
  int64_t left_ms = 0;          // when it went offline (kept for an hour, for the workers view)
  bool online = false;
  bool draining = false;        // takes no new jobs, finishes what it runs
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

// A pass: every result, failure and lease release that came in, plus the dispatches workers have credit
// for, committed together by the pipeline (one sync), then answered by FinishPass on the loop thread.
struct BrokerPass final : net::CommitPass {
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
  std::deque<DispatchItem> dispatches;
};

// What a worker may be given, read by the loop and by the dispatch hook (under credit_mu_). Only online
// workers have one.
struct Slot {
  int credit = 0;
  uint64_t epoch = 0;
  bool draining = false;
  std::shared_ptr<const Capabilities> caps;
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
  ~BrokerImpl() override { Stop(); }

  Status Init();

  bool NextEvent(int timeout_ms, std::string* event_json) override { return events_.Next(timeout_ms, event_json); }
  std::string WorkersJson() override;
  Status Explain(uint64_t job_id, std::vector<std::string>* reasons) override;
  Status Drain(const std::string& worker_id, bool drain) override;
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
  void HandleChunkDone(const net::Transfers::Done& d);  // a queued chunk was written (or not)
  void HandleChunk(WorkerState& w, const proto::Message& m);
  void StartPass();  // hands the next pass to the pipeline unless one is in flight
  void SendApplied(BrokerPass& pass, int64_t now);
  void FinishPass(std::unique_ptr<net::CommitPass> pass, int64_t now);
  void Finishing(uint64_t job_id, int delta);
  void SendOutbox(int64_t now);
  bool SendJob(WorkerState& w, const Lease& l, int64_t now);
  void UnsendJob(const BrokerPass::DispatchItem& d, const std::string& reason);
  TakeOptions TakeFor(const std::string& worker_id, std::shared_ptr<const Capabilities> caps);
  void ChooseOnArrival(DispatchContext& ctx);
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
  json WorkerJson(const WorkerState& w);
  int CreditOf(const WorkerState& w);
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
  std::unique_ptr<net::ZapHandler> zap_;
  zmq::socket_t router_;
  std::unique_ptr<ArtifactWriter> artifacts_;
  std::unique_ptr<net::Transfers> transfers_;
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

  // Taken inside the store's state lock by the dispatch hook: never call the store while holding it.
  std::mutex credit_mu_;
  std::map<std::string, Slot> slots_;                 // online workers
  std::unordered_map<uint64_t, uint64_t> hook_epoch_;  // job leased by the hook -> the worker's epoch then
  uint64_t next_epoch_ = 0;                            // loop thread only

  std::mutex outbox_mu_;
  std::vector<std::unique_ptr<Lease>> outbox_;  // leased by the hook, durable, not yet sent

  // Loop thread only: worker id -> CURVE key (see BindKey).
  std::map<std::string, std::string> bound_keys_;
  std::set<std::string> allowed_keys_;

  struct Candidate {
    std::shared_ptr<const Capabilities> caps;
    bool draining = false;
    int asking = 0;  // jobs it asked for (READY) and was not sent yet: it would take a job now
  };
  std::mutex retry_mu_;  // leaf: taken inside the store's lock and credit_mu_, takes nothing else
  std::unordered_map<uint64_t, std::vector<std::string>> tried_;  // unfinished job -> workers it was sent to
  std::map<std::string, Candidate> candidates_;                    // online workers

  // Commits passes while the loop keeps receiving; wakes the loop when one is done. Made by Init.
  std::unique_ptr<net::CommitPipeline> pipeline_;

  net::CapabilitiesPool caps_pool_{opt_.max_capabilities_bytes, opt_.capabilities_budget_bytes};  // loop thread
};

// ---------------------------------------------------------------------------------------------------------
// Start and stop

Status BrokerImpl::Init() {
  if (opt_.heartbeat_ms < 10 || opt_.heartbeat_ms > 600000) return Status::InvalidArgument("heartbeat must be 10 ms..10 min");
  if (opt_.liveness < 1 || opt_.liveness > 100) return Status::InvalidArgument("liveness must be 1..100 heartbeats");
  if (opt_.max_workers < 1) return Status::InvalidArgument("max_workers must be at least 1");
  if (opt_.artifact_root.empty()) return Status::InvalidArgument("the broker needs an artifact root");
  if (!wake_.ok()) return Status::IOError("cannot create the broker's wakeup pipe");
  lease_ms_ = opt_.lease_ms > 0 ? opt_.lease_ms : static_cast<int64_t>(opt_.heartbeat_ms) * opt_.liveness * 3;
  const bool curve = !opt_.curve_secret_key.empty();
  if (!curve && !IsLoopbackEndpoint(opt_.bind) && !opt_.allow_plaintext) {
    return Status::InvalidArgument("refusing plain-text worker links on " + opt_.bind +
                                   ": set a CURVE key pair (see `python -m comfy_nodes keys`), or opt out explicitly");
  }
  allowed_keys_.insert(opt_.allowed_worker_keys.begin(), opt_.allowed_worker_keys.end());
  LoadBoundKeys();
  CMQ_RETURN_IF_ERROR(ArtifactWriter::Open(opt_.artifact_env, opt_.artifact_root, &artifacts_));
  // Written chunks come back to the loop as commands (the I/O thread never touches the loop's state).
  transfers_ = std::make_unique<net::Transfers>(artifacts_.get(), [this](net::Transfers::Done d) {
    Post([this, d = std::move(d)] { HandleChunkDone(d); });
  });
  std::mt19937_64 rng(std::random_device{}());
  char sid[17];
  std::snprintf(sid, sizeof(sid), "%016llx", static_cast<unsigned long long>(rng()));
  session_ = sid;
  try {
    if (curve) {
      if (!CurveAvailable()) return Status::InvalidArgument("this libzmq has no CURVE support (it needs libsodium)");
      CMQ_RETURN_IF_ERROR(CurvePublicFromSecret(opt_.curve_secret_key, &public_key_));
      CMQ_RETURN_IF_ERROR(net::ZapHandler::Start(
          &ctx_, opt_.allowed_worker_keys,
          [this](const std::string& key, const std::string& address) {
            zap_denied_++;
            Log("warning", "zap:" + key,
                "refused a worker with an unknown CURVE key " + key + " from " + address +
                    " (add its public key to the allowed worker keys to let it in)");
          },
          &zap_));
      router_.set(zmq::sockopt::zap_domain, "comfymq");
      router_.set(zmq::sockopt::curve_server, 1);
      router_.set(zmq::sockopt::curve_secretkey, opt_.curve_secret_key);
      if (opt_.allowed_worker_keys.empty()) {
        Log("warning", "no-keys", "CURVE is on but no worker key is allowed: no worker can connect");
      }
    } else if (!IsLoopbackEndpoint(opt_.bind)) {
      Log("warning", "plaintext",
          "PLAIN TEXT worker links on " + opt_.bind + ": anyone on the network can join and read jobs (explicit opt-out)");
    }
    router_.set(zmq::sockopt::router_mandatory, 1);
    router_.set(zmq::sockopt::linger, 0);
    router_.set(zmq::sockopt::sndhwm, 100000);
    router_.set(zmq::sockopt::rcvhwm, 100000);
    router_.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(proto::kMaxBody + (1 << 20)));
    router_.bind(opt_.bind);
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return Status::IOError("cannot bind the broker to " + opt_.bind + ": " + e.what());
  }
  auto gate = gate_;
  store_->SetListener([gate, this](const std::vector<StoreEvent>& events) {
    std::lock_guard<std::mutex> l(gate->mu);
    if (gate->alive) OnStoreEvents(events);
  });
  DispatchHook hook;
  hook.choose = [this](DispatchContext& ctx) { ChooseOnArrival(ctx); };
  hook.deliver = [this](std::vector<std::unique_ptr<Lease>> leases) {
    {
      std::lock_guard<std::mutex> l(outbox_mu_);
      for (auto& lease : leases) outbox_.push_back(std::move(lease));
    }
    wake_.Notify();
  };
  SetDispatchHook(store_, std::move(hook));
  pipeline_ = std::make_unique<net::CommitPipeline>(store_, [this] { wake_.Notify(); });
  thread_ = std::thread(&BrokerImpl::Loop, this);
  return Status::OK();
}

Status BrokerImpl::Stop() {
  if (stop_.exchange(true)) return Status::OK();
  {
    std::lock_guard<std::mutex> l(gate_->mu);
    gate_->alive = false;  // no store event reaches this broker any more
  }
  store_->SetListener(nullptr);
  SetDispatchHook(store_, DispatchHook());  // no lease is chosen for this broker's workers any more
  wake_.Notify();
  if (thread_.joinable()) thread_.join();
  transfers_.reset();  // its I/O thread posts to the loop's commands: stopped before they go
  {
    // Leased on arrival, or by the last passes, but never sent: back to the queue, no attempt counted. (That
    // pass's results are recorded; their workers hear so when they send them again to the next broker.)
    std::vector<std::unique_ptr<Lease>> unsent;
    {
      std::lock_guard<std::mutex> l(outbox_mu_);
      unsent.swap(outbox_);
    }
    if (pipeline_) {
      pipeline_->Stop();
      while (auto done = pipeline_->TakeDone()) {
        for (auto& d : static_cast<BrokerPass&>(*done).dispatches) {
          if (d.status.ok() && d.lease && !d.sent) unsent.push_back(std::move(d.lease));
        }
      }
    }
    if (!unsent.empty()) {
      StoreBatch batch;
      std::deque<Status> st(unsent.size());
      for (size_t i = 0; i < unsent.size(); ++i) {
        batch.ReleaseLease(unsent[i]->job_id, unsent[i]->token, "the broker stopped before sending it", false, &st[i]);
      }
      CommitBatch(store_, &batch);
    }
  }
  try {
    router_.close();
  } catch (const zmq::error_t&) {
  }
  zap_.reset();
  events_.Close();
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------------------
// The loop

void BrokerImpl::Loop() {
  NameThisThread("cmq-broker");
  caught_up_ms_ = NowMs();
  std::vector<std::string> frames;
  std::string user_id;
  while (!stop_) {
    zmq::pollitem_t items[] = {{router_.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, wake_.fd(), ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 2, std::chrono::milliseconds(std::max(10, opt_.heartbeat_ms / 2)));
    } catch (const zmq::error_t& e) {
      if (stop_) break;
      Log("error", "poll", std::string("broker poll failed: ") + e.what());
      continue;
    }
    const int64_t now = NowMs();
    if (items[1].revents & ZMQ_POLLIN) wake_.Drain();
    while (auto* applied = pipeline_->TakeApplied()) SendApplied(static_cast<BrokerPass&>(*applied), now);
    while (auto done = pipeline_->TakeDone()) {
      StartPass();  // what came in during that commit: the store syncs it while the loop answers the last one
      FinishPass(std::move(done), now);
    }
    RunCommands();
    SendOutbox(now);
    // Bounded in count and in time: a stream of messages that each cost a sync (a result's thousands of file
    // chunks) must not keep the timers below (pings, lease renewals) from running for seconds.
    // A worker is judged silent only up to the last time every message that came in had been read (drained):
    // after a long stall its heartbeats may still be waiting behind the budget (see caught_up_ms_).
    const int64_t recv_until = NowMs() + std::max(5, opt_.heartbeat_ms / 4);  // from here, not the turn's start
    bool drained = !(items[0].revents & ZMQ_POLLIN);
    if (drained) caught_up_ms_ = now;
    for (int i = 0; !drained && i < 2000 && (i == 0 || NowMs() < recv_until); ++i) {
      bool got = false;
      try {
        got = net::RecvFrames(router_, &frames, &user_id);
      } catch (const zmq::error_t& e) {
        Log("error", "recv", std::string("broker receive failed: ") + e.what());
      }
      if (!got) {
        drained = true;
        caught_up_ms_ = NowMs();
        break;
      }
      try {
        HandleMessage(frames, user_id, now);
      } catch (const std::exception& e) {  // a thread must not die of one message
        Count([](BrokerCounters& c) { c.malformed++; });
        Log("error", "handle", std::string("dropped a message that could not be handled: ") + e.what());
      }
    }
    try {
      const int64_t after = NowMs();
      StartPass();
      SendOutbox(after);
      Timers(after);
    } catch (const std::exception& e) {
      Log("error", "commit", std::string("broker commit pass failed: ") + e.what());
    }
  }
}

void BrokerImpl::Post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> l(cmd_mu_);
    commands_.push_back(std::move(fn));
  }
  wake_.Notify();
}

void BrokerImpl::RunCommands() {
  std::deque<std::function<void()>> todo;
  {
    std::lock_guard<std::mutex> l(cmd_mu_);
    todo.swap(commands_);
  }
  for (auto& fn : todo) fn();
}

WorkerState* BrokerImpl::ByRid(const std::string& rid) {
  auto it = rid_to_worker_.find(rid);
  if (it == rid_to_worker_.end()) return nullptr;
  auto w = workers_.find(it->second);
  return w == workers_.end() ? nullptr : &w->second;
}

void BrokerImpl::HandleMessage(const std::vector<std::string>& frames, const std::string& user_id, int64_t now) {
  Count([](BrokerCounters& c) { c.messages_in++; });
  if (frames.size() < 2) {
    Count([](BrokerCounters& c) { c.malformed++; });
    return;
  }
  const std::string& rid = frames[0];
  proto::Message m;
  Status s = proto::Decode(net::Views(frames, 1), &m);
  if (!s.ok()) {
    uint8_t version = 0;
    if (proto::IsOtherVersion(frames[1], &version)) {
      Count([](BrokerCounters& c) { c.refused++; });
      Log("warning", "version", "refused a worker speaking protocol version " + std::to_string(version) +
                                    " (this broker speaks " + std::to_string(proto::kVersion) + ")");
      Refuse(rid, "protocol version " + std::to_string(version) + " is not supported: this broker speaks version " +
                      std::to_string(proto::kVersion) + "; update the worker or the host so they match");
      return;
    }
    Count([](BrokerCounters& c) { c.malformed++; });
    Log("warning", "malformed", "dropped a malformed message: " + s.message());
    const std::string& header = frames[1];
    if (header.size() == proto::kHeaderSize && static_cast<uint8_t>(header[5]) == static_cast<uint8_t>(proto::Cmd::kHello)) {
      // A worker that cannot say HELLO right must hear why, not wait for an answer that never comes.
      Count([](BrokerCounters& c) { c.refused++; });
      Refuse(rid, "malformed HELLO: " + s.message() + " (this broker speaks protocol version " +
                      std::to_string(proto::kVersion) + ")");
    }
    return;
  }
  if (m.cmd == proto::Cmd::kHello) return HandleHello(rid, user_id, m, now);
  WorkerState* w = ByRid(rid);
  if (w == nullptr || !w->online) {
    Count([](BrokerCounters& c) { c.refused++; });
    Refuse(rid, "unknown worker: say HELLO first");
    return;
  }
  w->last_seen_ms = now;
  switch (m.cmd) {
    case proto::Cmd::kReady: {
      const int capacity = w->capacity;
      UpdateSlot(w->id, [&](Slot& s) { s.credit = std::min(s.credit + static_cast<int>(m.credit), capacity); });
      AddAsking(w->id, static_cast<int>(m.credit));
      dispatch_dirty_ = true;
      break;
    }
    case proto::Cmd::kHeartbeat:
      break;
    case proto::Cmd::kProgress: {
      if (!Holds(*w, m.job_id, m.token)) {
        if (!RecentlyEnded(*w, m.job_id, m.token)) RefuseForeign(*w, m);  // (else late: dropped)
        break;
      }
      if (store_->Progress(m.job_id, m.token, m.json).ok()) {
        Emit({{"type", "progress"}, {"job_id", FormatJobId(m.job_id)}, {"worker", w->id},
              {"progress", json::parse(m.json.empty() ? "null" : m.json, nullptr, false)}});
      }
      break;
    }
    case proto::Cmd::kResult:
    case proto::Cmd::kFail: {
      if (!Holds(*w, m.job_id, m.token) && !RecentlyEnded(*w, m.job_id, m.token)) {
        // Not held by this connection: a resend of a result recorded before (the store recognises it and
        // answers duplicate, or refuses a stale run) only when this worker ran the job last; else refused here.
        Job j;
        if (!store_->Get(m.job_id, false, &j).ok() || j.worker_id != w->id) {
          RefuseForeign(*w, m);
          proto::Message nack;
          nack.cmd = proto::Cmd::kNack;
          nack.job_id = m.job_id;
          nack.token = m.token;
          nack.reason = "result refused: this worker does not hold job " + FormatJobId(m.job_id) + "'s lease";
          Send(*w, nack);
          break;
        }
      }
      Finishing(m.job_id, +1);
      results_.push_back(PendingResult{w->id, std::move(m)});
      break;
    }
    case proto::Cmd::kCancelled: {
      if (!Holds(*w, m.job_id, m.token)) {
        if (!RecentlyEnded(*w, m.job_id, m.token)) RefuseForeign(*w, m);  // (else late: nothing to stop)
        break;
      }
      {
        std::lock_guard<std::mutex> l(mu_);
        w->held.erase(m.job_id);
      }
      Ended(*w, m.job_id, m.token);
      transfers_->AbortRun(m.job_id, m.token);
      Emit({{"type", "cancel_confirmed"}, {"job_id", FormatJobId(m.job_id)}, {"worker", w->id}});
      break;
    }
    case proto::Cmd::kChunk:
      HandleChunk(*w, m);
      break;
    case proto::Cmd::kBye:
      LoseWorker(*w, "worker " + w->id + " left", false, now);
      break;
    case proto::Cmd::kCaps: {
      std::shared_ptr<const Capabilities> caps;
      Status cs = caps_pool_.Intern(m.caps_json, &caps);
      if (!cs.ok()) {
        Log("warning", "caps:" + w->id, "worker " + w->id + " sent bad capabilities: " + cs.message());
        break;
      }
      {
        std::lock_guard<std::mutex> l(mu_);
        w->caps = caps;
      }
      UpdateSlot(w->id, [&](Slot& s) { s.caps = caps; });
      SetCandidate(*w);
      dispatch_dirty_ = true;
      Emit({{"type", "worker"}, {"event", "changed"}, {"worker", WorkerJson(*w)}});
      break;
    }
    default:
      Count([](BrokerCounters& c) { c.malformed++; });
      Log("warning", "direction", std::string("dropped a ") + proto::CmdName(m.cmd) + " sent by a worker");
      break;
  }
}

void BrokerImpl::HandleHello(const std::string& rid, const std::string& user_id, proto::Message& m, int64_t now) {
  // Every check first: a refused HELLO changes nothing.
  const std::string refusal = IdentityRefusal(rid, user_id, m, now);
  if (!refusal.empty()) {
    Count([](BrokerCounters& c) { c.refused++; });
    Log("warning", "hello:" + m.worker_id,
        "refused a HELLO as worker " + m.worker_id + (user_id.empty() ? "" : " (key " + user_id + ")") + ": " + refusal);
    Refuse(rid, refusal);
    return;
  }
  std::shared_ptr<const Capabilities> caps;
  Status cs = caps_pool_.Intern(m.caps_json, &caps);
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
        releases_.push_back(PendingRelease{j.id, j.lease_token, "worker " + m.worker_id + " restarted without it", true});
      }
    }
    if (page.next_cursor == 0) break;
    q.cursor = page.next_cursor;
  }

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
    w.caps = caps;
    w.capacity = static_cast<int>(m.capacity);
    w.epoch = ++next_epoch_;
    w.held = kept;
    w.connected_ms = w.last_seen_ms = w.last_renew_ms = now;
    w.online = true;
    w.left_ms = 0;
    w.left_reason.clear();
    if (existing == nullptr) workers_[m.worker_id] = w;
  }
  rid_to_worker_[rid] = m.worker_id;
  ForgetOldestGone();
  WorkerState& stored = workers_[m.worker_id];
  {
    std::lock_guard<std::mutex> l(credit_mu_);
    slots_[stored.id] = Slot{0, stored.epoch, stored.draining, stored.caps};
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
  if (m.info_json.size() > kMaxInfoBytes) return "worker info is too large (at most " + std::to_string(kMaxInfoBytes) + " bytes)";
  if (workers_.find(m.worker_id) == workers_.end() || !workers_.at(m.worker_id).online) {
    size_t online = 0;
    for (const auto& [id, w] : workers_) online += w.online;
    if (online >= opt_.max_workers) {
      return "busy: this broker already serves " + std::to_string(online) + " workers (at most " +
             std::to_string(opt_.max_workers) + ")";
    }
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
    return "";
  }
  // Plain text (loopback): a live worker's id from another connection is refused, unless the HELLO proves it
  // is that worker by naming every lease it holds (tokens nobody else can know).
  auto it = workers_.find(m.worker_id);
  if (it == workers_.end() || !it->second.online || it->second.rid == rid) return "";
  const WorkerState& live = it->second;
  if (!live.held.empty()) {
    std::set<uint64_t> proven;  // distinct leases: naming one twice proves nothing more
    for (const proto::Held& h : m.held) {
      if (Holds(live, h.job_id, h.token)) proven.insert(h.job_id);
    }
    if (proven.size() == live.held.size()) return "";
  }
  return "busy: worker " + m.worker_id + " is connected on another link (heard from " +
         std::to_string(now - live.last_seen_ms) + " ms ago); if that link was this worker's, try again once the "
         "broker has let it go; else give this worker its own worker_id";
}

bool BrokerImpl::Holds(const WorkerState& w, uint64_t job, uint64_t token) {
  auto held = w.held.find(job);
  return held != w.held.end() && held->second == token;
}

void BrokerImpl::RefuseForeign(const WorkerState& w, const proto::Message& m) {
  Count([](BrokerCounters& c) { c.foreign_lease_messages++; });
  Log("warning", "foreign:" + w.id,
      std::string("refused a ") + proto::CmdName(m.cmd) + " about job " + FormatJobId(m.job_id) + " from worker " + w.id +
          (w.key.empty() ? "" : " (key " + w.key + ")") + ": that connection does not hold the job's lease");
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
    if (w == workers_.end()) offline.emplace_back(0, id);
    else if (!w->second.online) offline.emplace_back(w->second.left_ms, id);
  }
  std::sort(offline.begin(), offline.end());
  for (size_t i = 0; i < offline.size() && ids >= kMaxIdsPerKey; ++i, --ids) bound_keys_.erase(offline[i].second);
  bound_keys_[worker_id] = key;
  if (opt_.worker_keys_path.empty()) return;
  std::string text;
  for (const auto& [id, k] : bound_keys_) text += k + "\t" + id + "\n";
  // A new worker id (rare): a small synced write on the loop. Should it fail, the binding holds in memory.
  Status s = Env::Default()->WriteFileAtomically(opt_.worker_keys_path, text);
  if (!s.ok()) Log("warning", "bindings", "could not keep worker identities in " + opt_.worker_keys_path + ": " + s.ToString());
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

void BrokerImpl::ForgetOldestGone() {
  const size_t most = 2 * opt_.max_workers;  // online, and gone within the hour
  if (workers_.size() <= most) return;
  std::vector<std::pair<int64_t, std::string>> gone;
  for (const auto& [id, w] : workers_) {
    if (!w.online) gone.emplace_back(w.left_ms, id);
  }
  std::sort(gone.begin(), gone.end());
  std::lock_guard<std::mutex> l(mu_);
  for (size_t i = 0; i < gone.size() && workers_.size() > most; ++i) workers_.erase(gone[i].second);
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

void BrokerImpl::Ended(WorkerState& w, uint64_t job, uint64_t token) {
  w.ended.emplace_back(job, token);
  if (w.ended.size() > kEndedRunsKept) w.ended.pop_front();
}

bool BrokerImpl::RecentlyEnded(const WorkerState& w, uint64_t job, uint64_t token) {
  return std::find(w.ended.begin(), w.ended.end(), std::make_pair(job, token)) != w.ended.end();
}

void BrokerImpl::SetCandidate(const WorkerState& w, bool new_connection) {
  std::lock_guard<std::mutex> l(retry_mu_);
  Candidate& c = candidates_[w.id];
  c.caps = w.caps;
  c.draining = w.draining;
  if (new_connection) c.asking = 0;  // its credit starts over
}

void BrokerImpl::RemoveCandidate(const std::string& worker_id) {
  std::lock_guard<std::mutex> l(retry_mu_);
  candidates_.erase(worker_id);
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

// ---------------------------------------------------------------------------------------------------------
// One commit per turn: results, failures, releases and dispatches together

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
        if (ps.IsBusy()) {  // a file's last chunk is still being written: the result waits for it
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
  if (dispatch_dirty_) {
    dispatch_dirty_ = false;
    // Credits are reserved now (the hook may spend them meanwhile) and given back for takes that find nothing.
    std::vector<std::pair<std::string, std::shared_ptr<const Capabilities>>> takes;
    {
      std::lock_guard<std::mutex> l(credit_mu_);
      for (auto& [id, slot] : slots_) {
        if (slot.draining) continue;
        for (; slot.credit > 0; --slot.credit) {
          takes.emplace_back(id, slot.caps);
          pass->dispatches.push_back(BrokerPass::DispatchItem{id, slot.epoch, nullptr, Status()});
        }
      }
    }
    for (size_t i = 0; i < takes.size(); ++i) {
      BrokerPass::DispatchItem& d = pass->dispatches[i];
      batch.Take(TakeFor(takes[i].first, takes[i].second), &d.lease, &d.status, &d.early);
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
    if (SendJob(wit->second, *d.lease, now)) Count([](BrokerCounters& c) { c.dispatched++; c.dispatched_early++; });
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
    if (SendJob(wit->second, l, now)) Count([](BrokerCounters& c) { c.dispatched++; c.dispatched_on_arrival++; });
  }
}

// Sends one leased job (its credit already spent). A job that cannot be sent goes back to the queue
// without counting an attempt.
bool BrokerImpl::SendJob(WorkerState& w, const Lease& l, int64_t now) {
  ForgetRequirements(l.job_id);
  {
    proto::Message job;
    job.cmd = proto::Cmd::kJob;
    job.job_id = l.job_id;
    job.token = l.token;
    job.attempt = static_cast<uint32_t>(l.attempt);
    job.timeout_ms = l.deadline_ms ? std::max<int64_t>(1, l.deadline_ms - now) : 0;
    job.prompt_json = l.job.prompt;
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

TakeOptions BrokerImpl::TakeFor(const std::string& worker_id, std::shared_ptr<const Capabilities> caps) {
  TakeOptions o;
  o.worker_id = worker_id;
  o.lease_ms = lease_ms_;
  o.max_scan = opt_.max_scan;
  o.default_timeout_ms = opt_.default_run_timeout_ms;
  o.filter = [this, caps, worker_id](uint64_t job, const PromptLoader& load) {
    auto req = RequirementsOf(job, &load);
    return req != nullptr && CanRun(*caps, *req) && !PreferOthers(worker_id, job, *req);
  };
  return o;
}

// The dispatch hook's choice, inside an enqueuer's commit group with the store's lock held: every idle
// worker takes what it can run, highest priority first, as the loop's own dispatch would.
void BrokerImpl::ChooseOnArrival(DispatchContext& ctx) {
  std::lock_guard<std::mutex> l(credit_mu_);
  for (auto& [id, slot] : slots_) {
    if (slot.draining) continue;
    while (slot.credit > 0) {
      const Lease* lease = ctx.Take(TakeFor(id, slot.caps));
      if (lease == nullptr) break;
      slot.credit--;
      hook_epoch_[lease->job_id] = slot.epoch;
    }
  }
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

// ---------------------------------------------------------------------------------------------------------
// Heartbeats, liveness, leases, stats

void BrokerImpl::Timers(int64_t now) {
  const int64_t hb = opt_.heartbeat_ms;
  const int64_t window = hb * opt_.liveness;
  const int64_t horizon = now - caught_up_ms_ > kForceLivenessFactor * window ? now : caught_up_ms_;
  for (auto& [id, w] : workers_) {
    if (!w.online) continue;
    if (horizon - w.last_seen_ms > window) {
      Count([](BrokerCounters& c) { c.workers_lost++; });
      LoseWorker(w, "worker " + w.id + " stopped answering (no message for " + std::to_string(now - w.last_seen_ms) + " ms)",
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
      json e = {{"type", "stats"},        {"counts", counts},  {"paused", st.paused},
                {"workers_online", online}, {"workers_busy", busy}, {"finished_last_minute", st.finished_last_minute},
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
    w.caps = std::make_shared<Capabilities>();
  }
  dispatch_dirty_ = true;
  Emit({{"type", "worker"}, {"event", "left"}, {"reason", reason}, {"worker", WorkerJson(w)}});
}

// ---------------------------------------------------------------------------------------------------------
// Sending

bool BrokerImpl::SendTo(const std::string& rid, const proto::Message& m) {
  const bool ok = net::SendFrames(router_, &rid, proto::Encode(m));
  Count([&](BrokerCounters& c) { ok ? c.messages_out++ : c.unroutable++; });
  if (!ok) {
    Log("warning", std::string("unroutable:") + proto::CmdName(m.cmd),
        std::string("could not send ") + proto::CmdName(m.cmd) + " (peer gone or its queue is full)");
  }
  return ok;
}

bool BrokerImpl::Send(WorkerState& w, const proto::Message& m) {
  w.last_sent_ms = NowMs();
  return SendTo(w.rid, m);
}

void BrokerImpl::Refuse(const std::string& rid, const std::string& reason) {
  proto::Message r;
  r.cmd = proto::Cmd::kRefuse;
  r.reason = reason;
  SendTo(rid, r);
}

// ---------------------------------------------------------------------------------------------------------
// Routing: what jobs need, and why nobody takes one

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

Status BrokerImpl::Explain(uint64_t job_id, std::vector<std::string>* reasons) {
  reasons->clear();
  Job j;
  CMQ_RETURN_IF_ERROR(store_->Get(job_id, false, &j));
  if (j.state != JobState::kPending) return Status::OK();
  auto req = RequirementsOf(job_id, nullptr);
  if (req == nullptr) return Status::Corruption("cannot read the prompt of job " + FormatJobId(job_id));
  std::vector<std::pair<std::string, std::shared_ptr<const Capabilities>>> online;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [id, w] : workers_) {
      if (w.online) online.emplace_back(w.name == w.id ? w.id : w.name + " (" + w.id + ")", w.caps);
    }
  }
  if (online.empty()) {
    reasons->push_back("no worker is connected");
    return Status::OK();
  }
  std::vector<std::string> why;
  for (const auto& [name, caps] : online) {
    auto miss = Mismatches(*caps, *req);
    if (miss.empty()) return Status::OK();  // someone can run it: it waits its turn
    std::string line = "worker " + name + ": ";
    for (size_t i = 0; i < miss.size(); ++i) line += (i ? "; " : "") + miss[i];
    why.push_back(line);
  }
  *reasons = std::move(why);
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------------------
// Requests from other threads

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
    if (it->second.online) SetCandidate(it->second);
    dispatch_dirty_ = true;
    Emit({{"type", "worker"}, {"event", "changed"}, {"worker", WorkerJson(it->second)}});
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
        if (e.to == JobState::kPending) dispatch = true;
        if (e.to != JobState::kPending) ForgetRequirements(e.job_id);
        if (IsFinished(e.to)) {
          std::lock_guard<std::mutex> l(retry_mu_);
          tried_.erase(e.job_id);
        }
        // A run ended by the store itself (a cancel, a timeout, an expired lease) must stop on its worker.
        if (e.from == JobState::kRunning && !e.worker_id.empty() &&
            (e.to == JobState::kCancelled || e.reason == "timeout" || e.reason == "lease expired")) {
          stop_runs.emplace_back(e.job_id, e.worker_id, e.to == JobState::kCancelled ? "cancelled: " + e.reason : e.reason);
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

// ---------------------------------------------------------------------------------------------------------
// Views

int BrokerImpl::CreditOf(const WorkerState& w) {
  std::lock_guard<std::mutex> l(credit_mu_);
  auto it = slots_.find(w.id);
  return w.online && it != slots_.end() ? it->second.credit : 0;
}

json BrokerImpl::WorkerJson(const WorkerState& w) {
  json running = json::array();
  for (const auto& [job, token] : w.held) running.push_back(FormatJobId(job));
  json info = json::parse(w.info_json.empty() ? "{}" : w.info_json, nullptr, false);
  json j = {{"id", w.id},
            {"name", w.name},
            {"online", w.online},
            {"draining", w.draining},
            {"capacity", w.capacity},
            {"credit", CreditOf(w)},
            {"running", running},
            {"plugin_version", w.plugin_version},
            {"comfyui_version", w.comfyui_version},
            {"info", info.is_discarded() ? json::object() : info},
            {"connected_at", w.connected_ms},
            {"last_seen", w.last_seen_ms},
            {"node_classes", w.online ? w.caps->node_classes() : w.classes_seen},
            {"combo_inputs", w.online ? w.caps->combo_inputs() : w.inputs_seen},
            {"models", w.online ? w.caps->combo_choices() : w.choices_seen},
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
  for (const auto& [id, w] : workers_) arr.push_back(WorkerJson(w));
  return Dump(arr);
}

void BrokerImpl::Log(const std::string& level, const std::string& key, const std::string& message) {
  const int64_t now = NowMs();
  {
    std::lock_guard<std::mutex> l(mu_);
    if (last_log_.size() > 1024) last_log_.clear();  // keys may name what peers sent: bounded
    auto& last = last_log_[key];
    if (now - last < 5000) return;  // the same kind of line at most every 5 s
    last = now;
  }
  Emit({{"type", "log"}, {"level", level}, {"message", message}});
}

}  // namespace

Status Broker::Start(Store* store, const BrokerOptions& options, std::unique_ptr<Broker>* broker) {
  if (store == nullptr) return Status::InvalidArgument("the broker needs a store");
  auto impl = std::make_unique<BrokerImpl>(store, options);
  CMQ_RETURN_IF_ERROR(impl->Init());
  *broker = std::move(impl);
  return Status::OK();
}

}  // namespace comfymq
