#include "test_util.h"

#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>

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

void RemoveTree(const std::string& path) { RemoveRecursively(Env::Default(), path); }

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

}  // namespace comfymq::testing
