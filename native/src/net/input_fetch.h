// InputFetch: one fetch of one input by a worker, the worker client's link-side of FETCH / INPUT (see
// docs/protocol.md). It asks for chunks, passes on each chunk that arrives in order with a good checksum, and asks
// for more as its caller consumes them, so at most proto::kChunkWindow chunks are in flight or waiting to be written:
//   - a chunk whose checksum is wrong: asked for again from its offset (what was in flight after it is dropped on
//     arrival: its offset is not the one expected); more than kMaxBadChunks of them fail the fetch;
//   - "busy" from the host: asked again after kBusyRetryMs, at most kMaxBusy times;
//   - refused (not this worker's job, no such input): failed with the host's reason (InvalidArgument).
// It does no I/O: the caller writes and hashes what it passes on (off the link's thread, so a slow disk never
// holds up heartbeats) and checks the whole file's sha256. finished() with an OK status once every byte was passed
// on. Link thread only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "comfymq/status.h"
#include "net/protocol.h"

namespace comfymq::net {

class InputFetch {
 public:
  static constexpr int kMaxBadChunks = 8;
  static constexpr int kMaxBusy = 600;
  static constexpr int64_t kBusyRetryMs = 100;

  InputFetch(uint64_t fetch, uint64_t job, uint64_t token, std::string sha256);

  // Asks for the first window.
  void Start(std::vector<proto::Message>* out);
  // An INPUT for this fetch arrived; a good chunk's data goes to *data (else it stays empty).
  void OnInput(proto::Message& m, int64_t now, std::vector<proto::Message>* out, std::string* data);
  // The caller has written this many bytes (from the start), and time passed: asks for more as room frees up,
  // and again after the host was busy.
  void Tick(uint64_t consumed, int64_t now, std::vector<proto::Message>* out);
  // Ends it (link lost, caller gave up, stopping).
  void Fail(Status s);

  bool finished() const { return finished_; }
  const Status& status() const { return status_; }
  uint64_t size() const { return size_; }
  const std::string& sha256() const { return sha256_; }

 private:
  void Ask(uint64_t offset, uint32_t count, std::vector<proto::Message>* out);

  const uint64_t fetch_, job_, token_;
  const std::string sha256_;
  bool size_known_ = false;
  uint64_t size_ = 0;
  uint64_t received_ = 0;   // bytes passed on, in order
  uint64_t requested_ = 0;  // bytes asked for (from 0)
  uint64_t consumed_ = 0;   // bytes the caller wrote
  int bad_chunks_ = 0, busy_ = 0;
  int64_t retry_at_ = 0;  // > 0: ask again then (the host was busy)
  bool finished_ = false;
  Status status_;
};

}  // namespace comfymq::net
