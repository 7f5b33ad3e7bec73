#include "net/input_fetch.h"

#include <algorithm>

namespace comfymq::net {

InputFetch::InputFetch(uint64_t fetch, uint64_t job, uint64_t token, std::string sha256)
    : fetch_(fetch), job_(job), token_(token), sha256_(std::move(sha256)) {}

void InputFetch::Fail(Status s) {
  if (finished_) return;
  finished_ = true;
  status_ = std::move(s);
}

void InputFetch::Start(std::vector<proto::Message>* out) { Ask(0, proto::kChunkWindow, out); }

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

void InputFetch::OnInput(proto::Message& m, int64_t now, std::vector<proto::Message>* out, std::string* data) {
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
    Ask(received_, proto::kChunkWindow, out);
    return;
  }
  received_ += m.data.size();
  data->swap(m.data);
  if (received_ == size_) {
    finished_ = true;  // every byte passed on: the caller checks the sha256
    status_ = Status::OK();
  }
}

void InputFetch::Tick(uint64_t consumed, int64_t now, std::vector<proto::Message>* out) {
  if (finished_) return;
  consumed_ = std::max(consumed_, consumed);
  if (retry_at_ != 0) {
    if (now < retry_at_) return;
    retry_at_ = 0;
    Ask(received_, proto::kChunkWindow, out);
    return;
  }
  requested_ = std::max(requested_, received_);
  if (size_known_ && requested_ >= size_) return;
  // Half the window written: ask for that half again.
  const uint64_t half = (proto::kChunkWindow / 2) * proto::kChunkBytes;
  if (requested_ - std::min(requested_, consumed_) <= half) Ask(requested_, proto::kChunkWindow / 2, out);
}

}  // namespace comfymq::net
