// Documents (Store::PutDoc and friends) and the outbox: values kept beside the jobs, durable through the log and
// checkpoints, refused past their limits, taken back with a failed commit; a notify job's ending writes its
// outbox document in the very commit that ends it, and a crash right after the call returns keeps it.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "comfymq/store.h"
#include "store/doc_table.h"
#include "test_util.h"
#include "testing/mem_env.h"

namespace comfymq {
namespace {

using ::comfymq::testing::PromptFor;
using ::comfymq::testing::SmallOptions;
using json = nlohmann::json;
using Docs = std::vector<std::pair<std::string, std::string>>;

constexpr int64_t kT0 = 1'750'000'000'000'000;

class StoreDocsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    env_.SetNowMicros(kT0);
    Open();
  }

  void Open(StoreOptions o) {
    store_.reset();
    Status s = Store::Open(o, "/db", &store_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  void Open() { Open(SmallOptions(&env_)); }

  uint64_t Add(bool notify, std::vector<uint64_t> after = {}, int max_attempts = 3) {
    NewJob j;
    j.prompt = PromptFor(++seq_);
    j.notify = notify;
    j.after = std::move(after);
    j.max_attempts = max_attempts;
    EnqueueResult r;
    Status s = store_->Enqueue(j, &r);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return r.id;
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

  Docs List(const std::string& prefix, const std::string& after = "", size_t limit = 1000) {
    Docs out;
    Status s = store_->ListDocs(prefix, after, limit, false, &out);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  std::string Get(const std::string& key) {
    std::string v;
    Status s = store_->GetDoc(key, &v);
    return s.ok() ? v : "<" + s.ToString() + ">";
  }

  // The outbox documents' values, parsed, oldest first.
  std::vector<json> Outbox() {
    std::vector<json> out;
    for (const auto& [k, v] : List("outbox/")) out.push_back(json::parse(v));
    return out;
  }

  MemEnv env_;
  std::unique_ptr<Store> store_;
  uint64_t seq_ = 0;
};

TEST_F(StoreDocsTest, PutGetListDelete) {
  ASSERT_TRUE(store_->PutDoc("tpl/b", "2", false).ok());
  ASSERT_TRUE(store_->PutDoc("tpl/a", "1", false).ok());
  ASSERT_TRUE(store_->PutDoc("tplx", "other", false).ok());
  EXPECT_EQ(Get("tpl/a"), "1");
  EXPECT_TRUE(store_->PutDoc("tpl/a", "again", true).IsAlreadyExists());
  EXPECT_EQ(Get("tpl/a"), "1");  // unchanged
  ASSERT_TRUE(store_->PutDoc("tpl/a", "one", false).ok());
  EXPECT_EQ(List("tpl/"), (Docs{{"tpl/a", "one"}, {"tpl/b", "2"}}));
  EXPECT_EQ(List("tpl/", "tpl/a"), (Docs{{"tpl/b", "2"}}));
  EXPECT_EQ(List("tpl/", "", 1), (Docs{{"tpl/a", "one"}}));
  EXPECT_EQ(List("").size(), 3u);
  Docs keys;
  ASSERT_TRUE(store_->ListDocs("tpl/", "", 10, true, &keys).ok());
  EXPECT_EQ(keys, (Docs{{"tpl/a", ""}, {"tpl/b", ""}}));
  ASSERT_TRUE(store_->DeleteDoc("tpl/a").ok());
  EXPECT_TRUE(store_->DeleteDoc("tpl/a").IsNotFound());
  std::string v;
  EXPECT_TRUE(store_->GetDoc("tpl/a", &v).IsNotFound());
  StoreStats st;
  ASSERT_TRUE(store_->Stats(&st).ok());
  EXPECT_EQ(st.docs, 2u);
  EXPECT_EQ(st.doc_bytes, std::string("tpl/b2tplxother").size());
}

TEST_F(StoreDocsTest, BadKeysAndValuesAreRefusedAndChangeNothing) {
  EXPECT_TRUE(store_->PutDoc("", "x", false).IsInvalidArgument());
  EXPECT_TRUE(store_->PutDoc(std::string(kMaxDocKeyBytes + 1, 'k'), "x", false).IsInvalidArgument());
  EXPECT_TRUE(store_->PutDoc(std::string("a\nb"), "x", false).IsInvalidArgument());
  EXPECT_TRUE(store_->PutDoc(std::string("a\0b", 3), "x", false).IsInvalidArgument());
  EXPECT_TRUE(store_->PutDoc("notify/0000000000000001", "", false).IsInvalidArgument());
  EXPECT_TRUE(store_->PutDoc("outbox/x", "", false).IsInvalidArgument());
  EXPECT_TRUE(store_->PutDoc("big", std::string(kMaxDocValueBytes + 1, 'v'), false).IsInvalidArgument());
  EXPECT_TRUE(List("").empty());
}

TEST_F(StoreDocsTest, LimitsOnAllDocumentsTogether) {
  StoreOptions o = SmallOptions(&env_);
  o.max_docs = 3;
  o.max_doc_bytes = 100;
  Open(o);
  ASSERT_TRUE(store_->PutDoc("a", "1", false).ok());
  ASSERT_TRUE(store_->PutDoc("b", "2", false).ok());
  ASSERT_TRUE(store_->PutDoc("c", "3", false).ok());
  EXPECT_TRUE(store_->PutDoc("d", "4", false).IsNoSpace());
  ASSERT_TRUE(store_->PutDoc("a", "replaced", false).ok());  // a change of one there is not a new one
  EXPECT_TRUE(store_->PutDoc("b", std::string(100, 'x'), false).IsNoSpace());
  EXPECT_EQ(Get("b"), "2");
  ASSERT_TRUE(store_->DeleteDoc("c").ok());
  EXPECT_TRUE(store_->PutDoc("d", "4", false).ok());
  // The store's own outbox is not held back by them: an ending is never refused.
  const uint64_t id = Add(true);
  auto l = Take();
  ASSERT_TRUE(store_->Complete(l->job_id, l->token, "{}", {}).ok());
  EXPECT_EQ(Outbox().size(), 1u);
  EXPECT_EQ(Outbox()[0]["job"], FormatJobId(id));
}

TEST_F(StoreDocsTest, DocumentsSurviveReplayCheckpointAndCompaction) {
  ASSERT_TRUE(store_->PutDoc("keep", "v1", false).ok());
  ASSERT_TRUE(store_->PutDoc("gone", "x", false).ok());
  ASSERT_TRUE(store_->PutDoc("keep", "v2", false).ok());
  ASSERT_TRUE(store_->DeleteDoc("gone").ok());
  store_.reset();  // closes with a checkpoint
  Open();
  EXPECT_EQ(List(""), (Docs{{"keep", "v2"}}));
  // Changes after the checkpoint come back by replay, over the checkpoint's documents.
  ASSERT_TRUE(store_->PutDoc("later", "y", false).ok());
  ASSERT_TRUE(store_->PutDoc("keep", "v3", false).ok());
  std::mt19937_64 rng(7);
  auto image = env_.CrashImage(rng, MemEnv::CrashMode::kTornPrefix);
  store_.reset();
  env_.SetNowMicros(kT0);
  Open();
  EXPECT_EQ(List(""), (Docs{{"keep", "v3"}, {"later", "y"}}));
  {
    std::unique_ptr<Store> crashed;
    ASSERT_TRUE(Store::Open(SmallOptions(image.get()), "/db", &crashed).ok());
    Docs out;
    ASSERT_TRUE(crashed->ListDocs("", "", 10, false, &out).ok());
    EXPECT_EQ(out, (Docs{{"keep", "v3"}, {"later", "y"}}));  // durable once the calls returned
  }
  // Many jobs and checkpoints later, with old segments compacted away, the documents are still there.
  for (int i = 0; i < 400; ++i) {
    uint64_t id = Add(false);
    ASSERT_TRUE(store_->Cancel(id, "").ok());
    ASSERT_TRUE(store_->Delete(id).ok());
  }
  ASSERT_TRUE(store_->Checkpoint().ok());
  ASSERT_TRUE(store_->Compact().ok());
  store_.reset();
  Open();
  EXPECT_EQ(List(""), (Docs{{"keep", "v3"}, {"later", "y"}}));
}

TEST_F(StoreDocsTest, ACheckpointWithoutDocumentsKeepsTheOlderFormat) {
  Add(false);
  ASSERT_TRUE(store_->Checkpoint().ok());
  auto magic = [&] {
    std::vector<std::string> names;
    EXPECT_TRUE(env_.GetChildren("/db", &names).ok());
    for (const std::string& n : names) {
      if (n.rfind("checkpoint-", 0) != 0) continue;
      std::string data;
      EXPECT_TRUE(env_.ReadFileToString("/db/" + n, &data).ok());
      return data.substr(0, 8);
    }
    return std::string();
  };
  EXPECT_EQ(magic(), "CMQCKP01");
  ASSERT_TRUE(store_->PutDoc("k", "v", false).ok());
  ASSERT_TRUE(store_->Checkpoint().ok());
  EXPECT_EQ(magic(), "CMQCKP03");
  ASSERT_TRUE(store_->DeleteDoc("k").ok());
  ASSERT_TRUE(store_->Checkpoint().ok());
  EXPECT_EQ(magic(), "CMQCKP01");
}

TEST_F(StoreDocsTest, EveryEndingOfANotifyJobWritesItsOutboxDocumentInTheSameCommit) {
  const uint64_t plain = Add(false);
  const uint64_t done = Add(true);
  const uint64_t failed = Add(true, {}, /*max_attempts=*/1);
  const uint64_t cancelled = Add(true);
  const uint64_t dependent = Add(true, {failed});
  EXPECT_EQ(List("notify/").size(), 4u);
  std::map<uint64_t, std::unique_ptr<Lease>> leases;
  for (int i = 0; i < 3; ++i) {
    auto l = Take();
    ASSERT_TRUE(l != nullptr);
    leases[l->job_id] = std::move(l);
  }
  ASSERT_TRUE(store_->Complete(plain, leases[plain]->token, "{}", {}).ok());
  EXPECT_TRUE(Outbox().empty());
  env_.AdvanceMicros(1000);
  ASSERT_TRUE(store_->Complete(done, leases[done]->token, "{}", {}).ok());
  env_.AdvanceMicros(1000);
  JobError e{"execution_error", "boom"};
  ASSERT_TRUE(store_->Fail(failed, leases[failed]->token, e, true).ok());  // its last attempt: failed, and the
  env_.AdvanceMicros(1000);                                                // dependent is cancelled with it
  ASSERT_TRUE(store_->Cancel(cancelled, "not wanted").ok());
  std::vector<json> out = Outbox();
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0]["job"], FormatJobId(done));
  EXPECT_EQ(out[0]["state"], "succeeded");
  EXPECT_EQ(out[1]["state"], "failed");
  EXPECT_EQ(out[2]["state"], "cancelled");
  EXPECT_EQ(out[1]["job"] == FormatJobId(failed) ? out[2]["job"] : out[1]["job"], FormatJobId(dependent));
  EXPECT_EQ(out[3]["job"], FormatJobId(cancelled));
  EXPECT_EQ(out[3]["at"], kT0 / 1000 + 3);
  StoreStats st;
  ASSERT_TRUE(store_->Stats(&st).ok());
  EXPECT_EQ(st.outbox, 4u);

  // A retry runs it again: its next ending is a new document; deleting the job ends its notify/ document.
  for (const auto& [k, v] : List("outbox/")) ASSERT_TRUE(store_->DeleteDoc(k).ok());
  ASSERT_TRUE(store_->Retry(cancelled).ok());
  env_.AdvanceMicros(1000);
  auto l = Take();
  ASSERT_TRUE(l != nullptr);
  ASSERT_EQ(l->job_id, cancelled);
  ASSERT_TRUE(store_->Complete(cancelled, l->token, "{}", {}).ok());
  out = Outbox();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["state"], "succeeded");
  ASSERT_TRUE(store_->Delete(cancelled).ok());
  EXPECT_EQ(Get(DocTable::NotifyKey(cancelled)).rfind("<", 0), 0u);  // gone
  EXPECT_EQ(Outbox().size(), 1u);                                    // what it said stays until the caller removes it
}

TEST_F(StoreDocsTest, EndingsWithinOneMillisecondEachGetTheirOwnOutboxDocument) {
  const uint64_t id = Add(true);  // the clock stands still: every change below is in the same millisecond
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(store_->Cancel(id, "again").ok());
    ASSERT_TRUE(store_->Retry(id).ok());
  }
  ASSERT_TRUE(store_->Cancel(id, "last").ok());
  std::vector<json> out = Outbox();
  ASSERT_EQ(out.size(), 6u);
  for (size_t i = 1; i < out.size(); ++i) EXPECT_GT(out[i]["at"].get<int64_t>(), out[i - 1]["at"].get<int64_t>());
  // and after a reopen (the last ending's time is in the notify/ document) the next one still comes after
  store_.reset();
  Open();
  ASSERT_TRUE(store_->Retry(id).ok());
  ASSERT_TRUE(store_->Cancel(id, "after reopen").ok());
  out = Outbox();
  ASSERT_EQ(out.size(), 7u);
  EXPECT_GT(out[6]["at"].get<int64_t>(), out[5]["at"].get<int64_t>());
}

TEST_F(StoreDocsTest, ACrashRightAfterTheEndingKeepsItsOutboxDocument) {
  const uint64_t id = Add(true);
  auto l = Take();
  ASSERT_TRUE(store_->Complete(id, l->token, "{}", {}).ok());
  for (auto mode : {MemEnv::CrashMode::kTornPrefix, MemEnv::CrashMode::kRandomSectors}) {
    for (int seed = 0; seed < 10; ++seed) {
      std::mt19937_64 rng(seed);
      auto image = env_.CrashImage(rng, mode);
      std::unique_ptr<Store> crashed;
      ASSERT_TRUE(Store::Open(SmallOptions(image.get()), "/db", &crashed).ok());
      Docs out;
      ASSERT_TRUE(crashed->ListDocs("outbox/", "", 10, false, &out).ok());
      ASSERT_EQ(out.size(), 1u);
      EXPECT_EQ(json::parse(out[0].second)["job"], FormatJobId(id));
      Job j;
      ASSERT_TRUE(crashed->Get(id, false, &j).ok());
      EXPECT_EQ(j.state, JobState::kSucceeded);
    }
  }
}

TEST_F(StoreDocsTest, AFailedCommitTakesItsDocumentsBack) {
  ASSERT_TRUE(store_->PutDoc("before", "1", false).ok());
  const uint64_t id = Add(true);
  auto l = Take();
  env_.SetFaultHook([](MemEnv::Op op, const std::string&) {
    return op == MemEnv::Op::kSync ? Status::IOError("injected sync failure") : Status::OK();
  });
  EXPECT_FALSE(store_->PutDoc("during", "2", false).ok());
  EXPECT_FALSE(store_->Complete(id, l->token, "{}", {}).ok());
  env_.SetFaultHook(nullptr);
  // The handle refuses work after a failed write; what the memory shows must not be what failed.
  Docs out;
  if (store_->ListDocs("", "", 10, false, &out).ok()) {
    for (const auto& [k, v] : out) EXPECT_TRUE(k != "during" && k.rfind("outbox/", 0) != 0) << k;
  }
  // Written but not synced: after a reopen either outcome may be there, but never one half of the ending.
  store_.reset();
  Open();
  Docs after = List("");
  EXPECT_EQ(after[0].first, "before");
  Job j;
  ASSERT_TRUE(store_->Get(id, false, &j).ok());
  EXPECT_EQ(List("outbox/").size(), j.state == JobState::kSucceeded ? 1u : 0u);
}

}  // namespace
}  // namespace comfymq
