#include "store/records.h"

#include "util/coding.h"

namespace comfymq::records {
namespace {

Status Bad(const char* what) { return Status::Corruption(std::string("malformed ") + what + " record"); }

constexpr uint8_t kExtAfter = 1;   // version 4 extension: the jobs it waits for, u64 each
constexpr uint8_t kExtLabels = 2;  // version 4 extension: labels, JSON object text

bool Version(Decoder& d) {
  uint8_t v = 0;
  return d.U8(&v) && v == kVersion;
}

// stored_text := u8:codec (0 raw: bytes:text | 1 lz4: u32:raw_length bytes:block)
void PutStoredText(std::string* out, const StoredText& t) {
  PutU8(out, static_cast<uint8_t>(t.codec));
  if (t.codec == TextCodec::kLz4) PutU32(out, t.raw_length);
  PutBytes(out, t.bytes);
}

bool GetStoredText(Decoder& d, StoredText* t) {
  uint8_t codec = 0;
  if (!d.U8(&codec)) return false;
  *t = StoredText();
  switch (codec) {
    case static_cast<uint8_t>(TextCodec::kRaw): return d.Bytes(&t->bytes);
    case static_cast<uint8_t>(TextCodec::kLz4):
      t->codec = TextCodec::kLz4;
      return d.U32(&t->raw_length) && d.Bytes(&t->bytes);  // whether it decompresses: UnpackText
  }
  return false;
}

bool GetRawText(Decoder& d, StoredText* t) {
  *t = StoredText();
  return d.Bytes(&t->bytes);
}

}  // namespace

void EncodeJob(const JobView& v, std::string* out) {
  const uint8_t version = !v.labels.empty() ? kJobVersionExt : v.after.empty() ? kJobVersion : kJobVersionAfter;
  PutU8(out, version);
  PutU64(out, v.id);
  PutI32(out, v.priority);
  PutU16(out, v.max_attempts);
  PutI64(out, v.timeout_ms);
  PutI64(out, v.create_time_ms);
  PutBytes(out, v.prompt_id);
  PutBytes(out, v.batch_id);
  PutBytes(out, v.owner);
  PutStoredText(out, v.prompt);
  PutStoredText(out, v.workflow);
  if (version == kJobVersionExt) {
    if (!v.after.empty()) {
      std::string ids;
      for (uint64_t id : v.after) PutU64(&ids, id);
      PutU8(out, kExtAfter);
      PutBytes(out, ids);
    }
    PutU8(out, kExtLabels);
    PutBytes(out, v.labels);
    return;
  }
  if (v.after.empty()) return;
  PutU32(out, static_cast<uint32_t>(v.after.size()));
  for (uint64_t id : v.after) PutU64(out, id);
}

void PatchJobId(std::string* payload, uint64_t id) {
  for (size_t i = 0; i < 8; ++i) (*payload)[kJobIdOffset + i] = static_cast<char>((id >> (8 * i)) & 0xff);
}

Status DecodeJob(std::string_view payload, JobView* v) {
  Decoder d(payload);
  uint8_t version = 0;
  if (!d.U8(&version) || version < kJobVersionRaw || version > kJobVersionExt) return Bad("job");
  auto text = version == kJobVersionRaw ? GetRawText : GetStoredText;
  if (!d.U64(&v->id) || !d.I32(&v->priority) || !d.U16(&v->max_attempts) || !d.I64(&v->timeout_ms) ||
      !d.I64(&v->create_time_ms) || !d.Bytes(&v->prompt_id) || !d.Bytes(&v->batch_id) || !d.Bytes(&v->owner) ||
      !text(d, &v->prompt) || !text(d, &v->workflow)) {
    return Bad("job");
  }
  v->after.clear();
  v->labels = {};
  while (version == kJobVersionExt && !d.done()) {
    uint8_t tag = 0;
    std::string_view payload;
    if (!d.U8(&tag) || !d.Bytes(&payload)) return Bad("job");
    if (tag == kExtAfter) {
      if (payload.empty() || payload.size() % 8 != 0 || payload.size() / 8 > kMaxAfter) return Bad("job");
      Decoder ids(payload);
      v->after.resize(payload.size() / 8);
      for (uint64_t& id : v->after) ids.U64(&id);
    } else if (tag == kExtLabels) {
      v->labels = payload;
    }  // (another tag: an extension of a later build, skipped)
  }
  if (version == kJobVersionAfter) {
    uint32_t n = 0;
    if (!d.U32(&n) || n == 0 || n > kMaxAfter || d.remaining() != static_cast<size_t>(n) * 8) return Bad("job");
    v->after.resize(n);
    for (uint32_t i = 0; i < n; ++i) d.U64(&v->after[i]);
  }
  if (!d.done()) return Bad("job");
  return Status::OK();
}

void EncodeStatus(const StatusView& v, std::string* out) {
  PutU8(out, kVersion);
  PutU64(out, v.id);
  PutU8(out, static_cast<uint8_t>(v.state));
  PutU16(out, v.attempts);
  PutU64(out, v.token);
  PutI64(out, v.lease_expires_ms);
  PutI64(out, v.deadline_ms);
  PutI64(out, v.started_ms);
  PutI64(out, v.finished_ms);
  PutI64(out, v.updated_ms);
  PutBytes(out, v.worker_id);
  PutBytes(out, v.outputs);
  PutBytes(out, v.artifacts);
  PutBytes(out, v.error);
  PutBytes(out, v.history);
}

Status DecodeStatus(std::string_view payload, StatusView* v) {
  Decoder d(payload);
  uint8_t state = 0;
  if (!Version(d) || !d.U64(&v->id) || !d.U8(&state) || state >= kNumJobStates || !d.U16(&v->attempts) ||
      !d.U64(&v->token) || !d.I64(&v->lease_expires_ms) || !d.I64(&v->deadline_ms) || !d.I64(&v->started_ms) ||
      !d.I64(&v->finished_ms) || !d.I64(&v->updated_ms) || !d.Bytes(&v->worker_id) || !d.Bytes(&v->outputs) ||
      !d.Bytes(&v->artifacts) || !d.Bytes(&v->error) || !d.Bytes(&v->history) || !d.done()) {
    return Bad("status");
  }
  v->state = static_cast<JobState>(state);
  return Status::OK();
}

void EncodeErase(int64_t at_ms, const uint64_t* ids, size_t n, std::string* out) {
  PutU8(out, kVersion);
  PutI64(out, at_ms);
  PutU32(out, static_cast<uint32_t>(n));
  for (size_t i = 0; i < n; ++i) PutU64(out, ids[i]);
}

Status DecodeErase(std::string_view payload, EraseView* v) {
  Decoder d(payload);
  uint32_t n = 0;
  if (!Version(d) || !d.I64(&v->at_ms) || !d.U32(&n) || d.remaining() != static_cast<size_t>(n) * 8) {
    return Bad("erase");
  }
  v->ids.resize(n);
  for (uint32_t i = 0; i < n; ++i) d.U64(&v->ids[i]);
  return Status::OK();
}

void EncodeMeta(bool paused, std::string* out) {
  PutU8(out, kVersion);
  PutU8(out, paused ? 1 : 0);
}

Status DecodeMeta(std::string_view payload, bool* paused) {
  Decoder d(payload);
  uint8_t p = 0;
  if (!Version(d) || !d.U8(&p) || p > 1 || !d.done()) return Bad("meta");
  *paused = p == 1;
  return Status::OK();
}

void EncodeTokens(uint64_t reserved_below, std::string* out) {
  PutU8(out, kVersion);
  PutU64(out, reserved_below);
}

Status DecodeTokens(std::string_view payload, uint64_t* reserved_below) {
  Decoder d(payload);
  if (!Version(d) || !d.U64(reserved_below) || !d.done()) return Bad("tokens");
  return Status::OK();
}

void EncodeDoc(std::string_view key, std::string_view value, bool erase, std::string* out) {
  PutU8(out, kVersion);
  PutU8(out, erase ? 2 : 1);
  PutBytes(out, key);
  if (!erase) PutBytes(out, value);
}

Status DecodeDoc(std::string_view payload, std::string_view* key, std::string_view* value, bool* erase) {
  Decoder d(payload);
  uint8_t op = 0;
  if (!Version(d) || !d.U8(&op) || (op != 1 && op != 2) || !d.Bytes(key) || key->empty()) return Bad("doc");
  *erase = op == 2;
  *value = std::string_view();
  if (!*erase && !d.Bytes(value)) return Bad("doc");
  if (!d.done()) return Bad("doc");
  return Status::OK();
}

}  // namespace comfymq::records
