// CommitPipeline: runs the broker's store commits on threads of their own, so the broker's loop keeps
// receiving (results, credits, heartbeats) while a commit applies, writes and syncs. Up to kDepth passes are
// in flight: once the newest pass is applied in memory the loop may submit the next one, which the store
// applies while the one before it writes and syncs (store/commit_order.h), and which becomes durable after
// it. The loop submits a pass (a StoreBatch and whatever it needs afterwards) and is woken through `wake`
// twice per pass: when its batch has been applied (TakeApplied: what may go out before the sync, see
// an early take, StoreBatch::Take) and when its commit returned (TakeDone: the pass back, to send what the commit
// decided). Passes are handed back in submission order. Submitting while !accepting() is a contract violation.
// Thread-safe; Stop (or the destructor) waits for the passes in flight, which stay available to TakeDone.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "comfymq/store.h"
#include "store/store_batch.h"

namespace comfymq::net {

struct CommitPass {
  virtual ~CommitPass() = default;
  StoreBatch batch;
  Status status;  // what Store::Commit returned
};

class CommitPipeline {
 public:
  static constexpr size_t kDepth = 2;

  CommitPipeline(Store* store, std::function<void()> wake);
  ~CommitPipeline() { Stop(); }
  CommitPipeline(const CommitPipeline&) = delete;
  CommitPipeline& operator=(const CommitPipeline&) = delete;

  // True while a submitted pass has not been taken back.
  bool busy();
  // True when Submit may be called: fewer than kDepth passes not taken back, and the newest one applied.
  bool accepting();
  void Submit(std::unique_ptr<CommitPass> pass);
  // The oldest pass applied (not yet durable) and not yet handed out, once per pass; else nullptr. The pass
  // stays owned by the pipeline: the caller may read what the apply decided until it takes the pass back.
  // A pass whose commit already returned is still handed out until TakeDone took it (call this first).
  CommitPass* TakeApplied();
  // The oldest pass once its commit returned, or nullptr while it is still in flight (or none is).
  std::unique_ptr<CommitPass> TakeDone();
  // Ends the threads after the passes in flight, if any, have committed.
  void Stop();

 private:
  struct Slot {
    std::unique_ptr<CommitPass> pass;
    bool started = false, applied = false, handed = false, done = false;
  };
  void Run();

  Store* const store_;
  const std::function<void()> wake_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Slot> slots_;  // submitted and not taken back, oldest first
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace comfymq::net
