#include "net/commit_pipeline.h"

#include "util/thread_name.h"

namespace comfymq::net {

CommitPipeline::CommitPipeline(Store* store, std::function<void()> wake)
    : store_(store), wake_(std::move(wake)), thread_(&CommitPipeline::Run, this) {}

bool CommitPipeline::busy() {
  std::lock_guard<std::mutex> l(mu_);
  return todo_ != nullptr || in_flight_ || done_ != nullptr;
}

void CommitPipeline::Submit(std::unique_ptr<CommitPass> pass) {
  {
    std::lock_guard<std::mutex> l(mu_);
    todo_ = std::move(pass);
  }
  cv_.notify_one();
}

CommitPass* CommitPipeline::TakeApplied() {
  std::lock_guard<std::mutex> l(mu_);
  CommitPass* p = applied_;
  applied_ = nullptr;
  return p;
}

std::unique_ptr<CommitPass> CommitPipeline::TakeDone() {
  std::lock_guard<std::mutex> l(mu_);
  if (done_ != nullptr && applied_ == done_.get()) applied_ = nullptr;  // never handed out after its end
  return std::move(done_);
}

void CommitPipeline::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void CommitPipeline::Run() {
  NameThisThread("cmq-commit");
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    cv_.wait(l, [&] { return todo_ != nullptr || stop_; });
    if (todo_ == nullptr) return;  // stopping, nothing left to commit
    std::unique_ptr<CommitPass> pass = std::move(todo_);
    in_flight_ = true;
    CommitPass* p = pass.get();  // the loop may read it once applied, and takes it back when done
    pass->batch.OnApplied([this, p] {
      {
        std::lock_guard<std::mutex> g(mu_);
        applied_ = p;
      }
      wake_();
    });
    l.unlock();
    pass->status = store_->Commit(&pass->batch);
    l.lock();
    in_flight_ = false;
    done_ = std::move(pass);
    l.unlock();
    wake_();
    l.lock();
  }
}

}  // namespace comfymq::net
