// Benchmark helpers: JSON-line output, timing, percentiles, memory readings, scratch directories.
// Benchmarks print figures and ratios against baselines measured in the same run; they never assert on time.
#pragma once

#include "comfymq/status.h"

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace comfymq::bench {

// A setup step a benchmark cannot run without: prints the status and exits 1 when it failed.
void Must(const Status& s, const char* what);

// One result line: {"bench", "metric", "value", "unit", "baseline", "baseline_value", "ratio", ...extra}.
// ratio = value / baseline_value (omitted without a baseline). `extra` is a JSON object text or empty.
void Emit(const std::string& bench, const std::string& metric, double value, const std::string& unit,
          const std::string& baseline = "", double baseline_value = 0, const std::string& extra = "");

inline double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double Percentile(std::vector<double> v, double p);  // p in [0, 100]

// CPU time (user + system) this process has used so far, over all its threads, in seconds (getrusage).
double ProcessCpuSeconds();

// Resident set size and its peak for this process, in MiB (from /proc/self/status).
double RssMiB();
double PeakRssMiB();

// A scratch directory under `base`, removed (recursively) when destroyed.
class ScratchDir {
 public:
  ScratchDir(const std::string& base, const std::string& name);
  ~ScratchDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void RemoveTree(const std::string& path);
// Drops this file's pages from the page cache (best effort), so reads measure the disk where it matters.
void DropCache(const std::string& path);

}  // namespace comfymq::bench
