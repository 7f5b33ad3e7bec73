// CommitPipeline: runs the broker's store commits on a thread of their own, one at a time, so the broker's
// loop keeps receiving (results, credits, heartbeats) while a commit applies, writes and syncs. The loop
// submits a pass (a StoreBatch and whatever it needs afterwards), is woken through `wake` twice: when the
// batch has been applied in memory (TakeApplied: what may go out before the sync, see Lease::early) and when
// the commit returned (TakeDone: the pass back, to send what the commit decided). Passes commit in
// submission order and never overlap: a second Submit before the first was taken back is a contract
// violation. Thread-safe; Stop (or the destructor) waits for the pass in flight, which stays available to
// TakeDone.
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
  CommitPipeline(Store* store, std::function<void()> wake);
  ~CommitPipeline() { Stop(); }
  CommitPipeline(const CommitPipeline&) = delete;
  CommitPipeline& operator=(const CommitPipeline&) = delete;

  // True from Submit until the pass is taken back.
  bool busy();
  void Submit(std::unique_ptr<CommitPass> pass);
  // The pass in flight once its batch is applied (not yet durable), once per pass; else nullptr. The pass
  // stays owned by the pipeline: the caller may read what the apply decided until it calls TakeDone.
  CommitPass* TakeApplied();
  // The committed pass, or nullptr while it is still in flight (or none was submitted).
  std::unique_ptr<CommitPass> TakeDone();
  // Ends the thread after the pass in flight, if any, has committed.
  void Stop();

 private:
  void Run();

  Store* const store_;
  const std::function<void()> wake_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::unique_ptr<CommitPass> todo_, done_;
  CommitPass* applied_ = nullptr;  // the pass in flight, applied, not yet taken by TakeApplied
  bool in_flight_ = false;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace comfymq::net
