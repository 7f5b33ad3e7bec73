#include "store/event_queue.h"

#include "util/process.h"

namespace comfymq {

EventQueue::EventQueue() : state_(std::make_shared<State>()) {}

EventQueue::~EventQueue() { Stop(); }

void EventQueue::SetListener(StoreListener listener) {
  {
    std::lock_guard<std::mutex> l(state_->mu);
    state_->listener = std::move(listener);
    if (!state_->listener || state_->stop) return;
  }
  std::lock_guard<std::mutex> t(thread_mu_);
  if (!thread_.joinable()) {
    thread_ = std::thread(&EventQueue::Deliver, state_);
    thread_id_ = thread_.get_id();
  }
}

void EventQueue::Push(std::vector<StoreEvent> events) {
  std::lock_guard<std::mutex> l(state_->mu);
  if (!state_->listener || state_->stop) return;
  state_->queue.push_back(std::move(events));
  state_->cv.notify_one();
}

bool EventQueue::OnDeliveryThread() const { return std::this_thread::get_id() == thread_id_; }

void EventQueue::Stop() {
  {
    std::lock_guard<std::mutex> l(state_->mu);
    state_->stop = true;
  }
  state_->cv.notify_all();
  std::lock_guard<std::mutex> t(thread_mu_);
  if (!thread_.joinable()) return;
  if (OnDeliveryThread()) {
    thread_.detach();  // stopped from inside a listener: the thread ends once the callback returns
  } else {
    thread_.join();
  }
}

void EventQueue::Deliver(std::shared_ptr<State> state) {
  NameThisThread("cmq-events");
  std::unique_lock<std::mutex> l(state->mu);
  for (;;) {
    state->cv.wait(l, [&] { return state->stop || !state->queue.empty(); });
    if (state->queue.empty()) return;  // stopping, and everything was delivered
    std::vector<StoreEvent> batch = std::move(state->queue.front());
    state->queue.pop_front();
    StoreListener fn = state->listener;
    l.unlock();
    if (fn) fn(batch);
    l.lock();
  }
}

}  // namespace comfymq
