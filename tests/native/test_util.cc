#include "test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <vector>

#include "comfymq/env.h"

namespace comfymq::testing {

TempDir::TempDir() {
  const char* base = getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/comfymq-test-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() { RemoveTree(path_); }

void RemoveTree(const std::string& path) { RemoveRecursively(Env::Default(), path).IgnoreError(); }

std::string PromptFor(uint64_t seq, size_t pad) {
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "{\"1\": {\"class_type\": \"EmptyImage\", \"inputs\": {\"width\": 64, \"height\": 64, \"seq\": %llu, "
                "\"pad\": \"",
                static_cast<unsigned long long>(seq));
  std::string p = buf;
  p.append(pad, static_cast<char>('a' + seq % 26));
  p += "\"}}, \"2\": {\"class_type\": \"SaveImage\", \"inputs\": {\"images\": [\"1\", 0]}}}";
  return p;
}

int64_t SeqOfPrompt(const std::string& prompt) {
  try {
    auto j = nlohmann::json::parse(prompt);
    uint64_t seq = j.at("1").at("inputs").at("seq").get<uint64_t>();
    size_t pad = j.at("1").at("inputs").at("pad").get<std::string>().size();
    if (PromptFor(seq, pad) != prompt) return -1;
    return static_cast<int64_t>(seq);
  } catch (...) {
    return -1;
  }
}

std::string OutputsFor(uint64_t seq) {
  return "{\"2\": {\"images\": [{\"filename\": \"out_" + std::to_string(seq) + ".png\", \"type\": \"output\"}]}}";
}

std::string PromptIdFor(uint64_t seq) { return "prompt-" + std::to_string(seq); }

StoreOptions SmallOptions(Env* env, bool background) {
  StoreOptions o;
  o.env = env;
  o.segment_bytes = 16 << 10;
  o.checkpoint_every_bytes = 64 << 10;
  o.compact_min_garbage_bytes = 32 << 10;
  o.reopen_lease_grace_ms = 0;
  o.background_thread = background;
  return o;
}

int TrialsFromEnv(const char* var, int default_trials) {
  const char* v = getenv(var);
  if (v == nullptr || *v == '\0') return default_trials;
  return std::max(1, atoi(v));
}

bool UnwrittenExtents(const std::string& path, int* count, uint64_t* first_offset) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return false;
  ::fsync(fd);
  constexpr int kMax = 256;
  std::vector<char> buf(sizeof(struct fiemap) + kMax * sizeof(struct fiemap_extent));
  auto* fm = reinterpret_cast<struct fiemap*>(buf.data());
  fm->fm_start = 0;
  fm->fm_length = FIEMAP_MAX_OFFSET;
  fm->fm_flags = FIEMAP_FLAG_SYNC;
  fm->fm_extent_count = kMax;
  const bool ok = ::ioctl(fd, FS_IOC_FIEMAP, fm) == 0;
  ::close(fd);
  if (!ok) return false;
  *count = 0;
  *first_offset = UINT64_MAX;
  for (unsigned i = 0; i < fm->fm_mapped_extents; ++i) {
    if (!(fm->fm_extents[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN)) continue;
    (*count)++;
    *first_offset = std::min<uint64_t>(*first_offset, fm->fm_extents[i].fe_logical);
  }
  return true;
}

}  // namespace comfymq::testing
