// Overlapping commit groups (store/commit_order.h): the next group is applied while the one before it
// syncs, but it writes only once that one is durable, is answered only after its own sync, and when the
// group ahead fails it fails too and both are undone, newest first. A group that wrote nothing (it only read
// what the group ahead applied) is answered only once that group is durable. What queues while a group waits
// for its turn joins that group's sync (late ops).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <random>
#include <thread>

#include "comfymq/store.h"
#include "store/commit_order.h"
#include "store/store_batch.h"
#include "test_util.h"
#include "testing/mem_env.h"

namespace comfymq {
namespace {

using ::comfymq::testing::PromptFor;
using ::comfymq::testing::PromptIdFor;
using ::comfymq::testing::SeqOfPrompt;
using ::comfymq::testing::SmallOptions;
using namespace std::chrono_literals;

// Holds the first matching operation on a log segment until Release, then lets it pass or fail with `result`.
// Counts the log writes that reach the disk while it holds one.
class Gate {
 public:
  explicit Gate(MemEnv::Op op) : op_(op) {}

  MemEnv::FaultHook Hook() {
    return [this](MemEnv::Op op, const std::string& path) {
      if (path.find("/log-") == std::string::npos) return Status::OK();
      std::unique_lock<std::mutex> l(mu_);
      if (holding_ && op == MemEnv::Op::kWrite) writes_while_held_++;
      if (op != op_ || used_) return Status::OK();
      used_ = holding_ = true;
      cv_.notify_all();
      cv_.wait(l, [&] { return released_; });
      holding_ = false;
      return result_;
    };
  }
  bool WaitHeld() {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, 5s, [&] { return holding_; });
  }
  void Release(Status result = Status::OK()) {
    std::lock_guard<std::mutex> l(mu_);
    released_ = true;
    result_ = std::move(result);
    cv_.notify_all();
  }
  int writes_while_held() {
    std::lock_guard<std::mutex> l(mu_);
    return writes_while_held_;
  }

 private:
  const MemEnv::Op op_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool used_ = false, holding_ = false, released_ = false;
  int writes_while_held_ = 0;
  Status result_;
};

class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(Store::Open(SmallOptions(&env_), "/db", &store_).ok()); }

  NewJob JobFor(uint64_t seq, size_t pad = 0) {
    NewJob j;
    j.prompt = PromptFor(seq, pad);
    j.prompt_id = PromptIdFor(seq);
    return j;
  }
  // Enqueues on another thread; the future holds its status and result.
  std::future<std::pair<Status, EnqueueResult>> EnqueueAsync(NewJob j) {
    return std::async(std::launch::async, [this, j] {
      EnqueueResult r;
      Status s = store_->Enqueue(j, &r);
      return std::make_pair(s, r);
    });
  }
  uint64_t Count() {
    StoreStats st;
    EXPECT_TRUE(store_->Stats(&st).ok());
    return st.total;
  }
  // Waits (bounded) until the store holds n jobs in memory.
  bool WaitCount(uint64_t n) {
    for (auto until = std::chrono::steady_clock::now() + 5s; std::chrono::steady_clock::now() < until;) {
      if (Count() == n) return true;
      std::this_thread::sleep_for(1ms);
    }
    return false;
  }
  void Reopen() {
    store_.reset();
    env_.SetFaultHook(nullptr);
    Status s = Store::Open(SmallOptions(&env_), "/db", &store_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  struct Overlapped {
    EnqueueResult kept;
    std::pair<Status, EnqueueResult> ahead, behind;
  };
  // Enqueues `kept`; then holds `op` of the next group (`ahead`: its sync, or the segment it makes) while
  // `behind` is applied on top of it, checks that behind is applied but neither is answered nor behind
  // written meanwhile, and lets the op finish with `result`.
  Overlapped Overlap(MemEnv::Op op, NewJob kept, NewJob ahead, NewJob behind, Status result) {
    Overlapped o;
    EXPECT_TRUE(store_->Enqueue(kept, &o.kept).ok());
    Gate& gate = NewGate(op);
    auto a = EnqueueAsync(std::move(ahead));
    EXPECT_TRUE(gate.WaitHeld());
    auto b = EnqueueAsync(std::move(behind));
    EXPECT_TRUE(WaitCount(3)) << "the next group did not apply while the one ahead was in its turn";
    EXPECT_EQ(a.wait_for(50ms), std::future_status::timeout);
    EXPECT_EQ(b.wait_for(0ms), std::future_status::timeout);
    EXPECT_EQ(gate.writes_while_held(), 0) << "a group wrote while the group ahead of it was not yet durable";
    gate.Release(std::move(result));
    o.ahead = a.get();
    o.behind = b.get();
    return o;
  }

  // Job 1 durable; job 2's sync held by *ahead; job 3 (*b) applied in the next group, waiting for its turn;
  // then `n` more enqueues (*queued: jobs 4, 5, ...) queued behind that group, which none may pass before its
  // turn comes (given 200 ms to get there; nothing applies them meanwhile).
  void QueueBehindAWaitingGroup(int n, Gate** ahead, std::future<std::pair<Status, EnqueueResult>>* a,
                                std::future<std::pair<Status, EnqueueResult>>* b,
                                std::vector<std::future<std::pair<Status, EnqueueResult>>>* queued) {
    EnqueueResult kept;
    ASSERT_TRUE(store_->Enqueue(JobFor(1), &kept).ok());
    *ahead = &NewGate(MemEnv::Op::kSync);
    *a = EnqueueAsync(JobFor(2));
    ASSERT_TRUE((*ahead)->WaitHeld());
    *b = EnqueueAsync(JobFor(3));
    ASSERT_TRUE(WaitCount(3));
    for (int i = 0; i < n; ++i) queued->push_back(EnqueueAsync(JobFor(4 + static_cast<uint64_t>(i))));
    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(Count(), 3u);
  }

  // A gate on `op`, installed as the env's fault hook; it lives until the store is gone.
  Gate& NewGate(MemEnv::Op op) {
    gates_.push_back(std::make_unique<Gate>(op));
    env_.SetFaultHook(gates_.back()->Hook());
    return *gates_.back();
  }

  MemEnv env_;
  std::vector<std::unique_ptr<Gate>> gates_;  // after env_, before store_: outlive every store call
  std::unique_ptr<Store> store_;
};

// A prompt LZ4 cannot shrink: `bytes` of random letters in a text input (sizes a record for real).
std::string BigPrompt(uint64_t seed, size_t bytes) {
  std::mt19937_64 rng(seed);
  std::string text(bytes, 'a');
  for (char& c : text) c = static_cast<char>('a' + rng() % 26);
  return R"({"1": {"class_type": "CLIPTextEncode", "inputs": {"text": ")" + text + R"("}}})";
}

TEST_F(PipelineTest, TheNextGroupAppliesWhileOneSyncsAndIsAnsweredAfterIt) {
  Overlapped o;
  ASSERT_NO_FATAL_FAILURE(o = Overlap(MemEnv::Op::kSync, JobFor(1), JobFor(2), JobFor(3), Status::OK()));
  ASSERT_TRUE(o.ahead.first.ok()) << o.ahead.first.ToString();
  ASSERT_TRUE(o.behind.first.ok()) << o.behind.first.ToString();
  EXPECT_LT(o.ahead.second.id, o.behind.second.id);
  Reopen();
  EXPECT_EQ(Count(), 3u);
  Job j;
  ASSERT_TRUE(store_->Get(o.behind.second.id, true, &j).ok());
  EXPECT_EQ(SeqOfPrompt(j.prompt), 3);
}

TEST_F(PipelineTest, AFailedSyncFailsTheGroupBehindItAndUndoesBoth) {
  Overlapped o;
  ASSERT_NO_FATAL_FAILURE(
      o = Overlap(MemEnv::Op::kSync, JobFor(1), JobFor(2), JobFor(3), Status::IOError("injected fsync failure")));
  EXPECT_TRUE(o.ahead.first.IsIOError()) << o.ahead.first.ToString();
  EXPECT_NE(o.ahead.first.message().find("injected fsync failure"), std::string::npos);
  EXPECT_FALSE(o.behind.first.ok()) << "a group applied on top of a failed one was acknowledged";
  EXPECT_NE(o.behind.first.message().find("injected fsync failure"), std::string::npos) << o.behind.first.ToString();
  EXPECT_FALSE(store_->health().ok());
  EXPECT_EQ(Count(), 1u) << "both groups are undone in memory";
  Job j;
  EXPECT_TRUE(store_->Get(o.kept.id, true, &j).ok());
  Reopen();
  // Whether A's bytes reached the disk after its failed sync is unknown (as on a real disk: it was never
  // acknowledged either way); B's were never written, because A was not durable.
  ASSERT_TRUE(store_->Get(o.kept.id, true, &j).ok());
  EXPECT_EQ(SeqOfPrompt(j.prompt), 1);
  EXPECT_LE(Count(), 2u);
  ListQuery q;
  q.with_prompt = true;
  ListPage page;
  ASSERT_TRUE(store_->List(q, &page).ok());
  for (const Job& x : page.jobs) EXPECT_NE(SeqOfPrompt(x.prompt), 3) << "the group behind a failed sync was written";
  EnqueueResult again;
  EXPECT_TRUE(store_->Enqueue(JobFor(3), &again).ok());
}

TEST_F(PipelineTest, AFullDiskUnderTheGroupAheadFailsBothAndTheStoreGoesOn) {
  // A 12 KB prompt of random text fills most of a 16 KB segment: each such job needs a segment of its own,
  // made in its turn.
  auto big = [](uint64_t seq) {
    NewJob j;
    j.prompt = BigPrompt(seq, 12000);
    return j;
  };
  Overlapped o;
  ASSERT_NO_FATAL_FAILURE(
      o = Overlap(MemEnv::Op::kAllocate, big(1), big(2), big(3), Status::NoSpace("injected: no space left on device")));
  EXPECT_TRUE(o.ahead.first.IsNoSpace()) << o.ahead.first.ToString();
  EXPECT_TRUE(o.behind.first.IsNoSpace()) << o.behind.first.ToString();
  EXPECT_TRUE(store_->health().ok()) << "a full disk must not break the handle";
  EXPECT_EQ(Count(), 1u);
  // Space is back: the next groups plan from the real tail again (not from what the failed ones planned).
  env_.SetFaultHook(nullptr);
  EnqueueResult c, d;
  ASSERT_TRUE(store_->Enqueue(big(4), &c).ok());
  ASSERT_TRUE(store_->Enqueue(JobFor(5), &d).ok());
  Reopen();
  EXPECT_EQ(Count(), 3u);
  Job j;
  ASSERT_TRUE(store_->Get(o.kept.id, true, &j).ok());
  EXPECT_EQ(j.prompt, BigPrompt(1, 12000));
  ASSERT_TRUE(store_->Get(c.id, true, &j).ok());
  EXPECT_EQ(j.prompt, BigPrompt(4, 12000));
  ASSERT_TRUE(store_->Get(d.id, true, &j).ok());
  EXPECT_EQ(SeqOfPrompt(j.prompt), 5);
}

TEST_F(PipelineTest, AnAnswerThatReadsAnUnsyncedChangeWaitsForItAndFailsWithIt) {
  for (bool fail : {false, true}) {
    SCOPED_TRACE(fail ? "the sync ahead fails" : "the sync ahead succeeds");
    Gate& gate = NewGate(MemEnv::Op::kSync);
    const uint64_t seq = fail ? 20 : 10;
    auto a = EnqueueAsync(JobFor(seq));
    ASSERT_TRUE(gate.WaitHeld());
    // The same prompt_id again: the store answers "already queued" without writing anything, from the
    // change that is still syncing.
    auto dup = EnqueueAsync(JobFor(seq));
    EXPECT_EQ(dup.wait_for(100ms), std::future_status::timeout) << "answered before the job it names was durable";
    gate.Release(fail ? Status::IOError("injected fsync failure") : Status::OK());
    auto ra = a.get(), rd = dup.get();
    if (!fail) {
      ASSERT_TRUE(ra.first.ok() && rd.first.ok()) << ra.first.ToString() << " / " << rd.first.ToString();
      EXPECT_TRUE(rd.second.existed);
      EXPECT_EQ(rd.second.id, ra.second.id);
    } else {
      EXPECT_FALSE(ra.first.ok());
      EXPECT_FALSE(rd.first.ok()) << "claimed a job whose enqueue was never durable";
    }
  }
}

TEST_F(PipelineTest, EnqueuesQueuedWhileTheNextGroupWaitsForItsTurnJoinItsSync) {
  Gate* held;
  std::future<std::pair<Status, EnqueueResult>> a, b;
  std::vector<std::future<std::pair<Status, EnqueueResult>>> late;
  ASSERT_NO_FATAL_FAILURE(QueueBehindAWaitingGroup(3, &held, &a, &b, &late));
  Gate& ahead = *held;
  Gate& behind = NewGate(MemEnv::Op::kSync);  // holds the next group's sync
  ahead.Release();
  ASSERT_TRUE(behind.WaitHeld());
  EXPECT_EQ(Count(), 6u) << "the queued enqueues did not join the group whose turn came";
  for (auto& f : late) EXPECT_EQ(f.wait_for(0ms), std::future_status::timeout) << "answered before its sync";
  EXPECT_EQ(b.wait_for(0ms), std::future_status::timeout);
  EXPECT_EQ(behind.writes_while_held(), 0);
  Gate& after = NewGate(MemEnv::Op::kSync);  // would hold a further group's sync: none is needed
  behind.Release();
  for (auto& f : late) {
    EXPECT_EQ(f.wait_for(10s), std::future_status::ready) << "a queued enqueue waited for a sync of its own";
  }
  after.Release();
  ASSERT_TRUE(a.get().first.ok());
  const auto rb = b.get();
  ASSERT_TRUE(rb.first.ok());
  for (auto& f : late) {
    const auto r = f.get();
    ASSERT_TRUE(r.first.ok()) << r.first.ToString();
    EXPECT_GT(r.second.id, rb.second.id);  // applied after the group's own ops
  }
  Reopen();
  EXPECT_EQ(Count(), 6u);
}

TEST_F(PipelineTest, WhenTheSyncAheadFailsTheGroupWaitingBehindItTakesNoLateOpsAndFails) {
  Gate* ahead;
  std::future<std::pair<Status, EnqueueResult>> a, b;
  std::vector<std::future<std::pair<Status, EnqueueResult>>> queued;
  ASSERT_NO_FATAL_FAILURE(QueueBehindAWaitingGroup(2, &ahead, &a, &b, &queued));
  ahead->Release(Status::IOError("injected fsync failure"));
  EXPECT_FALSE(a.get().first.ok());
  EXPECT_FALSE(b.get().first.ok()) << "a group applied on top of a failed one was acknowledged";
  for (auto& f : queued) EXPECT_FALSE(f.get().first.ok()) << "acknowledged by a store whose log write failed";
  EXPECT_EQ(Count(), 1u) << "every group after the failed sync is undone in memory";
  Reopen();
  ListQuery q;
  q.with_prompt = true;
  ListPage page;
  ASSERT_TRUE(store_->List(q, &page).ok());
  for (const Job& x : page.jobs) EXPECT_LE(SeqOfPrompt(x.prompt), 2) << "a group behind the failed sync was written";
}

TEST_F(PipelineTest, TheDispatchHookLeasesLateOpsInTheirGroupAndDeliversOnlyAfterItsSync) {
  std::mutex mu;
  std::vector<std::vector<uint64_t>> delivered;  // per group: the jobs it leased
  DispatchHook hook;
  hook.choose = [](DispatchContext& ctx) {
    TakeOptions o;
    o.worker_id = "w1";
    while (ctx.Take(o) != nullptr) {}
  };
  hook.deliver = [&](std::vector<std::unique_ptr<Lease>> leases) {
    std::vector<uint64_t> ids;
    for (const auto& l : leases) ids.push_back(l->job_id);
    std::lock_guard<std::mutex> l(mu);
    delivered.push_back(std::move(ids));
  };
  SetDispatchHook(store_.get(), hook);
  Gate* ahead;
  std::future<std::pair<Status, EnqueueResult>> a, b;
  std::vector<std::future<std::pair<Status, EnqueueResult>>> late;
  ASSERT_NO_FATAL_FAILURE(QueueBehindAWaitingGroup(2, &ahead, &a, &b, &late));
  {
    std::lock_guard<std::mutex> l(mu);
    EXPECT_EQ(delivered.size(), 1u) << "only job 1's group is durable yet";
  }
  ahead->Release();
  const uint64_t ida = a.get().second.id, idb = b.get().second.id;
  std::vector<uint64_t> late_ids;
  for (auto& f : late) {
    const auto r = f.get();
    ASSERT_TRUE(r.first.ok()) << r.first.ToString();
    late_ids.push_back(r.second.id);
  }
  std::lock_guard<std::mutex> l(mu);
  ASSERT_EQ(delivered.size(), 3u) << "groups: job 1; job 2; job 3 with the two late ones";
  EXPECT_EQ(delivered[1], std::vector<uint64_t>{ida});
  std::vector<uint64_t> want = {idb, late_ids[0], late_ids[1]};
  std::vector<uint64_t> got = delivered[2];
  std::sort(want.begin(), want.end());
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, want) << "the late enqueues were not leased in the group that wrote them";
  StoreStats st;
  ASSERT_TRUE(store_->Stats(&st).ok());
  EXPECT_EQ(st.counts[static_cast<int>(JobState::kRunning)], 5u);
}

TEST(CommitOrderTest, TurnsGoInOrderAndUndoGoesNewestFirst) {
  CommitOrder order;
  bool reset = true;
  const uint64_t a = order.Begin(&reset);
  EXPECT_FALSE(reset);
  const uint64_t b = order.Begin(&reset);
  ASSERT_LT(a, b);
  std::atomic<bool> b_turn{false};
  std::thread tb([&] {
    EXPECT_FALSE(order.WaitTurn(b).ok());  // a broke the pipeline before b's turn came
    b_turn = true;
    order.EndTurn(b);
    order.WaitTop(b);
    order.Resolve(b);
  });
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(b_turn.load()) << "b's turn came before a's ended";
  ASSERT_TRUE(order.WaitTurn(a).ok());
  order.Break(Status::IOError("sync failed"));
  order.EndTurn(a);
  order.WaitTop(a);  // b undoes itself first
  EXPECT_TRUE(b_turn.load());
  order.Resolve(a);
  tb.join();
  // Drained: the next group is told to reset its view of the tail, and nothing is broken any more.
  const uint64_t c = order.Begin(&reset);
  EXPECT_TRUE(reset);
  EXPECT_TRUE(order.WaitTurn(c).ok());
  order.Resolve(c);
  order.EndTurn(c);
  order.WaitIdle();
}

}  // namespace
}  // namespace comfymq
