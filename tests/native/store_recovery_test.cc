// Opening damaged stores: a bad record in the middle is reported and skipped, a torn tail is cut (once),
// a bad checkpoint falls back to replaying the log, an interrupted segment creation is cleaned up.
#include <gtest/gtest.h>

#include <random>

#include "comfymq/store.h"
#include "store/log_segment.h"
#include "test_util.h"
#include "testing/mem_env.h"

namespace comfymq {
namespace {

using ::comfymq::testing::PromptFor;
using ::comfymq::testing::SeqOfPrompt;
using ::comfymq::testing::SmallOptions;

class RecoveryTest : public ::testing::Test {
 protected:
  // Builds a store with `n` jobs and "crashes" it (no clean close, so no final checkpoint).
  std::vector<uint64_t> BuildAndCrash(int n, size_t pad = 100) {
    MemEnv env;
    std::unique_ptr<Store> store;
    EXPECT_TRUE(Store::Open(SmallOptions(&env), "/db", &store).ok());
    std::vector<uint64_t> ids;
    for (int i = 0; i < n; ++i) {
      NewJob j;
      j.prompt = PromptFor(i, pad);
      EnqueueResult r;
      EXPECT_TRUE(store->Enqueue(j, &r).ok());
      ids.push_back(r.id);
    }
    std::mt19937_64 rng(1);
    image_ = env.CrashImage(rng, MemEnv::CrashMode::kTornPrefix);  // everything was synced: an exact copy
    return ids;
  }

  Status Open(RecoveryReport* rep) {
    store_.reset();
    return Store::Open(SmallOptions(image_.get()), "/db", &store_, rep);
  }

  void Edit(const std::string& file, uint64_t offset, const std::string& bytes) {
    std::unique_ptr<WritableFile> f;
    ASSERT_TRUE(image_->NewWritableFile("/db/" + file, Env::OpenMode::kOpenExisting, &f).ok());
    ASSERT_TRUE(f->WriteAt(offset, bytes).ok());
    ASSERT_TRUE(f->Sync().ok());
  }

  std::vector<std::string> Files(const char* prefix) {
    std::vector<std::string> names, out;
    image_->GetChildren("/db", &names).IgnoreError();
    for (auto& n : names) {
      if (n.rfind(prefix, 0) == 0) out.push_back(n);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  std::unique_ptr<MemEnv> image_;
  std::unique_ptr<Store> store_;
};

TEST_F(RecoveryTest, BadRecordInTheMiddleIsReportedAndTheRestOpens) {
  auto ids = BuildAndCrash(40, 500);
  auto segs = Files("log-");
  ASSERT_GE(segs.size(), 2u);
  // Damage the first record of the first segment (a job record).
  Edit(segs[0], log::kSegmentHeaderSize + log::kRecordHeaderSize + 20, "DAMAGE");
  RecoveryReport rep;
  Status s = Open(&rep);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(rep.bad_regions.size(), 1u) << rep.ToString();
  EXPECT_EQ(rep.bad_regions[0].file, segs[0]);
  EXPECT_NE(rep.ToString().find("damaged region"), std::string::npos);
  EXPECT_EQ(rep.jobs, 39u);
  Job j;
  EXPECT_TRUE(store_->Get(ids[0], false, &j).IsNotFound());
  for (size_t i = 1; i < ids.size(); ++i) {
    ASSERT_TRUE(store_->Get(ids[i], true, &j).ok());
    EXPECT_EQ(SeqOfPrompt(j.prompt), static_cast<int64_t>(i));
  }
}

TEST_F(RecoveryTest, TornTailIsCutOnceAndReported) {
  auto ids = BuildAndCrash(10);
  auto segs = Files("log-");
  // A partial record after the last good one: a header and half a payload.
  std::string partial;
  log::AppendRecord(log::RecordType::kJob, std::string(300, 'z'), &partial);
  partial.resize(150);
  RecoveryReport rep;
  ASSERT_TRUE(Open(&rep).ok());
  store_.reset();  // a clean close: checkpoint, and the log continues in a fresh segment
  segs = Files("log-");
  // Find the end of the data in the last segment and append the torn record there.
  std::string data;
  ASSERT_TRUE(image_->ReadFileToString("/db/" + segs.back(), &data).ok());
  size_t end = std::max<size_t>(data.find_last_not_of('\0') + 1, log::kSegmentHeaderSize);
  Edit(segs.back(), end, partial);
  ASSERT_TRUE(Open(&rep).ok());
  EXPECT_EQ(rep.torn_tail_bytes, 150u) << rep.ToString();
  EXPECT_EQ(rep.jobs, 10u);
  store_.reset();
  ASSERT_TRUE(Open(&rep).ok());
  EXPECT_EQ(rep.torn_tail_bytes, 0u) << "the torn tail must have been cut the first time";
  NewJob nj;
  nj.prompt = PromptFor(77);
  EnqueueResult r;
  ASSERT_TRUE(store_->Enqueue(nj, &r).ok());
  store_.reset();
  ASSERT_TRUE(Open(&rep).ok());
  EXPECT_EQ(rep.jobs, 11u);
  EXPECT_TRUE(rep.bad_regions.empty()) << rep.ToString();
}

TEST_F(RecoveryTest, DamagedCheckpointFallsBackToTheLog) {
  auto ids = BuildAndCrash(30);
  RecoveryReport rep;
  ASSERT_TRUE(Open(&rep).ok());
  ASSERT_TRUE(store_->Checkpoint().ok());
  NewJob nj;
  nj.prompt = PromptFor(30);
  EnqueueResult r;
  ASSERT_TRUE(store_->Enqueue(nj, &r).ok());
  std::mt19937_64 rng(2);
  image_ = image_->CrashImage(rng, MemEnv::CrashMode::kTornPrefix);
  store_.release();  // the old image's store is abandoned with its env (a crashed process)
  auto cps = Files("checkpoint-");
  ASSERT_EQ(cps.size(), 1u);
  Edit(cps[0], 40, "XXXX");
  ASSERT_TRUE(Open(&rep).ok());
  EXPECT_EQ(rep.checkpoint_segment, 0u);
  EXPECT_NE(rep.ToString().find("ignored checkpoint"), std::string::npos) << rep.ToString();
  EXPECT_EQ(rep.jobs, 31u);
  Job j;
  for (size_t i = 0; i < ids.size(); ++i) ASSERT_TRUE(store_->Get(ids[i], false, &j).ok());
}

TEST_F(RecoveryTest, InterruptedSegmentCreationIsCleanedUp) {
  BuildAndCrash(5);
  auto segs = Files("log-");
  uint32_t last = 0;
  ASSERT_TRUE(log::ParseSegmentFileName(segs.back(), &last));
  // A next segment whose header never made it to disk.
  std::unique_ptr<WritableFile> f;
  ASSERT_TRUE(image_->NewWritableFile("/db/" + log::SegmentFileName(last + 1), Env::OpenMode::kCreateNew, &f).ok());
  ASSERT_TRUE(f->Allocate(4096).ok());
  ASSERT_TRUE(f->Sync().ok());
  RecoveryReport rep;
  ASSERT_TRUE(Open(&rep).ok());
  EXPECT_EQ(rep.jobs, 5u);
  EXPECT_NE(rep.ToString().find("interrupted"), std::string::npos) << rep.ToString();
  NewJob nj;
  nj.prompt = PromptFor(9);
  EnqueueResult r;
  ASSERT_TRUE(store_->Enqueue(nj, &r).ok());
  store_.reset();
  ASSERT_TRUE(Open(&rep).ok());
  EXPECT_EQ(rep.jobs, 6u);
}

TEST_F(RecoveryTest, MissingSegmentIsReported) {
  BuildAndCrash(60, 500);
  auto segs = Files("log-");
  ASSERT_GE(segs.size(), 3u);
  ASSERT_TRUE(image_->RemoveFile("/db/" + segs[1]).ok());
  RecoveryReport rep;
  ASSERT_TRUE(Open(&rep).ok());
  EXPECT_NE(rep.ToString().find("missing"), std::string::npos) << rep.ToString();
  EXPECT_LT(rep.jobs, 60u);
}

}  // namespace
}  // namespace comfymq
