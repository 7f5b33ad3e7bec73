// StoreImpl's reads: records by location (from the log, or from a group applied but not yet written), jobs by
// id or prompt_id, lists and stats. Readers take state_mu_ shared, copy what they need, and read files after.
#include <algorithm>

#include "store/store_impl.h"
#include "util/checksum.h"

namespace comfymq {

// ---------------------------------------------------------------------------------------------------------
// Reading records

std::shared_ptr<RandomAccessFile> StoreImpl::SegmentFile(uint32_t segment, Status* s) {
  std::lock_guard<std::mutex> l(files_mu_);
  auto it = files_.find(segment);
  if (it != files_.end()) return it->second;
  std::unique_ptr<RandomAccessFile> f;
  *s = env_->NewRandomAccessFile(JoinPath(dir_, log::SegmentFileName(segment)), &f);
  if (!s->ok()) return nullptr;
  std::shared_ptr<RandomAccessFile> shared(std::move(f));
  files_[segment] = shared;
  return shared;
}

// A segment a job points into could not be opened: that is damage to the store, not a missing job.
Status StoreImpl::MissingSegment(const log::RecordLoc& loc, const Status& s) {
  if (!s.IsNotFound()) return s;  // an I/O error stays an I/O error
  return Status::Corruption("log segment " + log::SegmentFileName(loc.segment) + " is missing: " + s.message());
}

StatusDoc StoreImpl::LoadStatusOrRebuildLocked(const JobMeta& m) {
  StatusDoc d;
  if (LoadStatusLocked(m, &d).ok()) return d;
  d = StatusDoc();  // the record is damaged: carry on from what the index knows (its history is lost)
  d.state = m.state;
  d.attempts = m.attempts;
  d.updated_ms = m.updated_ms;
  return d;
}

bool StoreImpl::FindInflightLocked(const log::RecordLoc& loc, std::string_view* framed) const {
  for (const RecordSink* sink : inflight_) {
    if (sink->Find(loc, framed)) return true;
  }
  return false;
}

Status StoreImpl::ReadPayloadLocked(const log::RecordLoc& loc, log::RecordType want, std::string* payload) {
  log::RecordType type;
  std::string_view framed;
  if (FindInflightLocked(loc, &framed)) {
    std::string_view p;
    CMQ_RETURN_IF_ERROR(log::ParseFramedRecord(framed, &type, &p));
    payload->assign(p.data(), p.size());
  } else {
    Status s;
    auto file = SegmentFile(loc.segment, &s);
    if (!file) return MissingSegment(loc, s);
    CMQ_RETURN_IF_ERROR(log::ReadRecord(*file, loc, &type, payload));
  }
  if (type != want)
    return Status::Corruption("record at " + log::SegmentFileName(loc.segment) + " offset " +
                              std::to_string(loc.offset) + " has an unexpected type");
  return Status::OK();
}

Status StoreImpl::LoadStatusLocked(const JobMeta& m, StatusDoc* doc) {
  if (!m.status_loc.valid()) {
    *doc = StatusDoc();
    doc->state = m.state;
    doc->attempts = m.attempts;
    doc->updated_ms = m.updated_ms;
    return Status::OK();
  }
  std::string payload;
  CMQ_RETURN_IF_ERROR(ReadPayloadLocked(m.status_loc, log::RecordType::kStatus, &payload));
  records::StatusView v;
  CMQ_RETURN_IF_ERROR(records::DecodeStatus(payload, &v));
  *doc = StatusDoc::FromView(v);
  return Status::OK();
}

Status StoreImpl::CaptureLocked(const JobMeta& m, PendingRead* r) {
  r->meta = m;
  if (const RunInfo* run = table_.Run(m.id)) r->run = *run;
  auto capture = [&](const log::RecordLoc& loc, std::string* framed, std::shared_ptr<RandomAccessFile>* file) {
    if (!loc.valid()) return Status::OK();
    std::string_view v;
    if (FindInflightLocked(loc, &v)) {
      framed->assign(v.data(), v.size());
      return Status::OK();
    }
    Status s;
    *file = SegmentFile(loc.segment, &s);
    return *file ? Status::OK() : MissingSegment(loc, s);
  };
  CMQ_RETURN_IF_ERROR(capture(m.job_loc, &r->job_framed, &r->job_file));
  return capture(m.status_loc, &r->status_framed, &r->status_file);
}

Status StoreImpl::Materialize(PendingRead& r, bool with_prompt, Job* job) {
  auto payload_of = [](const log::RecordLoc& loc, const std::string& framed, const std::shared_ptr<RandomAccessFile>& f,
                       log::RecordType want, std::string* out) {
    log::RecordType type;
    if (!framed.empty()) {
      std::string_view p;
      CMQ_RETURN_IF_ERROR(log::ParseFramedRecord(framed, &type, &p));
      out->assign(p.data(), p.size());
    } else {
      CMQ_RETURN_IF_ERROR(log::ReadRecord(*f, loc, &type, out));
    }
    if (type != want) return Status::Corruption("record has an unexpected type");
    return Status::OK();
  };
  const JobMeta& m = r.meta;
  std::string job_payload;
  CMQ_RETURN_IF_ERROR(payload_of(m.job_loc, r.job_framed, r.job_file, log::RecordType::kJob, &job_payload)
                          .WithContext("job " + FormatJobId(m.id)));
  records::JobView jv;
  CMQ_RETURN_IF_ERROR(records::DecodeJob(job_payload, &jv));
  FillJob(m, jv, job);
  if (with_prompt) CMQ_RETURN_IF_ERROR(UnpackTexts(jv, &job->prompt, &job->workflow));
  if (m.status_loc.valid()) {
    std::string sp;
    CMQ_RETURN_IF_ERROR(payload_of(m.status_loc, r.status_framed, r.status_file, log::RecordType::kStatus, &sp)
                            .WithContext("status of job " + FormatJobId(m.id)));
    records::StatusView sv;
    CMQ_RETURN_IF_ERROR(records::DecodeStatus(sp, &sv));
    job->started_ms = sv.started_ms;
    job->finished_ms = sv.finished_ms;
    job->worker_id = sv.worker_id;
    job->outputs = sv.outputs;
    job->artifacts = sv.artifacts;
    job->error = sv.error;
    job->history = sv.history;
  }
  if (r.run) {
    job->lease_token = tokens_.External(r.run->token);
    job->lease_expires_ms = r.run->expires_ms;
    job->worker_id = r.run->worker_id;
    job->started_ms = r.run->started_ms;
    job->progress = r.run->progress;
  }
  return Status::OK();
}

Status StoreImpl::UnpackTexts(const records::JobView& jv, std::string* prompt, std::string* workflow) {
  // Bounded by the largest limit a store can have, not this open's max_prompt_bytes: a store reopened with a
  // lower limit still reads the jobs it accepted before.
  Status s = records::UnpackText(jv.prompt, records::kMaxTextBytes, prompt);
  if (s.ok()) s = records::UnpackText(jv.workflow, records::kMaxTextBytes, workflow);
  return s.ok() ? s : s.WithContext("job " + FormatJobId(jv.id));
}

void StoreImpl::FillJob(const JobMeta& m, const records::JobView& jv, Job* job) {
  *job = Job();
  job->id = m.id;
  job->state = m.state;
  job->priority = m.priority;
  job->attempts = m.attempts;
  job->max_attempts = m.max_attempts;
  job->updated_ms = m.updated_ms;
  job->timeout_ms = jv.timeout_ms;
  job->prompt_id = jv.prompt_id;
  job->create_time_ms = jv.create_time_ms;
  job->enqueued_ms = JobIdMillis(m.id);
  job->batch_id = jv.batch_id;
  job->owner = jv.owner;
  job->after = jv.after;
  job->labels = jv.labels;
}

Status StoreImpl::FindByPromptIdLocked(const std::string& prompt_id, uint64_t hash, uint64_t* id) {
  *id = 0;
  std::vector<uint64_t> candidates;
  table_.FindByPromptHash(hash, &candidates);
  for (uint64_t c : candidates) {
    const JobMeta* m = table_.Find(c);
    if (m == nullptr) continue;
    std::string payload;
    CMQ_RETURN_IF_ERROR(ReadPayloadLocked(m->job_loc, log::RecordType::kJob, &payload));
    records::JobView jv;
    CMQ_RETURN_IF_ERROR(records::DecodeJob(payload, &jv));
    if (jv.prompt_id == prompt_id) {
      *id = c;
      return Status::OK();
    }
  }
  return Status::OK();
}

Status StoreImpl::Get(uint64_t id, bool with_prompt, Job* job) {
  if (closed_.load()) return Status::IOError("store " + dir_ + " is closed");
  PendingRead r;
  {
    std::shared_lock<std::shared_mutex> st(state_mu_);
    const JobMeta* m = table_.Find(id);
    if (m == nullptr) return Status::NotFound("no job " + FormatJobId(id));
    CMQ_RETURN_IF_ERROR(CaptureLocked(*m, &r));
  }
  return Materialize(r, with_prompt, job);
}

Status StoreImpl::GetByPromptId(const std::string& prompt_id, bool with_prompt, Job* job) {
  if (closed_.load()) return Status::IOError("store " + dir_ + " is closed");
  PendingRead r;
  {
    std::shared_lock<std::shared_mutex> st(state_mu_);
    uint64_t id = 0;
    CMQ_RETURN_IF_ERROR(FindByPromptIdLocked(prompt_id, Hash64(prompt_id), &id));
    const JobMeta* m = id == 0 ? nullptr : table_.Find(id);
    if (m == nullptr) return Status::NotFound("no job with prompt_id '" + prompt_id + "'");
    CMQ_RETURN_IF_ERROR(CaptureLocked(*m, &r));
  }
  return Materialize(r, with_prompt, job);
}

Status StoreImpl::List(const ListQuery& q, ListPage* page) {
  if (closed_.load()) return Status::IOError("store " + dir_ + " is closed");
  if (q.limit < 1 || q.limit > 1000) return Status::InvalidArgument("limit must be between 1 and 1000");
  if (q.state_mask >= (1u << kNumJobStates)) return Status::InvalidArgument("state filter names an unknown state");
  if (q.since_ms < 0 || q.until_ms < 0) return Status::InvalidArgument("time bounds must not be negative");
  page->jobs.clear();
  page->next_cursor = 0;
  std::vector<PendingRead> reads;
  bool more = false;
  {
    std::shared_lock<std::shared_mutex> st(state_mu_);
    uint32_t batch = 0;
    if (!q.batch_id.empty() && !table_.FindBatch(q.batch_id, &batch)) return Status::OK();
    const uint64_t lo = static_cast<uint64_t>(q.since_ms) << 16;
    const uint64_t hi = static_cast<uint64_t>(q.until_ms) << 16;
    Status s;
    table_.Scan(q.cursor, q.newest_first, lo, hi, [&](const JobMeta& m) {
      if (q.state_mask != 0 && (q.state_mask & (1u << static_cast<int>(m.state))) == 0) return true;
      if (batch != 0 && m.batch != batch) return true;
      if (reads.size() == q.limit) {
        more = true;
        return false;
      }
      reads.emplace_back();
      s = CaptureLocked(m, &reads.back());
      return s.ok();
    });
    CMQ_RETURN_IF_ERROR(s);
  }
  page->jobs.resize(reads.size());
  for (size_t i = 0; i < reads.size(); ++i) {
    CMQ_RETURN_IF_ERROR(Materialize(reads[i], q.with_prompt, &page->jobs[i]));
  }
  if (more) page->next_cursor = reads.back().meta.id;
  return Status::OK();
}

Status StoreImpl::QueuePosition(uint64_t id, uint64_t* position) {
  if (closed_.load()) return Status::IOError("store " + dir_ + " is closed");
  std::shared_lock<std::shared_mutex> st(state_mu_);
  if (!table_.PendingPosition(id, position)) {
    return Status::NotFound("job " + FormatJobId(id) + " is not a pending job ready to run");
  }
  return Status::OK();
}

Status StoreImpl::Stats(StoreStats* out) {
  if (closed_.load()) return Status::IOError("store " + dir_ + " is closed");
  *out = StoreStats();
  const int64_t now = NowMs();
  {
    std::shared_lock<std::shared_mutex> st(state_mu_);
    for (int i = 0; i < kNumJobStates; ++i) out->counts[i] = table_.count(static_cast<JobState>(i));
    out->total = table_.size();
    out->waiting = table_.waiting();
    uint64_t oldest = table_.oldest_pending_id();
    if (oldest != 0) out->oldest_pending_age_ms = std::max<int64_t>(0, now - JobIdMillis(oldest));
    const int64_t sec = now / 1000;
    for (int64_t s = sec - 3599; s <= sec; ++s) {
      if (s > finished_ring_second_ || s <= finished_ring_second_ - 3600) continue;
      uint32_t n = finished_per_second_[static_cast<size_t>(s % 3600)];
      out->finished_last_hour += n;
      if (s > sec - 60) out->finished_last_minute += n;
    }
    out->paused = paused_;
    out->live_bytes = table_.total_live_bytes();
    out->docs = docs_.size();
    out->doc_bytes = docs_.bytes();
    out->outbox = docs_.outbox_size();
    for (size_t i = 0; i < kSyncBuckets; ++i) out->sync_counts[i] = sync_counts_[i].load(std::memory_order_relaxed);
    out->sync_micros_total = sync_micros_.load(std::memory_order_relaxed);
  }
  {
    std::lock_guard<std::mutex> l(files_mu_);
    for (const auto& [seg, used] : segment_used_) out->log_bytes += used;
    out->segments = segment_used_.size();
  }
  out->checkpoint_segment = checkpoint_segment_.load();
  std::lock_guard<std::mutex> l(health_mu_);
  out->background_error = last_background_error_;
  return Status::OK();
}

}  // namespace comfymq
