// Injected I/O failures: a failed fsync or write is fatal for the handle (never acknowledged, never
// retried); a full disk is a clear error that changes nothing, and the store works again once space frees.
#include <gtest/gtest.h>

#include <atomic>

#include "comfymq/store.h"
#include "store/store_batch.h"
#include "test_util.h"
#include "testing/mem_env.h"

namespace comfymq {
namespace {

using ::comfymq::testing::PromptFor;
using ::comfymq::testing::SeqOfPrompt;
using ::comfymq::testing::SmallOptions;

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(Store::Open(SmallOptions(&env_), "/db", &store_).ok()); }

  Status Add(uint64_t seq, uint64_t* id = nullptr, size_t pad = 0) {
    NewJob j;
    j.prompt = PromptFor(seq, pad);
    EnqueueResult r;
    Status s = store_->Enqueue(j, &r);
    if (s.ok() && id) *id = r.id;
    return s;
  }

  uint64_t Count() {
    StoreStats st;
    EXPECT_TRUE(store_->Stats(&st).ok());
    return st.total;
  }

  void Reopen() {
    store_.reset();
    env_.SetFaultHook(nullptr);
    Status s = Store::Open(SmallOptions(&env_), "/db", &store_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  MemEnv env_;
  std::unique_ptr<Store> store_;
};

TEST_F(FaultTest, AFailedBatchCancelCancelsNoneOfIt) {
  std::vector<NewJob> jobs(5);
  for (size_t i = 0; i < jobs.size(); ++i) {
    jobs[i].prompt = PromptFor(10 + i);
    jobs[i].batch_id = "b.1";
  }
  std::vector<EnqueueResult> rs;
  ASSERT_TRUE(store_->EnqueueMany(jobs, &rs).ok());
  env_.SetFaultHook([&](MemEnv::Op op, const std::string& path) {
    if (op == MemEnv::Op::kWrite && path.find("/log-") != std::string::npos) return Status::IOError("injected EIO");
    return Status::OK();
  });
  std::vector<uint64_t> cancelled{42};
  Status s = store_->CancelBatch("b.1", "", &cancelled);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_EQ(cancelled, std::vector<uint64_t>{42}) << "untouched on failure";
  Job j;
  for (const auto& r : rs) {  // rolled back in memory...
    ASSERT_TRUE(store_->Get(r.id, false, &j).ok());
    EXPECT_EQ(j.state, JobState::kPending);
  }
  Reopen();
  for (const auto& r : rs) {  // ...and nothing of it on disk
    ASSERT_TRUE(store_->Get(r.id, false, &j).ok());
    EXPECT_EQ(j.state, JobState::kPending);
  }
  ASSERT_TRUE(store_->CancelBatch("b.1", "", &cancelled).ok());
  EXPECT_EQ(cancelled.size(), 5u);
}

TEST_F(FaultTest, FailedFsyncIsFatalAndNeverRetried) {
  uint64_t kept = 0;
  ASSERT_TRUE(Add(1, &kept).ok());
  std::atomic<int> syncs_after_failure{0};
  std::atomic<bool> failed{false};
  env_.SetFaultHook([&](MemEnv::Op op, const std::string& path) {
    if (op == MemEnv::Op::kSync && path.find("/log-") != std::string::npos) {
      if (failed) syncs_after_failure++;
      failed = true;
      return Status::IOError("injected fsync failure");
    }
    return Status::OK();
  });
  Status s = Add(2);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_NE(s.message().find("injected fsync failure"), std::string::npos);
  EXPECT_FALSE(store_->health().ok());
  // Every later change is refused without touching the disk again.
  EXPECT_TRUE(Add(3).IsIOError());
  EXPECT_TRUE(store_->SetPaused(true).IsIOError());
  std::unique_ptr<Lease> l;
  TakeOptions o;
  o.worker_id = "w";
  EXPECT_TRUE(store_->Take(o, &l).IsIOError());
  EXPECT_EQ(syncs_after_failure.load(), 0);
  // The failed enqueue is not visible in memory either.
  EXPECT_EQ(Count(), 1u);
  // Reopening recovers everything acknowledged.
  Reopen();
  Job j;
  ASSERT_TRUE(store_->Get(kept, true, &j).ok());
  EXPECT_EQ(SeqOfPrompt(j.prompt), 1);
  EXPECT_TRUE(Add(4).ok());
}

TEST_F(FaultTest, FailedWriteIsFatal) {
  env_.SetFaultHook([&](MemEnv::Op op, const std::string& path) {
    if (op == MemEnv::Op::kWrite && path.find("/log-") != std::string::npos) return Status::IOError("injected EIO");
    return Status::OK();
  });
  EXPECT_TRUE(Add(1).IsIOError());
  EXPECT_FALSE(store_->health().ok());
  EXPECT_EQ(Count(), 0u);
  Reopen();
  EXPECT_EQ(Count(), 0u);
  EXPECT_TRUE(Add(2).ok());
}

TEST_F(FaultTest, FullDiskIsAClearErrorThatChangesNothingAndPasses) {
  std::vector<uint64_t> ids;
  // Fill the disk: segments are preallocated, so the failure comes when a new one is needed.
  env_.SetCapacity(env_.UsedBytes() + (200 << 10));
  Status s;
  for (int i = 0; i < 10000; ++i) {
    uint64_t id;
    s = Add(i, &id, 500);
    if (!s.ok()) break;
    ids.push_back(id);
  }
  ASSERT_TRUE(s.IsNoSpace()) << s.ToString();
  EXPECT_NE(s.message().find("no space"), std::string::npos);
  EXPECT_TRUE(store_->health().ok()) << "a full disk must not break the handle";
  EXPECT_EQ(Count(), ids.size());
  // Everything is still readable, and state changes that need no new segment may still work.
  Job j;
  ASSERT_TRUE(store_->Get(ids.front(), true, &j).ok());
  EXPECT_TRUE(Add(99999, nullptr, 500).IsNoSpace());
  EXPECT_EQ(Count(), ids.size());
  // Space frees: it works again, and nothing was lost.
  env_.SetCapacity(0);
  uint64_t later = 0;
  ASSERT_TRUE(Add(123456, &later, 500).ok());
  Reopen();
  EXPECT_EQ(Count(), ids.size() + 1);
  for (size_t i = 0; i < ids.size(); i += 7) {
    ASSERT_TRUE(store_->Get(ids[i], true, &j).ok());
    EXPECT_EQ(SeqOfPrompt(j.prompt), static_cast<int64_t>(i));
  }
}

TEST_F(FaultTest, BatchOnFullDiskAddsNone) {
  env_.SetCapacity(env_.UsedBytes() + (40 << 10));
  std::vector<NewJob> batch(200);
  for (int i = 0; i < 200; ++i) batch[i].prompt = PromptFor(i, 400);
  std::vector<EnqueueResult> rs;
  Status s = store_->EnqueueMany(batch, &rs);
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  EXPECT_EQ(Count(), 0u);
  Reopen();
  EXPECT_EQ(Count(), 0u);
}

TEST_F(FaultTest, FailedCheckpointIsNotFatal) {
  ASSERT_TRUE(Add(1).ok());
  env_.SetFaultHook([&](MemEnv::Op op, const std::string& path) {
    if (op == MemEnv::Op::kRename && path.find("checkpoint") != std::string::npos)
      return Status::IOError("injected rename failure");
    return Status::OK();
  });
  EXPECT_FALSE(store_->Checkpoint().ok());
  EXPECT_TRUE(store_->health().ok());
  EXPECT_TRUE(Add(2).ok());
  env_.SetFaultHook(nullptr);
  EXPECT_TRUE(store_->Checkpoint().ok());
  Reopen();
  EXPECT_EQ(Count(), 2u);
}

TEST_F(FaultTest, ReadErrorsAreReportedNotFatal) {
  uint64_t id = 0;
  ASSERT_TRUE(Add(1, &id).ok());
  ASSERT_TRUE(store_->Checkpoint().ok());
  store_.reset();
  ASSERT_TRUE(Store::Open(SmallOptions(&env_), "/db", &store_).ok());
  env_.SetFaultHook([&](MemEnv::Op op, const std::string& path) {
    if (op == MemEnv::Op::kRead && path.find("/log-") != std::string::npos)
      return Status::IOError("injected read error");
    return Status::OK();
  });
  Job j;
  Status s = store_->Get(id, true, &j);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_TRUE(store_->health().ok());
  env_.SetFaultHook(nullptr);
  EXPECT_TRUE(store_->Get(id, true, &j).ok());
}

TEST_F(FaultTest, OpenFailsClearlyWhenTheDirectoryCannotBeUsed) {
  store_.reset();
  env_.SetFaultHook([&](MemEnv::Op op, const std::string&) {
    if (op == MemEnv::Op::kLock) return Status::IOError("injected: permission denied");
    return Status::OK();
  });
  Status s = Store::Open(SmallOptions(&env_), "/db", &store_);
  EXPECT_TRUE(s.IsIOError());
  EXPECT_NE(s.message().find("permission denied"), std::string::npos);
}

TEST_F(FaultTest, TheDispatchHookLeasesInTheEnqueueCommitAndDeliversOnlyWhatIsDurable) {
  std::vector<std::unique_ptr<Lease>> delivered;
  int chosen = 0;
  DispatchHook hook;
  hook.choose = [&](DispatchContext& ctx) {
    TakeOptions o;
    o.worker_id = "gpu-1";
    o.lease_ms = 60000;
    if (ctx.Take(o) != nullptr) chosen++;
  };
  hook.deliver = [&](std::vector<std::unique_ptr<Lease>> leases) {
    for (auto& l : leases) delivered.push_back(std::move(l));
  };
  SetDispatchHook(store_.get(), hook);
  uint64_t first = 0;
  ASSERT_TRUE(Add(1, &first).ok());
  ASSERT_EQ(delivered.size(), 1u);
  EXPECT_EQ(delivered[0]->job_id, first);
  EXPECT_EQ(SeqOfPrompt(delivered[0]->job.prompt), 1);
  Job j;
  ASSERT_TRUE(store_->Get(first, false, &j).ok());
  EXPECT_EQ(j.state, JobState::kRunning);
  EXPECT_EQ(j.lease_token, delivered[0]->token);

  // A group that fails to reach the disk delivers nothing, and its lease never existed.
  env_.SetFaultHook([](MemEnv::Op op, const std::string& path) {
    return op == MemEnv::Op::kSync && path.find("/log-") != std::string::npos ? Status::IOError("injected")
                                                                              : Status::OK();
  });
  EXPECT_FALSE(Add(2).ok());
  EXPECT_EQ(chosen, 2);
  EXPECT_EQ(delivered.size(), 1u);
  SetDispatchHook(store_.get(), DispatchHook());
  Reopen();
  ASSERT_TRUE(store_->Get(first, false, &j).ok());
  EXPECT_EQ(j.state, JobState::kRunning) << "the lease was durable with the job";
  EXPECT_EQ(j.lease_token, delivered[0]->token);
  // (The failed group may or may not have reached the disk: it was never acknowledged nor delivered, and if
  // it is there its lease simply expires.)

  // Without a hook an arriving job just waits.
  uint64_t third = 0;
  ASSERT_TRUE(Add(3, &third).ok());
  ASSERT_TRUE(store_->Get(third, false, &j).ok());
  EXPECT_EQ(j.state, JobState::kPending);
}

}  // namespace
}  // namespace comfymq
