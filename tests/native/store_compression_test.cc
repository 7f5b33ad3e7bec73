// Prompts and workflows stored compressed (job payload version 2): a compressible and an incompressible
// 30 KB prompt come back exactly through enqueue, get, take, the prompt filter, reopen, checkpoint and
// compaction; a store holding version 1 job records still opens and reads; damaged compressed texts in a
// store are Corruption on read and a failed job on dispatch, and never stop the store from opening.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <thread>

#include "comfymq/store.h"
#include "store/log_segment.h"
#include "store/records.h"
#include "test_util.h"
#include "testing/mem_env.h"
#include "util/coding.h"

namespace comfymq {
namespace {

using ::comfymq::testing::OutputsFor;
using ::comfymq::testing::PromptFor;
using ::comfymq::testing::SeqOfPrompt;
using ::comfymq::testing::SmallOptions;

constexpr int64_t kT0 = 1'750'000'000'000'000;  // a fixed "now" in microseconds

// An API-format prompt carrying `size` bytes of random base64: LZ4 cannot shrink it.
std::string IncompressiblePrompt(size_t size, uint64_t seed) {
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::mt19937_64 rng(seed);
  std::string data(size, 'A');
  for (char& c : data) c = kAlphabet[rng() % 64];
  return "{\"1\": {\"class_type\": \"LoadImageBase64\", \"inputs\": {\"image\": \"" + data + "\"}}}";
}

// A UI-format workflow of about `size` bytes, as repetitive as real ones.
std::string Workflow(size_t size) {
  std::string w = "{\"nodes\": [";
  for (int n = 0; w.size() < size; ++n) {
    if (n > 0) w += ", ";
    w += "{\"id\": " + std::to_string(n) + ", \"type\": \"KSampler\", \"pos\": [" + std::to_string(n * 10) +
         ", 40], \"size\": [315, 262], \"mode\": 0, \"widgets_values\": [" + std::to_string(n * 7919) +
         ", \"randomize\", 20, 8, \"euler\", \"normal\", 1]}";
  }
  return w + "], \"links\": []}";
}

class CompressionTest : public ::testing::Test {
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

  // Enqueues the job in one commit with `fillers` small jobs, so it shares its segment with them (and
  // compaction moves it once they are gone). Returns the job's id.
  uint64_t Add(const std::string& prompt, const std::string& workflow, const std::string& prompt_id, int fillers = 0) {
    std::vector<NewJob> batch(1 + fillers);
    batch[0].prompt = prompt;
    batch[0].workflow = workflow;
    batch[0].prompt_id = prompt_id;
    for (int i = 1; i <= fillers; ++i) batch[i].prompt = PromptFor(next_filler_++, 2000);
    std::vector<EnqueueResult> rs;
    Status s = store_->EnqueueMany(batch, &rs);
    EXPECT_TRUE(s.ok()) << s.ToString();
    if (!s.ok()) return 0;
    for (int i = 1; i <= fillers; ++i) fillers_.push_back(rs[i].id);
    return rs[0].id;
  }

  std::vector<std::string> Segments() {
    std::vector<std::string> names, out;
    EXPECT_TRUE(env_.GetChildren("/db", &names).ok());
    for (auto& n : names) {
      if (n.rfind("log-", 0) == 0) out.push_back(n);
    }
    return out;
  }

  Job GetJob(uint64_t id, bool with_prompt = true) {
    Job j;
    Status s = store_->Get(id, with_prompt, &j);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return j;
  }

  uint64_t LiveBytes() {
    StoreStats st;
    EXPECT_TRUE(store_->Stats(&st).ok());
    return st.live_bytes;
  }

  // Every way back to the texts: get (by id and by prompt_id), list, the take filter's loader.
  void ExpectTexts(uint64_t id, const std::string& prompt_id, const std::string& prompt, const std::string& workflow) {
    Job j = GetJob(id);
    EXPECT_EQ(j.prompt, prompt);
    EXPECT_EQ(j.workflow, workflow);
    EXPECT_TRUE(GetJob(id, false).prompt.empty());
    Job by_pid;
    ASSERT_TRUE(store_->GetByPromptId(prompt_id, true, &by_pid).ok());
    EXPECT_EQ(by_pid.prompt, prompt);
    ListQuery q;
    q.with_prompt = true;
    ListPage page;
    ASSERT_TRUE(store_->List(q, &page).ok());
    bool listed = false;
    for (const Job& l : page.jobs) {
      if (l.id != id) continue;
      listed = true;
      EXPECT_EQ(l.prompt, prompt);
      EXPECT_EQ(l.workflow, workflow);
    }
    EXPECT_TRUE(listed);
    TakeOptions o;
    o.worker_id = "w";
    bool loaded = false;
    o.filter = [&](uint64_t job, const PromptLoader& load) {
      if (job != id) return false;
      std::string p;
      EXPECT_TRUE(load(&p).ok());
      EXPECT_EQ(p, prompt);
      loaded = true;
      return false;  // judge only: lease nothing
    };
    std::unique_ptr<Lease> l;
    ASSERT_TRUE(store_->Take(o, &l).ok());
    EXPECT_FALSE(l);
    EXPECT_TRUE(loaded);
  }

  MemEnv env_;
  std::unique_ptr<Store> store_;
  RecoveryReport report_;
  uint64_t next_filler_ = 1000;
  std::vector<uint64_t> fillers_;
};

TEST_F(CompressionTest, PromptsRoundTripThroughReopenCheckpointAndCompaction) {
  const std::string small = PromptFor(1);                       // under the threshold: raw
  const std::string packed = PromptFor(2, 30 << 10);            // compressible: LZ4
  const std::string noise = IncompressiblePrompt(30 << 10, 3);  // does not compress: raw
  const std::string workflow = Workflow(20 << 10);
  const uint64_t live0 = LiveBytes();
  const uint64_t a = Add(small, "", "small");
  const uint64_t b = Add(packed, workflow, "packed");
  const uint64_t live_ab = LiveBytes() - live0;
  const uint64_t c = Add(noise, "", "noise");
  const uint64_t live_c = LiveBytes() - live0 - live_ab;
  EXPECT_LT(live_ab, (packed.size() + workflow.size()) / 4) << "the 30 KB prompt and workflow are stored compressed";
  EXPECT_GT(live_c, noise.size()) << "incompressible prompts are stored as they are";
  // Fillers in the same segments, for compaction below.
  const uint64_t a2 = Add(small + " ", "", "small-2", 30);
  const uint64_t b2 = Add(packed + " ", workflow, "packed-2", 30);
  const uint64_t c2 = Add(noise + " ", "", "noise-2", 30);
  const std::string small2 = small + " ", packed2 = packed + " ", noise2 = noise + " ";

  struct Want {
    uint64_t id;
    const char* prompt_id;
    const std::string* prompt;
    std::string workflow;
  };
  const std::vector<Want> want = {
      {a, "small", &small, ""},     {b, "packed", &packed, workflow},     {c, "noise", &noise, ""},
      {a2, "small-2", &small2, ""}, {b2, "packed-2", &packed2, workflow}, {c2, "noise-2", &noise2, ""}};
  auto check = [&](const char* when) {
    SCOPED_TRACE(when);
    for (const Want& w : want) ExpectTexts(w.id, w.prompt_id, *w.prompt, w.workflow);
  };
  check("after enqueue");
  const std::vector<std::string> written = Segments();
  Open();  // clean close: checkpoint; the records are read from sealed segments
  check("after reopen");
  // The fillers go: the segments the last three jobs share with them are mostly garbage, and compaction
  // copies those jobs' records (as they are) to the end of the log.
  for (uint64_t id : fillers_) ASSERT_TRUE(store_->Cancel(id, "").ok());
  uint64_t removed = 0;
  ASSERT_TRUE(store_->Purge(env_.NowMicros() / 1000 + 1, &removed).ok());
  EXPECT_EQ(removed, fillers_.size());
  const uint64_t live_before = LiveBytes();
  ASSERT_TRUE(store_->Compact().ok());
  EXPECT_EQ(LiveBytes(), live_before) << "compaction copies the records as they are";
  const std::vector<std::string> after = Segments();
  int moved = 0;
  for (const auto& n : written) moved += std::find(after.begin(), after.end(), n) == after.end();
  EXPECT_GE(moved, 3) << "the segments shared with the fillers were emptied";
  check("after compaction");
  ASSERT_TRUE(store_->Checkpoint().ok());
  std::mt19937_64 rng(5);
  auto crashed = env_.CrashImage(rng, MemEnv::CrashMode::kTornPrefix);  // everything was synced
  store_.reset();
  ASSERT_TRUE(Store::Open(SmallOptions(crashed.get()), "/db", &store_, &report_).ok());
  check("after a crash");
  // Dispatch hands the worker the original texts.
  TakeOptions o;
  o.worker_id = "w";
  for (const Want& w : want) {
    std::unique_ptr<Lease> l;
    ASSERT_TRUE(store_->Take(o, &l).ok());
    ASSERT_TRUE(l);
    EXPECT_EQ(l->job_id, w.id);
    EXPECT_EQ(l->job.prompt, *w.prompt);
    EXPECT_EQ(l->job.workflow, w.workflow);
    ASSERT_TRUE(store_->Complete(l->job_id, l->token, OutputsFor(1), {}).ok());
  }
  store_.reset();  // before the image it lives on
}

TEST_F(CompressionTest, ManyProducersCompressInParallel) {
  constexpr int kThreads = 8, kPer = 20;
  std::vector<std::thread> ts;
  std::vector<std::vector<uint64_t>> ids(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < kPer; ++i) {
        NewJob j;
        j.prompt = (i % 2) ? PromptFor(t * 1000 + i, 8 << 10) : IncompressiblePrompt(8 << 10, t * 1000 + i);
        EnqueueResult r;
        Status s = store_->Enqueue(j, &r);
        EXPECT_TRUE(s.ok()) << s.ToString();
        ids[t].push_back(r.id);
      }
    });
  }
  for (auto& th : ts) th.join();
  Open();
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPer; ++i) {
      Job j = GetJob(ids[t][i]);
      if (i % 2)
        EXPECT_EQ(SeqOfPrompt(j.prompt), t * 1000 + i);
      else
        EXPECT_EQ(j.prompt, IncompressiblePrompt(8 << 10, t * 1000 + i));
    }
  }
}

// Stores written by hand: one segment holding job records made here, as an older build or damage left them.
class HandWrittenStoreTest : public ::testing::Test {
 protected:
  static uint64_t IdOf(int n) { return (static_cast<uint64_t>(kT0 / 1000) << 16) | static_cast<uint64_t>(n); }

  // A version-1 job payload (texts raw, no codec byte), as stores written before compression hold them.
  static std::string JobV1(uint64_t id, const std::string& prompt, const std::string& workflow) {
    std::string p;
    PutU8(&p, 1);
    PutU64(&p, id);
    PutI32(&p, 1);
    PutU16(&p, 1);
    PutI64(&p, 0);
    PutI64(&p, kT0 / 1000);
    PutBytes(&p, "v1-" + std::to_string(id & 0xffff));
    PutBytes(&p, "");
    PutBytes(&p, "");
    PutBytes(&p, prompt);
    PutBytes(&p, workflow);
    return p;
  }

  // A version-2 job payload whose prompt is `text` as given (the test chooses codec, raw_length, bytes).
  static std::string JobV2(uint64_t id, const records::StoredText& text) {
    records::JobView v;
    v.id = id;
    v.create_time_ms = kT0 / 1000;
    v.prompt_id = "v2-" + std::to_string(id & 0xffff);
    v.prompt = text;
    std::string p;
    records::EncodeJob(v, &p);
    return p;
  }

  void Write(const std::vector<std::string>& job_payloads) {
    ASSERT_TRUE(env_.CreateDir("/db").ok());
    std::unique_ptr<WritableFile> f;
    ASSERT_TRUE(log::CreateSegment(&env_, "/db/" + log::SegmentFileName(1), 1, 1 << 20, &f).ok());
    std::vector<std::pair<log::RecordType, std::string>> records;
    for (const auto& p : job_payloads) records.emplace_back(log::RecordType::kJob, p);
    std::string group;
    log::AppendGroup(records, &group);
    ASSERT_TRUE(f->WriteAt(log::kSegmentHeaderSize, group).ok());
    ASSERT_TRUE(f->Sync().ok());
  }

  void Open() {
    store_.reset();
    env_.SetNowMicros(kT0 + 1000000);
    Status s = Store::Open(SmallOptions(&env_), "/db", &store_, &report_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  MemEnv env_;
  std::unique_ptr<Store> store_;
  RecoveryReport report_;
};

TEST_F(HandWrittenStoreTest, Version1JobsStillOpenAndRead) {
  const std::string big = PromptFor(1, 30 << 10);
  Write({JobV1(IdOf(1), big, "{\"nodes\": []}"), JobV1(IdOf(2), PromptFor(2), "")});
  Open();
  EXPECT_EQ(report_.jobs, 2u) << report_.ToString();
  EXPECT_TRUE(report_.warnings.empty()) << report_.ToString();
  Job j;
  ASSERT_TRUE(store_->Get(IdOf(1), true, &j).ok());
  EXPECT_EQ(j.prompt, big);
  EXPECT_EQ(j.workflow, "{\"nodes\": []}");
  ASSERT_TRUE(store_->GetByPromptId("v1-2", true, &j).ok());
  EXPECT_EQ(SeqOfPrompt(j.prompt), 2);
  // New jobs are written as version 2 next to them, and all of it survives checkpoint and reopen.
  NewJob nj;
  nj.prompt = PromptFor(3, 30 << 10);
  EnqueueResult r;
  ASSERT_TRUE(store_->Enqueue(nj, &r).ok());
  ASSERT_TRUE(store_->Checkpoint().ok());
  Open();
  ASSERT_TRUE(store_->Get(IdOf(1), true, &j).ok());
  EXPECT_EQ(j.prompt, big);
  ASSERT_TRUE(store_->Get(r.id, true, &j).ok());
  EXPECT_EQ(j.prompt, nj.prompt);
  TakeOptions o;
  o.worker_id = "w";
  std::unique_ptr<Lease> l;
  ASSERT_TRUE(store_->Take(o, &l).ok());
  ASSERT_TRUE(l);
  EXPECT_EQ(l->job.prompt, big);
}

TEST_F(HandWrittenStoreTest, DamagedCompressedTextsAreCorruptionNotACrash) {
  const std::string text = PromptFor(1, 30 << 10);
  std::string block;
  const records::StoredText good = records::PackText(text, &block);
  ASSERT_EQ(good.codec, records::TextCodec::kLz4);
  records::StoredText short_len = good, huge_len = good, garbage = good, truncated = good;
  short_len.raw_length = good.raw_length - 1;  // lies by one byte
  huge_len.raw_length = 0xFFFFFFF0u;           // would be a 4 GiB allocation
  const std::string junk(good.bytes.size(), '\xff');
  garbage.bytes = junk;
  truncated.bytes = good.bytes.substr(0, good.bytes.size() / 2);
  Write({JobV2(IdOf(1), good), JobV2(IdOf(2), short_len), JobV2(IdOf(3), huge_len), JobV2(IdOf(4), garbage),
         JobV2(IdOf(5), truncated)});

  for (int round = 0; round < 2; ++round) {  // replayed from the log, then read from behind a checkpoint
    SCOPED_TRACE(round == 0 ? "replayed" : "after checkpoint");
    Open();
    EXPECT_EQ(report_.jobs, 5u) << "a damaged text does not lose its job: " << report_.ToString();
    Job j;
    ASSERT_TRUE(store_->Get(IdOf(1), true, &j).ok());
    EXPECT_EQ(j.prompt, text);
    for (int n = 2; n <= 5; ++n) {
      Status s = store_->Get(IdOf(n), true, &j);
      EXPECT_TRUE(s.IsCorruption()) << n << ": " << s.ToString();
      EXPECT_NE(s.message().find(FormatJobId(IdOf(n))), std::string::npos) << s.ToString();
      EXPECT_NE(s.message().find("compressed text"), std::string::npos) << s.ToString();
      ASSERT_TRUE(store_->Get(IdOf(n), false, &j).ok()) << "the job's other fields are still readable";
      EXPECT_EQ(j.state, JobState::kPending);
    }
    ASSERT_TRUE(store_->Checkpoint().ok());
  }
  // Dispatch fails the damaged jobs with the reason instead of handing them out, and leases the good one.
  TakeOptions o;
  o.worker_id = "w";
  std::unique_ptr<Lease> l;
  ASSERT_TRUE(store_->Take(o, &l).ok());
  ASSERT_TRUE(l);
  EXPECT_EQ(l->job_id, IdOf(1));
  EXPECT_EQ(l->job.prompt, text);
  ASSERT_TRUE(store_->Take(o, &l).ok());
  EXPECT_FALSE(l);
  for (int n = 2; n <= 5; ++n) {
    Job j;
    ASSERT_TRUE(store_->Get(IdOf(n), false, &j).ok());
    EXPECT_EQ(j.state, JobState::kFailed);
    EXPECT_NE(j.error.find("compressed text"), std::string::npos) << j.error;
  }
  Open();
  EXPECT_EQ(report_.jobs, 5u);
}

}  // namespace
}  // namespace comfymq
