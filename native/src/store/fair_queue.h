// FairQueue: the ready pending jobs in dispatch order, shared fairly between owners.
//
// Priority levels go high to low: a job of a higher priority is always offered before any of a lower one. Within
// a level each owner has its own queue, oldest job (lowest id) first, and owners take turns by weighted round
// robin (stride scheduling): each owner of a level has a "pass"; the next job offered is the head of the owner
// with the lowest pass (ties: the lower job id, so equal owners alternate in arrival order), and taking it adds
// kStride / weight to that owner's pass. Over a long run each backlogged owner of a level gets jobs in proportion
// to its weight, and an owner with one job waits behind at most one job of each other owner of its level.
//
// An owner that arrives at a level (or comes back after its queue ran dry) starts at the level's current pass:
// time away earns no credit. Passes are soft state: only Took() moves them and nothing undoes that (a take whose
// commit is rolled back skews the turns a little, never the set of jobs). Owners are small indexes (JobTable
// interns the names); weights are set per owner index, 1 by default.
// Not thread-safe: JobTable's owner (the store's state lock) guards it.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <vector>

namespace comfymq {

class FairQueue {
 public:
  static constexpr uint64_t kStride = uint64_t{1} << 20;
  static constexpr uint32_t kMaxWeight = 1000;

  void Add(uint64_t id, int32_t priority, uint16_t owner);
  void Remove(uint64_t id, int32_t priority, uint16_t owner);  // the job must be there
  // Charges the owner of a level for one job taken (call while the job is still queued).
  void Took(int32_t priority, uint16_t owner);
  // weight in 1..kMaxWeight (clamped); applies to later turns.
  void SetWeight(uint16_t owner, uint32_t weight);
  uint32_t Weight(uint16_t owner) const { return owner < weights_.size() ? weights_[owner] : 1; }

  // Every job in the order takes would get them (as if each were taken in turn), skipping the owners `eligible`
  // refuses (nullptr: none skipped); fn returns false to stop.
  void ForEach(const std::function<bool(uint16_t owner)>* eligible, const std::function<bool(uint64_t id)>& fn) const;
  // The job's place in that order (0 = next), with no owner skipped: O(owners of its level + levels above).
  bool Position(uint64_t id, int32_t priority, uint16_t owner, uint64_t* position) const;
  // The job's turn in its level: ForEach gives jobs by priority (higher first), then turn, then id, whichever
  // owners it skips (an owner's jobs come at its pass plus a stride each). O(log of its owner's queue).
  bool Turn(uint64_t id, int32_t priority, uint16_t owner, uint64_t* turn) const;

  uint64_t size() const { return size_; }
  size_t levels() const { return levels_.size(); }
  uint64_t oldest() const;  // the lowest id queued; 0 when empty

 private:
  struct OwnerQueue {
    std::deque<uint64_t> ids;  // sorted
    uint64_t pass = 0;
  };
  struct Level {
    std::map<uint16_t, OwnerQueue> owners;
    uint64_t now = 0;  // the pass of the last owner served: where arriving owners start
    uint64_t size = 0;
  };
  uint64_t Stride(uint16_t owner) const { return kStride / Weight(owner); }
  bool ForEachInLevel(const Level& level, const std::function<bool(uint16_t)>* eligible,
                      const std::function<bool(uint64_t)>& fn) const;

  std::map<int32_t, Level, std::greater<int32_t>> levels_;
  std::vector<uint32_t> weights_;
  uint64_t size_ = 0;
};

}  // namespace comfymq
