// GroupCommitter (store/group_commit.h) on its own, with group functions the tests control: every op is
// answered exactly once with what its group set, callers' ops keep their order, CommitMany's ops are answered
// together, and a group that returns true lets the group after the next one form before that next group's
// own leader says so (and only then).
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

// A group function like the store's: it applies under an ordering lock (the store's commit lock), and lets
// the next group start only after that; it answers its ops "(group g)" (odd g) or OK (even), and lets the
// next group start in one of four ways (at once after applying; never; after a pause; at once), returning
// true (let the group after the next one form) when the next group has taken the lock, as the store does;
// without that condition a batch split over two groups runs out of order (checked).
class RecordingGroups {
 public:
  GroupCommitter::GroupFn Fn() {
    return [this](std::vector<PendingOp*>& group, const std::function<void()>& next_may_start) {
      // Every third leader is slow to take the ordering lock: a group formed but not yet begun, the window
      // in which letting the group after it form could reorder them.
      if (++calls_ % 3 == 0) std::this_thread::sleep_for(200us);
      std::unique_lock<std::mutex> ordering(ordering_mu_);
      const int g = ++groups_;
      for (PendingOp* op : group) {
        op->status = op->apply();
        applied_++;
        if (g % 2 == 1) op->status = Status::IOError("(group " + std::to_string(g) + ")");
        Record(op, g);
      }
      ordering.unlock();
      if (g % 4 == 1 || g % 4 == 0) next_may_start();
      if (g % 4 == 3) {
        std::this_thread::yield();
        next_may_start();
      }
      return g % 4 != 1 && groups_.load() > g;
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

 private:
  void Record(PendingOp* op, int g) {
    std::lock_guard<std::mutex> l(mu_);
    group_of_[op] = g;
  }

  std::mutex ordering_mu_;
  std::atomic<int> calls_{0}, groups_{0}, applied_{0};
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
  EXPECT_EQ(ok.load() + failed.load(), kThreads * kPerThread);
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(seen[t].size(), static_cast<size_t>(kPerThread));
    for (int i = 0; i < kPerThread; ++i) ASSERT_EQ(seen[t][i], i) << "caller " << t;
  }
  std::printf("[group commit] %d ops from %d callers in %d groups (%d answered ok, %d failed)\n",
              kThreads * kPerThread, kThreads, groups.groups(), ok.load(), failed.load());
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
      [&](std::vector<PendingOp*>& group, const std::function<void()>&) {
        for (PendingOp* op : group) op->status = op->apply();
        return false;
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

// Three groups A, B, C from three callers. A lets B form at once; B never says the next may start and waits
// inside its function. Returning true, A lets C form while B is still in its function; returning false, C
// forms only once B returns.
void RunThreeGroups(bool a_returns, bool* c_ran_while_b_inside) {
  Latch a_may_return, b_inside, b_may_return, c_ran;
  std::atomic<int> calls{0};
  std::atomic<bool> b_returned{false};
  GroupCommitter committer([&](std::vector<PendingOp*>& group, const std::function<void()>& next_may_start) {
    const int n = ++calls;
    for (PendingOp* op : group) op->status = Status::OK();
    if (n == 1) {  // A
      next_may_start();
      a_may_return.Wait();
      return a_returns;
    }
    if (n == 2) {  // B
      b_inside.Open();
      b_may_return.Wait();
      b_returned = true;
      return false;
    }
    c_ran.Open();  // C
    return false;
  });
  PendingOp a, b, c;
  std::thread ta([&] { EXPECT_TRUE(committer.Commit(&a).ok()); });
  // B queues once A is inside its function (A's own caller leads it at once), and leads after next_may_start.
  while (calls.load() < 1) std::this_thread::sleep_for(1ms);
  std::thread tb([&] { EXPECT_TRUE(committer.Commit(&b).ok()); });
  b_inside.Wait();
  std::thread tc([&] { EXPECT_TRUE(committer.Commit(&c).ok()); });
  while (committer.queued() < 1) std::this_thread::sleep_for(1ms);
  // C is queued behind B (which leads and has not let the next start): it must not run yet.
  EXPECT_FALSE(c_ran.WaitFor(100ms));
  a_may_return.Open();
  ta.join();
  *c_ran_while_b_inside = c_ran.WaitFor(a_returns ? 30000ms : 200ms) && !b_returned.load();
  b_may_return.Open();
  tb.join();
  c_ran.Wait();
  tc.join();
}

TEST(GroupCommitTest, AGroupReturningTrueLetsTheGroupAfterTheNextOneForm) {
  bool c_ran_while_b_inside = false;
  RunThreeGroups(/*a_returns=*/true, &c_ran_while_b_inside);
  EXPECT_TRUE(c_ran_while_b_inside);
}

TEST(GroupCommitTest, AGroupReturningFalseLeavesThatToTheNextGroup) {
  bool c_ran_while_b_inside = true;
  RunThreeGroups(/*a_returns=*/false, &c_ran_while_b_inside);
  EXPECT_FALSE(c_ran_while_b_inside);
}

}  // namespace
}  // namespace comfymq
