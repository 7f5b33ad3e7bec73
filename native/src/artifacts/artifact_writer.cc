#include "comfymq/artifact_writer.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <vector>

#include "util/process.h"
#include "util/sha256.h"

namespace comfymq {
namespace {

constexpr const char* kTempPrefix = ".cmq-tmp.";
constexpr int64_t kStaleTempMicros = 24ll * 3600 * 1000000;

std::string TagHostName() {
  std::string h = HostName();
  for (char& c : h) {
    if (c == '.' || c == '/') c = '_';
  }
  return h.empty() ? "host" : h;
}

uint64_t RandomToken() {
  thread_local std::mt19937_64 rng(std::random_device{}() ^
                                   static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  return rng();
}

// "name.ext" -> "name-<n>.ext"
std::string WithSuffix(const std::string& name, int n) {
  size_t dot = name.find_last_of('.');
  if (dot == std::string::npos || dot == 0) return name + "-" + std::to_string(n);
  return name.substr(0, dot) + "-" + std::to_string(n) + name.substr(dot);
}

// The '/'-separated components of a normalized relative path ("" has none).
std::vector<std::string> Components(const std::string& path) {
  std::vector<std::string> parts;
  for (size_t pos = 0; pos < path.size();) {
    size_t next = path.find('/', pos);
    if (next == std::string::npos) next = path.size();
    parts.push_back(path.substr(pos, next - pos));
    pos = next + 1;
  }
  return parts;
}

// "a/b/c.png" -> "a/b" and "c.png"; "c.png" -> "" and "c.png".
void SplitName(const std::string& norm, std::string* dir_rel, std::string* name) {
  const size_t slash = norm.find_last_of('/');
  *dir_rel = slash == std::string::npos ? "" : norm.substr(0, slash);
  *name = slash == std::string::npos ? norm : norm.substr(slash + 1);
}

bool Within(const std::string& path, const std::string& root) {
  if (path == root) return true;
  const std::string prefix = root == "/" ? "/" : root + "/";
  return path.compare(0, prefix.size(), prefix) == 0;
}

class WriterImpl;

// Everything a stream does to the file system happens in `dir`, the directory that was checked when it began
// (by its handle: a component of its path swapped for a link meanwhile changes nothing).
class StreamImpl final : public ArtifactStream {
 public:
  StreamImpl(std::shared_ptr<Directory> dir, std::string root, std::string dir_rel, std::string name,
             std::string temp_name, std::unique_ptr<WritableFile> file)
      : dir_(std::move(dir)),
        root_(std::move(root)),
        dir_rel_(std::move(dir_rel)),
        name_(std::move(name)),
        temp_name_(std::move(temp_name)),
        file_(std::move(file)) {}
  ~StreamImpl() override { Abort().IgnoreError(); }

  Status Append(std::string_view data) override {
    if (finished_ || !digest_.empty()) return Status::InvalidArgument("artifact stream is already finished");
    Status s = file_->WriteAt(size_, data);
    if (!s.ok()) {
      Abort().IgnoreError();
      return s.WithContext("writing artifact " + name_);
    }
    // Let the disk work while we hash: start writeback of each finished megabyte now, so the final fsync
    // has little left to do.
    const uint64_t start = size_;
    size_ += data.size();
    if (size_ / kWritebackChunk != start / kWritebackChunk) {
      const uint64_t upto = size_ - size_ % kWritebackChunk;
      file_->StartWriteback(written_back_, upto - written_back_);
      written_back_ = upto;
    }
    hash_.Update(data);
    return Status::OK();
  }

  // The bytes are synced and the file closed here, not at Commit: a finished stream waiting for its Commit
  // holds no open file (a host keeps every file of a result finished until the result arrives).
  Status Finish(std::string* sha256) override {
    if (!failed_.ok()) return failed_;  // the sync that ended it failed: still that error
    if (finished_) return Status::InvalidArgument("artifact stream is already finished");
    if (digest_.empty()) {
      digest_ = hash_.HexDigest();
      Status s = file_->Sync();
      Status c = file_->Close();
      file_.reset();
      if (s.ok()) s = c;
      if (!s.ok()) {
        Abort().IgnoreError();
        failed_ = s.WithContext("syncing artifact " + name_);
        return failed_;
      }
    }
    *sha256 = digest_;
    return Status::OK();
  }

  Status Commit(ArtifactInfo* info) override { return Publish(/*reuse=*/false, /*sync_dir=*/true, info); }
  Status CommitOrReuse(ArtifactInfo* info) override { return Publish(/*reuse=*/true, /*sync_dir=*/true, info); }

  // Commit (reuse: CommitOrReuse). Without sync_dir the new name is not yet durable: the caller syncs dir()
  // afterwards (CommitAll, once for all the files of a directory).
  Status Publish(bool reuse, bool sync_dir, ArtifactInfo* info) {
    std::string digest;
    Status s = Finish(&digest);
    if (!s.ok()) return s;
    if (reuse) {
      // Checked, hashed and synced through one descriptor that only a regular file (no link, FIFO, socket or
      // device) opens to, so a name swapped meanwhile is never taken for the copy. Anything that stops the
      // check or the sync (an unreadable file, ...) means "not the same": this copy is then published under a
      // name of its own. The sync: its publisher may have died before syncing the file or its directory.
      std::unique_ptr<RegularFile> f;
      if (dir_->OpenRegularFile(name_, &f).ok() && HoldsSameBytes(*f) && f->Sync().ok() &&
          (!sync_dir || dir_->Sync().ok())) {
        Abort().IgnoreError();
        Describe(name_, info);
        info->reused = true;
        return Status::OK();
      }
    }
    std::string final_name = name_;
    for (int n = 1;; ++n) {
      s = dir_->RenameNoReplace(temp_name_, final_name);
      if (!s.IsAlreadyExists()) break;
      if (n > 100000) break;
      final_name = WithSuffix(name_, n);
    }
    if (s.ok() && sync_dir) s = dir_->Sync();
    if (!s.ok()) {
      Abort().IgnoreError();
      return s.WithContext("publishing artifact " + name_);
    }
    finished_ = true;
    Describe(final_name, info);
    return Status::OK();
  }

  Directory* dir() const { return dir_.get(); }

  Status Abort() override {
    if (finished_) return Status::OK();
    finished_ = true;
    if (file_) file_->Close().IgnoreError();
    Status s = dir_->RemoveFile(temp_name_);
    return s.IsNotFound() ? Status::OK() : s;
  }

  uint64_t size() const override { return size_; }

 private:
  // True when f holds size_ bytes whose sha256 is digest_. Any error reading it: false.
  bool HoldsSameBytes(const RegularFile& f) {
    uint64_t size = 0;
    if (!f.Size(&size).ok() || size != size_) return false;
    Sha256 h;
    std::string buf;
    for (uint64_t off = 0; off < size_; off += kWritebackChunk) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(kWritebackChunk, size_ - off));
      if (!f.Read(off, n, &buf).ok() || buf.size() != n) return false;  // shorter than it said: not the same
      h.Update(buf);
    }
    return h.HexDigest() == digest_;
  }

  // *info for the file published under `final_name`.
  void Describe(const std::string& final_name, ArtifactInfo* info) const {
    info->path = dir_rel_.empty() ? final_name : dir_rel_ + "/" + final_name;
    info->full_path = JoinPath(dir_rel_.empty() ? root_ : JoinPath(root_, dir_rel_), final_name);
    info->size = size_;
    info->sha256 = digest_;
    info->reused = false;
  }

  std::shared_ptr<Directory> dir_;
  std::string root_, dir_rel_, name_, temp_name_;
  std::unique_ptr<WritableFile> file_;  // open until Finish
  Status failed_;                       // Finish's failed sync, for later calls
  static constexpr uint64_t kWritebackChunk = 1u << 20;
  Sha256 hash_;
  std::string digest_;  // set once the appends are over
  uint64_t size_ = 0;
  uint64_t written_back_ = 0;
  bool finished_ = false;
};

class WriterImpl final : public ArtifactWriter {
 public:
  WriterImpl(Env* env, std::string root, std::string real_root, std::shared_ptr<Directory> root_dir)
      : env_(env),
        root_(std::move(root)),
        real_root_(std::move(real_root)),
        root_dir_(std::move(root_dir)),
        host_(TagHostName()) {}

  const std::string& root() const override { return root_; }

  Status Write(const std::string& rel, std::string_view data, ArtifactInfo* info) override {
    std::unique_ptr<ArtifactStream> stream;
    CMQ_RETURN_IF_ERROR(Begin(rel, &stream));
    CMQ_RETURN_IF_ERROR(stream->Append(data));
    return stream->Commit(info);
  }

  Status Begin(const std::string& rel, std::unique_ptr<ArtifactStream>* stream) override {
    std::string norm;
    CMQ_RETURN_IF_ERROR(NormalizeRelativePath(rel, &norm));
    std::string dir_rel, name;
    SplitName(norm, &dir_rel, &name);
    char tag[64];
    std::snprintf(tag, sizeof(tag), "%d.%016llx.", static_cast<int>(ProcessId()),
                  static_cast<unsigned long long>(RandomToken()));
    std::string temp_name = std::string(kTempPrefix) + host_ + "." + tag + name.substr(0, 64);
    // The path is walked anew for every stream (the directory there now, checked now); a handle other streams
    // hold of that same directory is used instead of a second one.
    std::shared_ptr<Directory> dir;
    CMQ_RETURN_IF_ERROR(MakeParents(dir_rel, /*create=*/true, &dir));
    dir = ShareDir(dir_rel, std::move(dir));
    std::unique_ptr<WritableFile> file;
    CMQ_RETURN_IF_ERROR(dir->NewFile(temp_name, &file).WithContext("creating artifact " + norm));
    stream->reset(new StreamImpl(std::move(dir), root_, dir_rel, name, temp_name, std::move(file)));
    return Status::OK();
  }

  Status Remove(const std::string& rel) override {
    std::string norm;
    CMQ_RETURN_IF_ERROR(NormalizeRelativePath(rel, &norm));
    std::string dir_rel, name;
    SplitName(norm, &dir_rel, &name);
    std::shared_ptr<Directory> dir;
    CMQ_RETURN_IF_ERROR(MakeParents(dir_rel, /*create=*/false, &dir));
    CMQ_RETURN_IF_ERROR(dir->RemoveFile(name));
    return dir->Sync();
  }

  Status CommitAll(const std::vector<ArtifactStream*>& streams, const std::vector<bool>& reuse,
                   std::vector<ArtifactInfo>* infos) override {
    infos->clear();
    if (reuse.size() != streams.size()) return Status::InvalidArgument("CommitAll: one reuse flag per stream");
    std::vector<Directory*> dirs;  // each synced once, at the end
    Status s;
    for (size_t i = 0; i < streams.size(); ++i) {
      auto* st = static_cast<StreamImpl*>(streams[i]);  // every stream is one of ours (Begin made it)
      ArtifactInfo info;
      s = st->Publish(reuse[i], /*sync_dir=*/false, &info);
      if (!s.ok()) break;
      infos->push_back(std::move(info));
      if (std::find(dirs.begin(), dirs.end(), st->dir()) == dirs.end()) dirs.push_back(st->dir());
    }
    for (Directory* d : dirs) {
      Status ds = d->Sync();
      if (s.ok() && !ds.ok()) s = ds.WithContext("publishing artifacts");
    }
    return s;
  }

  // Removes temp files left by writers that are gone: this host's dead processes, or anything a day old.
  // Walked by handle from the root's, links never followed.
  uint64_t CleanStaleTemps(Directory* dir, int depth) {
    uint64_t removed = 0;
    std::vector<std::string> names;
    if (depth > 16 || !dir->List(&names).ok()) return 0;
    const int64_t now = env_->NowMicros();
    for (const std::string& n : names) {
      FileInfo fi;
      if (!dir->Stat(n, &fi).ok() || !fi.exists || fi.is_symlink) continue;
      if (fi.is_dir) {
        std::unique_ptr<Directory> sub;
        if (dir->OpenSubdir(n, &sub).ok()) removed += CleanStaleTemps(sub.get(), depth + 1);
        continue;
      }
      if (n.compare(0, std::string(kTempPrefix).size(), kTempPrefix) != 0) continue;
      bool stale = now - fi.mtime_us > kStaleTempMicros;
      // .cmq-tmp.<host>.<pid>.<random>.<name>
      const std::string rest = n.substr(std::string(kTempPrefix).size());
      if (!stale && rest.compare(0, host_.size() + 1, host_ + ".") == 0) {
        int pid = std::atoi(rest.c_str() + host_.size() + 1);
        stale = ProcessGone(pid);
      }
      if (stale && dir->RemoveFile(n).ok()) removed++;
    }
    return removed;
  }
  uint64_t CleanStaleTemps() { return CleanStaleTemps(root_dir_.get(), 0); }

 private:
  // `fresh` (the directory now at dir_rel), or the handle other streams already hold of that same directory:
  // a result's many files, finished and waiting for their Commit, share one descriptor.
  std::shared_ptr<Directory> ShareDir(const std::string& dir_rel, std::shared_ptr<Directory> fresh) {
    if (dir_rel.empty()) return fresh;
    std::lock_guard<std::mutex> l(dirs_mu_);
    auto it = dirs_.find(dir_rel);
    if (it != dirs_.end()) {
      std::shared_ptr<Directory> held = it->second.lock();
      if (held != nullptr && held->identity() == fresh->identity()) return held;
    }
    if (dirs_.size() >= 2 * live_dirs_hint_ + 64) {  // drop the handles no stream uses any more
      for (auto e = dirs_.begin(); e != dirs_.end();) e = e->second.expired() ? dirs_.erase(e) : std::next(e);
      live_dirs_hint_ = dirs_.size();
    }
    dirs_[dir_rel] = fresh;
    return fresh;
  }

  // Opens (with create: making what is missing) the directory dir_rel under the root, refusing links that lead outside
  // it. Walked one component at a time by handle from the root's, never following a link by itself: a link
  // is resolved, checked to stay inside the root, and its target walked the same way from the root (a link
  // met on that walk means the tree changed meanwhile: refused). What it returns is where the artifact goes
  // even if a component is swapped for a link afterwards.
  Status MakeParents(const std::string& dir_rel, bool create, std::shared_ptr<Directory>* out) {
    std::shared_ptr<Directory> cur = root_dir_;
    std::string shown;  // dir_rel up to this component
    for (const std::string& part : Components(dir_rel)) {
      shown = shown.empty() ? part : shown + "/" + part;
      FileInfo fi;
      CMQ_RETURN_IF_ERROR(cur->Stat(part, &fi));
      if (!fi.exists) {
        if (!create) return Status::NotFound("artifact path '" + dir_rel + "': '" + shown + "' does not exist");
        Status s = cur->CreateSubdir(part);
        if (s.ok()) s = cur->Sync();
        CMQ_RETURN_IF_ERROR(s.WithContext("creating artifact directory"));
      } else if (fi.is_symlink) {
        std::string real;
        CMQ_RETURN_IF_ERROR(env_->RealPath(JoinPath(root_, shown), &real));
        if (!Within(real, real_root_)) {
          return Status::InvalidArgument("artifact path '" + dir_rel + "' leaves the artifact root through the link '" +
                                         shown + "'");
        }
        CMQ_RETURN_IF_ERROR(WalkReal(real, dir_rel, &cur));
        continue;
      } else if (!fi.is_dir) {
        return Status::InvalidArgument("artifact path '" + dir_rel + "': '" + shown + "' is a file, not a directory");
      }
      std::unique_ptr<Directory> sub;
      CMQ_RETURN_IF_ERROR(cur->OpenSubdir(part, &sub).WithContext("artifact path '" + dir_rel + "'"));
      cur = std::move(sub);
    }
    *out = std::move(cur);
    return Status::OK();
  }

  // Opens `real` (a resolved path inside the real root) by walking its components from the root's handle,
  // with no link allowed on the way.
  Status WalkReal(const std::string& real, const std::string& dir_rel, std::shared_ptr<Directory>* out) {
    std::shared_ptr<Directory> cur = root_dir_;
    const std::string rest =
        real.size() > real_root_.size() ? real.substr(real_root_.size() + (real_root_ == "/" ? 0 : 1)) : "";
    for (const std::string& part : Components(rest)) {
      std::unique_ptr<Directory> sub;
      Status s = cur->OpenSubdir(part, &sub);
      if (!s.ok()) {
        return Status::InvalidArgument("artifact path '" + dir_rel +
                                       "': a link in it leads to no directory of the root, "
                                       "or changed while it was followed (" +
                                       s.message() + ")");
      }
      cur = std::move(sub);
    }
    *out = std::move(cur);
    return Status::OK();
  }

  Env* env_;
  std::string root_;
  std::string real_root_;
  std::shared_ptr<Directory> root_dir_;  // the root as found at Open
  std::string host_;
  std::mutex dirs_mu_;
  std::map<std::string, std::weak_ptr<Directory>> dirs_;  // SharedDir's, by dir_rel; some may have expired
  size_t live_dirs_hint_ = 0;                             // live entries at the last sweep
};

}  // namespace

Status NormalizeRelativePath(std::string_view path, std::string* normalized) {
  auto bad = [&](const std::string& why) {
    std::string shown(path.substr(0, 200));
    for (char& c : shown) {
      if (static_cast<unsigned char>(c) < 0x20) c = '?';
    }
    return Status::InvalidArgument("artifact path '" + shown + "' " + why);
  };
  if (path.empty()) return bad("is empty");
  if (path.size() > 4096) return bad("is too long");
  if (path.find('\0') != std::string_view::npos) return bad("contains a NUL byte");
  if (path[0] == '/' || path[0] == '\\' || (path.size() > 1 && path[1] == ':')) return bad("must be relative");
  std::string out;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t next = path.find('/', pos);
    if (next == std::string_view::npos) next = path.size();
    std::string_view part = path.substr(pos, next - pos);
    pos = next + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") return bad("must not contain '..'");
    if (part.size() > 200) return bad("has a name longer than 200 bytes (room is kept for a collision suffix)");
    for (char c : part) {
      if (static_cast<unsigned char>(c) < 0x20 || c == '\\') return bad("contains a control character or backslash");
    }
    if (part.compare(0, 9, kTempPrefix) == 0) return bad("uses the reserved prefix .cmq-tmp.");
    if (!out.empty()) out += "/";
    out.append(part.data(), part.size());
  }
  if (out.empty()) return bad("names no file");
  if (path.back() == '/') return bad("names a directory, not a file");
  *normalized = out;
  return Status::OK();
}

Status ArtifactWriter::Open(Env* env, const std::string& root, std::unique_ptr<ArtifactWriter>* writer,
                            uint64_t* stale_removed) {
  if (env == nullptr) env = Env::Default();
  if (root.empty()) return Status::InvalidArgument("artifact root is empty");
  CMQ_RETURN_IF_ERROR(CreateDirs(env, root).WithContext("creating artifact root"));
  std::string real;
  CMQ_RETURN_IF_ERROR(env->RealPath(root, &real));
  std::unique_ptr<Directory> root_dir;
  CMQ_RETURN_IF_ERROR(env->OpenDirectory(real, &root_dir).WithContext("opening artifact root"));
  auto impl = std::make_unique<WriterImpl>(env, root, real, std::move(root_dir));
  uint64_t removed = impl->CleanStaleTemps();
  if (stale_removed != nullptr) *stale_removed = removed;
  *writer = std::move(impl);
  return Status::OK();
}

}  // namespace comfymq
