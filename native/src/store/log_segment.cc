#include "store/log_segment.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "util/checksum.h"
#include "util/coding.h"

namespace comfymq::log {

std::string SegmentFileName(uint32_t segment) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "log-%08u.cmq", segment);
  return buf;
}

bool ParseSegmentFileName(const std::string& name, uint32_t* segment) {
  unsigned v = 0;
  if (std::sscanf(name.c_str(), "log-%u.cmq", &v) != 1 || SegmentFileName(v) != name) return false;
  *segment = v;
  return true;
}

namespace {

void WriteHeader(char* base, RecordType type, size_t payload_size) {
  StoreU32At(base, kRecordMagic);
  StoreU32At(base + 8, static_cast<uint32_t>(payload_size));
  base[12] = static_cast<char>(type);
  uint32_t crc =
      RecordChecksum(base + kChecksumCoverageOffset, kRecordHeaderSize - kChecksumCoverageOffset + payload_size);
  StoreU32At(base + 4, crc);
}

}  // namespace

void AppendRecord(RecordType type, std::string_view payload, std::string* out) {
  size_t start = out->size();
  out->resize(start + kRecordHeaderSize);
  out->append(payload.data(), payload.size());
  WriteHeader(&(*out)[start], type, payload.size());
}

void SealGroup(std::string* group) { WriteHeader(&(*group)[0], RecordType::kGroup, group->size() - kRecordHeaderSize); }

void AppendGroup(const std::vector<std::pair<RecordType, std::string>>& records, std::string* out) {
  std::string g(kRecordHeaderSize, '\0');
  for (const auto& [type, payload] : records) AppendRecord(type, payload, &g);
  SealGroup(&g);
  out->append(g);
}

std::string SegmentHeader(uint32_t segment) {
  std::string header(kSegmentMagic, sizeof(kSegmentMagic));
  PutU64(&header, segment);
  return header;
}

Status ZeroFill(WritableFile* file, uint64_t capacity) {
  const std::string zeros(1u << 20, '\0');
  for (uint64_t off = 0; off < capacity; off += zeros.size()) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), capacity - off));
    CMQ_RETURN_IF_ERROR(file->WriteAt(off, std::string_view(zeros).substr(0, n)));
  }
  return Status::OK();
}

Status CreateSegment(Env* env, const std::string& path, uint32_t segment, uint64_t capacity,
                     std::unique_ptr<WritableFile>* out, Reserve reserve) {
  std::unique_ptr<WritableFile> file;
  CMQ_RETURN_IF_ERROR(env->NewWritableFile(path, Env::OpenMode::kCreateNew, &file));
  const std::string header = SegmentHeader(segment);
  capacity = std::max<uint64_t>(capacity, kSegmentHeaderSize);
  Status s = reserve == Reserve::kZeroFill ? ZeroFill(file.get(), capacity) : file->Allocate(capacity);
  if (s.ok()) s = file->WriteAt(0, header);
  if (s.ok()) s = file->Sync();
  if (s.ok()) s = env->SyncDir(DirName(path));
  if (!s.ok()) {
    file->Close().IgnoreError();
    env->RemoveFile(path).IgnoreError();
    return s.WithContext("creating log segment " + path);
  }
  *out = std::move(file);
  return Status::OK();
}

namespace {

// Checks a framed record at the start of `buf` (which may extend past it). `top_level` asks for a group;
// otherwise for a record inside one. Returns the total size, or 0 when there is no valid record there;
// `need` is set to the bytes required to decide when buf is too short.
size_t ValidRecordAt(std::string_view buf, bool top_level, size_t* need) {
  *need = kRecordHeaderSize;
  if (buf.size() < kRecordHeaderSize) return 0;
  if (LoadFixed<uint32_t>(buf.data()) != kRecordMagic) return 0;
  uint64_t len = LoadFixed<uint32_t>(buf.data() + 8);
  uint8_t type = static_cast<uint8_t>(buf[12]);
  if (top_level ? (type != static_cast<uint8_t>(RecordType::kGroup) || len > kMaxGroupBytes)
                : (!IsKnownRecordType(type) || len > kMaxRecordPayload)) {
    return 0;
  }
  *need = static_cast<size_t>(kRecordHeaderSize + len);
  if (buf.size() < kRecordHeaderSize + len) return 0;
  uint32_t crc =
      RecordChecksum(buf.data() + kChecksumCoverageOffset, kRecordHeaderSize - kChecksumCoverageOffset + len);
  if (crc != LoadFixed<uint32_t>(buf.data() + 4)) return 0;
  return static_cast<size_t>(kRecordHeaderSize + len);
}

// A read window over a file, refilled on demand.
class Window {
 public:
  Window(const RandomAccessFile& f, uint64_t size) : file_(f), size_(size) {}
  // Makes [off, off+n) available (clipped at end of file) and returns a view of it.
  Status View(uint64_t off, size_t n, std::string_view* out) {
    if (off >= size_) {
      *out = std::string_view();
      return Status::OK();
    }
    n = static_cast<size_t>(std::min<uint64_t>(n, size_ - off));
    if (off < start_ || off + n > start_ + buf_.size()) {
      size_t want = std::max<size_t>(n, kChunk);
      want = static_cast<size_t>(std::min<uint64_t>(want, size_ - off));
      CMQ_RETURN_IF_ERROR(file_.Read(off, want, &buf_));
      start_ = off;
      if (buf_.size() < n) n = buf_.size();
    }
    *out = std::string_view(buf_).substr(static_cast<size_t>(off - start_), n);
    return Status::OK();
  }

 private:
  static constexpr size_t kChunk = 4u << 20;
  const RandomAccessFile& file_;
  uint64_t size_;
  uint64_t start_ = 0;
  std::string buf_;
};

// The size of the valid group at `pos`, or 0.
Status GroupAt(Window& w, uint64_t pos, uint64_t size, size_t* n) {
  std::string_view v;
  CMQ_RETURN_IF_ERROR(w.View(pos, kRecordHeaderSize, &v));
  size_t need = 0;
  *n = ValidRecordAt(v, true, &need);
  if (*n == 0 && need > kRecordHeaderSize && pos + need <= size) {
    CMQ_RETURN_IF_ERROR(w.View(pos, need, &v));
    *n = ValidRecordAt(v, true, &need);
  }
  return Status::OK();
}

// Finds the first offset >= from holding a valid group; returns file size when there is none. Records
// inside a damaged group are never resynchronised onto: a group applies whole or not at all.
Status FindNextGroup(Window& w, uint64_t from, uint64_t size, uint64_t* found) {
  const char magic[4] = {static_cast<char>(kRecordMagic & 0xff), static_cast<char>((kRecordMagic >> 8) & 0xff),
                         static_cast<char>((kRecordMagic >> 16) & 0xff), static_cast<char>(kRecordMagic >> 24)};
  uint64_t pos = from;
  while (pos + kRecordHeaderSize <= size) {
    std::string_view v;
    CMQ_RETURN_IF_ERROR(w.View(pos, 1u << 20, &v));
    if (v.size() < 4) break;
    size_t hit = v.find(std::string_view(magic, 4));
    if (hit == std::string_view::npos) {
      pos += v.size() - 3;
      continue;
    }
    uint64_t cand = pos + hit;
    size_t n = 0;
    CMQ_RETURN_IF_ERROR(GroupAt(w, cand, size, &n));
    if (n != 0) {
      *found = cand;
      return Status::OK();
    }
    pos = cand + 1;
  }
  *found = size;
  return Status::OK();
}

// Finds the end of the last non-zero byte in [from, size); returns `from` when all are zero. Compares whole
// chunks against zeros (a preallocated tail is megabytes of them) and looks closer only where needed.
Status LastNonZero(Window& w, uint64_t from, uint64_t size, uint64_t* end) {
  static const std::string kZeros(1u << 20, '\0');
  *end = from;
  for (uint64_t pos = from; pos < size;) {
    std::string_view v;
    CMQ_RETURN_IF_ERROR(w.View(pos, kZeros.size(), &v));
    if (v.empty()) break;
    if (std::memcmp(v.data(), kZeros.data(), v.size()) != 0) {
      size_t i = v.size();
      while (i > 0 && v[i - 1] == 0) --i;
      *end = pos + i;
    }
    pos += v.size();
  }
  return Status::OK();
}

}  // namespace

Status ParseFramedRecord(std::string_view framed, RecordType* type, std::string_view* payload) {
  size_t need = 0;
  size_t n = ValidRecordAt(framed, false, &need);
  if (n == 0 || n != framed.size()) return Status::Corruption("record failed its checksum or framing check");
  *type = static_cast<RecordType>(framed[12]);
  *payload = framed.substr(kRecordHeaderSize);
  return Status::OK();
}

Status ReadRecord(const RandomAccessFile& file, const RecordLoc& loc, RecordType* type, std::string* payload) {
  std::string buf;
  CMQ_RETURN_IF_ERROR(file.Read(loc.offset, loc.size, &buf));
  std::string_view p;
  Status s = ParseFramedRecord(buf, type, &p);
  if (!s.ok()) {
    return Status::Corruption("record at " + SegmentFileName(loc.segment) + " offset " + std::to_string(loc.offset) +
                              " (" + std::to_string(loc.size) + " bytes) failed its checksum or framing check");
  }
  payload->assign(p.data(), p.size());
  return Status::OK();
}

Status ScanSegment(const RandomAccessFile& file, uint32_t expected_segment, const RecordVisitor& visit,
                   SegmentScan* scan) {
  *scan = SegmentScan();
  uint64_t size = 0;
  CMQ_RETURN_IF_ERROR(file.Size(&size));
  scan->file_size = size;
  Window w(file, size);
  std::string_view head;
  CMQ_RETURN_IF_ERROR(w.View(0, kSegmentHeaderSize, &head));
  if (head.size() < kSegmentHeaderSize || std::memcmp(head.data(), kSegmentMagic, sizeof(kSegmentMagic)) != 0 ||
      LoadFixed<uint64_t>(head.data() + 8) != expected_segment) {
    return Status::OK();
  }
  scan->header_ok = true;
  uint64_t pos = kSegmentHeaderSize;
  scan->valid_end = pos;
  while (pos < size) {
    size_t n = 0;
    CMQ_RETURN_IF_ERROR(GroupAt(w, pos, size, &n));
    if (n != 0) {
      // The group is intact: its records are too (they were checksummed when the group was sealed).
      std::string_view group;
      CMQ_RETURN_IF_ERROR(w.View(pos, n, &group));
      std::string copy;  // `visit` may cause further window reads only via our own calls; keep a stable copy
      copy.assign(group.data(), group.size());
      size_t inner = kRecordHeaderSize;
      while (inner < copy.size()) {
        std::string_view rest = std::string_view(copy).substr(inner);
        size_t need = 0;
        size_t m = ValidRecordAt(rest, false, &need);
        if (m == 0) break;  // cannot happen for a sealed group; stop applying it rather than guess
        RecordLoc loc{expected_segment, static_cast<uint32_t>(pos + inner), static_cast<uint32_t>(m)};
        CMQ_RETURN_IF_ERROR(
            visit(static_cast<RecordType>(rest[12]), rest.substr(kRecordHeaderSize, m - kRecordHeaderSize), loc));
        scan->records++;
        inner += m;
      }
      scan->groups++;
      scan->last_group_offset = pos;
      pos += n;
      scan->valid_end = pos;
      continue;
    }
    // No group here. Zeros to the end mean a clean end; a valid group further on means a bad region in the
    // middle; anything else is a torn tail (the last, unsynced group).
    uint64_t next = size;
    CMQ_RETURN_IF_ERROR(FindNextGroup(w, pos + 1, size, &next));
    if (next < size) {
      scan->bad_regions.emplace_back(pos, next);
      pos = next;
      continue;
    }
    uint64_t nz = pos;
    CMQ_RETURN_IF_ERROR(LastNonZero(w, pos, size, &nz));
    if (nz > pos) {
      scan->tail_garbage_begin = pos;
      scan->tail_garbage_end = nz;
    }
    break;
  }
  return Status::OK();
}

}  // namespace comfymq::log
