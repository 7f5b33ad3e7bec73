// The atomic artifact writer: content and checksum, collision-free names, streaming, untrusted paths,
// symlinks that escape the root, stale temp files, and failures that must leave no visible file.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "comfymq/artifact_writer.h"
#include "test_util.h"
#include "testing/mem_env.h"
#include "util/sha256.h"

namespace comfymq {
namespace {

using ::comfymq::testing::TempDir;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> List(const std::string& dir) {
  std::vector<std::string> names;
  Env::Default()->GetChildren(dir, &names).IgnoreError();
  std::sort(names.begin(), names.end());
  return names;
}

class ArtifactWriterTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(ArtifactWriter::Open(Env::Default(), tmp_.Sub("root"), &w_).ok()); }
  // A stream of `data` for `rel`, not yet committed.
  std::unique_ptr<ArtifactStream> StreamOf(const std::string& rel, const std::string& data) {
    std::unique_ptr<ArtifactStream> st;
    EXPECT_TRUE(w_->Begin(rel, &st).ok());
    EXPECT_TRUE(st->Append(data).ok());
    return st;
  }
  TempDir tmp_;
  std::unique_ptr<ArtifactWriter> w_;
};

TEST_F(ArtifactWriterTest, WritesBytesWithSizeAndSha256) {
  ArtifactInfo info;
  std::string data = "hello artifact";
  ASSERT_TRUE(w_->Write("job1/out.txt", data, &info).ok());
  EXPECT_EQ(info.path, "job1/out.txt");
  EXPECT_EQ(info.full_path, tmp_.Sub("root") + "/job1/out.txt");
  EXPECT_EQ(info.size, data.size());
  EXPECT_EQ(info.sha256, Sha256::Hex(data));
  EXPECT_EQ(ReadAll(info.full_path), data);
  EXPECT_EQ(List(tmp_.Sub("root/job1")), std::vector<std::string>{"out.txt"});
  // A known digest, to pin the hash itself.
  EXPECT_EQ(Sha256::Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_F(ArtifactWriterTest, NeverOverwritesACollisionGetsASuffix) {
  ArtifactInfo a, b, c, d;
  ASSERT_TRUE(w_->Write("out.png", "first", &a).ok());
  ASSERT_TRUE(w_->Write("out.png", "second", &b).ok());
  ASSERT_TRUE(w_->Write("out.png", "third", &c).ok());
  ASSERT_TRUE(w_->Write("noext", "x", &d).ok());
  EXPECT_EQ(a.path, "out.png");
  EXPECT_EQ(b.path, "out-1.png");
  EXPECT_EQ(c.path, "out-2.png");
  EXPECT_EQ(ReadAll(a.full_path), "first");
  EXPECT_EQ(ReadAll(b.full_path), "second");
  ASSERT_TRUE(w_->Write("noext", "y", &d).ok());
  EXPECT_EQ(d.path, "noext-1");
}

TEST_F(ArtifactWriterTest, CommitOrReuseKeepsTheSameBytesOnceAndSuffixesAnythingElse) {
  ArtifactInfo first, again, other, longer;
  ASSERT_TRUE(StreamOf("job7/img.png", "pixels")->CommitOrReuse(&first).ok());
  EXPECT_EQ(first.path, "job7/img.png");
  // The same bytes under the same name (sent again after a host restart): that file, no copy, no temp left.
  ASSERT_TRUE(StreamOf("job7/img.png", "pixels")->CommitOrReuse(&again).ok());
  EXPECT_EQ(again.path, "job7/img.png");
  EXPECT_EQ(again.full_path, first.full_path);
  EXPECT_EQ(again.size, 6u);
  EXPECT_EQ(again.sha256, Sha256::Hex("pixels"));
  EXPECT_EQ(List(tmp_.Sub("root/job7")), std::vector<std::string>{"img.png"});
  // Same size, other bytes; or another size: a collision like any other, never an overwrite.
  ASSERT_TRUE(StreamOf("job7/img.png", "pixelz")->CommitOrReuse(&other).ok());
  ASSERT_TRUE(StreamOf("job7/img.png", "more pixels")->CommitOrReuse(&longer).ok());
  EXPECT_EQ(other.path, "job7/img-1.png");
  EXPECT_EQ(longer.path, "job7/img-2.png");
  EXPECT_EQ(ReadAll(first.full_path), "pixels");
  EXPECT_EQ(ReadAll(other.full_path), "pixelz");
  // A link of that name is never taken for the file, even when it points at the same bytes.
  ASSERT_EQ(::symlink(first.full_path.c_str(), tmp_.Sub("root/job7/link.png").c_str()), 0);
  ArtifactInfo via_link;
  ASSERT_TRUE(StreamOf("job7/link.png", "pixels")->CommitOrReuse(&via_link).ok());
  EXPECT_EQ(via_link.path, "job7/link-1.png");
  EXPECT_EQ(List(tmp_.Sub("root/job7")),
            (std::vector<std::string>{"img-1.png", "img-2.png", "img.png", "link-1.png", "link.png"}));
}

TEST_F(ArtifactWriterTest, CommitOrReuseTakesOnlyARegularReadableFile) {
  ASSERT_EQ(::mkdir(tmp_.Sub("root/j").c_str(), 0755), 0);
  // A FIFO of that name (opening it to read would block): never looked into, a name of its own.
  ASSERT_EQ(::mkfifo(tmp_.Sub("root/j/empty.txt").c_str(), 0644), 0);
  ArtifactInfo a;
  ASSERT_TRUE(StreamOf("j/empty.txt", "")->CommitOrReuse(&a).ok());
  EXPECT_EQ(a.path, "j/empty-1.txt");
  // A directory of that name: the same.
  ASSERT_EQ(::mkdir(tmp_.Sub("root/j/d.bin").c_str(), 0755), 0);
  ArtifactInfo b;
  ASSERT_TRUE(StreamOf("j/d.bin", "x")->CommitOrReuse(&b).ok());
  EXPECT_EQ(b.path, "j/d-1.bin");
}

TEST(ArtifactWriterFaults, CommitOrReuseFallsBackToANewNameWhenTheFileThereCannotBeCheckedOrSynced) {
  MemEnv env;
  std::unique_ptr<ArtifactWriter> w;
  ASSERT_TRUE(ArtifactWriter::Open(&env, "/root", &w).ok());
  ArtifactInfo first;
  ASSERT_TRUE(w->Write("j/img.png", "pixels", &first).ok());
  for (MemEnv::Op op : {MemEnv::Op::kRead, MemEnv::Op::kSync}) {
    // The existing file cannot be read (or synced): the publish still succeeds, under a new name.
    env.SetFaultHook([&](MemEnv::Op o, const std::string& path) {
      return o == op && path == "/root/j/img.png" ? Status::IOError(std::string(MemEnv::OpName(op)) + " denied")
                                                  : Status::OK();
    });
    std::unique_ptr<ArtifactStream> st;
    ASSERT_TRUE(w->Begin("j/img.png", &st).ok());
    ASSERT_TRUE(st->Append("pixels").ok());
    ArtifactInfo info;
    Status s = st->CommitOrReuse(&info);
    ASSERT_TRUE(s.ok()) << MemEnv::OpName(op) << ": " << s.ToString();
    EXPECT_NE(info.path, "j/img.png") << MemEnv::OpName(op);
    env.SetFaultHook(nullptr);
  }
}

TEST(ArtifactWriterCommitAll, OneDirectorySyncPerDirectoryAndAFailureStopsCleanly) {
  MemEnv env;
  std::unique_ptr<ArtifactWriter> w;
  ASSERT_TRUE(ArtifactWriter::Open(&env, "/root", &w).ok());
  ArtifactInfo earlier;
  ASSERT_TRUE(w->Write("a/f3.png", "a3", &earlier).ok());  // an existing copy of one of them, to reuse
  std::vector<std::unique_ptr<ArtifactStream>> streams;
  std::vector<ArtifactStream*> raw;
  std::vector<bool> reuse;
  for (int i = 0; i < 40; ++i) {
    const std::string dir = i < 20 ? "a" : "b";
    std::unique_ptr<ArtifactStream> st;
    ASSERT_TRUE(w->Begin(dir + "/f" + std::to_string(i % 20) + ".png", &st).ok());
    ASSERT_TRUE(st->Append(dir + std::to_string(i % 20)).ok());
    raw.push_back(st.get());
    reuse.push_back(true);
    streams.push_back(std::move(st));
  }
  int dir_syncs = 0;
  env.SetFaultHook([&](MemEnv::Op op, const std::string&) {
    dir_syncs += op == MemEnv::Op::kSyncDir;
    return Status::OK();
  });
  std::vector<ArtifactInfo> infos;
  ASSERT_TRUE(w->CommitAll(raw, reuse, &infos).ok());
  EXPECT_EQ(dir_syncs, 2);  // not 40
  ASSERT_EQ(infos.size(), 40u);
  EXPECT_EQ(infos[3].path, "a/f3.png");
  EXPECT_TRUE(infos[3].reused);
  EXPECT_FALSE(infos[4].reused);
  EXPECT_EQ(infos[25].path, "b/f5.png");
  std::string got;
  ASSERT_TRUE(env.ReadFileToString("/root/b/f5.png", &got).ok());
  EXPECT_EQ(got, "b5");
  std::vector<std::string> names;
  ASSERT_TRUE(env.GetChildren("/root/a", &names).ok());
  EXPECT_EQ(names.size(), 20u);  // no temp left, no second copy of f3

  // A rename that fails part way: what came before is published and synced, the failed one is gone, the
  // ones after it are untouched and can still be committed.
  streams.clear();
  raw.clear();
  for (int i = 0; i < 5; ++i) {
    std::unique_ptr<ArtifactStream> st;
    ASSERT_TRUE(w->Begin("c/g" + std::to_string(i) + ".png", &st).ok());
    ASSERT_TRUE(st->Append("g").ok());
    raw.push_back(st.get());
    streams.push_back(std::move(st));
  }
  int renames = 0;
  dir_syncs = 0;
  env.SetFaultHook([&](MemEnv::Op op, const std::string&) {
    dir_syncs += op == MemEnv::Op::kSyncDir;
    return op == MemEnv::Op::kRename && ++renames == 3 ? Status::IOError("rename denied") : Status::OK();
  });
  Status s = w->CommitAll(raw, std::vector<bool>(5, false), &infos);
  EXPECT_FALSE(s.ok());
  ASSERT_EQ(infos.size(), 2u);
  EXPECT_EQ(dir_syncs, 1);
  env.SetFaultHook(nullptr);
  ArtifactInfo later;
  ASSERT_TRUE(streams[3]->Commit(&later).ok());
  EXPECT_EQ(later.path, "c/g3.png");
  EXPECT_FALSE(streams[2]->Commit(&later).ok());  // aborted
  ASSERT_TRUE(env.GetChildren("/root/c", &names).ok());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names.size(), 4u);  // g0, g1, g3 and g4's temp (still open)
  EXPECT_TRUE(w->CommitAll(raw, std::vector<bool>(2, false), &infos).IsInvalidArgument());
}

TEST_F(ArtifactWriterTest, ConcurrentWritersToOneNameNeverClobber) {
  std::vector<std::thread> ts;
  std::mutex mu;
  std::set<std::string> paths;
  for (int t = 0; t < 8; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        ArtifactInfo info;
        std::string data(1000 + t, static_cast<char>('a' + t));
        ASSERT_TRUE(w_->Write("shared/img.png", data, &info).ok());
        std::lock_guard<std::mutex> l(mu);
        EXPECT_TRUE(paths.insert(info.path).second) << info.path;
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(paths.size(), 80u);
  EXPECT_EQ(List(tmp_.Sub("root/shared")).size(), 80u);
  for (const auto& p : paths) {
    std::string d = ReadAll(tmp_.Sub("root/") + p);
    ASSERT_FALSE(d.empty());
    EXPECT_EQ(d, std::string(d.size(), d[0]));
  }
}

TEST_F(ArtifactWriterTest, StreamsInChunksAndAbortLeavesNothing) {
  std::unique_ptr<ArtifactStream> s;
  ASSERT_TRUE(w_->Begin("video/clip.mp4", &s).ok());
  Sha256 h;
  std::string all;
  for (int i = 0; i < 50; ++i) {
    std::string chunk(100000, static_cast<char>(i));
    ASSERT_TRUE(s->Append(chunk).ok());
    h.Update(chunk);
    all += chunk;
    // Nothing is visible under the final name while it is being written.
    if (i == 25) {
      for (auto& n : List(tmp_.Sub("root/video"))) EXPECT_EQ(n.rfind(".cmq-tmp.", 0), 0u) << n;
    }
  }
  ArtifactInfo info;
  ASSERT_TRUE(s->Commit(&info).ok());
  EXPECT_EQ(info.size, all.size());
  EXPECT_EQ(info.sha256, h.HexDigest());
  EXPECT_EQ(ReadAll(info.full_path), all);
  EXPECT_FALSE(s->Append("more").ok());

  ASSERT_TRUE(w_->Begin("video/aborted.mp4", &s).ok());
  ASSERT_TRUE(s->Append("partial").ok());
  ASSERT_TRUE(s->Abort().ok());
  ASSERT_TRUE(w_->Begin("video/dropped.mp4", &s).ok());
  ASSERT_TRUE(s->Append("partial").ok());
  s.reset();  // dropped without commit
  EXPECT_EQ(List(tmp_.Sub("root/video")), std::vector<std::string>{"clip.mp4"});
}

TEST_F(ArtifactWriterTest, UntrustedPathsAreRejected) {
  ArtifactInfo info;
  for (std::string bad :
       {std::string(""), std::string("/etc/passwd"), std::string("../x"), std::string("a/../../x"),
        std::string("a/..", 4), std::string("a\0b", 3), std::string("dir/"), std::string("a\nb"),
        std::string(".cmq-tmp.sneaky"), std::string("C:\\x"), std::string("a\\b"), std::string(".")}) {
    Status s = w_->Write(bad, "x", &info);
    EXPECT_TRUE(s.IsInvalidArgument()) << "'" << bad << "' -> " << s.ToString();
  }
  EXPECT_TRUE(List(tmp_.Sub("root")).empty());
  std::string norm;
  ASSERT_TRUE(NormalizeRelativePath("a//b/./c.png", &norm).ok());
  EXPECT_EQ(norm, "a/b/c.png");
}

TEST_F(ArtifactWriterTest, SymlinksThatEscapeTheRootAreRejected) {
  ASSERT_EQ(mkdir(tmp_.Sub("outside").c_str(), 0755), 0);
  ASSERT_EQ(mkdir(tmp_.Sub("root/inside").c_str(), 0755), 0);
  ASSERT_EQ(symlink(tmp_.Sub("outside").c_str(), tmp_.Sub("root/escape").c_str()), 0);
  ASSERT_EQ(symlink(tmp_.Sub("root/inside").c_str(), tmp_.Sub("root/alias").c_str()), 0);
  ArtifactInfo info;
  Status s = w_->Write("escape/x.png", "x", &info);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("leaves the artifact root"), std::string::npos);
  EXPECT_TRUE(List(tmp_.Sub("outside")).empty());
  ASSERT_TRUE(w_->Write("alias/y.png", "y", &info).ok());  // a link that stays inside is fine
  EXPECT_EQ(ReadAll(tmp_.Sub("root/inside/y.png")), "y");
  // A file where a directory is expected.
  ASSERT_TRUE(w_->Write("plain", "p", &info).ok());
  EXPECT_TRUE(w_->Write("plain/z.png", "z", &info).IsInvalidArgument());
  // A symlink at the final name is a collision, never written through.
  ASSERT_EQ(symlink(tmp_.Sub("outside/target").c_str(), tmp_.Sub("root/link.png").c_str()), 0);
  ASSERT_TRUE(w_->Write("link.png", "safe", &info).ok());
  EXPECT_EQ(info.path, "link-1.png");
  EXPECT_TRUE(List(tmp_.Sub("outside")).empty());
}

TEST_F(ArtifactWriterTest, LinksInsideTheRootAreFollowedOnlyToDirectoriesOfTheRoot) {
  ASSERT_EQ(mkdir(tmp_.Sub("root/inside").c_str(), 0755), 0);
  ASSERT_EQ(symlink(tmp_.Sub("root/inside").c_str(), tmp_.Sub("root/alias").c_str()), 0);
  ASSERT_EQ(symlink("alias", tmp_.Sub("root/alias2").c_str()), 0);  // a relative link to a link
  ArtifactInfo info;
  ASSERT_TRUE(w_->Write("alias2/deeper/y.png", "y", &info).ok());
  EXPECT_EQ(ReadAll(tmp_.Sub("root/inside/deeper/y.png")), "y");
  EXPECT_EQ(info.path, "alias2/deeper/y.png");
  ASSERT_TRUE(w_->Write("plain", "p", &info).ok());
  ASSERT_EQ(symlink(tmp_.Sub("root/plain").c_str(), tmp_.Sub("root/to_file").c_str()), 0);
  Status s = w_->Write("to_file/z.png", "z", &info);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
}

TEST_F(ArtifactWriterTest, AStreamFinishesInTheDirectoryItWasCheckedInEvenIfItsPathIsSwappedForALink) {
  ASSERT_EQ(mkdir(tmp_.Sub("outside").c_str(), 0755), 0);
  std::unique_ptr<ArtifactStream> st = StreamOf("job/sub/x.png", "pixels");
  // After the checks, someone moves the directory away and leaves a link to outside the root in its place.
  ASSERT_EQ(::rename(tmp_.Sub("root/job").c_str(), tmp_.Sub("root/moved").c_str()), 0);
  ASSERT_EQ(::mkdir(tmp_.Sub("outside/sub").c_str(), 0755), 0);
  ASSERT_EQ(symlink(tmp_.Sub("outside").c_str(), tmp_.Sub("root/job").c_str()), 0);
  ASSERT_TRUE(st->Append(" more").ok());
  ArtifactInfo info;
  ASSERT_TRUE(st->Commit(&info).ok());
  EXPECT_EQ(ReadAll(tmp_.Sub("root/moved/sub/x.png")), "pixels more");
  EXPECT_TRUE(List(tmp_.Sub("outside/sub")).empty());
  // The same for a copy that may be reused: it is looked for where the stream began, not through the link.
  std::unique_ptr<ArtifactStream> again;
  ASSERT_TRUE(w_->Begin("moved/sub/x.png", &again).ok());
  ASSERT_TRUE(again->Append("pixels more").ok());
  ASSERT_EQ(::rename(tmp_.Sub("root/moved").c_str(), tmp_.Sub("root/moved2").c_str()), 0);
  ASSERT_EQ(symlink(tmp_.Sub("outside").c_str(), tmp_.Sub("root/moved").c_str()), 0);
  ASSERT_TRUE(again->CommitOrReuse(&info).ok());
  EXPECT_EQ(info.path, "moved/sub/x.png");  // the existing copy, found by the handle
  EXPECT_EQ(List(tmp_.Sub("root/moved2/sub")), std::vector<std::string>{"x.png"});
  EXPECT_TRUE(List(tmp_.Sub("outside/sub")).empty());
}

size_t OpenDescriptors() { return List("/proc/self/fd").size(); }

// A result of thousands of files (frames of a video, say) waits finished until the result arrives: that must
// not cost a descriptor per file (1024 is a common limit).
TEST_F(ArtifactWriterTest, FinishedStreamsHoldNoOpenFile) {
  const size_t before = OpenDescriptors();
  std::vector<std::unique_ptr<ArtifactStream>> waiting;
  for (int i = 0; i < 3000; ++i) {
    waiting.push_back(StreamOf("job9/frame_" + std::to_string(i) + ".png", "frame " + std::to_string(i)));
    std::string sha;
    ASSERT_TRUE(waiting.back()->Finish(&sha).ok());
    ASSERT_EQ(sha, Sha256::Hex("frame " + std::to_string(i)));
  }
  EXPECT_LT(OpenDescriptors(), before + 8);  // the one directory's handle, shared
  for (int i = 0; i < 3000; ++i) {
    ArtifactInfo info;
    ASSERT_TRUE(waiting[i]->Commit(&info).ok());
    ASSERT_EQ(info.path, "job9/frame_" + std::to_string(i) + ".png");
  }
  EXPECT_EQ(List(tmp_.Sub("root/job9")).size(), 3000u);
  EXPECT_EQ(ReadAll(tmp_.Sub("root/job9/frame_2999.png")), "frame 2999");
  waiting.clear();
  EXPECT_LE(OpenDescriptors(), before + 1);
  // The shared directory removed while no stream used it: the next stream makes it again.
  ASSERT_TRUE(RemoveRecursively(Env::Default(), tmp_.Sub("root/job9")).ok());
  ArtifactInfo again;
  ASSERT_TRUE(w_->Write("job9/late.png", "late", &again).ok());
  EXPECT_EQ(ReadAll(tmp_.Sub("root/job9/late.png")), "late");
}

TEST_F(ArtifactWriterTest, AStreamBegunAfterItsSharedDirectoryWasRemovedMakesItAgain) {
  std::unique_ptr<ArtifactStream> holding = StreamOf("job3/a.png", "a");  // keeps job3's handle alive
  ASSERT_TRUE(RemoveRecursively(Env::Default(), tmp_.Sub("root/job3")).ok());
  ArtifactInfo info;
  ASSERT_TRUE(w_->Write("job3/b.png", "b", &info).ok());
  EXPECT_EQ(ReadAll(tmp_.Sub("root/job3/b.png")), "b");
}

TEST_F(ArtifactWriterTest, AStreamBegunAfterItsDirectoryWasMovedAwayGoesWhereThePathLeadsNow) {
  std::unique_ptr<ArtifactStream> holding = StreamOf("j/a.png", "a");  // holds j's handle
  ASSERT_EQ(::rename(tmp_.Sub("root/j").c_str(), tmp_.Sub("root/old_j").c_str()), 0);
  ASSERT_EQ(::mkdir(tmp_.Sub("root/j").c_str(), 0755), 0);
  ArtifactInfo info;
  ASSERT_TRUE(w_->Write("j/b.png", "b", &info).ok());
  EXPECT_EQ(ReadAll(info.full_path), "b");
  EXPECT_EQ(List(tmp_.Sub("root/j")), std::vector<std::string>{"b.png"});
  ASSERT_TRUE(holding->Commit(&info).ok());  // the stream begun before stays where it was checked
  EXPECT_EQ(ReadAll(tmp_.Sub("root/old_j/a.png")), "a");
}

TEST_F(ArtifactWriterTest, RemoveGoesByHandleAndNeverThroughALinkOutOfTheRoot) {
  ArtifactInfo info;
  ASSERT_TRUE(w_->Write("k/x.png", "x", &info).ok());
  ASSERT_TRUE(w_->Remove("k/x.png").ok());
  EXPECT_TRUE(List(tmp_.Sub("root/k")).empty());
  EXPECT_TRUE(w_->Remove("k/x.png").IsNotFound());
  EXPECT_TRUE(w_->Remove("nothere/x.png").IsNotFound());
  EXPECT_TRUE(w_->Remove("../x.png").IsInvalidArgument());
  // A directory swapped for a link out of the root: nothing outside is removed.
  ASSERT_TRUE(w_->Write("m/y.png", "y", &info).ok());
  ASSERT_EQ(::mkdir(tmp_.Sub("outside").c_str(), 0755), 0);
  std::ofstream(tmp_.Sub("outside/y.png")) << "not ours";
  ASSERT_TRUE(RemoveRecursively(Env::Default(), tmp_.Sub("root/m")).ok());
  ASSERT_EQ(symlink(tmp_.Sub("outside").c_str(), tmp_.Sub("root/m").c_str()), 0);
  EXPECT_TRUE(w_->Remove("m/y.png").IsInvalidArgument());
  EXPECT_EQ(ReadAll(tmp_.Sub("outside/y.png")), "not ours");
}

TEST(ArtifactWriterFaults, ACommitAfterAFailedFinishReportsTheSyncError) {
  MemEnv env;
  std::unique_ptr<ArtifactWriter> w;
  ASSERT_TRUE(ArtifactWriter::Open(&env, "/root", &w).ok());
  std::unique_ptr<ArtifactStream> st;
  ASSERT_TRUE(w->Begin("j/a.png", &st).ok());
  ASSERT_TRUE(st->Append("a").ok());
  env.SetFaultHook([](MemEnv::Op op, const std::string&) {
    return op == MemEnv::Op::kSync ? Status::IOError("sync failed: EIO") : Status::OK();
  });
  std::string sha;
  EXPECT_TRUE(st->Finish(&sha).IsIOError());
  env.SetFaultHook(nullptr);
  ArtifactInfo info;
  Status s = st->Commit(&info);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_NE(s.message().find("EIO"), std::string::npos) << s.ToString();
  std::vector<std::string> names;
  ASSERT_TRUE(env.GetChildren("/root/j", &names).ok());
  EXPECT_TRUE(names.empty());
}

TEST_F(ArtifactWriterTest, StaleTempFilesAreCleanedOnOpen) {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  std::string h = host;
  for (char& c : h) {
    if (c == '.' || c == '/') c = '_';
  }
  ASSERT_EQ(mkdir(tmp_.Sub("root/job").c_str(), 0755), 0);
  // A dead writer's temp (pid 0x7ffffff0 is never alive) and a live one's (ours).
  std::ofstream(tmp_.Sub("root/job/.cmq-tmp." + h + ".2147483632.0000000000000001.a.png")) << "junk";
  std::string live = ".cmq-tmp." + h + "." + std::to_string(getpid()) + ".0000000000000002.b.png";
  std::ofstream(tmp_.Sub("root/job/" + live)) << "in progress";
  // A dead writer's temp outside the root, behind a link in it: not the root's, never touched.
  ASSERT_EQ(mkdir(tmp_.Sub("outside").c_str(), 0755), 0);
  const std::string outside_temp = ".cmq-tmp." + h + ".2147483632.0000000000000003.c.png";
  std::ofstream(tmp_.Sub("outside/" + outside_temp)) << "not ours";
  ASSERT_EQ(symlink(tmp_.Sub("outside").c_str(), tmp_.Sub("root/out").c_str()), 0);
  std::unique_ptr<ArtifactWriter> w2;
  uint64_t removed = 0;
  ASSERT_TRUE(ArtifactWriter::Open(Env::Default(), tmp_.Sub("root"), &w2, &removed).ok());
  EXPECT_EQ(removed, 1u);
  EXPECT_EQ(List(tmp_.Sub("root/job")), std::vector<std::string>{live});
  EXPECT_EQ(List(tmp_.Sub("outside")), std::vector<std::string>{outside_temp});
}

TEST(ArtifactWriterFaults, FullDiskOrFailedSyncLeavesNoFile) {
  MemEnv env;
  std::unique_ptr<ArtifactWriter> w;
  ASSERT_TRUE(ArtifactWriter::Open(&env, "/root", &w).ok());
  env.SetCapacity(env.UsedBytes() + 50000);
  ArtifactInfo info;
  Status s = w->Write("big.bin", std::string(100000, 'x'), &info);
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  std::vector<std::string> names;
  ASSERT_TRUE(env.GetChildren("/root", &names).ok());
  EXPECT_TRUE(names.empty());
  env.SetCapacity(0);
  env.SetFaultHook([](MemEnv::Op op, const std::string&) {
    return op == MemEnv::Op::kSync ? Status::IOError("injected fsync failure") : Status::OK();
  });
  s = w->Write("synced.bin", "data", &info);
  EXPECT_TRUE(s.IsIOError());
  ASSERT_TRUE(env.GetChildren("/root", &names).ok());
  EXPECT_TRUE(names.empty());
  env.SetFaultHook(nullptr);
  ASSERT_TRUE(w->Write("ok.bin", "data", &info).ok());
}

}  // namespace
}  // namespace comfymq
