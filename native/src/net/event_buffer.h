// EventBuffer: events (JSON texts) from a native thread to whoever takes them with Next (Python, with the GIL
// released). Bounded: past `limit`, the oldest are dropped and the next event taken is an "overflow" note
// saying how many, so a reader knows to refetch state. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>

namespace comfymq::net {

class EventBuffer {
 public:
  explicit EventBuffer(size_t limit) : limit_(limit) {}

  void Push(std::string event) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (queue_.size() >= limit_) {
        queue_.pop_front();
        dropped_++;
        total_dropped_++;
      }
      queue_.push_back(std::move(event));
    }
    cv_.notify_one();
  }

  bool Next(int timeout_ms, std::string* out) {
    std::unique_lock<std::mutex> l(mu_);
    if (!cv_.wait_for(l, std::chrono::milliseconds(timeout_ms),
                      [&] { return !queue_.empty() || dropped_ || closed_; })) {
      return false;
    }
    if (dropped_ != 0) {
      *out = "{\"type\": \"overflow\", \"dropped\": " + std::to_string(dropped_) + "}";
      dropped_ = 0;
      return true;
    }
    if (queue_.empty()) return false;
    *out = std::move(queue_.front());
    queue_.pop_front();
    return true;
  }

  void Close() {
    {
      std::lock_guard<std::mutex> l(mu_);
      closed_ = true;
    }
    cv_.notify_all();
  }

  uint64_t total_dropped() {
    std::lock_guard<std::mutex> l(mu_);
    return total_dropped_;
  }

 private:
  const size_t limit_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;
  uint64_t dropped_ = 0;
  uint64_t total_dropped_ = 0;
  bool closed_ = false;
};

}  // namespace comfymq::net
