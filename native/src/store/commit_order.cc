#include "store/commit_order.h"

#include <algorithm>

namespace comfymq {

uint64_t CommitOrder::Begin(bool* reset_tail) {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] { return !broken_ || (live_.empty() && turns_done_ == begun_); });
  *reset_tail = broken_;
  broken_ = false;
  cause_ = Status::OK();
  const uint64_t seq = ++begun_;
  live_.push_back(seq);
  return seq;
}

Status CommitOrder::WaitTurn(uint64_t seq) {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] { return turns_done_ + 1 == seq; });
  return broken_ ? cause_ : Status::OK();
}

void CommitOrder::EndTurn(uint64_t seq) {
  {
    std::lock_guard<std::mutex> l(mu_);
    turns_done_ = seq;
  }
  cv_.notify_all();
}

void CommitOrder::Break(const Status& cause) {
  std::lock_guard<std::mutex> l(mu_);
  if (broken_) return;
  broken_ = true;
  cause_ = cause;
}

void CommitOrder::WaitTop(uint64_t seq) {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] { return live_.empty() || live_.back() <= seq; });
}

void CommitOrder::Resolve(uint64_t seq) {
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = std::find(live_.begin(), live_.end(), seq);
    if (it != live_.end()) live_.erase(it);
  }
  cv_.notify_all();
}

void CommitOrder::WaitIdle() {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] { return live_.empty() && turns_done_ == begun_; });
}

}  // namespace comfymq
