// Broker: the host's side of the cluster. It owns a ROUTER socket and one thread that polls it (with the
// heartbeat as timeout), admits workers (HELLO), dispatches jobs from the store to workers that can run them
// (credit-based: never more than a worker asked for), keeps leases alive while workers are, takes them back
// from workers that go silent, records results (streamed output files go through the atomic artifact writer),
// carries cancels to the worker running the job, and reports everything as events.
//
// The store must outlive the broker; the broker is its listener. Native threads never call into Python:
// events are JSON texts taken with NextEvent (blocking, for a caller to run with the GIL released).
// Thread safety: all methods are thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comfymq/env.h"
#include "comfymq/status.h"
#include "comfymq/store.h"

namespace comfymq {

struct BrokerOptions {
  std::string bind = "tcp://127.0.0.1:5557";
  int heartbeat_ms = 1000;  // both ways
  int liveness = 3;         // a peer silent for this many heartbeats is gone
  // CurveZMQ. With a secret key, only workers whose public keys are listed may connect.
  std::string curve_secret_key;                  // Z85; empty = plain text
  std::vector<std::string> allowed_worker_keys;  // Z85 public keys
  bool allow_plaintext = false;  // plain text on a non-loopback address needs this, and is logged loudly
  std::string artifact_root;     // output files land in <root>/<job id>/<file name>; required
  Env* artifact_env = nullptr;   // the file system the artifacts are written through; nullptr = Env::Default()
  int64_t lease_ms = 0;          // store lease per dispatch; 0 = heartbeat * liveness * 3
  // The longest one run may take when its job sets no timeout of its own (a worker that heartbeats but never
  // finishes would hold the job for ever): past it the run is cancelled on its worker and the job runs again,
  // on another worker where one can run it. 0 = no limit.
  int64_t default_run_timeout_ms = 2 * 3600 * 1000;
  // Under CURVE a worker id belongs to the first key that used it: a HELLO with that id and another key is
  // refused. The bindings are kept in this file (written atomically) so they outlast a restart; empty = in
  // memory only.
  std::string worker_keys_path;
  // The ids of drained workers, kept in this file (written atomically) so that a drain outlasts a restart of
  // the host: a drained worker that joins again takes no new job. Empty = in memory only.
  std::string drained_path;
  // The host's stored inputs, <inputs_dir>/<sha256[0:2]>/<sha256> (written by the host's input store): a worker
  // fetches one (FETCH) only while it holds the lease of a job whose prompt names it ({"comfymq_input": sha}).
  // Empty = this host serves no inputs (every FETCH is refused).
  std::string inputs_dir;
  // Workers connected at once: a HELLO with a new id past it is refused ("busy: ..."). Workers that left are
  // remembered (for the workers view) up to as many again, the oldest forgotten first.
  size_t max_workers = 4096;
  // One worker's capabilities (an /object_info digest, typically well under 1 MiB) at most, and the distinct ones
  // held at once (workers with the same text share one parsed copy; a worker that left holds none) at most, in
  // bytes of JSON text. Past either a HELLO or CAPS is refused.
  size_t max_capabilities_bytes = 4u << 20;
  size_t capabilities_budget_bytes = 64u << 20;
  size_t max_scan = 20000;     // pending jobs looked at per dispatch
  size_t max_events = 100000;  // queued events before the oldest are dropped (and an overflow event says so)
  std::string plugin_version;
};

struct BrokerCounters {
  uint64_t messages_in = 0, messages_out = 0;
  uint64_t malformed = 0;  // frames that failed to decode (dropped)
  uint64_t refused = 0;    // HELLOs refused (version, malformed, identity) and messages from unknown peers
  // Lease-bound messages (RESULT, FAIL, PROGRESS, CANCELLED, CHUNK) about a job the sending connection does not
  // hold: refused, logged with the sender, nothing changed.
  uint64_t foreign_lease_messages = 0;
  uint64_t unroutable = 0;  // sends the ROUTER could not deliver (peer gone) or queue (high-water mark)
  uint64_t dispatched = 0, results = 0, duplicates = 0, stale_results = 0;
  uint64_t dispatched_on_arrival = 0;  // of dispatched: leased in the enqueuer's own commit (one sync)
  uint64_t dispatched_early = 0;       // of dispatched: sent while their lease's commit was syncing
  uint64_t early_undone = 0;           // early-sent jobs whose lease's commit then failed (worker told)
  uint64_t workers_lost = 0, leases_released = 0;
  uint64_t chunks = 0, chunk_retries = 0, bytes_received = 0;
  // Inputs served: fetches started (FETCHes from offset 0), chunks and bytes sent, FETCHes refused.
  uint64_t input_fetches = 0, input_chunks = 0, input_bytes_sent = 0, input_refused = 0;
  uint64_t events_dropped = 0;
  uint64_t zap_denied = 0;
};

class Broker {
 public:
  // Binds and starts the broker thread. The store must stay open until the broker is stopped.
  static Status Start(Store* store, const BrokerOptions& options, std::unique_ptr<Broker>* broker);
  virtual ~Broker() = default;  // stops

  // The next event as JSON text, waiting up to timeout_ms; false when none came.
  virtual bool NextEvent(int timeout_ms, std::string* event_json) = 0;
  // The workers (connected, and recently gone), as a JSON array.
  virtual std::string WorkersJson() = 0;
  // Why no worker takes this pending job now: the jobs it waits for that have not succeeded ("waits for job X
  // (running) to succeed", and then only those), else none has joined, none is online, or one line per online
  // worker ("worker gpu-2: missing checkpoint x.safetensors", "worker gpu-3: draining ..."); empty when an online
  // worker that is not draining can run it (it waits its turn) or it is not pending.
  virtual Status Explain(uint64_t job_id, std::vector<std::string>* reasons) = 0;
  // The same for a prompt not queued yet (API format, JSON), workers only: InvalidArgument when it is not one.
  virtual Status ExplainPrompt(const std::string& prompt_json, std::vector<std::string>* reasons) = 0;
  // Stops (or resumes) giving jobs to a worker; it finishes what it runs.
  virtual Status Drain(const std::string& worker_id, bool drain) = 0;
  // Replaces the CURVE allow-list (Z85 public keys; the caller includes BrokerOptions::allowed_worker_keys if they
  // are to stay), effective at once: a key no longer listed cannot connect, and a worker connected with it is
  // refused and dropped (its jobs go back to the queue, no attempt counted). InvalidArgument (nothing changes) for a
  // key that is not one, or when the broker runs without CURVE.
  virtual Status SetAllowedKeys(const std::vector<std::string>& keys_z85) = 0;
  // Asks a worker ("" = all) to send fresh capabilities (after models changed).
  virtual Status RefreshCapabilities(const std::string& worker_id) = 0;
  virtual BrokerCounters Counters() = 0;
  virtual std::string endpoint() = 0;    // what was bound (a tcp port 0 / '*' resolved)
  virtual std::string public_key() = 0;  // Z85, empty without CURVE
  virtual Status Stop() = 0;             // idempotent; workers keep their jobs for a reconnect
};

}  // namespace comfymq
