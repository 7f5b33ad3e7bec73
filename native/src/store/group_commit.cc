#include "store/group_commit.h"

namespace comfymq {

Status GroupCommitter::Commit(PendingOp* op) {
  std::unique_lock<std::mutex> lock(mu_);
  queue_.push_back(op);
  while (!op->done && op != queue_.front()) op->cv.wait(lock);
  if (!op->done) LeadLocked(op, lock);
  return op->status;
}

void GroupCommitter::CommitMany(const std::vector<PendingOp*>& ops) {
  std::unique_lock<std::mutex> lock(mu_);
  for (PendingOp* op : ops) queue_.push_back(op);
  for (PendingOp* op : ops) {
    while (!op->done && op != queue_.front()) op->cv.wait(lock);
    if (!op->done) LeadLocked(op, lock);
  }
}

void GroupCommitter::LeadLocked(PendingOp* op, std::unique_lock<std::mutex>& lock) {
  // Leader: take this op and whatever queued behind it, up to a size bound (the first op always goes).
  std::vector<PendingOp*> group;
  size_t bytes = 0;
  for (PendingOp* p : queue_) {
    if (!group.empty() && bytes + p->bytes_hint > max_group_bytes_) break;
    group.push_back(p);
    bytes += p->bytes_hint;
  }
  lock.unlock();
  fn_(group);
  lock.lock();
  for (size_t i = 0; i < group.size(); ++i) {
    PendingOp* p = queue_.front();
    queue_.pop_front();
    p->done = true;
    if (p != op) p->cv.notify_one();
  }
  if (!queue_.empty()) queue_.front()->cv.notify_one();
}

}  // namespace comfymq
