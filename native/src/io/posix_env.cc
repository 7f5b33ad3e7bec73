// The real Env: POSIX calls with EINTR handled, errors turned into Status values that name the path.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  // sync_file_range
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include <string>

#include "comfymq/env.h"

namespace comfymq {
namespace {

Status PosixError(const std::string& what, const std::string& path, int err) {
  std::string msg = what + " " + path + ": " + strerror(err);
  if (err == ENOENT) return Status::NotFound(msg);
  if (err == ENOSPC || err == EDQUOT) return Status::NoSpace(msg);
  if (err == EEXIST) return Status::AlreadyExists(msg);
  return Status::IOError(msg);
}

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  Status Append(std::string_view data) override {
    off_t end = ::lseek(fd_, 0, SEEK_END);
    if (end < 0) return PosixError("seek", path_, errno);
    return WriteAt(static_cast<uint64_t>(end), data);
  }

  Status WriteAt(uint64_t offset, std::string_view data) override {
    const char* p = data.data();
    size_t left = data.size();
    while (left > 0) {
      ssize_t n = ::pwrite(fd_, p, left, static_cast<off_t>(offset));
      if (n < 0) {
        if (errno == EINTR) continue;
        return PosixError("write", path_, errno);
      }
      p += n;
      left -= static_cast<size_t>(n);
      offset += static_cast<uint64_t>(n);
    }
    return Status::OK();
  }

  Status Allocate(uint64_t size) override {
    int err = ::posix_fallocate(fd_, 0, static_cast<off_t>(size));
    if (err != 0) return PosixError("allocate", path_, err);
    return Status::OK();
  }

  Status Truncate(uint64_t size) override {
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) return PosixError("truncate", path_, errno);
    return Status::OK();
  }

  Status Sync() override {
    if (::fdatasync(fd_) != 0) return PosixError("fdatasync", path_, errno);
    return Status::OK();
  }

  void StartWriteback(uint64_t offset, uint64_t len) override {
    ::sync_file_range(fd_, static_cast<off64_t>(offset), static_cast<off64_t>(len), SYNC_FILE_RANGE_WRITE);
  }

  Status Close() override {
    if (fd_ < 0) return Status::OK();
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) return PosixError("close", path_, errno);
    return Status::OK();
  }

 private:
  std::string path_;
  int fd_;
};

class PosixRandomAccessFile final : public RandomAccessFile {
 public:
  PosixRandomAccessFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixRandomAccessFile() override { ::close(fd_); }

  Status Read(uint64_t offset, size_t n, std::string* out) const override {
    out->resize(n);
    size_t got = 0;
    while (got < n) {
      ssize_t r = ::pread(fd_, &(*out)[got], n - got, static_cast<off_t>(offset + got));
      if (r < 0) {
        if (errno == EINTR) continue;
        out->clear();
        return PosixError("read", path_, errno);
      }
      if (r == 0) break;
      got += static_cast<size_t>(r);
    }
    out->resize(got);
    return Status::OK();
  }

  Status Size(uint64_t* size) const override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return PosixError("stat", path_, errno);
    *size = static_cast<uint64_t>(st.st_size);
    return Status::OK();
  }

 private:
  std::string path_;
  int fd_;
};

// Reads through a PosixRandomAccessFile on the descriptor it was checked on; Sync is fsync on that descriptor.
class PosixRegularFile final : public RegularFile {
 public:
  PosixRegularFile(std::string path, int fd) : path_(path), fd_(fd), reader_(std::move(path), fd) {}

  Status Read(uint64_t offset, size_t n, std::string* out) const override { return reader_.Read(offset, n, out); }
  Status Size(uint64_t* size) const override { return reader_.Size(size); }
  Status Sync() override {
    if (::fsync(fd_) != 0) return PosixError("fsync", path_, errno);
    return Status::OK();
  }

 private:
  std::string path_;
  int fd_;  // owned by reader_
  PosixRandomAccessFile reader_;
};

// File-system calls relative to a directory descriptor (AT_FDCWD: plain paths), shared by PosixEnv and
// PosixDirectory. `shown` is the path named in messages.

// lstat relative to dfd: a link is reported as one; info->exists false when missing.
Status StatAt(int dfd, const std::string& name, const std::string& shown, FileInfo* info) {
  *info = FileInfo();
  struct stat st;
  if (::fstatat(dfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return Status::OK();
    return PosixError("stat", shown, errno);
  }
  info->exists = true;
  info->is_dir = S_ISDIR(st.st_mode);
  info->is_symlink = S_ISLNK(st.st_mode);
  info->is_regular = S_ISREG(st.st_mode);
  info->size = static_cast<uint64_t>(st.st_size);
  info->mtime_us = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000 + st.st_mtim.tv_nsec / 1000;
  return Status::OK();
}

// OK if `name` exists as a directory afterwards; follow_existing: a link to a directory counts as one.
Status CreateDirAt(int dfd, const std::string& name, const std::string& shown, bool follow_existing) {
  if (::mkdirat(dfd, name.c_str(), 0755) == 0) return Status::OK();
  const int err = errno;
  if (err == EEXIST) {
    struct stat st;
    if (::fstatat(dfd, name.c_str(), &st, follow_existing ? 0 : AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
      return Status::OK();
    }
    return Status::AlreadyExists("create dir " + shown + ": exists and is not a directory");
  }
  return PosixError("create dir", shown, err);
}

Status RenameNoReplaceAt(int dfd, const std::string& from, const std::string& to, const std::string& shown) {
#ifdef SYS_renameat2
  long rc = ::syscall(SYS_renameat2, dfd, from.c_str(), dfd, to.c_str(), 1 /*RENAME_NOREPLACE*/);
  if (rc == 0) return Status::OK();
  int err = errno;
  if (err != EINVAL && err != ENOSYS && err != ENOTSUP) return PosixError("rename", shown, err);
#endif
  // File systems without renameat2 (some NAS mounts): link() fails with EEXIST atomically.
  if (::linkat(dfd, from.c_str(), dfd, to.c_str(), 0) != 0) return PosixError("link", shown, errno);
  ::unlinkat(dfd, from.c_str(), 0);  // the file is published under `to` either way; a leftover temp is cleaned later
  return Status::OK();
}

Status OpenRegularAt(int dfd, const std::string& name, const std::string& shown, std::unique_ptr<RegularFile>* out) {
  int fd;
  do {  // O_NONBLOCK: a FIFO opens at once (and is refused below) instead of waiting for a writer
    fd = ::openat(dfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0 && errno == ELOOP)
    return Status::InvalidArgument("open " + shown + ": is a symbolic link, not a regular file");
  if (fd < 0) return PosixError("open", shown, errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return PosixError("stat", shown, err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    const char* what = S_ISDIR(st.st_mode)    ? "a directory"
                       : S_ISFIFO(st.st_mode) ? "a FIFO"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                                              : "a device";
    return Status::InvalidArgument("open " + shown + ": is " + std::string(what) + ", not a regular file");
  }
  out->reset(new PosixRegularFile(shown, fd));
  return Status::OK();
}

// Reads every entry but "." and ".." into *names, then closes d.
void ListEntries(DIR* d, std::vector<std::string>* names) {
  names->clear();
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names->push_back(std::move(n));
  }
  ::closedir(d);
}

// fsync on a directory descriptor (EINVAL: a file system that cannot sync directories, nothing to do).
Status SyncDirFd(int fd, const std::string& shown) {
  if (::fsync(fd) != 0 && errno != EINVAL) return PosixError("fsync dir", shown, errno);
  return Status::OK();
}

// Opens a directory relative to dfd; nofollow: a link as the last component is refused (InvalidArgument).
Status OpenDirAt(int dfd, const std::string& name, const std::string& shown, bool nofollow, int* out) {
  int fd;
  do {
    fd = ::openat(dfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | (nofollow ? O_NOFOLLOW : 0));
  } while (fd < 0 && errno == EINTR);
  if (fd >= 0) {
    *out = fd;
    return Status::OK();
  }
  const int err = errno;
  if (err == ELOOP || err == ENOTDIR) {
    FileInfo fi;
    if (StatAt(dfd, name, shown, &fi).ok() && fi.exists) {
      return Status::InvalidArgument("open dir " + shown + ": is " +
                                     std::string(fi.is_symlink ? "a symbolic link" : "not a directory"));
    }
  }
  return PosixError("open dir", shown, err);
}

class PosixDirectory final : public Directory {
 public:
  PosixDirectory(std::string path, int fd) : path_(std::move(path)), fd_(fd) {
    struct stat st;
    if (::fstat(fd_, &st) == 0) {
      identity_ = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
    } else {
      identity_ = "fd:" + std::to_string(fd_);  // unknown: equal to no other open handle
    }
  }
  ~PosixDirectory() override { ::close(fd_); }

  const std::string& path() const override { return path_; }
  const std::string& identity() const override { return identity_; }
  Status List(std::vector<std::string>* names) override {
    const int fd = ::openat(fd_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);  // fdopendir owns and moves its fd
    if (fd < 0) return PosixError("list", path_, errno);
    DIR* d = ::fdopendir(fd);
    if (d == nullptr) {
      const int err = errno;
      ::close(fd);
      return PosixError("list", path_, err);
    }
    ListEntries(d, names);
    return Status::OK();
  }
  Status Stat(const std::string& name, FileInfo* info) override {
    CMQ_RETURN_IF_ERROR(CheckEntryName(name));
    return StatAt(fd_, name, Shown(name), info);
  }
  Status OpenSubdir(const std::string& name, std::unique_ptr<Directory>* out) override {
    CMQ_RETURN_IF_ERROR(CheckEntryName(name));
    int fd;
    CMQ_RETURN_IF_ERROR(OpenDirAt(fd_, name, Shown(name), /*nofollow=*/true, &fd));
    out->reset(new PosixDirectory(Shown(name), fd));
    return Status::OK();
  }
  Status CreateSubdir(const std::string& name) override {
    CMQ_RETURN_IF_ERROR(CheckEntryName(name));
    return CreateDirAt(fd_, name, Shown(name), /*follow_existing=*/false);
  }
  Status NewFile(const std::string& name, std::unique_ptr<WritableFile>* out) override {
    CMQ_RETURN_IF_ERROR(CheckEntryName(name));
    int fd;
    do {
      fd = ::openat(fd_, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return PosixError("open", Shown(name), errno);
    out->reset(new PosixWritableFile(Shown(name), fd));
    return Status::OK();
  }
  Status OpenRegularFile(const std::string& name, std::unique_ptr<RegularFile>* out) override {
    CMQ_RETURN_IF_ERROR(CheckEntryName(name));
    return OpenRegularAt(fd_, name, Shown(name), out);
  }
  Status RenameNoReplace(const std::string& from, const std::string& to) override {
    CMQ_RETURN_IF_ERROR(CheckEntryName(from));
    CMQ_RETURN_IF_ERROR(CheckEntryName(to));
    return RenameNoReplaceAt(fd_, from, to, Shown(from) + " -> " + to);
  }
  Status RemoveFile(const std::string& name) override {
    CMQ_RETURN_IF_ERROR(CheckEntryName(name));
    if (::unlinkat(fd_, name.c_str(), 0) != 0) return PosixError("remove", Shown(name), errno);
    return Status::OK();
  }
  Status Sync() override { return SyncDirFd(fd_, path_); }

 private:
  std::string Shown(const std::string& name) const { return JoinPath(path_, name); }
  std::string path_;
  int fd_;
  std::string identity_;
};

class PosixFileLock final : public FileLock {
 public:
  explicit PosixFileLock(int fd) : fd_(fd) {}
  ~PosixFileLock() override {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }

 private:
  int fd_;
};

class PosixEnv final : public Env {
 public:
  Status NewWritableFile(const std::string& path, OpenMode mode, std::unique_ptr<WritableFile>* out) override {
    int flags = O_WRONLY | O_CLOEXEC;
    if (mode == OpenMode::kCreateNew) flags |= O_CREAT | O_EXCL;
    if (mode == OpenMode::kTruncate) flags |= O_CREAT | O_TRUNC;
    int fd;
    do {
      fd = ::open(path.c_str(), flags, 0644);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return PosixError("open", path, errno);
    out->reset(new PosixWritableFile(path, fd));
    return Status::OK();
  }

  Status NewRandomAccessFile(const std::string& path, std::unique_ptr<RandomAccessFile>* out) override {
    int fd;
    do {
      fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return PosixError("open", path, errno);
    out->reset(new PosixRandomAccessFile(path, fd));
    return Status::OK();
  }

  Status OpenRegularFile(const std::string& path, std::unique_ptr<RegularFile>* out) override {
    return OpenRegularAt(AT_FDCWD, path, path, out);
  }

  Status OpenDirectory(const std::string& path, std::unique_ptr<Directory>* out) override {
    int fd;
    CMQ_RETURN_IF_ERROR(OpenDirAt(AT_FDCWD, path, path, /*nofollow=*/false, &fd));
    out->reset(new PosixDirectory(path, fd));
    return Status::OK();
  }

  Status GetFileInfo(const std::string& path, FileInfo* info) override { return StatAt(AT_FDCWD, path, path, info); }

  Status GetChildren(const std::string& dir, std::vector<std::string>* names) override {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return PosixError("list", dir, errno);
    ListEntries(d, names);
    return Status::OK();
  }

  Status CreateDir(const std::string& dir) override {
    return CreateDirAt(AT_FDCWD, dir, dir, /*follow_existing=*/true);
  }

  Status RemoveFile(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return PosixError("remove", path, errno);
    return Status::OK();
  }

  Status RemoveDir(const std::string& dir) override {
    if (::rmdir(dir.c_str()) != 0) return PosixError("remove dir", dir, errno);
    return Status::OK();
  }

  Status RenameFile(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) return PosixError("rename", from + " -> " + to, errno);
    return Status::OK();
  }

  Status RenameNoReplace(const std::string& from, const std::string& to) override {
    return RenameNoReplaceAt(AT_FDCWD, from, to, from + " -> " + to);
  }

  Status SyncDir(const std::string& dir) override {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return PosixError("open dir", dir, errno);
    Status s = SyncDirFd(fd, dir);
    ::close(fd);
    return s;
  }

  Status RealPath(const std::string& path, std::string* out) override {
    char buf[PATH_MAX];
    if (::realpath(path.c_str(), buf) == nullptr) return PosixError("resolve", path, errno);
    *out = buf;
    return Status::OK();
  }

  Status LockFile(const std::string& path, const std::string& owner, std::unique_ptr<FileLock>* lock) override {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return PosixError("open lock file", path, errno);
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      int err = errno;
      std::string holder(256, '\0');
      ssize_t n = ::pread(fd, &holder[0], holder.size(), 0);
      holder.resize(n > 0 ? static_cast<size_t>(n) : 0);
      ::close(fd);
      if (err == EWOULDBLOCK) {
        return Status::Busy(path + " is locked by another process" +
                            (holder.empty() ? std::string() : " (" + holder + ")"));
      }
      return PosixError("lock", path, err);
    }
    if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, owner.data(), owner.size(), 0) < 0) {
      // The lock is held; the owner note is only informative.
    }
    lock->reset(new PosixFileLock(fd));
    return Status::OK();
  }

  int64_t NowMicros() override {
    struct timeval tv;
    ::gettimeofday(&tv, nullptr);
    return static_cast<int64_t>(tv.tv_sec) * 1000000 + tv.tv_usec;
  }
};

}  // namespace

Env* Env::Default() {
  static PosixEnv* env = new PosixEnv();
  return env;
}

}  // namespace comfymq
