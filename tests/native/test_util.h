// Helpers shared by the native tests: temporary directories, prompts whose content encodes a sequence
// number (so a test can tell exactly which job it is looking at and whether it is intact), and store options
// small enough to exercise segment rolls, checkpoints and compaction quickly.
#pragma once

#include <cstdint>
#include <string>

#include "comfymq/store.h"

namespace comfymq::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void RemoveTree(const std::string& path);

// An API-format prompt for job `seq`, padded with `pad` bytes so sizes can be chosen.
std::string PromptFor(uint64_t seq, size_t pad = 0);
// The seq a PromptFor prompt encodes, or -1 when the text is not one of ours (or is damaged).
int64_t SeqOfPrompt(const std::string& prompt);
std::string OutputsFor(uint64_t seq);
std::string PromptIdFor(uint64_t seq);

// Options for tests: small segments and checkpoints, no background thread unless asked.
StoreOptions SmallOptions(Env* env, bool background = false);

// How many trials a crash test runs: the env var if set, else the default.
int TrialsFromEnv(const char* var, int default_trials);

// The extents of `path` still marked unwritten (reserved by fallocate, never written), via FIEMAP: their
// count and the file offset where the first begins (UINT64_MAX when none). False when the file system cannot
// say (no FIEMAP, e.g. tmpfs) or the file cannot be opened.
bool UnwrittenExtents(const std::string& path, int* count, uint64_t* first_offset);

}  // namespace comfymq::testing
