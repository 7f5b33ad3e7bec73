// Real processes: a child process runs the random workload on a store on the real disk and sends each
// acknowledgement to the parent through a pipe; the parent kills it with SIGKILL at a random moment, reopens
// the store and checks it. COMFYMQ_SIGKILL_TRIALS sets the count (soak: 1,000+).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <iostream>
#include <random>

#include "crash_check.h"
#include "test_util.h"
#include "workload.h"

namespace comfymq {
namespace {

using namespace ::comfymq::testing;

StoreOptions DiskOptions() {
  StoreOptions o;
  o.segment_bytes = 256 << 10;
  o.checkpoint_every_bytes = 1 << 20;
  o.compact_min_garbage_bytes = 512 << 10;
  o.reopen_lease_grace_ms = 0;
  o.background_thread = true;
  return o;
}

[[noreturn]] void ChildMain(const std::string& dir, int fd, uint64_t seq_base, uint64_t seed) {
  std::unique_ptr<Store> store;
  if (!Store::Open(DiskOptions(), dir, &store).ok()) _exit(3);
  Workload w(store.get(), seed, seq_base);
  w.on_ack = [fd](const Ack& a) {
    char buf[12];
    std::memcpy(buf, &a.kind, 4);
    std::memcpy(buf + 4, &a.seq, 8);
    if (write(fd, buf, sizeof(buf)) != sizeof(buf)) _exit(4);
  };
  std::atomic<bool> stop{false};
  w.Run(2, &stop);  // runs until killed
  _exit(0);
}

TEST(SigKill, AcknowledgedJobsSurviveKillDashNine) {
  const int trials = TrialsFromEnv("COMFYMQ_SIGKILL_TRIALS", 200);
  CrashTally tally;
  std::unique_ptr<TempDir> dir;
  std::vector<Ack> acks;
  std::set<uint64_t> deleted;
  std::mt19937_64 rng(4242);
  for (int trial = 0; trial < trials; ++trial) {
    if (trial % 20 == 0) {  // a fresh store now and then keeps each check quick; within a run, history accumulates
      dir = std::make_unique<TempDir>();
      acks.clear();
      deleted.clear();
    }
    const std::string store_dir = dir->Sub("store");
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    fcntl(fds[1], F_SETPIPE_SZ, 1 << 20);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(fds[0]);
      ChildMain(store_dir, fds[1], static_cast<uint64_t>(trial + 1) * 10'000'000, rng());
    }
    close(fds[1]);
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(2000, 120000)(rng)));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with status " << WEXITSTATUS(status);
    char buf[12];
    const size_t acks_before = acks.size();
    for (;;) {
      ssize_t n = read(fds[0], buf, sizeof(buf));
      if (n != sizeof(buf)) break;
      Ack a;
      std::memcpy(&a.kind, buf, 4);
      std::memcpy(&a.seq, buf + 4, 8);
      if (a.kind == Ack::kDeleteIssued)
        deleted.insert(a.seq);
      else
        acks.push_back(a);
    }
    close(fds[0]);

    tally.trials++;
    std::unique_ptr<Store> store;
    RecoveryReport rep;
    StoreOptions o = DiskOptions();
    o.background_thread = false;
    Status s = Store::Open(o, store_dir, &store, &rep);
    if (!s.ok()) {
      tally.failed_opens++;
      tally.problems.push_back("open failed: " + s.ToString());
      break;
    }
    CrashTally one;
    CheckAfterCrash(store.get(), acks, deleted, &one);
    tally.acknowledged += acks.size() - acks_before;  // each acknowledgement counted once (all are re-checked)
    tally.lost += one.lost;
    tally.duplicated += one.duplicated;
    tally.half_made += one.half_made;
    for (auto& p : one.problems) tally.problems.push_back("trial " + std::to_string(trial) + ": " + p);
    if (!tally.clean()) break;
  }
  std::cout << tally.Line("sigkill") << "\n";
  for (auto& p : tally.problems) std::cout << "  problem: " << p << "\n";
  EXPECT_TRUE(tally.clean());
  EXPECT_GT(tally.acknowledged, 0u);
}

}  // namespace
}  // namespace comfymq
