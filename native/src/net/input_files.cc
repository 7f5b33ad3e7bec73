#include "net/input_files.h"

#include <algorithm>

#include "net/protocol.h"
#include "util/process.h"

namespace comfymq::net {

InputFiles::InputFiles(std::string root, Env* env, ReadFn on_read)
    : root_(std::move(root)), env_(env), on_read_(std::move(on_read)), thread_(&InputFiles::ReadLoop, this) {}

InputFiles::~InputFiles() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool InputFiles::Queue(Request r) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (queue_.size() >= kMaxQueued) return false;
    queue_.push_back(std::move(r));
  }
  cv_.notify_all();
  return true;
}

void InputFiles::Sent(uint64_t bytes) {
  {
    std::lock_guard<std::mutex> l(mu_);
    unsent_ -= std::min(unsent_, bytes);
  }
  cv_.notify_all();
}

std::string InputFiles::PathOf(const std::string& sha256) const {
  if (root_.empty()) return "";
  return root_ + "/" + sha256.substr(0, 2) + "/" + sha256;
}

void InputFiles::ReadLoop() {
  NameThisThread("cmq-inputs");
  for (;;) {
    Request r;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      r = std::move(queue_.front());
      queue_.pop_front();
    }
    Read(r);
  }
}

void InputFiles::Read(const Request& r) {
  Chunk base;
  base.worker_id = r.worker_id;
  base.epoch = r.epoch;
  base.fetch = r.fetch;
  base.sha256 = r.sha256;
  uint32_t settled = 0;  // of r.count
  auto refuse = [&](const std::string& why) {
    Chunk c = base;
    c.offset = r.offset;
    c.refused = true;
    c.reason = why;
    c.released = r.count - settled;
    on_read_(std::move(c));
  };
  const std::string path = r.path.empty() ? PathOf(r.sha256) : r.path;
  if (path.empty()) return refuse("this host keeps no inputs");
  std::unique_ptr<RandomAccessFile> in;
  uint64_t size = 0;
  if (!env_->NewRandomAccessFile(path, &in).ok() || !in->Size(&size).ok()) {
    return refuse("the host has no input " + r.sha256 + " (it was removed, or never stored)");
  }
  if (r.offset > size) return refuse("offset " + std::to_string(r.offset) + " lies past the input's end");
  uint64_t offset = r.offset;
  for (uint32_t i = 0; i < r.count; ++i) {
    const uint64_t n = std::min<uint64_t>(proto::kChunkBytes, size - offset);
    {
      // Wait while the loop has not sent what was read (the reader never runs far ahead of the loop; what a worker
      // may have queued for it is bounded by the broker's receipts, broker_inputs.cc).
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return stop_ || unsent_ < kMaxUnsentBytes; });
      if (stop_) return;
      unsent_ += n;
    }
    Chunk c = base;
    c.offset = offset;
    c.size = size;
    const bool last = i + 1 == r.count || offset + n == size;
    c.released = last ? r.count - settled : 1;
    Status s = in->Read(offset, static_cast<size_t>(n), &c.data);
    if (!s.ok() || c.data.size() != n) {
      Sent(n);
      return refuse("the host could not read input " + r.sha256 + ": " + (s.ok() ? "it changed size" : s.message()));
    }
    on_read_(std::move(c));
    settled = last ? r.count : i + 1;
    offset += n;
    if (offset == size) break;  // the end (an empty input is one empty chunk)
  }
}

}  // namespace comfymq::net
