#include "store/job_table.h"

#include <algorithm>
#include <cassert>

namespace comfymq {

size_t JobTable::LowerBound(uint64_t id) const {
  auto it = std::lower_bound(jobs_.begin(), jobs_.end(), id, [](const JobMeta& m, uint64_t v) { return m.id < v; });
  return static_cast<size_t>(it - jobs_.begin());
}

const JobMeta* JobTable::Find(uint64_t id) const {
  size_t i = LowerBound(id);
  if (i < jobs_.size() && jobs_[i].id == id && !jobs_[i].erased) return &jobs_[i];
  return nullptr;
}

JobMeta* JobTable::FindSlot(uint64_t id) {
  size_t i = LowerBound(id);
  if (i < jobs_.size() && jobs_[i].id == id) return &jobs_[i];
  return nullptr;
}

void JobTable::AddLive(const log::RecordLoc& loc, int64_t sign) {
  if (!loc.valid()) return;
  uint64_t& v = segment_live_[loc.segment];
  if (sign > 0) {
    v += loc.size;
    total_live_ += loc.size;
  } else {
    v -= loc.size;
    total_live_ -= loc.size;
    if (v == 0) segment_live_.erase(loc.segment);
  }
}

void JobTable::Index(const JobMeta& m) {
  live_++;
  if (m.prompt_id_hash != 0) prompt_index_.Insert(m.prompt_id_hash, m.id);
  AddLive(m.job_loc, +1);
  IndexState(m);
}

void JobTable::Unindex(const JobMeta& m) {
  live_--;
  if (m.prompt_id_hash != 0) prompt_index_.Erase(m.prompt_id_hash, m.id);
  AddLive(m.job_loc, -1);
  UnindexState(m);
}

void JobTable::CountOwner(const JobMeta& m, int64_t sign) {
  std::vector<uint64_t>* counts = m.state == JobState::kPending   ? &owner_pending_
                                  : m.state == JobState::kRunning ? &owner_running_
                                                                  : nullptr;
  if (counts == nullptr) return;
  if (counts->size() <= m.owner) counts->resize(static_cast<size_t>(m.owner) + 1, 0);
  (*counts)[m.owner] += static_cast<uint64_t>(sign);
}

void JobTable::ForEachReadyDependent(const JobMeta& m, const std::function<void(const JobMeta&)>& fn) const {
  if (m.state != JobState::kSucceeded || dependents_.empty()) return;
  auto it = dependents_.find(m.id);
  if (it == dependents_.end()) return;
  for (uint64_t d : it->second) {
    const JobMeta* dm = Find(d);
    if (dm != nullptr && dm->state == JobState::kPending && Ready(d)) fn(*dm);
  }
}

// Called once the slot holds `m` (and before the slot changes again: UnindexState): a succeeded job makes the
// dependents it was the last wait of ready, and the index must see them go exactly as they came.
void JobTable::IndexState(const JobMeta& m) {
  counts_[static_cast<int>(m.state)]++;
  CountOwner(m, +1);
  AddLive(m.status_loc, +1);
  if (m.state == JobState::kPending && Ready(m.id)) AddReady(m);
  ForEachReadyDependent(m, [&](const JobMeta& d) { AddReady(d); });
}

void JobTable::UnindexState(const JobMeta& m) {
  counts_[static_cast<int>(m.state)]--;
  CountOwner(m, -1);
  AddLive(m.status_loc, -1);
  if (m.state == JobState::kPending && Ready(m.id)) RemoveReady(m);
  ForEachReadyDependent(m, [&](const JobMeta& d) { RemoveReady(d); });
}

void JobTable::AddReady(const JobMeta& m) {
  pending_.Add(m.id, m.priority, m.owner);
  arrivals_.Add(m.id);
}

void JobTable::RemoveReady(const JobMeta& m) {
  pending_.Remove(m.id, m.priority, m.owner);
  arrivals_.Remove(m.id);
}

void JobTable::SetWaits(uint64_t id, std::vector<uint64_t> after) {
  std::sort(after.begin(), after.end());
  after.erase(std::unique(after.begin(), after.end()), after.end());
  if (auto old = waits_.find(id); old != waits_.end()) {  // (only for a job never inserted: ids are not reused)
    for (uint64_t dep : old->second) {
      auto& ds = dependents_[dep];
      ds.erase(std::remove(ds.begin(), ds.end(), id), ds.end());
    }
    waits_.erase(old);
  }
  if (after.empty()) return;
  for (uint64_t dep : after) dependents_[dep].push_back(id);
  waits_[id] = std::move(after);
}

const std::vector<uint64_t>* JobTable::Waits(uint64_t id) const {
  auto it = waits_.find(id);
  return it == waits_.end() ? nullptr : &it->second;
}

void JobTable::ForEachDependent(uint64_t id, const std::function<bool(uint64_t)>& fn) const {
  auto it = dependents_.find(id);
  if (it == dependents_.end()) return;
  for (uint64_t d : it->second) {
    if (Find(d) != nullptr && !fn(d)) return;
  }
}

bool JobTable::Ready(uint64_t id) const {
  if (waits_.empty()) return true;
  auto it = waits_.find(id);
  if (it == waits_.end()) return true;
  for (uint64_t dep : it->second) {
    const JobMeta* m = Find(dep);
    if (m == nullptr || m->state != JobState::kSucceeded) return false;
  }
  return true;
}

void JobTable::Insert(const JobMeta& meta) {
  JobMeta m = meta;
  m.erased = false;
  if (jobs_.empty() || jobs_.back().id < m.id) {
    jobs_.push_back(m);
  } else {
    size_t i = LowerBound(m.id);
    if (i < jobs_.size() && jobs_[i].id == m.id) {
      assert(jobs_[i].erased);
      jobs_[i] = m;
      erased_--;
    } else {
      jobs_.insert(jobs_.begin() + static_cast<std::ptrdiff_t>(i), m);
    }
  }
  Index(m);
}

void JobTable::Replace(const JobMeta& meta) {
  JobMeta* slot = FindSlot(meta.id);
  assert(slot != nullptr && !slot->erased);
  if (slot->state == meta.state && slot->priority == meta.priority) {
    // The same state and priority (a record moved, a location resolved, a run's status): counts, the dispatch
    // order and the dependents' readiness stay as they are; only where its records lie changes. (What
    // Unindex + Index would do, without taking a job and every ready job waiting for it out and back in.)
    if (slot->prompt_id_hash != meta.prompt_id_hash) {
      if (slot->prompt_id_hash != 0) prompt_index_.Erase(slot->prompt_id_hash, slot->id);
      if (meta.prompt_id_hash != 0) prompt_index_.Insert(meta.prompt_id_hash, meta.id);
    }
    AddLive(slot->job_loc, -1);
    AddLive(slot->status_loc, -1);
    *slot = meta;
    slot->erased = false;
    AddLive(slot->job_loc, +1);
    AddLive(slot->status_loc, +1);
    return;
  }
  if (slot->prompt_id_hash == meta.prompt_id_hash && slot->job_loc == meta.job_loc) {
    // A state or status change (the common case): the prompt_id entry and the job record's bytes stay.
    UnindexState(*slot);
    *slot = meta;
    slot->erased = false;
    IndexState(*slot);
    return;
  }
  Unindex(*slot);
  *slot = meta;
  slot->erased = false;
  Index(*slot);
}

void JobTable::Erase(uint64_t id) {
  JobMeta* slot = FindSlot(id);
  assert(slot != nullptr && !slot->erased);
  Unindex(*slot);
  slot->erased = true;
  erased_++;
}

const RunInfo* JobTable::Run(uint64_t id) const {
  auto it = runs_.find(id);
  return it == runs_.end() ? nullptr : &it->second;
}

RunInfo* JobTable::MutableRun(uint64_t id) {
  auto it = runs_.find(id);
  return it == runs_.end() ? nullptr : &it->second;
}

void JobTable::SetRun(uint64_t id, std::optional<RunInfo> run) {
  if (run) {
    runs_[id] = std::move(*run);
  } else {
    runs_.erase(id);
  }
}

void JobTable::ForEachPending(const std::function<bool(uint64_t)>& fn, bool with_limits) const {
  if (!with_limits) return pending_.ForEach(nullptr, fn);
  const std::function<bool(uint16_t)> below = [this](uint16_t owner) { return !AtRunningLimit(owner); };
  pending_.ForEach(&below, fn);
}

bool JobTable::PendingPosition(uint64_t id, uint64_t* position) const {
  const JobMeta* m = Find(id);
  if (m == nullptr || m->state != JobState::kPending || !Ready(id)) return false;
  if (pending_.levels() > kMaxPositionLevels) return false;  // (so many priority levels: too long a walk to say)
  return pending_.Position(id, m->priority, m->owner, position);
}

bool JobTable::DispatchTurn(uint64_t id, int32_t* priority, uint64_t* turn) const {
  const JobMeta* m = Find(id);
  if (m == nullptr || arrivals_.SeqOf(id) == 0) return false;
  *priority = m->priority;
  return pending_.Turn(id, m->priority, m->owner, turn);
}

void JobTable::FindByPromptHash(uint64_t hash, std::vector<uint64_t>* ids) const {
  ids->clear();
  prompt_index_.ForEach(hash, [&](uint64_t id) { ids->push_back(id); });
}

void JobTable::Scan(uint64_t cursor, bool descending, uint64_t lo_id, uint64_t hi_id,
                    const std::function<bool(const JobMeta&)>& fn) const {
  if (jobs_.empty()) return;
  if (descending) {
    uint64_t upper = hi_id;  // exclusive
    if (cursor != 0 && (upper == 0 || cursor < upper)) upper = cursor;
    size_t i = upper == 0 ? jobs_.size() : LowerBound(upper);
    while (i > 0) {
      const JobMeta& m = jobs_[--i];
      if (m.id < lo_id) return;
      if (m.erased) continue;
      if (!fn(m)) return;
    }
  } else {
    uint64_t lower = lo_id;  // inclusive
    if (cursor != 0 && cursor + 1 > lower) lower = cursor + 1;
    for (size_t i = LowerBound(lower); i < jobs_.size(); ++i) {
      const JobMeta& m = jobs_[i];
      if (hi_id != 0 && m.id >= hi_id) return;
      if (m.erased) continue;
      if (!fn(m)) return;
    }
  }
}

void JobTable::ForEach(const std::function<void(const JobMeta&)>& fn) const {
  for (const JobMeta& m : jobs_) {
    if (!m.erased) fn(m);
  }
}

uint32_t JobTable::InternBatch(std::string_view name) {
  if (name.empty()) return 0;
  auto it = batch_index_.find(std::string(name));
  if (it != batch_index_.end()) return it->second;
  uint32_t index = static_cast<uint32_t>(batch_names_.size());
  batch_names_.emplace_back(name);
  batch_index_.emplace(std::string(name), index);
  return index;
}

void JobTable::DropLastBatch() {
  if (batch_names_.size() <= 1) return;  // index 0 ("") stays
  batch_index_.erase(batch_names_.back());
  batch_names_.pop_back();
}

bool JobTable::FindBatch(std::string_view name, uint32_t* index) const {
  auto it = batch_index_.find(std::string(name));
  if (it == batch_index_.end()) return false;
  *index = it->second;
  return true;
}

const std::string& JobTable::BatchName(uint32_t index) const {
  static const std::string kEmpty;
  return index < batch_names_.size() ? batch_names_[index] : kEmpty;
}

void JobTable::SetBatchNames(std::vector<std::string> names) {
  batch_names_ = std::move(names);
  if (batch_names_.empty()) batch_names_.emplace_back();
  batch_index_.clear();
  for (uint32_t i = 1; i < batch_names_.size(); ++i) batch_index_.emplace(batch_names_[i], i);
}

uint64_t JobTable::oldest_pending_id() const { return pending_.oldest(); }  // (of the ready ones)

uint16_t JobTable::InternOwner(std::string_view name) {
  if (name.empty()) return 0;
  auto it = owner_index_.find(std::string(name));
  if (it != owner_index_.end()) return it->second;
  if (owner_names_.size() > kMaxOwners) return static_cast<uint16_t>(kMaxOwners);  // the shared last index
  const auto index = static_cast<uint16_t>(owner_names_.size());
  owner_names_.emplace_back(name);
  owner_index_.emplace(std::string(name), index);
  ApplyPolicy(index);
  return index;
}

const std::string& JobTable::OwnerName(uint16_t index) const {
  static const std::string kEmpty;
  return index < owner_names_.size() ? owner_names_[index] : kEmpty;
}

void JobTable::SetOwnerNames(std::vector<std::string> names) {
  owner_names_ = std::move(names);
  if (owner_names_.empty()) owner_names_.emplace_back();
  owner_index_.clear();
  for (size_t i = 1; i < owner_names_.size(); ++i) owner_index_.emplace(owner_names_[i], static_cast<uint16_t>(i));
  for (size_t i = 0; i < owner_names_.size(); ++i) ApplyPolicy(static_cast<uint16_t>(i));
}

void JobTable::SetOwnerPolicies(const OwnerPolicy& fallback, const std::map<std::string, OwnerPolicy>& by_owner) {
  fallback_policy_ = fallback;
  policies_ = by_owner;
  for (size_t i = 0; i < owner_names_.size(); ++i) ApplyPolicy(static_cast<uint16_t>(i));
}

void JobTable::ApplyPolicy(uint16_t owner) {
  if (owner_policies_.size() <= owner) owner_policies_.resize(static_cast<size_t>(owner) + 1, fallback_policy_);
  auto it = policies_.find(OwnerName(owner));
  owner_policies_[owner] = it != policies_.end() ? it->second : fallback_policy_;
  pending_.SetWeight(owner, owner_policies_[owner].weight);
}

const OwnerPolicy& JobTable::PolicyOf(uint16_t owner) const {
  return owner < owner_policies_.size() ? owner_policies_[owner] : fallback_policy_;
}

bool JobTable::AtRunningLimit(uint16_t owner) const {
  const uint32_t limit = PolicyOf(owner).max_running;
  return limit != 0 && OwnerRunning(owner) >= limit;
}

uint64_t JobTable::SegmentLiveBytes(uint32_t segment) const {
  auto it = segment_live_.find(segment);
  return it == segment_live_.end() ? 0 : it->second;
}

void JobTable::CompactSlots() {
  if (erased_ == 0) return;
  std::deque<JobMeta> kept;
  for (const JobMeta& m : jobs_) {
    if (!m.erased) kept.push_back(m);
  }
  jobs_.swap(kept);
  erased_ = 0;
  if (waits_.empty()) return;
  // The waits of jobs gone go too, and the dependents index is made again from what is left.
  for (auto it = waits_.begin(); it != waits_.end();) {
    it = Find(it->first) == nullptr ? waits_.erase(it) : std::next(it);
  }
  dependents_.clear();
  for (const auto& [id, after] : waits_) {
    for (uint64_t dep : after) dependents_[dep].push_back(id);
  }
}

}  // namespace comfymq
