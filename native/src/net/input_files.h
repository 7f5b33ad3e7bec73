// InputFiles: the host's stored inputs (<root>/<sha256[0:2]>/<sha256>, written by the host's input store) read
// for workers in chunks, the other direction of Transfers. The broker's loop checks a FETCH (the worker holds the
// lease of a job that names the input) and queues it here; the reads run on a thread of their own, so a slow
// disk never holds up the loop; each chunk read goes back to the loop through `on_read`, which sends it as an
// INPUT message.
//
// Bounded: at most kMaxQueued FETCHes wait (Queue says false: the worker hears "busy" and asks again), each for
// at most proto::kChunkWindow chunks, and the reader waits while more than kMaxUnsentBytes it read are not yet
// handed to ZeroMQ (Sent tells it what went). What ZeroMQ then holds for one worker is bounded by the broker's
// receipts (broker_inputs.cc): each chunk's `released` says how many of its request's reservations it settles. Thread
// safety: Queue and Sent run on the loop; `on_read` is called on the reader thread and must only hand the chunk to the
// loop.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "comfymq/env.h"

namespace comfymq::net {

class InputFiles {
 public:
  struct Request {
    std::string worker_id;
    uint64_t epoch = 0;  // the worker's connection it came on (a chunk for another one is dropped)
    uint64_t fetch = 0;
    std::string sha256;  // checked by the caller: 64 lowercase hex digits
    uint64_t offset = 0;
    uint32_t count = 0;  // chunks, 1..proto::kChunkWindow
    std::string path;    // where the input lies, when not in the input store (another job's output); else ""
  };
  struct Chunk {
    std::string worker_id;
    uint64_t epoch = 0;
    uint32_t released = 0;  // of the request's `count` chunks, how many this one settles (the last settles the rest)
    uint64_t fetch = 0;
    std::string sha256;
    uint64_t offset = 0;
    uint64_t size = 0;  // the whole input's
    std::string data;
    bool refused = false;  // no such input, or the offset lies past its end: `reason` says which
    std::string reason;
  };
  using ReadFn = std::function<void(Chunk)>;

  static constexpr size_t kMaxQueued = 64;
  static constexpr uint64_t kMaxUnsentBytes = 64u << 20;

  InputFiles(std::string root, Env* env, ReadFn on_read);
  ~InputFiles();  // stops the reader; queued requests are dropped

  // False: too many requests wait already (nothing queued).
  bool Queue(Request r);
  // The loop sent (or dropped) a chunk of this many bytes that on_read handed it.
  void Sent(uint64_t bytes);
  // The path of an input, or "" when `root` is empty (this host keeps no inputs).
  std::string PathOf(const std::string& sha256) const;

 private:
  void ReadLoop();
  void Read(const Request& r);  // on the reader thread

  const std::string root_;
  Env* const env_;
  ReadFn on_read_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Request> queue_;
  uint64_t unsent_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace comfymq::net
