#include "store/segment_prep.h"

#include <algorithm>

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

bool SegmentPreparer::preparing() {
  std::lock_guard<std::mutex> l(mu_);
  return state_ == State::kWanted || state_ == State::kPreparing || drop_;
}

void SegmentPreparer::DropPartMadeLocked() {
  drop_ = false;
  if (file_) {
    file_->Close().IgnoreError();
    file_.reset();
  }
  env_->RemoveFile(path()).IgnoreError();
}

Status SegmentPreparer::Prepare(const std::atomic<bool>* cancel, const std::function<bool()>& may_write) {
  constexpr uint64_t kChunk = 1u << 20;
  uint64_t capacity;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (drop_) DropPartMadeLocked();  // Discarded while part made: its space back before anything else
    if (state_ == State::kWanted) {
      state_ = State::kPreparing;
      zeroed_ = 0;
    } else if (state_ != State::kPreparing) {
      return Status::OK();
    }
    capacity = std::max<uint64_t>(capacity_, kSegmentHeaderSize);
  }
  Status s;
  if (!file_) s = env_->NewWritableFile(path(), Env::OpenMode::kTruncate, &file_);
  static const std::string zeros(kChunk, '\0');
  while (s.ok() && zeroed_ < capacity) {
    if (cancel != nullptr && cancel->load()) {
      s = Status::IOError("zero-filling a segment was cancelled");
      break;
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      if (drop_) {
        DropPartMadeLocked();
        return Status::OK();
      }
    }
    if (may_write && !may_write()) return Status::OK();  // carried on by a later call
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, capacity - zeroed_));
    s = file_->WriteAt(zeroed_, std::string_view(zeros).substr(0, n));
    if (s.ok()) s = file_->Sync();
    if (s.ok()) zeroed_ += n;
  }
  if (file_) {
    Status cs = file_->Close();
    if (s.ok()) s = cs;
    file_.reset();
  }
  std::lock_guard<std::mutex> l(mu_);
  if (drop_) {  // Discarded while its last chunk went in
    DropPartMadeLocked();
    return Status::OK();
  }
  if (!s.ok()) {
    env_->RemoveFile(path()).IgnoreError();
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
    if (file) file->Close().IgnoreError();
    env_->RemoveFile(path()).IgnoreError();
    env_->RemoveFile(path_to).IgnoreError();
    return s.WithContext("adopting the prepared log segment as " + path_to);
  }
  *out = std::move(file);
  *adopted_capacity = have;
  return Status::OK();
}

bool SegmentPreparer::Discard(uint64_t keep_part_made_from) {
  std::lock_guard<std::mutex> l(mu_);
  if (state_ == State::kReady) {
    env_->RemoveFile(path()).IgnoreError();
  } else if (state_ == State::kPreparing && capacity_ < keep_part_made_from) {
    drop_ = true;  // Prepare owns the file meanwhile: it drops it
  } else {
    return false;
  }
  state_ = State::kNone;
  return true;
}

void SegmentPreparer::Abandon() {
  std::lock_guard<std::mutex> l(mu_);
  if (file_ || drop_ || state_ == State::kReady || state_ == State::kPreparing) DropPartMadeLocked();
  state_ = State::kNone;
}

}  // namespace comfymq::log
