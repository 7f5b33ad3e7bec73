#include "store/checkpoint.h"

#include <xxhash.h>

#include <cstdio>
#include <cstring>

#include "util/coding.h"

namespace comfymq::checkpoint {
namespace {

constexpr char kMagicV4[8] = {'C', 'M', 'Q', 'C', 'K', 'P', '0', '4'};  // with owners
constexpr char kMagicV3[8] = {'C', 'M', 'Q', 'C', 'K', 'P', '0', '3'};  // with documents
constexpr char kMagic[8] = {'C', 'M', 'Q', 'C', 'K', 'P', '0', '2'};
constexpr char kMagicV1[8] = {'C', 'M', 'Q', 'C', 'K', 'P', '0', '1'};  // older: no waits section
constexpr char kEnd[8] = {'C', 'M', 'Q', 'C', 'K', 'E', 'N', 'D'};

// Buffers writes and hashes everything that goes through it.
class HashingWriter {
 public:
  explicit HashingWriter(WritableFile* f) : file_(f), state_(XXH3_createState()) { XXH3_64bits_reset(state_); }
  ~HashingWriter() { XXH3_freeState(state_); }
  std::string& buf() { return buf_; }
  Status MaybeFlush() { return buf_.size() >= (1u << 20) ? Flush() : Status::OK(); }
  Status Flush() {
    if (buf_.empty()) return Status::OK();
    if (hashing_) XXH3_64bits_update(state_, buf_.data(), buf_.size());
    Status s = file_->Append(buf_);
    buf_.clear();
    return s;
  }
  uint64_t StopHashing() {
    hashing_ = false;
    return XXH3_64bits_digest(state_);
  }

 private:
  WritableFile* file_;
  XXH3_state_t* state_;
  std::string buf_;
  bool hashing_ = true;
};

void PutLoc(std::string* out, const log::RecordLoc& l) {
  PutU32(out, l.segment);
  PutU32(out, l.offset);
  PutU32(out, l.size);
}

bool GetLoc(Decoder& d, log::RecordLoc* l) { return d.U32(&l->segment) && d.U32(&l->offset) && d.U32(&l->size); }

}  // namespace

std::string FileName(uint32_t segment) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "checkpoint-%08u.cmq", segment);
  return buf;
}

bool ParseFileName(const std::string& name, uint32_t* segment) {
  unsigned v = 0;
  if (std::sscanf(name.c_str(), "checkpoint-%8u.cmq", &v) != 1 || FileName(v) != name) return false;
  *segment = v;
  return true;
}

Status Write(WritableFile* file, const Header& h, const JobTable& table, const DocTable& docs) {
  HashingWriter w(file);
  std::string& b = w.buf();
  uint64_t n_waits = 0;
  for (const auto& [id, after] : table.waits()) n_waits += table.Find(id) != nullptr;
  // Version 1 while no job waits and no document is kept, 2 while no document is: a store that never used them
  // stays readable by an older build.
  const bool v4 = table.owner_names().size() > 1;
  const bool v3 = v4 || docs.size() != 0;
  b.append(v4 ? kMagicV4 : v3 ? kMagicV3 : n_waits != 0 ? kMagic : kMagicV1, sizeof(kMagic));
  PutU32(&b, h.segment);
  PutU64(&b, h.last_id);
  PutU64(&b, h.next_token);
  PutU8(&b, h.paused ? 1 : 0);
  const auto& batches = table.batch_names();
  PutU32(&b, static_cast<uint32_t>(batches.size() - 1));
  for (size_t i = 1; i < batches.size(); ++i) {
    PutBytes(&b, batches[i]);
    CMQ_RETURN_IF_ERROR(w.MaybeFlush());
  }
  if (n_waits != 0 || v3) PutU64(&b, n_waits);
  for (const auto& [id, after] : table.waits()) {
    if (table.Find(id) == nullptr) continue;
    PutU64(&b, id);
    PutU32(&b, static_cast<uint32_t>(after.size()));
    for (uint64_t dep : after) PutU64(&b, dep);
    CMQ_RETURN_IF_ERROR(w.MaybeFlush());
  }
  if (v3) {
    PutU64(&b, docs.size());
    for (const auto& [key, value] : docs.all()) {
      PutBytes(&b, key);
      PutBytes(&b, value);
      CMQ_RETURN_IF_ERROR(w.MaybeFlush());
    }
  }
  if (v4) {
    const auto& owners = table.owner_names();
    PutU32(&b, static_cast<uint32_t>(owners.size() - 1));
    for (size_t i = 1; i < owners.size(); ++i) {
      PutBytes(&b, owners[i]);
      CMQ_RETURN_IF_ERROR(w.MaybeFlush());
    }
  }
  PutU64(&b, table.size());
  Status s;
  table.ForEach([&](const JobMeta& m) {
    if (!s.ok()) return;
    PutU64(&b, m.id);
    PutU64(&b, m.prompt_id_hash);
    PutLoc(&b, m.job_loc);
    PutLoc(&b, m.status_loc);
    PutI64(&b, m.updated_ms);
    PutI32(&b, m.priority);
    PutU32(&b, m.batch);
    PutU16(&b, m.attempts);
    PutU16(&b, m.max_attempts);
    PutU8(&b, static_cast<uint8_t>(m.state));
    if (v4) PutU16(&b, m.owner);
    s = w.MaybeFlush();
  });
  CMQ_RETURN_IF_ERROR(s);
  PutU64(&b, table.runs().size());
  for (const auto& [id, r] : table.runs()) {
    PutU64(&b, id);
    PutU64(&b, r.token);
    PutI64(&b, r.expires_ms);
    PutI64(&b, r.deadline_ms);
    PutI64(&b, r.started_ms);
    PutBytes(&b, r.worker_id);
    CMQ_RETURN_IF_ERROR(w.MaybeFlush());
  }
  CMQ_RETURN_IF_ERROR(w.Flush());
  uint64_t digest = w.StopHashing();
  b.append(kEnd, sizeof(kEnd));
  PutU64(&b, digest);
  return w.Flush();
}

Status Read(Env* env, const std::string& path, Header* h, JobTable* table, DocTable* docs) {
  std::string data;
  CMQ_RETURN_IF_ERROR(env->ReadFileToString(path, &data));
  auto bad = [&](const char* why) { return Status::Corruption("checkpoint " + path + ": " + why); };
  if (data.size() < sizeof(kMagic) + 16) return bad("not a ComfyMQ checkpoint");
  const bool v1 = std::memcmp(data.data(), kMagicV1, sizeof(kMagicV1)) == 0;
  const bool v4 = std::memcmp(data.data(), kMagicV4, sizeof(kMagicV4)) == 0;
  const bool v3 = v4 || std::memcmp(data.data(), kMagicV3, sizeof(kMagicV3)) == 0;
  if (!v1 && !v3 && std::memcmp(data.data(), kMagic, sizeof(kMagic)) != 0) return bad("not a ComfyMQ checkpoint");
  const size_t body = data.size() - 16;
  if (std::memcmp(data.data() + body, kEnd, sizeof(kEnd)) != 0) return bad("truncated (no end marker)");
  if (XXH3_64bits(data.data(), body) != LoadFixed<uint64_t>(data.data() + body + 8)) return bad("checksum mismatch");

  Decoder d(std::string_view(data.data() + sizeof(kMagic), body - sizeof(kMagic)));
  uint8_t paused = 0;
  uint32_t n_batches = 0;
  if (!d.U32(&h->segment) || !d.U64(&h->last_id) || !d.U64(&h->next_token) || !d.U8(&paused) || !d.U32(&n_batches)) {
    return bad("bad header");
  }
  h->paused = paused != 0;
  std::vector<std::string> names{""};
  names.reserve(n_batches + 1);
  for (uint32_t i = 0; i < n_batches; ++i) {
    std::string_view n;
    if (!d.Bytes(&n)) return bad("bad batch table");
    names.emplace_back(n);
  }
  table->SetBatchNames(std::move(names));
  uint64_t n_waits = 0;
  if (!v1 && (!d.U64(&n_waits) || n_waits > d.remaining() / 12)) return bad("bad wait count");
  for (uint64_t i = 0; i < n_waits; ++i) {  // before the jobs: a job goes into the dispatch order only once ready
    uint64_t id = 0;
    uint32_t n = 0;
    if (!d.U64(&id) || !d.U32(&n) || n == 0 || n > kMaxAfter || d.remaining() < static_cast<size_t>(n) * 8) {
      return bad("bad wait entry");
    }
    std::vector<uint64_t> after(n);
    for (uint32_t k = 0; k < n; ++k) d.U64(&after[k]);
    table->SetWaits(id, std::move(after));
  }
  uint64_t n_docs = 0;
  if (v3 && (!d.U64(&n_docs) || n_docs > d.remaining() / 8)) return bad("bad document count");
  for (uint64_t i = 0; i < n_docs; ++i) {
    std::string_view key, value;
    if (!d.Bytes(&key) || key.empty() || !d.Bytes(&value)) return bad("bad document");
    docs->Put(std::string(key), std::string(value));
  }
  uint32_t n_owners = 0;
  if (v4 && (!d.U32(&n_owners) || n_owners > JobTable::kMaxOwners || n_owners > d.remaining() / 4)) {
    return bad("bad owner count");
  }
  std::vector<std::string> owners{""};
  owners.reserve(n_owners + 1);
  for (uint32_t i = 0; i < n_owners; ++i) {
    std::string_view n;
    if (!d.Bytes(&n) || n.empty()) return bad("bad owner table");
    owners.emplace_back(n);
  }
  table->SetOwnerNames(std::move(owners));
  h->owners = v4;
  uint64_t n_jobs = 0;
  if (!d.U64(&n_jobs) || n_jobs > d.remaining() / 61) return bad("bad job count");
  table->Reserve(static_cast<size_t>(n_jobs));
  for (uint64_t i = 0; i < n_jobs; ++i) {
    JobMeta m;
    uint8_t state = 0;
    if (!d.U64(&m.id) || !d.U64(&m.prompt_id_hash) || !GetLoc(d, &m.job_loc) || !GetLoc(d, &m.status_loc) ||
        !d.I64(&m.updated_ms) || !d.I32(&m.priority) || !d.U32(&m.batch) || !d.U16(&m.attempts) ||
        !d.U16(&m.max_attempts) || !d.U8(&state) || state >= kNumJobStates || (v4 && !d.U16(&m.owner)) ||
        m.owner > n_owners) {
      return bad("bad job entry");
    }
    m.state = static_cast<JobState>(state);
    table->Insert(m);
  }
  uint64_t n_runs = 0;
  if (!d.U64(&n_runs)) return bad("bad run count");
  for (uint64_t i = 0; i < n_runs; ++i) {
    uint64_t id = 0;
    RunInfo r;
    std::string_view worker;
    if (!d.U64(&id) || !d.U64(&r.token) || !d.I64(&r.expires_ms) || !d.I64(&r.deadline_ms) || !d.I64(&r.started_ms) ||
        !d.Bytes(&worker)) {
      return bad("bad run entry");
    }
    r.worker_id = worker;
    table->SetRun(id, std::move(r));
  }
  if (!d.done()) return bad("trailing bytes");
  return Status::OK();
}

}  // namespace comfymq::checkpoint
