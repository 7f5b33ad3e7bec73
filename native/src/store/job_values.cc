// Names and text forms of job values (job.h).

#include "comfymq/job.h"

namespace comfymq {

const char* JobStateName(JobState s) {
  switch (s) {
    case JobState::kPending: return "pending";
    case JobState::kRunning: return "running";
    case JobState::kSucceeded: return "succeeded";
    case JobState::kFailed: return "failed";
    case JobState::kCancelled: return "cancelled";
  }
  return "unknown";
}

bool ParseJobState(std::string_view name, JobState* out) {
  for (int i = 0; i < kNumJobStates; ++i) {
    if (name == JobStateName(static_cast<JobState>(i))) {
      *out = static_cast<JobState>(i);
      return true;
    }
  }
  return false;
}

std::string FormatJobId(uint64_t id) {  // "%016llx", without printf's machinery: one goes out per event
  static const char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, id >>= 4) out[static_cast<size_t>(i)] = kHex[id & 15];
  return out;
}

bool ParseJobId(std::string_view text, uint64_t* id) {
  if (text.size() != 16) return false;
  uint64_t v = 0;
  for (char c : text) {
    int d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else
      return false;
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  if (v == 0) return false;
  *id = v;
  return true;
}

}  // namespace comfymq
