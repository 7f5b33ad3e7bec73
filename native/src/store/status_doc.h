// StatusDoc: the owning form of a job's mutable status (what a kStatus record holds), and the JSON pieces
// it carries: errors, artifacts and the history of runs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "comfymq/job.h"
#include "store/records.h"

namespace comfymq {

struct StatusDoc {
  JobState state = JobState::kPending;
  uint16_t attempts = 0;
  uint64_t token = 0;
  int64_t lease_expires_ms = 0;
  int64_t deadline_ms = 0;
  int64_t started_ms = 0;
  int64_t finished_ms = 0;
  int64_t updated_ms = 0;
  std::string worker_id, outputs, artifacts, error, history;

  static StatusDoc FromView(const records::StatusView& v);
  records::StatusView View(uint64_t id) const;
};

// Checks an error's fields (details must be JSON when given) and renders it as a JSON object.
Status ErrorToJson(const JobError& error, std::string* out);
// Checks artifacts (relative path, sha256 of 64 hex digits) and renders them as a JSON array.
Status ArtifactsToJson(const std::vector<Artifact>& artifacts, std::string* out);

struct RunOutcome {
  int attempt = 0;
  std::string worker_id;
  int64_t started_ms = 0;
  int64_t ended_ms = 0;
  const char* outcome = "";  // succeeded | failed | lease_lost | timeout | cancelled
  std::string error_json;    // optional
};
// Appends one entry to a history array (JSON text, may be empty), keeping at most max_entries (the newest).
std::string AppendHistory(const std::string& history, const RunOutcome& run, size_t max_entries);

}  // namespace comfymq
