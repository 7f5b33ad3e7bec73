// ArrivalLog: the ready pending jobs (those FairQueue holds) in the order they became ready, each stamped with a
// sequence number that only grows. A job that leaves the queue and comes back (a lost lease, a retry, a take undone
// with its group, a job it waits for succeeding) is stamped anew, so "the jobs that became ready after sequence S"
// is a walk from S whatever the backlog, and a conclusion drawn about the jobs stamped up to S stays true of them
// (TakeMemo relies on that).
// Not thread-safe: JobTable's owner (the store's state lock) guards it.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <unordered_map>
#include <utility>

namespace comfymq {

class ArrivalLog {
 public:
  void Add(uint64_t id);     // the job became ready: stamped with the next sequence
  void Remove(uint64_t id);  // the job must be there
  // The sequence of the latest Add (0: none yet); every job here holds one at most this.
  uint64_t last() const { return last_; }
  // The job's sequence, or 0 when it is not here (not a ready pending job).
  uint64_t SeqOf(uint64_t id) const {
    auto it = seq_of_.find(id);
    return it == seq_of_.end() ? 0 : it->second;
  }
  // The jobs here now stamped after `after`, in sequence order; fn(seq, id) returns false to stop.
  void ForEachAfter(uint64_t after, const std::function<bool(uint64_t seq, uint64_t id)>& fn) const;
  uint64_t size() const { return seq_of_.size(); }

 private:
  uint64_t last_ = 0;
  std::unordered_map<uint64_t, uint64_t> seq_of_;    // job -> its sequence
  std::deque<std::pair<uint64_t, uint64_t>> order_;  // (sequence, job) by sequence; stale once the job left
};

}  // namespace comfymq
