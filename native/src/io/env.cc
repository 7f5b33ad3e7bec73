#include "comfymq/env.h"

namespace comfymq {

Status CheckEntryName(const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos) {
    return Status::InvalidArgument("'" + name + "' is not a single file name");
  }
  return Status::OK();
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  if (dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

std::string DirName(const std::string& path) {
  size_t pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return path.substr(0, pos);
}

std::string BaseName(const std::string& path) {
  size_t pos = path.find_last_of('/');
  return pos == std::string::npos ? path : path.substr(pos + 1);
}

Status CreateDirs(Env* env, const std::string& dir) {
  if (dir.empty() || dir == "/" || dir == ".") return Status::OK();
  FileInfo info;
  CMQ_RETURN_IF_ERROR(env->GetFileInfo(dir, &info));
  if (info.exists && info.is_dir) return Status::OK();
  CMQ_RETURN_IF_ERROR(CreateDirs(env, DirName(dir)));
  CMQ_RETURN_IF_ERROR(env->CreateDir(dir));
  // The new entry is durable only once its parent directory is synced.
  return env->SyncDir(DirName(dir));
}

Status RemoveRecursively(Env* env, const std::string& path) {
  FileInfo info;
  CMQ_RETURN_IF_ERROR(env->GetFileInfo(path, &info));
  if (!info.exists) return Status::OK();
  if (!info.is_dir) return env->RemoveFile(path);
  std::vector<std::string> names;
  CMQ_RETURN_IF_ERROR(env->GetChildren(path, &names));
  for (const std::string& n : names) CMQ_RETURN_IF_ERROR(RemoveRecursively(env, JoinPath(path, n)));
  return env->RemoveDir(path);
}

Status Env::ReadFileToString(const std::string& path, std::string* out) {
  std::unique_ptr<RandomAccessFile> file;
  CMQ_RETURN_IF_ERROR(NewRandomAccessFile(path, &file));
  uint64_t size = 0;
  CMQ_RETURN_IF_ERROR(file->Size(&size));
  return file->Read(0, static_cast<size_t>(size), out);
}

Status Env::WriteFileAtomically(const std::string& path, std::string_view data) {
  const std::string tmp = path + ".tmp";
  std::unique_ptr<WritableFile> file;
  CMQ_RETURN_IF_ERROR(NewWritableFile(tmp, OpenMode::kTruncate, &file));
  Status s = file->Append(data);
  if (s.ok()) s = file->Sync();
  Status c = file->Close();
  if (s.ok()) s = c;
  if (s.ok()) s = RenameFile(tmp, path);
  if (s.ok()) s = SyncDir(DirName(path));
  if (!s.ok()) RemoveFile(tmp).IgnoreError();
  return s;
}

}  // namespace comfymq
