// Env: every file-system call the core makes goes through this seam (the leveldb pattern), so tests can
// swap in an Env that fails on demand or forgets everything not synced (a simulated power cut).
//
// Thread safety: Env methods are thread-safe. A WritableFile has one owner and is not thread-safe.
// A RandomAccessFile is thread-safe (positional reads).
// Paths are plain strings; the core builds them with JoinPath and never relies on the process cwd.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "comfymq/status.h"

namespace comfymq {

struct FileInfo {
  bool exists = false;
  bool is_dir = false;
  bool is_symlink = false;
  bool is_regular = false;  // a plain file (not a directory, link, FIFO, socket or device)
  uint64_t size = 0;
  int64_t mtime_us = 0;
};

// A file opened for writing. Positional writes make preallocated log segments possible.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // Writes data at the current end of the file.
  virtual Status Append(std::string_view data) = 0;
  // Writes data at `offset` (may be inside space reserved by Allocate).
  virtual Status WriteAt(uint64_t offset, std::string_view data) = 0;
  // Reserves space so that later writes inside [0, size) cannot fail with "disk full"; the file's size
  // becomes at least `size` and the new bytes read as zeros. Fails with NoSpace when the disk is full.
  virtual Status Allocate(uint64_t size) = 0;
  virtual Status Truncate(uint64_t size) = 0;
  // Makes everything written so far durable (fdatasync). After a failure the file's durable contents
  // are unknown: callers must treat a failed Sync as fatal for whatever they were writing.
  virtual Status Sync() = 0;
  virtual Status Close() = 0;
  // A hint that [offset, offset+len) is final: start writing it to disk now, without waiting, so a later
  // Sync has less to do (sync_file_range). Not a durability guarantee; may be a no-op.
  virtual void StartWriteback(uint64_t offset, uint64_t len) {}
};

// A file opened for positional reads.
class RandomAccessFile {
 public:
  virtual ~RandomAccessFile() = default;
  // Reads up to n bytes at offset into *out (fewer at end of file).
  virtual Status Read(uint64_t offset, size_t n, std::string* out) const = 0;
  virtual Status Size(uint64_t* size) const = 0;
};

// A regular file opened by Env::OpenRegularFile: read and made durable through the one handle it was
// checked on, so nothing swapped in under its name meanwhile is read or synced instead.
class RegularFile : public RandomAccessFile {
 public:
  // Makes the file's contents durable (fsync).
  virtual Status Sync() = 0;
};

// A directory opened by Env::OpenDirectory. Everything done through it happens inside that directory, found
// by its handle, not by its path: a component of its path swapped for a link after it was opened (and
// checked) cannot redirect what is made in it. Names are single path components (no '/'); links of a
// given name are never followed. Thread-safe.
class Directory {
 public:
  virtual ~Directory() = default;
  // The path it was opened by (for messages and for callers that report full paths).
  virtual const std::string& path() const = 0;
  // Which directory it is (device and inode): equal for two handles of the same directory.
  virtual const std::string& identity() const = 0;
  // The names of its entries (without "." and "..").
  virtual Status List(std::vector<std::string>* names) = 0;
  // What `name` is, the link itself when it is one (lstat); info->exists false when missing.
  virtual Status Stat(const std::string& name, FileInfo* info) = 0;
  // Opens the subdirectory `name`: NotFound when missing, InvalidArgument when it is a link or no directory.
  virtual Status OpenSubdir(const std::string& name, std::unique_ptr<Directory>* out) = 0;
  // Creates the subdirectory `name`; OK if it exists as a directory (not a link to one).
  virtual Status CreateSubdir(const std::string& name) = 0;
  // Creates the file `name` for writing; AlreadyExists when anything has that name.
  virtual Status NewFile(const std::string& name, std::unique_ptr<WritableFile>* out) = 0;
  // Env::OpenRegularFile for `name`.
  virtual Status OpenRegularFile(const std::string& name, std::unique_ptr<RegularFile>* out) = 0;
  // Env::RenameNoReplace from `from` to `to`, both in this directory.
  virtual Status RenameNoReplace(const std::string& from, const std::string& to) = 0;
  virtual Status RemoveFile(const std::string& name) = 0;
  // Makes the directory's entries durable (fsync on it).
  virtual Status Sync() = 0;
};

// An exclusive lock on a file, held until Env::UnlockFile (or until the process dies).
class FileLock {
 public:
  virtual ~FileLock() = default;
};

class Env {
 public:
  enum class OpenMode { kCreateNew, kTruncate, kOpenExisting };

  virtual ~Env() = default;

  // The process-wide POSIX Env. Never deleted.
  static Env* Default();

  virtual Status NewWritableFile(const std::string& path, OpenMode mode, std::unique_ptr<WritableFile>* out) = 0;
  virtual Status NewRandomAccessFile(const std::string& path, std::unique_ptr<RandomAccessFile>* out) = 0;

  // Opens `path` only if it is itself a regular file: a symlink as its last component is not followed and a
  // FIFO, socket, device or directory is refused without blocking (InvalidArgument, naming what it is);
  // NotFound when missing. For a file another process may swap between a check and an open.
  virtual Status OpenRegularFile(const std::string& path, std::unique_ptr<RegularFile>* out) = 0;

  // Opens the directory at `path` (links along it are followed: it is where the path leads now).
  virtual Status OpenDirectory(const std::string& path, std::unique_ptr<Directory>* out) = 0;

  virtual Status GetFileInfo(const std::string& path, FileInfo* info) = 0;  // lstat: links are not followed
  virtual Status GetChildren(const std::string& dir, std::vector<std::string>* names) = 0;
  virtual Status CreateDir(const std::string& dir) = 0;  // OK if it already exists as a directory
  virtual Status RemoveFile(const std::string& path) = 0;
  virtual Status RemoveDir(const std::string& dir) = 0;  // only an empty directory
  // Atomically replaces `to` with `from` (rename(2)).
  virtual Status RenameFile(const std::string& from, const std::string& to) = 0;
  // Atomically renames `from` to `to` unless `to` exists: AlreadyExists then, and nothing changes.
  virtual Status RenameNoReplace(const std::string& from, const std::string& to) = 0;
  // Makes the directory's entries (creates, renames, removes) durable (fsync on the directory).
  virtual Status SyncDir(const std::string& dir) = 0;
  // The canonical absolute path with every symlink resolved (realpath(3)); NotFound when missing.
  virtual Status RealPath(const std::string& path, std::string* out) = 0;

  // Takes an exclusive, non-blocking lock on `path` (created if missing), writing `owner` into it.
  // Busy when another holder has it; the message then names the holder written in the file.
  virtual Status LockFile(const std::string& path, const std::string& owner, std::unique_ptr<FileLock>* lock) = 0;

  // Wall-clock time in microseconds since the Unix epoch (overridable so tests can move time).
  virtual int64_t NowMicros() = 0;

  // Convenience: reads a whole file.
  Status ReadFileToString(const std::string& path, std::string* out);
  // Convenience: writes a file durably and atomically: temp file, sync, rename, sync dir; removes the
  // temp on failure.
  Status WriteFileAtomically(const std::string& path, std::string_view data);
};

std::string JoinPath(const std::string& dir, const std::string& name);
// Creates `dir` and any missing parents (mkdir -p), syncing each parent so the new entries are durable.
Status CreateDirs(Env* env, const std::string& dir);
// Removes `path` and, for a directory, everything below it (symlinks are removed, never followed).
// OK when it does not exist.
Status RemoveRecursively(Env* env, const std::string& path);
std::string DirName(const std::string& path);
// OK when `name` is one path component a Directory may be asked about: not empty, not "." or "..", no '/'.
Status CheckEntryName(const std::string& name);
std::string BaseName(const std::string& path);

}  // namespace comfymq
