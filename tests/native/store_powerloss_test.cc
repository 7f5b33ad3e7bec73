// Simulated power cuts: a multi-threaded workload runs on a MemEnv; at a random moment the disk image a
// power cut would leave (unsynced data dropped, the last unsynced write torn, or random sectors kept) is
// taken, the store is reopened on it and checked. COMFYMQ_POWERLOSS_TRIALS sets the count (soak: 10,000+).
#include <gtest/gtest.h>

#include <atomic>
#include <iostream>
#include <mutex>
#include <random>
#include <thread>

#include "comfymq/artifact_writer.h"
#include "crash_check.h"
#include "test_util.h"
#include "testing/mem_env.h"
#include "util/sha256.h"
#include "workload.h"

namespace comfymq {
namespace {

using namespace ::comfymq::testing;

// Runs the workload and cuts the power at a random moment, `trials` times; checks every acknowledged job.
// With `background`, the store's own thread also zero-fills segments ahead and rolls adopt them (counted).
CrashTally PowerCutTrials(int trials, bool background, uint64_t* adopted) {
  CrashTally tally;
  for (int trial = 0; trial < trials; ++trial) {
    std::mt19937_64 rng(0xC0FFEE + trial);
    MemEnv env;
    env.SetFaultHook([&](MemEnv::Op op, const std::string& path) {
      if (op == MemEnv::Op::kRename && path.size() >= 12 && path.compare(path.size() - 12, 12, "segment.prep") == 0)
        (*adopted)++;
      return Status::OK();
    });
    StoreOptions opts = SmallOptions(&env, background);
    opts.segment_bytes = std::uniform_int_distribution<int>(0, 1)(rng) ? (8 << 10) : (64 << 10);
    opts.prepare_when_quiet_ms = 0;  // zero-fill beside the busy log: the adoption path is what is under test
    std::unique_ptr<Store> store;
    Status opened = Store::Open(opts, "/db", &store);
    EXPECT_TRUE(opened.ok()) << opened.ToString();
    if (!opened.ok()) {
      tally.failed_opens++;
      break;
    }
    Workload w(store.get(), trial, 1);
    std::atomic<bool> stop{false};
    std::thread runner([&] { w.Run(3, &stop); });
    // Let the workload run for a random while (the store's own syncs pace it), then cut the power.
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(200, 20000)(rng)));
    std::vector<Ack> acks = w.AcksSnapshot();
    std::set<uint64_t> deleted = w.DeletedSnapshot();
    auto mode = trial % 2 ? MemEnv::CrashMode::kTornPrefix : MemEnv::CrashMode::kRandomSectors;
    std::unique_ptr<MemEnv> image = env.CrashImage(rng, mode);
    deleted = w.DeletedSnapshot();  // deletes issued up to the cut may have landed
    stop = true;
    runner.join();
    store.reset();

    tally.trials++;
    std::unique_ptr<Store> reopened;
    RecoveryReport rep;
    Status s = Store::Open(SmallOptions(image.get(), background), "/db", &reopened, &rep);
    if (!s.ok()) {
      tally.failed_opens++;
      tally.problems.push_back("trial " + std::to_string(trial) + ": open failed: " + s.ToString());
      continue;
    }
    CheckAfterCrash(reopened.get(), acks, deleted, &tally);
    // The recovered store works and recovers again.
    NewJob j;
    j.prompt = PromptFor(999999999);
    j.prompt_id = PromptIdFor(999999999);
    EnqueueResult r;
    EXPECT_TRUE(reopened->Enqueue(j, &r).ok());
    reopened.reset();
    std::unique_ptr<Store> again;
    if (!Store::Open(SmallOptions(image.get(), background), "/db", &again).ok()) tally.failed_opens++;
    if (!tally.clean()) break;
  }
  return tally;
}

TEST(PowerLoss, AcknowledgedJobsSurviveRandomPowerCuts) {
  uint64_t adopted = 0;
  CrashTally tally = PowerCutTrials(TrialsFromEnv("COMFYMQ_POWERLOSS_TRIALS", 300), false, &adopted);
  std::cout << tally.Line("power-loss") << "\n";
  for (auto& p : tally.problems) std::cout << "  problem: " << p << "\n";
  EXPECT_TRUE(tally.clean());
  EXPECT_GT(tally.acknowledged, 0u);
}

// The same with segments zeroed ahead by the background thread: cuts land in the middle of preparing one,
// adopting one (header, rename, directory sync) and writing into an adopted one.
TEST(PowerLoss, AcknowledgedJobsSurvivePowerCutsWithSegmentsPreparedAhead) {
  uint64_t adopted = 0;
  CrashTally tally = PowerCutTrials(TrialsFromEnv("COMFYMQ_POWERLOSS_TRIALS", 300) / 2, true, &adopted);
  std::cout << tally.Line("power-loss, segments prepared ahead") << " adopted=" << adopted << "\n";
  for (auto& p : tally.problems) std::cout << "  problem: " << p << "\n";
  EXPECT_TRUE(tally.clean());
  EXPECT_GT(tally.acknowledged, 0u);
  EXPECT_GT(adopted, 0u) << "no roll adopted a prepared segment: the path under test never ran";
}

TEST(PowerLoss, ArtifactsAreWholeOrAbsentAfterPowerCuts) {
  const int trials = TrialsFromEnv("COMFYMQ_POWERLOSS_TRIALS", 300);
  uint64_t committed = 0, lost = 0, partial = 0, visible_after_abort = 0;
  for (int trial = 0; trial < trials; ++trial) {
    std::mt19937_64 rng(0xA57 + trial);
    MemEnv env;
    std::unique_ptr<ArtifactWriter> w;
    ASSERT_TRUE(ArtifactWriter::Open(&env, "/art", &w).ok());
    // Write a few files; cut power after a random number of operations by snapshotting in between.
    std::vector<std::pair<std::string, std::string>> acked;  // path -> content
    std::unique_ptr<MemEnv> image;
    const int files = std::uniform_int_distribution<int>(1, 6)(rng);
    const int cut_at = std::uniform_int_distribution<int>(0, files * 3)(rng);
    int step = 0;
    auto maybe_cut = [&] {
      if (!image && step++ == cut_at) image = env.CrashImage(rng, MemEnv::CrashMode::kTornPrefix);
    };
    // Odd trials hold every file finished and publish them together (CommitAll: one directory sync).
    const bool together = trial % 2 == 1;
    std::vector<std::unique_ptr<ArtifactStream>> held;
    std::vector<std::string> held_content;
    for (int f = 0; f < files; ++f) {
      std::string content(std::uniform_int_distribution<int>(1, 200000)(rng), static_cast<char>('A' + f));
      std::unique_ptr<ArtifactStream> s;
      ASSERT_TRUE(w->Begin("job" + std::to_string(trial) + "/out.png", &s).ok());
      maybe_cut();
      for (size_t off = 0; off < content.size(); off += 65536) {
        ASSERT_TRUE(s->Append(std::string_view(content).substr(off, 65536)).ok());
      }
      maybe_cut();
      if (together) {
        std::string sha;
        ASSERT_TRUE(s->Finish(&sha).ok());
        held.push_back(std::move(s));
        held_content.push_back(content);
        maybe_cut();
        continue;
      }
      ArtifactInfo info;
      ASSERT_TRUE(s->Commit(&info).ok());
      if (!image) acked.emplace_back(info.path, content);
      maybe_cut();
    }
    if (together) {
      std::vector<ArtifactStream*> raw;
      for (auto& h : held) raw.push_back(h.get());
      std::vector<ArtifactInfo> infos;
      ASSERT_TRUE(w->CommitAll(raw, std::vector<bool>(raw.size(), false), &infos).ok());
      for (size_t i = 0; i < infos.size() && !image; ++i) acked.emplace_back(infos[i].path, held_content[i]);
      maybe_cut();
    }
    if (!image) image = env.CrashImage(rng, MemEnv::CrashMode::kTornPrefix);
    // After the cut: each published name holds a whole file; acknowledged files are all there.
    std::unique_ptr<ArtifactWriter> w2;
    uint64_t stale = 0;
    ASSERT_TRUE(ArtifactWriter::Open(image.get(), "/art", &w2, &stale).ok());
    std::vector<std::string> names;
    image->GetChildren("/art/job" + std::to_string(trial), &names).IgnoreError();
    for (const std::string& n : names) {
      if (n.rfind(".cmq-tmp.", 0) == 0) {
        visible_after_abort++;  // stale temps must have been cleaned on open
        continue;
      }
      std::string data;
      ASSERT_TRUE(image->ReadFileToString("/art/job" + std::to_string(trial) + "/" + n, &data).ok());
      bool whole = !data.empty() && data == std::string(data.size(), data[0]);
      bool matches_a_write = false;
      for (int f = 0; f < files; ++f) {
        if (whole && data[0] == 'A' + f) matches_a_write = true;
      }
      if (!whole || !matches_a_write) partial++;
    }
    for (auto& [path, content] : acked) {
      committed++;
      std::string data;
      if (!image->ReadFileToString("/art/" + path, &data).ok() || data != content) lost++;
    }
  }
  std::cout << "[ artifact power-loss ] trials=" << trials << " acknowledged=" << committed << " lost=" << lost
            << " half_made=" << partial << " stale_temps_left=" << visible_after_abort << "\n";
  EXPECT_EQ(lost, 0u);
  EXPECT_EQ(partial, 0u);
  EXPECT_EQ(visible_after_abort, 0u);
}

}  // namespace
}  // namespace comfymq
