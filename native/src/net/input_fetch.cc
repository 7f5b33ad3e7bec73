#include "net/input_fetch.h"

#include <algorithm>

namespace comfymq::net {

InputFetch::InputFetch(uint64_t fetch, uint64_t job, uint64_t token, std::string sha256, std::string temp_path,
                       Env* env)
    : fetch_(fetch),
      job_(job),
      token_(token),
      sha256_(std::move(sha256)),
      temp_path_(std::move(temp_path)),
      env_(env) {}

void InputFetch::Fail(Status s) {
  if (finished_) return;
  finished_ = true;
  status_ = std::move(s);
  if (file_) {
    file_->Close().IgnoreError();
    file_.reset();
  }
}

void InputFetch::Start(int64_t now, std::vector<proto::Message>* out) { Restart(now, out); }

void InputFetch::Restart(int64_t now, std::vector<proto::Message>* out) {
  (void)now;
  if (file_) file_->Close().IgnoreError();
  file_.reset();
  Status s = env_->NewWritableFile(temp_path_, Env::OpenMode::kTruncate, &file_);
  if (!s.ok()) return Fail(Status::IOError("cannot write " + temp_path_ + ": " + s.message()));
  hash_ = std::make_unique<Sha256>();
  received_ = requested_ = 0;
  retry_at_ = 0;
  Ask(0, proto::kChunkWindow, out);
}

void InputFetch::Ask(uint64_t offset, uint32_t count, std::vector<proto::Message>* out) {
  proto::Message m;
  m.cmd = proto::Cmd::kFetch;
  m.fetch = fetch_;
  m.job_id = job_;
  m.token = token_;
  m.file_sha256 = sha256_;
  m.offset = offset;
  m.count = count;
  out->push_back(std::move(m));
  requested_ = offset + static_cast<uint64_t>(count) * proto::kChunkBytes;
  if (size_known_) requested_ = std::min(requested_, size_);
}

void InputFetch::Refill(std::vector<proto::Message>* out) {
  if (retry_at_ != 0) return;  // the host was busy: Tick asks again
  requested_ = std::max(requested_, received_);
  if (size_known_ && requested_ >= size_) return;
  // Half the window drained: ask for that half again.
  // Half the window drained: ask for that half again.
  const uint64_t half = (proto::kChunkWindow / 2) * proto::kChunkBytes;
  if (requested_ - received_ <= half) Ask(requested_, proto::kChunkWindow / 2, out);
}

void InputFetch::OnInput(const proto::Message& m, int64_t now, std::vector<proto::Message>* out) {
  if (finished_) return;
  if (m.chunk_status == proto::ChunkStatus::kRefused) {
    return Fail(Status::InvalidArgument("refused by the host: " + m.reason));
  }
  if (m.chunk_status == proto::ChunkStatus::kResume) {  // busy: ask again in a moment, from what we have
    if (++busy_ > kMaxBusy) return Fail(Status::IOError("the host stayed too busy to send input " + sha256_));
    requested_ = received_;
    retry_at_ = now + kBusyRetryMs;
    return;
  }
  if (m.offset != received_) return;  // sent before we asked again (after a damaged chunk, or busy): dropped
  if (size_known_ && m.file_size != size_) {
    return Fail(Status::IOError("input " + sha256_ + " changed size on the host while it was fetched"));
  }
  size_known_ = true;
  size_ = m.file_size;
  requested_ = std::min(requested_, size_);
  if (proto::ChunkChecksum(m.data) != m.chunk_checksum || (m.data.empty() && received_ != size_)) {
    if (++bad_chunks_ > kMaxBadChunks) {
      return Fail(Status::IOError("input " + sha256_ + ": too many damaged chunks from the host"));
    }
    requested_ = received_;
    Ask(received_, proto::kChunkWindow, out);
    return;
  }
  if (!m.data.empty()) {
    Status s = file_->Append(m.data);
    if (!s.ok()) return Fail(Status::IOError("cannot write " + temp_path_ + ": " + s.message()));
    hash_->Update(m.data);
    received_ += m.data.size();
  }
  if (received_ < size_) return Refill(out);
  // Every byte arrived: is it the input asked for?
  if (hash_->HexDigest() != sha256_) {
    if (++restarts_ > 1) {
      return Fail(
          Status::IOError("input " + sha256_ + " arrived twice with another sha256: the host's copy is damaged"));
    }
    return Restart(now, out);
  }
  finished_ = true;
  status_ = Status::OK();
}

void InputFetch::Tick(int64_t now, std::vector<proto::Message>* out) {
  if (finished_ || retry_at_ == 0 || now < retry_at_) return;
  retry_at_ = 0;
  Ask(received_, proto::kChunkWindow, out);
}

}  // namespace comfymq::net
