#include "store/group_commit.h"

namespace comfymq {

void GroupCommitter::WaitLocked(CommitWaiter* w, PendingOp* const* ops, size_t n,
                                std::unique_lock<std::mutex>& lock) {
  auto all_done = [&] {
    for (size_t i = 0; i < n; ++i) {
      if (!ops[i]->done) return false;
    }
    return true;
  };
  for (;;) {
    if (!leading_ && !queue_.empty() && queue_.front()->waiter == w) {
      LeadLocked(lock);  // one of ours is at the front: lead its group
    } else {
      lock.unlock();
    }
    {
      std::unique_lock<std::mutex> own(w->m);
      w->cv.wait(own, [&] { return w->wake || all_done(); });
      if (all_done()) return;
      w->wake = false;
    }
    lock.lock();
  }
}

void GroupCommitter::Finish(PendingOp* op) {
  CommitWaiter* w = op->waiter;
  std::lock_guard<std::mutex> own(w->m);
  op->done = true;
  w->cv.notify_one();  // under w->m: once it is released the owner may return and free op and w
}

Status GroupCommitter::Commit(PendingOp* op) {
  CommitWaiter w;
  op->waiter = &w;
  op->done = false;
  std::unique_lock<std::mutex> lock(mu_);
  queue_.push_back(op);
  WaitLocked(&w, &op, 1, lock);
  return op->status;
}

void GroupCommitter::CommitMany(const std::vector<PendingOp*>& ops) {
  if (ops.empty()) return;
  CommitWaiter w;
  for (PendingOp* op : ops) {
    op->waiter = &w;
    op->done = false;
  }
  std::unique_lock<std::mutex> lock(mu_);
  for (PendingOp* op : ops) queue_.push_back(op);
  WaitLocked(&w, ops.data(), ops.size(), lock);
}

size_t GroupCommitter::queued() {
  std::lock_guard<std::mutex> l(mu_);
  return queue_.size();
}

void GroupCommitter::LeadLocked(std::unique_lock<std::mutex>& lock) {
  // Leader: take the front op and whatever queued behind it, up to a size bound (the first op always goes).
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
  for (PendingOp* p : group) Finish(p);  // the leader's own ops too: its wait ends when all of them are done
}

void GroupCommitter::ReleaseLocked(uint64_t gen) {
  if (!leading_ || formed_ != gen) return;
  leading_ = false;
  released_through_.store(gen, std::memory_order_release);
  if (queue_.empty()) return;
  CommitWaiter* w = queue_.front()->waiter;  // queued, so its owner is waiting and it is alive
  std::lock_guard<std::mutex> own(w->m);
  w->wake = true;
  w->cv.notify_one();
}

}  // namespace comfymq
