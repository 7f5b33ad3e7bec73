// TakeMemo: what the store has learnt, per take class (TakeOptions::take_class), about which ready pending jobs
// that class could ever run (TakeOptions::could_run, which depends only on the class and the job).
//
// The invariant, per class: every job ready now whose ArrivalLog sequence is at most `through` and that is not
// among `runnable` cannot be run by the class. A job stamped up to `through` keeps its verdict for as long as it
// stays ready, and one that leaves and comes back (lease expired, worker gone, failed and retried, a take undone with
// its group) is stamped anew, past `through`; so nothing ever has to invalidate the memo. A take looks only at
// what arrived after `through`, then chooses among `runnable`: with a backlog the class cannot run, its cost is
// what arrived since the class last took, not the backlog. Owner limits, pause and the caller's own filter are
// applied at each take, never remembered.
//
// Soft state in memory, guarded by the store's state lock; bounded (kMaxClasses, kMaxRunnable).
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace comfymq {

struct ClassMemo {
  uint64_t through = 0;            // an ArrivalLog sequence
  std::vector<uint64_t> runnable;  // jobs could_run accepted, sorted by id; some may no longer be ready
  // The class could run more than kMaxRunnable ready jobs: they are not listed, its takes walk the dispatch order
  // (runnable jobs are many, so the walk is short). Cleared, and learnt anew, once such a walk finds nothing.
  bool dense = false;
  uint64_t used = 0;  // when a take last used it (TakeMemo's clock)
};

class TakeMemo {
 public:
  static constexpr size_t kMaxClasses = 4096;
  static constexpr size_t kMaxRunnable = 65536;

  // The memo of `take_class`, made empty if new; past kMaxClasses the least recently used one is dropped first.
  ClassMemo& For(uint64_t take_class) {
    auto it = classes_.find(take_class);
    if (it == classes_.end()) {
      if (classes_.size() >= kMaxClasses) {
        auto oldest = classes_.begin();
        for (auto c = classes_.begin(); c != classes_.end(); ++c) {
          if (c->second.used < oldest->second.used) oldest = c;
        }
        classes_.erase(oldest);
      }
      it = classes_.emplace(take_class, ClassMemo()).first;
    }
    it->second.used = ++clock_;
    return it->second;
  }
  size_t classes() const { return classes_.size(); }

 private:
  std::unordered_map<uint64_t, ClassMemo> classes_;
  uint64_t clock_ = 0;
};

}  // namespace comfymq
