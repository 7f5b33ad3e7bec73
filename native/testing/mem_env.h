// MemEnv: an Env held entirely in memory that models what a disk keeps across a power cut. Test code (the
// comfymq_testing library, with the tests and benchmarks): never part of the product.
//
// Every file has its current bytes and the bytes last made durable by Sync; every directory has its
// current entries and the entries last made durable by SyncDir. CrashImage() returns a new MemEnv holding
// what a power cut at this instant would leave behind: durable data, plus part of what was written but not
// synced (an in-order prefix with the last write torn, or random 512-byte sectors), and only the durable
// directory entries. Used by the power-loss tests; also handy for fast unit tests.
//
// Fault injection: SetFaultHook installs a function consulted before each operation; a non-OK return
// fails that operation without side effects. The hook runs without the file system's lock held, so a hook
// that blocks holds up only the operation it was asked about (tests use that to hold a sync open). SetCapacity makes
// writes beyond a byte budget fail NoSpace. Time: NowMicros is the real clock until SetNowMicros pins it (then
// AdvanceMicros moves it). Thread-safe: one mutex guards the whole file system.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>

#include "comfymq/env.h"

namespace comfymq {

class MemEnv final : public Env {
 public:
  enum class CrashMode {
    kTornPrefix,    // unsynced writes survive in order up to a random point; the write there is torn
    kRandomSectors  // each 512-byte sector of unsynced data survives or not, independently
  };
  // The file-system operations a fault hook is asked about.
  enum class Op {
    kCreate,
    kWrite,
    kAllocate,
    kTruncate,
    kSync,
    kClose,
    kRead,
    kRemove,
    kRename,
    kSyncDir,
    kMkdir,
    kLock,
    kList
  };
  static const char* OpName(Op op);  // "write", "syncdir", ... (for messages)
  using FaultHook = std::function<Status(Op op, const std::string& path)>;

  MemEnv();
  ~MemEnv() override;

  std::unique_ptr<MemEnv> CrashImage(std::mt19937_64& rng, CrashMode mode) const;

  void SetFaultHook(FaultHook hook);
  void SetCapacity(uint64_t bytes);  // 0 = unlimited
  uint64_t UsedBytes() const;
  void SetNowMicros(int64_t now);
  void AdvanceMicros(int64_t delta);
  // Counts of calls since creation, for tests that check how many syncs a workload made.
  uint64_t sync_count() const;

  Status NewWritableFile(const std::string& path, OpenMode mode, std::unique_ptr<WritableFile>* out) override;
  Status NewRandomAccessFile(const std::string& path, std::unique_ptr<RandomAccessFile>* out) override;
  Status OpenRegularFile(const std::string& path, std::unique_ptr<RegularFile>* out) override;
  Status OpenDirectory(const std::string& path, std::unique_ptr<Directory>* out) override;
  Status GetFileInfo(const std::string& path, FileInfo* info) override;
  Status GetChildren(const std::string& dir, std::vector<std::string>* names) override;
  Status CreateDir(const std::string& dir) override;
  Status RemoveFile(const std::string& path) override;
  Status RemoveDir(const std::string& dir) override;
  Status RenameFile(const std::string& from, const std::string& to) override;
  Status RenameNoReplace(const std::string& from, const std::string& to) override;
  Status SyncDir(const std::string& dir) override;
  Status RealPath(const std::string& path, std::string* out) override;
  Status LockFile(const std::string& path, const std::string& owner, std::unique_ptr<FileLock>* lock) override;
  int64_t NowMicros() override;

  struct Inode;  // implementation detail, public for the file classes in mem_env.cc

 private:
  friend class MemWritableFile;
  friend class MemRandomAccessFile;
  friend class MemRegularFile;
  friend class MemFileLock;
  struct Entry {
    bool is_dir = false;
    std::shared_ptr<Inode> inode;  // null for directories
  };

  Status Fault(Op op, const std::string& path) const;  // requires mu_
  Status CheckParentLocked(const std::string& path) const;
  // A file's Sync (writer or RegularFile): its current bytes become its durable ones.
  Status SyncInode(const std::string& path, Inode* inode);
  Status RenameLocked(const std::string& from, const std::string& to, bool replace);
  Status ReserveLocked(uint64_t old_size, uint64_t new_size);

  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;          // current namespace
  std::map<std::string, Entry> durable_entries_;  // namespace as of each dir's last SyncDir
  std::set<std::string> locks_;
  mutable std::mutex hook_mu_;  // guards fault_hook_ only: hooks run without mu_ held
  std::shared_ptr<const FaultHook> fault_hook_;
  uint64_t capacity_ = 0;
  uint64_t used_ = 0;
  bool manual_clock_ = false;
  int64_t now_us_ = 0;
  uint64_t syncs_ = 0;
};

}  // namespace comfymq
