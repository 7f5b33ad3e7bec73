// WorkerClient: a worker's link to a broker. One thread owns a DEALER socket: it says HELLO (who it is, what
// its ComfyUI can run, what jobs it still holds), asks for work when it has free slots, sends heartbeats,
// reconnects with exponential backoff (1 s to 30 s) and says HELLO again after a broker restart, streams
// output files in checksummed chunks, and re-sends results that were in flight when the link broke (the
// broker records them once).
//
// The caller (Python) drives execution: NextJob, Progress, Complete / Fail, and learns of cancels and of
// what the broker made of each result through NextEvent. Thread safety: all methods are thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comfymq/env.h"
#include "comfymq/status.h"

namespace comfymq {

struct WorkerClientOptions {
  std::string broker = "tcp://127.0.0.1:5557";
  std::string worker_id;  // stable across restarts; required
  // Random per installation, kept beside its worker id (optional): two installations saying HELLO as one id
  // while both run are refused as a clash, where a restart of this one takes its old link's place.
  std::string install_id;
  std::string name;  // for display
  std::string plugin_version, comfyui_version;
  std::string info_json = "{}";          // host / GPU facts for display
  std::string capabilities_json = "{}";  // {"node_classes": [...], "combos": {"Class.input": [...]}}
  int capacity = 1;                      // jobs run at once
  int heartbeat_ms = 1000;               // until the broker's WELCOME says otherwise
  int liveness = 3;
  // CurveZMQ: the broker's public key pins it; this worker's key pair must be on the broker's allow list.
  std::string broker_public_key, public_key, secret_key;  // Z85; all empty = plain text
  bool allow_plaintext = false;                           // plain text to a non-loopback broker needs this
  int reconnect_min_ms = 1000, reconnect_max_ms = 30000;
  Env* env = nullptr;  // where output files are read from; nullptr = Env::Default()
};

struct JobAssignment {
  uint64_t job_id = 0;
  uint64_t token = 0;
  int attempt = 0;
  int64_t timeout_ms = 0;  // 0 = none
  std::string prompt_json, workflow_json, extra_json;
};

struct OutputFile {
  std::string path;  // on this machine
  std::string name;  // as stored on the host (one path component)
  std::string mime;
};

class WorkerClient {
 public:
  static Status Start(const WorkerClientOptions& options, std::unique_ptr<WorkerClient>* client);
  virtual ~WorkerClient() = default;  // stops (without BYE: held jobs stay leased for a restart)

  // The next job to run, waiting up to timeout_ms; false when none came.
  virtual bool NextJob(int timeout_ms, JobAssignment* job) = 0;
  // The next other event (JSON): {"type": "cancel", job_id, token, reason}, {"type": "ack", job_id, kind},
  // {"type": "nack", job_id, reason}, {"type": "connected"|"disconnected"|"refused"|"caps_request", ...}.
  virtual bool NextEvent(int timeout_ms, std::string* event_json) = 0;

  virtual Status Progress(uint64_t job_id, uint64_t token, const std::string& progress_json) = 0;
  // Queues the result: the files are streamed from disk, then the result is sent, and kept until the broker
  // answers (an "ack" or "nack" event). Frees the job's slot.
  virtual Status Complete(uint64_t job_id, uint64_t token, const std::string& outputs_json,
                          const std::vector<OutputFile>& files) = 0;
  virtual Status Fail(uint64_t job_id, uint64_t token, const std::string& error_json, bool retryable) = 0;
  // After a cancel: the job was stopped. Frees the job's slot.
  virtual Status ConfirmCancel(uint64_t job_id, uint64_t token) = 0;
  virtual Status UpdateCapabilities(const std::string& capabilities_json) = 0;
  // Fetches an input of a job this worker holds the lease of (the job's prompt names it: {"comfymq_input":
  // sha256}) from the host, in checksummed chunks a window at a time, into `dest`: written beside it, synced, its
  // sha256 checked, then renamed over it (dest's folder must exist); *size = its bytes. Waits up to timeout_ms.
  // A damaged chunk is asked for again; a file whose sha256 differs is fetched once more from its start.
  // InvalidArgument: refused by the host (not this worker's job, or no such input: the message says which);
  // IOError: the link was lost, the host stayed busy, the file could not be written, or the time ran out (worth
  // another try). Blocks only the caller; several fetches may run at once.
  // The inputs this worker keeps (sha256s, at most 4096: the most useful first): said to the broker now and after
  // every reconnect, so that jobs naming them are preferably given to this worker.
  virtual Status UpdateInputs(const std::vector<std::string>& sha256s) = 0;
  virtual Status FetchInput(uint64_t job_id, uint64_t token, const std::string& sha256, const std::string& dest,
                            int timeout_ms, uint64_t* size) = 0;
  // JSON: {"connected", "session", "refused", "running", "uploading", "reconnects"}.
  virtual std::string StateJson() = 0;
  // Says BYE (the broker may give held jobs to others) when `bye`, then stops. Idempotent.
  virtual Status Stop(bool bye) = 0;
};

}  // namespace comfymq
