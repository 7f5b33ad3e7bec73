#include "store/record_sink.h"

#include <algorithm>

namespace comfymq {

uint32_t RecordSink::end_segment() const { return parts_.empty() ? tail_segment_ : parts_.back().segment; }

uint64_t RecordSink::end_offset() const {
  return parts_.empty() ? tail_offset_ : parts_.back().offset + parts_.back().bytes.size();
}

uint64_t RecordSink::end_capacity() const {
  if (parts_.empty() || !parts_.back().new_segment) return tail_capacity_;
  return parts_.back().capacity;
}

log::RecordLoc RecordSink::Add(log::RecordType type, std::string_view payload) {
  const uint64_t size = log::kRecordHeaderSize + payload.size();
  if (parts_.empty()) parts_.push_back(Part{tail_segment_, tail_offset_, tail_capacity_, false, {}});
  Part* p = &parts_.back();
  uint64_t at = p->offset + p->bytes.size();
  const uint64_t cap = p->new_segment ? p->capacity : tail_capacity_;
  if (at + size > cap && at > log::kSegmentHeaderSize) {
    Part next;
    next.segment = p->segment + 1;
    next.offset = log::kSegmentHeaderSize;
    next.capacity = std::max<uint64_t>(segment_bytes_, log::kSegmentHeaderSize + size);
    next.new_segment = true;
    parts_.push_back(std::move(next));
    p = &parts_.back();
    at = p->offset;
  } else if (p->new_segment && at + size > p->capacity) {
    p->capacity = at + size;  // a record larger than a segment gets a segment of its own size
  }
  log::AppendRecord(type, payload, &p->bytes);
  return log::RecordLoc{p->segment, static_cast<uint32_t>(at), static_cast<uint32_t>(size)};
}

bool RecordSink::Find(const log::RecordLoc& loc, std::string_view* framed) const {
  for (const Part& p : parts_) {
    if (p.segment != loc.segment) continue;
    if (loc.offset < p.offset || loc.offset + loc.size > p.offset + p.bytes.size()) return false;
    *framed = std::string_view(p.bytes).substr(loc.offset - p.offset, loc.size);
    return true;
  }
  return false;
}

RecordSink::Mark RecordSink::mark() const {
  return Mark{parts_.size(), parts_.empty() ? 0 : parts_.back().bytes.size()};
}

void RecordSink::Rollback(const Mark& m) {
  parts_.resize(m.parts);
  if (!parts_.empty()) parts_.back().bytes.resize(m.last_bytes);
}

bool RecordSink::empty() const {
  for (const Part& p : parts_) {
    if (!p.bytes.empty()) return false;
  }
  return true;
}

uint64_t RecordSink::bytes() const {
  uint64_t n = 0;
  for (const Part& p : parts_) n += p.bytes.size();
  return n;
}

}  // namespace comfymq
