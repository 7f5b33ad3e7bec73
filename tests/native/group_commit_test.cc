// GroupCommitter (store/group_commit.h) on its own, with group functions the tests control: every op is
// answered exactly once with what its group set, callers' ops keep their order, CommitMany's ops are answered
// together, and ops that queue while a group waits join it (late ops) until the next group may form.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "store/group_commit.h"

namespace comfymq {
namespace {

using namespace std::chrono_literals;

// A one-shot latch the test opens.
class Latch {
 public:
  void Open() {
    std::lock_guard<std::mutex> l(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return open_; });
  }
  // True once open; false if `d` passed first.
  bool WaitFor(std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, d, [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

// A group function like the store's: it applies under an ordering lock (the store's commit lock), takes the
// ops that queued meanwhile into its group (late ops) in two groups of three, and lets the next group start
// only after that; it answers its ops "(group g)" (odd g) or OK (even), and lets the next group start in one
// of four ways (at once after applying; never; after a pause; at once), after which late ops are refused.
class RecordingGroups {
 public:
  GroupCommitter::GroupFn Fn() {
    return [this](std::vector<PendingOp*>& group, const std::function<void()>& next_may_start,
                  const std::function<size_t()>& take_late) {
      // Every third leader is slow to take the ordering lock: a group formed but not yet begun.
      if (++calls_ % 3 == 0) std::this_thread::sleep_for(200us);
      std::unique_lock<std::mutex> ordering(ordering_mu_);
      const int g = ++groups_;
      auto run = [&](size_t from) {
        for (size_t i = from; i < group.size(); ++i) {
          PendingOp* op = group[i];
          op->status = op->apply();
          applied_++;
          if (g % 2 == 1) op->status = Status::IOError("(group " + std::to_string(g) + ")");
          Record(op, g);
        }
      };
      run(0);
      if (g % 3 != 0) {
        std::this_thread::yield();  // let callers queue behind this group
        const size_t before = group.size();
        const size_t n = take_late();
        EXPECT_EQ(group.size(), before + n);
        late_ += static_cast<int>(n);
        run(before);
      }
      ordering.unlock();
      if (g % 4 == 1 || g % 4 == 0) next_may_start();
      if (g % 4 == 3) {
        std::this_thread::yield();
        next_may_start();
      }
      if (g % 4 != 2) EXPECT_EQ(take_late(), 0u) << "late ops after the next group may form";
    };
  }
  // What the op's answer must be, given the group that ran it.
  static bool AnsweredByItsGroup(const Status& s, int g) {
    return g % 2 == 1 ? s.ToString().find("(group " + std::to_string(g) + ")") != std::string::npos : s.ok();
  }
  // The group that ran `op` (asked by its owner once it is answered; addresses are reused only after).
  int GroupOf(PendingOp* op) {
    std::lock_guard<std::mutex> l(mu_);
    return group_of_.at(op);
  }
  int groups() const { return groups_.load(); }
  int applied() const { return applied_.load(); }
  int late() const { return late_.load(); }

 private:
  void Record(PendingOp* op, int g) {
    std::lock_guard<std::mutex> l(mu_);
    group_of_[op] = g;
  }

  std::mutex ordering_mu_;
  std::atomic<int> calls_{0}, groups_{0}, applied_{0}, late_{0};
  std::mutex mu_;
  std::unordered_map<PendingOp*, int> group_of_;
};

TEST(GroupCommitTest, EveryOpIsAnsweredOnceWithItsGroupsStatusAndEachCallersOpsKeepTheirOrder) {
  constexpr int kThreads = 32, kPerThread = 300;
  RecordingGroups groups;
  GroupCommitter committer(groups.Fn());
  std::mutex seen_mu;
  std::vector<std::vector<int>> seen(kThreads);  // per caller: its op numbers in the order groups ran them
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        PendingOp op;
        int ran = 0;
        op.apply = [&, t, i] {
          ran++;
          std::lock_guard<std::mutex> l(seen_mu);
          seen[t].push_back(i);
          return Status::OK();
        };
        Status s = committer.Commit(&op);
        ASSERT_EQ(ran, 1);
        ASSERT_TRUE(RecordingGroups::AnsweredByItsGroup(s, groups.GroupOf(&op))) << s.ToString();
        (s.ok() ? ok : failed)++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(groups.applied(), kThreads * kPerThread);
  EXPECT_GT(groups.late(), 0) << "no op ever joined a group late";
  EXPECT_EQ(ok.load() + failed.load(), kThreads * kPerThread);
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(seen[t].size(), static_cast<size_t>(kPerThread));
    for (int i = 0; i < kPerThread; ++i) ASSERT_EQ(seen[t][i], i) << "caller " << t;
  }
  std::printf("[group commit] %d ops from %d callers in %d groups (%d of them late; %d answered ok, %d failed)\n",
              kThreads * kPerThread, kThreads, groups.groups(), groups.late(), ok.load(), failed.load());
}

TEST(GroupCommitTest, CommitManyBatchesSplitOverGroupsLedByOthersStayInOrder) {
  constexpr int kBatchThreads = 6, kSingleThreads = 6, kRounds = 150, kBatch = 5;
  RecordingGroups groups;
  GroupCommitter committer(groups.Fn(), /*max_group_bytes=*/100);  // 40-byte ops: at most two a group
  std::atomic<int> answered{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kBatchThreads + kSingleThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        const int n = t < kBatchThreads ? kBatch : 1;
        std::vector<PendingOp> ops(n);
        std::vector<PendingOp*> ptrs;
        std::mutex order_mu;
        std::vector<int> order;
        std::vector<int> ran(n, 0);
        for (int i = 0; i < n; ++i) {
          ops[i].bytes_hint = 40;
          ops[i].apply = [&, i] {
            ran[i]++;
            std::lock_guard<std::mutex> l(order_mu);
            order.push_back(i);
            return Status::OK();
          };
          ptrs.push_back(&ops[i]);
        }
        if (n == 1) {
          Status s = committer.Commit(ptrs[0]);
          ASSERT_TRUE(RecordingGroups::AnsweredByItsGroup(s, groups.GroupOf(ptrs[0])));
        } else {
          committer.CommitMany(ptrs);
        }
        for (int i = 0; i < n; ++i) {
          ASSERT_EQ(ran[i], 1);
          ASSERT_TRUE(RecordingGroups::AnsweredByItsGroup(ops[i].status, groups.GroupOf(&ops[i])));
          ASSERT_EQ(order[i], i) << "a batch's ops ran out of order";
          answered++;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(answered.load(), (kBatchThreads * kBatch + kSingleThreads) * kRounds);
  EXPECT_EQ(groups.applied(), answered.load());
}

TEST(GroupCommitTest, CommitManyAnswersEveryOpInQueueOrder) {
  std::vector<int> order;
  GroupCommitter committer(
      [&](std::vector<PendingOp*>& group, const std::function<void()>&, const std::function<size_t()>&) {
        for (PendingOp* op : group) op->status = op->apply();
      },
      /*max_group_bytes=*/100);  // 40-byte ops: at most two a group, so the batch spans several groups
  std::vector<PendingOp> ops(7);
  std::vector<PendingOp*> ptrs;
  for (int i = 0; i < 7; ++i) {
    ops[i].bytes_hint = 40;
    ops[i].apply = [&, i] {
      order.push_back(i);
      return i == 4 ? Status::InvalidArgument("four") : Status::OK();
    };
    ptrs.push_back(&ops[i]);
  }
  committer.CommitMany(ptrs);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 5, 6}));
  for (int i = 0; i < 7; ++i) EXPECT_EQ(ops[i].status.ok(), i != 4) << i;
}

// Group A's function waits inside until B and C (and D, a CommitMany of two) queued behind it, then takes
// late ops (with `limit` bytes a group) or first lets the next group start (then it takes nothing).
struct LateRun {
  std::vector<int> late_seen;  // ops each call took late, by call
  std::vector<size_t> sizes;   // each call's group size when its function returned
  int calls = 0;
};

void RunLate(bool release_first, size_t max_group_bytes, LateRun* out) {
  Latch inside, go;
  std::mutex mu;
  GroupCommitter committer(
      [&](std::vector<PendingOp*>& group, const std::function<void()>& next_may_start,
          const std::function<size_t()>& take_late) {
        int n;
        {
          std::lock_guard<std::mutex> l(mu);
          n = ++out->calls;
        }
        if (n == 1) {
          inside.Open();
          go.Wait();
          if (release_first) next_may_start();
        }
        const size_t late = take_late();
        for (PendingOp* op : group) op->status = Status::OK();
        std::lock_guard<std::mutex> l(mu);
        if (out->late_seen.size() < static_cast<size_t>(n)) {
          out->late_seen.resize(n);
          out->sizes.resize(n);
        }
        out->late_seen[n - 1] = static_cast<int>(late);  // by call: with release_first, A and B's group overlap
        out->sizes[n - 1] = group.size();
      },
      max_group_bytes);
  PendingOp a, b, c;
  std::vector<PendingOp> d(2);
  for (PendingOp* op : {&a, &b, &c, &d[0], &d[1]}) op->bytes_hint = 10;
  std::thread ta([&] { EXPECT_TRUE(committer.Commit(&a).ok()); });
  inside.Wait();
  std::thread tb([&] { EXPECT_TRUE(committer.Commit(&b).ok()); });
  while (committer.queued() < 1) std::this_thread::sleep_for(1ms);
  std::thread tc([&] { EXPECT_TRUE(committer.Commit(&c).ok()); });
  while (committer.queued() < 2) std::this_thread::sleep_for(1ms);
  std::thread td([&] {
    committer.CommitMany({&d[0], &d[1]});
    EXPECT_TRUE(d[0].status.ok() && d[1].status.ok());
  });
  while (committer.queued() < 4) std::this_thread::sleep_for(1ms);
  go.Open();
  for (std::thread* t : {&ta, &tb, &tc, &td}) t->join();
  EXPECT_EQ(committer.queued(), 0u);
}

TEST(GroupCommitTest, OpsQueuedWhileAGroupWaitsJoinItAsLateOpsAndAreAnsweredWithIt) {
  LateRun r;
  RunLate(/*release_first=*/false, /*max_group_bytes=*/1000, &r);
  ASSERT_EQ(r.calls, 1);  // b, c and both of d rode with a: no second group
  EXPECT_EQ(r.late_seen, (std::vector<int>{4}));
  EXPECT_EQ(r.sizes, (std::vector<size_t>{5}));
}

TEST(GroupCommitTest, LateOpsKeepToTheSizeBoundAndLeaveTheRestInOrderForTheNextGroup) {
  LateRun r;
  RunLate(/*release_first=*/false, /*max_group_bytes=*/25, &r);  // 10-byte ops: two a group
  ASSERT_GE(r.calls, 3);
  EXPECT_EQ(r.sizes[0], 2u);  // a and b (late); c, d[0], d[1] wait for the groups after
  EXPECT_EQ(r.late_seen[0], 1);
  size_t total = 0;
  for (size_t n : r.sizes) total += n;
  EXPECT_EQ(total, 5u);
}

TEST(GroupCommitTest, AGroupTakesNoLateOpsOnceTheNextGroupMayForm) {
  LateRun r;
  RunLate(/*release_first=*/true, /*max_group_bytes=*/1000, &r);
  ASSERT_GE(r.calls, 2);
  EXPECT_EQ(r.late_seen[0], 0);
  EXPECT_EQ(r.sizes[0], 1u);
}

}  // namespace
}  // namespace comfymq
