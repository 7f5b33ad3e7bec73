#include "testing/mem_env.h"

#include <sys/time.h>

#include <algorithm>
#include <vector>

namespace comfymq {

struct MemEnv::Inode {
  std::string data;     // current contents
  std::string durable;  // contents as of the last Sync
  // Unsynced writes since the last Sync, in order: (offset, length). Used to tear at a crash.
  std::vector<std::pair<uint64_t, uint64_t>> unsynced;
};

namespace {

std::string Normalize(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

}  // namespace

class MemWritableFile final : public WritableFile {
 public:
  MemWritableFile(MemEnv* env, std::string path, std::shared_ptr<MemEnv::Inode> inode)
      : env_(env), path_(std::move(path)), inode_(std::move(inode)) {}

  Status Append(std::string_view data) override {
    uint64_t end;
    {
      std::lock_guard<std::mutex> l(env_->mu_);
      end = inode_->data.size();
    }
    return WriteAt(end, data);
  }

  Status WriteAt(uint64_t offset, std::string_view data) override {
    CMQ_RETURN_IF_ERROR(env_->Fault(MemEnv::Op::kWrite, path_));
    std::lock_guard<std::mutex> l(env_->mu_);
    uint64_t old_size = inode_->data.size();
    uint64_t new_size = std::max<uint64_t>(old_size, offset + data.size());
    CMQ_RETURN_IF_ERROR(env_->ReserveLocked(old_size, new_size));
    if (new_size > old_size) inode_->data.resize(new_size, '\0');
    std::copy(data.begin(), data.end(), inode_->data.begin() + static_cast<std::ptrdiff_t>(offset));
    inode_->unsynced.emplace_back(offset, data.size());
    return Status::OK();
  }

  Status Allocate(uint64_t size) override {
    CMQ_RETURN_IF_ERROR(env_->Fault(MemEnv::Op::kAllocate, path_));
    std::lock_guard<std::mutex> l(env_->mu_);
    uint64_t old_size = inode_->data.size();
    if (size <= old_size) return Status::OK();
    CMQ_RETURN_IF_ERROR(env_->ReserveLocked(old_size, size));
    inode_->data.resize(size, '\0');
    return Status::OK();
  }

  Status Truncate(uint64_t size) override {
    CMQ_RETURN_IF_ERROR(env_->Fault(MemEnv::Op::kTruncate, path_));
    std::lock_guard<std::mutex> l(env_->mu_);
    uint64_t old_size = inode_->data.size();
    CMQ_RETURN_IF_ERROR(env_->ReserveLocked(old_size, size));
    inode_->data.resize(size, '\0');
    return Status::OK();
  }

  Status Sync() override { return env_->SyncInode(path_, inode_.get()); }

  Status Close() override { return env_->Fault(MemEnv::Op::kClose, path_); }

 private:
  MemEnv* env_;
  std::string path_;
  std::shared_ptr<MemEnv::Inode> inode_;
};

class MemRandomAccessFile final : public RandomAccessFile {
 public:
  MemRandomAccessFile(MemEnv* env, std::string path, std::shared_ptr<MemEnv::Inode> inode)
      : env_(env), path_(std::move(path)), inode_(std::move(inode)) {}

  Status Read(uint64_t offset, size_t n, std::string* out) const override {
    CMQ_RETURN_IF_ERROR(env_->Fault(MemEnv::Op::kRead, path_));
    std::lock_guard<std::mutex> l(env_->mu_);
    const std::string& d = inode_->data;
    if (offset >= d.size()) {
      out->clear();
      return Status::OK();
    }
    size_t len = std::min<uint64_t>(n, d.size() - offset);
    out->assign(d, static_cast<size_t>(offset), len);
    return Status::OK();
  }

  Status Size(uint64_t* size) const override {
    std::lock_guard<std::mutex> l(env_->mu_);
    *size = inode_->data.size();
    return Status::OK();
  }

 private:
  MemEnv* env_;
  std::string path_;
  std::shared_ptr<MemEnv::Inode> inode_;
};

// Reads through a MemRandomAccessFile; Sync makes the inode's bytes durable, as a writer's Sync does.
class MemRegularFile final : public RegularFile {
 public:
  MemRegularFile(MemEnv* env, std::string path, std::shared_ptr<MemEnv::Inode> inode)
      : env_(env), path_(path), inode_(inode), reader_(env, std::move(path), std::move(inode)) {}

  Status Read(uint64_t offset, size_t n, std::string* out) const override { return reader_.Read(offset, n, out); }
  Status Size(uint64_t* size) const override { return reader_.Size(size); }
  Status Sync() override { return env_->SyncInode(path_, inode_.get()); }

 private:
  MemEnv* env_;
  std::string path_;
  std::shared_ptr<MemEnv::Inode> inode_;
  MemRandomAccessFile reader_;
};

// Path-based: MemEnv has no links, so a directory's path always leads to it.
class MemDirectory final : public Directory {
 public:
  MemDirectory(MemEnv* env, std::string path) : env_(env), path_(std::move(path)) {}

  const std::string& path() const override { return path_; }
  const std::string& identity() const override { return path_; }  // no links, no directory renames: its path
  Status List(std::vector<std::string>* names) override { return env_->GetChildren(path_, names); }
  Status Stat(const std::string& name, FileInfo* info) override {
    CMQ_RETURN_IF_ERROR(CheckEntryName(name));
    return env_->GetFileInfo(JoinPath(path_, name), info);
  }
  Status OpenSubdir(const std::string& name, std::unique_ptr<Directory>* out) override {
    CMQ_RETURN_IF_ERROR(CheckEntryName(name));
    return env_->OpenDirectory(JoinPath(path_, name), out);
  }
  Status CreateSubdir(const std::string& name) override {
    CMQ_RETURN_IF_ERROR(CheckEntryName(name));
    return env_->CreateDir(JoinPath(path_, name));
  }
  Status NewFile(const std::string& name, std::unique_ptr<WritableFile>* out) override {
    CMQ_RETURN_IF_ERROR(CheckEntryName(name));
    return env_->NewWritableFile(JoinPath(path_, name), Env::OpenMode::kCreateNew, out);
  }
  Status OpenRegularFile(const std::string& name, std::unique_ptr<RegularFile>* out) override {
    CMQ_RETURN_IF_ERROR(CheckEntryName(name));
    return env_->OpenRegularFile(JoinPath(path_, name), out);
  }
  Status RenameNoReplace(const std::string& from, const std::string& to) override {
    CMQ_RETURN_IF_ERROR(CheckEntryName(from));
    CMQ_RETURN_IF_ERROR(CheckEntryName(to));
    return env_->RenameNoReplace(JoinPath(path_, from), JoinPath(path_, to));
  }
  Status RemoveFile(const std::string& name) override {
    CMQ_RETURN_IF_ERROR(CheckEntryName(name));
    return env_->RemoveFile(JoinPath(path_, name));
  }
  Status Sync() override { return env_->SyncDir(path_); }

 private:
  MemEnv* env_;
  std::string path_;
};

class MemFileLock final : public FileLock {
 public:
  MemFileLock(MemEnv* env, std::string path) : env_(env), path_(std::move(path)) {}
  ~MemFileLock() override {
    std::lock_guard<std::mutex> l(env_->mu_);
    env_->locks_.erase(path_);
  }

 private:
  MemEnv* env_;
  std::string path_;
};

MemEnv::MemEnv() {
  entries_["/"] = Entry{true, nullptr};
  durable_entries_["/"] = Entry{true, nullptr};
}

MemEnv::~MemEnv() = default;

const char* MemEnv::OpName(Op op) {
  switch (op) {
    case Op::kCreate: return "create";
    case Op::kWrite: return "write";
    case Op::kAllocate: return "allocate";
    case Op::kTruncate: return "truncate";
    case Op::kSync: return "sync";
    case Op::kClose: return "close";
    case Op::kRead: return "read";
    case Op::kRemove: return "remove";
    case Op::kRename: return "rename";
    case Op::kSyncDir: return "syncdir";
    case Op::kMkdir: return "mkdir";
    case Op::kLock: return "lock";
    case Op::kList: return "list";
  }
  return "?";
}

Status MemEnv::Fault(Op op, const std::string& path) const {
  std::shared_ptr<const FaultHook> hook;
  {
    std::lock_guard<std::mutex> l(hook_mu_);
    hook = fault_hook_;
  }
  return hook && *hook ? (*hook)(op, path) : Status::OK();
}

Status MemEnv::ReserveLocked(uint64_t old_size, uint64_t new_size) {
  if (new_size <= old_size) {
    used_ -= old_size - new_size;
    return Status::OK();
  }
  uint64_t grow = new_size - old_size;
  if (capacity_ != 0 && used_ + grow > capacity_) {
    return Status::NoSpace("no space left on device (MemEnv capacity " + std::to_string(capacity_) + ")");
  }
  used_ += grow;
  return Status::OK();
}

Status MemEnv::CheckParentLocked(const std::string& path) const {
  auto it = entries_.find(DirName(path));
  if (it == entries_.end()) return Status::NotFound("parent directory of " + path + " does not exist");
  if (!it->second.is_dir) return Status::IOError("parent of " + path + " is not a directory");
  return Status::OK();
}

void MemEnv::SetFaultHook(FaultHook hook) {
  auto shared = std::make_shared<const FaultHook>(std::move(hook));
  std::lock_guard<std::mutex> l(hook_mu_);
  fault_hook_ = std::move(shared);
}

void MemEnv::SetCapacity(uint64_t bytes) {
  std::lock_guard<std::mutex> l(mu_);
  capacity_ = bytes;
}

uint64_t MemEnv::UsedBytes() const {
  std::lock_guard<std::mutex> l(mu_);
  return used_;
}

void MemEnv::SetNowMicros(int64_t now) {
  std::lock_guard<std::mutex> l(mu_);
  manual_clock_ = true;
  now_us_ = now;
}

void MemEnv::AdvanceMicros(int64_t delta) {
  std::lock_guard<std::mutex> l(mu_);
  if (!manual_clock_) {
    struct timeval tv;
    ::gettimeofday(&tv, nullptr);
    now_us_ = static_cast<int64_t>(tv.tv_sec) * 1000000 + tv.tv_usec;
    manual_clock_ = true;
  }
  now_us_ += delta;
}

uint64_t MemEnv::sync_count() const {
  std::lock_guard<std::mutex> l(mu_);
  return syncs_;
}

int64_t MemEnv::NowMicros() {
  std::lock_guard<std::mutex> l(mu_);
  if (manual_clock_) return now_us_;
  struct timeval tv;
  ::gettimeofday(&tv, nullptr);
  return static_cast<int64_t>(tv.tv_sec) * 1000000 + tv.tv_usec;
}

Status MemEnv::NewWritableFile(const std::string& raw, OpenMode mode, std::unique_ptr<WritableFile>* out) {
  const std::string path = Normalize(raw);
  CMQ_RETURN_IF_ERROR(Fault(Op::kCreate, path));
  std::lock_guard<std::mutex> l(mu_);
  CMQ_RETURN_IF_ERROR(CheckParentLocked(path));
  auto it = entries_.find(path);
  if (it != entries_.end() && it->second.is_dir) return Status::IOError("open " + path + ": is a directory");
  std::shared_ptr<Inode> inode;
  if (it == entries_.end()) {
    if (mode == OpenMode::kOpenExisting) return Status::NotFound("open " + path + ": no such file");
    inode = std::make_shared<Inode>();
    entries_[path] = Entry{false, inode};
  } else {
    if (mode == OpenMode::kCreateNew) return Status::AlreadyExists("open " + path + ": file exists");
    inode = it->second.inode;
    if (mode == OpenMode::kTruncate) {
      ReserveLocked(inode->data.size(), 0).IgnoreError();
      inode->data.clear();
      inode->unsynced.clear();
    }
  }
  out->reset(new MemWritableFile(this, path, inode));
  return Status::OK();
}

Status MemEnv::NewRandomAccessFile(const std::string& raw, std::unique_ptr<RandomAccessFile>* out) {
  const std::string path = Normalize(raw);
  CMQ_RETURN_IF_ERROR(Fault(Op::kRead, path));
  std::lock_guard<std::mutex> l(mu_);
  auto it = entries_.find(path);
  if (it == entries_.end()) return Status::NotFound("open " + path + ": no such file");
  if (it->second.is_dir) return Status::IOError("open " + path + ": is a directory");
  out->reset(new MemRandomAccessFile(this, path, it->second.inode));
  return Status::OK();
}

Status MemEnv::SyncInode(const std::string& path, Inode* inode) {
  CMQ_RETURN_IF_ERROR(Fault(Op::kSync, path));
  std::lock_guard<std::mutex> l(mu_);
  inode->durable = inode->data;
  inode->unsynced.clear();
  syncs_++;
  return Status::OK();
}

Status MemEnv::OpenRegularFile(const std::string& raw, std::unique_ptr<RegularFile>* out) {
  const std::string path = Normalize(raw);
  CMQ_RETURN_IF_ERROR(Fault(Op::kRead, path));
  std::lock_guard<std::mutex> l(mu_);
  auto it = entries_.find(path);
  if (it == entries_.end()) return Status::NotFound("open " + path + ": no such file");
  if (it->second.is_dir) return Status::InvalidArgument("open " + path + ": is a directory, not a regular file");
  out->reset(new MemRegularFile(this, path, it->second.inode));
  return Status::OK();
}

Status MemEnv::OpenDirectory(const std::string& raw, std::unique_ptr<Directory>* out) {
  const std::string path = Normalize(raw);
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = entries_.find(path);
    if (it == entries_.end()) return Status::NotFound("open dir " + path + ": no such directory");
    if (!it->second.is_dir) return Status::InvalidArgument("open dir " + path + ": is not a directory");
  }
  out->reset(new MemDirectory(this, path));
  return Status::OK();
}

Status MemEnv::GetFileInfo(const std::string& raw, FileInfo* info) {
  const std::string path = Normalize(raw);
  std::lock_guard<std::mutex> l(mu_);
  *info = FileInfo();
  auto it = entries_.find(path);
  if (it == entries_.end()) return Status::OK();
  info->exists = true;
  info->is_dir = it->second.is_dir;
  info->is_regular = !it->second.is_dir;
  info->size = it->second.is_dir ? 0 : it->second.inode->data.size();
  return Status::OK();
}

Status MemEnv::GetChildren(const std::string& raw, std::vector<std::string>* names) {
  const std::string dir = Normalize(raw);
  CMQ_RETURN_IF_ERROR(Fault(Op::kList, dir));
  std::lock_guard<std::mutex> l(mu_);
  names->clear();
  auto d = entries_.find(dir);
  if (d == entries_.end() || !d->second.is_dir) return Status::NotFound("list " + dir + ": no such directory");
  const std::string prefix = dir == "/" ? "/" : dir + "/";
  for (auto it = entries_.lower_bound(prefix); it != entries_.end(); ++it) {
    if (it->first.compare(0, prefix.size(), prefix) != 0) break;
    std::string rest = it->first.substr(prefix.size());
    if (!rest.empty() && rest.find('/') == std::string::npos) names->push_back(rest);
  }
  return Status::OK();
}

Status MemEnv::CreateDir(const std::string& raw) {
  const std::string dir = Normalize(raw);
  CMQ_RETURN_IF_ERROR(Fault(Op::kMkdir, dir));
  std::lock_guard<std::mutex> l(mu_);
  auto it = entries_.find(dir);
  if (it != entries_.end()) {
    if (it->second.is_dir) return Status::OK();
    return Status::AlreadyExists("create dir " + dir + ": exists and is not a directory");
  }
  CMQ_RETURN_IF_ERROR(CheckParentLocked(dir));
  entries_[dir] = Entry{true, nullptr};
  return Status::OK();
}

Status MemEnv::RemoveFile(const std::string& raw) {
  const std::string path = Normalize(raw);
  CMQ_RETURN_IF_ERROR(Fault(Op::kRemove, path));
  std::lock_guard<std::mutex> l(mu_);
  auto it = entries_.find(path);
  if (it == entries_.end()) return Status::NotFound("remove " + path + ": no such file");
  if (it->second.is_dir) return Status::IOError("remove " + path + ": is a directory");
  // Space is only given back when no durable name refers to the inode any more; keep it simple and
  // release it now, as a real file system does once the last link goes.
  ReserveLocked(it->second.inode->data.size(), 0).IgnoreError();
  entries_.erase(it);
  return Status::OK();
}

Status MemEnv::RemoveDir(const std::string& raw) {
  const std::string dir = Normalize(raw);
  CMQ_RETURN_IF_ERROR(Fault(Op::kRemove, dir));
  std::lock_guard<std::mutex> l(mu_);
  auto it = entries_.find(dir);
  if (it == entries_.end() || !it->second.is_dir) return Status::NotFound("remove dir " + dir + ": no such directory");
  const std::string prefix = dir + "/";
  auto child = entries_.lower_bound(prefix);
  if (child != entries_.end() && child->first.compare(0, prefix.size(), prefix) == 0) {
    return Status::IOError("remove dir " + dir + ": directory not empty");
  }
  entries_.erase(it);
  return Status::OK();
}

Status MemEnv::RenameFile(const std::string& raw_from, const std::string& raw_to) {
  const std::string from = Normalize(raw_from);
  CMQ_RETURN_IF_ERROR(Fault(Op::kRename, from));
  std::lock_guard<std::mutex> l(mu_);
  return RenameLocked(from, Normalize(raw_to), true);
}

Status MemEnv::RenameLocked(const std::string& from, const std::string& to, bool replace) {
  if (!replace && entries_.count(to)) return Status::AlreadyExists("rename " + from + " -> " + to + ": target exists");
  auto it = entries_.find(from);
  if (it == entries_.end()) return Status::NotFound("rename " + from + ": no such file");
  if (it->second.is_dir) return Status::IOError("rename " + from + ": directories are not supported");
  CMQ_RETURN_IF_ERROR(CheckParentLocked(to));
  auto target = entries_.find(to);
  if (target != entries_.end()) {
    if (target->second.is_dir) return Status::IOError("rename onto directory " + to);
    ReserveLocked(target->second.inode->data.size(), 0).IgnoreError();
  }
  Entry e = it->second;
  entries_.erase(it);
  entries_[to] = e;
  return Status::OK();
}

Status MemEnv::RenameNoReplace(const std::string& raw_from, const std::string& raw_to) {
  const std::string from = Normalize(raw_from);
  CMQ_RETURN_IF_ERROR(Fault(Op::kRename, from));
  std::lock_guard<std::mutex> l(mu_);
  return RenameLocked(from, Normalize(raw_to), false);
}

Status MemEnv::SyncDir(const std::string& raw) {
  const std::string dir = Normalize(raw);
  CMQ_RETURN_IF_ERROR(Fault(Op::kSyncDir, dir));
  std::lock_guard<std::mutex> l(mu_);
  auto d = entries_.find(dir);
  if (d == entries_.end() || !d->second.is_dir) return Status::NotFound("sync dir " + dir + ": no such directory");
  const std::string prefix = dir == "/" ? "/" : dir + "/";
  auto is_child = [&](const std::string& p) {
    if (p.compare(0, prefix.size(), prefix) != 0 || p.size() == prefix.size()) return false;
    return p.find('/', prefix.size()) == std::string::npos;
  };
  for (auto it = durable_entries_.lower_bound(prefix); it != durable_entries_.end();) {
    if (it->first.compare(0, prefix.size(), prefix) != 0) break;
    if (is_child(it->first) && !entries_.count(it->first)) {
      it = durable_entries_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = entries_.lower_bound(prefix); it != entries_.end(); ++it) {
    if (it->first.compare(0, prefix.size(), prefix) != 0) break;
    if (is_child(it->first)) durable_entries_[it->first] = it->second;
  }
  return Status::OK();
}

Status MemEnv::RealPath(const std::string& raw, std::string* out) {
  const std::string path = Normalize(raw);
  std::lock_guard<std::mutex> l(mu_);
  if (path.empty() || path[0] != '/') return Status::InvalidArgument("MemEnv paths must be absolute: " + path);
  if (!entries_.count(path)) return Status::NotFound("resolve " + path + ": no such file or directory");
  // No symlinks in MemEnv; collapse "." and ".." textually.
  std::vector<std::string> parts;
  size_t i = 1;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    std::string part = path.substr(i, j - i);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    i = j + 1;
  }
  std::string r;
  for (auto& p : parts) r += "/" + p;
  *out = r.empty() ? "/" : r;
  return Status::OK();
}

Status MemEnv::LockFile(const std::string& raw, const std::string& owner, std::unique_ptr<FileLock>* lock) {
  const std::string path = Normalize(raw);
  {
    CMQ_RETURN_IF_ERROR(Fault(Op::kLock, path));
    std::lock_guard<std::mutex> l(mu_);
    if (locks_.count(path)) return Status::Busy(path + " is locked by another process");
    CMQ_RETURN_IF_ERROR(CheckParentLocked(path));
    locks_.insert(path);
    if (!entries_.count(path)) entries_[path] = Entry{false, std::make_shared<Inode>()};
    entries_[path].inode->data = owner;
  }
  lock->reset(new MemFileLock(this, path));
  return Status::OK();
}

std::unique_ptr<MemEnv> MemEnv::CrashImage(std::mt19937_64& rng, CrashMode mode) const {
  std::lock_guard<std::mutex> l(mu_);
  auto image = std::make_unique<MemEnv>();
  image->manual_clock_ = manual_clock_;
  image->now_us_ = now_us_;
  // Inodes may be shared by several durable names (rename kept the inode); tear each inode once.
  std::map<const Inode*, std::shared_ptr<Inode>> torn;
  auto tear = [&](const std::shared_ptr<Inode>& src) {
    auto found = torn.find(src.get());
    if (found != torn.end()) return found->second;
    auto out = std::make_shared<Inode>();
    std::string d = src->durable;
    if (!src->unsynced.empty()) {
      if (mode == CrashMode::kTornPrefix) {
        // Writes 0..k-1 survive whole, write k survives as a random prefix, the rest is lost.
        size_t k = std::uniform_int_distribution<size_t>(0, src->unsynced.size())(rng);
        for (size_t i = 0; i <= k && i < src->unsynced.size(); ++i) {
          uint64_t off = src->unsynced[i].first, len = src->unsynced[i].second;
          if (i == k) len = std::uniform_int_distribution<uint64_t>(0, len)(rng);
          if (off + len > d.size()) d.resize(off + len, '\0');
          // Overlapping unsynced writes are approximated with the final bytes (the store never overlaps them).
          std::copy(src->data.begin() + static_cast<std::ptrdiff_t>(off),
                    src->data.begin() + static_cast<std::ptrdiff_t>(std::min<uint64_t>(off + len, src->data.size())),
                    d.begin() + static_cast<std::ptrdiff_t>(off));
        }
      } else {
        for (auto [off, len] : src->unsynced) {
          for (uint64_t s = off - off % 512; s < off + len; s += 512) {
            if (std::uniform_int_distribution<int>(0, 1)(rng) == 0) continue;
            uint64_t a = std::max(s, off), b = std::min(s + 512, off + len);
            b = std::min<uint64_t>(b, src->data.size());
            if (a >= b) continue;
            if (b > d.size()) d.resize(b, '\0');
            std::copy(src->data.begin() + static_cast<std::ptrdiff_t>(a),
                      src->data.begin() + static_cast<std::ptrdiff_t>(b), d.begin() + static_cast<std::ptrdiff_t>(a));
          }
        }
      }
    }
    out->data = d;
    out->durable = d;
    torn[src.get()] = out;
    return out;
  };
  for (const auto& [path, entry] : durable_entries_) {
    // An entry survives only if every ancestor directory survived too.
    bool ok = true;
    for (std::string p = DirName(path); p != "/"; p = DirName(p)) {
      auto a = durable_entries_.find(p);
      if (a == durable_entries_.end() || !a->second.is_dir) {
        ok = false;
        break;
      }
      if (p == DirName(p)) break;
    }
    if (!ok && path != "/") continue;
    Entry e;
    e.is_dir = entry.is_dir;
    if (!entry.is_dir) e.inode = tear(entry.inode);
    image->entries_[path] = e;
    image->durable_entries_[path] = e;
  }
  for (const auto& [path, e] : image->entries_) {
    if (!e.is_dir) image->used_ += e.inode->data.size();
  }
  return image;
}

}  // namespace comfymq
