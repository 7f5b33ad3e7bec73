// The broker's part of inputs that travel with jobs: a worker asks for chunks of an input (FETCH) while it holds
// the lease of a job whose prompt names that input; the reader thread (InputFiles) reads them and the loop sends
// them (INPUT). Anything else is refused with the reason, and nothing is read: a worker never learns of an input
// its jobs do not name, nor whether one exists.

#include <algorithm>

#include "net/broker_impl.h"
#include "net/zmq_frames.h"

namespace comfymq::net {

bool BrokerImpl::GrantedInput(uint64_t job, uint64_t token, const std::string& sha256, std::string* path) {
  const auto key = std::make_pair(job, token);
  auto it = input_grants_.find(key);
  if (it == input_grants_.end()) {
    // The inputs the prompt names, as the dispatch's requirements scan reads them (one reading of a prompt), and
    // the outputs of the jobs it waits for that it names, as they were sent to it.
    Job j;
    Requirements req;
    if (!store_->Get(job, true, &j).ok() || !ExtractRequirements(j.prompt, &req).ok()) return false;
    std::map<std::string, std::string> granted;
    for (const std::string& sha : req.inputs) granted.emplace(sha, "");
    std::string sent;
    std::vector<UpstreamFile> outputs;
    if (!j.after.empty() && SendablePrompt(j, &sent, &outputs).ok()) {
      for (const UpstreamFile& f : outputs) granted[f.sha256] = artifacts_->root() + "/" + f.path;
    }
    if (input_grants_.size() >= kMaxGrants) input_grants_.clear();
    it = input_grants_.emplace(key, std::move(granted)).first;
  }
  auto found = it->second.find(sha256);
  if (found == it->second.end()) return false;
  *path = found->second;
  return true;
}

Status BrokerImpl::SendablePrompt(const Job& job, std::string* prompt, std::vector<UpstreamFile>* files) {
  return ResolveOutputRefs(
      job.prompt, job.after,
      [this](uint64_t id, std::vector<Artifact>* out, std::string* outputs) {
        Job dep;
        CMQ_RETURN_IF_ERROR(store_->Get(id, false, &dep));
        if (dep.state != JobState::kSucceeded) {
          return Status::InvalidArgument("job " + FormatJobId(id) + " has not succeeded (it is " +
                                         JobStateName(dep.state) + ")");
        }
        out->clear();
        *outputs = std::move(dep.outputs);
        json arr = json::parse(dep.artifacts.empty() ? "[]" : dep.artifacts, nullptr, false);
        if (!arr.is_array()) return Status::Corruption("job " + FormatJobId(id) + "'s artifact list is unreadable");
        for (const json& a : arr) {
          if (!a.is_object()) continue;
          Artifact f;
          f.path = a.value("path", "");
          f.size = a.value("size", uint64_t{0});
          f.sha256 = a.value("sha256", "");
          out->push_back(std::move(f));  // (paths that lead out of the root are dropped by ResolveOutputRefs)
        }
        return Status::OK();
      },
      prompt, files);
}

void BrokerImpl::HandleFetch(WorkerState& w, const proto::Message& m) {
  auto refuse = [&](proto::ChunkStatus status, const std::string& why) {
    proto::Message a;
    a.cmd = proto::Cmd::kInput;
    a.fetch = m.fetch;
    a.file_sha256 = m.file_sha256;
    a.offset = m.offset;
    a.chunk_status = status;
    a.reason = why;
    Send(w, a);
  };
  if (!Holds(w, m.job_id, m.token)) {
    Count([](BrokerCounters& c) { c.input_refused++; });
    RefuseForeign(w, m);
    return refuse(proto::ChunkStatus::kRefused,
                  "input refused: this worker does not hold job " + FormatJobId(m.job_id) + "'s lease");
  }
  std::string path;
  if (inputs_ == nullptr || !GrantedInput(m.job_id, m.token, m.file_sha256, &path)) {
    Count([](BrokerCounters& c) { c.input_refused++; });
    return refuse(proto::ChunkStatus::kRefused,
                  "input refused: job " + FormatJobId(m.job_id) + " names no input " + m.file_sha256);
  }
  // What the worker shows it read (the newest receipt it echoes) frees its window; a worker that does not read
  // gets no more than kMaxUnreadInputChunks, however many FETCHes it sends.
  if (m.receipt != 0) {
    auto seen = std::find(w.input_unread.begin(), w.input_unread.end(), m.receipt);
    if (seen != w.input_unread.end()) w.input_unread.erase(w.input_unread.begin(), seen + 1);
  }
  if (w.input_unread.size() + w.input_reserved + m.count > kMaxUnreadInputChunks) {
    return refuse(proto::ChunkStatus::kResume, "busy: read the chunks sent before asking for more");
  }
  InputFiles::Request r{w.id, w.epoch, m.fetch, m.file_sha256, m.offset, m.count, std::move(path)};
  if (!inputs_->Queue(std::move(r))) {
    return refuse(proto::ChunkStatus::kResume, "busy: the host is reading other inputs; ask again");
  }
  w.input_reserved += m.count;
  if (m.offset == 0) Count([](BrokerCounters& c) { c.input_fetches++; });
}

void BrokerImpl::HandleInputRead(InputFiles::Chunk c) {
  const uint64_t bytes = c.data.size();
  auto it = workers_.find(c.worker_id);
  if (it != workers_.end() && it->second.online && it->second.epoch == c.epoch) {
    WorkerState& w = it->second;
    w.input_reserved -= std::min(w.input_reserved, c.released);
    proto::Message m;
    m.cmd = proto::Cmd::kInput;
    m.fetch = c.fetch;
    m.file_sha256 = std::move(c.sha256);
    m.offset = c.offset;
    m.file_size = c.size;
    if (c.refused) {
      m.chunk_status = proto::ChunkStatus::kRefused;
      m.reason = std::move(c.reason);
    } else {
      m.chunk_checksum = proto::ChunkChecksum(c.data);
      m.receipt = SipHash64(receipt_key_, (w.epoch << 32) ^ ++w.input_sent) | 1;  // never 0 ("none read yet")
      w.input_unread.push_back(m.receipt);
    }
    // The chunk goes to libzmq as it is (no copy): the data frame is the one read.
    std::vector<std::string> frames = proto::Encode(m);
    frames.back() = std::move(c.data);
    w.last_sent_ms = NowMs();
    const bool sent = net::SendOwnedFrames(router_, &w.rid, std::move(frames));
    Count([&](BrokerCounters& k) { sent ? k.messages_out++ : k.unroutable++; });
    if (sent && !c.refused) {
      Count([&](BrokerCounters& k) {
        k.input_chunks++;
        k.input_bytes_sent += bytes;
      });
    }
  }
  inputs_->Sent(bytes);  // sent, or dropped with its worker: either way no longer held here
}

}  // namespace comfymq::net
