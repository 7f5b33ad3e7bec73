#include "net/commit_pipeline.h"

#include "util/process.h"

namespace comfymq::net {

CommitPipeline::CommitPipeline(Store* store, std::function<void()> wake) : store_(store), wake_(std::move(wake)) {
  for (size_t i = 0; i < kDepth; ++i) threads_.emplace_back(&CommitPipeline::Run, this);
}

bool CommitPipeline::busy() {
  std::lock_guard<std::mutex> l(mu_);
  return !slots_.empty();
}

bool CommitPipeline::accepting() {
  std::lock_guard<std::mutex> l(mu_);
  return slots_.size() < kDepth && (slots_.empty() || slots_.back().applied || slots_.back().done);
}

void CommitPipeline::Submit(std::unique_ptr<CommitPass> pass) {
  {
    std::lock_guard<std::mutex> l(mu_);
    slots_.push_back(Slot{std::move(pass)});
  }
  cv_.notify_all();
}

CommitPass* CommitPipeline::TakeApplied() {
  std::lock_guard<std::mutex> l(mu_);
  for (Slot& s : slots_) {
    if (s.applied && !s.handed) {
      s.handed = true;
      return s.pass.get();
    }
  }
  return nullptr;
}

std::unique_ptr<CommitPass> CommitPipeline::TakeDone() {
  std::lock_guard<std::mutex> l(mu_);
  if (slots_.empty() || !slots_.front().done) return nullptr;
  std::unique_ptr<CommitPass> p = std::move(slots_.front().pass);
  slots_.pop_front();
  return p;
}

void CommitPipeline::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void CommitPipeline::Run() {
  NameThisThread("cmq-commit");
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    Slot* slot = nullptr;
    cv_.wait(l, [&] {
      for (Slot& s : slots_) {
        if (!s.started) {
          slot = &s;
          return true;
        }
      }
      return stop_;
    });
    if (slot == nullptr) return;  // stopping, nothing left to commit
    // Only the newest pass can be unstarted (Submit waits for the one before to be applied), so passes reach
    // the store in submission order. Deque elements stay put while others are added at the back or the front
    // one is taken (that one is done, never this one).
    slot->started = true;
    CommitPass* p = slot->pass.get();
    p->batch.OnApplied([this, slot] {
      {
        std::lock_guard<std::mutex> g(mu_);
        slot->applied = true;
      }
      wake_();
    });
    l.unlock();
    p->status = CommitBatch(store_, &p->batch);
    l.lock();
    slot->done = true;
    l.unlock();
    wake_();
    l.lock();
  }
}

}  // namespace comfymq::net
