// GroupCommitter: callers queue their operations; the caller at the front of the queue becomes the leader,
// takes every operation queued so far as one group, and runs the group function once for all of them (one
// log write and one sync), while later callers queue up for the next group (leveldb's writer queue).
//
// Groups may overlap: the group function calls `next_may_start` once the next group can begin (the store
// calls it when its group is placed in the log and only its write and sync are left), and the next leader then
// forms its group from what has queued meanwhile. Every op of a group stays blocked until the group function
// returns.
//
// Late ops: a group function may call `take_late` once the group before its own is done (in the store: its
// turn to write has come) and before it lets the next group start. The ops that queued since its group formed
// join it (appended to `group` in queue order, within the size bound) and are written with its sync; without
// that they would wait a whole further sync in the next group. Once the next group may form, take_late takes
// nothing (what queued is that group's), so each caller's ops still run in the order they queued.
//
// Callers sleep on a waiter of their own (one per call, shared by a CommitMany's ops), never on the queue's
// mutex: 64 callers re-taking one lock after every wake-up convoyed on it and held the disk idle.
// Thread-safe. Group functions start in queue order.
#pragma once

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
  std::function<Status()> apply;     // run by the leader with the store's state locked; owns its result
  Status status;                     // set by the group function
  size_t bytes_hint = 0;             // rough size of its records as written (compressed), to bound groups
  std::function<void()> on_applied;  // optional: run by the leader once the op is applied, before the write
  CommitWaiter* waiter = nullptr;    // set by Commit / CommitMany
  bool done = false;                 // guarded by waiter->m
};

class GroupCommitter {
 public:
  // next_may_start: callable once (later calls do nothing); if the function never calls it, the next group
  // starts when the function returns.
  // take_late: appends the ops queued since the group formed to `group` and returns how many (0 once
  // next_may_start was called); the function runs and answers them like the rest of its group.
  using GroupFn = std::function<void(std::vector<PendingOp*>& group, const std::function<void()>& next_may_start,
                                     const std::function<size_t()>& take_late)>;
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
  // With mu_ held and a group leading: the next group may form.
  void ReleaseLocked();
  // Marks op done (its owner may then return and free it and its waiter: neither is touched after).
  static void Finish(PendingOp* op);

  GroupFn fn_;
  size_t max_group_bytes_;
  std::mutex mu_;
  std::deque<PendingOp*> queue_;  // ops not yet in a group, in arrival order
  bool leading_ = false;          // the newest group has started and has not yet let the next one start
};

}  // namespace comfymq
