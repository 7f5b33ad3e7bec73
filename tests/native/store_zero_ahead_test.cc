// Zeros ahead of the records (StoreImpl::ZeroAheadLocked). On the real file system: while groups are small
// (a lone caller), the blocks just past the log are kept written, so after the first group of a fallocated
// segment the records land on written blocks, not on space only reserved (whose sync also commits the
// blocks' conversion in the journal); the zeros go only a chunk ahead, not over the whole segment; big groups
// (many callers) get none; what was written reads back after a reopen. On MemEnv: a write of zeros that fails
// is not the group's failure (the store stays usable).
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "comfymq/env.h"
#include "comfymq/store.h"
#include "store/log_segment.h"
#include "test_util.h"
#include "testing/mem_env.h"

namespace comfymq {
namespace {

using ::comfymq::testing::PromptFor;
using ::comfymq::testing::SmallOptions;
using ::comfymq::testing::TempDir;
using ::comfymq::testing::UnwrittenExtents;

constexpr uint64_t kLow = 48u << 10;     // StoreImpl::kZeroAheadLow
constexpr uint64_t kChunk = 128u << 10;  // StoreImpl::kZeroAheadChunk
constexpr uint64_t kBlock = 4096;

// Where the records of segment `segment` at `path` end, as recovery finds it (just past the last good group).
uint64_t RecordsEnd(const std::string& path, uint32_t segment) {
  std::unique_ptr<RandomAccessFile> f;
  log::SegmentScan scan;
  if (!Env::Default()->NewRandomAccessFile(path, &f).ok()) return 0;
  const log::RecordVisitor ignore = [](log::RecordType, std::string_view, const log::RecordLoc&) {
    return Status::OK();
  };
  if (!log::ScanSegment(*f, segment, ignore, &scan).ok()) return 0;
  return scan.valid_end;
}

// The jobs a test made: ids[i] holds prompts[i].
struct Made {
  std::vector<uint64_t> ids;
  std::vector<std::string> prompts;
};

Status EnqueueAll(Store* store, std::vector<std::string> prompts, Made* made) {
  std::vector<NewJob> jobs(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) jobs[i].prompt = prompts[i];
  std::vector<EnqueueResult> results;
  Status s = jobs.size() == 1 ? store->Enqueue(jobs[0], &results.emplace_back()) : store->EnqueueMany(jobs, &results);
  if (!s.ok()) return s;
  for (size_t i = 0; i < results.size(); ++i) {
    made->ids.push_back(results[i].id);
    made->prompts.push_back(std::move(prompts[i]));
  }
  return Status::OK();
}

// A store on disk with no background thread (nothing prepared ahead: a roll reserves with fallocate), rolled
// once so that its tail is a fallocated segment; returns the tail's path, or "" when FIEMAP cannot tell.
std::string OpenOnReservedTail(const TempDir& dir, std::unique_ptr<Store>* store, Made* made) {
  StoreOptions o;
  o.background_thread = false;
  if (!Store::Open(o, dir.path(), store).ok()) return "";
  if (!EnqueueAll(store->get(), {PromptFor(0)}, made).ok()) return "";
  if (!(*store)->Checkpoint().ok()) return "";  // rolls: segment 2, fallocated
  const std::string tail = dir.Sub(log::SegmentFileName(2));
  int count = 0;
  uint64_t first = 0;
  if (!UnwrittenExtents(tail, &count, &first) || count == 0) return "";
  return tail;
}

void ExpectReadBack(const TempDir& dir, const Made& made) {
  StoreOptions o;
  o.background_thread = false;
  std::unique_ptr<Store> store;
  ASSERT_TRUE(Store::Open(o, dir.path(), &store).ok());
  for (size_t i = 0; i < made.ids.size(); ++i) {
    Job job;
    ASSERT_TRUE(store->Get(made.ids[i], true, &job).ok()) << i;
    EXPECT_EQ(job.prompt, made.prompts[i]) << i;
  }
}

// A prompt of about `size` bytes that does not compress (random letters), so it takes its size in the log.
std::string Incompressible(std::mt19937_64& rng, size_t size) {
  std::string text(size, ' ');
  for (char& c : text) c = static_cast<char>('a' + rng() % 26);
  return "{\"1\": {\"class_type\": \"Note\", \"inputs\": {\"text\": \"" + text + "\"}}}";
}

TEST(ZeroAhead, ALoneCallersRecordsLandOnWrittenBlocks) {
  TempDir dir;
  std::unique_ptr<Store> store;
  Made made;
  const std::string tail = OpenOnReservedTail(dir, &store, &made);
  if (tail.empty()) GTEST_SKIP() << "the file system cannot report unwritten extents (FIEMAP)";
  // ~3 KB records one at a time: 250 of them cross the zeroed chunk a few times (checked every 5th job)
  std::mt19937_64 rng(3);
  for (int i = 0; i < 250; ++i) {
    ASSERT_TRUE(EnqueueAll(store.get(), {Incompressible(rng, 3000)}, &made).ok());
    if (i % 5 != 4) continue;
    const uint64_t end = RecordsEnd(tail, 2);
    int count = 0;
    uint64_t first = 0;
    ASSERT_TRUE(UnwrittenExtents(tail, &count, &first));
    ASSERT_GE(first, end + kLow) << "job " << i << ": reserved blocks within " << kLow << " bytes of the records";
    ASSERT_LE(first, end + kChunk + kBlock) << "job " << i << ": zeros went further than a chunk ahead";
  }
  store.reset();
  ExpectReadBack(dir, made);
}

TEST(ZeroAhead, BigGroupsGetNoZerosAhead) {
  TempDir dir;
  std::unique_ptr<Store> store;
  Made made;
  const std::string tail = OpenOnReservedTail(dir, &store, &made);
  if (tail.empty()) GTEST_SKIP() << "the file system cannot report unwritten extents (FIEMAP)";
  // Groups of 8 jobs of ~30 KB that do not compress: ~240 KB per commit; after 12 the average group is big.
  std::mt19937_64 rng(7);
  for (int i = 0; i < 12; ++i) {
    std::vector<std::string> group;
    for (int k = 0; k < 8; ++k) group.push_back(Incompressible(rng, 30000));
    ASSERT_TRUE(EnqueueAll(store.get(), std::move(group), &made).ok());
  }
  const uint64_t end = RecordsEnd(tail, 2);
  int count = 0;
  uint64_t first = 0;
  ASSERT_TRUE(UnwrittenExtents(tail, &count, &first));
  // The first groups (while the average was still small) may have put zeros ahead; the last ones put none:
  // the records have run past them onto reserved blocks.
  EXPECT_LE(first, (end + kBlock - 1) / kBlock * kBlock) << "zeros ahead of big groups";
  store.reset();
  ExpectReadBack(dir, made);
}

TEST(ZeroAhead, AFailedWriteOfZerosIsNotTheGroupsFailure) {
  MemEnv env;
  std::unique_ptr<Store> store;
  ASSERT_TRUE(Store::Open(SmallOptions(&env), "/db", &store).ok());
  Made made;
  ASSERT_TRUE(EnqueueAll(store.get(), {PromptFor(0)}, &made).ok());
  ASSERT_TRUE(store->Checkpoint().ok());  // rolls onto a fallocated segment: the next small group writes zeros
  int log_writes = 0;
  env.SetFaultHook([&](MemEnv::Op op, const std::string& path) {
    if (op != MemEnv::Op::kWrite || path.find("/log-") == std::string::npos) return Status::OK();
    return ++log_writes == 2 ? Status::IOError("injected EIO on the zeros") : Status::OK();
  });
  ASSERT_TRUE(EnqueueAll(store.get(), {PromptFor(1)}, &made).ok());
  EXPECT_EQ(log_writes, 2) << "the group's records, then its zeros ahead";
  EXPECT_TRUE(store->health().ok()) << store->health().ToString();
  ASSERT_TRUE(EnqueueAll(store.get(), {PromptFor(2)}, &made).ok());
  EXPECT_EQ(log_writes, 3) << "no more zeros for this segment";
  env.SetFaultHook(nullptr);
  store.reset();
  ASSERT_TRUE(Store::Open(SmallOptions(&env), "/db", &store).ok());
  for (size_t i = 0; i < made.ids.size(); ++i) {
    Job job;
    ASSERT_TRUE(store->Get(made.ids[i], true, &job).ok()) << i;
    EXPECT_EQ(job.prompt, made.prompts[i]);
  }
}

}  // namespace
}  // namespace comfymq
