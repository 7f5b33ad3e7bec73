#include "store/fair_queue.h"

#include <algorithm>
#include <cassert>

namespace comfymq {

void FairQueue::Add(uint64_t id, int32_t priority, uint16_t owner) {
  Level& level = levels_[priority];
  auto [it, arrived] = level.owners.try_emplace(owner);
  OwnerQueue& q = it->second;
  if (arrived) q.pass = level.now;
  if (q.ids.empty() || q.ids.back() < id) {
    q.ids.push_back(id);
  } else {
    q.ids.insert(std::lower_bound(q.ids.begin(), q.ids.end(), id), id);
  }
  level.size++;
  size_++;
}

void FairQueue::Remove(uint64_t id, int32_t priority, uint16_t owner) {
  auto l = levels_.find(priority);
  assert(l != levels_.end());
  Level& level = l->second;
  auto o = level.owners.find(owner);
  assert(o != level.owners.end());
  auto& ids = o->second.ids;
  if (!ids.empty() && ids.front() == id) {
    ids.pop_front();
  } else {
    auto it = std::lower_bound(ids.begin(), ids.end(), id);
    assert(it != ids.end() && *it == id);
    ids.erase(it);
  }
  level.size--;
  size_--;
  if (ids.empty()) level.owners.erase(o);
  if (level.owners.empty()) levels_.erase(l);
}

void FairQueue::Took(int32_t priority, uint16_t owner) {
  auto l = levels_.find(priority);
  if (l == levels_.end()) return;
  auto o = l->second.owners.find(owner);
  if (o == l->second.owners.end()) return;
  l->second.now = std::max(l->second.now, o->second.pass);
  o->second.pass += Stride(owner);
}

void FairQueue::SetWeight(uint16_t owner, uint32_t weight) {
  if (owner >= weights_.size()) weights_.resize(static_cast<size_t>(owner) + 1, 1);
  weights_[owner] = std::clamp<uint32_t>(weight, 1, kMaxWeight);
}

bool FairQueue::ForEachInLevel(const Level& level, const std::function<bool(uint16_t)>* eligible,
                               const std::function<bool(uint64_t)>& fn) const {
  struct Turn {
    uint64_t pass;
    uint64_t head;
    const std::deque<uint64_t>* ids;
    size_t next;
    uint64_t stride;
  };
  // std::*_heap keep the greatest first: "greater" here is the turn that comes later.
  auto later = [](const Turn& a, const Turn& b) { return a.pass != b.pass ? a.pass > b.pass : a.head > b.head; };
  std::vector<Turn> turns;
  turns.reserve(level.owners.size());
  for (const auto& [owner, q] : level.owners) {
    if (eligible != nullptr && !(*eligible)(owner)) continue;
    turns.push_back(Turn{q.pass, q.ids.front(), &q.ids, 0, Stride(owner)});
  }
  if (turns.size() == 1) {  // one owner: its queue as it is
    for (uint64_t id : *turns[0].ids) {
      if (!fn(id)) return false;
    }
    return true;
  }
  std::make_heap(turns.begin(), turns.end(), later);
  while (!turns.empty()) {
    std::pop_heap(turns.begin(), turns.end(), later);
    Turn& t = turns.back();
    if (!fn(t.head)) return false;
    if (++t.next == t.ids->size()) {
      turns.pop_back();
      continue;
    }
    t.pass += t.stride;
    t.head = (*t.ids)[t.next];
    std::push_heap(turns.begin(), turns.end(), later);
  }
  return true;
}

void FairQueue::ForEach(const std::function<bool(uint16_t)>* eligible, const std::function<bool(uint64_t)>& fn) const {
  for (const auto& [priority, level] : levels_) {
    if (!ForEachInLevel(level, eligible, fn)) return;
  }
}

bool FairQueue::Position(uint64_t id, int32_t priority, uint16_t owner, uint64_t* position) const {
  uint64_t before = 0;
  for (const auto& [p, level] : levels_) {  // (priorities high to low: few levels in practice)
    if (p != priority) {
      before += level.size;
      continue;
    }
    auto mine = level.owners.find(owner);
    if (mine == level.owners.end()) return false;
    const auto& ids = mine->second.ids;
    auto it = std::lower_bound(ids.begin(), ids.end(), id);
    if (it == ids.end() || *it != id) return false;
    const uint64_t index = static_cast<uint64_t>(it - ids.begin());
    before += index;
    // The job's turn comes at pass P; another owner's k-th job comes at pass_o + k * stride_o and goes first
    // when that is lower (or equal, with a lower id: the order ForEachInLevel breaks ties in).
    const uint64_t at = mine->second.pass + index * Stride(owner);
    for (const auto& [other, q] : level.owners) {
      if (other == owner || q.pass > at) continue;
      const uint64_t stride = Stride(other);
      const uint64_t gap = at - q.pass;
      uint64_t n = std::min<uint64_t>(q.ids.size(), (gap + stride - 1) / stride);             // turns strictly before P
      if (gap % stride == 0 && gap / stride < q.ids.size() && q.ids[gap / stride] < id) n++;  // a tie won
      before += n;
    }
    *position = before;
    return true;
  }
  return false;
}

bool FairQueue::Turn(uint64_t id, int32_t priority, uint16_t owner, uint64_t* turn) const {
  auto l = levels_.find(priority);
  if (l == levels_.end()) return false;
  auto mine = l->second.owners.find(owner);
  if (mine == l->second.owners.end()) return false;
  const auto& ids = mine->second.ids;
  auto it = std::lower_bound(ids.begin(), ids.end(), id);
  if (it == ids.end() || *it != id) return false;
  *turn = mine->second.pass + static_cast<uint64_t>(it - ids.begin()) * Stride(owner);
  return true;
}

uint64_t FairQueue::oldest() const {
  uint64_t best = 0;
  for (const auto& [p, level] : levels_) {
    for (const auto& [owner, q] : level.owners) {
      if (best == 0 || q.ids.front() < best) best = q.ids.front();
    }
  }
  return best;
}

}  // namespace comfymq
