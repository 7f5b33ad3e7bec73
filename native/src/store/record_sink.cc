#include "store/record_sink.h"

#include <algorithm>

namespace comfymq {

RecordSink::RecordSink() : bytes_(log::kRecordHeaderSize, '\0') {}

log::RecordLoc RecordSink::Add(log::RecordType type, std::string_view payload) {
  const uint64_t at = bytes_.size();
  log::AppendRecord(type, payload, &bytes_);
  return log::RecordLoc{kProvisional, static_cast<uint32_t>(at), static_cast<uint32_t>(bytes_.size() - at)};
}

void RecordSink::Finalize(uint32_t tail_segment, uint64_t tail_offset, uint64_t tail_capacity, uint64_t segment_bytes) {
  const uint64_t n = bytes_.size();
  if (tail_offset + n <= tail_capacity) {
    placement_ = Placement{tail_segment, tail_offset, tail_capacity, false};
  } else {
    placement_ = Placement{tail_segment + 1, log::kSegmentHeaderSize,
                           std::max<uint64_t>(segment_bytes, log::kSegmentHeaderSize + n), true};
  }
  log::SealGroup(&bytes_);
  finalized_ = true;
}

log::RecordLoc RecordSink::Resolve(const log::RecordLoc& loc) const {
  if (!IsProvisional(loc)) return loc;
  return log::RecordLoc{placement_.segment, static_cast<uint32_t>(placement_.offset + loc.offset), loc.size};
}

bool RecordSink::Find(const log::RecordLoc& loc, std::string_view* framed) const {
  uint64_t rel;
  if (IsProvisional(loc)) {
    if (finalized_) return false;  // a provisional location belongs to the group still being built
    rel = loc.offset;
  } else if (finalized_ && loc.segment == placement_.segment && loc.offset >= placement_.offset) {
    rel = loc.offset - placement_.offset;
  } else {
    return false;
  }
  if (rel < log::kRecordHeaderSize || rel + loc.size > bytes_.size()) return false;
  *framed = std::string_view(bytes_).substr(static_cast<size_t>(rel), loc.size);
  return true;
}

}  // namespace comfymq
