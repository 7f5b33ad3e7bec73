// Opening a store: lock the directory, load the newest good checkpoint, replay the log written after it,
// cut a torn tail, and report what was found.

#include <algorithm>
#include <chrono>

#include "store/checkpoint.h"
#include "store/store_impl.h"
#include "util/checksum.h"
#include "util/process.h"

namespace comfymq {

Status Store::Open(const StoreOptions& options, const std::string& dir, std::unique_ptr<Store>* store,
                   RecoveryReport* report) {
  RecoveryReport local;
  if (report == nullptr) report = &local;
  *report = RecoveryReport();
  if (dir.empty()) return Status::InvalidArgument("store directory is empty");
  if (options.segment_bytes < 4096 || options.segment_bytes > log::kMaxSegmentBytes) {
    return Status::InvalidArgument("segment_bytes must be between 4 KiB and 1 GiB");
  }
  if (options.max_prompt_bytes > records::kMaxTextBytes) {
    return Status::InvalidArgument("max_prompt_bytes must be at most 256 MiB");
  }
  if (options.max_cancels_per_commit == 0) return Status::InvalidArgument("max_cancels_per_commit must be at least 1");
  auto impl = std::make_unique<StoreImpl>(options, dir);
  CMQ_RETURN_IF_ERROR(impl->Recover(report));
  impl->StartBackground();
  *store = std::move(impl);
  return Status::OK();
}

std::string RecoveryReport::ToString() const {
  std::string s = "opened in " + std::to_string(open_micros / 1000) + " ms: " + std::to_string(jobs) + " jobs";
  s += checkpoint_segment ? ", checkpoint at segment " + std::to_string(checkpoint_segment) : ", no checkpoint";
  s += ", replayed " + std::to_string(records_replayed) + " records in " + std::to_string(segments_replayed) +
       " segments";
  if (torn_tail_bytes) s += "; cut a torn tail of " + std::to_string(torn_tail_bytes) + " bytes";
  for (const auto& r : bad_regions) {
    s +=
        "; skipped a damaged region in " + r.file + " [" + std::to_string(r.begin) + ", " + std::to_string(r.end) + ")";
  }
  for (const auto& w : warnings) s += "; " + w;
  return s;
}

Status StoreImpl::Recover(RecoveryReport* rep) {
  const auto t0 = std::chrono::steady_clock::now();
  CMQ_RETURN_IF_ERROR(CreateDirs(env_, dir_).WithContext("creating store directory"));
  Status ls =
      env_->LockFile(JoinPath(dir_, "LOCK"), "pid " + std::to_string(ProcessId()) + " on " + HostName(), &lock_);
  if (ls.IsBusy()) return Status::Busy("store " + dir_ + " is already open elsewhere: " + ls.message());
  CMQ_RETURN_IF_ERROR(ls);
  CMQ_RETURN_IF_ERROR(tokens_.Open(env_, dir_, &rep->warnings));

  std::vector<std::string> names;
  CMQ_RETURN_IF_ERROR(env_->GetChildren(dir_, &names));
  std::vector<uint32_t> segments, checkpoints;
  for (const std::string& n : names) {
    uint32_t v;
    if (log::ParseSegmentFileName(n, &v))
      segments.push_back(v);
    else if (checkpoint::ParseFileName(n, &v))
      checkpoints.push_back(v);
    else if (n == "checkpoint.tmp" || n == log::kPreparedSegmentName ||
             n == std::string(TokenCodec::kFileName) + ".tmp") {
      env_->RemoveFile(JoinPath(dir_, n)).IgnoreError();
    }
  }
  std::sort(segments.begin(), segments.end());
  std::sort(checkpoints.begin(), checkpoints.end());

  uint32_t start = 0;
  bool owners_known = true;  // false: a checkpoint of an older build, which kept no owners
  for (auto it = checkpoints.rbegin(); it != checkpoints.rend(); ++it) {
    checkpoint::Header h;
    table_ = JobTable();
    docs_.Clear();
    Status s = checkpoint::Read(env_, JoinPath(dir_, checkpoint::FileName(*it)), &h, &table_, &docs_);
    if (s.ok() && h.segment == *it) {
      start = h.segment;
      last_id_ = h.last_id;
      next_token_ = std::max<uint64_t>(1, h.next_token);
      paused_ = h.paused;
      checkpoint_segment_ = h.segment;
      rep->checkpoint_segment = h.segment;
      owners_known = h.owners;
      break;
    }
    rep->warnings.push_back("ignored checkpoint " + checkpoint::FileName(*it) + ": " + s.ToString());
    table_ = JobTable();
    docs_.Clear();
  }
  if (start == 0 && !checkpoints.empty()) {
    rep->warnings.push_back("no usable checkpoint: replayed the whole log (jobs deleted long ago may reappear)");
  }

  uint64_t unknown_status = 0, undecodable = 0, replayed_bytes = 0;
  uint32_t prev = start > 0 ? start - 1 : 0;
  if (start > 0 && std::find(segments.begin(), segments.end(), start) == segments.end() && !segments.empty() &&
      segments.back() > start) {
    rep->warnings.push_back("log segment " + std::to_string(start) + " (the checkpoint's first) is missing");
  }
  for (size_t i = 0; i < segments.size(); ++i) {
    const uint32_t seg = segments[i];
    const std::string name = log::SegmentFileName(seg);
    const std::string path = JoinPath(dir_, name);
    const bool last = i + 1 == segments.size();
    if (seg < start) {  // covered by the checkpoint: read only on demand
      FileInfo fi;
      CMQ_RETURN_IF_ERROR(env_->GetFileInfo(path, &fi));
      segment_used_[seg] = fi.size;
      continue;
    }
    if (prev != 0 && seg != prev + 1) {
      rep->warnings.push_back("log segments " + std::to_string(prev + 1) + ".." + std::to_string(seg - 1) +
                              " are missing");
    }
    prev = seg;
    std::unique_ptr<RandomAccessFile> raw;
    CMQ_RETURN_IF_ERROR(env_->NewRandomAccessFile(path, &raw));
    std::shared_ptr<RandomAccessFile> file(std::move(raw));
    log::SegmentScan scan;
    Status s = log::ScanSegment(
        *file, seg,
        [&](log::RecordType type, std::string_view payload, const log::RecordLoc& loc) {
          Status r = ReplayRecord(type, payload, loc, rep);
          if (r.IsNotFound())
            unknown_status++;
          else if (r.IsCorruption())
            undecodable++;
          return Status::OK();
        },
        &scan);
    CMQ_RETURN_IF_ERROR(s.WithContext("reading " + path));
    if (!scan.header_ok) {
      if (last) {
        // A segment whose creation was cut short by a crash: nothing was ever written to it.
        env_->RemoveFile(path).IgnoreError();
        rep->warnings.push_back("removed " + name + ", whose creation was interrupted");
        continue;
      }
      rep->warnings.push_back(name + " has no valid header; its records were skipped");
      FileInfo fi;
      if (env_->GetFileInfo(path, &fi).ok()) segment_used_[seg] = fi.size;  // reclaimed by a later checkpoint
      continue;
    }
    rep->segments_replayed++;
    rep->records_replayed += scan.records;
    replayed_bytes += scan.valid_end - log::kSegmentHeaderSize;
    for (const auto& [b, e] : scan.bad_regions) rep->bad_regions.push_back({name, b, e});
    const bool torn = scan.tail_garbage_end > scan.tail_garbage_begin;
    if (torn && !last) rep->bad_regions.push_back({name, scan.tail_garbage_begin, scan.tail_garbage_end});
    segment_used_[seg] = scan.valid_end;
    files_[seg] = file;
    if (last) {
      CMQ_RETURN_IF_ERROR(env_->NewWritableFile(path, Env::OpenMode::kOpenExisting, &tail_file_));
      if (torn) {
        // Cut the torn tail: zero it, so no fragment can ever be read back as a record.
        const uint64_t len = scan.tail_garbage_end - scan.tail_garbage_begin;
        Status z = tail_file_->WriteAt(scan.tail_garbage_begin, std::string(len, '\0'));
        if (z.ok()) z = tail_file_->Sync();
        CMQ_RETURN_IF_ERROR(z.WithContext("cutting the torn tail of " + path));
        rep->torn_tail_bytes += len;
      }
      // The last group may be one whose fsync failed in the process that wrote it: after such a failure the
      // kernel can keep the bytes in its cache, marked clean, without them being on disk. Write it (and the
      // header) again and sync, so nothing after this open builds on bytes that are not durable.
      std::string head, last;
      Status rw = file->Read(0, log::kSegmentHeaderSize, &head);
      if (rw.ok() && scan.last_group_offset != 0) {
        rw = file->Read(scan.last_group_offset, scan.valid_end - scan.last_group_offset, &last);
      }
      if (rw.ok()) rw = tail_file_->WriteAt(0, head);
      if (rw.ok() && !last.empty()) rw = tail_file_->WriteAt(scan.last_group_offset, last);
      if (rw.ok()) rw = tail_file_->Sync();
      CMQ_RETURN_IF_ERROR(rw.WithContext("re-syncing the end of " + path));
      tail_segment_ = seg;
      tail_offset_ = scan.valid_end;
      tail_capacity_ = std::max(scan.file_size, scan.valid_end);
      tail_written_to_ = scan.valid_end;  // what lies past it may be only reserved
      // A tail copied or restored sparse (cp --sparse, rsync -S) has holes where its space was reserved:
      // reserve it again, so neither records nor zeros ahead need new space; when that fails, no zeros ahead.
      if (!tail_file_->Allocate(tail_capacity_).ok()) tail_written_to_ = tail_capacity_;
    }
  }
  if (unknown_status) rep->warnings.push_back(std::to_string(unknown_status) + " status records named unknown jobs");
  if (undecodable) rep->warnings.push_back(std::to_string(undecodable) + " records could not be decoded");

  if (!tail_file_) {
    uint32_t seg = std::max<uint32_t>(std::max<uint32_t>(start, 1), segments.empty() ? 1 : segments.back() + 1);
    const std::string path = JoinPath(dir_, log::SegmentFileName(seg));
    env_->RemoveFile(path).IgnoreError();
    // Small and zero-filled at once (segment_prep.h): the segments after it grow and are zeroed ahead.
    tail_capacity_ = 0;  // no tail: the next size is the first size
    const uint64_t capacity = NextSegmentCapacityLocked();
    CMQ_RETURN_IF_ERROR(log::CreateSegment(env_, path, seg, capacity, &tail_file_, log::Reserve::kZeroFill));
    tail_segment_ = seg;
    tail_offset_ = log::kSegmentHeaderSize;
    tail_capacity_ = capacity;
    tail_written_to_ = capacity;
    segment_used_[seg] = log::kSegmentHeaderSize;
  }
  ResetPlanLocked();
  if (!owners_known) RecoverOwnersLocked();

  // Workers may still be running what was leased before the restart: give them time to report back.
  const int64_t grace_until = NowMs() + options_.reopen_lease_grace_ms;
  for (auto& [id, run] : table_.mutable_runs()) run.expires_ms = std::max(run.expires_ms, grace_until);
  last_id_ = std::max(last_id_, table_.max_id());
  token_reserve_ = next_token_;  // no token of this session is covered yet: the first take reserves some
  bytes_since_checkpoint_ = replayed_bytes;
  rep->jobs = table_.size();
  rep->open_micros =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
  // Jobs left waiting for a job that cannot succeed (a crash between the commits of a long chain of cancels):
  // the background thread (or ExpireLeases) cancels them.
  for (const auto& [id, after] : table_.waits()) {
    const JobMeta* m = table_.Find(id);
    if (m != nullptr && m->state == JobState::kPending && !DeadWaitLocked(id).empty()) orphan_checks_.insert(id);
  }
  opened_ = true;
  return Status::OK();
}

// Applies one record found in the log. NotFound: it names a job the store does not have; Corruption: it
// could not be decoded. Either way the record is skipped.
Status StoreImpl::ReplayRecord(log::RecordType type, std::string_view payload, const log::RecordLoc& loc,
                               RecoveryReport*) {
  switch (type) {
    case log::RecordType::kJob: {
      records::JobView v;
      CMQ_RETURN_IF_ERROR(records::DecodeJob(payload, &v));
      if (const JobMeta* m = table_.Find(v.id)) {  // moved by compaction
        JobMeta n = *m;
        n.job_loc = loc;
        table_.Replace(n);
        return Status::OK();
      }
      JobMeta n;
      n.id = v.id;
      n.prompt_id_hash = Hash64(v.prompt_id);
      if (n.prompt_id_hash == 0) n.prompt_id_hash = 1;
      n.job_loc = loc;
      n.updated_ms = JobIdMillis(v.id);
      n.priority = v.priority;
      n.batch = table_.InternBatch(v.batch_id);
      n.owner = table_.InternOwner(v.owner);
      n.max_attempts = v.max_attempts;
      n.state = JobState::kPending;
      table_.SetWaits(v.id, std::move(v.after));  // (before Insert: it is in the dispatch order once ready)
      table_.Insert(n);
      last_id_ = std::max(last_id_, v.id);
      return Status::OK();
    }
    case log::RecordType::kStatus: {
      records::StatusView v;
      CMQ_RETURN_IF_ERROR(records::DecodeStatus(payload, &v));
      const JobMeta* m = table_.Find(v.id);
      if (m == nullptr) return Status::NotFound("status of unknown job");
      JobMeta n = *m;
      n.state = v.state;
      n.attempts = v.attempts;
      n.status_loc = loc;
      n.updated_ms = v.updated_ms;
      table_.Replace(n);
      if (v.state == JobState::kRunning) {
        RunInfo r;
        r.token = v.token;
        r.expires_ms = v.lease_expires_ms;
        r.deadline_ms = v.deadline_ms;
        r.started_ms = v.started_ms;
        r.worker_id = v.worker_id;
        table_.SetRun(v.id, std::move(r));
      } else {
        table_.SetRun(v.id, std::nullopt);
      }
      next_token_ = std::max(next_token_, v.token + 1);
      return Status::OK();
    }
    case log::RecordType::kErase: {
      records::EraseView v;
      CMQ_RETURN_IF_ERROR(records::DecodeErase(payload, &v));
      for (uint64_t id : v.ids) {
        if (table_.Find(id) == nullptr) continue;
        table_.SetRun(id, std::nullopt);
        table_.Erase(id);
      }
      return Status::OK();
    }
    case log::RecordType::kMeta: {
      bool p = false;
      CMQ_RETURN_IF_ERROR(records::DecodeMeta(payload, &p));
      paused_ = p;
      return Status::OK();
    }
    case log::RecordType::kTokens: {
      uint64_t reserved = 0;
      CMQ_RETURN_IF_ERROR(records::DecodeTokens(payload, &reserved));
      next_token_ = std::max(next_token_, reserved);  // tokens below it may be out there: never again
      return Status::OK();
    }
    case log::RecordType::kDoc: {
      std::string_view key, value;
      bool erase = false;
      CMQ_RETURN_IF_ERROR(records::DecodeDoc(payload, &key, &value, &erase));
      if (erase) {
        docs_.Erase(std::string(key));
      } else {
        docs_.Put(std::string(key), std::string(value));
      }
      return Status::OK();
    }
    case log::RecordType::kGroup: break;  // groups never nest
  }
  return Status::Corruption("unknown record type");
}

// A checkpoint written before owners were indexed left every job's owner 0: read the owners of the jobs
// dispatch and the running limits care about (pending and running) from their records. Once per such store.
void StoreImpl::RecoverOwnersLocked() {
  std::vector<uint64_t> ids;
  table_.ForEach([&](const JobMeta& m) {
    if (m.owner == 0 && (m.state == JobState::kPending || m.state == JobState::kRunning)) ids.push_back(m.id);
  });
  std::string payload;
  for (uint64_t id : ids) {
    JobMeta n = *table_.Find(id);
    records::JobView v;
    if (!ReadPayloadLocked(n.job_loc, log::RecordType::kJob, &payload).ok() || !records::DecodeJob(payload, &v).ok() ||
        v.owner.empty()) {
      continue;  // (a record that cannot be read fails when taken, with its reason)
    }
    n.owner = table_.InternOwner(v.owner);
    table_.Erase(id);  // out of the indexes as owner 0, back in as its owner
    table_.Insert(n);
  }
}

}  // namespace comfymq
