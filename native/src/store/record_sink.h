// RecordSink: one commit group being built. Records are appended to a single buffer that starts with room
// for the group header; while the group's operations run, records get provisional locations (segment
// kProvisional, offset within the group). Finalize() then places the whole group: at the end of the tail
// segment if it fits, else at the start of a new segment (a group never spans segments), seals the group
// header (one checksum over everything), and Resolve() turns provisional locations into real ones.
// Not thread-safe: owned by the group leader; readers see it only under the state lock.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "store/log_segment.h"

namespace comfymq {

class RecordSink {
 public:
  static constexpr uint32_t kProvisional = 0xFFFFFFFFu;

  struct Placement {
    uint32_t segment = 0;
    uint64_t offset = 0;       // where the group starts in the segment
    uint64_t capacity = 0;     // preallocated size of a new segment
    bool new_segment = false;  // must be created before writing
  };

  RecordSink();

  // Adds a record to the group; its location is provisional until Finalize.
  log::RecordLoc Add(log::RecordType type, std::string_view payload);

  // Room for about `bytes` more of records (a group's size hints), so adding them copies each once.
  void Reserve(size_t bytes) { bytes_.reserve(bytes_.size() + bytes); }
  size_t mark() const { return bytes_.size(); }
  void Rollback(size_t mark) { bytes_.resize(mark); }
  bool empty() const { return bytes_.size() == log::kRecordHeaderSize; }
  uint64_t size() const { return bytes_.size(); }

  // Places the group after the tail (tail segment, where appends resume, its preallocated size) and seals it.
  void Finalize(uint32_t tail_segment, uint64_t tail_offset, uint64_t tail_capacity, uint64_t segment_bytes);
  bool finalized() const { return finalized_; }
  const Placement& placement() const { return placement_; }
  const std::string& bytes() const { return bytes_; }  // the framed group, once finalized

  static bool IsProvisional(const log::RecordLoc& loc) { return loc.valid() && loc.segment == kProvisional; }
  log::RecordLoc Resolve(const log::RecordLoc& loc) const;

  // The framed bytes of a record of this group, by provisional location (until finalized: a later group's
  // provisional locations never match an earlier one's) or, once finalized, by real location.
  bool Find(const log::RecordLoc& loc, std::string_view* framed) const;

 private:
  std::string bytes_;
  bool finalized_ = false;
  Placement placement_;
};

}  // namespace comfymq
