// The log's record format: framing round trips, and every reader error path, found by editing bytes:
// a torn tail is the end of the log, a damaged group in the middle is reported and skipped, and a group
// applies all or nothing. Build() puts each payload in a group of its own; offs[i] is where group i starts
// and its record sits kRecordHeaderSize later.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "store/log_segment.h"
#include "testing/mem_env.h"
#include "util/coding.h"

namespace comfymq::log {
namespace {

struct Seen {
  RecordType type;
  std::string payload;
  RecordLoc loc;
};

class LogSegmentTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(env_.CreateDir("/db").ok()); }

  // Builds segment 7 holding `payloads` (type kJob) and returns each record's offset.
  std::vector<uint64_t> Build(const std::vector<std::string>& payloads, uint64_t capacity = 4096) {
    std::unique_ptr<WritableFile> f;
    EXPECT_TRUE(CreateSegment(&env_, path_, 7, capacity, &f).ok());
    std::string bytes;
    std::vector<uint64_t> offsets;
    for (const auto& p : payloads) {
      offsets.push_back(kSegmentHeaderSize + bytes.size());
      AppendGroup({{RecordType::kJob, p}}, &bytes);
    }
    EXPECT_TRUE(f->WriteAt(kSegmentHeaderSize, bytes).ok());
    EXPECT_TRUE(f->Sync().ok());
    return offsets;
  }

  void Edit(uint64_t offset, const std::string& bytes) {
    std::unique_ptr<WritableFile> f;
    ASSERT_TRUE(env_.NewWritableFile(path_, Env::OpenMode::kOpenExisting, &f).ok());
    ASSERT_TRUE(f->WriteAt(offset, bytes).ok());
  }

  void Truncate(uint64_t size) {
    std::unique_ptr<WritableFile> f;
    ASSERT_TRUE(env_.NewWritableFile(path_, Env::OpenMode::kOpenExisting, &f).ok());
    ASSERT_TRUE(f->Truncate(size).ok());
  }

  std::vector<Seen> Scan(SegmentScan* scan, uint32_t expect = 7) {
    std::unique_ptr<RandomAccessFile> f;
    EXPECT_TRUE(env_.NewRandomAccessFile(path_, &f).ok());
    std::vector<Seen> seen;
    Status s = ScanSegment(
        *f, expect,
        [&](RecordType t, std::string_view p, const RecordLoc& l) {
          seen.push_back(Seen{t, std::string(p), l});
          return Status::OK();
        },
        scan);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return seen;
  }

  MemEnv env_;
  const std::string path_ = "/db/" + SegmentFileName(7);
};

TEST_F(LogSegmentTest, FileNamesRoundTrip) {
  uint32_t v = 0;
  EXPECT_TRUE(ParseSegmentFileName(SegmentFileName(123456789), &v));
  EXPECT_EQ(v, 123456789u);
  EXPECT_EQ(SegmentFileName(42), "log-00000042.cmq");
  EXPECT_TRUE(ParseSegmentFileName("log-00000042.cmq", &v));
  EXPECT_EQ(v, 42u);
  EXPECT_FALSE(ParseSegmentFileName("log-42.cmq", &v));
  EXPECT_FALSE(ParseSegmentFileName("log-00000042.cmq.tmp", &v));
  EXPECT_FALSE(ParseSegmentFileName("checkpoint-00000042.cmq", &v));
}

TEST_F(LogSegmentTest, RecordsRoundTripAndZeroFillIsACleanEnd) {
  auto offs = Build({"alpha", std::string(3000, 'b'), "", "gamma"}, 8192);
  SegmentScan scan;
  auto seen = Scan(&scan);
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[0].payload, "alpha");
  EXPECT_EQ(seen[1].payload, std::string(3000, 'b'));
  EXPECT_EQ(seen[2].payload, "");
  EXPECT_EQ(seen[3].payload, "gamma");
  EXPECT_EQ(seen[3].loc.offset, offs[3] + kRecordHeaderSize);
  EXPECT_EQ(seen[3].loc.segment, 7u);
  EXPECT_TRUE(scan.header_ok);
  EXPECT_TRUE(scan.bad_regions.empty());
  EXPECT_EQ(scan.tail_garbage_end, scan.tail_garbage_begin);
  EXPECT_EQ(scan.valid_end, seen[3].loc.offset + seen[3].loc.size);
  EXPECT_EQ(scan.file_size, 8192u);

  // ReadRecord returns the same payload and verifies it.
  std::unique_ptr<RandomAccessFile> f;
  ASSERT_TRUE(env_.NewRandomAccessFile(path_, &f).ok());
  RecordType t;
  std::string payload;
  ASSERT_TRUE(ReadRecord(*f, seen[1].loc, &t, &payload).ok());
  EXPECT_EQ(payload, std::string(3000, 'b'));
}

TEST_F(LogSegmentTest, TornTailIsEndOfLogAndReported) {
  auto offs = Build({"one", "two", std::string(500, 'x')});
  // The last record lost its second half (a torn write): its payload is partly zeros.
  Edit(offs[2] + kRecordHeaderSize + 200, std::string(313, '\0'));
  SegmentScan scan;
  auto seen = Scan(&scan);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(scan.valid_end, offs[2]);
  EXPECT_TRUE(scan.bad_regions.empty());
  EXPECT_EQ(scan.tail_garbage_begin, offs[2]);
  EXPECT_EQ(scan.tail_garbage_end, offs[2] + kRecordHeaderSize + 200);
}

TEST_F(LogSegmentTest, TruncatedFileMidRecordIsEndOfLog) {
  auto offs = Build({"one", "two", std::string(500, 'x')});
  Truncate(offs[2] + 100);  // the file itself ends inside the last record
  SegmentScan scan;
  auto seen = Scan(&scan);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(scan.valid_end, offs[2]);
  EXPECT_EQ(scan.tail_garbage_begin, offs[2]);
}

TEST_F(LogSegmentTest, HeaderOnlyTailIsEndOfLog) {
  auto offs = Build({"one", "two"});
  Truncate(offs[1] + 6);  // only part of the second record's header made it
  SegmentScan scan;
  auto seen = Scan(&scan);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(scan.valid_end, offs[1]);
}

TEST_F(LogSegmentTest, BadChecksumInTheMiddleIsSkippedAndReported) {
  auto offs = Build({"one", "two-damaged", "three", "four"});
  Edit(offs[1] + kRecordHeaderSize + 2, "X");  // flip a payload byte
  SegmentScan scan;
  auto seen = Scan(&scan);
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].payload, "one");
  EXPECT_EQ(seen[1].payload, "three");
  EXPECT_EQ(seen[2].payload, "four");
  ASSERT_EQ(scan.bad_regions.size(), 1u);
  EXPECT_EQ(scan.bad_regions[0].first, offs[1]);
  EXPECT_EQ(scan.bad_regions[0].second, offs[2]);
}

TEST_F(LogSegmentTest, DamagedLengthFieldInTheMiddleIsSkipped) {
  auto offs = Build({"one", "two", "three"});
  std::string huge;
  PutU32(&huge, 0x7fffffff);
  Edit(offs[1] + 8, huge);
  SegmentScan scan;
  auto seen = Scan(&scan);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].payload, "three");
  ASSERT_EQ(scan.bad_regions.size(), 1u);
}

TEST_F(LogSegmentTest, DamagedMagicAndUnknownTypeAreSkipped) {
  auto offs = Build({"one", "two", "three", "four"});
  Edit(offs[1], "XXXX");       // magic
  Edit(offs[2] + 12, "\x63");  // type byte: unknown type
  SegmentScan scan;
  auto seen = Scan(&scan);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].payload, "four");
  ASSERT_EQ(scan.bad_regions.size(), 1u);
  EXPECT_EQ(scan.bad_regions[0].first, offs[1]);
  EXPECT_EQ(scan.bad_regions[0].second, offs[3]);
}

TEST_F(LogSegmentTest, MagicBytesInsideAPayloadDoNotFoolResync) {
  std::string tricky = "xx";
  PutU32(&tricky, kRecordMagic);  // looks like a record start, but its checksum cannot match
  tricky += std::string(40, 'q');
  auto offs = Build({"one", tricky, "three"});
  Edit(offs[1] + 4, std::string(4, '\0'));  // damage the checksum of the tricky record
  SegmentScan scan;
  auto seen = Scan(&scan);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].payload, "three");
}

TEST_F(LogSegmentTest, GarbageAfterTheLastRecordIsATornTail) {
  auto offs = Build({"one", "two"});
  uint64_t end = offs[1] + 2 * kRecordHeaderSize + 3;
  Edit(end + 10, "garbage that is no record");
  SegmentScan scan;
  auto seen = Scan(&scan);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(scan.valid_end, end);
  EXPECT_EQ(scan.tail_garbage_begin, end);
  EXPECT_EQ(scan.tail_garbage_end, end + 10 + 25);
  EXPECT_TRUE(scan.bad_regions.empty());
}

TEST_F(LogSegmentTest, WrongSegmentNumberOrMagicMeansNoHeader) {
  Build({"one"});
  SegmentScan scan;
  EXPECT_TRUE(Scan(&scan, 8).empty());
  EXPECT_FALSE(scan.header_ok);
  Edit(0, "NOTALOG!");
  EXPECT_TRUE(Scan(&scan, 7).empty());
  EXPECT_FALSE(scan.header_ok);
}

TEST_F(LogSegmentTest, ReadRecordRejectsDamageAndWrongLocations) {
  auto offs = Build({"one", "two"});
  std::unique_ptr<RandomAccessFile> f;
  ASSERT_TRUE(env_.NewRandomAccessFile(path_, &f).ok());
  RecordType t;
  std::string p;
  RecordLoc good{7, static_cast<uint32_t>(offs[1] + kRecordHeaderSize), static_cast<uint32_t>(kRecordHeaderSize + 3)};
  ASSERT_TRUE(ReadRecord(*f, good, &t, &p).ok());
  RecordLoc shifted = good;
  shifted.offset += 1;
  EXPECT_TRUE(ReadRecord(*f, shifted, &t, &p).IsCorruption());
  RecordLoc longer = good;
  longer.size += 1;
  EXPECT_TRUE(ReadRecord(*f, longer, &t, &p).IsCorruption());
  Edit(offs[1] + 2 * kRecordHeaderSize, "T");
  EXPECT_TRUE(ReadRecord(*f, good, &t, &p).IsCorruption());
}

TEST_F(LogSegmentTest, AGroupAppliesAllOrNothing) {
  std::unique_ptr<WritableFile> f;
  ASSERT_TRUE(CreateSegment(&env_, path_, 7, 8192, &f).ok());
  std::string bytes;
  AppendGroup({{RecordType::kJob, "g1-a"}}, &bytes);
  const uint64_t g2 = kSegmentHeaderSize + bytes.size();
  AppendGroup({{RecordType::kJob, "g2-a"}, {RecordType::kStatus, "g2-b"}, {RecordType::kErase, "g2-c"}}, &bytes);
  AppendGroup({{RecordType::kJob, "g3-a"}}, &bytes);
  ASSERT_TRUE(f->WriteAt(kSegmentHeaderSize, bytes).ok());
  // Damage the second record of group 2: its own checksum fails, and so does the group's.
  Edit(g2 + kRecordHeaderSize + (kRecordHeaderSize + 4) + kRecordHeaderSize + 1, "X");
  SegmentScan scan;
  auto seen = Scan(&scan);
  ASSERT_EQ(seen.size(), 2u) << "no record of a damaged group may be applied";
  EXPECT_EQ(seen[0].payload, "g1-a");
  EXPECT_EQ(seen[1].payload, "g3-a");
  ASSERT_EQ(scan.bad_regions.size(), 1u);
  EXPECT_EQ(scan.bad_regions[0].first, g2);
}

TEST_F(LogSegmentTest, ATornLastGroupIsCutWholeEvenIfItsLaterSectorsSurvived) {
  std::unique_ptr<WritableFile> f;
  ASSERT_TRUE(CreateSegment(&env_, path_, 7, 16384, &f).ok());
  std::string bytes;
  AppendGroup({{RecordType::kJob, "first"}}, &bytes);
  const uint64_t last = kSegmentHeaderSize + bytes.size();
  AppendGroup({{RecordType::kJob, std::string(1500, 'a')},
               {RecordType::kStatus, std::string(1500, 'b')},
               {RecordType::kJob, std::string(1500, 'c')}},
              &bytes);
  ASSERT_TRUE(f->WriteAt(kSegmentHeaderSize, bytes).ok());
  // A power cut kept the sectors of this group out of order: the middle one never reached the disk.
  Edit(last + 1600, std::string(512, '\0'));
  SegmentScan scan;
  auto seen = Scan(&scan);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(scan.valid_end, last);
  EXPECT_EQ(scan.last_group_offset, kSegmentHeaderSize);
  EXPECT_TRUE(scan.bad_regions.empty());
  EXPECT_EQ(scan.tail_garbage_begin, last);
  EXPECT_EQ(scan.tail_garbage_end, kSegmentHeaderSize + bytes.size());
}

TEST_F(LogSegmentTest, CreateSegmentOnFullDiskLeavesNothing) {
  env_.SetCapacity(env_.UsedBytes() + 1000);
  std::unique_ptr<WritableFile> f;
  Status s = CreateSegment(&env_, path_, 7, 1 << 20, &f);
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  FileInfo fi;
  ASSERT_TRUE(env_.GetFileInfo(path_, &fi).ok());
  EXPECT_FALSE(fi.exists);
}

}  // namespace
}  // namespace comfymq::log
