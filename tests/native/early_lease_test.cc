// Leases shown before their commit is durable (an early StoreBatch::Take, StoreBatch::OnApplied): the batch's callback
// runs after the apply and before the sync; only tokens under a durable reservation are early; and a token
// handed out by a take that never became durable is never handed out again, across reopen and checkpoints.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>

#include "comfymq/store.h"
#include "store/store_batch.h"
#include "store/token_codec.h"
#include "test_util.h"
#include "testing/mem_env.h"

namespace comfymq {
namespace {

using ::comfymq::testing::PromptFor;
using ::comfymq::testing::SmallOptions;

class EarlyLeaseTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }

  void Open() {
    store_.reset();
    Status s = Store::Open(SmallOptions(&env_), "/db", &store_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  // The store's counter behind a token callers see: "never handed out again" is about counters (their order is
  // what the reservation covers), while the tokens themselves are a keyed permutation of them.
  uint64_t Counter(uint64_t token) {
    TokenCodec codec;
    std::vector<std::string> warnings;
    EXPECT_TRUE(codec.Open(&env_, "/db", &warnings).ok());
    return codec.Internal(token);
  }

  void Add(int n) {
    for (int i = 0; i < n; ++i) {
      NewJob j;
      j.prompt = PromptFor(seq_++);
      EnqueueResult r;
      ASSERT_TRUE(store_->Enqueue(j, &r).ok());
    }
  }

  // One take in a batch of its own; `applied` says whether OnApplied ran, `syncs_at_apply` how many syncs
  // the env had seen when it did.
  struct Taken {
    std::unique_ptr<Lease> lease;
    Status status;
    bool early = false;  // what the take said (StoreBatch::Take)
    bool applied = false;
    uint64_t syncs_at_apply = 0;
    bool early_at_apply = false;
  };
  Taken TakeInBatch() {
    Taken t;
    StoreBatch b;
    TakeOptions o;
    o.worker_id = "gpu-1";
    b.Take(o, &t.lease, &t.status, &t.early);
    b.OnApplied([&] {
      t.applied = true;
      t.syncs_at_apply = env_.sync_count();
      t.early_at_apply = t.lease != nullptr && t.early;
    });
    CommitBatch(store_.get(), &b).IgnoreError();
    return t;
  }

  void FailLogWrites(const Status& s) {
    env_.SetFaultHook([s](MemEnv::Op op, const std::string& path) {
      return op == MemEnv::Op::kWrite && path.find("/log-") != std::string::npos ? s : Status::OK();
    });
  }

  MemEnv env_;
  std::unique_ptr<Store> store_;
  int seq_ = 0;
};

TEST_F(EarlyLeaseTest, OnAppliedRunsAfterTheApplyAndBeforeTheSync) {
  Add(2);
  TakeInBatch();  // reserves tokens
  const uint64_t before = env_.sync_count();
  Taken t = TakeInBatch();
  ASSERT_TRUE(t.status.ok()) << t.status.ToString();
  ASSERT_TRUE(t.applied);
  EXPECT_EQ(t.syncs_at_apply, before) << "the callback must run before the batch is synced";
  EXPECT_GT(env_.sync_count(), before);
  EXPECT_TRUE(t.early_at_apply) << "the lease was already there when the callback ran";
}

TEST_F(EarlyLeaseTest, NoCallbackWhenTheStoreRefusesTheBatch) {
  Add(1);
  FailLogWrites(Status::IOError("injected EIO"));
  Taken t = TakeInBatch();  // fatal: the handle is unusable from here on
  ASSERT_FALSE(t.status.ok());
  EXPECT_TRUE(t.applied) << "the apply happened; the write failed after it";
  Taken again = TakeInBatch();
  EXPECT_FALSE(again.applied) << "a store that refuses the whole batch applies nothing";
  EXPECT_TRUE(again.status.IsIOError()) << again.status.ToString();
}

TEST_F(EarlyLeaseTest, ACallbackThatThrowsCostsOnlyItsNotice) {
  Add(3);
  StoreBatch b;
  std::unique_ptr<Lease> lease;
  Status status;
  TakeOptions o;
  o.worker_id = "gpu-1";
  b.Take(o, &lease, &status);
  b.OnApplied([] { throw std::runtime_error("the caller's notice failed"); });
  CommitBatch(store_.get(), &b).IgnoreError();
  ASSERT_TRUE(status.ok()) << status.ToString();
  ASSERT_NE(lease, nullptr);
  // The take is durable and the store goes on: the next commits neither hang nor fail.
  Taken next = TakeInBatch();
  ASSERT_TRUE(next.status.ok()) << next.status.ToString();
  EXPECT_TRUE(next.applied);
  Open();
  Job job;
  ASSERT_TRUE(store_->Get(lease->job_id, false, &job).ok());
  EXPECT_EQ(job.state, JobState::kRunning) << "the take with the failed notice is durable";
}

TEST_F(EarlyLeaseTest, OnlyTokensUnderADurableReservationAreEarly) {
  Add(3);
  Taken first = TakeInBatch();
  ASSERT_TRUE(first.status.ok());
  EXPECT_FALSE(first.early) << "nothing is reserved right after open";
  Taken second = TakeInBatch();
  ASSERT_TRUE(second.status.ok());
  EXPECT_TRUE(second.early);
  // After a reopen the reservation starts over: the first take waits for its sync again.
  Open();
  Add(1);
  Taken third = TakeInBatch();
  ASSERT_TRUE(third.status.ok());
  EXPECT_FALSE(third.early);
  EXPECT_GT(Counter(third.lease->token), Counter(second.lease->token));
}

// The case early leases exist for: the worker got the job, the take never reached the disk. The token it
// holds must never be given to another run of that (or any) job.
TEST_F(EarlyLeaseTest, TheTokenOfATakeThatNeverBecameDurableIsNeverReissued) {
  Add(2);
  ASSERT_TRUE(TakeInBatch().status.ok());
  FailLogWrites(Status::IOError("injected EIO"));
  Taken lost = TakeInBatch();
  ASSERT_TRUE(lost.status.IsIOError()) << lost.status.ToString();
  ASSERT_TRUE(lost.early_at_apply) << "it could have been shown to a worker";
  const uint64_t shown = lost.lease->token;
  env_.SetFaultHook(nullptr);
  Open();
  StoreStats st;
  ASSERT_TRUE(store_->Stats(&st).ok());
  ASSERT_EQ(st.counts[static_cast<int>(JobState::kPending)], 1u) << "the lost take left its job pending";
  Taken retaken = TakeInBatch();
  ASSERT_TRUE(retaken.status.ok());
  EXPECT_EQ(retaken.lease->job_id, lost.lease->job_id);
  EXPECT_GT(Counter(retaken.lease->token), Counter(shown)) << "a token that may be out there was handed out again";
  // A result sent with the shown token is refused.
  EXPECT_TRUE(store_->Complete(retaken.lease->job_id, shown, "{}", {}).IsLeaseLost());
}

TEST_F(EarlyLeaseTest, ACheckpointKeepsTheReservation) {
  Add(2);
  ASSERT_TRUE(TakeInBatch().status.ok());
  ASSERT_TRUE(store_->Checkpoint().ok());
  ASSERT_TRUE(store_->Compact().ok());
  FailLogWrites(Status::IOError("injected EIO"));
  Taken lost = TakeInBatch();
  ASSERT_TRUE(lost.early_at_apply);
  ASSERT_FALSE(lost.status.ok());
  env_.SetFaultHook(nullptr);
  Open();
  Taken retaken = TakeInBatch();
  ASSERT_TRUE(retaken.status.ok());
  EXPECT_GT(Counter(retaken.lease->token), Counter(lost.lease->token));
}

TEST_F(EarlyLeaseTest, AFullDiskUndoesAnEarlyTakeAndTheStoreGoesOn) {
  Add(1);
  ASSERT_TRUE(TakeInBatch().status.ok());
  // Fill the disk (segments are preallocated: the failure comes when a new one is needed).
  env_.SetCapacity(env_.UsedBytes() + (64 << 10));
  for (int i = 0; i < 100000; ++i) {
    NewJob j;
    j.prompt = PromptFor(seq_++);
    EnqueueResult r;
    Status s = store_->Enqueue(j, &r);
    if (s.IsNoSpace()) break;
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  // Takes go on while the tail has room; the first one that needs a new segment fails.
  Taken full;
  for (int i = 0; i < 1000; ++i) {
    full = TakeInBatch();
    if (!full.status.ok()) break;
  }
  ASSERT_TRUE(full.status.IsNoSpace()) << full.status.ToString();
  ASSERT_TRUE(full.early_at_apply) << "it could have been shown to a worker";
  EXPECT_TRUE(store_->health().ok()) << "a full disk must not break the handle";
  Job j;
  ASSERT_TRUE(store_->Get(full.lease->job_id, false, &j).ok());
  EXPECT_EQ(j.state, JobState::kPending) << "the undone take left the job pending";
  env_.SetCapacity(0);
  Taken next = TakeInBatch();
  ASSERT_TRUE(next.status.ok()) << next.status.ToString();
  EXPECT_EQ(next.lease->job_id, full.lease->job_id);
  EXPECT_GT(Counter(next.lease->token), Counter(full.lease->token));
  EXPECT_TRUE(store_->Complete(next.lease->job_id, full.lease->token, "{}", {}).IsLeaseLost());
  EXPECT_TRUE(store_->Complete(next.lease->job_id, next.lease->token, "{}", {}).ok());
}

}  // namespace
}  // namespace comfymq
