// Jobs: the values callers put into the store and get back out. Plain value types (thread-compatible).
// JSON-valued fields are carried as JSON text; the store validates them on entry.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "comfymq/status.h"

namespace comfymq {

// pending -> running -> succeeded | failed | cancelled;  pending -> cancelled;
// running -> pending (lease lost, attempts left);  failed | cancelled -> pending (retry).
enum class JobState : uint8_t { kPending = 0, kRunning = 1, kSucceeded = 2, kFailed = 3, kCancelled = 4 };
constexpr int kNumJobStates = 5;

const char* JobStateName(JobState s);  // "pending", "running", ...
bool ParseJobState(std::string_view name, JobState* out);
inline bool IsFinished(JobState s) { return s >= JobState::kSucceeded; }

// Job ids are 64-bit and time-ordered: (milliseconds since the epoch << 16) | sequence, unique per store and
// increasing in enqueue order. Their text form is 16 lowercase hex digits, so text order is id order.
std::string FormatJobId(uint64_t id);
bool ParseJobId(std::string_view text, uint64_t* id);
inline int64_t JobIdMillis(uint64_t id) { return static_cast<int64_t>(id >> 16); }

// What a caller enqueues.
struct NewJob {
  std::string prompt;          // required: API-format graph, JSON text: {node_id: {class_type, inputs}}
  std::string workflow;        // optional: UI-format graph, JSON object text; empty = none
  int32_t priority = 1;        // higher runs first; FIFO within a priority
  std::string prompt_id;       // optional: idempotency key; generated when empty
  int64_t create_time_ms = 0;  // optional: client's creation time; filled in with now when 0
  std::string batch_id;        // optional: groups jobs (sweeps, counts)
  int max_attempts = 3;        // 1..100: runs allowed before a lost lease / retryable failure fails the job
  int64_t timeout_ms = 0;      // optional: longest one run may take; 0 = no limit
  std::string owner;           // optional: client / user id
  // optional: jobs that must succeed before this one runs (ids of jobs the store has; at most kMaxAfter). The job
  // is pending and waits, never taken, until every one has succeeded; should one fail, be cancelled or deleted,
  // the store cancels this job in the same commit (and the jobs that wait for it, and so on).
  std::vector<uint64_t> after;
  // optional: labels a client keeps on the job (the Comfy API v2's `metadata`), a JSON object of at most
  // kMaxLabelsBytes; empty = none. Stored with the job, in its record.
  std::string labels;
  // optional: its endings go to the store's outbox (Store::PutDoc): a notify/ document is written with the job.
  bool notify = false;
};
constexpr size_t kMaxAfter = 64;
constexpr size_t kMaxLabelsBytes = 64u << 10;

// Applies seed 000's `metadata` object (JSON text) to a NewJob: only "prompt_id" (string) and
// "create_time" (non-negative number, milliseconds) are allowed; any other key is InvalidArgument naming it.
Status ApplyMetadataJson(std::string_view metadata_json, NewJob* job);

// How deeply a JSON value the store keeps or the protocol carries may nest: objects and arrays inside each
// other, counting the outermost as 1 (a prompt's graph is 1, a node 2, its inputs 3). Deeper text is refused
// on entry (prompts, workflows, outputs, errors, progress, capabilities) with a message naming the limit, so
// nothing stored can break a reader (Python's json module, the panel) that recurses.
constexpr int kMaxJsonDepth = 64;

// Checks that `prompt` is an API-format graph: a non-empty JSON object whose every value is an object
// with a string "class_type" and an object "inputs"; node ids and class_type hold no control characters,
// and nothing nests deeper than kMaxJsonDepth. The message names what is wrong and where.
Status ValidatePromptJson(std::string_view prompt);

struct Artifact {
  std::string path;  // relative to the artifact root
  uint64_t size = 0;
  std::string sha256;  // lowercase hex
  std::string mime;
};

struct JobError {
  std::string type;  // e.g. "execution_error", "validation_error", "lease_lost", "timeout"
  std::string message;
  std::string node_id;  // the failing node, when known
  std::string traceback;
  std::string details;  // optional JSON value with more (e.g. ComfyUI's node_errors)
};

// A job as read back. Text fields holding JSON are empty when absent.
struct Job {
  uint64_t id = 0;
  JobState state = JobState::kPending;
  int32_t priority = 1;
  int attempts = 0;
  int max_attempts = 0;
  int64_t timeout_ms = 0;
  std::string prompt_id;
  int64_t create_time_ms = 0;
  int64_t enqueued_ms = 0;
  int64_t updated_ms = 0;
  std::string batch_id;
  std::string owner;
  std::vector<uint64_t> after;  // the jobs it waits for (NewJob::after), ascending
  std::string labels;           // NewJob::labels (JSON object text), empty when none
  std::string prompt;           // filled only when asked for (Get with prompt, Take)
  std::string workflow;         // likewise
  // Mutable status.
  int64_t started_ms = 0;  // start of the current / last run
  int64_t finished_ms = 0;
  std::string worker_id;     // worker of the current / last run
  uint64_t lease_token = 0;  // fencing token of the current run (running only)
  int64_t lease_expires_ms = 0;
  std::string outputs;    // JSON object: node id -> outputs
  std::string artifacts;  // JSON array of {path, size, sha256, mime}
  std::string error;      // JSON object {type, message, node_id, traceback, details}
  std::string history;    // JSON array: one entry per ended run {attempt, worker, started, ended, outcome, error}
  std::string progress;   // JSON value: node-level progress while running (memory only)
};

// A running job handed to a worker. The token fences every later call about this run.
struct Lease {
  uint64_t job_id = 0;
  uint64_t token = 0;
  int attempt = 0;
  int64_t expires_ms = 0;   // the lease ends here unless heartbeats extend it
  int64_t deadline_ms = 0;  // the job's timeout for this run; 0 = none
  Job job;                  // with prompt and workflow
};

}  // namespace comfymq
