// Jobs that wait for others (NewJob::after): not taken until every one has succeeded; cancelled, saying why, in
// the same commit as a failure, cancel or delete of one they wait for (and theirs after them); refused at enqueue
// and retry when what they wait for cannot succeed; and all of it the same after a reopen (log replay or
// checkpoint).
#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "comfymq/store.h"
#include "store/records.h"
#include "test_util.h"
#include "testing/mem_env.h"

namespace comfymq {
namespace {

using ::comfymq::testing::PromptFor;
using ::comfymq::testing::SmallOptions;
using json = nlohmann::json;

constexpr int64_t kT0 = 1'750'000'000'000'000;

class StoreWaitsTest : public ::testing::Test {
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

  Status TryAdd(std::vector<uint64_t> after, uint64_t* id, int priority = 1, int max_attempts = 3) {
    NewJob j;
    j.prompt = PromptFor(++seq_);
    j.after = std::move(after);
    j.priority = priority;
    j.max_attempts = max_attempts;
    EnqueueResult r;
    Status s = store_->Enqueue(j, &r);
    *id = r.id;
    return s;
  }

  uint64_t Add(std::vector<uint64_t> after = {}, int priority = 1, int max_attempts = 3) {
    uint64_t id = 0;
    Status s = TryAdd(std::move(after), &id, priority, max_attempts);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return id;
  }

  std::unique_ptr<Lease> Take() {
    TakeOptions o;
    o.worker_id = "w1";
    o.lease_ms = 10000;
    std::unique_ptr<Lease> l;
    Status s = store_->Take(o, &l);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return l;
  }

  // Takes the next job, which must be `id`, and completes it.
  void Run(uint64_t id) {
    auto l = Take();
    ASSERT_TRUE(l != nullptr);
    ASSERT_EQ(l->job_id, id);
    ASSERT_TRUE(store_->Complete(l->job_id, l->token, "{}", {}).ok());
  }

  Job Get(uint64_t id) {
    Job j;
    Status s = store_->Get(id, false, &j);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return j;
  }

  std::string ErrorOf(uint64_t id) {
    json e = json::parse(Get(id).error, nullptr, false);
    return e.is_object() ? e.value("type", "") + ": " + e.value("message", "") : "";
  }

  uint64_t Waiting() {
    StoreStats st;
    EXPECT_TRUE(store_->Stats(&st).ok());
    return st.waiting;
  }

  MemEnv env_;
  std::unique_ptr<Store> store_;
  uint64_t seq_ = 0;
};

TEST_F(StoreWaitsTest, AJobRunsOnlyOnceEveryJobItWaitsForHasSucceeded) {
  const uint64_t a = Add();
  const uint64_t b = Add();
  const uint64_t c = Add({b, a, b}, /*priority=*/9);  // higher priority, but it waits
  EXPECT_EQ(Get(c).after, (std::vector<uint64_t>{a, b}));
  EXPECT_EQ(Waiting(), 1u);
  Run(a);
  EXPECT_EQ(Waiting(), 1u);  // b has not run yet
  auto lb = Take();
  ASSERT_TRUE(lb != nullptr);
  EXPECT_EQ(lb->job_id, b);
  EXPECT_TRUE(Take() == nullptr);  // c still waits: b runs
  ASSERT_TRUE(store_->Complete(b, lb->token, "{}", {}).ok());
  EXPECT_EQ(Waiting(), 0u);
  auto lc = Take();
  ASSERT_TRUE(lc != nullptr);
  EXPECT_EQ(lc->job_id, c);
  EXPECT_EQ(lc->job.after, (std::vector<uint64_t>{a, b}));
}

TEST_F(StoreWaitsTest, AFailureCancelsTheWholeChainInOneCommit) {
  const uint64_t a = Add({}, 1, /*max_attempts=*/1);
  const uint64_t b = Add({a});
  const uint64_t c = Add({b});
  const uint64_t other = Add();
  std::mutex mu;
  std::vector<StoreEvent> seen;
  store_->SetListener([&](const std::vector<StoreEvent>& ev) {
    std::lock_guard<std::mutex> l(mu);
    seen.insert(seen.end(), ev.begin(), ev.end());
  });
  auto la = Take();
  ASSERT_TRUE(la != nullptr);
  ASSERT_EQ(la->job_id, a);
  JobError err;
  err.type = "execution_error";
  err.message = "out of memory";
  const uint64_t syncs = env_.sync_count();
  ASSERT_TRUE(store_->Fail(a, la->token, err, /*retryable=*/true).ok());  // no attempts left: it fails
  EXPECT_EQ(env_.sync_count() - syncs, 1u) << "the failure and the cancels it causes: one commit";
  EXPECT_EQ(Get(a).state, JobState::kFailed);
  EXPECT_EQ(Get(b).state, JobState::kCancelled);
  EXPECT_EQ(Get(c).state, JobState::kCancelled);
  EXPECT_EQ(ErrorOf(b), "cancelled: it waits for job " + FormatJobId(a) + ", which failed");
  EXPECT_EQ(ErrorOf(c), "cancelled: it waits for job " + FormatJobId(b) + ", which was cancelled");
  EXPECT_EQ(Get(other).state, JobState::kPending);
  EXPECT_EQ(Waiting(), 0u);
  store_.reset();  // close drains the listener queue
  // Listeners hear each one, b before c.
  std::vector<uint64_t> cancelled;
  for (const StoreEvent& e : seen) {
    if (e.to == JobState::kCancelled) cancelled.push_back(e.job_id);
  }
  EXPECT_EQ(cancelled, (std::vector<uint64_t>{b, c}));
  // The same after a reopen: the cancels were written with the failure.
  Open();
  EXPECT_EQ(Get(b).state, JobState::kCancelled);
  EXPECT_EQ(Get(c).state, JobState::kCancelled);
}

TEST_F(StoreWaitsTest, ARetryableFailureLeavesDependentsWaiting) {
  const uint64_t a = Add();
  const uint64_t b = Add({a});
  auto la = Take();
  JobError err;
  err.type = "execution_error";
  err.message = "flaky";
  ASSERT_TRUE(store_->Fail(a, la->token, err, true).ok());
  EXPECT_EQ(Get(a).state, JobState::kPending);
  EXPECT_EQ(Get(b).state, JobState::kPending);
  Run(a);
  auto lb = Take();
  ASSERT_TRUE(lb != nullptr);
  EXPECT_EQ(lb->job_id, b);
}

TEST_F(StoreWaitsTest, CancellingOrDeletingWhatOthersWaitForCancelsThem) {
  const uint64_t a = Add();
  const uint64_t b = Add({a});
  ASSERT_TRUE(store_->Cancel(a, "user said so").ok());
  EXPECT_EQ(ErrorOf(b), "cancelled: it waits for job " + FormatJobId(a) + ", which was cancelled");

  const uint64_t x = Add();
  Run(x);
  const uint64_t y = Add({x});
  const uint64_t z = Add({y});
  ASSERT_TRUE(store_->Delete(x).ok());  // y was ready: it is not any more, and it is cancelled
  EXPECT_EQ(ErrorOf(y), "cancelled: it waits for job " + FormatJobId(x) + ", which was deleted");
  EXPECT_EQ(Get(z).state, JobState::kCancelled);
  EXPECT_TRUE(Take() == nullptr);

  const uint64_t p = Add();
  Run(p);
  const uint64_t q = Add({p});
  env_.SetNowMicros(kT0 + 3600'000'000ll);
  uint64_t removed = 0;
  ASSERT_TRUE(store_->Purge(kT0 / 1000 + 1, &removed).ok());  // retention takes p (and the finished ones above)
  EXPECT_EQ(Get(q).state, JobState::kCancelled);
  EXPECT_EQ(ErrorOf(q), "cancelled: it waits for job " + FormatJobId(p) + ", which was deleted");
}

TEST_F(StoreWaitsTest, ARunThatComesBackAfterItsInputWasDeletedIsCancelled) {
  const uint64_t a = Add();
  Run(a);
  const uint64_t b = Add({a});
  auto lb = Take();
  ASSERT_TRUE(lb != nullptr);
  ASSERT_EQ(lb->job_id, b);
  ASSERT_TRUE(store_->Delete(a).ok());
  EXPECT_EQ(Get(b).state, JobState::kRunning);  // it has what it needs (or finds out)
  JobError err;
  err.type = "input_error";
  err.message = "could not fetch";
  ASSERT_TRUE(store_->Fail(b, lb->token, err, true).ok());
  EXPECT_EQ(Get(b).state, JobState::kCancelled);  // back in the queue, it could never run: cancelled at once
  EXPECT_EQ(ErrorOf(b), "cancelled: it waits for job " + FormatJobId(a) + ", which was deleted");
}

TEST_F(StoreWaitsTest, WaitingForWhatCannotSucceedIsRefusedAndChangesNothing) {
  const uint64_t a = Add({}, 1, 1);
  uint64_t id = 0;
  Status s = TryAdd({a + 999999}, &id);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("no job " + FormatJobId(a + 999999)), std::string::npos) << s.message();
  ASSERT_TRUE(store_->Cancel(a, "").ok());
  s = TryAdd({a}, &id);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("is cancelled"), std::string::npos) << s.message();
  std::vector<uint64_t> many(kMaxAfter + 1);
  for (size_t i = 0; i < many.size(); ++i) many[i] = a;
  EXPECT_TRUE(TryAdd(many, &id).IsInvalidArgument());
  EXPECT_TRUE(TryAdd({0}, &id).IsInvalidArgument());
  StoreStats st;
  ASSERT_TRUE(store_->Stats(&st).ok());
  EXPECT_EQ(st.total, 1u);
  // One bad job of a batch refuses the batch.
  NewJob ok, bad;
  ok.prompt = bad.prompt = PromptFor(99);
  bad.after = {a};
  std::vector<EnqueueResult> rs;
  EXPECT_TRUE(store_->EnqueueMany({ok, bad}, &rs).IsInvalidArgument());
  ASSERT_TRUE(store_->Stats(&st).ok());
  EXPECT_EQ(st.total, 1u);
}

TEST_F(StoreWaitsTest, RetryingADependentNeedsWhatItWaitsForToBeAbleToSucceed) {
  const uint64_t a = Add({}, 1, 1);
  const uint64_t b = Add({a});
  ASSERT_TRUE(store_->Cancel(a, "").ok());
  ASSERT_EQ(Get(b).state, JobState::kCancelled);
  Status s = store_->Retry(b);
  EXPECT_TRUE(s.IsConflict()) << s.ToString();
  EXPECT_NE(s.message().find("it waits for job " + FormatJobId(a) + ", which was cancelled"), std::string::npos);
  EXPECT_EQ(Get(b).state, JobState::kCancelled);
  ASSERT_TRUE(store_->Retry(a).ok());
  ASSERT_TRUE(store_->Retry(b).ok());  // waits again
  EXPECT_EQ(Waiting(), 1u);
  Run(a);
  auto lb = Take();
  ASSERT_TRUE(lb != nullptr);
  EXPECT_EQ(lb->job_id, b);
}

TEST_F(StoreWaitsTest, WaitsSurviveReopenFromTheLogAndFromACheckpoint) {
  const uint64_t a = Add();
  const uint64_t b = Add({a});
  const uint64_t c = Add({b});
  Open();  // log replay
  EXPECT_EQ(Waiting(), 2u);
  EXPECT_EQ(Get(c).after, (std::vector<uint64_t>{b}));
  Run(a);
  ASSERT_TRUE(store_->Checkpoint().ok());
  Open();  // from the checkpoint
  EXPECT_EQ(Waiting(), 1u);
  Run(b);
  Open();
  Run(c);
  // Compaction moves job records: the waits stay.
  const uint64_t d = Add({c}, 1, 1);
  const uint64_t e = Add({d});
  ASSERT_TRUE(store_->Compact().ok());
  ASSERT_TRUE(store_->Checkpoint().ok());
  Open();
  EXPECT_EQ(Get(e).after, (std::vector<uint64_t>{d}));
  ASSERT_TRUE(store_->Cancel(d, "").ok());
  EXPECT_EQ(Get(e).state, JobState::kCancelled);
}

TEST_F(StoreWaitsTest, AFailureWithMoreDependentsThanOneCommitTakesCancelsThemAllInTurn) {
  StoreOptions o = SmallOptions(&env_);
  o.max_cancels_per_commit = 3;
  store_.reset();
  ASSERT_TRUE(Store::Open(o, "/db", &store_).ok());
  const uint64_t a = Add({}, 1, 1);
  std::vector<uint64_t> waiting;
  for (int i = 0; i < 10; ++i) waiting.push_back(Add({a}));
  const uint64_t deep = Add({waiting.back()});
  auto cancelled = [&] {
    int n = 0;
    for (uint64_t id : waiting) n += Get(id).state == JobState::kCancelled;
    return n;
  };
  ASSERT_TRUE(store_->Cancel(a, "").ok());
  EXPECT_EQ(cancelled(), 3) << "one commit cancels at most max_cancels_per_commit";
  EXPECT_TRUE(Take() == nullptr) << "the others wait for a cancelled job: never dispatched";
  // A restart before the rest are cancelled: the store finds them again.
  store_.reset();
  ASSERT_TRUE(Store::Open(o, "/db", &store_).ok());
  EXPECT_EQ(cancelled(), 3);
  int expired = 0;
  ASSERT_TRUE(store_->ExpireLeases(&expired).ok());  // the background thread's chore
  EXPECT_EQ(cancelled(), 10);
  EXPECT_EQ(Get(deep).state, JobState::kCancelled);
  EXPECT_EQ(ErrorOf(waiting[7]), "cancelled: it waits for job " + FormatJobId(a) + ", which was cancelled");
  // With the background thread, the rest go at once.
  o.background_thread = true;
  store_.reset();
  ASSERT_TRUE(Store::Open(o, "/db", &store_).ok());
  const uint64_t b = Add({}, 1, 1);
  for (int i = 0; i < 10; ++i) Add({b});
  ASSERT_TRUE(store_->Cancel(b, "").ok());
  for (int i = 0; i < 500 && Waiting() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(Waiting(), 0u);
}

TEST_F(StoreWaitsTest, ACheckpointStaysVersion1WhileNoJobWaits) {
  Add();
  ASSERT_TRUE(store_->Checkpoint().ok());
  auto magic = [&] {
    std::vector<std::string> names;
    EXPECT_TRUE(env_.GetChildren("/db", &names).ok());
    std::string data;
    for (const std::string& n : names) {
      if (n.rfind("checkpoint-", 0) == 0) EXPECT_TRUE(env_.ReadFileToString("/db/" + n, &data).ok());
    }
    return data.substr(0, 8);
  };
  EXPECT_EQ(magic(), "CMQCKP01") << "an older build still reads it";
  const uint64_t a = Add();
  Add({a});
  ASSERT_TRUE(store_->Checkpoint().ok());
  EXPECT_EQ(magic(), "CMQCKP02");
  Open();
  EXPECT_EQ(Waiting(), 1u);
}

TEST(JobRecordsTest, AfterRoundTripsAndOnlyJobsThatWaitUseVersion3) {
  records::JobView v;
  v.id = 7;
  v.prompt_id = "p";
  std::string plain, waits;
  records::EncodeJob(v, &plain);
  EXPECT_EQ(static_cast<uint8_t>(plain[0]), records::kJobVersion);
  v.after = {3, 5};
  records::EncodeJob(v, &waits);
  EXPECT_EQ(static_cast<uint8_t>(waits[0]), records::kJobVersionAfter);
  records::JobView back;
  ASSERT_TRUE(records::DecodeJob(waits, &back).ok());
  EXPECT_EQ(back.after, (std::vector<uint64_t>{3, 5}));
  ASSERT_TRUE(records::DecodeJob(plain, &back).ok());
  EXPECT_TRUE(back.after.empty());
  EXPECT_TRUE(records::DecodeJob(waits.substr(0, waits.size() - 1), &back).IsCorruption());
  std::string zero = plain;
  zero[0] = static_cast<char>(records::kJobVersionAfter);
  zero += std::string(4, '\0');  // n = 0 is not a version-3 record
  EXPECT_TRUE(records::DecodeJob(zero, &back).IsCorruption());
}

}  // namespace
}  // namespace comfymq

namespace comfymq {
namespace {

TEST_F(StoreWaitsTest, QueuePositionCountsReadyJobsAheadByPriorityThenAge) {
  const uint64_t a = Add({}, 1);
  const uint64_t b = Add({}, 5);
  const uint64_t c = Add({a}, 9);  // waits: no place
  const uint64_t d = Add({}, 1);
  uint64_t pos = 0;
  ASSERT_TRUE(store_->QueuePosition(b, &pos).ok());
  EXPECT_EQ(pos, 0u);
  ASSERT_TRUE(store_->QueuePosition(a, &pos).ok());
  EXPECT_EQ(pos, 1u);
  ASSERT_TRUE(store_->QueuePosition(d, &pos).ok());
  EXPECT_EQ(pos, 2u);
  EXPECT_TRUE(store_->QueuePosition(c, &pos).IsNotFound());
  Run(b);
  Run(a);
  ASSERT_TRUE(store_->QueuePosition(c, &pos).ok());  // ready now, and first by priority
  EXPECT_EQ(pos, 0u);
  EXPECT_TRUE(store_->QueuePosition(a, &pos).IsNotFound());
}

TEST(JobRecordsTest, LabelsUseVersion4WithTaggedExtensionsAndUnknownTagsAreSkipped) {
  records::JobView v;
  v.id = 9;
  v.after = {4};
  v.labels = R"({"client": "acme"})";
  std::string payload;
  records::EncodeJob(v, &payload);
  EXPECT_EQ(static_cast<uint8_t>(payload[0]), records::kJobVersionExt);
  records::JobView back;
  ASSERT_TRUE(records::DecodeJob(payload, &back).ok());
  EXPECT_EQ(back.after, (std::vector<uint64_t>{4}));
  EXPECT_EQ(back.labels, v.labels);
  // a later build's extension (tag 99) is skipped; a cut one is corruption
  std::string later = payload;
  later += static_cast<char>(99);
  later += std::string(
      "\x03\x00\x00\x00"
      "abc",
      7);
  ASSERT_TRUE(records::DecodeJob(later, &back).ok());
  EXPECT_EQ(back.labels, v.labels);
  EXPECT_TRUE(records::DecodeJob(later.substr(0, later.size() - 1), &back).IsCorruption());
}

TEST_F(StoreWaitsTest, LabelsAreKeptWithTheJobAndCheckedOnEntry) {
  NewJob j;
  j.prompt = PromptFor(1);
  j.labels = R"({"client": "acme", "run": "7"})";
  EnqueueResult r;
  ASSERT_TRUE(store_->Enqueue(j, &r).ok());
  Open();
  EXPECT_EQ(Get(r.id).labels, j.labels);
  j.prompt_id = "other";
  for (const std::string& bad : std::vector<std::string>{"[1]", "{", std::string(kMaxLabelsBytes + 1, ' ')}) {
    j.labels = bad;
    EXPECT_TRUE(store_->Enqueue(j, &r).IsInvalidArgument()) << bad.substr(0, 10);
  }
}

}  // namespace
}  // namespace comfymq
