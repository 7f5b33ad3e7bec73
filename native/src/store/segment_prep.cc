#include "store/segment_prep.h"

#include "store/log_format.h"
#include "store/log_segment.h"

namespace comfymq::log {

void SegmentPreparer::Request(uint64_t capacity) {
  std::lock_guard<std::mutex> l(mu_);
  if (state_ != State::kNone) return;
  state_ = State::kWanted;
  capacity_ = capacity;
}

bool SegmentPreparer::wanted() {
  std::lock_guard<std::mutex> l(mu_);
  return state_ == State::kWanted;
}

Status SegmentPreparer::Prepare(const std::atomic<bool>* cancel) {
  uint64_t capacity;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (state_ != State::kWanted) return Status::OK();
    state_ = State::kPreparing;
    capacity = capacity_;
  }
  std::unique_ptr<WritableFile> file;
  Status s = env_->NewWritableFile(path(), Env::OpenMode::kTruncate, &file);
  if (s.ok()) s = ZeroFill(file.get(), std::max<uint64_t>(capacity, kSegmentHeaderSize), cancel);
  if (s.ok()) s = file->Sync();
  if (file) {
    Status cs = file->Close();
    if (s.ok()) s = cs;
  }
  std::lock_guard<std::mutex> l(mu_);
  if (!s.ok()) {
    env_->RemoveFile(path());
    state_ = State::kNone;
    return s.WithContext("preparing the next log segment");
  }
  state_ = State::kReady;
  return Status::OK();
}

Status SegmentPreparer::Adopt(uint32_t segment, const std::string& path_to, uint64_t capacity,
                              std::unique_ptr<WritableFile>* out, uint64_t* adopted_capacity) {
  out->reset();
  uint64_t have;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (state_ != State::kReady || capacity_ < capacity) return Status::OK();
    state_ = State::kNone;  // taken: nothing else touches the file now
    have = capacity_;
  }
  std::unique_ptr<WritableFile> file;
  Status s = env_->NewWritableFile(path(), Env::OpenMode::kOpenExisting, &file);
  if (s.ok()) s = file->WriteAt(0, SegmentHeader(segment));
  if (s.ok()) s = file->Sync();
  if (s.ok()) s = env_->RenameFile(path(), path_to);
  if (s.ok()) s = env_->SyncDir(dir_);
  if (!s.ok()) {
    if (file) file->Close();
    env_->RemoveFile(path());
    env_->RemoveFile(path_to);
    return s.WithContext("adopting the prepared log segment as " + path_to);
  }
  *out = std::move(file);
  *adopted_capacity = have;
  return Status::OK();
}

void SegmentPreparer::Discard() {
  std::lock_guard<std::mutex> l(mu_);
  if (state_ != State::kReady) return;
  env_->RemoveFile(path());
  state_ = State::kNone;
}

}  // namespace comfymq::log
