// The log's on-disk format (see docs/store-format.md for the grammar).
//
//   segment  := segment_header group* zero_fill
//   segment_header := "CMQLOG01" u64:segment_number                       (16 bytes)
//   group    := record with type kGroup whose payload is record*          (one commit group)
//   record   := u32:kRecordMagic u32:checksum u32:length u8:type payload[length]
//   checksum := low 32 bits of XXH3-64 over (length, type, payload)
//
// A commit group is all-or-nothing: its outer checksum covers every record in it, and recovery applies a
// group only when the whole group is intact. Inner records keep their own framing so one can be read back
// alone by its location. A group never spans segments.
// Segments are preallocated (zero-filled) to their capacity, so appends never grow the file and a full disk
// shows up when a segment is created, before anything is written. All integers are little-endian.
#pragma once

#include <cstddef>
#include <cstdint>

namespace comfymq::log {

constexpr char kSegmentMagic[8] = {'C', 'M', 'Q', 'L', 'O', 'G', '0', '1'};
constexpr size_t kSegmentHeaderSize = 16;
constexpr uint32_t kRecordMagic = 0x52514D43;       // "CMQR" little-endian
constexpr size_t kRecordHeaderSize = 13;            // magic, checksum, length, type
constexpr size_t kChecksumCoverageOffset = 8;       // checksum covers bytes from `length` on
constexpr uint32_t kMaxRecordPayload = 512u << 20;  // one job, status, ...
constexpr uint64_t kMaxGroupBytes = 1536ull << 20;  // one commit group; keeps offsets far inside 32 bits
constexpr uint64_t kMaxSegmentBytes = 1ull << 30;   // the largest configurable segment

enum class RecordType : uint8_t {
  kJob = 1,     // a job as enqueued (also written again, unchanged, when compaction moves it)
  kStatus = 2,  // the whole mutable status of a job; the latest one wins
  kErase = 3,   // ids of jobs removed (purge / delete)
  kMeta = 4,    // store-wide settings (paused)
  kGroup = 5,   // a commit group: the only type at the top level of a segment
  kTokens = 6,  // fencing tokens below a value may have been handed out (store_impl.h: token_reserve_)
  kDoc = 7,     // a document set or removed (doc_table.h); the latest one for a key wins
};

// Types that appear inside a group.
inline bool IsKnownRecordType(uint8_t t) { return (t >= 1 && t <= 4) || t == 6 || t == 7; }

}  // namespace comfymq::log
