// Segments zeroed ahead (store/segment_prep.h), on the real file system: a new store's first segment is small
// and holds no unwritten extents; once the tail is a quarter full the background thread zero-fills the next
// (twice as large) as segment.prep, the roll adopts it, and records on both sides of the roll read back after
// a reopen; a leftover segment.prep is removed at open; a roll with none ready still works (fallocate); the
// zeros go in synced chunks only while the store's log is quiet, and a preparation stopped part way carries on.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <random>
#include <thread>

#include "comfymq/store.h"
#include "store/log_segment.h"
#include "store/segment_prep.h"
#include "test_util.h"

namespace comfymq {
namespace {

using ::comfymq::testing::TempDir;

uint64_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// Extents of `path` still marked unwritten (reserved by fallocate, never written); -1 when there is no such
// file, -2 when the file system cannot say (no FIEMAP, e.g. tmpfs).
int UnwrittenExtents(const std::string& path) {
  if (!Exists(path)) return -1;
  int count = 0;
  uint64_t first = 0;
  return ::comfymq::testing::UnwrittenExtents(path, &count, &first) ? count : -2;
}

bool WaitFor(const std::function<bool()>& done, int timeout_ms = 10000) {
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

// A prompt of about 30 KB that does not compress (random base64 text), so it takes its size in the log.
std::string BigPrompt(uint64_t seq) {
  static const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::mt19937_64 rng(seq);
  std::string text(30000, ' ');
  for (char& c : text) c = kB64[rng() % 64];
  return "{\"1\": {\"class_type\": \"CLIPTextEncode\", \"inputs\": {\"seq\": " + std::to_string(seq) +
         ", \"text\": \"" + text + "\"}}}";
}

uint64_t EnqueueOne(Store* store, uint64_t seq) {
  NewJob j;
  j.prompt = BigPrompt(seq);
  EnqueueResult r;
  Status s = store->Enqueue(j, &r);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return r.id;
}

// Job ids[i] holds BigPrompt(i).
void ExpectAllReadBack(Store* store, const std::vector<uint64_t>& ids) {
  for (size_t i = 0; i < ids.size(); ++i) {
    Job j;
    ASSERT_TRUE(store->Get(ids[i], true, &j).ok()) << i;
    EXPECT_EQ(j.prompt, BigPrompt(i));
  }
}

TEST(SegmentPrep, TheFirstSegmentIsSmallAndZeroedAndTheNextIsPreparedAheadAndAdopted) {
  TempDir dir;
  StoreOptions o;
  o.segment_bytes = 64ull << 20;
  std::unique_ptr<Store> store;
  ASSERT_TRUE(Store::Open(o, dir.path(), &store).ok());
  const std::string first = dir.Sub(log::SegmentFileName(1)), second = dir.Sub(log::SegmentFileName(2));
  const std::string prep = dir.Sub(log::kPreparedSegmentName);
  EXPECT_EQ(FileSize(first), log::kFirstSegmentBytes);
  EXPECT_LE(UnwrittenExtents(first), 0) << "the first segment should be written with zeros, not fallocated";
  EXPECT_FALSE(Exists(prep)) << "nothing is prepared before the tail is a quarter full";

  // Fill the first segment past a quarter (incompressible prompts keep the sizes honest): the next one,
  // twice as large, is zero-filled in the background.
  std::vector<uint64_t> ids;
  uint64_t seq = 0;
  while (ids.size() < 40) ids.push_back(EnqueueOne(store.get(), seq++));
  ASSERT_TRUE(WaitFor([&] { return Exists(prep) && FileSize(prep) == 2 * log::kFirstSegmentBytes; }));
  EXPECT_LE(UnwrittenExtents(prep), 0);
  // Fill on until the log rolls: the roll adopts the prepared file.
  while (!Exists(second)) ids.push_back(EnqueueOne(store.get(), seq++));
  EXPECT_FALSE(Exists(prep)) << "the roll should have taken segment.prep";
  EXPECT_EQ(FileSize(second), 2 * log::kFirstSegmentBytes);
  EXPECT_LE(UnwrittenExtents(second), 0);
  for (int i = 0; i < 10; ++i) ids.push_back(EnqueueOne(store.get(), seq++));

  // Everything reads back after a reopen, and a leftover segment.prep is gone.
  store.reset();
  std::ofstream(prep) << "leftover";
  ASSERT_TRUE(Store::Open(o, dir.path(), &store).ok());
  EXPECT_FALSE(Exists(prep));
  ExpectAllReadBack(store.get(), ids);
}

TEST(SegmentPrep, RollsWithoutAPreparedSegmentStillWork) {
  // No background thread: nothing is prepared, every roll reserves with fallocate; sizes still grow.
  TempDir dir;
  StoreOptions o;
  o.segment_bytes = 16ull << 20;
  o.background_thread = false;
  std::unique_ptr<Store> store;
  ASSERT_TRUE(Store::Open(o, dir.path(), &store).ok());
  std::vector<uint64_t> ids;
  uint64_t seq = 0;
  while (!Exists(dir.Sub(log::SegmentFileName(3)))) ids.push_back(EnqueueOne(store.get(), seq++));
  EXPECT_FALSE(Exists(dir.Sub(log::kPreparedSegmentName)));
  EXPECT_EQ(FileSize(dir.Sub(log::SegmentFileName(3))), 16ull << 20);  // 4, 8, then 16 MiB (the cap)
  // (And the check above can tell: a fallocated segment shows unwritten extents where FIEMAP works.)
  const int unwritten = UnwrittenExtents(dir.Sub(log::SegmentFileName(3)));
  EXPECT_TRUE(unwritten == -2 || unwritten > 0) << unwritten;
  store.reset();
  ASSERT_TRUE(Store::Open(o, dir.path(), &store).ok());
  ExpectAllReadBack(store.get(), ids);
}

TEST(SegmentPrep, ABusyLogGetsNoZerosBesideIt) {
  // A quiet time the test never leaves (an hour): the background thread zero-fills nothing while the log
  // takes commits, and the roll reserves the next segment with fallocate instead.
  TempDir dir;
  StoreOptions o;
  o.segment_bytes = 64ull << 20;
  o.prepare_when_quiet_ms = 3600 * 1000;
  std::unique_ptr<Store> store;
  ASSERT_TRUE(Store::Open(o, dir.path(), &store).ok());
  const std::string second = dir.Sub(log::SegmentFileName(2)), prep = dir.Sub(log::kPreparedSegmentName);
  std::vector<uint64_t> ids;
  uint64_t seq = 0;
  while (!Exists(second)) {
    ids.push_back(EnqueueOne(store.get(), seq++));
    ASSERT_EQ(FileSize(prep), 0u) << "zeros were written beside a busy log";
  }
  EXPECT_EQ(FileSize(second), 2 * log::kFirstSegmentBytes);
  const int unwritten = UnwrittenExtents(second);
  EXPECT_TRUE(unwritten == -2 || unwritten > 0) << unwritten;
  store.reset();
  EXPECT_FALSE(Exists(prep)) << "a wanted, unmade segment leaves nothing behind at close";
  ASSERT_TRUE(Store::Open(o, dir.path(), &store).ok());
  ExpectAllReadBack(store.get(), ids);
}

TEST(SegmentPrep, APreparationStoppedPartWayCarriesOnWhereItStopped) {
  TempDir dir;
  log::SegmentPreparer prep(Env::Default(), dir.path());
  const std::string path = dir.Sub(log::kPreparedSegmentName);
  prep.Request(4 << 20);
  int allowed = 2;  // two chunks, then "busy"
  ASSERT_TRUE(prep.Prepare(nullptr, [&] { return allowed-- > 0; }).ok());
  EXPECT_TRUE(prep.preparing());
  EXPECT_EQ(FileSize(path), 2u << 20) << "two synced 1 MiB chunks, no more";
  std::unique_ptr<WritableFile> f;
  uint64_t got = 0;
  ASSERT_TRUE(prep.Adopt(7, dir.Sub(log::SegmentFileName(7)), 4 << 20, &f, &got).ok());
  EXPECT_EQ(f, nullptr) << "a part-made segment is never adopted";
  ASSERT_TRUE(prep.Prepare(nullptr, [] { return false; }).ok());
  EXPECT_EQ(FileSize(path), 2u << 20);
  ASSERT_TRUE(prep.Prepare(nullptr).ok());  // quiet again: the rest
  EXPECT_FALSE(prep.preparing());
  EXPECT_EQ(FileSize(path), 4u << 20);
  EXPECT_LE(UnwrittenExtents(path), 0);
  ASSERT_TRUE(prep.Adopt(7, dir.Sub(log::SegmentFileName(7)), 4 << 20, &f, &got).ok());
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(got, 4u << 20);
  f->Close().IgnoreError();
  // Abandoning one part made (a store closing) removes its file and forgets the wish.
  prep.Request(4 << 20);
  allowed = 1;
  ASSERT_TRUE(prep.Prepare(nullptr, [&] { return allowed-- > 0; }).ok());
  EXPECT_TRUE(Exists(path));
  prep.Abandon();
  EXPECT_FALSE(Exists(path));
  EXPECT_FALSE(prep.preparing());
}

TEST(SegmentPrep, APartMadeSegmentGivesItsSpaceBackWhenUselessOrTheDiskIsFull) {
  TempDir dir;
  log::SegmentPreparer prep(Env::Default(), dir.path());
  const std::string path = dir.Sub(log::kPreparedSegmentName);
  auto part_make = [&](uint64_t capacity, int chunks) {
    prep.Request(capacity);
    int allowed = chunks;
    ASSERT_TRUE(prep.Prepare(nullptr, [&] { return allowed-- > 0; }).ok());
    ASSERT_EQ(FileSize(path), static_cast<uint64_t>(chunks) << 20);
  };
  // Big enough for the next roll: a roll's Discard leaves it to carry on.
  part_make(8 << 20, 3);
  prep.Discard(8 << 20);
  EXPECT_TRUE(prep.preparing());
  ASSERT_TRUE(prep.Prepare(nullptr).ok());
  EXPECT_EQ(FileSize(path), 8u << 20);
  prep.Abandon();
  // Too small for the next roll: dropped by the next Prepare call (the one that may be writing into it).
  part_make(4 << 20, 2);
  prep.Discard(8 << 20);
  EXPECT_TRUE(prep.preparing()) << "the drop is still to be done";
  ASSERT_TRUE(prep.Prepare(nullptr).ok());
  EXPECT_FALSE(Exists(path));
  EXPECT_FALSE(prep.preparing());
  // A full disk: Release gives the space back, part made or ready; nothing when there is none.
  part_make(8 << 20, 7);
  EXPECT_TRUE(prep.Release());
  ASSERT_TRUE(prep.Prepare(nullptr, [] { return false; }).ok());
  EXPECT_FALSE(Exists(path));
  prep.Request(1 << 20);
  ASSERT_TRUE(prep.Prepare(nullptr).ok());
  EXPECT_TRUE(Exists(path));
  EXPECT_TRUE(prep.Release());
  EXPECT_FALSE(Exists(path));
  EXPECT_FALSE(prep.Release());
  // A wish made after the drop was asked for starts afresh once the drop is done.
  part_make(4 << 20, 1);
  EXPECT_TRUE(prep.Release());
  prep.Request(2 << 20);
  ASSERT_TRUE(prep.Prepare(nullptr).ok());
  EXPECT_EQ(FileSize(path), 2u << 20);
  std::unique_ptr<WritableFile> f;
  uint64_t got = 0;
  ASSERT_TRUE(prep.Adopt(9, dir.Sub(log::SegmentFileName(9)), 2 << 20, &f, &got).ok());
  ASSERT_NE(f, nullptr);
  f->Close().IgnoreError();
}

TEST(SegmentPrep, APreparedSegmentTooSmallForTheRollIsDiscarded) {
  // Works on the preparer alone (a MemEnv would do too): a ready 1 MiB file is not adopted for a 2 MiB roll.
  TempDir dir;
  log::SegmentPreparer prep(Env::Default(), dir.path());
  prep.Request(1 << 20);
  ASSERT_TRUE(prep.wanted());
  ASSERT_TRUE(prep.Prepare(nullptr).ok());
  EXPECT_FALSE(prep.wanted());
  std::unique_ptr<WritableFile> f;
  uint64_t got = 0;
  ASSERT_TRUE(prep.Adopt(5, dir.Sub(log::SegmentFileName(5)), 2 << 20, &f, &got).ok());
  EXPECT_EQ(f, nullptr);
  prep.Discard(4 << 20);
  EXPECT_FALSE(Exists(dir.Sub(log::kPreparedSegmentName)));
  // A fitting one is adopted: named, with its header.
  prep.Request(2 << 20);
  ASSERT_TRUE(prep.Prepare(nullptr).ok());
  ASSERT_TRUE(prep.Adopt(5, dir.Sub(log::SegmentFileName(5)), 2 << 20, &f, &got).ok());
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(got, 2u << 20);
  f->Close().IgnoreError();
  std::ifstream in(dir.Sub(log::SegmentFileName(5)), std::ios::binary);
  std::string head(16, '\0');
  in.read(&head[0], 16);
  EXPECT_EQ(head, log::SegmentHeader(5));
  EXPECT_FALSE(Exists(dir.Sub(log::kPreparedSegmentName)));
  // A cancelled preparation leaves nothing.
  std::atomic<bool> cancel{true};
  prep.Request(4 << 20);
  EXPECT_FALSE(prep.Prepare(&cancel).ok());
  EXPECT_FALSE(Exists(dir.Sub(log::kPreparedSegmentName)));
}

}  // namespace
}  // namespace comfymq
