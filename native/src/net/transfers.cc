#include "net/transfers.h"

#include <unistd.h>

namespace comfymq::net {

proto::Message Transfers::OnChunk(const std::string& worker_id, const proto::Message& c, uint64_t* bytes_written,
                                  bool* retry) {
  *bytes_written = 0;
  *retry = false;
  proto::Message ack;
  ack.cmd = proto::Cmd::kChunkAck;
  ack.job_id = c.job_id;
  ack.token = c.token;
  ack.file_index = c.file_index;
  const Key key{c.job_id, c.token, c.file_index};
  auto it = map_.find(key);
  auto restart = [&](uint64_t from) {
    ack.chunk_status = proto::ChunkStatus::kResume;
    ack.offset = from;
    *retry = true;
    return ack;
  };
  if (c.offset == 0) {
    // A file starts (or starts over): whatever came before for it is dropped.
    if (it != map_.end()) map_.erase(it);
    Transfer t;
    t.worker = worker_id;
    t.name = c.file_name;
    t.size = c.file_size;
    Status s = writer_->Begin(FormatJobId(c.job_id) + "/" + c.file_name, &t.stream);
    if (!s.ok()) {
      ack.chunk_status = proto::ChunkStatus::kRefused;  // the host cannot store it (disk full, ...)
      return ack;
    }
    it = map_.emplace(key, std::move(t)).first;
  }
  if (it == map_.end()) return restart(0);  // we know nothing of this file (a broker restart): start over
  Transfer& t = it->second;
  if (t.worker != worker_id || t.name != c.file_name || t.size != c.file_size) return restart(0);
  if (t.complete || c.offset != t.next) return restart(t.complete ? 0 : t.next);
  if (proto::ChunkChecksum(c.data) != c.chunk_checksum) return restart(t.next);  // damaged on the way: again
  Status s = t.stream->Append(c.data);
  if (!s.ok()) {
    map_.erase(it);
    ack.chunk_status = proto::ChunkStatus::kRefused;
    return ack;
  }
  *bytes_written = c.data.size();
  t.next += c.data.size();
  if (c.last) {
    std::string digest;
    s = t.stream->Finish(&digest);
    if (!s.ok() || t.next != t.size || digest != c.file_sha256) {
      map_.erase(it);  // aborts the temp file: nothing visible
      return restart(0);
    }
    t.complete = true;
    t.sha256 = digest;
  }
  ack.chunk_status = proto::ChunkStatus::kOk;
  ack.offset = t.next;
  return ack;
}

Status Transfers::Publish(uint64_t job, uint64_t token, const std::vector<proto::FileEntry>& files,
                          std::vector<Artifact>* out) {
  out->clear();
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
    streams.push_back(map_.find(Key{job, token, i})->second.stream.get());
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
    AbortJob(job);
    return s;
  }
  for (uint32_t i = 0; i < files.size(); ++i) map_.erase(Key{job, token, i});  // committed: done with
  return Status::OK();
}

void Transfers::Unpublish(const std::vector<Artifact>& artifacts) {
  for (const Artifact& a : artifacts) {
    if (unsettled_.erase(a.path) != 0) ::unlink((writer_->root() + "/" + a.path).c_str());  // never a reused copy
  }
}

void Transfers::Settle(const std::vector<Artifact>& artifacts) {
  for (const Artifact& a : artifacts) unsettled_.erase(a.path);
}

void Transfers::AbortJob(uint64_t job) {
  for (auto it = map_.begin(); it != map_.end();) {
    it = std::get<0>(it->first) == job ? map_.erase(it) : std::next(it);
  }
}

void Transfers::AbortWorker(const std::string& worker_id) {
  for (auto it = map_.begin(); it != map_.end();) {
    it = it->second.worker == worker_id ? map_.erase(it) : std::next(it);
  }
}

}  // namespace comfymq::net
