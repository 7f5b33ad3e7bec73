#include "net/commit_pipeline.h"

#include "util/thread_name.h"

namespace comfymq::net {

CommitPipeline::CommitPipeline(Store* store, std::function<void()> on_done)
    : store_(store), on_done_(std::move(on_done)), thread_(&CommitPipeline::Run, this) {}

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

std::unique_ptr<CommitPass> CommitPipeline::TakeDone() {
  std::lock_guard<std::mutex> l(mu_);
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
    l.unlock();
    pass->status = store_->Commit(&pass->batch);
    l.lock();
    in_flight_ = false;
    done_ = std::move(pass);
    l.unlock();
    on_done_();
    l.lock();
  }
}

}  // namespace comfymq::net
