#include "net/worker_speed.h"

#include <algorithm>

namespace comfymq::net {

void WorkerSpeed::Started(uint64_t job, const std::string& worker, uint64_t shape, int64_t now_ms) {
  if (in_flight_.size() >= kMaxInFlight && in_flight_.count(job) == 0) in_flight_.erase(in_flight_.begin());
  in_flight_[job] = Run{worker, shape, now_ms};
}

bool WorkerSpeed::Ended(uint64_t job, bool succeeded, int64_t now_ms, std::string* worker) {
  auto it = in_flight_.find(job);
  if (it == in_flight_.end()) return false;
  const Run run = std::move(it->second);
  in_flight_.erase(it);
  *worker = run.worker;
  if (!succeeded) return false;
  const double ms = static_cast<double>(std::max<int64_t>(1, now_ms - run.started_ms));
  if (shape_mean_ms_.size() >= kMaxShapes && shape_mean_ms_.count(run.shape) == 0) shape_mean_ms_.clear();
  auto [mean, first] = shape_mean_ms_.try_emplace(run.shape, ms);
  if (!first) mean->second += kShapeWeight * (ms - mean->second);
  Measured& m = workers_[run.worker];
  const double ratio = ms / mean->second;
  m.factor = m.runs == 0 ? ratio : m.factor + kWeight * (ratio - m.factor);
  m.runs++;
  return true;
}

double WorkerSpeed::Factor(const std::string& worker) const {
  auto it = workers_.find(worker);
  return it == workers_.end() ? 1.0 : it->second.factor;
}

uint64_t WorkerSpeed::Runs(const std::string& worker) const {
  auto it = workers_.find(worker);
  return it == workers_.end() ? 0 : it->second.runs;
}

void WorkerSpeed::Forget(const std::string& worker) { workers_.erase(worker); }

}  // namespace comfymq::net
