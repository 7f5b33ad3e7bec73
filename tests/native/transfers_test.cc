// net/Transfers on a real artifact root: a file streamed in checked chunks is published under
// <root>/<job id>/<name> when its result is accepted; and when a host died after publishing it but before
// recording the result, the worker's resend (to the restarted host, with a new Transfers and writer on the
// same root) publishes no second copy: the job's artifact is the file already there.
#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>

#include "comfymq/artifact_writer.h"
#include "net/transfers.h"
#include "test_util.h"
#include "testing/mem_env.h"
#include "util/sha256.h"

namespace comfymq::net {
namespace {

using ::comfymq::testing::TempDir;

// Transfers as the broker's loop drives it: what the I/O thread hands back is taken here, in order.
struct Loop {
  explicit Loop(ArtifactWriter* w)
      : t(w, [this](Transfers::Done d) {
          std::lock_guard<std::mutex> l(mu);
          done.push_back(std::move(d));
          cv.notify_one();
        }) {}
  // The ack for a chunk: at once, or once the I/O thread has written it.
  proto::Message Chunk(const proto::Message& c, bool* retry) {
    proto::Message ack;
    if (t.OnChunk("w1", c, &ack, retry) == Transfers::Reply::kNow) return ack;
    Transfers::Done d;
    {
      std::unique_lock<std::mutex> l(mu);
      cv.wait(l, [&] { return !done.empty(); });
      d = std::move(done.front());
      done.pop_front();
    }
    std::string worker;
    uint64_t written = 0;
    EXPECT_TRUE(t.Completed(d, &worker, &ack, &written, retry));
    EXPECT_EQ(worker, "w1");
    return ack;
  }
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Transfers::Done> done;
  Transfers t;
};

proto::Message ChunkOf(uint64_t job, uint64_t token, const std::string& name, const std::string& data, size_t off,
                       size_t chunk) {
  proto::Message c;
  c.cmd = proto::Cmd::kChunk;
  c.job_id = job;
  c.token = token;
  c.file_index = 0;
  c.file_name = name;
  c.file_size = data.size();
  c.offset = off;
  c.data = data.substr(off, chunk);
  c.chunk_checksum = proto::ChunkChecksum(c.data);
  c.last = off + chunk >= data.size();
  if (c.last) c.file_sha256 = Sha256::Hex(data);
  return c;
}

// Sends `data` as chunks of `chunk` bytes for file 0 of job/token; every ack must be OK.
void SendFile(Loop* loop, uint64_t job, uint64_t token, const std::string& name, const std::string& data,
              size_t chunk) {
  for (size_t off = 0; off < data.size(); off += chunk) {
    bool retry = true;
    proto::Message ack = loop->Chunk(ChunkOf(job, token, name, data, off, chunk), &retry);
    ASSERT_EQ(ack.chunk_status, proto::ChunkStatus::kOk) << "offset " << off;
    ASSERT_EQ(ack.offset, std::min(data.size(), off + chunk));
    ASSERT_FALSE(retry);
  }
}

// Waits for the next n Dones the I/O thread hands back.
std::vector<Transfers::Done> NextDones(Loop* loop, size_t n) {
  std::vector<Transfers::Done> out;
  while (out.size() < n) {
    std::unique_lock<std::mutex> l(loop->mu);
    loop->cv.wait(l, [&] { return !loop->done.empty(); });
    out.push_back(loop->done.front());
    loop->done.pop_front();
  }
  return out;
}

// A Loop over a writer on a MemEnv (so faults can be injected).
struct MemLoop {
  MemLoop() {
    EXPECT_TRUE(ArtifactWriter::Open(&env, "/art", &w).ok());
    loop = std::make_unique<Loop>(w.get());
  }
  MemEnv env;
  std::unique_ptr<ArtifactWriter> w;
  std::unique_ptr<Loop> loop;
};

std::vector<std::string> Files(const std::string& dir) {
  std::vector<std::string> names;
  Env::Default()->GetChildren(dir, &names).IgnoreError();
  std::sort(names.begin(), names.end());
  return names;
}

TEST(Transfers, AResendAfterAHostRestartPublishesNoSecondCopy) {
  TempDir tmp;
  const uint64_t job = 0x123456789ull, token = 42;
  std::string data(3 * 100000 + 7, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 131) % 251);
  const std::vector<proto::FileEntry> files = {{"video.mp4", data.size(), Sha256::Hex(data), "video/mp4"}};
  std::string first_path;
  {
    std::unique_ptr<ArtifactWriter> w;
    ASSERT_TRUE(ArtifactWriter::Open(Env::Default(), tmp.path(), &w).ok());
    Loop loop(w.get());
    Transfers& t = loop.t;
    SendFile(&loop, job, token, "video.mp4", data, 100000);
    std::vector<Artifact> out;
    ASSERT_TRUE(t.Publish(job, token, files, &out).ok());
    ASSERT_EQ(out.size(), 1u);
    first_path = out[0].path;
    // ... and the host dies here, before the result is recorded.
  }
  std::unique_ptr<ArtifactWriter> w;
  ASSERT_TRUE(ArtifactWriter::Open(Env::Default(), tmp.path(), &w).ok());
  Loop loop(w.get());
  Transfers& t = loop.t;
  SendFile(&loop, job, token, "video.mp4", data, 64 * 1024);
  std::vector<Artifact> out;
  ASSERT_TRUE(t.Publish(job, token, files, &out).ok());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].path, first_path);
  EXPECT_EQ(out[0].sha256, Sha256::Hex(data));
  EXPECT_EQ(out[0].size, data.size());
  const std::string dir = tmp.path() + "/" + first_path.substr(0, first_path.find('/'));
  EXPECT_EQ(Files(dir), std::vector<std::string>{"video.mp4"}) << "a second copy, or a temp file, was left";
  // Other bytes under that name (another run's output) still get a name of their own.
  std::string changed = data;
  changed[10] ^= 1;
  const std::vector<proto::FileEntry> files2 = {{"video.mp4", changed.size(), Sha256::Hex(changed), "video/mp4"}};
  SendFile(&loop, job, token + 1, "video.mp4", changed, 100000);
  ASSERT_TRUE(t.Publish(job, token + 1, files2, &out).ok());
  EXPECT_NE(out[0].path, first_path);
  EXPECT_EQ(Files(dir), (std::vector<std::string>{"video-1.mp4", "video.mp4"}));
}

TEST(Transfers, AFileOfAResultNotYetSettledIsNeverReusedSoUnpublishingItHarmsNoOther) {
  // Run A's result is published, then refused (its lease ran out before the commit); run B of the same job,
  // with the same output, is published before A's refusal is known. B must not share A's file: unpublishing
  // A would delete the artifact B's recorded result names.
  TempDir tmp;
  std::unique_ptr<ArtifactWriter> w;
  ASSERT_TRUE(ArtifactWriter::Open(Env::Default(), tmp.path(), &w).ok());
  Loop loop(w.get());
  Transfers& t = loop.t;
  const uint64_t job = 77;
  const std::string data = "same output bytes";
  const std::vector<proto::FileEntry> files = {{"img.png", data.size(), Sha256::Hex(data), "image/png"}};
  std::vector<Artifact> run_a, run_b;
  SendFile(&loop, job, 1, "img.png", data, 1000);
  ASSERT_TRUE(t.Publish(job, 1, files, &run_a).ok());
  SendFile(&loop, job, 2, "img.png", data, 1000);
  ASSERT_TRUE(t.Publish(job, 2, files, &run_b).ok());
  EXPECT_NE(run_a[0].path, run_b[0].path);
  t.Unpublish(run_a);  // A refused
  FileInfo fi;
  ASSERT_TRUE(Env::Default()->GetFileInfo(tmp.path() + "/" + run_b[0].path, &fi).ok());
  EXPECT_TRUE(fi.exists) << "B's artifact was deleted with A's";
  // Another job: while its result is unsettled a second publish gets a name of its own; once the result is
  // recorded (settled), the same file sent again is that file.
  const uint64_t other = 78;
  std::vector<Artifact> first, unsettled, settled;
  SendFile(&loop, other, 1, "img.png", data, 1000);
  ASSERT_TRUE(t.Publish(other, 1, files, &first).ok());
  SendFile(&loop, other, 1, "img.png", data, 1000);
  ASSERT_TRUE(t.Publish(other, 1, files, &unsettled).ok());
  EXPECT_NE(unsettled[0].path, first[0].path);
  t.Unpublish(unsettled);
  t.Settle(first);
  SendFile(&loop, other, 1, "img.png", data, 1000);
  ASSERT_TRUE(t.Publish(other, 1, files, &settled).ok());
  EXPECT_EQ(settled[0].path, first[0].path);
}

TEST(Transfers, WhatTheIoThreadFindsComesBackAsTheAck) {
  MemLoop m;
  MemEnv& env = m.env;
  Loop& loop = *m.loop;
  const std::string data(5000, 'x');
  // The bytes are not what the worker's sha256 says: send it all again, and nothing is left.
  proto::Message first = ChunkOf(1, 1, "a.png", data, 0, 3000);
  proto::Message last = ChunkOf(1, 1, "a.png", data, 3000, 3000);
  last.file_sha256 = Sha256::Hex("something else");
  bool retry = false;
  EXPECT_EQ(loop.Chunk(first, &retry).chunk_status, proto::ChunkStatus::kOk);
  proto::Message ack = loop.Chunk(last, &retry);
  EXPECT_EQ(ack.chunk_status, proto::ChunkStatus::kResume);
  EXPECT_EQ(ack.offset, 0u);
  EXPECT_TRUE(retry);
  EXPECT_EQ(loop.t.active(), 0u);
  // The disk refuses the write: refused, and nothing is left.
  env.SetFaultHook([](MemEnv::Op op, const std::string&) {
    return op == MemEnv::Op::kWrite ? Status::NoSpace("disk full") : Status::OK();
  });
  ack = loop.Chunk(ChunkOf(1, 1, "b.png", data, 0, 3000), &retry);
  EXPECT_EQ(ack.chunk_status, proto::ChunkStatus::kRefused);
  EXPECT_EQ(loop.t.active(), 0u);
  env.SetFaultHook(nullptr);
  std::vector<std::string> names;
  ASSERT_TRUE(env.GetChildren("/art/" + FormatJobId(1), &names).ok());
  EXPECT_TRUE(names.empty()) << names[0];
}

TEST(Transfers, AChunkWrittenAfterItsTransferWasDroppedOrStartedOverAnswersNothing) {
  MemLoop m;
  Loop& loop = *m.loop;
  const std::string data(5000, 'y');
  proto::Message ack;
  bool retry = false;
  // Queued, then the job is dropped (its worker went away) before the loop hears it was written.
  ASSERT_EQ(loop.t.OnChunk("w1", ChunkOf(2, 1, "a.png", data, 0, 3000), &ack, &retry), Transfers::Reply::kLater);
  loop.t.AbortRun(2, 1);
  // Queued, then the file starts over: the first start's chunk is not this one's.
  ASSERT_EQ(loop.t.OnChunk("w1", ChunkOf(3, 1, "a.png", data, 0, 3000), &ack, &retry), Transfers::Reply::kLater);
  ASSERT_EQ(loop.t.OnChunk("w1", ChunkOf(3, 1, "a.png", data, 0, 3000), &ack, &retry), Transfers::Reply::kLater);
  std::vector<Transfers::Done> done = NextDones(&loop, 3);
  std::string worker;
  uint64_t written = 0;
  EXPECT_FALSE(loop.t.Completed(done[0], &worker, &ack, &written, &retry));
  EXPECT_FALSE(loop.t.Completed(done[1], &worker, &ack, &written, &retry));
  ASSERT_TRUE(loop.t.Completed(done[2], &worker, &ack, &written, &retry));
  EXPECT_EQ(ack.chunk_status, proto::ChunkStatus::kOk);
  EXPECT_EQ(ack.offset, 3000u);
  EXPECT_EQ(written, 3000u);
}

TEST(Transfers, NoOkFollowsARestartForChunksQueuedBeforeIt) {
  MemLoop m;
  Loop& loop = *m.loop;
  const std::string data(9000, 'z');
  proto::Message ack;
  bool retry = false;
  ASSERT_EQ(loop.t.OnChunk("w1", ChunkOf(4, 1, "a.png", data, 0, 3000), &ack, &retry), Transfers::Reply::kLater);
  ASSERT_EQ(loop.t.OnChunk("w1", ChunkOf(4, 1, "a.png", data, 3000, 3000), &ack, &retry), Transfers::Reply::kLater);
  // A chunk out of order (one got lost): start again. The worker's window then counts from zero, so the two
  // OKs still on their way must not reach it.
  ASSERT_EQ(loop.t.OnChunk("w1", ChunkOf(4, 1, "a.png", data, 9000, 3000), &ack, &retry), Transfers::Reply::kNow);
  EXPECT_EQ(ack.chunk_status, proto::ChunkStatus::kResume);
  EXPECT_EQ(ack.offset, 0u);
  std::string worker;
  uint64_t written = 0;
  for (const Transfers::Done& d : NextDones(&loop, 2)) {
    EXPECT_FALSE(loop.t.Completed(d, &worker, &ack, &written, &retry));
  }
  // The rest of the old window, sent before the worker heard: no answer each (each would restart it again).
  EXPECT_EQ(loop.t.OnChunk("w1", ChunkOf(4, 1, "a.png", data, 6000, 3000), &ack, &retry), Transfers::Reply::kNone);
  // The new start is taken.
  EXPECT_EQ(loop.Chunk(ChunkOf(4, 1, "a.png", data, 0, 3000), &retry).chunk_status, proto::ChunkStatus::kOk);
  // Nothing may follow the last chunk of a start: more is a restart too, and the last chunk's OK is dropped.
  const std::string small(100, 's');
  ASSERT_EQ(loop.t.OnChunk("w1", ChunkOf(4, 1, "b.png", small, 0, 100), &ack, &retry), Transfers::Reply::kLater);
  proto::Message extra = ChunkOf(4, 1, "b.png", small, 0, 100);
  extra.offset = 100;
  extra.data.clear();
  extra.chunk_checksum = proto::ChunkChecksum(extra.data);
  ASSERT_EQ(loop.t.OnChunk("w1", extra, &ack, &retry), Transfers::Reply::kNow);
  EXPECT_EQ(ack.chunk_status, proto::ChunkStatus::kResume);
  EXPECT_FALSE(loop.t.Completed(NextDones(&loop, 1)[0], &worker, &ack, &written, &retry));
  // Bytes beyond the file's size, not in a last chunk: a restart too.
  proto::Message over = ChunkOf(6, 1, "c.png", small, 0, 50);
  over.data = std::string(200, 'o');
  over.chunk_checksum = proto::ChunkChecksum(over.data);
  EXPECT_EQ(loop.t.OnChunk("w1", over, &ack, &retry), Transfers::Reply::kNow);
  EXPECT_EQ(ack.chunk_status, proto::ChunkStatus::kResume);
}

TEST(Transfers, AResultWhoseLastChunkIsStillBeingWrittenWaitsForIt) {
  MemLoop m;
  MemEnv& env = m.env;
  Loop& loop = *m.loop;
  const std::string data = "pixels";
  const std::vector<proto::FileEntry> files = {{"p.png", data.size(), Sha256::Hex(data), "image/png"}};
  proto::Message ack;
  bool retry = false;
  ASSERT_EQ(loop.t.OnChunk("w1", ChunkOf(7, 1, "p.png", data, 0, 100), &ack, &retry), Transfers::Reply::kLater);
  std::vector<Artifact> out;
  EXPECT_TRUE(loop.t.Publish(7, 1, files, &out).IsBusy());  // not "send them again"
  std::string worker;
  uint64_t written = 0;
  ASSERT_TRUE(loop.t.Completed(NextDones(&loop, 1)[0], &worker, &ack, &written, &retry));
  ASSERT_TRUE(loop.t.Publish(7, 1, files, &out).ok());
  ASSERT_EQ(out.size(), 1u);
  std::string got;
  ASSERT_TRUE(env.ReadFileToString("/art/" + out[0].path, &got).ok());
  EXPECT_EQ(got, data);
}

TEST(Transfers, DroppingOneRunOfAJobKeepsAnotherRunsChunks) {
  MemLoop m;
  Loop& loop = *m.loop;
  const std::string data(3000, 'r');
  proto::Message ack;
  bool retry = false;
  ASSERT_EQ(loop.t.OnChunk("w1", ChunkOf(5, 1, "a.png", data, 0, 1000), &ack, &retry),
            Transfers::Reply::kLater);  // the old run
  ASSERT_EQ(loop.t.OnChunk("w2", ChunkOf(5, 2, "a.png", data, 0, 1000), &ack, &retry),
            Transfers::Reply::kLater);  // the one now
  loop.t.AbortRun(5, 1);                // the old run's late result was refused
  std::vector<Transfers::Done> done = NextDones(&loop, 2);
  std::string worker;
  uint64_t written = 0;
  EXPECT_FALSE(loop.t.Completed(done[0], &worker, &ack, &written, &retry));
  ASSERT_TRUE(loop.t.Completed(done[1], &worker, &ack, &written, &retry));
  EXPECT_EQ(worker, "w2");
  EXPECT_EQ(ack.chunk_status, proto::ChunkStatus::kOk);
  EXPECT_EQ(ack.offset, 1000u);
  EXPECT_EQ(loop.t.active(), 1u);
}

}  // namespace
}  // namespace comfymq::net
