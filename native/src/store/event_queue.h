// EventQueue: delivers store events to one listener, in commit order, on a thread of its own.
// The delivery thread holds only the queue's shared state, never the store, so a listener may call back
// into the store, close it, or even destroy it. Thread-safe.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "comfymq/store.h"

namespace comfymq {

class EventQueue {
 public:
  EventQueue();
  ~EventQueue();  // Stop()

  void SetListener(StoreListener listener);   // starts the delivery thread on first use
  void Push(std::vector<StoreEvent> events);  // dropped when there is no listener
  // Delivers what is queued, then ends the thread (joined; detached when called from a listener).
  void Stop();
  bool OnDeliveryThread() const;

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::vector<StoreEvent>> queue;
    StoreListener listener;
    bool stop = false;
  };
  static void Deliver(std::shared_ptr<State> state);

  std::shared_ptr<State> state_;
  std::mutex thread_mu_;
  std::thread thread_;
  std::thread::id thread_id_;
};

}  // namespace comfymq
