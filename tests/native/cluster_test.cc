// The cluster, in one process: a broker and worker clients talking over real ZeroMQ sockets on 127.0.0.1,
// with short heartbeats. Results with files, routing by capabilities (and the reasons a job waits), cancel,
// silent workers, late results, protocol versions, CURVE keys, garbage frames and broker restarts.
// (tests/python/test_cluster.py runs the same ground with real processes.)
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <zmq.hpp>

#include "cluster_fixture.h"
#include "comfymq/broker.h"
#include "comfymq/curve.h"
#include "comfymq/store.h"
#include "comfymq/worker_client.h"
#include "net/protocol.h"
#include "store/store_batch.h"
#include "store/token_codec.h"
#include "test_util.h"
#include "testing/mem_env.h"
#include "util/sha256.h"

namespace comfymq {
namespace {

TEST_F(ClusterTest, AJobRunsAndItsFilesArriveWhole) {
  WorkerClient* w = AddWorker("gpu-1", Caps({"EmptyImage", "SaveImage"}));
  uint64_t id = Enqueue(Graph());
  JobAssignment a;
  ASSERT_TRUE(w->NextJob(5000, &a));
  EXPECT_EQ(a.job_id, id);
  EXPECT_EQ(a.attempt, 1);
  EXPECT_EQ(json::parse(a.prompt_json), json::parse(Graph()));
  EXPECT_EQ(json::parse(a.extra_json)["prompt_id"], Get(id).prompt_id);
  ASSERT_TRUE(WaitFor([&] { return Get(id).state == JobState::kRunning; }));
  EXPECT_EQ(Get(id).worker_id, "gpu-1");
  // Progress reaches the store.
  ASSERT_TRUE(w->Progress(a.job_id, a.token, "{\"value\": 3, \"max\": 10}").ok());
  ASSERT_TRUE(WaitFor([&] { return !Get(id).progress.empty(); }));
  // Two files, one of several chunks.
  std::string big(3 * proto::kChunkBytes + 12345, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 + 3);
  std::ofstream(tmp_.Sub("out_big.bin"), std::ios::binary) << big;
  std::ofstream(tmp_.Sub("out.png"), std::ios::binary) << "PNG DATA";
  std::ofstream(tmp_.Sub("empty.txt"), std::ios::binary) << "";
  ASSERT_TRUE(w->Complete(a.job_id, a.token, "{\"2\": {\"images\": []}}",
                          {{tmp_.Sub("out_big.bin"), "big.bin", "application/octet-stream"},
                           {tmp_.Sub("out.png"), "out.png", "image/png"},
                           {tmp_.Sub("empty.txt"), "empty.txt", "text/plain"}})
                  .ok());
  json ack = NextWorkerEvent(w, "ack");
  ASSERT_FALSE(ack.is_null());
  EXPECT_EQ(ack["kind"], "recorded");
  Job done = Get(id);
  EXPECT_EQ(done.state, JobState::kSucceeded);
  json arts = json::parse(done.artifacts);
  ASSERT_EQ(arts.size(), 3u);
  EXPECT_EQ(arts[0]["path"], FormatJobId(id) + "/big.bin");
  EXPECT_EQ(arts[0]["sha256"], Sha256::Hex(big));
  EXPECT_EQ(arts[1]["mime"], "image/png");
  EXPECT_EQ(ReadFile(tmp_.Sub("artifacts/" + FormatJobId(id) + "/big.bin")), big);
  EXPECT_EQ(ReadFile(tmp_.Sub("artifacts/" + FormatJobId(id) + "/out.png")), "PNG DATA");
  EXPECT_EQ(arts[2]["size"], 0);
  BrokerCounters c = broker_->Counters();
  EXPECT_EQ(c.results, 1u);
  EXPECT_GE(c.chunks, 6u);
}

// A result of thousands of files (the frames of a video saved one by one) under a descriptor limit far below
// their count: the host keeps every file finished until the result arrives, holding no descriptor for any;
// and the chunks (each ending in a file sync) do not keep the broker from renewing the lease meanwhile.
TEST_F(ClusterTest, AResultOfThousandsOfFilesArrivesUnderALowDescriptorLimit) {
  WorkerClient* w = AddWorker("gpu-1", Caps({"EmptyImage", "SaveImage"}));
  uint64_t id = Enqueue(Graph());
  JobAssignment a;
  ASSERT_TRUE(w->NextJob(5000, &a));
  constexpr int kFiles = 2000;
  std::vector<OutputFile> files;
  ASSERT_EQ(::mkdir(tmp_.Sub("frames").c_str(), 0755), 0);
  for (int i = 0; i < kFiles; ++i) {
    const std::string name = "frame_" + std::to_string(i) + ".png";
    std::ofstream(tmp_.Sub("frames/" + name), std::ios::binary) << "frame " << i;
    files.push_back({tmp_.Sub("frames/" + name), name, "image/png"});
  }
  struct rlimit old_limit;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &old_limit), 0);
  size_t open_now = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd"); it != std::filesystem::directory_iterator();
       ++it)
    open_now++;
  struct rlimit low = old_limit;
  low.rlim_cur = std::min<rlim_t>(old_limit.rlim_cur, open_now + 200);  // 200 spare: far fewer than the files
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  Status s = w->Complete(a.job_id, a.token, "{\"2\": {\"images\": []}}", files);
  json ack = s.ok() ? NextWorkerEvent(w, "ack", 60000) : nullptr;
  ::setrlimit(RLIMIT_NOFILE, &old_limit);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_FALSE(ack.is_null());
  EXPECT_EQ(ack["kind"], "recorded");
  Job done = Get(id);
  EXPECT_EQ(done.state, JobState::kSucceeded) << done.error;
  json arts = json::parse(done.artifacts);
  ASSERT_EQ(arts.size(), static_cast<size_t>(kFiles));
  EXPECT_EQ(arts[kFiles - 1]["path"], FormatJobId(id) + "/frame_" + std::to_string(kFiles - 1) + ".png");
  EXPECT_EQ(ReadFile(tmp_.Sub("artifacts/" + FormatJobId(id) + "/frame_1234.png")), "frame 1234");
}

TEST_F(ClusterTest, CreditLimitsWhatAWorkerIsGiven) {
  WorkerClient* w = AddWorker("gpu-1", Caps({"EmptyImage", "SaveImage"}), 2);
  for (int i = 0; i < 5; ++i) Enqueue(Graph());
  JobAssignment a, b, c;
  ASSERT_TRUE(w->NextJob(5000, &a));
  ASSERT_TRUE(w->NextJob(5000, &b));
  EXPECT_FALSE(w->NextJob(300, &c)) << "a worker with capacity 2 must not be given a third job";
  ASSERT_TRUE(w->Fail(a.job_id, a.token, "{\"type\": \"execution_error\", \"message\": \"boom\"}", false).ok());
  ASSERT_TRUE(w->NextJob(5000, &c));  // the freed slot brings the next one
  // (The worker frees the slot before its FAIL is recorded: READY may overtake it, so wait for the record.)
  EXPECT_TRUE(WaitFor([&] { return Get(a.job_id).state == JobState::kFailed; }));
}

TEST_F(ClusterTest, IdleWorkersGetArrivingJobsInTheEnqueueCommitAndCreditIsNeverOverspent) {
  constexpr int kCapacity = 2, kWorkers = 2, kProducers = 4, kPerProducer = 50;
  std::vector<WorkerClient*> ws;
  for (int i = 0; i < kWorkers; ++i)
    ws.push_back(AddWorker("gpu-" + std::to_string(i), Caps({"EmptyImage", "SaveImage"}), kCapacity));
  auto idle = [&] {  // every worker has told the broker it wants kCapacity jobs
    json all = json::parse(broker_->WorkersJson());
    int ready = 0;
    for (const json& w : all) ready += w["online"].get<bool>() && w["credit"] == kCapacity;
    return ready == kWorkers;
  };
  // A job arriving while a worker is idle is leased in its enqueue's commit. (The loop's once-a-second look for
  // work holds the credits for a moment; a job arriving just then goes out through the loop instead: correct,
  // only not on arrival. So up to three single jobs, one at a time; at least one must go on arrival.)
  int singles = 0;
  uint64_t on_arrival = 0;
  while (singles < 3 && on_arrival == 0) {
    ASSERT_TRUE(WaitFor(idle));
    uint64_t id = Enqueue(Graph());
    singles++;
    JobAssignment a;
    ASSERT_TRUE(ws[0]->NextJob(5000, &a) || ws[1]->NextJob(5000, &a));
    EXPECT_EQ(a.job_id, id);
    // the broker counts a dispatch after its send returns, which the worker may beat
    ASSERT_TRUE(WaitFor([&] { return broker_->Counters().dispatched == static_cast<uint64_t>(singles); }));
    on_arrival = broker_->Counters().dispatched_on_arrival;
    WorkerClient* owner = Get(id).worker_id == "gpu-0" ? ws[0] : ws[1];
    ASSERT_TRUE(owner->Complete(a.job_id, a.token, "{}", {}).ok());
  }
  EXPECT_EQ(on_arrival, 1u) << "an idle worker's job is leased with its enqueue";

  // Producers race the loop's own dispatch; a worker holding kCapacity jobs must never be sent another.
  std::atomic<int> done{0}, overspent{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerProducer; ++i) Enqueue(Graph());
    });
  }
  for (WorkerClient* w : ws) {
    threads.emplace_back([&, w] {
      std::deque<JobAssignment> held;
      auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (done < kProducers * kPerProducer && std::chrono::steady_clock::now() < until) {
        JobAssignment j;
        if (held.size() < static_cast<size_t>(kCapacity)) {
          if (w->NextJob(20, &j)) {
            held.push_back(j);
            continue;
          }
          if (held.empty()) continue;
        } else if (w->NextJob(20, &j)) {
          overspent++;  // nothing else may be in flight while it holds kCapacity
        }
        EXPECT_TRUE(w->Complete(held.front().job_id, held.front().token, "{}", {}).ok());
        held.pop_front();
        done++;
      }
      while (!held.empty()) {
        EXPECT_TRUE(w->Complete(held.front().job_id, held.front().token, "{}", {}).ok());
        held.pop_front();
        done++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(overspent.load(), 0);
  ASSERT_TRUE(WaitFor(
      [&] {
        StoreStats st;
        EXPECT_TRUE(store_->Stats(&st).ok());
        return st.counts[static_cast<int>(JobState::kSucceeded)] ==
               static_cast<uint64_t>(singles + kProducers * kPerProducer);
      },
      20000));
  BrokerCounters c = broker_->Counters();
  EXPECT_EQ(c.results, static_cast<uint64_t>(singles + kProducers * kPerProducer));
  EXPECT_EQ(c.duplicates, 0u);
  EXPECT_EQ(c.stale_results, 0u);
  std::cout << "[cluster] dispatched " << c.dispatched << ", on arrival " << c.dispatched_on_arrival << "\n";
}

TEST_F(ClusterTest, JobsGoOnlyToWorkersThatCanRunThemAndWaitingJobsSayWhy) {
  const std::string base = Caps({"EmptyImage", "SaveImage", "CheckpointLoaderSimple"},
                                {{"CheckpointLoaderSimple.ckpt_name", {"sd15.safetensors"}}});
  const std::string with_sdxl =
      Caps({"EmptyImage", "SaveImage", "CheckpointLoaderSimple"},
           {{"CheckpointLoaderSimple.ckpt_name", {"sd15.safetensors", "sdxl_base.safetensors"}}});
  WorkerClient* a = AddWorker("gpu-a", base);
  WorkerClient* b = AddWorker("gpu-b", Caps({"EmptyImage"}));
  uint64_t needs_sdxl = Enqueue(Graph("sdxl_base.safetensors"));
  uint64_t plain = Enqueue(Graph("sd15.safetensors"));
  JobAssignment got;
  ASSERT_TRUE(a->NextJob(5000, &got));
  EXPECT_EQ(got.job_id, plain) << "the sdxl job is first in line, but gpu-a lacks the checkpoint";
  EXPECT_FALSE(b->NextJob(300, &got));
  // The waiting job says why, per worker.
  std::vector<std::string> why;
  ASSERT_TRUE(WaitFor([&] { return broker_->Explain(needs_sdxl, &why).ok() && why.size() == 2; }));
  std::sort(why.begin(), why.end());
  EXPECT_EQ(why[0], "worker gpu-a: missing checkpoint sdxl_base.safetensors");
  EXPECT_NE(why[1].find("worker gpu-b: no node class CheckpointLoaderSimple"), std::string::npos) << why[1];
  // A worker with the model joins: it runs there.
  WorkerClient* c = AddWorker("gpu-c", with_sdxl);
  ASSERT_TRUE(c->NextJob(5000, &got));
  EXPECT_EQ(got.job_id, needs_sdxl);
  EXPECT_EQ(Get(needs_sdxl).worker_id, "gpu-c");
  ASSERT_TRUE(broker_->Explain(plain, &why).ok());
  EXPECT_TRUE(why.empty());  // not pending
}

TEST_F(ClusterTest, AWaitingJobAlwaysSaysWhyNoWorkerTakesIt) {
  std::vector<std::string> why;
  // No worker has ever joined.
  const uint64_t id = Enqueue(Graph());
  ASSERT_TRUE(broker_->Explain(id, &why).ok());
  ASSERT_EQ(why.size(), 1u);
  EXPECT_NE(why[0].find("no worker has joined"), std::string::npos) << why[0];
  ASSERT_TRUE(broker_->ExplainPrompt(Graph(), &why).ok());
  ASSERT_EQ(why.size(), 1u);
  // Every capable worker is draining (it joined, so it would take the job but for that).
  ASSERT_TRUE(store_->SetPaused(true).ok());  // the worker joins but takes nothing
  WorkerClient* w = AddWorker("gpu-1", Caps({"EmptyImage", "SaveImage"}));
  ASSERT_TRUE(WaitFor([&] { return broker_->Explain(id, &why).ok() && why.empty(); })) << "it could run it";
  ASSERT_TRUE(broker_->Drain("gpu-1", true).ok());
  ASSERT_TRUE(WaitFor([&] { return broker_->Explain(id, &why).ok() && why.size() == 1; }));
  EXPECT_EQ(why[0], "worker gpu-1: draining (it takes no new jobs until it is undrained)");
  // A prompt this worker could not run anyway says both.
  ASSERT_TRUE(broker_->ExplainPrompt(Graph("sdxl.safetensors"), &why).ok());
  ASSERT_EQ(why.size(), 1u);
  EXPECT_NE(why[0].find("no node class CheckpointLoaderSimple; and it is draining"), std::string::npos) << why[0];
  // Every worker went offline.
  ASSERT_TRUE(w->Stop(true).ok());
  ASSERT_TRUE(WaitFor([&] {
    return broker_->Explain(id, &why).ok() && why.size() == 1 &&
           why[0].find("no worker is online (offline: gpu-1)") != std::string::npos;
  })) << (why.empty() ? "" : why[0]);
  // Not an API prompt: a clear error.
  EXPECT_TRUE(broker_->ExplainPrompt("[1, 2]", &why).IsInvalidArgument());
}

TEST_F(ClusterTest, ADrainOutlastsARestartOfTheHost) {
  broker_.reset();
  BrokerOptions bo;
  bo.drained_path = tmp_.Sub("drained_workers");
  StartBroker("tcp://127.0.0.1:*", &bo);
  WorkerClient* w = AddWorker("gpu-1", Caps({"EmptyImage", "SaveImage"}));
  ASSERT_FALSE(NextWorkerEvent(w, "connected").is_null());
  ASSERT_TRUE(broker_->Drain("gpu-1", true).ok());
  ASSERT_TRUE(WaitFor([&] { return json::parse(broker_->WorkersJson())[0]["draining"] == true; }));
  // The host restarts; the worker joins the new broker (same port) by itself.
  broker_.reset();
  StartBroker(endpoint_, &bo);
  ASSERT_FALSE(NextWorkerEvent(w, "connected", 10000).is_null());
  json view = json::parse(broker_->WorkersJson());
  ASSERT_EQ(view.size(), 1u);
  EXPECT_EQ(view[0]["draining"], true) << view;
  const uint64_t id = Enqueue(Graph());
  JobAssignment a;
  EXPECT_FALSE(w->NextJob(500, &a)) << "a drained worker took a job after the restart";
  std::vector<std::string> why;
  ASSERT_TRUE(broker_->Explain(id, &why).ok());
  ASSERT_EQ(why.size(), 1u);
  EXPECT_NE(why[0].find("draining"), std::string::npos) << why[0];
  // Undrained, it takes the job; and that too outlasts a restart.
  ASSERT_TRUE(broker_->Drain("gpu-1", false).ok());
  ASSERT_TRUE(w->NextJob(5000, &a));
  EXPECT_EQ(a.job_id, id);
  EXPECT_EQ(ReadFile(bo.drained_path), "");
}

TEST_F(ClusterTest, TheWorkersViewCountsModelFilesNotEveryChoice) {
  AddWorker("gpu-1", Caps({"CheckpointLoaderSimple", "LoraLoader", "KSampler"},
                          {{"CheckpointLoaderSimple.ckpt_name", {"sd15.safetensors", "sdxl/base.SAFETENSORS"}},
                           {"LoraLoader.lora_name", {"detail.safetensors", "sd15.safetensors"}},
                           {"KSampler.sampler_name", {"euler", "dpmpp_2m", "ddim"}},
                           {"KSampler.scheduler", {"normal", "karras"}}}));
  json view;
  ASSERT_TRUE(WaitFor([&] {
    view = json::parse(broker_->WorkersJson());
    return view.size() == 1 && view[0]["online"] == true;
  }));
  EXPECT_EQ(view[0]["models"], 3) << view[0];  // sd15 (twice), sdxl/base, detail; samplers are no models
  EXPECT_EQ(view[0]["combo_choices"], 9) << view[0];
}

TEST_F(ClusterTest, CancelReachesTheWorkerRunningTheJob) {
  WorkerClient* w = AddWorker("gpu-1", Caps({"EmptyImage", "SaveImage"}));
  uint64_t id = Enqueue(Graph());
  JobAssignment a;
  ASSERT_TRUE(w->NextJob(5000, &a));
  ASSERT_TRUE(store_->Cancel(id, "the user changed their mind").ok());
  json cancel = NextWorkerEvent(w, "cancel");
  ASSERT_FALSE(cancel.is_null());
  EXPECT_EQ(cancel["job_id"], FormatJobId(id));
  EXPECT_NE(cancel["reason"].get<std::string>().find("changed their mind"), std::string::npos);
  ASSERT_TRUE(w->ConfirmCancel(a.job_id, a.token).ok());
  EXPECT_EQ(Get(id).state, JobState::kCancelled);
  // A result the worker sends anyway is refused.
  ASSERT_TRUE(w->Complete(a.job_id, a.token, "{}", {}).ok());
  json nack = NextWorkerEvent(w, "nack");
  ASSERT_FALSE(nack.is_null());
  EXPECT_EQ(Get(id).state, JobState::kCancelled);
}

TEST_F(ClusterTest, ASilentWorkerLosesItsJobToAnother) {
  WorkerClient* quiet = AddWorker("gpu-quiet", Caps({"EmptyImage", "SaveImage"}));
  uint64_t id = Enqueue(Graph());
  JobAssignment a;
  ASSERT_TRUE(quiet->NextJob(5000, &a));
  // Stop without BYE: it simply goes silent, as a killed process would.
  auto t0 = std::chrono::steady_clock::now();
  quiet->Stop(false).IgnoreError();
  WorkerClient* other = AddWorker("gpu-other", Caps({"EmptyImage", "SaveImage"}));
  JobAssignment b;
  ASSERT_TRUE(other->NextJob(5000, &b));
  auto detected = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(b.job_id, id);
  EXPECT_EQ(b.attempt, 2);
  EXPECT_LT(detected, 20 * kHeartbeatMs) << "detection should take about 3 heartbeats";
  ASSERT_TRUE(other->Complete(b.job_id, b.token, "{}", {}).ok());
  ASSERT_FALSE(NextWorkerEvent(other, "ack").is_null());
  Job j = Get(id);
  EXPECT_EQ(j.state, JobState::kSucceeded);
  EXPECT_EQ(json::parse(j.history)[0]["outcome"], "lease_lost");
  EXPECT_EQ(broker_->Counters().workers_lost, 1u);
}

// A store on a MemEnv (so faults can be injected), its broker and one worker "gpu-1" with one slot.
struct MemEnvCluster {
  MemEnv env;
  Env* artifact_env = nullptr;  // nullptr: a real directory
  TempDir tmp;
  StoreOptions so;
  std::unique_ptr<Store> store;
  std::unique_ptr<Broker> broker;
  std::unique_ptr<WorkerClient> worker;

  void Start() {
    so.env = &env;
    so.segment_bytes = 1 << 20;
    ASSERT_TRUE(Store::Open(so, "/store", &store).ok());
    BrokerOptions bo;
    bo.bind = "tcp://127.0.0.1:*";
    bo.heartbeat_ms = kHeartbeatMs;
    bo.liveness = 3;
    bo.artifact_root = artifact_env != nullptr ? "/artifacts" : tmp.Sub("artifacts");
    bo.artifact_env = artifact_env;
    ASSERT_TRUE(Broker::Start(store.get(), bo, &broker).ok());
    WorkerClientOptions wo;
    wo.broker = broker->endpoint();
    wo.worker_id = "gpu-1";
    wo.capabilities_json = Caps({"EmptyImage", "SaveImage"});
    wo.heartbeat_ms = kHeartbeatMs;
    ASSERT_TRUE(WorkerClient::Start(wo, &worker).ok());
  }
  void Stop() {
    worker.reset();
    broker.reset();
  }
};

// The broker's loop does not wait for the disk: while a commit is stuck in a slow sync (here 12 heartbeats,
// four times the liveness window), it keeps exchanging heartbeats, so neither side gives the other up, and
// the result is recorded once the sync returns.
TEST(ClusterSlowDisk, ASlowSyncStallsNoHeartbeat) {
  MemEnvCluster c;
  std::atomic<int> slow_syncs{0};
  c.env.SetFaultHook([&](MemEnv::Op op, const std::string&) {
    if (op == MemEnv::Op::kSync && slow_syncs.load() > 0) {
      slow_syncs--;
      std::this_thread::sleep_for(std::chrono::milliseconds(12 * kHeartbeatMs));
    }
    return Status::OK();
  });
  ASSERT_NO_FATAL_FAILURE(c.Start());
  Store* store = c.store.get();
  Broker* broker = c.broker.get();
  WorkerClient* w = c.worker.get();
  NewJob j;
  j.prompt = Graph();
  EnqueueResult r;
  ASSERT_TRUE(store->Enqueue(j, &r).ok());
  JobAssignment a;
  ASSERT_TRUE(w->NextJob(5000, &a));
  std::string e;
  while (w->NextEvent(0, &e)) {  // the "connected" event
  }
  slow_syncs = 1;
  ASSERT_TRUE(w->Complete(a.job_id, a.token, "{}", {}).ok());
  json ack;
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (ack.is_null() && std::chrono::steady_clock::now() < until) {
    if (!w->NextEvent(20, &e)) continue;
    json ev = json::parse(e);
    EXPECT_NE(ev["type"], "disconnected") << "the worker gave the broker up during a slow sync: " << e;
    if (ev["type"] == "ack") ack = ev;
  }
  ASSERT_FALSE(ack.is_null());
  EXPECT_EQ(ack["kind"], "recorded");
  EXPECT_EQ(slow_syncs.load(), 0) << "the result's commit should have gone through the slow sync";
  BrokerCounters counters = broker->Counters();
  EXPECT_EQ(counters.workers_lost, 0u);
  EXPECT_EQ(counters.results, 1u);
  Job done;
  ASSERT_TRUE(store->Get(r.id, false, &done).ok());
  EXPECT_EQ(done.state, JobState::kSucceeded);
  c.Stop();
}

// The same for the artifact disk: while a result's file is stuck in a slow sync (12 heartbeats), the loop
// goes on: heartbeats flow, and a job enqueued meanwhile reaches a worker before the sync is over.
TEST(ClusterSlowDisk, ASlowArtifactSyncStallsNeitherHeartbeatsNorDispatch) {
  MemEnvCluster c;
  MemEnv artifacts;
  c.artifact_env = &artifacts;
  std::atomic<int> slow_syncs{0};
  std::atomic<bool> in_slow_sync{false};
  artifacts.SetFaultHook([&](MemEnv::Op op, const std::string& path) {
    if (op == MemEnv::Op::kSync && path.find(".cmq-tmp.") != std::string::npos && slow_syncs.exchange(0) > 0) {
      in_slow_sync = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(12 * kHeartbeatMs));
      in_slow_sync = false;
    }
    return Status::OK();
  });
  ASSERT_NO_FATAL_FAILURE(c.Start());
  NewJob j;
  j.prompt = Graph();
  EnqueueResult first, second_job;
  ASSERT_TRUE(c.store->Enqueue(j, &first).ok());
  JobAssignment a;
  ASSERT_TRUE(c.worker->NextJob(5000, &a));
  WorkerClientOptions wo;
  wo.broker = c.broker->endpoint();
  wo.worker_id = "gpu-2";
  wo.capabilities_json = Caps({"EmptyImage", "SaveImage"});
  wo.heartbeat_ms = kHeartbeatMs;
  std::unique_ptr<WorkerClient> gpu2;
  ASSERT_TRUE(WorkerClient::Start(wo, &gpu2).ok());
  ASSERT_TRUE(WaitFor([&] { return json::parse(c.broker->WorkersJson()).size() == 2; }));
  std::string e;
  while (c.worker->NextEvent(0, &e)) {}
  std::ofstream(c.tmp.Sub("out.png"), std::ios::binary) << std::string(5000, 'p');
  slow_syncs = 1;
  ASSERT_TRUE(c.worker->Complete(a.job_id, a.token, "{}", {{c.tmp.Sub("out.png"), "out.png", "image/png"}}).ok());
  ASSERT_TRUE(WaitFor([&] { return in_slow_sync.load(); }));
  ASSERT_TRUE(c.store->Enqueue(j, &second_job).ok());
  JobAssignment b;  // to either worker (gpu-1's slot is free again once it sent its result)
  bool given = false;
  for (int i = 0; i < 250 && !given; ++i) given = gpu2->NextJob(10, &b) || c.worker->NextJob(10, &b);
  ASSERT_TRUE(given);
  EXPECT_EQ(b.job_id, second_job.id);
  EXPECT_TRUE(in_slow_sync.load()) << "the second job waited for the artifact's sync";
  json ack;
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (ack.is_null() && std::chrono::steady_clock::now() < until) {
    if (!c.worker->NextEvent(20, &e)) continue;
    json ev = json::parse(e);
    EXPECT_NE(ev["type"], "disconnected") << "the worker gave the broker up during a slow sync: " << e;
    if (ev["type"] == "ack") ack = ev;
  }
  ASSERT_FALSE(ack.is_null());
  EXPECT_EQ(ack["kind"], "recorded");
  EXPECT_EQ(c.broker->Counters().workers_lost, 0u);
  Job done;
  ASSERT_TRUE(c.store->Get(first.id, false, &done).ok());
  EXPECT_EQ(done.state, JobState::kSucceeded);
  std::string got;
  ASSERT_TRUE(artifacts.ReadFileToString("/artifacts/" + FormatJobId(first.id) + "/out.png", &got).ok());
  EXPECT_EQ(got, std::string(5000, 'p'));
  gpu2.reset();
  c.Stop();
}

// A job goes to its worker while the commit that leased it is still syncing (an early take). When that
// commit fails, the worker is told to stop it, and the token it was given is never handed out again.
TEST(ClusterEarlyLease, AJobSentBeforeItsLeaseFailedToCommitIsCalledBack) {
  MemEnvCluster c;
  c.so.reopen_lease_grace_ms = 0;
  ASSERT_NO_FATAL_FAILURE(c.Start());
  std::unique_ptr<Store>& store = c.store;
  MemEnv& env = c.env;
  WorkerClient* w = c.worker.get();
  NewJob j;
  j.prompt = Graph();
  EnqueueResult first, second;
  ASSERT_TRUE(store->Enqueue(j, &first).ok());
  JobAssignment a1;
  ASSERT_TRUE(w->NextJob(5000, &a1));
  ASSERT_TRUE(store->Enqueue(j, &second).ok());  // waits: the worker's one slot is busy
  ASSERT_TRUE(store->Cancel(first.id, "make room").ok());
  std::string e;
  bool told = false;
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
       !told && std::chrono::steady_clock::now() < until;) {
    told = w->NextEvent(20, &e) && json::parse(e)["type"] == "cancel";
  }
  ASSERT_TRUE(told);
  // From here every log write fails: the pass that leases the second job applies, sends it, then fails.
  env.SetFaultHook([](MemEnv::Op op, const std::string& path) {
    return op == MemEnv::Op::kWrite && path.find("/log-") != std::string::npos ? Status::IOError("injected EIO")
                                                                               : Status::OK();
  });
  ASSERT_TRUE(w->ConfirmCancel(a1.job_id, a1.token).ok());
  JobAssignment a2;
  ASSERT_TRUE(w->NextJob(5000, &a2)) << "the job should go out before its commit is durable";
  EXPECT_EQ(a2.job_id, second.id);
  json cancel;
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
       cancel.is_null() && std::chrono::steady_clock::now() < until;) {
    if (!w->NextEvent(20, &e)) continue;
    json ev = json::parse(e);
    if (ev["type"] == "cancel") cancel = ev;
  }
  ASSERT_FALSE(cancel.is_null()) << "the worker was not told its job's lease failed to commit";
  EXPECT_EQ(cancel["job_id"], FormatJobId(second.id));
  EXPECT_NE(cancel["reason"].get<std::string>().find("could not record the lease"), std::string::npos) << cancel;
  BrokerCounters counters = c.broker->Counters();
  EXPECT_GE(counters.dispatched_early, 1u);
  EXPECT_EQ(counters.early_undone, 1u);
  c.Stop();
  // After a restart the job is pending, and the token the worker saw is never handed out again.
  store.reset();
  env.SetFaultHook(nullptr);
  ASSERT_TRUE(Store::Open(c.so, "/store", &store).ok());
  Job got;
  ASSERT_TRUE(store->Get(second.id, false, &got).ok());
  EXPECT_EQ(got.state, JobState::kPending);
  TakeOptions o;
  o.worker_id = "gpu-2";
  std::unique_ptr<Lease> l;
  ASSERT_TRUE(store->Take(o, &l).ok());
  ASSERT_NE(l, nullptr);
  EXPECT_EQ(l->job_id, second.id);
  TokenCodec tokens;  // the order that matters is the store's counter's (tokens are a keyed permutation of it)
  std::vector<std::string> warnings;
  ASSERT_TRUE(tokens.Open(&env, "/store", &warnings).ok());
  EXPECT_GT(tokens.Internal(l->token), tokens.Internal(a2.token));
  EXPECT_TRUE(store->Complete(second.id, a2.token, "{}", {}).IsLeaseLost());
}

TEST_F(ClusterTest, ALateResultFromALostLeaseIsRefused) {
  WorkerClient* slow = AddWorker("gpu-slow", Caps({"EmptyImage", "SaveImage"}));
  uint64_t id = Enqueue(Graph());
  JobAssignment a;
  ASSERT_TRUE(slow->NextJob(5000, &a));
  // The store takes the job back (as if the lease ran out while the worker was frozen).
  StoreBatch b;
  Status st;
  b.ReleaseLease(a.job_id, a.token, "frozen", true, &st);
  ASSERT_TRUE(CommitBatch(store_.get(), &b).ok());
  ASSERT_TRUE(st.ok());
  json cancel = NextWorkerEvent(slow, "cancel");  // the broker tells it on the next lease renewal
  ASSERT_FALSE(cancel.is_null());
  WorkerClient* fast = AddWorker("gpu-fast", Caps({"EmptyImage", "SaveImage"}));
  JobAssignment c;
  ASSERT_TRUE(fast->NextJob(5000, &c));
  ASSERT_TRUE(fast->Complete(c.job_id, c.token, "{\"winner\": {}}", {}).ok());
  ASSERT_FALSE(NextWorkerEvent(fast, "ack").is_null());
  ASSERT_TRUE(slow->Complete(a.job_id, a.token, "{\"late\": {}}", {}).ok());
  json nack = NextWorkerEvent(slow, "nack");
  ASSERT_FALSE(nack.is_null());
  Job j = Get(id);
  EXPECT_EQ(j.outputs, "{\"winner\": {}}");
  // Its run was this worker's and ended: a stale result (the store refuses it), not a foreign one.
  EXPECT_GE(broker_->Counters().stale_results, 1u);
  EXPECT_EQ(broker_->Counters().foreign_lease_messages, 0u);
}

TEST_F(ClusterTest, AnotherProtocolVersionIsRefusedClearly) {
  zmq::context_t ctx;
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.connect(endpoint_);
  proto::Message hello;
  hello.cmd = proto::Cmd::kHello;
  hello.version = 9;
  hello.worker_id = "future";
  hello.capacity = 1;
  auto frames = proto::Encode(hello);
  s.send(zmq::buffer(frames[0]), zmq::send_flags::sndmore);
  s.send(zmq::buffer(frames[1]), zmq::send_flags::none);
  zmq::message_t h, body;
  s.set(zmq::sockopt::rcvtimeo, 3000);
  ASSERT_TRUE(s.recv(h));
  ASSERT_TRUE(s.recv(body));
  proto::Message reply;
  ASSERT_TRUE(proto::Decode({h.to_string_view(), body.to_string_view()}, &reply).ok());
  EXPECT_EQ(reply.cmd, proto::Cmd::kRefuse);
  EXPECT_NE(reply.reason.find("protocol version 9 is not supported"), std::string::npos) << reply.reason;
  EXPECT_GE(broker_->Counters().refused, 1u);
}

TEST_F(ClusterTest, GarbageFramesAreDroppedAndGoodWorkersAreStillServed) {
  zmq::context_t ctx;
  zmq::socket_t bad(ctx, zmq::socket_type::dealer);
  bad.set(zmq::sockopt::linger, 0);
  bad.connect(endpoint_);
  std::mt19937 rng(5);
  for (int i = 0; i < 200; ++i) {
    std::string junk(rng() % 300, '\0');
    for (char& ch : junk) ch = static_cast<char>(rng());
    if (i % 3 == 0 && junk.size() >= 6) std::memcpy(&junk[0], "CMQP\x01\x05", 6);  // our header, bad body
    bad.send(zmq::buffer(junk), zmq::send_flags::sndmore);
    bad.send(zmq::buffer(junk.substr(0, rng() % (junk.size() + 1))), zmq::send_flags::none);
  }
  WorkerClient* w = AddWorker("gpu-1", Caps({"EmptyImage", "SaveImage"}));
  uint64_t id = Enqueue(Graph());
  JobAssignment a;
  ASSERT_TRUE(w->NextJob(5000, &a));
  ASSERT_TRUE(w->Complete(a.job_id, a.token, "{}", {}).ok());
  ASSERT_FALSE(NextWorkerEvent(w, "ack").is_null());
  EXPECT_EQ(Get(id).state, JobState::kSucceeded);
  EXPECT_GT(broker_->Counters().malformed + broker_->Counters().refused, 0u);
}

TEST_F(ClusterTest, CurveAdmitsOnlyAllowedKeys) {
  if (!CurveAvailable()) GTEST_SKIP() << "libzmq without CURVE";
  std::string broker_pub, broker_sec, good_pub, good_sec, bad_pub, bad_sec;
  ASSERT_TRUE(MakeCurveKeyPair(&broker_pub, &broker_sec).ok());
  ASSERT_TRUE(MakeCurveKeyPair(&good_pub, &good_sec).ok());
  ASSERT_TRUE(MakeCurveKeyPair(&bad_pub, &bad_sec).ok());
  broker_.reset();
  BrokerOptions bo;
  bo.curve_secret_key = broker_sec;
  bo.allowed_worker_keys = {good_pub};
  StartBroker("tcp://127.0.0.1:*", &bo);
  EXPECT_EQ(broker_->public_key(), broker_pub);
  WorkerClientOptions bad;
  bad.broker_public_key = broker_pub;
  bad.public_key = bad_pub;
  bad.secret_key = bad_sec;
  WorkerClient* intruder = AddWorker("intruder", Caps({"EmptyImage", "SaveImage"}), 1, &bad);
  uint64_t id = Enqueue(Graph());
  JobAssignment a;
  EXPECT_FALSE(intruder->NextJob(500, &a)) << "a worker with an unknown key must never get a job";
  EXPECT_TRUE(WaitFor([&] { return broker_->Counters().zap_denied > 0; })) << "the intruder's handshake was refused";
  WorkerClientOptions good;
  good.broker_public_key = broker_pub;
  good.public_key = good_pub;
  good.secret_key = good_sec;
  WorkerClient* w = AddWorker("trusted", Caps({"EmptyImage", "SaveImage"}), 1, &good);
  ASSERT_TRUE(w->NextJob(5000, &a));
  EXPECT_EQ(a.job_id, id);
  EXPECT_FALSE(intruder->NextJob(200, &a));
  json workers = json::parse(broker_->WorkersJson());
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_EQ(workers[0]["key"], good_pub);
}

// A key taken off the allow-list while its worker runs a job: the job goes back to the queue (no attempt
// counted) and runs elsewhere, the worker is dropped and cannot come back; a key added later joins at once.
TEST_F(ClusterTest, AKeyRemovedAtRunTimeDropsItsWorkerAndItsJobGoesBack) {
  if (!CurveAvailable()) GTEST_SKIP() << "libzmq without CURVE";
  std::string broker_pub, broker_sec, a_pub, a_sec, b_pub, b_sec;
  ASSERT_TRUE(MakeCurveKeyPair(&broker_pub, &broker_sec).ok());
  ASSERT_TRUE(MakeCurveKeyPair(&a_pub, &a_sec).ok());
  ASSERT_TRUE(MakeCurveKeyPair(&b_pub, &b_sec).ok());
  broker_.reset();
  BrokerOptions bo;
  bo.curve_secret_key = broker_sec;
  bo.allowed_worker_keys = {a_pub};
  StartBroker("tcp://127.0.0.1:*", &bo);
  EXPECT_TRUE(broker_->SetAllowedKeys({"not a key"}).IsInvalidArgument());  // nothing changes
  auto opts = [&](const std::string& pub, const std::string& sec) {
    WorkerClientOptions o;
    o.broker_public_key = broker_pub;
    o.public_key = pub;
    o.secret_key = sec;
    return o;
  };
  WorkerClientOptions ao = opts(a_pub, a_sec), bo2 = opts(b_pub, b_sec);
  WorkerClient* a = AddWorker("gpu-a", Caps({"EmptyImage", "SaveImage"}), 1, &ao);
  const uint64_t id = Enqueue(Graph());
  JobAssignment run;
  ASSERT_TRUE(a->NextJob(5000, &run));
  ASSERT_EQ(run.job_id, id);
  // b is paired (added) and a removed, in one change
  ASSERT_TRUE(broker_->SetAllowedKeys({b_pub}).ok());
  ASSERT_TRUE(WaitFor([&] { return Get(id).state == JobState::kPending; })) << "a's job must go back at once";
  EXPECT_EQ(Get(id).attempts, 0) << "no attempt counted against the job";
  WorkerClient* b = AddWorker("gpu-b", Caps({"EmptyImage", "SaveImage"}), 1, &bo2);
  JobAssignment again;
  ASSERT_TRUE(b->NextJob(5000, &again));
  EXPECT_EQ(again.job_id, id);
  a->Complete(run.job_id, run.token, "{}", {}).IgnoreError();   // (its old lease: refused, if it gets through at all)
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // a keeps trying to come back
  EXPECT_EQ(Get(id).state, JobState::kRunning) << "a's stale result must not end b's run";
  bool a_online = false;
  for (const auto& w : json::parse(broker_->WorkersJson())) {
    if (w["id"] == "gpu-a") a_online = w["online"];
  }
  EXPECT_FALSE(a_online) << "a removed key cannot reconnect";
  const json a_state = json::parse(a->StateJson());  // a's panel says why, though its reconnects hear nothing
  EXPECT_EQ(a_state["connected"], false);
  EXPECT_NE(a_state["refused"].dump().find("removed from the host's allowed workers"), std::string::npos)
      << a_state.dump();
  ASSERT_TRUE(b->Complete(again.job_id, again.token, "{}", {}).ok());
  ASSERT_TRUE(WaitFor([&] { return Get(id).state == JobState::kSucceeded; }));
}

TEST_F(ClusterTest, PlainTextIsRefusedOffLoopbackUnlessOptedOut) {
  BrokerOptions o;
  o.bind = "tcp://0.0.0.0:*";
  o.artifact_root = tmp_.Sub("a2");
  std::unique_ptr<Broker> b;
  Status s = Broker::Start(store_.get(), o, &b);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("CURVE"), std::string::npos);
  WorkerClientOptions w;
  w.broker = "tcp://192.168.1.10:5557";
  w.worker_id = "x";
  std::unique_ptr<WorkerClient> c;
  EXPECT_TRUE(WorkerClient::Start(w, &c).IsInvalidArgument());
}

TEST_F(ClusterTest, ABrokerRestartKeepsRunningJobsAndResultsInFlightAreRecordedOnce) {
  WorkerClient* w = AddWorker("gpu-1", Caps({"EmptyImage", "SaveImage"}));
  uint64_t id = Enqueue(Graph());
  JobAssignment a;
  ASSERT_TRUE(w->NextJob(5000, &a));
  const std::string ep = endpoint_;
  broker_.reset();  // the broker goes away with the job running
  std::ofstream(tmp_.Sub("r.png"), std::ios::binary) << "result bytes";
  ASSERT_TRUE(w->Complete(a.job_id, a.token, "{\"9\": {}}", {{tmp_.Sub("r.png"), "r.png", "image/png"}}).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  StartBroker(ep);  // same store, same address
  json ack = NextWorkerEvent(w, "ack", 10000);
  ASSERT_FALSE(ack.is_null()) << "the worker must reconnect by itself and send its result again";
  Job j = Get(id);
  EXPECT_EQ(j.state, JobState::kSucceeded);
  EXPECT_EQ(json::parse(j.artifacts).size(), 1u);
  EXPECT_EQ(json::parse(j.history).size(), 1u);
  EXPECT_EQ(ReadFile(tmp_.Sub("artifacts/" + FormatJobId(id) + "/r.png")), "result bytes");
}

TEST_F(ClusterTest, ABrokenTransferLeavesNoVisibleFileAndTheJobRunsAgain) {
  WorkerClient* w = AddWorker("gpu-1", Caps({"EmptyImage", "SaveImage"}));
  uint64_t id = Enqueue(Graph());
  JobAssignment a;
  ASSERT_TRUE(w->NextJob(5000, &a));
  std::string big(64u << 20, 'v');  // many chunks: the worker will be gone long before the last
  std::ofstream(tmp_.Sub("huge.bin"), std::ios::binary) << big;
  ASSERT_TRUE(w->Complete(a.job_id, a.token, "{}", {{tmp_.Sub("huge.bin"), "huge.bin", ""}}).ok());
  const std::string dir = tmp_.Sub("artifacts/" + FormatJobId(id));
  ASSERT_TRUE(WaitFor([&] { return broker_->Counters().chunks >= 2; }));
  w->Stop(false).IgnoreError();  // gone mid-transfer
  ASSERT_TRUE(WaitFor([&] { return Get(id).state == JobState::kPending; }, 5000));
  std::vector<std::string> names;
  Env::Default()->GetChildren(dir, &names).IgnoreError();
  EXPECT_TRUE(names.empty()) << "found " << (names.empty() ? "" : names[0]) << ": a broken transfer must leave nothing";
  WorkerClient* other = AddWorker("gpu-2", Caps({"EmptyImage", "SaveImage"}));
  JobAssignment b;
  ASSERT_TRUE(other->NextJob(5000, &b));
  EXPECT_EQ(b.job_id, id);
  std::ofstream(tmp_.Sub("small.bin"), std::ios::binary) << "done";
  ASSERT_TRUE(other->Complete(b.job_id, b.token, "{}", {{tmp_.Sub("small.bin"), "huge.bin", ""}}).ok());
  ASSERT_FALSE(NextWorkerEvent(other, "ack").is_null());
  Env::Default()->GetChildren(dir, &names).IgnoreError();
  EXPECT_EQ(names, std::vector<std::string>{"huge.bin"});
  EXPECT_EQ(ReadFile(dir + "/huge.bin"), "done");
}

TEST_F(ClusterTest, BrokerEventsTellWhatHappened) {
  WorkerClient* w = AddWorker("gpu-1", Caps({"EmptyImage", "SaveImage"}));
  uint64_t id = Enqueue(Graph());
  JobAssignment a;
  ASSERT_TRUE(w->NextJob(5000, &a));
  ASSERT_TRUE(w->Progress(a.job_id, a.token, "{\"node\": \"1\", \"value\": 1, \"max\": 2}").ok());
  ASSERT_TRUE(w->Complete(a.job_id, a.token, "{}", {}).ok());
  std::set<std::string> seen;
  ASSERT_TRUE(WaitFor([&] {
    std::string e;
    while (broker_->NextEvent(10, &e)) {
      json j = json::parse(e);
      std::string key = j["type"].get<std::string>();
      if (j["type"] == "job") key += ":" + j["state"].get<std::string>();
      if (j["type"] == "worker") key += ":" + j["event"].get<std::string>();
      seen.insert(key);
    }
    return seen.count("job:succeeded") != 0;
  }));
  EXPECT_TRUE(seen.count("worker:joined"));
  EXPECT_TRUE(seen.count("job:pending"));
  EXPECT_TRUE(seen.count("job:running"));
  EXPECT_TRUE(seen.count("progress"));
  (void)id;
}

}  // namespace
}  // namespace comfymq
