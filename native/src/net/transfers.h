// Transfers: output files arriving in CHUNKs, written through the atomic artifact writer under
// <root>/<job id>/<name>. A file is checked chunk by chunk (checksum, offset) and as a whole (size, sha256);
// it stays an unpublished temp file until the job's result is accepted, when Publish renames it into place.
// A broken or refused transfer leaves no visible file.
//
// The file I/O (create, write, sync) runs on a thread of its own, in arrival order, so a slow disk never
// holds up the broker's loop (its heartbeats, lease renewals, dispatch): a chunk is checked on the loop and
// queued; once it is written (the last one: once the file is synced and its sha256 checked) the I/O thread
// hands a Done to `on_done`, and the loop's Completed turns it into the CHUNK_ACK. Acks come only for
// written bytes, so the worker's window keeps a fast sender from outrunning the disk.
// Thread safety: every method runs on the broker's loop; only `on_done` is called on the I/O thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "comfymq/artifact_writer.h"
#include "comfymq/job.h"
#include "net/protocol.h"

namespace comfymq::net {

class Transfers {
 public:
  using Key = std::tuple<uint64_t, uint64_t, uint32_t>;  // job, token, file index
  // A queued chunk, handled by the I/O thread.
  struct Done {
    enum class Outcome { kWritten, kRefused, kMismatch };  // kRefused: the host cannot store it (disk full, ...)
    Key key;
    uint64_t generation = 0;  // which start of the file it belongs to
    Outcome outcome = Outcome::kWritten;
    uint64_t bytes = 0;   // written by this chunk
    uint64_t offset = 0;  // written through, after it
    bool last = false;
    std::string sha256;  // of the whole file, with the last chunk
  };
  // Called on the I/O thread: must only hand the Done to the loop (which then calls Completed).
  using DoneFn = std::function<void(Done)>;

  Transfers(ArtifactWriter* writer, DoneFn on_done);
  ~Transfers();  // stops the I/O thread; queued chunks are dropped with their temp files

  // A CHUNK of a job whose lease the caller checked. kNow: *ack is the answer (start again, or refused);
  // kLater: queued for writing, its ack comes through Completed; kNone: no answer (the rest of a window sent
  // before the worker heard to start again). *retry: the answer asks the worker to send again.
  enum class Reply { kNow, kLater, kNone };
  Reply OnChunk(const std::string& worker_id, const proto::Message& chunk, proto::Message* ack, bool* retry);
  // What the I/O thread did with a queued chunk. False when its transfer was dropped or started over since
  // (nothing to send: a restart was answered then, a dropped run is over); else *ack goes to *worker_id.
  bool Completed(const Done& d, std::string* worker_id, proto::Message* ack, uint64_t* bytes_written, bool* retry);
  // For a RESULT: when every listed file arrived whole and matches, publishes them and returns the
  // artifacts (paths relative to the root). Busy when a listed file's last chunk is still being written
  // (ask again later); NotFound when some file is missing or differs: the worker must send the files again.
  Status Publish(uint64_t job, uint64_t token, const std::vector<proto::FileEntry>& files, std::vector<Artifact>* out);
  // Removes the files this host published for them again (their result was refused after all); an existing
  // copy a publish reused stays.
  void Unpublish(const std::vector<Artifact>& artifacts);
  // Their result is recorded: the files are the job's for good.
  void Settle(const std::vector<Artifact>& artifacts);
  // Drops unpublished transfers (of one run of a job: its token).
  void AbortRun(uint64_t job, uint64_t token);
  void AbortWorker(const std::string& worker_id);
  size_t active() const { return map_.size(); }

 private:
  // The file being written: the I/O thread's until its last chunk is done, the loop's after that.
  struct IoFile {
    std::unique_ptr<ArtifactStream> stream;
    bool refused = false;  // a write failed: later chunks are dropped
  };
  struct Transfer {
    std::string worker;
    std::string name;
    uint64_t size = 0;
    uint64_t next = 0;  // the offset expected next (chunks up to it are queued or written)
    uint64_t generation = 0;
    std::shared_ptr<IoFile> io;
    bool last_queued = false;  // the last chunk is queued: nothing more may come for this start
    bool restarting = false;   // told to start again: the rest of the old window is dropped unanswered
    bool complete = false;     // every byte written and synced, sha256 checked
    std::string sha256;
  };
  struct Task {
    std::shared_ptr<IoFile> io;
    Done done;          // key, generation, last, offset (after it)
    std::string begin;  // non-empty: first create the file at this relative path
    std::string data;
    std::string expected_sha256;  // with the last chunk
  };

  void Queue(Task t);
  void IoLoop();
  void Run(Task& t);  // on the I/O thread

  ArtifactWriter* writer_;
  DoneFn on_done_;
  std::map<Key, Transfer> map_;
  uint64_t generations_ = 0;
  // Paths published for results not yet recorded or refused. Only a file outside this set is ever reused
  // by a later publish (CommitOrReuse): one still in it may be unpublished when its own result is refused.
  std::set<std::string> unsettled_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> tasks_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace comfymq::net
