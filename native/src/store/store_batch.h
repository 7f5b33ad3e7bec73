// The store's plumbing for one caller, the broker (leveldb's db/write_batch_internal.h is the model): a batch of
// many changes committed with one sync, leases shown before their commit is durable, and the dispatch hook that
// leases jobs inside an enqueuer's own commit. Not part of the store's public API (include/comfymq/store.h).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "comfymq/store.h"

namespace comfymq {

// Many changes committed together, with one sync: the broker's way to record a loop's worth of results and
// dispatches at once. Each change succeeds or fails on its own; its Status says which. Not thread-safe.
class StoreBatch {
 public:
  // *early is set when the take's token lies below the store's durable token reservation: the lease may be shown
  // to its worker once the batch is applied, before its commit is durable. Should that commit fail, the take's
  // Status says so and the worker must be told the lease is gone; should the process die first, recovery finds
  // the job pending and never hands this token out again, so the run's result is refused.
  void Take(const TakeOptions& options, std::unique_ptr<Lease>* lease, Status* status, bool* early = nullptr);
  void Complete(uint64_t id, uint64_t token, std::string outputs_json, std::vector<Artifact> artifacts, Status* status);
  void Fail(uint64_t id, uint64_t token, JobError error, bool retryable, Status* status);
  // Ends a run whose worker is gone: the job goes back to pending (or fails past max attempts), like an
  // expired lease. count_attempt = false for a job that never reached its worker.
  void ReleaseLease(uint64_t id, uint64_t token, std::string reason, bool count_attempt, Status* status);
  bool empty() const { return items_.empty(); }
  size_t size() const { return items_.size(); }
  // Called once, on the committing thread, when every change of the batch has been applied in memory and
  // before the commit writes and syncs them; not called when the store refuses the batch as a whole. What it
  // sees is not durable yet: leases marked early may already be shown to their workers, other results must wait
  // for the commit to return. It must be quick and must not call into the store. If it throws, the exception
  // is dropped: the batch commits as if the callback had returned.
  void OnApplied(std::function<void()> fn) { on_applied_ = std::move(fn); }
  const std::function<void()>& on_applied() const { return on_applied_; }

  // One change of a batch, as the store applies it.
  struct TakeOp {
    TakeOptions options;
    std::unique_ptr<Lease>* lease = nullptr;
    bool* early = nullptr;  // may be null
  };
  struct CompleteOp {
    uint64_t id = 0, token = 0;
    std::string outputs_json;
    std::vector<Artifact> artifacts;
  };
  struct FailOp {
    uint64_t id = 0, token = 0;
    JobError error;
    bool retryable = false;
  };
  struct ReleaseOp {
    uint64_t id = 0, token = 0;
    std::string reason;
    bool count_attempt = true;
  };
  struct Item {
    std::variant<TakeOp, CompleteOp, FailOp, ReleaseOp> op;
    Status* status = nullptr;
  };
  std::vector<Item>& items() { return items_; }

 private:
  std::vector<Item> items_;
  std::function<void()> on_applied_;
};

// Commits a batch (store must be one Store::Open made). Returns non-OK only when nothing could be committed (the
// items say the same).
Status CommitBatch(Store* store, StoreBatch* batch);

// Dispatch on arrival. When a commit group makes jobs pending (enqueue, retry, a run that ends back in the
// queue), the group's leader calls `choose` after applying the group and before writing it: choose may lease
// jobs with Take, inside the same group, so a job and its lease become durable with one sync. Once the group
// is durable the leases go to `deliver` (on the leader's thread, no store lock held); if the group fails
// they are undone and never delivered. choose runs with the store's lock held: it must be quick and must not
// call into the store. Both may run on any thread that commits.
class DispatchContext {
 public:
  virtual ~DispatchContext() = default;
  // Leases the first pending job `options` accept, or returns nullptr. The lease is owned by the store
  // until it is delivered.
  virtual const Lease* Take(const TakeOptions& options) = 0;
};
struct DispatchHook {
  std::function<void(DispatchContext& ctx)> choose;
  std::function<void(std::vector<std::unique_ptr<Lease>> leases)> deliver;
};

// Sets (or with an empty hook, removes) the store's dispatch hook; returns once no group uses the old one.
void SetDispatchHook(Store* store, DispatchHook hook);

}  // namespace comfymq
