// A backlog no idle worker can run costs their takes nothing (the store remembers, per take class, which pending
// jobs a class can run: TakeMemo), and that memory never leaves a runnable job waiting while a worker that could run
// it is idle. Through a real store on disk and a broker with real worker clients over 127.0.0.1, each worker first
// sits idle in front of the backlog (so its class has learnt it), then gets:
//   (a) a job enqueued later that it can run, queued behind the whole backlog of the same owner;
//   (b) a job that comes back to pending when the worker running it dies;
//   (c) a job it can run once its capabilities change;
//   (d) a job freed by a raised owner running limit, and one freed by a run of that owner ending.
// The broker looks at 50 pending jobs per take (max_scan), far fewer than the backlog: without the memory none of
// these jobs behind the backlog would be found. A store-level check runs the same takes with and without a class
// and asserts they choose the same jobs, in fair-share order, through owners' limits, priorities and requeues.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <vector>

#include "cluster_fixture.h"
#include "comfymq/store.h"
#include "test_util.h"
#include "testing/mem_env.h"

namespace comfymq {
namespace {

constexpr int kBacklog = 300;
const char* const kModel = "sd15.safetensors";
const char* const kOtherModel = "sdxl_base.safetensors";

std::string CapsWith(const std::vector<std::string>& models) {
  return Caps({"EmptyImage", "SaveImage", "CheckpointLoaderSimple"}, {{"CheckpointLoaderSimple.ckpt_name", models}});
}

class UnrunnableBacklogTest : public ClusterTest {
 protected:
  void SetUp() override {
    StoreOptions so;
    so.reopen_lease_grace_ms = 10000;
    ASSERT_TRUE(Store::Open(so, tmp_.Sub("store"), &store_).ok());
    BrokerOptions bo;
    bo.max_scan = 50;
    StartBroker("tcp://127.0.0.1:*", &bo);
  }

  uint64_t EnqueueAs(const std::string& owner, const std::string& prompt) {
    NewJob j;
    j.prompt = prompt;
    j.owner = owner;
    j.max_attempts = 3;
    EnqueueResult r;
    EXPECT_TRUE(store_->Enqueue(j, &r).ok());
    return r.id;
  }

  // kBacklog jobs of `owner` that need a checkpoint no worker has (distinct prompts: distinct jobs).
  void EnqueueBacklog(const std::string& owner) {
    std::vector<NewJob> jobs(kBacklog);
    for (int i = 0; i < kBacklog; ++i) {
      json p = json::parse(Graph("nobody_has_this.safetensors"));
      p["1"]["inputs"]["width"] = 64 + i;
      jobs[i].prompt = p.dump();
      jobs[i].owner = owner;
    }
    std::vector<EnqueueResult> r;
    ASSERT_TRUE(store_->EnqueueMany(jobs, &r).ok());
  }

  // Lets the workers' classes look over the backlog (50 jobs a take): a pause and a resume each make a pass (and
  // show that a resume leaves nothing behind); no worker is given anything.
  void SitIdle(const std::vector<WorkerClient*>& idle) {
    for (int i = 0; i < 2 * kBacklog / 50; ++i) {
      ASSERT_TRUE(store_->SetPaused(true).ok());
      ASSERT_TRUE(store_->SetPaused(false).ok());
      std::this_thread::sleep_for(std::chrono::milliseconds(60));
    }
    for (WorkerClient* w : idle) {
      JobAssignment none;
      ASSERT_FALSE(w->NextJob(10, &none)) << "nothing in the backlog can run anywhere";
    }
  }

  JobAssignment Expect(WorkerClient* w, uint64_t job, const char* why) {
    JobAssignment got;
    EXPECT_TRUE(w->NextJob(5000, &got)) << why;
    EXPECT_EQ(got.job_id, job) << why;
    return got;
  }
};

TEST_F(UnrunnableBacklogTest, AJobEnqueuedLaterBehindTheBacklogReachesTheIdleWorker) {
  EnqueueBacklog("");
  WorkerClient* w = AddWorker("gpu-a", CapsWith({kModel}));
  SitIdle({w});
  const uint64_t later = Enqueue(Graph(kModel));  // same owner, same priority: last in line
  JobAssignment a = Expect(w, later, "(a) a runnable job that arrives behind the backlog");
  ASSERT_TRUE(w->Complete(a.job_id, a.token, "{}", {}).ok());
  // And again, once the class has taken one (its memory moved on past that job).
  const uint64_t next = Enqueue(Graph(kModel));
  Expect(w, next, "(a) the next one too");
  StoreStats st;
  ASSERT_TRUE(store_->Stats(&st).ok());
  EXPECT_EQ(st.counts[static_cast<int>(JobState::kPending)], static_cast<uint64_t>(kBacklog));
}

TEST_F(UnrunnableBacklogTest, AJobBackFromADeadWorkerReachesTheIdleOne) {
  EnqueueBacklog("");
  WorkerClient* doomed = AddWorker("gpu-doomed", CapsWith({kModel}));
  SitIdle({doomed});
  const uint64_t job = Enqueue(Graph(kModel));
  Expect(doomed, job, "the first worker takes it");
  WorkerClient* w = AddWorker("gpu-idle", CapsWith({kModel}));  // the same class: it has seen that job go
  SitIdle({w});
  doomed->Stop(false).IgnoreError();  // silent, as a killed process: its lease is lost after 3 heartbeats
  JobAssignment b = Expect(w, job, "(b) a job back to pending after its worker died");
  EXPECT_EQ(b.attempt, 2);
}

TEST_F(UnrunnableBacklogTest, AFailedRunThatWillRetryReachesTheIdleWorker) {
  EnqueueBacklog("");
  WorkerClient* first = AddWorker("gpu-first", CapsWith({kModel}));
  SitIdle({first});
  const uint64_t job = Enqueue(Graph(kModel));
  JobAssignment a = Expect(first, job, "the first worker takes it");
  WorkerClient* w = AddWorker("gpu-other", CapsWith({kModel, kOtherModel}));  // another class
  SitIdle({w});
  ASSERT_TRUE(first->Fail(a.job_id, a.token, R"({"type": "execution_error", "message": "oom"})", true).ok());
  JobAssignment b = Expect(w, job, "(b) a retry goes to the idle worker that has not run it");
  EXPECT_EQ(b.attempt, 2);
}

TEST_F(UnrunnableBacklogTest, AWorkerWhoseCapabilitiesChangeGetsWhatItCanRunNow) {
  EnqueueBacklog("");
  const uint64_t needs_other = Enqueue(Graph(kOtherModel));
  WorkerClient* w = AddWorker("gpu-a", CapsWith({kModel}));
  SitIdle({w});
  ASSERT_TRUE(w->UpdateCapabilities(CapsWith({kModel, kOtherModel})).ok());
  // A new class: it learns the backlog again, 50 jobs a take, as the passes come.
  SitIdle({});
  Expect(w, needs_other, "(c) a job it can run after its capabilities changed");
}

TEST_F(UnrunnableBacklogTest, AnOwnerLimitRaisedOrARunEndedFreesTheJobsItHeld) {
  EnqueueBacklog("crowd");
  ASSERT_TRUE(store_->SetOwnerPolicies(OwnerPolicy{}, {{"ana", OwnerPolicy{1, 1}}}).ok());
  WorkerClient* a = AddWorker("gpu-a", CapsWith({kModel}));
  SitIdle({a});
  const uint64_t first = EnqueueAs("ana", Graph(kModel));
  JobAssignment run = Expect(a, first, "ana's first job runs");
  const uint64_t second = EnqueueAs("ana", Graph(kModel));
  WorkerClient* b = AddWorker("gpu-b", CapsWith({kModel}));
  SitIdle({b});  // ana is at her limit: her second job waits, b idles
  EXPECT_EQ(Get(second).state, JobState::kPending);
  ASSERT_TRUE(store_->SetOwnerPolicies(OwnerPolicy{}, {{"ana", OwnerPolicy{1, 2}}}).ok());
  JobAssignment got = Expect(b, second, "(d) a job freed by a raised running limit");
  // Back to one at a time: her third job waits until one of her runs ends.
  ASSERT_TRUE(store_->SetOwnerPolicies(OwnerPolicy{}, {{"ana", OwnerPolicy{1, 1}}}).ok());
  ASSERT_TRUE(b->Complete(got.job_id, got.token, "{}", {}).ok());
  ASSERT_TRUE(WaitFor([&] { return Get(second).state == JobState::kSucceeded; }));
  const uint64_t third = EnqueueAs("ana", Graph(kModel));
  SitIdle({b});
  EXPECT_EQ(Get(third).state, JobState::kPending) << "ana still runs one (her limit is 1)";
  ASSERT_TRUE(a->Complete(run.job_id, run.token, "{}", {}).ok());
  ASSERT_TRUE(WaitFor([&] { return Get(third).state == JobState::kRunning; }))
      << "(d) a job freed by a run of its owner ending";
}

// --- the store alone: takes of a class choose what a walk would ---------------------------------------------

// Two stores given the same changes; one's takes walk the queue with a filter, the other's also name a class. The
// jobs are told apart by their prompt (ids are the stores' own). Owners with weights and a running limit, three
// priorities, jobs only some "workers" can run, retries back to the queue, and a backlog nobody can run.
TEST(TakeMemoTest, ClassTakesChooseWhatTheWalkChooses) {
  MemEnv env_a, env_b;
  std::unique_ptr<Store> a, b;
  ASSERT_TRUE(Store::Open(::comfymq::testing::SmallOptions(&env_a), "/db", &a).ok());
  ASSERT_TRUE(Store::Open(::comfymq::testing::SmallOptions(&env_b), "/db", &b).ok());
  const std::map<std::string, OwnerPolicy> policies = {{"ana", OwnerPolicy{3, 0}}, {"ben", OwnerPolicy{1, 2}}};
  for (Store* s : {a.get(), b.get()}) ASSERT_TRUE(s->SetOwnerPolicies(OwnerPolicy{}, policies).ok());
  // Each job has a kind (0..4), known by its prompt; worker class k can run kinds k and 3; kind 4 nobody can run.
  std::map<int64_t, int> kinds;  // PromptFor's seq -> kind
  auto filter_for = [&](int cls) {
    return [&kinds, cls](uint64_t, const PromptLoader& load) {
      std::string p;
      if (!load(&p).ok()) return false;
      const int k = kinds.at(::comfymq::testing::SeqOfPrompt(p));
      return k == cls || k == 3;
    };
  };
  std::mt19937 rng(7);
  const std::vector<std::string> owners = {"", "ana", "ben", "cy"};
  std::map<std::string, std::pair<std::unique_ptr<Lease>, std::unique_ptr<Lease>>> running;  // prompt -> a's, b's
  int seq = 0;
  auto enqueue = [&](int kind) {
    NewJob j;
    kinds[++seq] = kind;
    j.prompt = ::comfymq::testing::PromptFor(static_cast<uint64_t>(seq));
    j.owner = owners[rng() % owners.size()];
    j.priority = static_cast<int32_t>(rng() % 3);
    j.max_attempts = 5;
    EnqueueResult r;
    ASSERT_TRUE(a->Enqueue(j, &r).ok());
    ASSERT_TRUE(b->Enqueue(j, &r).ok());
  };
  for (int i = 0; i < 400; ++i) enqueue(4);  // the backlog
  int taken = 0;
  for (int step = 0; step < 3000; ++step) {
    const int r = static_cast<int>(rng() % 10);
    if (r < 3) {
      enqueue(static_cast<int>(rng() % 5));
    } else if (r < 8) {
      const int cls = static_cast<int>(rng() % 3);
      TakeOptions oa, ob;
      oa.worker_id = ob.worker_id = "w" + std::to_string(cls);
      oa.lease_ms = ob.lease_ms = 1000000;
      oa.max_scan = ob.max_scan = 0;
      oa.filter = filter_for(cls);
      ob.filter = filter_for(cls);
      ob.take_class = 100 + static_cast<uint64_t>(cls);
      ob.could_run = ob.filter;
      std::unique_ptr<Lease> la, lb;
      ASSERT_TRUE(a->Take(oa, &la).ok());
      ASSERT_TRUE(b->Take(ob, &lb).ok());
      ASSERT_EQ(la == nullptr, lb == nullptr) << "step " << step;
      if (la == nullptr) continue;
      ASSERT_EQ(la->job.prompt, lb->job.prompt) << "step " << step;
      ++taken;
      const std::string key = la->job.prompt;
      running[key] = {std::move(la), std::move(lb)};
    } else if (!running.empty()) {  // a run ends: done, or failed and back in the queue
      auto it = running.begin();
      std::advance(it, rng() % running.size());
      const bool retry = rng() % 2 == 0;
      const Lease& la = *it->second.first;
      const Lease& lb = *it->second.second;
      JobError e;
      e.type = "execution_error";
      ASSERT_TRUE(retry ? a->Fail(la.job_id, la.token, e, true).ok() : a->Complete(la.job_id, la.token, "{}", {}).ok());
      ASSERT_TRUE(retry ? b->Fail(lb.job_id, lb.token, e, true).ok() : b->Complete(lb.job_id, lb.token, "{}", {}).ok());
      running.erase(it);
    }
  }
  EXPECT_GT(taken, 500);
}

}  // namespace
}  // namespace comfymq
