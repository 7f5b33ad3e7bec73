// Keeping a store healthy over time: lease expiry, retention purge, checkpoints, compaction, the background
// thread that runs them, and closing.
#include <algorithm>
#include <chrono>
#include <set>

#include "store/checkpoint.h"
#include "store/store_impl.h"
#include "util/process.h"

namespace comfymq {

// ---------------------------------------------------------------------------------------------------------
// Leases and retention

Status StoreImpl::ApplyExpire(int* expired) {
  const int64_t now = txn_->now_ms();
  std::vector<uint64_t> due;
  for (const auto& [id, run] : table_.runs()) {
    if (run.expires_ms <= now || (run.deadline_ms != 0 && run.deadline_ms <= now)) due.push_back(id);
  }
  std::sort(due.begin(), due.end());
  for (uint64_t id : due) {
    const JobMeta* m = table_.Find(id);
    if (m == nullptr) continue;
    const JobMeta before = *m;
    const RunInfo run = *table_.Run(id);
    StatusDoc d = LoadStatusOrRebuildLocked(before);
    const bool timed_out = run.deadline_ms != 0 && run.deadline_ms <= now;
    const bool again = before.attempts < before.max_attempts;
    std::string message = timed_out ? "run on worker " + run.worker_id + " exceeded its time limit of " +
                                          ((run.deadline_ms - run.started_ms) % 1000 == 0
                                               ? std::to_string((run.deadline_ms - run.started_ms) / 1000) + " s"
                                               : std::to_string(run.deadline_ms - run.started_ms) + " ms")
                                    : "worker " + run.worker_id + " stopped renewing its lease";
    if (!again) message = "gave up after " + std::to_string(before.attempts) + " attempts; last: " + message;
    const std::string error_json = ErrorJsonOf(timed_out ? "timeout" : "lease_lost", message);
    EndRunLocked(before, run, std::move(d), again ? JobState::kPending : JobState::kFailed,
                 timed_out ? "timeout" : "lease_lost", error_json, timed_out ? "timeout" : "lease expired");
    ++*expired;
  }
  return Status::OK();
}

int64_t StoreImpl::NextExpiryMs() {
  std::shared_lock<std::shared_mutex> st(state_mu_);
  int64_t next = 0;
  for (const auto& [id, run] : table_.runs()) {
    int64_t t = run.expires_ms;
    if (run.deadline_ms != 0) t = std::min(t, run.deadline_ms);
    if (next == 0 || t < next) next = t;
  }
  return next;
}

Status StoreImpl::ExpireLeases(int* expired) {
  *expired = 0;
  CMQ_RETURN_IF_ERROR(Usable());
  // (the background thread's other chore, done here too; an error of it does not keep leases from expiring)
  const Status swept = SweepOrphans();
  const int64_t next = NextExpiryMs();
  if (next == 0 || next > NowMs()) return swept;
  int n = 0;
  CMQ_RETURN_IF_ERROR(Run([&] { return ApplyExpire(&n); }, 256));
  *expired = n;
  return swept;
}

Status StoreImpl::Purge(int64_t finished_before_ms, uint64_t* removed) {
  uint64_t n = 0;
  CMQ_RETURN_IF_ERROR(Run(
      [&] {
        std::vector<uint64_t> ids;
        table_.ForEach([&](const JobMeta& m) {
          if (IsFinished(m.state) && m.updated_ms < finished_before_ms) ids.push_back(m.id);
        });
        constexpr size_t kChunk = 8192;
        for (size_t i = 0; i < ids.size(); i += kChunk) {
          const size_t len = std::min(kChunk, ids.size() - i);
          std::string payload;
          records::EncodeErase(txn_->now_ms(), ids.data() + i, len, &payload);
          txn_->Append(log::RecordType::kErase, payload);
        }
        for (uint64_t id : ids) {
          StoreEvent e;
          e.kind = StoreEvent::Kind::kJobRemoved;
          e.job_id = id;
          e.from = e.to = table_.Find(id)->state;
          e.reason = "purged";
          txn_->Erase(id);
          txn_->Event(std::move(e));
        }
        n = ids.size();
        return Status::OK();
      },
      0));
  if (removed != nullptr) *removed = n;
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------------------
// Checkpoints and compaction

uint64_t StoreImpl::NextSegmentCapacity(uint64_t capacity) const {
  const uint64_t grown = std::max<uint64_t>(2 * capacity, log::kFirstSegmentBytes);
  return std::max<uint64_t>(std::min<uint64_t>(options_.segment_bytes, grown), log::kSegmentHeaderSize);
}

Status StoreImpl::NewSegmentLocked(uint32_t seg, uint64_t capacity, std::unique_ptr<WritableFile>* out, uint64_t* made,
                                   bool* zeroed) {
  const std::string path = JoinPath(dir_, log::SegmentFileName(seg));
  env_->RemoveFile(path).IgnoreError();  // a leftover of an earlier failed attempt: nothing past the tail is live
  CMQ_RETURN_IF_ERROR(preparer_.Adopt(seg, path, capacity, out, made));
  *zeroed = *out != nullptr;
  if (*out) return Status::OK();
  // A ready one did not fit this roll: removed. A part-made one stays only if it can serve the next roll.
  preparer_.Discard(NextSegmentCapacity(capacity));
  *made = std::max<uint64_t>(capacity, log::kSegmentHeaderSize);
  Status s = log::CreateSegment(env_, path, seg, capacity, out);
  // A full disk: the zeros made ahead give their space back (the background thread drops a part-made one).
  if (s.IsNoSpace() && preparer_.Release()) KickBackground();
  return s;
}

Status StoreImpl::RollLocked() {
  const uint32_t seg = tail_segment_ + 1;
  std::unique_ptr<WritableFile> next;
  uint64_t capacity = 0;
  bool zeroed = false;
  CMQ_RETURN_IF_ERROR(NewSegmentLocked(seg, NextSegmentCapacityLocked(), &next, &capacity, &zeroed));
  if (tail_offset_ >= log::kSegmentHeaderSize) tail_file_->Truncate(tail_offset_).IgnoreError();
  tail_file_->Close().IgnoreError();
  tail_file_ = std::move(next);
  tail_segment_ = seg;
  tail_offset_ = log::kSegmentHeaderSize;
  tail_capacity_ = capacity;
  tail_written_to_ = zeroed ? capacity : log::kSegmentHeaderSize;
  ResetPlanLocked();
  std::lock_guard<std::mutex> l(files_mu_);
  segment_used_[seg] = log::kSegmentHeaderSize;
  return Status::OK();
}

Status StoreImpl::Checkpoint() {
  std::lock_guard<std::mutex> ck(checkpoint_mu_);
  return CheckpointLocked();
}

Status StoreImpl::CheckpointLocked() {
  CMQ_RETURN_IF_ERROR(Usable());
  const std::string tmp = JoinPath(dir_, "checkpoint.tmp");
  std::unique_ptr<WritableFile> file;
  uint32_t segment;
  const uint64_t pending_bytes = bytes_since_checkpoint_.load();
  auto failed = [&](const Status& s) {
    bytes_since_checkpoint_ += pending_bytes;  // try again soon
    return s.WithContext("writing checkpoint");
  };
  {
    // No group is in flight once commit_mu_ is held and those before have ended: the index matches the log
    // up to the tail exactly.
    std::lock_guard<std::mutex> commit(commit_mu_);
    order_.WaitIdle();
    CMQ_RETURN_IF_ERROR(Usable());
    if (tail_offset_ > log::kSegmentHeaderSize) CMQ_RETURN_IF_ERROR(RollLocked().WithContext("checkpoint"));
    segment = tail_segment_;
    bytes_since_checkpoint_ -= std::min(pending_bytes, bytes_since_checkpoint_.load());
    Status s = env_->NewWritableFile(tmp, Env::OpenMode::kTruncate, &file);
    if (!s.ok()) return failed(s);
    {
      std::unique_lock<std::shared_mutex> st(state_mu_);
      table_.CompactSlots();  // no undo can refer to an erased slot now
    }
    std::shared_lock<std::shared_mutex> st(state_mu_);  // readers go on while it is written
    checkpoint::Header h;
    h.segment = segment;
    h.last_id = last_id_;
    h.next_token = std::max(next_token_, token_reserve_);  // what the reservation covers may be out there
    h.paused = paused_;
    s = checkpoint::Write(file.get(), h, table_, docs_);
    if (!s.ok()) {
      file->Close().IgnoreError();
      env_->RemoveFile(tmp).IgnoreError();
      return failed(s);
    }
  }
  Status s = file->Sync();
  Status c = file->Close();
  if (s.ok()) s = c;
  if (s.ok()) s = env_->RenameFile(tmp, JoinPath(dir_, checkpoint::FileName(segment)));
  if (s.ok()) s = env_->SyncDir(dir_);
  if (!s.ok()) {
    env_->RemoveFile(tmp).IgnoreError();
    return failed(s);
  }
  checkpoint_segment_ = segment;
  std::vector<std::string> names;
  if (env_->GetChildren(dir_, &names).ok()) {
    for (const std::string& n : names) {
      uint32_t v;
      if (checkpoint::ParseFileName(n, &v) && v < segment) env_->RemoveFile(JoinPath(dir_, n)).IgnoreError();
    }
  }
  DeleteDeadSegments(segment);
  return Status::OK();
}

void StoreImpl::DeleteDeadSegments(uint32_t before_segment) {
  // Under commit_mu_, once the groups in flight ended: no undo can bring back a reference to a deleted segment.
  std::lock_guard<std::mutex> commit(commit_mu_);
  order_.WaitIdle();
  std::vector<uint32_t> dead;
  {
    std::shared_lock<std::shared_mutex> st(state_mu_);
    std::lock_guard<std::mutex> l(files_mu_);
    for (const auto& [seg, used] : segment_used_) {
      if (seg < before_segment && table_.SegmentLiveBytes(seg) == 0) dead.push_back(seg);
    }
    for (uint32_t seg : dead) {
      files_.erase(seg);
      segment_used_.erase(seg);
    }
  }
  for (uint32_t seg : dead) env_->RemoveFile(JoinPath(dir_, log::SegmentFileName(seg))).IgnoreError();
  if (!dead.empty()) env_->SyncDir(dir_).IgnoreError();
}

Status StoreImpl::ApplyRelocate(std::vector<Relocation>& items) {
  for (Relocation& r : items) {
    const JobMeta* m = table_.Find(r.id);
    if (m == nullptr) continue;
    const log::RecordLoc& current = r.is_status ? m->status_loc : m->job_loc;
    if (!(current == r.from)) continue;  // changed since it was read: the old copy is dead already
    JobMeta n = *m;
    (r.is_status ? n.status_loc : n.job_loc) = txn_->Append(r.type, r.payload);
    txn_->Replace(n);
  }
  return Status::OK();
}

bool StoreImpl::NeedsCompaction() {
  StoreStats st;
  if (!Stats(&st).ok()) return false;
  const uint64_t garbage = st.log_bytes > st.live_bytes ? st.log_bytes - st.live_bytes : 0;
  std::lock_guard<std::mutex> ck(checkpoint_mu_);
  return garbage >= options_.compact_min_garbage_bytes &&
         static_cast<double>(garbage) >= options_.compact_garbage_ratio * static_cast<double>(st.log_bytes) &&
         st.log_bytes >= log_bytes_after_compaction_ + options_.compact_min_garbage_bytes;
}

Status StoreImpl::Compact() {
  std::lock_guard<std::mutex> ck(checkpoint_mu_);
  CMQ_RETURN_IF_ERROR(CheckpointLocked());
  const uint32_t sealed_before = checkpoint_segment_.load();
  std::set<uint32_t> victims;
  std::vector<Relocation> items;
  {
    std::shared_lock<std::shared_mutex> st(state_mu_);
    {
      std::lock_guard<std::mutex> l(files_mu_);
      for (const auto& [seg, used] : segment_used_) {
        if (seg >= sealed_before || used <= log::kSegmentHeaderSize) continue;
        const uint64_t data = used - log::kSegmentHeaderSize;
        if (table_.SegmentLiveBytes(seg) * 2 <= data) victims.insert(seg);
      }
    }
    if (victims.empty()) return Status::OK();
    table_.ForEach([&](const JobMeta& m) {
      if (victims.count(m.job_loc.segment)) {
        items.push_back(Relocation{m.id, false, m.job_loc, log::RecordType::kJob, {}});
      }
      if (m.status_loc.valid() && victims.count(m.status_loc.segment)) {
        items.push_back(Relocation{m.id, true, m.status_loc, log::RecordType::kStatus, {}});
      }
    });
  }
  std::sort(items.begin(), items.end(), [](const Relocation& a, const Relocation& b) {
    return a.from.segment != b.from.segment ? a.from.segment < b.from.segment : a.from.offset < b.from.offset;
  });
  constexpr size_t kBatchBytes = 16u << 20;
  size_t unreadable = 0;
  for (size_t i = 0; i < items.size();) {
    std::vector<Relocation> batch;
    size_t bytes = 0;
    for (; i < items.size() && (batch.empty() || bytes + items[i].from.size <= kBatchBytes); ++i) {
      Relocation r = std::move(items[i]);
      Status s;
      auto file = SegmentFile(r.from.segment, &s);
      log::RecordType type;
      if (file) s = log::ReadRecord(*file, r.from, &type, &r.payload);
      if (!s.ok() || type != r.type) {
        unreadable++;  // a damaged record stays where it is, and so does its segment
        continue;
      }
      bytes += r.from.size;
      batch.push_back(std::move(r));
    }
    if (!batch.empty()) CMQ_RETURN_IF_ERROR(Run([&] { return ApplyRelocate(batch); }, bytes));
  }
  CMQ_RETURN_IF_ERROR(CheckpointLocked());
  StoreStats st;
  if (Stats(&st).ok()) log_bytes_after_compaction_ = st.log_bytes;
  if (unreadable != 0) {
    return Status::Corruption(std::to_string(unreadable) + " damaged records could not be moved by compaction");
  }
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------------------
// Background thread and closing

void StoreImpl::StartBackground() {
  if (options_.background_thread) bg_thread_ = std::thread(&StoreImpl::BackgroundLoop, this);
}

void StoreImpl::BackgroundLoop() {
  NameThisThread("cmq-store-bg");
  std::unique_lock<std::mutex> l(bg_mu_);
  while (!bg_stop_) {
    int64_t wait_ms = 1000;
    l.unlock();
    const int64_t next = NextExpiryMs();
    if (next != 0) wait_ms = std::clamp<int64_t>(next - NowMs() + 1, 5, 1000);
    if (preparer_.preparing())
      wait_ms = std::min<int64_t>(wait_ms, std::max<int64_t>(options_.prepare_when_quiet_ms, 5));
    l.lock();
    bg_cv_.wait_for(l, std::chrono::milliseconds(wait_ms), [&] { return bg_stop_ || bg_kick_; });
    if (bg_stop_) break;
    bg_kick_ = false;
    l.unlock();
    Status s = Usable();
    if (s.ok()) {
      int expired = 0;
      s = ExpireLeases(&expired);
      if (s.ok() && preparer_.preparing()) {
        // Zeros only while the log is quiet, a chunk at a time; a failure is tried again at the next Request.
        const int64_t quiet = options_.prepare_when_quiet_ms;
        preparer_
            .Prepare(&stop_preparing_,
                     [&] { return quiet <= 0 || (!log_writing_ && SteadyMs() - last_commit_ms_ >= quiet); })
            .IgnoreError();
      }
      if (s.ok() && bytes_since_checkpoint_.load() >= options_.checkpoint_every_bytes) s = Checkpoint();
      if (s.ok() && NeedsCompaction()) s = Compact();
      if (!s.ok()) {
        std::lock_guard<std::mutex> h(health_mu_);
        last_background_error_ = s.ToString();
      }
    }
    l.lock();
    if (!s.ok() && !bg_stop_) bg_cv_.wait_for(l, std::chrono::seconds(1), [&] { return bg_stop_; });
  }
}

Status StoreImpl::Close() {
  {
    std::unique_lock<std::mutex> cl(close_mu_);
    if (close_state_ == CloseState::kClosed) return Status::OK();
    if (close_state_ == CloseState::kClosing) {
      // A second caller waits for the first, except a listener: the first may be waiting for it.
      if (!events_->OnDeliveryThread()) close_cv_.wait(cl, [&] { return close_state_ == CloseState::kClosed; });
      return Status::OK();
    }
    close_state_ = CloseState::kClosing;
  }
  {
    std::lock_guard<std::mutex> l(bg_mu_);
    bg_stop_ = true;
  }
  stop_preparing_ = true;
  bg_cv_.notify_all();
  if (bg_thread_.joinable()) bg_thread_.join();
  preparer_.Abandon();  // a zero-filled (or part-filled) segment not yet used: give its space back
  Status s;
  {
    // Waits for a checkpoint or compaction in progress; once closed_ is set, any that start fail at once.
    std::lock_guard<std::mutex> ck(checkpoint_mu_);
    if (opened_ && Usable().ok()) s = CheckpointLocked();
    closed_ = true;
  }
  {
    std::lock_guard<std::mutex> commit(commit_mu_);  // waits for a group being applied
    order_.WaitIdle();                               // and for those writing and syncing
    if (tail_file_) tail_file_->Close().IgnoreError();
    tail_file_.reset();
  }
  events_->Stop();
  {
    std::lock_guard<std::mutex> l(files_mu_);
    files_.clear();
  }
  lock_.reset();  // only now may another process open the directory
  {
    std::lock_guard<std::mutex> cl(close_mu_);
    close_state_ = CloseState::kClosed;
  }
  close_cv_.notify_all();
  return s;
}

}  // namespace comfymq
