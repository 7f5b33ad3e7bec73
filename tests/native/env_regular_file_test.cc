// Env::OpenRegularFile, on both Envs: only a regular file itself opens (a link is not followed, a FIFO is
// refused without blocking); what opens is read and synced through that one handle.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "comfymq/env.h"
#include "test_util.h"
#include "testing/mem_env.h"

namespace comfymq {
namespace {

using ::comfymq::testing::TempDir;

TEST(PosixRegularFile, OpensOnlyARegularFileItself) {
  TempDir tmp;
  Env* env = Env::Default();
  const std::string file = tmp.Sub("a.bin");
  { std::ofstream(file, std::ios::binary) << "abcdef"; }
  std::unique_ptr<RegularFile> f;
  ASSERT_TRUE(env->OpenRegularFile(file, &f).ok());
  uint64_t size = 0;
  ASSERT_TRUE(f->Size(&size).ok());
  EXPECT_EQ(size, 6u);
  std::string got;
  ASSERT_TRUE(f->Read(2, 3, &got).ok());
  EXPECT_EQ(got, "cde");
  EXPECT_TRUE(f->Sync().ok());

  // A link, even to that very file: refused, naming what it is.
  ASSERT_EQ(::symlink(file.c_str(), tmp.Sub("link.bin").c_str()), 0);
  Status s = env->OpenRegularFile(tmp.Sub("link.bin"), &f);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("symbolic link"), std::string::npos) << s.ToString();
  // A FIFO with no writer (a plain open to read would wait for one for good): refused at once.
  ASSERT_EQ(::mkfifo(tmp.Sub("fifo").c_str(), 0644), 0);
  s = env->OpenRegularFile(tmp.Sub("fifo"), &f);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("FIFO"), std::string::npos) << s.ToString();
  // A directory; a missing name.
  ASSERT_EQ(::mkdir(tmp.Sub("d").c_str(), 0755), 0);
  s = env->OpenRegularFile(tmp.Sub("d"), &f);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("directory"), std::string::npos) << s.ToString();
  EXPECT_TRUE(env->OpenRegularFile(tmp.Sub("missing"), &f).IsNotFound());
}

TEST(PosixRegularFile, ReadsTheFileItOpenedEvenAfterItsNameIsSwapped) {
  TempDir tmp;
  Env* env = Env::Default();
  { std::ofstream(tmp.Sub("x"), std::ios::binary) << "original"; }
  { std::ofstream(tmp.Sub("y"), std::ios::binary) << "impostor"; }
  std::unique_ptr<RegularFile> f;
  ASSERT_TRUE(env->OpenRegularFile(tmp.Sub("x"), &f).ok());
  ASSERT_EQ(::rename(tmp.Sub("y").c_str(), tmp.Sub("x").c_str()), 0);
  std::string got;
  ASSERT_TRUE(f->Read(0, 100, &got).ok());
  EXPECT_EQ(got, "original");
}

TEST(MemRegularFile, SyncMakesTheBytesDurable) {
  MemEnv env;
  ASSERT_TRUE(env.CreateDir("/d").ok());
  ASSERT_TRUE(env.SyncDir("/").ok());
  std::unique_ptr<WritableFile> w;
  ASSERT_TRUE(env.NewWritableFile("/d/f", Env::OpenMode::kCreateNew, &w).ok());
  ASSERT_TRUE(w->Append("kept").ok());
  ASSERT_TRUE(env.SyncDir("/d").ok());
  std::mt19937_64 rng(1);
  int lost_before = 0;  // not yet synced: some power cuts lose the bytes
  for (int i = 0; i < 20; ++i) {
    std::string got;
    std::unique_ptr<MemEnv> before = env.CrashImage(rng, MemEnv::CrashMode::kRandomSectors);
    lost_before += !before->ReadFileToString("/d/f", &got).ok() || got != "kept";
  }
  EXPECT_GT(lost_before, 0);
  std::unique_ptr<RegularFile> f;
  ASSERT_TRUE(env.OpenRegularFile("/d/f", &f).ok());
  const uint64_t syncs = env.sync_count();
  ASSERT_TRUE(f->Sync().ok());
  EXPECT_EQ(env.sync_count(), syncs + 1);
  for (int i = 0; i < 20; ++i) {  // every crash image keeps the bytes, however the unsynced ones tear
    std::unique_ptr<MemEnv> after = env.CrashImage(rng, MemEnv::CrashMode::kRandomSectors);
    std::string got;
    ASSERT_TRUE(after->ReadFileToString("/d/f", &got).ok());
    EXPECT_EQ(got, "kept");
  }
  EXPECT_TRUE(env.OpenRegularFile("/d", &f).IsInvalidArgument());
  EXPECT_TRUE(env.OpenRegularFile("/d/none", &f).IsNotFound());
  env.SetFaultHook([](MemEnv::Op op, const std::string&) {
    return op == MemEnv::Op::kSync ? Status::IOError("sync denied") : Status::OK();
  });
  ASSERT_TRUE(env.OpenRegularFile("/d/f", &f).ok());
  EXPECT_FALSE(f->Sync().ok());
}

}  // namespace
}  // namespace comfymq
