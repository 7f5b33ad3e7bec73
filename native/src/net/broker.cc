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
#include <random>

#include "comfymq/curve.h"
#include "net/broker_impl.h"
#include "net/zmq_frames.h"
#include "util/process.h"

namespace comfymq {
namespace net {

Status BrokerImpl::Init() {
  if (opt_.heartbeat_ms < 10 || opt_.heartbeat_ms > 600000)
    return Status::InvalidArgument("heartbeat must be 10 ms..10 min");
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
  LoadDrained();
  CMQ_RETURN_IF_ERROR(ArtifactWriter::Open(opt_.artifact_env, opt_.artifact_root, &artifacts_));
  // Written chunks come back to the loop as commands (the I/O thread never touches the loop's state).
  transfers_ = std::make_unique<net::Transfers>(
      artifacts_.get(), [this](net::Transfers::Done d) { Post([this, d = std::move(d)] { HandleChunkDone(d); }); });
  // Inputs read for workers come back to the loop the same way (the reader never touches the loop's state).
  inputs_ = std::make_unique<net::InputFiles>(opt_.inputs_dir, Env::Default(), [this](net::InputFiles::Chunk c) {
    Post([this, c = std::move(c)]() mutable { HandleInputRead(std::move(c)); });
  });
  std::mt19937_64 rng(std::random_device{}());
  receipt_key_ = SipKey{rng(), rng()};
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
          "PLAIN TEXT worker links on " + opt_.bind +
              ": anyone on the network can join and read jobs (explicit opt-out)");
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
  inputs_.reset();     // likewise
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
      CommitBatch(store_, &batch).IgnoreError();  // best effort at stop: an unsent lease also expires
    }
  }
  try {
    router_.close();
  } catch (const zmq::error_t&) {}
  zap_.reset();
  events_.Close();
  return Status::OK();
}

void BrokerImpl::Loop() {
  NameThisThread("cmq-broker");
  caught_up_ms_ = NowMs();
  // Timers walk every online worker: once a tick, not once a turn (a farm of 1,000 idle workers sends 1,000
  // heartbeats a second, mostly one a turn). Pings, liveness and renewals run at most a tick late.
  const int64_t tick = std::max(1, opt_.heartbeat_ms / 20);
  int64_t timers_ms = 0;
  std::vector<std::string> frames;
  std::string user_id;
  while (!stop_) {
    zmq::pollitem_t items[] = {{router_.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, wake_.fd(), ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 2, std::chrono::milliseconds(std::max<int64_t>(10, tick)));
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
      if (after - timers_ms >= tick) {
        timers_ms = after;
        Timers(after);
      }
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
      Log("warning", "version",
          "refused a worker speaking protocol version " + std::to_string(version) + " (this broker speaks " +
              std::to_string(proto::kVersion) + ")");
      Refuse(rid, "protocol version " + std::to_string(version) + " is not supported: this broker speaks version " +
                      std::to_string(proto::kVersion) + "; update the worker or the host so they match");
      return;
    }
    Count([](BrokerCounters& c) { c.malformed++; });
    Log("warning", "malformed", "dropped a malformed message: " + s.message());
    const std::string& header = frames[1];
    if (header.size() == proto::kHeaderSize &&
        static_cast<uint8_t>(header[5]) == static_cast<uint8_t>(proto::Cmd::kHello)) {
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
    case proto::Cmd::kHeartbeat: break;
    case proto::Cmd::kProgress: {
      if (!Holds(*w, m.job_id, m.token)) {
        if (!RecentlyEnded(*w, m.job_id, m.token)) RefuseForeign(*w, m);  // (else late: dropped)
        break;
      }
      if (store_->Progress(m.job_id, m.token, m.json).ok()) {
        Emit({{"type", "progress"},
              {"job_id", FormatJobId(m.job_id)},
              {"worker", w->id},
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
    case proto::Cmd::kChunk: HandleChunk(*w, m); break;
    case proto::Cmd::kFetch: HandleFetch(*w, m); break;
    case proto::Cmd::kInputs:
      SetCandidateInputs(w->id, std::move(m.inputs));
      dispatch_dirty_ = true;
      break;
    case proto::Cmd::kBye: LoseWorker(*w, "worker " + w->id + " left", false, now); break;
    case proto::Cmd::kCaps: {
      std::shared_ptr<const Capabilities> caps;
      uint64_t caps_class = 0;
      Status cs = caps_pool_.Intern(m.caps_json, &caps, &caps_class);
      if (!cs.ok()) {
        Log("warning", "caps:" + w->id, "worker " + w->id + " sent bad capabilities: " + cs.message());
        break;
      }
      {
        std::lock_guard<std::mutex> l(mu_);
        w->caps = caps;
        w->caps_class = caps_class;
      }
      UpdateSlot(w->id, [&](Slot& s) {
        s.caps = caps;
        s.caps_class = caps_class;
      });
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

}  // namespace net

Status Broker::Start(Store* store, const BrokerOptions& options, std::unique_ptr<Broker>* broker) {
  if (store == nullptr) return Status::InvalidArgument("the broker needs a store");
  auto impl = std::make_unique<net::BrokerImpl>(store, options);
  CMQ_RETURN_IF_ERROR(impl->Init());
  *broker = std::move(impl);
  return Status::OK();
}

}  // namespace comfymq
