// GroupCommitter: callers queue their operations; the caller at the front of the queue becomes the leader,
// takes every operation queued so far as one group, and runs the group function once for all of them (one
// log write and one sync), while later callers queue up for the next group (leveldb's writer queue).
//
// Groups may overlap: the group function calls `next_may_start` once the next group can begin (the store
// calls it when its group is written and only its sync is left), and the next leader then forms its group
// from what has queued meanwhile. Every op of a group stays blocked until the group function returns.
// A group function that returns true says the group formed after its own has passed its ordering point (in
// the store: it has begun, under the commit lock) and has its turn now, so the one after that may form too:
// it is let start as this leader answers, instead of when that group's own leader (asleep until then, and
// slow to run on a busy machine) gets to say so; that group's own call is then a no-op. The rule that keeps
// groups in order: a function lets the next group start (next_may_start, or returning true for the one after
// next) only once nothing a later group does can come before what its own group (or that next group) did.
//
// Callers sleep on a waiter of their own (one per call, shared by a CommitMany's ops), never on the queue's
// mutex: 64 callers re-taking one lock after every wake-up convoyed on it and held the disk idle.
// Thread-safe. Group functions start in queue order.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <vector>

#include "comfymq/status.h"

namespace comfymq {

// What a calling thread sleeps on while its ops wait: `wake` (re-check whether to lead) and each op's `done`
// are set under `m`. Lives on the caller's stack for the call.
struct CommitWaiter {
  std::mutex m;
  std::condition_variable cv;
  bool wake = false;
};

struct PendingOp {
  std::function<Status()> apply;  // run by the leader with the store's state locked; owns its result
  Status status;                  // set by the group function
  size_t bytes_hint = 0;          // rough size of its records as written (compressed), to bound groups
  std::function<void()> on_applied;  // optional: run by the leader once the op is applied, before the write
  CommitWaiter* waiter = nullptr;    // set by Commit / CommitMany
  bool done = false;                 // guarded by waiter->m
};

class GroupCommitter {
 public:
  // next_may_start: callable once (later calls do nothing, as do calls once a group before has let the next
  // one start); if the function never calls it, the next group starts when the function returns.
  // Returns: true when the group formed after this one may let its own next group start now (above).
  using GroupFn = std::function<bool(std::vector<PendingOp*>& group, const std::function<void()>& next_may_start)>;
  explicit GroupCommitter(GroupFn fn, size_t max_group_bytes = 64u << 20)
      : fn_(std::move(fn)), max_group_bytes_(max_group_bytes) {}

  // Blocks until op's group has been processed; returns op->status.
  Status Commit(PendingOp* op);
  // Queues all ops at once (so they normally share one group) and blocks until every one is processed.
  void CommitMany(const std::vector<PendingOp*>& ops);
  // Ops queued and not yet in a group (for tests).
  size_t queued();

 private:
  // With mu_ held (returns with it unlocked): until every one of `ops` (all with waiter `w`) is done, leads
  // a group whenever one of them is at the front and the next group may form.
  void WaitLocked(CommitWaiter* w, PendingOp* const* ops, size_t n, std::unique_lock<std::mutex>& lock);
  // With mu_ held and the queue not empty: processes one group starting at its front (unlocks mu_ meanwhile
  // and returns with it unlocked).
  void LeadLocked(std::unique_lock<std::mutex>& lock);
  // With mu_ held: if group `gen` is still the one leading, the next group may form.
  void ReleaseLocked(uint64_t gen);
  // Marks op done (its owner may then return and free it and its waiter: neither is touched after).
  static void Finish(PendingOp* op);

  GroupFn fn_;
  size_t max_group_bytes_;
  std::mutex mu_;
  std::deque<PendingOp*> queue_;  // ops not yet in a group, in arrival order
  bool leading_ = false;          // group formed_ has started and has not yet let the next one start
  uint64_t formed_ = 0;           // groups formed so far (the newest one's number)
  std::atomic<uint64_t> released_through_{0};  // groups up to this one have let the next start (set under mu_)
};

}  // namespace comfymq
