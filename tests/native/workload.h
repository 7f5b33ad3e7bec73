// A random multi-threaded workload for the crash tests: enqueues (single and batched), leases and
// completes / fails / abandons, cancels, deletes, checkpoints, compactions and pauses. It records what was
// acknowledged; an optional hook sees each acknowledgement as it happens (the SIGKILL test sends them to
// its parent through a pipe).
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "comfymq/store.h"
#include "crash_check.h"
#include "test_util.h"

namespace comfymq::testing {

// Runs a random workload on `store` until `stop`; records acknowledgements in `acks`.
class Workload {
 public:
  // Called (under the workload's lock) for every acknowledgement and every delete issued.
  std::function<void(const Ack&)> on_ack;

  Workload(Store* store, uint64_t seed, uint64_t seq_base) : store_(store), seed_(seed), next_seq_(seq_base) {}

  void Run(int threads, std::atomic<bool>* stop) {
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) ts.emplace_back([this, t, stop] { Loop(seed_ * 31 + t, stop); });
    for (auto& th : ts) th.join();
  }

  // The acknowledgements so far (a snapshot taken BEFORE the crash image is what the image must hold).
  std::vector<Ack> AcksSnapshot() {
    std::lock_guard<std::mutex> l(mu_);
    return acks_;
  }
  std::set<uint64_t> DeletedSnapshot() {
    std::lock_guard<std::mutex> l(mu_);
    return deleted_;
  }

 private:
  void Ack1(Ack::Kind k, uint64_t seq) {
    std::lock_guard<std::mutex> l(mu_);
    acks_.push_back(Ack{k, seq});
    if (on_ack) on_ack(Ack{k, seq});
  }

  void Loop(uint64_t seed, std::atomic<bool>* stop) {
    std::mt19937_64 rng(seed);
    while (!stop->load()) {
      int op = std::uniform_int_distribution<int>(0, 99)(rng);
      if (op < 35) {
        uint64_t seq = next_seq_++;
        NewJob j;
        j.prompt = PromptFor(seq, std::uniform_int_distribution<size_t>(0, 3000)(rng));
        j.prompt_id = PromptIdFor(seq);
        j.priority = std::uniform_int_distribution<int>(0, 3)(rng);
        EnqueueResult r;
        if (store_->Enqueue(j, &r).ok()) Ack1(Ack::kEnqueued, seq);
      } else if (op < 45) {
        std::vector<NewJob> batch(std::uniform_int_distribution<int>(2, 20)(rng));
        std::vector<uint64_t> seqs;
        for (auto& j : batch) {
          uint64_t seq = next_seq_++;
          seqs.push_back(seq);
          j.prompt = PromptFor(seq, 100);
          j.prompt_id = PromptIdFor(seq);
        }
        std::vector<EnqueueResult> rs;
        if (store_->EnqueueMany(batch, &rs).ok()) {
          for (uint64_t s : seqs) Ack1(Ack::kEnqueued, s);
        }
      } else if (op < 80) {
        TakeOptions o;
        o.worker_id = "w" + std::to_string(seed % 7);
        std::unique_ptr<Lease> l;
        if (!store_->Take(o, &l).ok() || !l) continue;
        int64_t seq = SeqOfPrompt(l->job.prompt);
        int what = std::uniform_int_distribution<int>(0, 9)(rng);
        if (what < 7) {
          if (store_->Complete(l->job_id, l->token, OutputsFor(static_cast<uint64_t>(seq)), {}).ok()) {
            Ack1(Ack::kCompleted, static_cast<uint64_t>(seq));
          }
        } else if (what < 9) {
          store_->Fail(l->job_id, l->token, JobError{"execution_error", "boom"}, true).IgnoreError();
        }  // else: abandon the lease
      } else if (op < 88) {
        ListQuery q;
        q.limit = 5;
        q.state_mask = 1u << static_cast<int>(JobState::kPending);
        ListPage p;
        if (store_->List(q, &p).ok() && !p.jobs.empty()) {
          const Job& j = p.jobs[std::uniform_int_distribution<size_t>(0, p.jobs.size() - 1)(rng)];
          Job full;
          if (!store_->Get(j.id, true, &full).ok()) continue;
          int64_t seq = SeqOfPrompt(full.prompt);
          if (seq >= 0 && store_->Cancel(j.id, "test").ok()) Ack1(Ack::kCancelled, static_cast<uint64_t>(seq));
        }
      } else if (op < 93) {
        ListQuery q;
        q.limit = 3;
        q.state_mask = 1u << static_cast<int>(JobState::kSucceeded);
        ListPage p;
        if (store_->List(q, &p).ok() && !p.jobs.empty()) {
          Job full;
          if (!store_->Get(p.jobs[0].id, true, &full).ok()) continue;
          int64_t seq = SeqOfPrompt(full.prompt);
          if (seq < 0) continue;
          {
            std::lock_guard<std::mutex> l(mu_);
            deleted_.insert(static_cast<uint64_t>(seq));  // issued: may be gone whether acknowledged or not
            if (on_ack) on_ack(Ack{Ack::kDeleteIssued, static_cast<uint64_t>(seq)});
          }
          store_->Delete(p.jobs[0].id).IgnoreError();
        }
      } else if (op < 96) {
        store_->Checkpoint().IgnoreError();
      } else if (op < 98) {
        store_->Compact().IgnoreError();
      } else {
        store_->SetPaused(std::uniform_int_distribution<int>(0, 3)(rng) == 0).IgnoreError();
      }
    }
  }

  Store* store_;
  uint64_t seed_;
  std::atomic<uint64_t> next_seq_;
  std::mutex mu_;
  std::vector<Ack> acks_;
  std::set<uint64_t> deleted_;
};

}  // namespace comfymq::testing
