// The store's behaviour: enqueue and idempotency, dispatch order, leases and fencing, every state
// transition (legal and illegal), queries and pagination, pause, purge, events, reopening, checkpoints,
// compaction and the directory lock.
#include <gtest/gtest.h>

#include <cstdio>

#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "comfymq/store.h"
#include "store/store_batch.h"
#include "test_util.h"
#include "testing/mem_env.h"

namespace comfymq {
namespace {

using ::comfymq::testing::OutputsFor;
using ::comfymq::testing::PromptFor;
using ::comfymq::testing::SeqOfPrompt;
using ::comfymq::testing::SmallOptions;
using json = nlohmann::json;

constexpr int64_t kT0 = 1'750'000'000'000'000;  // a fixed "now" in microseconds

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    env_.SetNowMicros(kT0);
    Open();
  }

  void Open() {
    store_.reset();
    Status s = Store::Open(SmallOptions(&env_), "/db", &store_, &report_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  uint64_t Add(uint64_t seq, int priority = 1, const std::string& batch = "", int max_attempts = 3) {
    NewJob j;
    j.prompt = PromptFor(seq);
    j.priority = priority;
    j.batch_id = batch;
    j.max_attempts = max_attempts;
    EnqueueResult r;
    Status s = store_->Enqueue(j, &r);
    EXPECT_TRUE(s.ok()) << s.ToString();
    EXPECT_FALSE(r.existed);
    return r.id;
  }

  std::unique_ptr<Lease> Take(const std::string& worker = "w1", int64_t lease_ms = 10000) {
    TakeOptions o;
    o.worker_id = worker;
    o.lease_ms = lease_ms;
    std::unique_ptr<Lease> l;
    Status s = store_->Take(o, &l);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return l;
  }

  Job GetJob(uint64_t id, bool with_prompt = false) {
    Job j;
    Status s = store_->Get(id, with_prompt, &j);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return j;
  }

  MemEnv env_;
  std::unique_ptr<Store> store_;
  RecoveryReport report_;
};

TEST_F(StoreTest, EnqueueAndGetRoundTrip) {
  NewJob j;
  j.prompt = PromptFor(1);
  j.workflow = "{\"nodes\": [], \"links\": []}";
  j.priority = 5;
  j.prompt_id = "frontend-1234";
  j.create_time_ms = 1714012345678;
  j.batch_id = "b1";
  j.max_attempts = 2;
  j.timeout_ms = 60000;
  j.owner = "alice";
  EnqueueResult r;
  ASSERT_TRUE(store_->Enqueue(j, &r).ok());
  EXPECT_FALSE(r.existed);
  EXPECT_EQ(JobIdMillis(r.id), kT0 / 1000);

  Job got = GetJob(r.id, true);
  EXPECT_EQ(got.state, JobState::kPending);
  EXPECT_EQ(got.prompt, j.prompt);
  EXPECT_EQ(got.workflow, j.workflow);
  EXPECT_EQ(got.priority, 5);
  EXPECT_EQ(got.prompt_id, "frontend-1234");
  EXPECT_EQ(got.create_time_ms, 1714012345678);
  EXPECT_EQ(got.batch_id, "b1");
  EXPECT_EQ(got.max_attempts, 2);
  EXPECT_EQ(got.timeout_ms, 60000);
  EXPECT_EQ(got.owner, "alice");
  EXPECT_EQ(got.attempts, 0);
  EXPECT_EQ(got.enqueued_ms, kT0 / 1000);

  Job without = GetJob(r.id, false);
  EXPECT_TRUE(without.prompt.empty());

  Job by_pid;
  ASSERT_TRUE(store_->GetByPromptId("frontend-1234", true, &by_pid).ok());
  EXPECT_EQ(by_pid.id, r.id);
  EXPECT_TRUE(store_->GetByPromptId("nope", false, &by_pid).IsNotFound());
  EXPECT_TRUE(store_->Get(12345, false, &by_pid).IsNotFound());
}

TEST_F(StoreTest, MissingMetadataIsFilledIn) {
  NewJob j;
  j.prompt = PromptFor(1);
  EnqueueResult r;
  ASSERT_TRUE(store_->Enqueue(j, &r).ok());
  Job got = GetJob(r.id);
  EXPECT_EQ(got.prompt_id.size(), 36u);  // a uuid4
  EXPECT_EQ(got.prompt_id[14], '4');
  EXPECT_EQ(got.create_time_ms, kT0 / 1000);
}

TEST_F(StoreTest, IdsAreSortableAndUnique) {
  std::vector<uint64_t> ids;
  for (int i = 0; i < 100; ++i) ids.push_back(Add(i));  // same millisecond: the sequence part orders them
  for (size_t i = 1; i < ids.size(); ++i) {
    EXPECT_LT(ids[i - 1], ids[i]);
    EXPECT_LT(FormatJobId(ids[i - 1]), FormatJobId(ids[i]));
  }
  uint64_t parsed = 0;
  ASSERT_TRUE(ParseJobId(FormatJobId(ids[5]), &parsed));
  EXPECT_EQ(parsed, ids[5]);
  EXPECT_FALSE(ParseJobId("xyz", &parsed));
  EXPECT_FALSE(ParseJobId("ABCDEF0123456789", &parsed));
  for (uint64_t v : {uint64_t{0}, uint64_t{1}, uint64_t{0xABCDEF}, ~uint64_t{0}, ids[7]}) {  // printf's "%016llx"
    char want[17];
    std::snprintf(want, sizeof(want), "%016llx", static_cast<unsigned long long>(v));
    EXPECT_EQ(FormatJobId(v), want);
  }
  // The clock going backwards never produces a smaller id.
  env_.SetNowMicros(kT0 - 60'000'000);
  EXPECT_GT(Add(1000), ids.back());
}

TEST_F(StoreTest, SamePromptIdReturnsTheExistingJob) {
  NewJob j;
  j.prompt = PromptFor(1);
  j.prompt_id = "dup";
  EnqueueResult a, b;
  ASSERT_TRUE(store_->Enqueue(j, &a).ok());
  j.prompt = PromptFor(2);  // different content, same key: still the first job
  ASSERT_TRUE(store_->Enqueue(j, &b).ok());
  EXPECT_TRUE(b.existed);
  EXPECT_EQ(a.id, b.id);
  StoreStats st;
  ASSERT_TRUE(store_->Stats(&st).ok());
  EXPECT_EQ(st.total, 1u);
  // Within one batch call too.
  NewJob k;
  k.prompt = PromptFor(3);
  k.prompt_id = "twice";
  std::vector<EnqueueResult> rs;
  ASSERT_TRUE(store_->EnqueueMany({k, k}, &rs).ok());
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_FALSE(rs[0].existed);
  EXPECT_TRUE(rs[1].existed);
  EXPECT_EQ(rs[0].id, rs[1].id);
  // And after a reopen.
  Open();
  ASSERT_TRUE(store_->Enqueue(j, &b).ok());
  EXPECT_TRUE(b.existed);
  EXPECT_EQ(b.id, a.id);
}

TEST_F(StoreTest, BadInputIsRejectedWithAClearMessageAndChangesNothing) {
  struct Case {
    std::string prompt;
    std::string expect;
  };
  std::vector<Case> cases = {
      {"", "prompt is empty"},
      {"not json", "prompt is not valid JSON"},
      {"[1,2]", "got an array"},
      {"\"str\"", "got a string"},
      {"{}", "prompt has no nodes"},
      {"{\"3\": 5}", "node '3' must be an object"},
      {"{\"3\": {\"inputs\": {}}}", "node '3' has no class_type"},
      {"{\"3\": {\"class_type\": \"KSampler\"}}", "node '3' has no inputs"},
      {"{\"3\": {\"class_type\": 7, \"inputs\": {}}}", "class_type must be a string"},
      {"{\"3\": {\"class_type\": \"\", \"inputs\": {}}}", "class_type must not be empty"},
      {"{\"3\": {\"class_type\": \"K\", \"inputs\": []}}", "inputs must be an object"},
      {"{\"3\": {\"class_type\": \"K\", \"inputs\": {}}} trailing", "not valid JSON"},
      {"{\"3\": {\"class_type\": \"K\", \"inputs\": {\"x\": 1850e479084}}}", "number overflow"},  // found by the fuzzer
  };
  for (const auto& c : cases) {
    NewJob j;
    j.prompt = c.prompt;
    EnqueueResult r;
    Status s = store_->Enqueue(j, &r);
    EXPECT_TRUE(s.IsInvalidArgument()) << c.prompt << " -> " << s.ToString();
    EXPECT_NE(s.message().find(c.expect), std::string::npos) << c.prompt << " -> " << s.message();
  }
  NewJob j;
  j.prompt = PromptFor(1);
  EnqueueResult r;
  j.max_attempts = 0;
  EXPECT_TRUE(store_->Enqueue(j, &r).IsInvalidArgument());
  j.max_attempts = 3;
  j.timeout_ms = -1;
  EXPECT_TRUE(store_->Enqueue(j, &r).IsInvalidArgument());
  j.timeout_ms = 0;
  j.workflow = "[1]";
  EXPECT_NE(store_->Enqueue(j, &r).message().find("workflow must be a JSON object"), std::string::npos);
  j.workflow = "";
  j.prompt_id = std::string(300, 'p');
  EXPECT_TRUE(store_->Enqueue(j, &r).IsInvalidArgument());
  j.prompt_id = "bad\nid";
  EXPECT_TRUE(store_->Enqueue(j, &r).IsInvalidArgument());
  // One bad job in a batch: none is added, and the message says which.
  NewJob good;
  good.prompt = PromptFor(2);
  NewJob bad;
  bad.prompt = "{}";
  std::vector<EnqueueResult> rs;
  Status s = store_->EnqueueMany({good, bad}, &rs);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("job 1"), std::string::npos) << s.message();
  StoreStats st;
  ASSERT_TRUE(store_->Stats(&st).ok());
  EXPECT_EQ(st.total, 0u);
}

TEST_F(StoreTest, MetadataAllowsOnlyPromptIdAndCreateTime) {
  NewJob j;
  EXPECT_TRUE(ApplyMetadataJson("{\"prompt_id\": \"x\", \"create_time\": 1714012345678}", &j).ok());
  EXPECT_EQ(j.prompt_id, "x");
  EXPECT_EQ(j.create_time_ms, 1714012345678);
  Status s = ApplyMetadataJson("{\"prompt_id\": \"x\", \"user\": 1}", &j);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("'user'"), std::string::npos) << s.message();
  EXPECT_TRUE(ApplyMetadataJson("{\"prompt_id\": 5}", &j).IsInvalidArgument());
  EXPECT_TRUE(ApplyMetadataJson("{\"create_time\": \"soon\"}", &j).IsInvalidArgument());
  EXPECT_TRUE(ApplyMetadataJson("{\"create_time\": -1}", &j).IsInvalidArgument());
  EXPECT_TRUE(ApplyMetadataJson("[]", &j).IsInvalidArgument());
  EXPECT_TRUE(ApplyMetadataJson("{", &j).IsInvalidArgument());
  EXPECT_TRUE(ApplyMetadataJson("null", &j).ok());
}

TEST_F(StoreTest, DispatchIsHighestPriorityThenOldest) {
  uint64_t low1 = Add(1, 1), high1 = Add(2, 10), low2 = Add(3, 1), mid = Add(4, 5), high2 = Add(5, 10);
  std::vector<uint64_t> order;
  while (auto l = Take()) order.push_back(l->job_id);
  EXPECT_EQ(order, (std::vector<uint64_t>{high1, high2, mid, low1, low2}));
}

TEST_F(StoreTest, TakeReturnsTheJobWithAFencedLease) {
  NewJob j;
  j.prompt = PromptFor(7);
  j.workflow = "{\"w\": 1}";
  j.timeout_ms = 5000;
  EnqueueResult r;
  ASSERT_TRUE(store_->Enqueue(j, &r).ok());
  auto l = Take("gpu-1", 2000);
  ASSERT_TRUE(l);
  EXPECT_EQ(l->job_id, r.id);
  EXPECT_EQ(l->attempt, 1);
  EXPECT_GT(l->token, 0u);
  EXPECT_EQ(l->expires_ms, kT0 / 1000 + 2000);
  EXPECT_EQ(l->deadline_ms, kT0 / 1000 + 5000);
  EXPECT_EQ(l->job.prompt, j.prompt);
  EXPECT_EQ(l->job.workflow, j.workflow);
  Job got = GetJob(r.id);
  EXPECT_EQ(got.state, JobState::kRunning);
  EXPECT_EQ(got.worker_id, "gpu-1");
  EXPECT_EQ(got.lease_token, l->token);
  EXPECT_EQ(got.attempts, 1);
  EXPECT_FALSE(Take());  // nothing else pending
}

TEST_F(StoreTest, TakeHonoursTheFilter) {
  uint64_t a = Add(1), b = Add(2);
  TakeOptions o;
  o.worker_id = "w";
  o.filter = [&](uint64_t id, const PromptLoader&) { return id == b; };
  std::unique_ptr<Lease> l;
  ASSERT_TRUE(store_->Take(o, &l).ok());
  ASSERT_TRUE(l);
  EXPECT_EQ(l->job_id, b);
  o.filter = [&](uint64_t, const PromptLoader&) { return false; };
  ASSERT_TRUE(store_->Take(o, &l).ok());
  EXPECT_FALSE(l);
  EXPECT_EQ(GetJob(a).state, JobState::kPending);
  o.filter = nullptr;
  o.worker_id = "";
  EXPECT_TRUE(store_->Take(o, &l).IsInvalidArgument());
}

TEST_F(StoreTest, CompleteRecordsResultsAndRefusesStaleTokens) {
  uint64_t id = Add(1);
  auto l = Take();
  ASSERT_TRUE(l);
  ASSERT_TRUE(store_->Progress(id, l->token, "{\"node\": \"3\", \"value\": 4, \"max\": 20}").ok());
  EXPECT_EQ(GetJob(id).progress, "{\"node\": \"3\", \"value\": 4, \"max\": 20}");
  env_.AdvanceMicros(1'500'000);
  std::vector<Artifact> arts = {{"job/out_1.png", 1234, std::string(64, 'a'), "image/png"}};
  EXPECT_TRUE(store_->Complete(id, l->token + 1, OutputsFor(1), arts).IsLeaseLost());
  ASSERT_TRUE(store_->Complete(id, l->token, OutputsFor(1), arts).ok());
  Job got = GetJob(id);
  EXPECT_EQ(got.state, JobState::kSucceeded);
  EXPECT_EQ(got.outputs, OutputsFor(1));
  auto a = json::parse(got.artifacts);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0]["path"], "job/out_1.png");
  EXPECT_EQ(a[0]["size"], 1234);
  EXPECT_EQ(a[0]["mime"], "image/png");
  EXPECT_EQ(got.started_ms, kT0 / 1000);
  EXPECT_EQ(got.finished_ms, kT0 / 1000 + 1500);
  EXPECT_EQ(got.worker_id, "w1");
  EXPECT_TRUE(got.progress.empty());
  auto h = json::parse(got.history);
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0]["outcome"], "succeeded");
  // A second completion with the same token is a resend: recognised, not recorded again (one result).
  EXPECT_TRUE(store_->Complete(id, l->token, "{}", {}).IsAlreadyExists());
  EXPECT_TRUE(store_->Fail(id, l->token, JobError{"x", "y"}, false).IsLeaseLost());
  EXPECT_TRUE(store_->Heartbeat(id, l->token, 1000, nullptr).IsLeaseLost());
  EXPECT_TRUE(store_->Progress(id, l->token, "{}").IsLeaseLost());
  EXPECT_EQ(GetJob(id).outputs, OutputsFor(1));
}

TEST_F(StoreTest, FilterCanReadThePromptItJudges) {
  Add(1);
  uint64_t wanted = Add(2);
  Add(3);
  TakeOptions o;
  o.worker_id = "w";
  int loads = 0;
  o.filter = [&](uint64_t, const PromptLoader& load) {
    std::string prompt;
    EXPECT_TRUE(load(&prompt).ok());
    loads++;
    return SeqOfPrompt(prompt) == 2;
  };
  std::unique_ptr<Lease> l;
  ASSERT_TRUE(store_->Take(o, &l).ok());
  ASSERT_TRUE(l);
  EXPECT_EQ(l->job_id, wanted);
  EXPECT_EQ(loads, 2);  // stopped at the first match
}

TEST_F(StoreTest, BatchCommitsManyChangesWithOneSync) {
  store_.reset();
  StoreOptions opts = SmallOptions(&env_);
  opts.segment_bytes = 4 << 20;
  ASSERT_TRUE(Store::Open(opts, "/db2", &store_).ok());
  std::vector<uint64_t> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(Add(i));
  // Lease four at once, for two workers.
  StoreBatch take;
  std::unique_ptr<Lease> leases[4];
  Status st[4];
  for (int i = 0; i < 4; ++i) {
    TakeOptions o;
    o.worker_id = i % 2 ? "gpu-1" : "gpu-2";
    take.Take(o, &leases[i], &st[i]);
  }
  uint64_t before = env_.sync_count();
  ASSERT_TRUE(CommitBatch(store_.get(), &take).ok());
  EXPECT_EQ(env_.sync_count() - before, 1u);
  std::set<uint64_t> taken;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(st[i].ok()) << st[i].ToString();
    ASSERT_TRUE(leases[i]);
    taken.insert(leases[i]->job_id);
  }
  EXPECT_EQ(taken.size(), 4u);  // no job leased twice
  // Results, a failure, a release and one stale item: each gets its own status, all in one sync.
  StoreBatch done;
  Status a, b, c, d, stale;
  done.Complete(leases[0]->job_id, leases[0]->token, OutputsFor(1), {}, &a);
  done.Fail(leases[1]->job_id, leases[1]->token, JobError{"execution_error", "x"}, false, &b);
  done.ReleaseLease(leases[2]->job_id, leases[2]->token, "worker gpu-1 went silent", true, &c);
  done.ReleaseLease(leases[3]->job_id, leases[3]->token, "could not send", false, &d);
  done.Complete(leases[0]->job_id, leases[0]->token + 99, "{}", {}, &stale);
  before = env_.sync_count();
  ASSERT_TRUE(CommitBatch(store_.get(), &done).ok());
  EXPECT_EQ(env_.sync_count() - before, 1u);
  EXPECT_TRUE(a.ok());
  EXPECT_TRUE(b.ok());
  EXPECT_TRUE(c.ok());
  EXPECT_TRUE(d.ok());
  EXPECT_TRUE(stale.IsLeaseLost());
  EXPECT_EQ(GetJob(leases[0]->job_id).state, JobState::kSucceeded);
  EXPECT_EQ(GetJob(leases[1]->job_id).state, JobState::kFailed);
  Job released = GetJob(leases[2]->job_id);
  EXPECT_EQ(released.state, JobState::kPending);
  EXPECT_EQ(released.attempts, 1);  // counted
  EXPECT_EQ(json::parse(released.history)[0]["outcome"], "lease_lost");
  Job undelivered = GetJob(leases[3]->job_id);
  EXPECT_EQ(undelivered.state, JobState::kPending);
  EXPECT_EQ(undelivered.attempts, 0);  // it never reached a worker
  EXPECT_TRUE(undelivered.history.empty());
}

TEST_F(StoreTest, ResultSentAgainIsRecognisedAndRecordedOnce) {
  uint64_t id = Add(1);
  auto l = Take();
  ASSERT_TRUE(store_->Complete(id, l->token, OutputsFor(1), {}).ok());
  Status again = store_->Complete(id, l->token, "{\"other\": {}}", {});
  EXPECT_TRUE(again.IsAlreadyExists()) << again.ToString();
  EXPECT_EQ(GetJob(id).outputs, OutputsFor(1));
  EXPECT_TRUE(store_->Complete(id, l->token + 1, "{}", {}).IsLeaseLost());
  // The same for a failure, until the job is leased again.
  uint64_t f = Add(2);
  auto lf = Take();
  ASSERT_TRUE(store_->Fail(f, lf->token, JobError{"execution_error", "x"}, true).ok());
  EXPECT_TRUE(store_->Fail(f, lf->token, JobError{"execution_error", "x"}, true).IsAlreadyExists());
  auto lf2 = Take();
  ASSERT_TRUE(lf2);
  EXPECT_TRUE(store_->Fail(f, lf->token, JobError{"execution_error", "x"}, true).IsLeaseLost());
  // And after a reopen.
  Open();
  EXPECT_TRUE(store_->Complete(id, l->token, "{}", {}).IsAlreadyExists());
}

TEST_F(StoreTest, CompleteValidatesItsInput) {
  uint64_t id = Add(1);
  auto l = Take();
  EXPECT_TRUE(store_->Complete(id, l->token, "[1]", {}).IsInvalidArgument());
  EXPECT_TRUE(store_->Complete(id, l->token, "{", {}).IsInvalidArgument());
  EXPECT_TRUE(store_->Complete(id, l->token, "{}", {{"/etc/passwd", 1, std::string(64, 'a'), ""}}).IsInvalidArgument());
  EXPECT_TRUE(store_->Complete(id, l->token, "{}", {{"ok.png", 1, "short", ""}}).IsInvalidArgument());
  EXPECT_TRUE(store_->Progress(id, l->token, "{nope").IsInvalidArgument());
  EXPECT_EQ(GetJob(id).state, JobState::kRunning);
}

TEST_F(StoreTest, RetryableFailuresRetryUntilMaxAttemptsThenDeadLetter) {
  uint64_t id = Add(1, 1, "", 2);
  auto l1 = Take("w1");
  ASSERT_TRUE(store_->Fail(id, l1->token, JobError{"execution_error", "boom", "3", "tb"}, true).ok());
  Job got = GetJob(id);
  EXPECT_EQ(got.state, JobState::kPending);
  EXPECT_EQ(json::parse(got.error)["message"], "boom");
  auto l2 = Take("w2");
  ASSERT_TRUE(l2);
  EXPECT_EQ(l2->attempt, 2);
  EXPECT_NE(l2->token, l1->token);
  ASSERT_TRUE(store_->Fail(id, l2->token, JobError{"execution_error", "boom again", "3", "tb"}, true).ok());
  got = GetJob(id);
  EXPECT_EQ(got.state, JobState::kFailed);
  EXPECT_EQ(got.attempts, 2);
  auto e = json::parse(got.error);
  EXPECT_EQ(e["type"], "execution_error");
  EXPECT_EQ(e["node_id"], "3");
  EXPECT_EQ(e["traceback"], "tb");
  auto h = json::parse(got.history);
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[0]["worker"], "w1");
  EXPECT_EQ(h[1]["worker"], "w2");
  EXPECT_EQ(h[1]["outcome"], "failed");
}

TEST_F(StoreTest, NonRetryableFailureFailsAtOnceWithDetails) {
  uint64_t id = Add(1);
  auto l = Take();
  JobError err{"validation_error", "Prompt outputs failed validation", "", "",
               "{\"4\": {\"errors\": [{\"type\": \"value_not_in_list\"}]}}"};
  ASSERT_TRUE(store_->Fail(id, l->token, err, false).ok());
  Job got = GetJob(id);
  EXPECT_EQ(got.state, JobState::kFailed);
  EXPECT_EQ(json::parse(got.error)["details"]["4"]["errors"][0]["type"], "value_not_in_list");
  err.details = "{not json";
  uint64_t id2 = Add(2);
  auto l2 = Take();
  EXPECT_TRUE(store_->Fail(id2, l2->token, err, false).IsInvalidArgument());
  EXPECT_EQ(GetJob(id2).state, JobState::kRunning);
}

TEST_F(StoreTest, ExpiredLeasesReturnJobsToPendingThenFail) {
  uint64_t id = Add(1, 1, "", 2);
  auto l1 = Take("w1", 1000);
  int n = 0;
  ASSERT_TRUE(store_->ExpireLeases(&n).ok());
  EXPECT_EQ(n, 0);
  env_.AdvanceMicros(999'000);
  int64_t exp = 0;
  ASSERT_TRUE(store_->Heartbeat(id, l1->token, 1000, &exp).ok());  // extends to now + 1 s
  EXPECT_EQ(exp, kT0 / 1000 + 999 + 1000);
  env_.AdvanceMicros(999'000);
  ASSERT_TRUE(store_->ExpireLeases(&n).ok());
  EXPECT_EQ(n, 0);
  env_.AdvanceMicros(2'000);
  ASSERT_TRUE(store_->ExpireLeases(&n).ok());
  EXPECT_EQ(n, 1);
  Job got = GetJob(id);
  EXPECT_EQ(got.state, JobState::kPending);
  EXPECT_EQ(json::parse(got.error)["type"], "lease_lost");
  // The late result from the lost lease is refused.
  EXPECT_TRUE(store_->Complete(id, l1->token, OutputsFor(1), {}).IsLeaseLost());
  auto l2 = Take("w2", 1000);
  ASSERT_TRUE(l2);
  env_.AdvanceMicros(1'001'000);
  ASSERT_TRUE(store_->ExpireLeases(&n).ok());
  got = GetJob(id);
  EXPECT_EQ(got.state, JobState::kFailed);  // dead letter after max attempts
  EXPECT_NE(json::parse(got.error)["message"].get<std::string>().find("gave up after 2 attempts"), std::string::npos);
  EXPECT_EQ(json::parse(got.history).size(), 2u);
}

TEST_F(StoreTest, TimeoutEndsARunEvenWithHeartbeats) {
  NewJob j;
  j.prompt = PromptFor(1);
  j.timeout_ms = 3000;
  j.max_attempts = 1;
  EnqueueResult r;
  ASSERT_TRUE(store_->Enqueue(j, &r).ok());
  auto l = Take("w", 2000);
  for (int i = 0; i < 3; ++i) {
    env_.AdvanceMicros(1'000'000);
    ASSERT_TRUE(store_->Heartbeat(r.id, l->token, 2000, nullptr).ok());
  }
  env_.AdvanceMicros(10'000);
  int n = 0;
  ASSERT_TRUE(store_->ExpireLeases(&n).ok());
  EXPECT_EQ(n, 1);
  Job got = GetJob(r.id);
  EXPECT_EQ(got.state, JobState::kFailed);
  EXPECT_EQ(json::parse(got.error)["type"], "timeout");
}

TEST_F(StoreTest, CancelPendingAndRunning) {
  uint64_t pending = Add(1), running = Add(2);
  auto l = Take();  // takes `pending`? no: both priority 1, oldest first
  ASSERT_EQ(l->job_id, pending);
  std::swap(pending, running);
  ASSERT_TRUE(store_->Cancel(pending, "user asked").ok());
  ASSERT_TRUE(store_->Cancel(running, "").ok());
  Job p = GetJob(pending), r = GetJob(running);
  EXPECT_EQ(p.state, JobState::kCancelled);
  EXPECT_EQ(json::parse(p.error)["message"], "user asked");
  EXPECT_EQ(r.state, JobState::kCancelled);
  EXPECT_EQ(r.worker_id, "w1");
  EXPECT_EQ(json::parse(r.history)[0]["outcome"], "cancelled");
  // The worker of the cancelled run can no longer report.
  EXPECT_TRUE(store_->Complete(running, l->token, "{}", {}).IsLeaseLost());
  // Illegal: cancelling a finished job.
  Status s = store_->Cancel(running, "");
  EXPECT_TRUE(s.IsConflict());
  EXPECT_NE(s.message().find("only pending or running"), std::string::npos);
  EXPECT_TRUE(store_->Cancel(999, "").IsNotFound());
}

TEST_F(StoreTest, CancelBatchCancelsWhatIsLeftOfItInOneCommit) {
  std::vector<uint64_t> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(Add(10 + i, 1, "sweep.1"));
  uint64_t other = Add(20, 1, "other");
  uint64_t loose = Add(21);
  auto first = Take();  // ids[0] runs
  ASSERT_EQ(first->job_id, ids[0]);
  auto second = Take();  // ids[1] runs, then succeeds
  ASSERT_TRUE(store_->Complete(ids[1], second->token, "{}", {}).ok());
  std::vector<std::string> heard;
  std::mutex mu;
  store_->SetListener([&](const std::vector<StoreEvent>& events) {
    std::lock_guard<std::mutex> l(mu);
    for (auto& e : events) heard.push_back(e.reason + ":" + JobStateName(e.to) + ":" + e.worker_id);
  });
  const uint64_t syncs = env_.sync_count();
  std::vector<uint64_t> cancelled;
  ASSERT_TRUE(store_->CancelBatch("sweep.1", "batch sweep.1 cancelled", &cancelled).ok());
  EXPECT_EQ(env_.sync_count() - syncs, 1u) << "one commit for the whole batch";
  EXPECT_EQ(cancelled, (std::vector<uint64_t>{ids[0], ids[2], ids[3], ids[4], ids[5]}));
  EXPECT_EQ(GetJob(ids[0]).state, JobState::kCancelled);
  EXPECT_EQ(json::parse(GetJob(ids[0]).history)[0]["outcome"], "cancelled");
  EXPECT_EQ(GetJob(ids[1]).state, JobState::kSucceeded);  // finished before: untouched
  for (size_t i = 2; i < ids.size(); ++i) {
    Job j = GetJob(ids[i]);
    EXPECT_EQ(j.state, JobState::kCancelled);
    EXPECT_EQ(json::parse(j.error)["message"], "batch sweep.1 cancelled");
  }
  EXPECT_EQ(GetJob(other).state, JobState::kPending);
  EXPECT_EQ(GetJob(loose).state, JobState::kPending);
  EXPECT_TRUE(store_->Complete(ids[0], first->token, "{}", {}).IsLeaseLost());
  // Nothing left: no error, nothing cancelled; unknown batches likewise; bad input is refused.
  ASSERT_TRUE(store_->CancelBatch("sweep.1", "", &cancelled).ok());
  EXPECT_TRUE(cancelled.empty());
  ASSERT_TRUE(store_->CancelBatch("no-such-batch", "", &cancelled).ok());
  EXPECT_TRUE(cancelled.empty());
  EXPECT_TRUE(store_->CancelBatch("", "", &cancelled).IsInvalidArgument());
  EXPECT_TRUE(store_->CancelBatch("x\n", "", &cancelled).IsInvalidArgument());
  store_.reset();  // close drains the listener queue
  ASSERT_EQ(heard.size(), 5u);
  EXPECT_EQ(heard[0], "batch sweep.1 cancelled:cancelled:w1");  // the running one: its worker is named
  EXPECT_EQ(heard[1], "batch sweep.1 cancelled:cancelled:");
  Open();
  EXPECT_EQ(GetJob(ids[3]).state, JobState::kCancelled);
}

TEST_F(StoreTest, RetryAndDeleteFollowTheStateMachine) {
  uint64_t id = Add(1, 1, "", 1);
  EXPECT_TRUE(store_->Retry(id).IsConflict());   // pending
  EXPECT_TRUE(store_->Delete(id).IsConflict());  // pending
  auto l = Take();
  EXPECT_TRUE(store_->Retry(id).IsConflict());   // running
  EXPECT_TRUE(store_->Delete(id).IsConflict());  // running
  ASSERT_TRUE(store_->Fail(id, l->token, JobError{"execution_error", "x"}, true).ok());
  EXPECT_EQ(GetJob(id).state, JobState::kFailed);  // max_attempts 1
  ASSERT_TRUE(store_->Retry(id).ok());
  Job got = GetJob(id);
  EXPECT_EQ(got.state, JobState::kPending);
  EXPECT_EQ(got.attempts, 0);
  EXPECT_TRUE(got.error.empty());
  EXPECT_EQ(json::parse(got.history).size(), 1u);  // the failed run stays on record
  auto l2 = Take();
  ASSERT_TRUE(l2);
  ASSERT_TRUE(store_->Complete(id, l2->token, "{}", {}).ok());
  EXPECT_TRUE(store_->Retry(id).IsConflict());  // succeeded
  ASSERT_TRUE(store_->Delete(id).ok());
  Job j;
  EXPECT_TRUE(store_->Get(id, false, &j).IsNotFound());
  EXPECT_TRUE(store_->Delete(id).IsNotFound());
  uint64_t c = Add(2);
  ASSERT_TRUE(store_->Cancel(c, "").ok());
  ASSERT_TRUE(store_->Retry(c).ok());
  EXPECT_EQ(GetJob(c).state, JobState::kPending);
}

TEST_F(StoreTest, PauseStopsDispatchAndSurvivesReopen) {
  Add(1);
  ASSERT_TRUE(store_->SetPaused(true).ok());
  EXPECT_TRUE(store_->paused());
  EXPECT_FALSE(Take());
  TakeOptions o;
  o.worker_id = "w";
  o.ignore_pause = true;
  Open();
  EXPECT_TRUE(store_->paused());
  EXPECT_FALSE(Take());
  ASSERT_TRUE(store_->SetPaused(false).ok());
  EXPECT_TRUE(Take());
}

TEST_F(StoreTest, ListFiltersAndPaginatesStablyUnderInserts) {
  std::vector<uint64_t> ids;
  for (int i = 0; i < 25; ++i) {
    ids.push_back(Add(i, 1, i % 2 ? "odd" : "even"));
    env_.AdvanceMicros(1000);
  }
  for (int i = 0; i < 5; ++i) {
    auto l = Take();
    ASSERT_TRUE(store_->Complete(l->job_id, l->token, "{}", {}).ok());
  }
  // Page through newest first, inserting new jobs between pages: no job is seen twice or skipped.
  ListQuery q;
  q.limit = 7;
  std::vector<uint64_t> seen;
  for (int page = 0; page < 10; ++page) {
    ListPage p;
    ASSERT_TRUE(store_->List(q, &p).ok());
    for (auto& j : p.jobs) seen.push_back(j.id);
    Add(1000 + page);  // newer than everything: must not appear in later pages
    if (p.next_cursor == 0) break;
    q.cursor = p.next_cursor;
  }
  std::vector<uint64_t> expect(ids.rbegin(), ids.rend());
  EXPECT_EQ(seen, expect);

  ListQuery by_state;
  by_state.state_mask = 1u << static_cast<int>(JobState::kSucceeded);
  ListPage p;
  ASSERT_TRUE(store_->List(by_state, &p).ok());
  EXPECT_EQ(p.jobs.size(), 5u);
  for (auto& j : p.jobs) EXPECT_EQ(j.state, JobState::kSucceeded);

  ListQuery by_batch;
  by_batch.batch_id = "odd";
  by_batch.newest_first = false;
  ASSERT_TRUE(store_->List(by_batch, &p).ok());
  ASSERT_EQ(p.jobs.size(), 12u);
  EXPECT_EQ(p.jobs[0].id, ids[1]);
  for (auto& j : p.jobs) EXPECT_EQ(j.batch_id, "odd");
  by_batch.batch_id = "none";
  ASSERT_TRUE(store_->List(by_batch, &p).ok());
  EXPECT_TRUE(p.jobs.empty());

  ListQuery by_time;
  by_time.since_ms = JobIdMillis(ids[10]);
  by_time.until_ms = JobIdMillis(ids[15]);
  by_time.newest_first = false;
  ASSERT_TRUE(store_->List(by_time, &p).ok());
  ASSERT_EQ(p.jobs.size(), 5u);
  EXPECT_EQ(p.jobs.front().id, ids[10]);
  EXPECT_EQ(p.jobs.back().id, ids[14]);

  ListQuery bad;
  bad.limit = 0;
  EXPECT_TRUE(store_->List(bad, &p).IsInvalidArgument());
  bad.limit = 5000;
  EXPECT_TRUE(store_->List(bad, &p).IsInvalidArgument());
}

TEST_F(StoreTest, StatsCountStatesAgeAndThroughput) {
  Add(1);
  Add(2);
  Add(3);
  env_.AdvanceMicros(5'000'000);
  auto l = Take();
  ASSERT_TRUE(store_->Complete(l->job_id, l->token, "{}", {}).ok());
  auto l2 = Take();
  StoreStats st;
  ASSERT_TRUE(store_->Stats(&st).ok());
  EXPECT_EQ(st.counts[static_cast<int>(JobState::kPending)], 1u);
  EXPECT_EQ(st.counts[static_cast<int>(JobState::kRunning)], 1u);
  EXPECT_EQ(st.counts[static_cast<int>(JobState::kSucceeded)], 1u);
  EXPECT_EQ(st.total, 3u);
  EXPECT_EQ(st.oldest_pending_age_ms, 5000);
  EXPECT_EQ(st.finished_last_minute, 1u);
  EXPECT_EQ(st.finished_last_hour, 1u);
  env_.AdvanceMicros(120'000'000);
  ASSERT_TRUE(store_->Stats(&st).ok());
  EXPECT_EQ(st.finished_last_minute, 0u);
  EXPECT_EQ(st.finished_last_hour, 1u);
  EXPECT_GT(st.log_bytes, 0u);
  EXPECT_GT(st.live_bytes, 0u);
}

TEST_F(StoreTest, PurgeRemovesOnlyOldFinishedJobs) {
  uint64_t old_done = Add(1), old_pending = Add(2);
  auto l = Take();
  ASSERT_EQ(l->job_id, old_done);
  ASSERT_TRUE(store_->Complete(old_done, l->token, "{}", {}).ok());
  env_.AdvanceMicros(10ll * 24 * 3600 * 1'000'000);
  uint64_t new_done = Add(3);
  ASSERT_TRUE(store_->Cancel(new_done, "").ok());
  uint64_t removed = 0;
  ASSERT_TRUE(store_->Purge(env_.NowMicros() / 1000 - 7ll * 24 * 3600 * 1000, &removed).ok());
  EXPECT_EQ(removed, 1u);
  Job j;
  EXPECT_TRUE(store_->Get(old_done, false, &j).IsNotFound());
  EXPECT_TRUE(store_->Get(old_pending, false, &j).ok());
  EXPECT_TRUE(store_->Get(new_done, false, &j).ok());
  Open();
  EXPECT_TRUE(store_->Get(old_done, false, &j).IsNotFound());
  EXPECT_TRUE(store_->Get(new_done, false, &j).ok());
}

TEST_F(StoreTest, EverythingSurvivesReopenWithAndWithoutCheckpoint) {
  uint64_t a = Add(1, 3, "b"), b = Add(2), c = Add(3);
  auto l = Take();
  ASSERT_EQ(l->job_id, a);
  ASSERT_TRUE(store_->Complete(a, l->token, OutputsFor(1), {}).ok());
  auto lb = Take("w9", 60000);
  ASSERT_TRUE(store_->Cancel(c, "nope").ok());
  // Reopen without a clean close (no checkpoint): replay only.
  auto* raw = store_.release();
  (void)raw;  // leaked on purpose: a crashed process never closes; its lock must be dropped by hand
  std::unique_ptr<MemEnv> image;
  {
    std::mt19937_64 rng(1);
    image = env_.CrashImage(rng, MemEnv::CrashMode::kTornPrefix);
  }
  std::unique_ptr<Store> s2;
  RecoveryReport rep;
  ASSERT_TRUE(Store::Open(SmallOptions(image.get()), "/db", &s2, &rep).ok());
  EXPECT_EQ(rep.checkpoint_segment, 0u);
  EXPECT_EQ(rep.jobs, 3u);
  Job j;
  ASSERT_TRUE(s2->Get(a, false, &j).ok());
  EXPECT_EQ(j.state, JobState::kSucceeded);
  EXPECT_EQ(j.outputs, OutputsFor(1));
  ASSERT_TRUE(s2->Get(b, false, &j).ok());
  EXPECT_EQ(j.state, JobState::kRunning);
  EXPECT_EQ(j.lease_token, lb->token);
  EXPECT_EQ(j.worker_id, "w9");
  ASSERT_TRUE(s2->Get(c, false, &j).ok());
  EXPECT_EQ(j.state, JobState::kCancelled);
  // A token issued before the restart still fences, and new tokens are larger.
  ASSERT_TRUE(s2->Complete(b, lb->token, "{}", {}).ok());
  // Clean close writes a checkpoint; the next open starts from it.
  ASSERT_TRUE(s2->Close().ok());
  ASSERT_TRUE(Store::Open(SmallOptions(image.get()), "/db", &s2, &rep).ok());
  EXPECT_GT(rep.checkpoint_segment, 0u);
  EXPECT_EQ(rep.records_replayed, 0u);
  ASSERT_TRUE(s2->Get(b, false, &j).ok());
  EXPECT_EQ(j.state, JobState::kSucceeded);
  ASSERT_TRUE(s2->Get(a, true, &j).ok());
  EXPECT_EQ(SeqOfPrompt(j.prompt), 1);
  delete raw;
}

TEST_F(StoreTest, RunningJobsGetAGracePeriodAfterReopen) {
  uint64_t id = Add(1);
  auto l = Take("w", 1000);
  store_.reset();
  StoreOptions o = SmallOptions(&env_);
  o.reopen_lease_grace_ms = 30000;
  ASSERT_TRUE(Store::Open(o, "/db", &store_).ok());
  env_.AdvanceMicros(20'000'000);  // past the original lease, within the grace
  int n = 0;
  ASSERT_TRUE(store_->ExpireLeases(&n).ok());
  EXPECT_EQ(n, 0);
  ASSERT_TRUE(store_->Complete(id, l->token, "{}", {}).ok());  // the worker reports after the restart
}

TEST_F(StoreTest, SecondOpenOfTheSameDirectoryIsBusy) {
  std::unique_ptr<Store> other;
  Status s = Store::Open(SmallOptions(&env_), "/db", &other);
  EXPECT_TRUE(s.IsBusy()) << s.ToString();
  EXPECT_NE(s.message().find("already open elsewhere"), std::string::npos);
  store_.reset();
  EXPECT_TRUE(Store::Open(SmallOptions(&env_), "/db", &other).ok());
}

TEST_F(StoreTest, CheckpointAndCompactionKeepDiskProportionalToLiveData) {
  // Many jobs run to the end and are purged; a few stay. Disk use must shrink to about the live set.
  for (int round = 0; round < 20; ++round) {
    std::vector<NewJob> batch;
    for (int i = 0; i < 50; ++i) {
      NewJob j;
      j.prompt = PromptFor(round * 100 + i, 200);
      batch.push_back(j);
    }
    std::vector<EnqueueResult> rs;
    ASSERT_TRUE(store_->EnqueueMany(batch, &rs).ok());
    while (auto l = Take()) ASSERT_TRUE(store_->Complete(l->job_id, l->token, OutputsFor(1), {}).ok());
  }
  std::vector<uint64_t> keep;
  for (int i = 0; i < 5; ++i) keep.push_back(Add(90000 + i));
  StoreStats before;
  ASSERT_TRUE(store_->Stats(&before).ok());
  uint64_t removed = 0;
  ASSERT_TRUE(store_->Purge(env_.NowMicros() / 1000 + 1, &removed).ok());
  EXPECT_EQ(removed, 1000u);
  ASSERT_TRUE(store_->Compact().ok());
  StoreStats after;
  ASSERT_TRUE(store_->Stats(&after).ok());
  EXPECT_EQ(after.total, 5u);
  EXPECT_LT(after.log_bytes, before.log_bytes / 10) << before.log_bytes << " -> " << after.log_bytes;
  EXPECT_LE(after.log_bytes, after.live_bytes + 4 * (16 << 10));
  // Everything live is still readable, also after a reopen.
  Open();
  EXPECT_EQ(report_.records_replayed, 0u);
  for (size_t i = 0; i < keep.size(); ++i) {
    Job j = GetJob(keep[i], true);
    EXPECT_EQ(SeqOfPrompt(j.prompt), static_cast<int64_t>(90000 + i));
  }
  std::vector<std::string> names;
  ASSERT_TRUE(env_.GetChildren("/db", &names).ok());
  int segments = 0;
  for (auto& n : names) segments += n.rfind("log-", 0) == 0;
  EXPECT_LE(segments, 4);
}

TEST_F(StoreTest, CompactionMovesRecordsOfLongPendingJobs) {
  uint64_t old_job = Add(1);
  for (int i = 0; i < 300; ++i) {
    uint64_t id = Add(100 + i);
    ASSERT_TRUE(store_->Cancel(id, "").ok());
  }
  uint64_t removed = 0;
  ASSERT_TRUE(store_->Purge(env_.NowMicros() / 1000 + 1, &removed).ok());
  ASSERT_TRUE(store_->Compact().ok());
  Job j = GetJob(old_job, true);
  EXPECT_EQ(SeqOfPrompt(j.prompt), 1);
  std::vector<std::string> names;
  ASSERT_TRUE(env_.GetChildren("/db", &names).ok());
  EXPECT_EQ(std::count(names.begin(), names.end(), "log-00000001.cmq"), 0) << "first segment should be gone";
  Open();
  j = GetJob(old_job, true);
  EXPECT_EQ(SeqOfPrompt(j.prompt), 1);
  auto l = Take();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->job_id, old_job);
}

TEST_F(StoreTest, GroupCommitSharesSyncsAndBatchesUseOneSync) {
  store_.reset();
  StoreOptions o = SmallOptions(&env_);
  o.segment_bytes = 4 << 20;  // one segment holds it all: the batch must cost exactly one sync
  ASSERT_TRUE(Store::Open(o, "/db2", &store_).ok());
  uint64_t before = env_.sync_count();
  std::vector<NewJob> batch(200);
  for (int i = 0; i < 200; ++i) batch[i].prompt = PromptFor(i);
  std::vector<EnqueueResult> rs;
  ASSERT_TRUE(store_->EnqueueMany(batch, &rs).ok());
  uint64_t used = env_.sync_count() - before;
  EXPECT_EQ(used, 1u) << "a batch should cost one sync";

  // Many concurrent producers: far fewer syncs than jobs.
  before = env_.sync_count();
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        NewJob j;
        j.prompt = PromptFor(10000 + t * 100 + i);
        EnqueueResult r;
        if (store_->Enqueue(j, &r).ok()) ok++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 800);
  used = env_.sync_count() - before;
  std::cout << "[ group commit ] 800 concurrent enqueues used " << used << " syncs\n";
  EXPECT_LT(used, 800u);
}

TEST_F(StoreTest, ListenerHearsCommittedChangesInOrder) {
  std::mutex mu;
  std::vector<std::string> seen;
  store_->SetListener([&](const std::vector<StoreEvent>& events) {
    std::lock_guard<std::mutex> l(mu);
    for (auto& e : events) seen.push_back(e.reason + ":" + JobStateName(e.to));
  });
  uint64_t id = Add(1);
  auto l = Take();
  ASSERT_TRUE(store_->Complete(id, l->token, "{}", {}).ok());
  ASSERT_TRUE(store_->SetPaused(true).ok());
  store_.reset();  // close drains the listener queue
  EXPECT_EQ(seen,
            (std::vector<std::string>{"enqueued:pending", "leased:running", "completed:succeeded", "paused:pending"}));
}

TEST_F(StoreTest, LargePromptsSpanSegments) {
  NewJob j;
  j.prompt = PromptFor(5, 100 << 10);  // bigger than a 16 KiB segment
  EnqueueResult r;
  ASSERT_TRUE(store_->Enqueue(j, &r).ok());
  uint64_t small = Add(6);
  EXPECT_EQ(GetJob(r.id, true).prompt, j.prompt);
  Open();
  EXPECT_EQ(GetJob(r.id, true).prompt, j.prompt);
  EXPECT_EQ(SeqOfPrompt(GetJob(small, true).prompt), 6);
}

TEST_F(StoreTest, ClosedStoreRefusesCalls) {
  ASSERT_TRUE(store_->Close().ok());
  NewJob j;
  j.prompt = PromptFor(1);
  EnqueueResult r;
  EXPECT_TRUE(store_->Enqueue(j, &r).IsIOError());
  Job got;
  EXPECT_TRUE(store_->Get(1, false, &got).IsIOError());
  EXPECT_TRUE(store_->Close().ok());  // idempotent
}

TEST_F(StoreTest, BackgroundThreadExpiresLeasesByItself) {
  store_.reset();
  MemEnv real_clock_env;
  std::unique_ptr<Store> s;
  ASSERT_TRUE(Store::Open(SmallOptions(&real_clock_env, true), "/db", &s).ok());
  NewJob j;
  j.prompt = PromptFor(1);
  EnqueueResult r;
  ASSERT_TRUE(s->Enqueue(j, &r).ok());
  TakeOptions o;
  o.worker_id = "w";
  o.lease_ms = 50;
  std::unique_ptr<Lease> l;
  ASSERT_TRUE(s->Take(o, &l).ok());
  Job got;
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(s->Get(r.id, false, &got).ok());
    if (got.state == JobState::kPending) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(got.state, JobState::kPending);
}

}  // namespace
}  // namespace comfymq
