// Log segments: creating a preallocated segment, framing records and commit groups, reading one record
// back, and scanning a whole segment during recovery. The format is in log_format.h.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "comfymq/env.h"
#include "store/log_format.h"

namespace comfymq::log {

// Where a record lives: segment number, byte offset of its header, total size (header + payload).
struct RecordLoc {
  uint32_t segment = 0;
  uint32_t offset = 0;
  uint32_t size = 0;
  bool valid() const { return size != 0; }
  bool operator==(const RecordLoc& o) const { return segment == o.segment && offset == o.offset && size == o.size; }
};

std::string SegmentFileName(uint32_t segment);  // "log-00000001.cmq"
bool ParseSegmentFileName(const std::string& name, uint32_t* segment);

// Appends one framed record (header + payload) to *out.
void AppendRecord(RecordType type, std::string_view payload, std::string* out);
// Fills in the group header at the start of `group` (kRecordHeaderSize bytes reserved there, followed by the
// group's framed records).
void SealGroup(std::string* group);
// Appends a whole group holding `records` to *out (for tests and tools; the store frames groups in place).
void AppendGroup(const std::vector<std::pair<RecordType, std::string>>& records, std::string* out);

// The 16-byte header that starts segment `segment`.
std::string SegmentHeader(uint32_t segment);

// How a new segment's space is reserved: fallocate (quick, but each first write into a block costs the next
// sync a metadata update on ext4/XFS) or zeros written through it (slower to make, cheaper syncs after).
enum class Reserve { kAllocate, kZeroFill };

// Creates segment `segment` at `path`: header, space reserved for `capacity` bytes, synced, directory synced.
// On failure nothing is left behind (the file is removed). NoSpace when the disk is full.
Status CreateSegment(Env* env, const std::string& path, uint32_t segment, uint64_t capacity,
                     std::unique_ptr<WritableFile>* out, Reserve reserve = Reserve::kAllocate);

// Writes zeros over [0, capacity) of `file`, 1 MiB at a time (not synced: the caller syncs).
Status ZeroFill(WritableFile* file, uint64_t capacity);

// Reads and verifies the record at `loc` (a record inside a group); *payload receives its payload.
Status ReadRecord(const RandomAccessFile& file, const RecordLoc& loc, RecordType* type, std::string* payload);
// Verifies a framed record held in memory (header + payload) and returns its payload.
Status ParseFramedRecord(std::string_view framed, RecordType* type, std::string_view* payload);

// What a scan of one segment found.
struct SegmentScan {
  uint64_t file_size = 0;
  uint64_t valid_end = 0;          // just past the last good group: where appends resume
  uint64_t last_group_offset = 0;  // start of the last good group (0 = none)
  uint64_t groups = 0;
  uint64_t records = 0;
  bool header_ok = false;
  // Regions skipped because they did not hold a valid group but a valid group followed: [begin, end).
  std::vector<std::pair<uint64_t, uint64_t>> bad_regions;
  // Non-zero bytes after the last good group with no valid group after them: [begin, end).
  uint64_t tail_garbage_begin = 0;
  uint64_t tail_garbage_end = 0;
};

using RecordVisitor = std::function<Status(RecordType type, std::string_view payload, const RecordLoc& loc)>;

// Scans a segment from its header to its end, calling `visit` for every record of every intact group, in
// order. A group that fails its checksum is skipped whole. A bad header makes the scan stop with
// header_ok = false (OK status). Read errors and errors returned by `visit` are returned.
Status ScanSegment(const RandomAccessFile& file, uint32_t expected_segment, const RecordVisitor& visit,
                   SegmentScan* scan);

}  // namespace comfymq::log
