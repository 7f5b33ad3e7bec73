// ArtifactWriter: writes output files under a root directory so that no file is ever visible half-written
// and no file is ever overwritten: temp file in the same directory, write, fsync, rename without replace
// (a name already taken gets a "-1", "-2", ... suffix), fsync the directory.
//
// Relative paths from callers are untrusted: absolute paths, "..", NUL and control characters, and
// symlinks that lead outside the root are rejected with InvalidArgument before anything is written.
// The directory is found by handle, one component at a time from the root's, and a stream creates, renames
// and syncs only through that handle: swapping a component of the path for a link after the check (someone
// else with write access to the root) cannot send the file elsewhere.
// Stale temp files (from crashed writers) are removed when a writer opens the root.
// Thread safety: ArtifactWriter is thread-safe; an ArtifactStream has one owner.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "comfymq/env.h"
#include "comfymq/status.h"

namespace comfymq {

struct ArtifactInfo {
  std::string path;       // relative to the root, as finally named (may carry a collision suffix)
  std::string full_path;  // root + path
  uint64_t size = 0;
  std::string sha256;   // lowercase hex
  bool reused = false;  // CommitOrReuse took an existing copy: no file was made
};

class ArtifactStream {
 public:
  virtual ~ArtifactStream() = default;  // aborts (removes the temp file) unless committed
  virtual Status Append(std::string_view data) = 0;
  // Ends the appends and gives the content's sha256 (lowercase hex), so a caller can check the file before
  // it becomes visible. The bytes are synced and the file closed now: a finished stream waiting for its
  // Commit holds no open file (and streams in one directory share one handle of it), so a host can keep
  // thousands of a result's files finished. A failed sync aborts the stream. Optional: Commit finishes by itself.
  virtual Status Finish(std::string* sha256) = 0;
  // Makes the file durable and visible under its final name. The stream is finished afterwards.
  virtual Status Commit(ArtifactInfo* info) = 0;
  // Like Commit, except when a regular file of the stream's own name is already there holding exactly these
  // bytes (same size, same sha256: the same output published once before, e.g. by a host that died before
  // it recorded the result, and sent again): then this copy is dropped and *info names that file, made
  // durable, with no second copy and no suffix. Any other collision gets a suffix, as with Commit, and so
  // does anything that stops the check (an unreadable file, one that cannot be synced).
  virtual Status CommitOrReuse(ArtifactInfo* info) = 0;
  // Drops the file. Idempotent.
  virtual Status Abort() = 0;
  virtual uint64_t size() const = 0;
};

class ArtifactWriter {
 public:
  // Opens (creating) the root and removes stale temp files under it; *stale_removed counts them.
  static Status Open(Env* env, const std::string& root, std::unique_ptr<ArtifactWriter>* writer,
                     uint64_t* stale_removed = nullptr);
  virtual ~ArtifactWriter() = default;

  // Writes a whole file.
  virtual Status Write(const std::string& relative_path, std::string_view data, ArtifactInfo* info) = 0;
  // Starts a streamed file (for large outputs written in chunks).
  virtual Status Begin(const std::string& relative_path, std::unique_ptr<ArtifactStream>* stream) = 0;
  virtual const std::string& root() const = 0;
  // Removes a published file (found by handle, as Begin finds its directory) and syncs its directory.
  virtual Status Remove(const std::string& relative_path) = 0;
  // Commits streams begun by this writer (reuse[i]: CommitOrReuse for streams[i]) with one directory sync per
  // directory instead of one per file: a result of thousands of files. Stops at the first failure; *infos
  // then holds the files published before it (visible, and synced like the rest), for the caller to keep
  // or remove; the failed stream is aborted, the ones after it are left as they were.
  virtual Status CommitAll(const std::vector<ArtifactStream*>& streams, const std::vector<bool>& reuse,
                           std::vector<ArtifactInfo>* infos) = 0;
};

// Checks a caller's relative path and returns it normalized ("a//b/./c" -> "a/b/c").
Status NormalizeRelativePath(std::string_view path, std::string* normalized);

}  // namespace comfymq
