// Transfers: output files arriving in CHUNKs, written through the atomic artifact writer under
// <root>/<job id>/<name>. A file is checked chunk by chunk (checksum, offset) and as a whole (size, sha256);
// it stays an unpublished temp file until the job's result is accepted, when Publish renames it into place.
// A broken or refused transfer leaves no visible file. Used by the broker thread only (not thread-safe).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "comfymq/artifact_writer.h"
#include "comfymq/job.h"
#include "net/protocol.h"

namespace comfymq::net {

class Transfers {
 public:
  explicit Transfers(ArtifactWriter* writer) : writer_(writer) {}

  // Handles a CHUNK of a job whose lease the caller checked; returns the CHUNK_ACK to send back.
  proto::Message OnChunk(const std::string& worker_id, const proto::Message& chunk, uint64_t* bytes_written,
                         bool* retry);
  // For a RESULT: when every listed file arrived whole and matches, publishes them and returns the
  // artifacts (paths relative to the root). NotFound when some file is missing or differs: the worker must
  // send the files again.
  Status Publish(uint64_t job, uint64_t token, const std::vector<proto::FileEntry>& files, std::vector<Artifact>* out);
  // Removes the files this host published for them again (their result was refused after all); an existing
  // copy a publish reused stays.
  void Unpublish(const std::vector<Artifact>& artifacts);
  // Their result is recorded: the files are the job's for good.
  void Settle(const std::vector<Artifact>& artifacts);
  // Drops unpublished transfers.
  void AbortJob(uint64_t job);
  void AbortWorker(const std::string& worker_id);
  size_t active() const { return map_.size(); }

 private:
  struct Transfer {
    std::string worker;
    std::string name;
    uint64_t size = 0;
    uint64_t next = 0;  // the offset expected next
    std::unique_ptr<ArtifactStream> stream;
    bool complete = false;
    std::string sha256;
  };
  using Key = std::tuple<uint64_t, uint64_t, uint32_t>;  // job, token, file index

  ArtifactWriter* writer_;
  std::map<Key, Transfer> map_;
  // Paths published for results not yet recorded or refused. Only a file outside this set is ever reused
  // by a later publish (CommitOrReuse): one still in it may be unpublished when its own result is refused.
  std::set<std::string> unsettled_;
};

}  // namespace comfymq::net
