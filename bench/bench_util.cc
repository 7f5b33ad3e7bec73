#include "bench_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "comfymq/env.h"

namespace comfymq::bench {

void Emit(const std::string& bench, const std::string& metric, double value, const std::string& unit,
          const std::string& baseline, double baseline_value, const std::string& extra) {
  nlohmann::ordered_json j;
  j["bench"] = bench;
  j["metric"] = metric;
  j["value"] = value;
  j["unit"] = unit;
  if (!baseline.empty()) {
    j["baseline"] = baseline;
    j["baseline_value"] = baseline_value;
    j["ratio"] = baseline_value != 0 ? value / baseline_value : 0.0;
  }
  if (!extra.empty()) {
    auto e = nlohmann::json::parse(extra);
    for (auto it = e.begin(); it != e.end(); ++it) j[it.key()] = it.value();
  }
  std::cout << j.dump() << std::endl;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

static double StatusField(const char* name) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, std::strlen(name), name) == 0) return std::stod(line.substr(std::strlen(name))) / 1024.0;
  }
  return 0;
}

double ProcessCpuSeconds() {
  struct rusage u;
  if (getrusage(RUSAGE_SELF, &u) != 0) return 0;
  auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return sec(u.ru_utime) + sec(u.ru_stime);
}

double RssMiB() { return StatusField("VmRSS:"); }
double PeakRssMiB() { return StatusField("VmHWM:"); }

void RemoveTree(const std::string& path) { RemoveRecursively(Env::Default(), path).IgnoreError(); }

void Must(const Status& s, const char* what) {
  if (s.ok()) return;
  std::fprintf(stderr, "comfymq_bench: %s: %s\n", what, s.ToString().c_str());
  std::exit(1);
}

ScratchDir::ScratchDir(const std::string& base, const std::string& name) : path_(base + "/" + name) {
  RemoveTree(path_);
  mkdir(base.c_str(), 0755);
  mkdir(path_.c_str(), 0755);
}

ScratchDir::~ScratchDir() { RemoveTree(path_); }

void DropCache(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  fdatasync(fd);
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  close(fd);
}

}  // namespace comfymq::bench
