// RecordSink: collects the records of one commit group in memory and assigns each its final log location
// (segment, offset) as it is added, rolling to new segments when the current one is full. The leader then
// writes the parts (one per segment) and syncs. Supports savepoints so one failed operation in a group can
// be taken back. Not thread-safe: owned by the group leader; readers see it only under the state lock.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "store/log_segment.h"

namespace comfymq {

class RecordSink {
 public:
  struct Part {
    uint32_t segment = 0;
    uint64_t offset = 0;      // where bytes go in the segment
    uint64_t capacity = 0;    // preallocated size of the segment (new segments only)
    bool new_segment = false; // must be created before writing
    std::string bytes;
  };
  struct Mark {
    size_t parts = 0;
    size_t last_bytes = 0;
  };

  // The log's tail: the segment appends go to, where they resume, and its preallocated size.
  RecordSink(uint32_t tail_segment, uint64_t tail_offset, uint64_t tail_capacity, uint64_t segment_bytes)
      : tail_segment_(tail_segment), tail_offset_(tail_offset), tail_capacity_(tail_capacity),
        segment_bytes_(segment_bytes) {}

  log::RecordLoc Add(log::RecordType type, std::string_view payload);

  // The framed bytes of a record added here, if loc is one.
  bool Find(const log::RecordLoc& loc, std::string_view* framed) const;

  Mark mark() const;
  void Rollback(const Mark& m);

  bool empty() const;
  uint64_t bytes() const;
  const std::vector<Part>& parts() const { return parts_; }
  // Where the next group starts once this one is written.
  uint32_t end_segment() const;
  uint64_t end_offset() const;
  uint64_t end_capacity() const;

 private:
  uint32_t tail_segment_;
  uint64_t tail_offset_;
  uint64_t tail_capacity_;
  uint64_t segment_bytes_;
  std::vector<Part> parts_;
};

}  // namespace comfymq
