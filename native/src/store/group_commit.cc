#include "store/group_commit.h"

namespace comfymq {

void GroupCommitter::WaitLocked(PendingOp* op, std::unique_lock<std::mutex>& lock) {
  while (!op->done && !MayLeadLocked(op)) op->cv.wait(lock);
  if (!op->done) LeadLocked(op, lock);
}

Status GroupCommitter::Commit(PendingOp* op) {
  std::unique_lock<std::mutex> lock(mu_);
  queue_.push_back(op);
  WaitLocked(op, lock);
  return op->status;
}

void GroupCommitter::CommitMany(const std::vector<PendingOp*>& ops) {
  std::unique_lock<std::mutex> lock(mu_);
  for (PendingOp* op : ops) queue_.push_back(op);
  for (PendingOp* op : ops) WaitLocked(op, lock);
}

void GroupCommitter::LeadLocked(PendingOp* op, std::unique_lock<std::mutex>& lock) {
  // Leader: take this op and whatever queued behind it, up to a size bound (the first op always goes).
  std::vector<PendingOp*> group;
  size_t bytes = 0;
  while (!queue_.empty()) {
    PendingOp* p = queue_.front();
    if (!group.empty() && bytes + p->bytes_hint > max_group_bytes_) break;
    group.push_back(p);
    bytes += p->bytes_hint;
    queue_.pop_front();
  }
  leading_ = true;
  lock.unlock();
  bool released = false;  // guarded by mu_
  const std::function<void()> next_may_start = [&] {
    std::lock_guard<std::mutex> l(mu_);
    if (released) return;
    released = true;
    leading_ = false;
    if (!queue_.empty()) queue_.front()->cv.notify_one();
  };
  fn_(group, next_may_start);
  next_may_start();
  lock.lock();
  for (PendingOp* p : group) {
    p->done = true;
    if (p != op) p->cv.notify_one();
  }
}

}  // namespace comfymq
