#include "store/arrival_log.h"

#include <algorithm>
#include <cassert>

namespace comfymq {

void ArrivalLog::Add(uint64_t id) {
  const uint64_t seq = ++last_;
  seq_of_[id] = seq;
  order_.emplace_back(seq, id);
}

void ArrivalLog::Remove(uint64_t id) {
  auto it = seq_of_.find(id);
  assert(it != seq_of_.end());
  const uint64_t seq = it->second;
  seq_of_.erase(it);
  if (!order_.empty() && order_.back().first == seq) {  // (an undo, or a take of what just arrived)
    order_.pop_back();
  }
  // Stale entries go from the front as they come first, and all at once when they outnumber the live ones, so the
  // order holds at most about twice the jobs here.
  while (!order_.empty()) {
    auto live = seq_of_.find(order_.front().second);
    if (live != seq_of_.end() && live->second == order_.front().first) break;
    order_.pop_front();
  }
  if (order_.size() > 2 * seq_of_.size() + 64) {
    std::deque<std::pair<uint64_t, uint64_t>> kept;
    for (const auto& e : order_) {
      if (SeqOf(e.second) == e.first) kept.push_back(e);
    }
    order_.swap(kept);
  }
}

void ArrivalLog::ForEachAfter(uint64_t after, const std::function<bool(uint64_t, uint64_t)>& fn) const {
  if (after >= last_) return;
  auto it = std::upper_bound(order_.begin(), order_.end(), after,
                             [](uint64_t v, const std::pair<uint64_t, uint64_t>& e) { return v < e.first; });
  for (; it != order_.end(); ++it) {
    if (SeqOf(it->second) != it->first) continue;  // stale: the job left (and may be further on, stamped anew)
    if (!fn(it->first, it->second)) return;
  }
}

}  // namespace comfymq
