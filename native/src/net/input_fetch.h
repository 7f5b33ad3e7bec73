// InputFetch: one fetch of one input by a worker, the worker client's side of FETCH / INPUT (see docs/protocol.md).
// It asks for a window of chunks, appends each chunk that arrives in order with a good checksum to a temp file
// while hashing it, and asks for more as the window drains, so at most proto::kChunkWindow chunks are in flight.
//   - a chunk whose checksum is wrong: asked for again from its offset (what was in flight after it is dropped on
//     arrival: its offset is not the one expected); more than kMaxBadChunks of them fail the fetch;
//   - the whole file's sha256 differs from the one asked for: fetched once more from the start, then failed;
//   - "busy" from the host: asked again after kBusyRetryMs, at most kMaxBusy times;
//   - refused (not this worker's job, no such input): failed with the host's reason (InvalidArgument).
// When every byte arrived and the sha256 matched, finished() with an OK status and the unsynced temp file for the
// caller to sync and rename (the loop never waits for a disk sync). Loop thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comfymq/env.h"
#include "comfymq/status.h"
#include "net/protocol.h"
#include "util/sha256.h"

namespace comfymq::net {

class InputFetch {
 public:
  static constexpr int kMaxBadChunks = 8;
  static constexpr int kMaxBusy = 600;
  static constexpr int64_t kBusyRetryMs = 100;

  InputFetch(uint64_t fetch, uint64_t job, uint64_t token, std::string sha256, std::string temp_path, Env* env);

  // Opens the temp file and asks for the first window.
  void Start(int64_t now, std::vector<proto::Message>* out);
  // An INPUT for this fetch arrived.
  void OnInput(const proto::Message& m, int64_t now, std::vector<proto::Message>* out);
  // Time passed: a fetch the host was too busy for asks again.
  void Tick(int64_t now, std::vector<proto::Message>* out);
  // Ends it (link lost, caller gave up, stopping).
  void Fail(Status s);

  bool finished() const { return finished_; }
  const Status& status() const { return status_; }
  uint64_t size() const { return size_; }
  uint64_t bytes_received() const { return received_; }
  int bad_chunks() const { return bad_chunks_; }
  const std::string& temp_path() const { return temp_path_; }
  const std::string& sha256() const { return sha256_; }
  // The written (not yet synced) file, once finished OK.
  std::unique_ptr<WritableFile> TakeFile() { return std::move(file_); }

 private:
  void Ask(uint64_t offset, uint32_t count, std::vector<proto::Message>* out);
  void Refill(std::vector<proto::Message>* out);  // keeps the window full
  void Restart(int64_t now, std::vector<proto::Message>* out);

  const uint64_t fetch_, job_, token_;
  const std::string sha256_, temp_path_;
  Env* const env_;
  std::unique_ptr<WritableFile> file_;
  std::unique_ptr<Sha256> hash_;
  bool size_known_ = false;
  uint64_t size_ = 0;
  uint64_t received_ = 0;   // bytes written, in order
  uint64_t requested_ = 0;  // bytes asked for (from 0)
  int bad_chunks_ = 0, busy_ = 0, restarts_ = 0;
  int64_t retry_at_ = 0;  // > 0: ask again then (the host was busy)
  bool finished_ = false;
  Status status_;
};

}  // namespace comfymq::net
