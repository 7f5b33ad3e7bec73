// CommitPipeline: runs the broker's store commits on a thread of their own, one at a time, so the broker's
// loop keeps receiving (results, credits, heartbeats) while a commit applies, writes and syncs. The loop
// submits a pass (a StoreBatch and whatever it needs afterwards), is woken through `on_done` when the commit
// returned, and takes the pass back to send what the commit decided. Passes commit in submission order and
// never overlap: a second Submit before the first was taken back is a contract violation.
// Thread-safe; Stop (or the destructor) waits for the pass in flight, which stays available to TakeDone.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "comfymq/store.h"

namespace comfymq::net {

struct CommitPass {
  virtual ~CommitPass() = default;
  StoreBatch batch;
  Status status;  // what Store::Commit returned
};

class CommitPipeline {
 public:
  CommitPipeline(Store* store, std::function<void()> on_done);
  ~CommitPipeline() { Stop(); }
  CommitPipeline(const CommitPipeline&) = delete;
  CommitPipeline& operator=(const CommitPipeline&) = delete;

  // True from Submit until the pass is taken back.
  bool busy();
  void Submit(std::unique_ptr<CommitPass> pass);
  // The committed pass, or nullptr while it is still in flight (or none was submitted).
  std::unique_ptr<CommitPass> TakeDone();
  // Ends the thread after the pass in flight, if any, has committed.
  void Stop();

 private:
  void Run();

  Store* const store_;
  const std::function<void()> on_done_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::unique_ptr<CommitPass> todo_, done_;
  bool in_flight_ = false;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace comfymq::net
