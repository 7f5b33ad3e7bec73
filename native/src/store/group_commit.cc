#include "store/group_commit.h"

namespace comfymq {

void GroupCommitter::WaitLocked(CommitWaiter* w, PendingOp* const* ops, size_t n, std::unique_lock<std::mutex>& lock) {
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
  auto take = [&] {
    while (!queue_.empty()) {
      PendingOp* p = queue_.front();
      if (!group.empty() && bytes + p->bytes_hint > max_group_bytes_) break;
      group.push_back(p);
      bytes += p->bytes_hint;
      queue_.pop_front();
    }
  };
  take();
  leading_ = true;
  bool released = false;  // only this thread changes it: next_may_start runs on it, inside fn_
  lock.unlock();
  const std::function<void()> next_may_start = [&] {
    if (released) return;
    std::lock_guard<std::mutex> l(mu_);
    ReleaseLocked();
    released = true;
  };
  const std::function<size_t()> take_late = [&] {
    if (released) return size_t{0};  // the next group may form: what queued is its
    std::lock_guard<std::mutex> l(mu_);
    const size_t before = group.size();
    take();
    return group.size() - before;
  };
  fn_(group, next_may_start, take_late);
  if (!released) {
    lock.lock();
    ReleaseLocked();
    lock.unlock();
  }
  for (PendingOp* p : group) Finish(p);  // the leader's own ops too: its wait ends when all of them are done
}

void GroupCommitter::ReleaseLocked() {
  leading_ = false;
  if (queue_.empty()) return;
  CommitWaiter* w = queue_.front()->waiter;  // queued, so its owner is waiting and it is alive
  std::lock_guard<std::mutex> own(w->m);
  w->wake = true;
  w->cv.notify_one();
}

}  // namespace comfymq
