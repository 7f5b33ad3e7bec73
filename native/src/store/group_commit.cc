#include "store/group_commit.h"

namespace comfymq {

void GroupCommitter::WaitLocked(PendingOp* op, std::unique_lock<std::mutex>& lock) {
  for (;;) {
    if (MayLeadLocked(op)) {
      LeadLocked(op, lock);
      return;
    }
    lock.unlock();
    {
      std::unique_lock<std::mutex> own(op->m);
      op->cv.wait(own, [&] { return op->done || op->wake; });
      if (op->done) return;
      op->wake = false;
    }
    lock.lock();
  }
}

void GroupCommitter::Finish(PendingOp* op) {
  std::lock_guard<std::mutex> own(op->m);
  op->done = true;
  op->cv.notify_one();  // under op->m: once it is released the owner may return and free op
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
  for (PendingOp* op : ops) {
    if (!lock.owns_lock()) lock.lock();
    WaitLocked(op, lock);
  }
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
  const uint64_t gen = ++formed_;
  lock.unlock();
  const std::function<void()> next_may_start = [&] {
    if (released_through_.load(std::memory_order_acquire) >= gen) return;  // done already: skip the busy lock
    std::lock_guard<std::mutex> l(mu_);
    ReleaseLocked(gen);
  };
  const bool release_following = fn_(group, next_may_start);
  lock.lock();
  ReleaseLocked(gen);
  if (release_following) ReleaseLocked(gen + 1);
  lock.unlock();
  for (PendingOp* p : group) {
    if (p != op) Finish(p);
  }
}

void GroupCommitter::ReleaseLocked(uint64_t gen) {
  if (!leading_ || formed_ != gen) return;
  leading_ = false;
  released_through_.store(gen, std::memory_order_release);
  if (queue_.empty()) return;
  PendingOp* front = queue_.front();  // queued, so its owner is waiting and it is alive
  std::lock_guard<std::mutex> own(front->m);
  front->wake = true;
  front->cv.notify_one();
}

}  // namespace comfymq
