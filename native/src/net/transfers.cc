#include "net/transfers.h"

#include "util/process.h"

namespace comfymq::net {

Transfers::Transfers(ArtifactWriter* writer, DoneFn on_done) : writer_(writer), on_done_(std::move(on_done)) {
  thread_ = std::thread([this] { IoLoop(); });
}

Transfers::~Transfers() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
    tasks_.clear();
  }
  cv_.notify_one();
  thread_.join();
}

namespace {

proto::Message AckFor(const Transfers::Key& key) {
  proto::Message ack;
  ack.cmd = proto::Cmd::kChunkAck;
  ack.job_id = std::get<0>(key);
  ack.token = std::get<1>(key);
  ack.file_index = std::get<2>(key);
  return ack;
}

}  // namespace

Transfers::Reply Transfers::OnChunk(const std::string& worker_id, const proto::Message& c, proto::Message* ack,
                                    bool* retry) {
  *retry = false;
  const Key key{c.job_id, c.token, c.file_index};
  *ack = AckFor(key);
  auto it = map_.find(key);
  // Start the file again from its beginning (the worker does, whatever offset it is told). The transfer's
  // start ends: an OK still coming for a chunk queued before this answer must not reach the worker after it
  // (its window counts from zero again), and the rest of the old window gets no answer of its own (each
  // would restart the file once more) until the new start's first chunk comes.
  auto restart = [&] {
    if (it != map_.end()) {
      Transfer& t = it->second;
      t.generation = ++generations_;
      t.io.reset();
      t.restarting = true;
      t.complete = false;
    }
    ack->chunk_status = proto::ChunkStatus::kResume;
    ack->offset = 0;
    *retry = true;
    return Reply::kNow;
  };
  Task task;
  if (c.offset == 0) {
    // A file starts (or starts over): whatever came before for it is dropped.
    if (it != map_.end()) map_.erase(it);
    Transfer t;
    t.worker = worker_id;
    t.name = c.file_name;
    t.size = c.file_size;
    t.generation = ++generations_;
    t.io = std::make_shared<IoFile>();
    it = map_.emplace(key, std::move(t)).first;
    task.begin = FormatJobId(c.job_id) + "/" + c.file_name;
  }
  if (it == map_.end()) return restart();  // we know nothing of this file (a broker restart): start over
  Transfer& t = it->second;
  if (t.restarting) return Reply::kNone;
  if (t.worker != worker_id || t.name != c.file_name || t.size != c.file_size) return restart();
  if (t.last_queued || c.offset != t.next) return restart();               // out of order, or more after the last
  if (proto::ChunkChecksum(c.data) != c.chunk_checksum) return restart();  // damaged on the way: again
  t.next += c.data.size();
  if (t.next > t.size || (c.last && t.next != t.size)) return restart();
  t.last_queued = c.last;
  task.io = t.io;
  task.done.key = key;
  task.done.generation = t.generation;
  task.done.bytes = c.data.size();
  task.done.offset = t.next;
  task.done.last = c.last;
  task.data = c.data;
  if (c.last) task.expected_sha256 = c.file_sha256;
  Queue(std::move(task));
  return Reply::kLater;
}

bool Transfers::Completed(const Done& d, std::string* worker_id, proto::Message* ack, uint64_t* bytes_written,
                          bool* retry) {
  *bytes_written = 0;
  *retry = false;
  auto it = map_.find(d.key);
  if (it == map_.end() || it->second.generation != d.generation) return false;  // dropped or started over since
  Transfer& t = it->second;
  *worker_id = t.worker;
  *ack = AckFor(d.key);
  switch (d.outcome) {
    case Done::Outcome::kRefused:
      map_.erase(it);                                    // the temp file goes with the last reference to it
      ack->chunk_status = proto::ChunkStatus::kRefused;  // the host cannot store it (disk full, ...)
      return true;
    case Done::Outcome::kMismatch:
      map_.erase(it);
      ack->chunk_status = proto::ChunkStatus::kResume;  // not what the worker said it sent: again, whole
      ack->offset = 0;
      *retry = true;
      return true;
    case Done::Outcome::kWritten: break;
  }
  *bytes_written = d.bytes;
  if (d.last) {
    t.complete = true;
    t.sha256 = d.sha256;
  }
  ack->chunk_status = proto::ChunkStatus::kOk;
  ack->offset = d.offset;
  return true;
}

void Transfers::Queue(Task t) {
  {
    std::lock_guard<std::mutex> l(mu_);
    tasks_.push_back(std::move(t));
  }
  cv_.notify_one();
}

void Transfers::IoLoop() {
  NameThisThread("cmq-transfers");
  for (;;) {
    Task t;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return stop_ || !tasks_.empty(); });
      if (stop_) return;
      t = std::move(tasks_.front());
      tasks_.pop_front();
    }
    Run(t);
  }
}

void Transfers::Run(Task& t) {
  IoFile& f = *t.io;
  Done done = std::move(t.done);
  // Only this task still holds the file: its transfer was dropped or started over, nothing to write (the
  // count may be one too high for a moment when the loop lets go meanwhile: the write then just happens).
  if (t.io.use_count() == 1) f.refused = true;
  if (!f.refused && !t.begin.empty() && !writer_->Begin(t.begin, &f.stream).ok()) f.refused = true;
  if (!f.refused && !f.stream->Append(t.data).ok()) f.refused = true;
  if (!f.refused && done.last) {
    if (!f.stream->Finish(&done.sha256).ok()) {  // synced and closed; a failed sync aborts it
      f.refused = true;
    } else if (done.sha256 != t.expected_sha256) {
      done.outcome = Done::Outcome::kMismatch;
    }
  }
  if (f.refused) done.outcome = Done::Outcome::kRefused;
  t.io.reset();  // the loop owns the file from here (the last chunk's), or it goes with its transfer
  on_done_(std::move(done));
}

Status Transfers::Publish(uint64_t job, uint64_t token, const std::vector<proto::FileEntry>& files,
                          std::vector<Artifact>* out) {
  out->clear();
  for (uint32_t i = 0; i < files.size(); ++i) {
    auto it = map_.find(Key{job, token, i});
    if (it != map_.end() && it->second.last_queued && !it->second.complete && !it->second.restarting &&
        it->second.name == files[i].name && it->second.size == files[i].size) {
      return Status::Busy("file " + files[i].name + " of job " + FormatJobId(job) + " is still being written");
    }
  }
  for (uint32_t i = 0; i < files.size(); ++i) {
    auto it = map_.find(Key{job, token, i});
    if (it == map_.end() || !it->second.complete || it->second.name != files[i].name ||
        it->second.size != files[i].size || it->second.sha256 != files[i].sha256) {
      return Status::NotFound("file " + files[i].name + " of job " + FormatJobId(job) + " has not arrived whole");
    }
  }
  // The same file published once already (by a host that died before recording the result; the worker
  // sends it again): that file stands, no second copy. Never one this host published for a result that
  // is not yet settled: that one may still be unpublished if its result is refused.
  std::vector<ArtifactStream*> streams;
  std::vector<bool> reuse;
  for (uint32_t i = 0; i < files.size(); ++i) {
    streams.push_back(map_.find(Key{job, token, i})->second.io->stream.get());
    std::string rel;
    reuse.push_back(NormalizeRelativePath(FormatJobId(job) + "/" + files[i].name, &rel).ok() &&
                    unsettled_.count(rel) == 0);
  }
  std::vector<ArtifactInfo> infos;
  Status s = writer_->CommitAll(streams, reuse, &infos);  // one directory sync for all of them
  for (size_t i = 0; i < infos.size(); ++i) {
    out->push_back(Artifact{infos[i].path, infos[i].size, infos[i].sha256, files[i].mime});
    if (!infos[i].reused) unsettled_.insert(infos[i].path);  // only what this publish made may be removed again
  }
  if (!s.ok()) {
    Unpublish(*out);
    out->clear();
    AbortRun(job, token);
    return s;
  }
  for (uint32_t i = 0; i < files.size(); ++i) map_.erase(Key{job, token, i});  // committed: done with
  return Status::OK();
}

void Transfers::Unpublish(const std::vector<Artifact>& artifacts) {
  for (const Artifact& a : artifacts) {
    if (unsettled_.erase(a.path) != 0) writer_->Remove(a.path).IgnoreError();  // never a reused copy
  }
}

void Transfers::Settle(const std::vector<Artifact>& artifacts) {
  for (const Artifact& a : artifacts) unsettled_.erase(a.path);
}

void Transfers::AbortRun(uint64_t job, uint64_t token) {
  for (auto it = map_.lower_bound(Key{job, token, 0});
       it != map_.end() && std::get<0>(it->first) == job && std::get<1>(it->first) == token;) {
    it = map_.erase(it);
  }
}

void Transfers::AbortWorker(const std::string& worker_id) {
  for (auto it = map_.begin(); it != map_.end();) {
    it = it->second.worker == worker_id ? map_.erase(it) : std::next(it);
  }
}

}  // namespace comfymq::net
