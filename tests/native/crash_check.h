// What the crash tests check after reopening a store that was cut off mid-workload: every acknowledged
// job is present exactly once with its exact prompt, every acknowledged completion / cancel is still
// recorded, and nothing unacknowledged appears half-made. Shared by the power-loss and SIGKILL tests.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "comfymq/store.h"

namespace comfymq::testing {

// One acknowledged fact: the call that made it returned OK.
struct Ack {
  enum Kind : uint32_t { kEnqueued = 1, kCompleted = 2, kCancelled = 3, kDeleteIssued = 4 } kind;
  uint64_t seq;  // the job's sequence number (its prompt encodes it)
};

struct CrashTally {
  uint64_t trials = 0;
  uint64_t acknowledged = 0;
  uint64_t lost = 0;        // acknowledged but missing or reverted
  uint64_t duplicated = 0;  // one seq stored more than once
  uint64_t half_made = 0;   // a job whose prompt or outputs are not exactly what was written
  uint64_t failed_opens = 0;
  std::vector<std::string> problems;  // the first few, for the failure message
  std::string Line(const char* name) const;
  bool clean() const { return lost == 0 && duplicated == 0 && half_made == 0 && failed_opens == 0; }
};

// Checks the reopened store against the acknowledgements. `deleted` are seqs a delete was issued for
// (acknowledged or not), which may legitimately be gone.
void CheckAfterCrash(Store* store, const std::vector<Ack>& acks, const std::set<uint64_t>& deleted, CrashTally* tally);

}  // namespace comfymq::testing
