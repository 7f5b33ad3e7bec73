// net/Transfers on a real artifact root: a file streamed in checked chunks is published under
// <root>/<job id>/<name> when its result is accepted; and when a host died after publishing it but before
// recording the result, the worker's resend (to the restarted host, with a new Transfers and writer on the
// same root) publishes no second copy: the job's artifact is the file already there.
#include <gtest/gtest.h>

#include <algorithm>

#include "comfymq/artifact_writer.h"
#include "net/transfers.h"
#include "test_util.h"
#include "util/sha256.h"

namespace comfymq::net {
namespace {

using ::comfymq::testing::TempDir;

// Sends `data` as chunks of `chunk` bytes for file 0 of job/token; every ack must be OK.
void SendFile(Transfers* t, uint64_t job, uint64_t token, const std::string& name, const std::string& data,
              size_t chunk) {
  for (size_t off = 0; off < data.size(); off += chunk) {
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
    uint64_t written = 0;
    bool retry = true;
    proto::Message ack = t->OnChunk("w1", c, &written, &retry);
    ASSERT_EQ(ack.chunk_status, proto::ChunkStatus::kOk) << "offset " << off;
    ASSERT_FALSE(retry);
  }
}

std::vector<std::string> Files(const std::string& dir) {
  std::vector<std::string> names;
  Env::Default()->GetChildren(dir, &names);
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
    Transfers t(w.get());
    SendFile(&t, job, token, "video.mp4", data, 100000);
    std::vector<Artifact> out;
    ASSERT_TRUE(t.Publish(job, token, files, &out).ok());
    ASSERT_EQ(out.size(), 1u);
    first_path = out[0].path;
    // ... and the host dies here, before the result is recorded.
  }
  std::unique_ptr<ArtifactWriter> w;
  ASSERT_TRUE(ArtifactWriter::Open(Env::Default(), tmp.path(), &w).ok());
  Transfers t(w.get());
  SendFile(&t, job, token, "video.mp4", data, 64 * 1024);
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
  SendFile(&t, job, token + 1, "video.mp4", changed, 100000);
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
  Transfers t(w.get());
  const uint64_t job = 77;
  const std::string data = "same output bytes";
  const std::vector<proto::FileEntry> files = {{"img.png", data.size(), Sha256::Hex(data), "image/png"}};
  std::vector<Artifact> run_a, run_b;
  SendFile(&t, job, 1, "img.png", data, 1000);
  ASSERT_TRUE(t.Publish(job, 1, files, &run_a).ok());
  SendFile(&t, job, 2, "img.png", data, 1000);
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
  SendFile(&t, other, 1, "img.png", data, 1000);
  ASSERT_TRUE(t.Publish(other, 1, files, &first).ok());
  SendFile(&t, other, 1, "img.png", data, 1000);
  ASSERT_TRUE(t.Publish(other, 1, files, &unsettled).ok());
  EXPECT_NE(unsettled[0].path, first[0].path);
  t.Unpublish(unsettled);
  t.Settle(first);
  SendFile(&t, other, 1, "img.png", data, 1000);
  ASSERT_TRUE(t.Publish(other, 1, files, &settled).ok());
  EXPECT_EQ(settled[0].path, first[0].path);
}

}  // namespace
}  // namespace comfymq::net
