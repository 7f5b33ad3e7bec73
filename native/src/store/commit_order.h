// CommitOrder: the order of overlapping commit groups. A group is applied in memory while the group before
// it is still being written and synced, so that group's CPU work overlaps the disk's; its own records are
// written and synced only after the group before is durable (at most one group is ever unsynced in the
// log, so a power cut can only tear the last group). The rules it keeps:
//   - turns: groups write, sync and answer in the order they began (Begin); a group's turn comes when
//     every group before it has ended its turn;
//   - undo newest first: when a group's write or sync fails, every group applied after it fails too, and
//     the groups undo their in-memory changes from the newest down (WaitTop before undoing);
//   - a broken pipeline drains before the next group begins; the first group to begin after that is told
//     to reset its view of the log tail (what the failed groups had planned was never written).
// Thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

#include "comfymq/status.h"

namespace comfymq {

class CommitOrder {
 public:
  // Starts a group (the caller holds the store's commit lock). Waits while a broken pipeline drains;
  // *reset_tail is set when this group is the first after one drained.
  uint64_t Begin(bool* reset_tail);
  // Blocks until every group before `seq` has ended its turn. Returns OK, or the failure that broke the
  // pipeline (this group must not write: it undoes itself and fails with that status).
  Status WaitTurn(uint64_t seq);
  void EndTurn(uint64_t seq);
  // This group's write or sync failed: later groups fail with `cause` (an origin's own failure).
  void Break(const Status& cause);
  // Blocks until no group after `seq` still has changes to undo.
  void WaitTop(uint64_t seq);
  // The group has nothing (more) to undo.
  void Resolve(uint64_t seq);
  // Blocks until every group that began has ended its turn and resolved (the caller holds the commit lock,
  // so none begins meanwhile).
  void WaitIdle();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t begun_ = 0;          // the last seq handed out
  uint64_t turns_done_ = 0;     // every seq up to this has ended its turn
  std::vector<uint64_t> live_;  // begun and not yet resolved, ascending
  bool broken_ = false;
  Status cause_;
};

}  // namespace comfymq
