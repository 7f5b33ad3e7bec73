// WorkerSpeed: how fast each worker runs jobs, as the broker measures it (job sent -> result recorded), for
// speed-aware dispatch: when several workers are free, the fastest takes the next job first (the fix for farms of
// mixed GPUs, where first-come order hands the slow card half the work).
//
// Speed is relative and per graph shape (Requirements::shape: the set of node classes): for each shape the farm's
// mean run time (an exponentially weighted mean over every worker's runs); a worker's factor is the weighted mean
// of (its run time / the farm's mean for that shape) over its runs, so 0.5 = twice as fast as the farm's average
// and 1.0 = average, or not measured yet. Only runs that succeeded are measured (a failure may end early).
// Bounded: at most kMaxShapes shapes (then the table starts over), kMaxInFlight runs timed at once (the oldest go
// first), and a worker's entry is dropped with Forget(). Not thread-safe: the broker's loop thread owns it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>

namespace comfymq::net {

class WorkerSpeed {
 public:
  static constexpr size_t kMaxShapes = 4096;
  static constexpr size_t kMaxInFlight = 1 << 16;
  static constexpr double kWeight = 0.25;       // of the newest run, in a worker's factor
  static constexpr double kShapeWeight = 0.05;  // of the newest run, in a shape's farm mean (slow: a steady yardstick)

  void Started(uint64_t job, const std::string& worker, uint64_t shape, int64_t now_ms);
  // The run of `job` ended; succeeded: its time counts. Returns whether the worker's factor changed.
  bool Ended(uint64_t job, bool succeeded, int64_t now_ms, std::string* worker);
  double Factor(const std::string& worker) const;  // 1.0 when unknown
  uint64_t Runs(const std::string& worker) const;  // runs measured
  void Forget(const std::string& worker);

 private:
  struct Run {
    std::string worker;
    uint64_t shape = 0;
    int64_t started_ms = 0;
  };
  struct Measured {
    double factor = 1.0;
    uint64_t runs = 0;
  };
  std::map<uint64_t, Run> in_flight_;  // by job id (ids grow with time: the first is the oldest)
  std::unordered_map<uint64_t, double> shape_mean_ms_;
  std::unordered_map<std::string, Measured> workers_;
};

}  // namespace comfymq::net
