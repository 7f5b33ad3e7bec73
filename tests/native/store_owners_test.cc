// Fair share through the store (Store::SetOwnerPolicies / OwnerStats): three owners get jobs in proportion to
// their weights over 3,000 takes; an owner at its running limit waits while others run; owners survive replay,
// checkpoints ("CMQCKP04") and an older checkpoint that kept none; bad policies change nothing.
#include <gtest/gtest.h>

#include <map>

#include "comfymq/store.h"
#include "store/checkpoint.h"
#include "store/doc_table.h"
#include "store/job_table.h"
#include "test_util.h"
#include "testing/mem_env.h"

namespace comfymq {
namespace {

using ::comfymq::testing::PromptFor;
using ::comfymq::testing::SmallOptions;

constexpr int64_t kT0 = 1'750'000'000'000'000;

class StoreOwnersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    env_.SetNowMicros(kT0);
    Open();
  }
  void Open() {
    store_.reset();
    Status s = Store::Open(SmallOptions(&env_), "/db", &store_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  std::vector<uint64_t> Add(const std::string& owner, int n, int32_t priority = 0) {
    std::vector<NewJob> jobs(n);
    for (NewJob& j : jobs) {
      j.prompt = PromptFor(++seq_);
      j.owner = owner;
      j.priority = priority;
    }
    std::vector<EnqueueResult> r;
    Status s = store_->EnqueueMany(jobs, &r);
    EXPECT_TRUE(s.ok()) << s.ToString();
    std::vector<uint64_t> ids;
    for (const auto& e : r) ids.push_back(e.id);
    return ids;
  }

  std::unique_ptr<Lease> Take() {
    TakeOptions o;
    o.worker_id = "w1";
    o.lease_ms = 100000;
    std::unique_ptr<Lease> l;
    Status s = store_->Take(o, &l);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return l;
  }

  void Complete(const Lease& l) {
    Status s = store_->Complete(l.job_id, l.token, "{}", {});
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  std::map<std::string, OwnerCounts> Owners() {
    std::vector<OwnerCounts> v;
    EXPECT_TRUE(store_->OwnerStats(&v).ok());
    std::map<std::string, OwnerCounts> out;
    for (auto& c : v) out[c.owner] = c;
    return out;
  }

  std::string CheckpointMagic() {
    std::vector<std::string> names;
    EXPECT_TRUE(env_.GetChildren("/db", &names).ok());
    for (const std::string& n : names) {
      if (n.rfind("checkpoint-", 0) != 0) continue;
      std::string data;
      EXPECT_TRUE(env_.ReadFileToString("/db/" + n, &data).ok());
      return data.substr(0, 8);
    }
    return "";
  }

  MemEnv env_;
  std::unique_ptr<Store> store_;
  uint64_t seq_ = 0;
};

TEST_F(StoreOwnersTest, ThreeOwnersGetTheirWeightedSharesOverThreeThousandJobs) {
  const std::map<std::string, uint32_t> weights = {{"ana", 1}, {"ben", 2}, {"cy", 3}};
  std::map<std::string, OwnerPolicy> policies;
  for (const auto& [name, w] : weights) policies[name] = OwnerPolicy{w, 0};
  ASSERT_TRUE(store_->SetOwnerPolicies(OwnerPolicy{}, policies).ok());
  std::map<uint64_t, std::string> owner_of;
  for (const auto& [name, w] : weights) {
    for (uint64_t id : Add(name, 3000)) owner_of[id] = name;  // ana's sweep first: arrival order is no advantage
  }
  std::map<std::string, int> got;
  for (int i = 0; i < 3000; ++i) {
    auto l = Take();
    ASSERT_TRUE(l != nullptr);
    EXPECT_EQ(l->job.owner, owner_of.at(l->job_id));
    got[owner_of.at(l->job_id)]++;
    Complete(*l);
  }
  for (const auto& [name, w] : weights) {
    const double share = got[name] / 3000.0, want = w / 6.0;
    EXPECT_NEAR(share, want, want * 0.05) << name << " got " << got[name] << " of 3000";
  }
}

TEST_F(StoreOwnersTest, AnOwnerAtItsRunningLimitWaitsWhileOthersRun) {
  ASSERT_TRUE(store_->SetOwnerPolicies(OwnerPolicy{}, {{"ana", OwnerPolicy{1, 2}}}).ok());
  Add("ana", 5);
  auto a1 = Take(), a2 = Take();
  ASSERT_TRUE(a1 && a2);
  EXPECT_EQ(a1->job.owner, "ana");
  EXPECT_EQ(a2->job.owner, "ana");
  EXPECT_EQ(Take(), nullptr);  // ana is at 2 running: her 3 pending jobs wait
  auto owners = Owners();
  EXPECT_TRUE(owners["ana"].at_running_limit);
  EXPECT_EQ(owners["ana"].running, 2u);
  EXPECT_EQ(owners["ana"].pending, 3u);
  Add("ben", 1);
  auto b = Take();
  ASSERT_TRUE(b != nullptr);
  EXPECT_EQ(b->job.owner, "ben");  // others are not held up
  EXPECT_EQ(Take(), nullptr);
  Complete(*a1);
  auto a3 = Take();
  ASSERT_TRUE(a3 != nullptr);  // one of hers ended: the next goes
  EXPECT_EQ(a3->job.owner, "ana");
  EXPECT_EQ(Take(), nullptr);
  // Raising the limit lets the rest go at once.
  ASSERT_TRUE(store_->SetOwnerPolicies(OwnerPolicy{}, {{"ana", OwnerPolicy{1, 0}}}).ok());
  EXPECT_NE(Take(), nullptr);
  EXPECT_NE(Take(), nullptr);
  EXPECT_FALSE(Owners()["ana"].at_running_limit);
}

TEST_F(StoreOwnersTest, TheDefaultPolicyAppliesToOwnersNotNamed) {
  ASSERT_TRUE(store_->SetOwnerPolicies(OwnerPolicy{1, 1}, {{"vip", OwnerPolicy{1, 0}}}).ok());
  Add("x", 3);
  Add("vip", 3);
  int x = 0, vip = 0;
  while (auto l = Take()) (l->job.owner == "x" ? x : vip)++;
  EXPECT_EQ(x, 1);
  EXPECT_EQ(vip, 3);
}

TEST_F(StoreOwnersTest, BadPoliciesAreRefusedAndChangeNothing) {
  ASSERT_TRUE(store_->SetOwnerPolicies(OwnerPolicy{}, {{"ana", OwnerPolicy{1, 1}}}).ok());
  EXPECT_TRUE(store_->SetOwnerPolicies(OwnerPolicy{0, 0}, {}).IsInvalidArgument());
  EXPECT_TRUE(store_->SetOwnerPolicies(OwnerPolicy{}, {{"ben", OwnerPolicy{1001, 0}}}).IsInvalidArgument());
  Add("ana", 2);
  EXPECT_NE(Take(), nullptr);
  EXPECT_EQ(Take(), nullptr);  // ana's limit of 1 still holds
}

TEST_F(StoreOwnersTest, OwnersSurviveReplayAndCheckpoints) {
  Add("ana", 3);
  Add("ben", 2);
  ASSERT_TRUE(store_->Checkpoint().ok());
  EXPECT_EQ(CheckpointMagic(), "CMQCKP04");
  Add("cy", 1);  // after the checkpoint: replayed from the log
  auto l = Take();
  ASSERT_TRUE(l != nullptr);
  Open();
  auto owners = Owners();
  ASSERT_EQ(owners.size(), 3u);
  EXPECT_EQ(owners["ana"].pending + owners["ana"].running, 3u);
  EXPECT_EQ(owners["ana"].running, 1u);  // the lease taken before the reopen
  EXPECT_EQ(owners["ben"].pending, 2u);
  EXPECT_EQ(owners["cy"].pending, 1u);
  // Limits set after the reopen see the running job.
  ASSERT_TRUE(store_->SetOwnerPolicies(OwnerPolicy{}, {{"ana", OwnerPolicy{1, 1}}}).ok());
  std::map<std::string, int> got;
  while (auto t = Take()) got[t->job.owner]++;
  EXPECT_EQ(got["ana"], 0);
  EXPECT_EQ(got["ben"], 2);
  EXPECT_EQ(got["cy"], 1);
}

TEST_F(StoreOwnersTest, AStoreWithoutOwnersKeepsTheOlderCheckpointFormat) {
  Add("", 2);
  ASSERT_TRUE(store_->Checkpoint().ok());
  EXPECT_EQ(CheckpointMagic(), "CMQCKP01");
}

// A checkpoint written by a build that kept no owners (its jobs all owner 0): the owners of pending and running
// jobs are read back from their records at open.
TEST_F(StoreOwnersTest, OwnersAreRecoveredFromAnOlderCheckpoint) {
  Add("ana", 2);
  Add("ben", 1);
  ASSERT_TRUE(store_->Close().ok());  // writes a checkpoint ("CMQCKP04")
  store_.reset();
  std::vector<std::string> names;
  ASSERT_TRUE(env_.GetChildren("/db", &names).ok());
  std::string path;
  for (const std::string& n : names) {
    if (n.rfind("checkpoint-", 0) == 0) path = "/db/" + n;
  }
  ASSERT_FALSE(path.empty());
  checkpoint::Header h;
  JobTable read;
  DocTable docs;
  ASSERT_TRUE(checkpoint::Read(&env_, path, &h, &read, &docs).ok());
  EXPECT_TRUE(h.owners);
  JobTable old;  // the same jobs, as an older build indexed them
  read.ForEach([&](const JobMeta& m) {
    JobMeta n = m;
    n.owner = 0;
    old.Insert(n);
  });
  std::unique_ptr<WritableFile> f;
  ASSERT_TRUE(env_.NewWritableFile(path, Env::OpenMode::kTruncate, &f).ok());
  ASSERT_TRUE(checkpoint::Write(f.get(), h, old, docs).ok());
  ASSERT_TRUE(f->Sync().ok());
  ASSERT_TRUE(f->Close().ok());
  Open();
  EXPECT_EQ(CheckpointMagic(), "CMQCKP01");  // (still the rewritten one: nothing checkpointed since)
  auto owners = Owners();
  EXPECT_EQ(owners["ana"].pending, 2u);
  EXPECT_EQ(owners["ben"].pending, 1u);
  EXPECT_EQ(owners.count(""), 0u);
}

}  // namespace
}  // namespace comfymq
